"""The galaxy-metallicity CNN (Wu & Boada 2019): ResNet, augmentation, TTA, MC dropout, weights, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import labelexplorer as le
from labelexplorer.exceptions import LabelExplorerError, ModelFileError, ShapeError
from labelexplorer.models import get_model
from labelexplorer.models.galaxy_cnn import GalaxyCNN, as_image_array, dihedral, random_dihedral, rebin_images
from labelexplorer.models.nn import TrainingSettings, n_parameters, train
from labelexplorer.models.nn.resnet import ResNetRegressor, ResNetTrunk, load_trunk_weights, read_state_dict
from labelexplorer.models.nn.training import cosine_restart_factor

TINY = dict(depth=10, width=4, hidden=32, image_size=16, epochs=8, batch_size=16, learning_rate=1e-2,
            progress=False)


def _toy_images(n=96, size=16, seed=0):
    """Galaxies as Gaussian blobs whose brightness sets the label (plus a red/blue colour offset)."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.15, 0.85, n)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.3) ** 2) / (0.08 * size ** 2))
    images = brightness[:, None, None, None] * blob * np.array([1.0, 0.8, 0.6])[None, :, None, None]
    images = np.clip(images + rng.normal(0, 0.01, images.shape), 0, 1)
    return le.ImageSet(images, ids=[f"g{i}" for i in range(n)]), 8.4 + brightness


@pytest.fixture(scope="module")
def toy():
    return _toy_images()


@pytest.fixture(scope="module")
def deterministic_model(toy):
    """MC dropout off: predictions are a plain function of the image."""
    images, labels = toy
    return GalaxyCNN(**TINY, mc_passes=0).fit(images, {"OH_P50": labels})


@pytest.fixture(scope="module")
def mc_model(toy):
    images, labels = toy
    return GalaxyCNN(**TINY, mc_passes=8).fit(images, {"OH_P50": labels})


# ----------------------------------------------------------------------------- ResNet
@pytest.mark.parametrize("depth", [10, 18, 34])
@pytest.mark.parametrize("size", [1, 2, 7, 33], ids=lambda s: f"{s}px")
def test_resnet_takes_any_input_size(depth, size):
    net = ResNetRegressor(depth, width=4, n_outputs=2, hidden=8).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 3, size, size))
    assert out.shape == (3, 2) and torch.isfinite(out).all()


def test_resnet_feature_maps_shrink_32_fold():
    trunk = ResNetTrunk(18, width=8)
    assert trunk.feature_maps(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 4, 4)
    assert trunk.feature_maps(torch.zeros(1, 3, 37, 20)).shape == (1, 64, 2, 1)


@pytest.mark.parametrize("depth, expected", [(18, 11_176_512), (34, 21_284_672)], ids=["resnet18", "resnet34"])
def test_trunk_parameter_count_matches_the_standard_resnet_without_its_fc(depth, expected):
    # the standard ResNet-18/34 have 11,689,512 / 21,797,672 parameters, of which 513,000 are the ImageNet fc layer
    assert n_parameters(ResNetTrunk(depth, width=64)) == expected


def test_unknown_depth_is_refused():
    with pytest.raises(LabelExplorerError, match="depth"):
        ResNetTrunk(50)


def test_layer_groups_cover_every_parameter_once():
    net = ResNetRegressor(18, width=8, hidden=16)
    groups = net.layer_groups()
    ids = [id(p) for group in groups for p in group]
    assert len(groups) == 3 and len(ids) == len(set(ids)) == len(list(net.parameters()))


# ----------------------------------------------------------------------------- image helpers
def test_rebin_averages_blocks_and_keeps_the_mean():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (2, 3, 12, 12)).astype(np.float32)
    four = rebin_images(images, 4)
    np.testing.assert_allclose(four[0, 1, 0, 0], images[0, 1, :3, :3].mean(), rtol=1e-6)
    np.testing.assert_allclose(rebin_images(images, 1)[:, :, 0, 0], images.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(rebin_images(images, 5).mean(axis=(2, 3)), images.mean(axis=(2, 3)), rtol=1e-5)
    assert rebin_images(images, 24).shape == (2, 3, 24, 24)


def test_dihedral_transforms_are_the_eight_symmetries_of_the_square():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    outputs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outputs) == 8
    assert torch.equal(dihedral(x, 0), x)
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)  # rotations compose
    assert torch.equal(dihedral(dihedral(x, 4), 4), x)  # a flip is its own inverse


def test_random_dihedral_is_reproducible_and_uses_all_transforms():
    x = torch.arange(9.0).reshape(1, 1, 3, 3).expand(400, 1, 3, 3).contiguous()
    torch.manual_seed(0)
    first = random_dihedral(x)
    torch.manual_seed(0)
    assert torch.equal(first, random_dihedral(x))
    assert len({tuple(row.flatten().tolist()) for row in first}) == 8


# ----------------------------------------------------------------------------- learning and uncertainty
def test_learns_brightness_to_label(deterministic_model, toy):
    images, labels = toy
    prediction = deterministic_model.predict(images)
    residual_rms = np.sqrt(np.mean((prediction.mean[:, 0] - labels) ** 2))
    assert residual_rms < 0.5 * labels.std()
    assert np.corrcoef(prediction.mean[:, 0], labels)[0, 1] > 0.95


def test_tta_mean_is_the_mean_of_explicitly_transformed_predictions(deterministic_model, toy):
    images, _ = toy
    images = images[:12]
    with_tta = deterministic_model.predict(images)
    deterministic_model.set_params(tta=False)
    try:
        explicit = np.stack([
            deterministic_model.predict(le.ImageSet(dihedral(torch.as_tensor(images.images), k).numpy())).mean
            for k in range(8)])
    finally:
        deterministic_model.set_params(tta=True)
    np.testing.assert_allclose(with_tta.mean, explicit.mean(axis=0), rtol=1e-5, atol=1e-6)
    model = deterministic_model  # the orientation spread, calibrated: scaled, with the floor in quadrature
    expected = np.hypot(explicit.std(axis=0) * model.uncertainty_scale_, model.uncertainty_floor_ * model.label_std_)
    np.testing.assert_allclose(with_tta.predictive_std, expected, rtol=1e-4, atol=1e-6)
    assert np.all(with_tta.predictive_std > 0)
    assert np.isnan(with_tta.model_std).all()  # mc_passes=0: no MC dropout spread


def test_without_tta_the_predictive_std_is_the_calibration_floor_alone(deterministic_model, toy):
    deterministic_model.set_params(tta=False)
    try:
        prediction = deterministic_model.predict(toy[0][:4])
    finally:
        deterministic_model.set_params(tta=True)
    floor = deterministic_model.uncertainty_floor_ * deterministic_model.label_std_
    if floor[0] == 0:
        assert np.isnan(prediction.predictive_std).all()  # no orientation spread and nothing beyond it
    else:
        np.testing.assert_allclose(prediction.predictive_std, np.broadcast_to(floor, (4, 1)))


def test_uncalibrated_model_without_tta_has_no_predictive_std(toy):
    images, labels = toy
    model = GalaxyCNN(**{**TINY, "epochs": 2}, mc_passes=0, calibrate_uncertainty=False).fit(images, {"OH_P50": labels})
    assert model.uncertainty_scale_.tolist() == [1.0] and model.uncertainty_floor_.tolist() == [0.0]
    assert np.isnan(model.set_params(tta=False).predict(images[:3]).predictive_std).all()


def test_calibrated_uncertainties_match_the_errors_on_held_out_images():
    """Labels with scatter that the image cannot explain: the raw spreads miss it, the calibration adds it."""
    images, labels = _toy_images(400, seed=3)
    noisy = labels + np.random.default_rng(3).normal(0, 0.1, labels.size)  # 0.1 dex that no image shows
    settings = {**TINY, "epochs": 6, "mc_passes": 8, "validation_fraction": 0.5}
    calibrated = GalaxyCNN(**settings).fit(images[:300], {"OH_P50": noisy[:300]})
    raw = GalaxyCNN(**settings, calibrate_uncertainty=False).fit(images[:300], {"OH_P50": noisy[:300]})
    held_out = noisy[300:]

    def rms_z(model):
        estimate = model.predict(images[300:])["OH_P50"]
        return float(np.sqrt(np.mean(((estimate.mean - held_out) / estimate.total_std) ** 2)))

    assert rms_z(raw) > 1.5, "the toy's raw spreads should miss the unexplained scatter"  # 1.7-2.2 by seed
    assert 0.75 < rms_z(calibrated) < 1.35  # 0.97-1.07 by seed
    assert calibrated.reference_std_[0] > 1.3 * raw.reference_std_[0]  # scale or floor: the flag's yardstick grew
    # the same weights (the setting is not part of training): undoing the calibration gives the raw spreads
    np.testing.assert_allclose(calibrated.uncalibrated_std(calibrated.predict(images[300:])),
                               raw.predict(images[300:]).total_std, rtol=1e-4)
    # refitting on the held-out images themselves brings them to ~1
    refit = calibrated.calibrate(images[300:], {"OH_P50": held_out})
    assert 0.8 < rms_z(refit) < 1.25
    assert refit.validation_rmse_[0] == pytest.approx(
        np.sqrt(np.mean((refit.predict(images[300:])["OH_P50"].mean - held_out) ** 2)), rel=1e-6)


def test_calibrate_needs_every_label(mc_model, toy):
    with pytest.raises(LabelExplorerError, match=r"no column for \['OH_P50'\]"):
        mc_model.calibrate(toy[0][:10], {"LOG_MSTAR": np.full(10, 10.0)})


def test_a_model_saved_before_the_calibration_loads_with_the_raw_spreads(mc_model, toy, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = mc_model.save(tmp_path / "old")
    weights = next(Path(folder).glob("*.safetensors"))
    tensors = {k: v for k, v in load_file(str(weights)).items() if "uncertainty_" not in k}
    save_file(tensors, str(weights))
    loaded = le.load_model(folder)
    assert loaded.uncertainty_scale_.tolist() == [1.0] and loaded.uncertainty_floor_.tolist() == [0.0]
    assert np.isfinite(loaded.predict(toy[0][:3]).total_std).all()


def test_mc_dropout_spread_is_positive_and_seeded(mc_model, toy):
    images, _ = toy
    first, second = mc_model.predict(images[:10]), mc_model.predict(images[:10])
    assert np.all(first.model_std > 0)
    np.testing.assert_array_equal(first.mean, second.mean)
    np.testing.assert_array_equal(first.model_std, second.model_std)
    mc_model.set_params(random_state=123)
    try:
        other = mc_model.predict(images[:10])
    finally:
        mc_model.set_params(random_state=0)
    assert not np.allclose(other.model_std, first.model_std)
    # different masks, same network: the means agree within the MC error
    assert np.all(np.abs(other.mean - first.mean) < 5 * first.model_std / np.sqrt(8 * 8) + 1e-3)


def test_same_seed_same_model(toy):
    images, labels = toy
    a = GalaxyCNN(**{**TINY, "epochs": 1}, mc_passes=2).fit(images[:24], {"OH_P50": labels[:24]})
    b = GalaxyCNN(**{**TINY, "epochs": 1}, mc_passes=2).fit(images[:24], {"OH_P50": labels[:24]})
    np.testing.assert_array_equal(a.predict(images[:5]).mean, b.predict(images[:5]).mean)


def test_interrupted_fit_resumes_to_the_same_model(tmp_path, toy):
    images, labels = toy
    settings = {**TINY, "epochs": 3, "mc_passes": 0}
    uninterrupted = GalaxyCNN(**settings).fit(images, {"OH_P50": labels})

    def interrupt_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    model = GalaxyCNN(**settings, checkpoint_dir=str(tmp_path / "checkpoints"))
    with pytest.raises(KeyboardInterrupt):
        model.fit(images, {"OH_P50": labels}, callbacks=[interrupt_after_first_epoch])
    assert not model.is_fitted
    model.fit(images, {"OH_P50": labels})  # resumes from epoch 1
    assert [r["epoch"] for r in model.history_] == [1, 2, 3]
    np.testing.assert_allclose(model.predict(images[:8]).mean, uninterrupted.predict(images[:8]).mean,
                               rtol=1e-5, atol=1e-6)


def test_channels_last_changes_speed_not_results(deterministic_model, toy):
    images = toy[0][:8]
    assert deterministic_model.channels_last  # the default
    channels_last = deterministic_model.predict(images).mean
    deterministic_model.set_params(channels_last=False)
    try:
        contiguous = deterministic_model.predict(images).mean
    finally:
        deterministic_model.set_params(channels_last=True)
    np.testing.assert_allclose(channels_last, contiguous, rtol=1e-5, atol=1e-5)


def test_bfloat16_trunk_stays_close_to_float32(deterministic_model, toy):
    images, labels = toy
    reference = deterministic_model.predict(images[:16]).mean
    deterministic_model.set_params(precision="bfloat16")
    try:
        reduced = deterministic_model.predict(images[:16]).mean
    finally:
        deterministic_model.set_params(precision="auto")
    assert np.max(np.abs(reduced - reference)) < 0.1 * labels.std()


def test_saliency_has_image_shape_and_follows_brightness(deterministic_model, toy):
    images, _ = toy
    maps = deterministic_model.saliency(images[:4], "oh_p50")
    assert maps.shape == (4, 3, 16, 16) and np.isfinite(maps).all()
    # brighter images mean higher labels: the derivative along "scale the image up" (sum of gradient x image)
    # is positive for every image
    assert np.all((maps * images.images[:4]).sum(axis=(1, 2, 3)) > 0)
    assert deterministic_model.sensitivity(images[:4], "OH_P50").shape == (3 * 16 * 16,)


def test_model_accepts_other_image_sizes_by_rebinning(deterministic_model, toy):
    images, _ = toy
    big = np.repeat(np.repeat(images.images[:6], 2, axis=2), 2, axis=3)  # the same images at 32 px
    np.testing.assert_allclose(deterministic_model.predict(big).mean, deterministic_model.predict(images[:6]).mean,
                               rtol=1e-5, atol=1e-5)


def test_save_load_keeps_mc_and_tta_uncertainties(mc_model, toy, tmp_path):
    images = toy[0][:6]
    loaded = le.load_model(mc_model.save(tmp_path / "cnn"))
    before, after = mc_model.predict(images), loaded.predict(images)
    for part in ("mean", "model_std", "predictive_std"):
        np.testing.assert_allclose(getattr(after, part), getattr(before, part), rtol=1e-5, atol=1e-7)
    assert loaded.history_ == pytest.approx(mc_model.history_)
    assert after.meta["validation_rmse"] == pytest.approx(before.meta["validation_rmse"])
    assert 0 < before.meta["validation_rmse"]["OH_P50"] < toy[1].std()


def test_a_last_batch_of_one_image_trains_at_one_pixel(toy):
    images, labels = toy
    # 41 rows, 20 % validation: 33 training rows = 2 batches of 16 and one of 1
    model = GalaxyCNN(**{**TINY, "image_size": 1, "epochs": 1}, mc_passes=0)
    model.fit(images[:41], {"OH_P50": labels[:41]})
    assert np.isfinite(model.predict(images[:3]).mean).all()


def test_two_labels_at_once(toy):
    images, labels = toy
    model = GalaxyCNN(**TINY, mc_passes=0, tta=False).fit(images, {"OH_P50": labels, "LOG_MSTAR": 2 * labels - 8})
    prediction = model.predict(images)
    assert prediction.label_names == ["OH_P50", "LOG_MSTAR"]
    assert np.corrcoef(prediction["LOG_MSTAR"].mean, labels)[0, 1] > 0.8


# ----------------------------------------------------------------------------- training-loop options
def test_cosine_restarts_follow_the_cycle_lengths():
    assert cosine_restart_factor(0.0, 1, 2) == pytest.approx(1.0)
    assert cosine_restart_factor(0.5, 1, 2) == pytest.approx(0.5)
    assert cosine_restart_factor(2.0, 1, 2) == pytest.approx(0.5)  # middle of the 2-epoch cycle [1, 3)
    assert cosine_restart_factor(3.0, 1, 2) == pytest.approx(1.0)  # restart
    assert cosine_restart_factor(5.0, 1, 2) == pytest.approx(0.5)  # middle of [3, 7)


def test_layer_groups_get_their_own_learning_rate_and_can_be_frozen():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    start = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(64, 2)
    y = x[:, :1] * 2
    groups = [{"params": net[0].parameters(), "lr_scale": 1.0, "frozen_epochs": 2},
              {"params": net[2].parameters(), "lr_scale": 0.0}]
    records = []
    settings = TrainingSettings(epochs=2, batch_size=16, learning_rate=0.05, validation_fraction=0.0,
                                progress=False, optimizer="adamw", weight_decay=0.01, schedule="cosine-restarts")
    train(net, lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(), {"x": x, "y": y}, settings,
          device=torch.device("cpu"), parameter_groups=groups, callbacks=[records.append])
    # first layer frozen for both epochs, last layer at learning rate 0: nothing moved
    for before, after in zip(start, net.parameters()):
        assert torch.equal(before, after.detach())
    assert all(p.requires_grad for p in net.parameters())  # unfrozen after training
    assert [round(r["lr"], 6) for r in records][0] < 0.05  # cosine-annealed within the epoch


def test_frozen_head_only_training_then_the_whole_network(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    first = net[0].weight.detach().clone()
    x = torch.randn(64, 2)
    settings = TrainingSettings(epochs=2, batch_size=16, learning_rate=0.05, validation_fraction=0.0, progress=False,
                                optimizer="adamw", schedule="cosine-restarts")
    groups = [{"params": net[0].parameters(), "frozen_epochs": 1}, {"params": net[2].parameters()}]
    history = []

    def stop_after_first_epoch(record):
        history.append(net[0].weight.detach().clone())

    train(net, lambda m, b: ((m(b["x"]) - b["x"][:, :1]) ** 2).mean(), {"x": x}, settings,
          device=torch.device("cpu"), parameter_groups=groups, callbacks=[stop_after_first_epoch])
    assert torch.equal(history[0], first)  # epoch 1: frozen
    assert not torch.equal(history[1], first)  # epoch 2: trained


# ----------------------------------------------------------------------------- pretrained weights
def _standard_state_dict(depth=10, width=4):
    """A state dict with the standard ResNet names and an ImageNet-like classifier."""
    torch.manual_seed(5)
    state = ResNetTrunk(depth, width).state_dict()
    state = {k: (v + torch.randn_like(v) if v.is_floating_point() else v) for k, v in state.items()}
    state["fc.weight"] = torch.zeros(1000, 16 * width)
    state["fc.bias"] = torch.zeros(1000)
    return state


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pretrained_weights_load_into_the_trunk_and_stay_frozen(tmp_path, toy, suffix):
    state = _standard_state_dict()
    path = tmp_path / f"resnet10{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert read_state_dict(path).keys() == state.keys()
    images, labels = toy
    model = GalaxyCNN(**{**TINY, "epochs": 1}, pretrained=str(path), frozen_epochs=1, mc_passes=0)
    model.fit(images[:24], {"OH_P50": labels[:24]})
    trunk = model.network_.trunk.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight"):
        torch.testing.assert_close(trunk[key].cpu().contiguous(), state[key])


def _missing(state):
    state.pop("layer2.0.conv1.weight")
    return state


def _unknown(state):
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    return state


def _wrong_shape(state):
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    return state


@pytest.mark.parametrize("corrupt, match", [(_missing, "missing keys"), (_unknown, "unknown keys"),
                                            (_wrong_shape, "conv1.weight.*shape")],
                         ids=["missing-key", "unknown-key", "wrong-shape"])
def test_mismatched_pretrained_weights_are_refused(tmp_path, corrupt, match):
    path = tmp_path / "weights.pt"
    torch.save(corrupt(_standard_state_dict()), path)
    trunk = ResNetTrunk(10, 4)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    with pytest.raises(ModelFileError, match=match):
        load_trunk_weights(trunk, path)
    for key, value in trunk.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[key])


class _NotATensor:
    pass


@pytest.mark.parametrize("content", ["missing", "garbage", "pickled-object", "not-a-mapping"])
def test_unreadable_weight_files_are_refused(tmp_path, content):
    path = tmp_path / "weights.pt"
    if content == "garbage":
        path.write_bytes(b"not a torch file")
    elif content == "pickled-object":
        torch.save({"conv1.weight": _NotATensor()}, path)
    elif content == "not-a-mapping":
        torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelFileError, match=str(path.name)):
        load_trunk_weights(ResNetTrunk(10, 4), path)


def test_pretrained_of_another_depth_fails_in_fit_with_a_clear_message(tmp_path, toy):
    path = tmp_path / "resnet18.pt"
    torch.save(_standard_state_dict(depth=18), path)
    images, labels = toy
    with pytest.raises(ModelFileError, match="resnet18.pt"):
        GalaxyCNN(**TINY, pretrained=str(path)).fit(images[:16], {"OH_P50": labels[:16]})


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("images, match", [
    (np.zeros((4, 16, 16, 3)), "channels first.*transpose"),
    (np.zeros((4, 1, 16, 16)), r"3 channels first, got shape \(4, 1, 16, 16\)"),
    (np.zeros((16, 16, 3)), "got shape"),
    (np.full((4, 3, 16, 16), 200.0), "divide by 255"),
    (np.full((4, 3, 16, 16), np.nan), "finite"),
    (np.zeros((0, 3, 16, 16)), "no images"),
    ("galaxy.jpg", "got shape|expected"),
], ids=["channels-last", "one-channel", "three-dimensional", "8-bit-values", "nan", "empty", "a-string"])
def test_bad_images_are_refused(deterministic_model, images, match):
    with pytest.raises(ShapeError, match=match):
        deterministic_model.predict(images)
    with pytest.raises(ShapeError, match=match):
        GalaxyCNN(**TINY).fit(images, {"OH_P50": np.ones(4)})


def test_imageset_refuses_a_non_colour_array():
    with pytest.raises(ShapeError, match=r"\(n, 3, H, W\)"):
        le.ImageSet(np.zeros((2, 4, 8, 8)))


def test_label_count_must_match_the_images(toy):
    images, labels = toy
    with pytest.raises(LabelExplorerError, match="expected 96 rows"):
        GalaxyCNN(**TINY).fit(images, {"OH_P50": labels[:10]})


def test_bad_hyperparameters_are_explained(toy):
    images, labels = toy
    with pytest.raises(LabelExplorerError, match="layer_lr_ratios"):
        GalaxyCNN(**TINY, layer_lr_ratios=(1.0, 1.0)).fit(images[:16], {"OH_P50": labels[:16]})
    with pytest.raises(LabelExplorerError, match="image_size"):
        GalaxyCNN(**{**TINY, "image_size": 0}).fit(images[:16], {"OH_P50": labels[:16]})


def test_registered_and_reads_images_as_input():
    model = get_model("galaxy-cnn", depth=18)
    assert isinstance(model, GalaxyCNN) and model.input_kind == "images"
    pixels, ids = as_image_array(le.ImageSet(np.zeros((2, 3, 4, 4)), ids=["a", "b"]))
    assert ids.tolist() == ["a", "b"]


@pytest.mark.realdata
def test_real_sdss_cutouts_go_through_the_model(real_data, deterministic_model):
    folder = real_data / "galaxies" / "sdss_gri_128" / "train"
    images = le.read(folder, size=32)[:8]
    prediction = deterministic_model.predict(images)  # 32 px re-binned to the model's 16 px
    assert prediction.ids.tolist() == images.ids.tolist() and np.isfinite(prediction.mean).all()
