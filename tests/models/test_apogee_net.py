"""APOGEE Net I/II (labelexplorer.models.apogee_net): architecture, inputs, weights, noise draws, flags, files."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

import labelexplorer as le
from labelexplorer.exceptions import LabelError, LabelExplorerError, ModelFileError, ShapeError, SpectrumError
from labelexplorer.models.apogee_net import (FEH_MAX_TEFF, METADATA_COLUMNS, METADATA_FILL, METADATA_MEAN,
                                             METADATA_STD, TARGET_SCALING, ApogeeNet, ApogeeNetNetwork,
                                             attach_photometry, clipped_errors, draw_outputs, draw_seeds,
                                             kde_weights, metadata_features, noise_draws, normalise_metadata,
                                             split_stars, star_classes, trunk_length)
from labelexplorer.preprocess.grid import apogee_wavelength

GRID = apogee_wavelength()
N_PIX = GRID.size
# most spectra here carry no photometry on purpose; the warning itself is tested once below
pytestmark = pytest.mark.filterwarnings("ignore:apogee-net. spectra.info has none:UserWarning")


def spectra(n=3, *, level=100.0, error=1.0, seed=0, **info):
    rng = np.random.default_rng(seed)
    flux = level * (1 + 0.05 * rng.normal(size=(n, N_PIX)))
    return le.Spectra(flux, GRID, error=np.full((n, N_PIX), error), ids=[f"s{i}" for i in range(n)],
                      info=info or None)


def constant_network(version: int, logg: float, teff: float, feh: float) -> dict:
    """A state dict in the published key names whose network outputs fixed labels."""
    network = ApogeeNetNetwork(use_metadata=version == 2)
    state = {key: torch.zeros_like(value) for key, value in network.state_dict().items()}
    (m_logg, s_logg), (m_teff, s_teff), (m_feh, s_feh) = TARGET_SCALING[version]
    teff_value = math.log10(teff) if version == 2 else teff
    state["fc3.bias"] = torch.tensor([(logg - m_logg) / s_logg, (teff_value - m_teff) / s_teff,
                                      (feh - m_feh) / s_feh], dtype=torch.float32)
    return state


def published(tmp_path, state, name="model.pt", **hyperparameters):
    path = tmp_path / name
    torch.save(state, path)
    return ApogeeNet.from_published(path, **hyperparameters)


# ------------------------------------------------------------------------------------ architecture
def test_trunk_reduces_8575_pixels_to_133_positions_and_8512_features():
    network = ApogeeNetNetwork(use_metadata=False)
    assert trunk_length(8575) == 133
    assert network.features(torch.zeros(2, N_PIX)).shape == (2, 8512)
    assert network.fc1.in_features == 8512
    assert ApogeeNetNetwork(use_metadata=True).fc1.in_features == 8512 + 64
    channels = [getattr(network, f"conv{i}").out_channels for i in range(1, 13)]
    assert channels == [8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64]


def test_metadata_branch_widths_and_published_key_names():
    keys = set(ApogeeNetNetwork(use_metadata=True).state_dict())
    assert {f"metadata.l{i}.weight" for i in range(1, 6)} <= keys
    assert {f"conv{i}.bias" for i in range(1, 13)} | {"fc1.weight", "fc2.weight", "fc3.weight"} <= keys
    widths = [ApogeeNetNetwork(use_metadata=True).metadata.get_submodule(f"l{i}").out_features for i in range(1, 6)]
    assert widths == [8, 16, 32, 32, 64]
    with pytest.raises(ShapeError, match="metadata"):
        ApogeeNetNetwork(use_metadata=True)(torch.zeros(1, N_PIX))


# ------------------------------------------------------------------------------------ metadata
def test_metadata_fill_values_replace_sentinels_and_missing_then_zscore():
    raw = np.array([[2.5, 99.99, np.nan, np.inf, 11.0, 98.0, 10.0]])
    z = normalise_metadata(raw)
    expected_raw = np.array([2.5, METADATA_FILL[1], METADATA_FILL[2], METADATA_FILL[3], 11.0, METADATA_FILL[5], 10.0])
    np.testing.assert_allclose(z[0], (expected_raw - METADATA_MEAN) / METADATA_STD, rtol=1e-6)
    assert z.dtype == np.float32


def test_metadata_features_accept_common_spellings_and_report_absent_columns():
    spec = spectra(2, parallax=[1.0, 2.0], G=[12.0, 13.0], j=[10.0, 11.0])
    values, absent = metadata_features(spec)
    assert values[:, 0].tolist() == [1.0, 2.0] and values[:, 1].tolist() == [12.0, 13.0]
    assert values[:, 4].tolist() == [10.0, 11.0]
    assert absent == ["GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIAEDR3_PHOT_RP_MEAN_MAG", "H", "K"]


def test_attach_photometry_matches_stars_by_apogee_id():
    spec = spectra(3, APOGEE_ID=["a", "b", "c"])
    table = {"APOGEE_ID": ["c", "a"], "GAIAEDR3_PHOT_G_MEAN_MAG": [15.0, 13.0], "K": [9.0, 8.0]}
    out = attach_photometry(spec, table)
    np.testing.assert_array_equal(out.info["GAIAEDR3_PHOT_G_MEAN_MAG"], [13.0, np.nan, 15.0])
    np.testing.assert_array_equal(out.info["K"], [8.0, np.nan, 9.0])
    assert "attach photometry" in out.meta["history"][-1]


# ------------------------------------------------------------------------------------ KDE weights
def test_kde_weights_cap_rare_stars_at_5_with_mean_1():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0, 0.3, (400, 2)), [[6.0, 6.0], [-6.0, 5.0], [np.nan, 1.0]]])
    weights = kde_weights(points)
    complete = np.isfinite(points).all(axis=1)
    assert weights[complete].mean() == pytest.approx(1.0, abs=1e-9)
    assert weights.max() == pytest.approx(5.0) and weights[400] == weights[401] == pytest.approx(5.0)
    assert weights[402] == 1.0  # no coordinates: no reweighting
    assert weights[:400].min() > 0 and weights[:400].max() < 5.0
    # denser means lighter: the centre of the crowd weighs less than its edge
    radius = np.hypot(*points[:400].T)
    assert weights[:400][radius < 0.1].mean() < weights[:400][radius > 0.6].mean()


def test_kde_weights_mean_is_one_over_fit_rows_only():
    rng = np.random.default_rng(1)
    points = rng.normal(0, 1, (200, 2))
    train = np.arange(150)
    weights = kde_weights(points, fit_rows=train, cap=3.0)
    assert weights[train].mean() == pytest.approx(1.0, abs=1e-9)
    assert weights.max() <= 3.0


@pytest.mark.parametrize("kwargs, match", [({"cap": 0.5}, "cap"), ({"bandwidth": 0.0}, "bandwidth")],
                         ids=["cap-below-1", "zero-bandwidth"])
def test_kde_weights_refuse_bad_settings(kwargs, match):
    with pytest.raises(LabelExplorerError, match=match):
        kde_weights(np.zeros((3, 2)), **kwargs)


# ------------------------------------------------------------------------------------ splits and classes
def test_split_is_80_10_10_and_60_20_20_for_rare_classes():
    classes = np.array(["red_giant"] * 500 + ["yso"] * 100 + ["m_dwarf"] * 50)
    rows = split_stars(classes, seed=3)
    counts = {part: {c: int((classes[rows[part]] == c).sum()) for c in ("red_giant", "yso", "m_dwarf")}
              for part in rows}
    assert counts["train"] == {"red_giant": 400, "yso": 60, "m_dwarf": 30}
    assert counts["dev"] == {"red_giant": 50, "yso": 20, "m_dwarf": 10}
    assert counts["test"] == {"red_giant": 50, "yso": 20, "m_dwarf": 10}
    everything = np.concatenate(list(rows.values()))
    assert sorted(everything.tolist()) == list(range(650))
    assert np.array_equal(split_stars(classes, seed=3)["test"], rows["test"])


def test_star_classes_follow_the_papers_regions():
    classes = star_classes([3400, 3300, 4800, 5800, 15000], [3.8, 4.9, 2.5, 4.4, 4.0])
    assert classes.tolist() == ["yso", "m_dwarf", "giant", "dwarf", "hot"]


# ------------------------------------------------------------------------------------ noise draws
def test_error_clipping_at_five_times_the_median():
    flux = np.full((1, 10), 50.0)
    flux[0, 9] = 0.0  # a chip-gap pixel
    error = np.array([[1.0] * 6 + [100.0, np.inf, np.nan, np.inf]])
    clipped = clipped_errors(flux, error)
    assert clipped[0, :6].tolist() == [1.0] * 6
    assert clipped[0, 6] == clipped[0, 7] == clipped[0, 8] == 5.0
    assert clipped[0, 9] == 0.0
    assert clipped_errors(flux, error, clip=2.0)[0, 6] == 2.0


def test_noise_draws_have_the_error_as_spread_and_depend_only_on_the_seed():
    flux = torch.full((2, 4000), 10.0)
    error = torch.stack([torch.full((4000,), 0.5), torch.full((4000,), 2.0)])
    draws = noise_draws(flux, error, 5, [1, 2])
    assert draws.shape == (2, 5, 4000)
    assert float(draws[0].std()) == pytest.approx(0.5, rel=0.03)
    assert float(draws[1].std()) == pytest.approx(2.0, rel=0.03)
    assert float(draws.mean()) == pytest.approx(10.0, abs=0.05)
    alone = noise_draws(flux[1:], error[1:], 5, [2])
    assert torch.equal(alone[0], draws[1])  # a spectrum's draws do not depend on its batch


def test_batched_draws_equal_the_python_loop_over_draws():
    torch.manual_seed(0)
    network = ApogeeNetNetwork(use_metadata=True).eval()
    flux = torch.rand(2, N_PIX) * 100
    error = torch.full((2, N_PIX), 3.0)
    metadata = torch.randn(2, 7)
    seeds = draw_seeds(["a", "b"], 0)
    with torch.no_grad():
        batched = draw_outputs(network, flux, error, metadata, 3, seeds, batched=True)
        looped = draw_outputs(network, flux, error, metadata, 3, seeds, batched=False)
    assert batched.shape == (2, 3, 3)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    assert float((batched[:, 0] - batched[:, 1]).abs().max()) > 0  # the draws differ


# ------------------------------------------------------------------------------------ published weights
def test_published_v2_state_dict_loads_and_maps_outputs(tmp_path):
    torch.manual_seed(1)
    network = ApogeeNetNetwork(use_metadata=True)
    model = published(tmp_path, network.state_dict(), n_draws=0)
    assert model.version == 2 and model.is_published and model.label_names_ == ["TEFF", "LOGG", "FE_H"]
    spec = spectra(2, J=[10.0, 11.0], H=[9.5, 10.0], K=[9.3, 9.8])
    prediction = model.predict(spec)
    raw, _ = metadata_features(spec)
    with torch.no_grad():
        z = network(torch.as_tensor(spec.flux), torch.as_tensor(normalise_metadata(raw))).numpy().astype(float)
    (m_logg, s_logg), (m_teff, s_teff), (m_feh, s_feh) = TARGET_SCALING[2]
    np.testing.assert_allclose(prediction["LOGG"].mean, z[:, 0] * s_logg + m_logg, rtol=1e-5)
    np.testing.assert_allclose(prediction["TEFF"].mean, 10 ** (z[:, 1] * s_teff + m_teff), rtol=1e-5)
    feh = np.where(prediction.flags["feh_not_reported"], np.nan, z[:, 2] * s_feh + m_feh)
    np.testing.assert_allclose(prediction["FE_H"].mean, feh, rtol=1e-5)
    assert np.isnan(prediction.model_std).all()


def test_published_v1_state_dict_has_no_metadata_branch(tmp_path):
    model = published(tmp_path, constant_network(1, 2.5, 4800.0, -0.3), n_draws=2)
    prediction = model.predict(spectra(1))
    assert model.version == 1 and not model.use_photometry_
    assert prediction["TEFF"].mean[0] == pytest.approx(4800.0, rel=1e-5)
    assert prediction["LOGG"].mean[0] == pytest.approx(2.5, abs=1e-4)


def _renamed(state):
    state = dict(state)
    state["convolution1.weight"] = state.pop("conv1.weight")
    return state


def _reshaped(state):
    state = dict(state)
    state["fc1.weight"] = torch.zeros(512, 100)
    return state


class _NotTensors:
    pass


@pytest.mark.parametrize("make, match", [
    (_renamed, "missing keys"),
    (_reshaped, r"fc1.weight has shape \(512, 100\)"),
    (lambda state: [1, 2, 3], "plain state_dict"),
    (lambda state: {"conv1.weight": _NotTensors()}, "tensors-only"),
], ids=["wrong-key", "wrong-shape", "not-a-dict", "pickled-object"])
def test_bad_published_files_are_refused(tmp_path, make, match):
    path = tmp_path / "model.pt"
    torch.save(make(ApogeeNetNetwork(use_metadata=True).state_dict()), path)
    with pytest.raises(ModelFileError, match=match):
        ApogeeNet.from_published(path)


@pytest.mark.parametrize("content", [None, b"not a torch file"], ids=["missing-file", "garbage-bytes"])
def test_unreadable_published_file_is_refused(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(path)):
        ApogeeNet.from_published(path)


def test_published_version_conflict_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="version"):
        published(tmp_path, ApogeeNetNetwork(use_metadata=False).state_dict(), version=2)


# ------------------------------------------------------------------------------------ flags
def test_feh_is_not_reported_above_6500_k(tmp_path):
    hot = published(tmp_path, constant_network(2, 4.0, 9000.0, -0.1), n_draws=2).predict(spectra(2))
    assert hot.flags["feh_not_reported"].all()
    assert np.isnan(hot["FE_H"].mean).all() and np.isnan(hot["FE_H"].predictive_std).all()
    assert hot["TEFF"].mean == pytest.approx([9000.0, 9000.0], rel=1e-5)
    cool = published(tmp_path, constant_network(2, 4.0, FEH_MAX_TEFF - 100, -0.1), "cool.pt",
                     n_draws=2).predict(spectra(1))
    assert not cool.flags["feh_not_reported"].any() and cool["FE_H"].mean[0] == pytest.approx(-0.1, abs=1e-4)


@pytest.mark.parametrize("teff, logg, expected", [(3400.0, 3.8, True), (3300.0, 4.9, False), (4800.0, 2.5, False),
                                                  (3000.0, 2.5, True)],
                         ids=["young-star", "m-dwarf", "red-giant", "cool-low-gravity"])
def test_yso_polygon_flag(tmp_path, teff, logg, expected):
    model = published(tmp_path, constant_network(2, logg, teff, 0.0), n_draws=2)
    assert model.predict(spectra(1)).flags["yso_candidate"].tolist() == [expected]


def test_unphysical_labels_and_flux_without_signal_are_flagged(tmp_path):
    model = published(tmp_path, constant_network(1, 2.5, 4800.0, 2.0), n_draws=2)
    dark = spectra(2)
    dark = dark.replace(flux=np.where(np.arange(2)[:, None] == 0, dark.flux, 0.0))
    prediction = model.predict(dark)
    assert prediction.flags["outside_physical_range"].all()  # [Fe/H] = +2
    assert prediction.flags["outside_training_set"].tolist() == [False, True]  # no positive flux at all


# ------------------------------------------------------------------------------------ predictions
def test_uncertainty_grows_with_the_noise_and_is_reproducible(tmp_path):
    torch.manual_seed(2)
    model = published(tmp_path, ApogeeNetNetwork(use_metadata=False).state_dict(), n_draws=8)
    quiet, noisy = model.predict(spectra(3, error=0.5)), model.predict(spectra(3, error=5.0))
    assert (noisy["TEFF"].predictive_std > 2 * quiet["TEFF"].predictive_std).all()
    again = model.predict(spectra(3, error=0.5))
    np.testing.assert_array_equal(again.mean, quiet.mean)
    first_alone = model.predict(spectra(3, error=0.5)[:1])
    np.testing.assert_allclose(first_alone.mean[0], quiet.mean[0], rtol=1e-6)
    other = ApogeeNet.from_published(tmp_path / "model.pt", n_draws=8, random_state=9)
    other_seed = other.predict(spectra(3, error=0.5))
    assert not np.array_equal(other_seed.predictive_std, quiet.predictive_std)


def test_missing_photometry_is_warned_about(tmp_path):
    model = published(tmp_path, constant_network(2, 4.0, 5000.0, 0.0), n_draws=0)
    with pytest.warns(UserWarning, match="attach_photometry"):
        model.predict(spectra(1))
    assert np.isfinite(model.predict(spectra(1, K=[9.0]))["TEFF"].mean).all()


def test_prepare_sets_nan_flux_to_zero_and_is_idempotent():
    spec = spectra(1)
    flux = spec.flux.copy()
    flux[0, 100:110] = np.nan
    spec = spec.replace(flux=flux)
    model = ApogeeNet()
    prepared = model.prepare(spec)
    assert prepared.flux[0, 100:110].tolist() == [0.0] * 10 and prepared.mask[0, 100:110].all()
    assert model.prepare(prepared) is prepared


# ------------------------------------------------------------------------------------ training
def test_training_loop_uses_only_the_given_rows():
    from labelexplorer.models.nn.training import TrainingSettings, train

    seen = set()
    layer = torch.nn.Linear(1, 1)

    def loss(module, batch):
        seen.update(batch["i"].tolist())
        return ((module(batch["x"]) - 2 * batch["x"]) ** 2).mean()

    data = {"x": torch.linspace(-1, 1, 20)[:, None], "i": torch.arange(20)}
    train(layer, loss, data, TrainingSettings(epochs=2, batch_size=4, progress=False), device=torch.device("cpu"),
          rows=(np.arange(0, 10), np.arange(10, 13)))
    assert seen == set(range(13))  # rows 13-19 (a held-out test set) never reach the loss
    with pytest.raises(LabelExplorerError, match="rows="):
        train(layer, loss, data, TrainingSettings(epochs=1, progress=False), device=torch.device("cpu"),
              rows=(np.arange(5), np.array([25])))


def toy_problem(n=30, seed=4):
    """Raw-flux-like spectra (levels 80-120) whose line depths follow Teff and [Fe/H]."""
    rng = np.random.default_rng(seed)
    teff = rng.uniform(3300, 5500, n)
    logg = np.where(np.arange(n) < 8, rng.uniform(3.6, 4.0, n), rng.uniform(1.5, 3.0, n))
    feh = rng.uniform(-0.8, 0.3, n)
    x = np.linspace(0, 1, N_PIX)
    level = rng.uniform(80, 120, n)
    shape = (1 - 0.3 * np.outer((5500 - teff) / 2200, np.sin(40 * x) ** 2)
             - 0.1 * np.outer(feh + 1, np.cos(23 * x) ** 2))
    flux = level[:, None] * shape + rng.normal(0, 0.5, (n, N_PIX))
    spec = le.Spectra(flux, GRID, error=np.full((n, N_PIX), 0.5), ids=[f"t{i}" for i in range(n)],
                      meta={"format": "apstar"})
    labels = {"TEFF": teff, "LOGG": logg, "FE_H": feh.copy()}
    labels["FE_H"][-2:] = -9999.0  # missing values are masked in the loss
    return spec, labels


def test_fit_learns_a_toy_problem():
    spec, labels = toy_problem()
    spec, labels = spec[4:16], {name: values[4:16] for name, values in labels.items()}
    model = ApogeeNet(version=1, epochs=15, batch_size=4, learning_rate=1e-3, layer_learning_rates="fan-in",
                      dropout=0.0, n_draws=0, fine_tune_rounds=0, early_stopping_patience=15, split=(1.0, 0.0, 0.0),
                      progress=False)
    model.fit(spec, labels, classes=np.full(12, "giant"))
    losses = [record["loss"] for record in model.history_]
    assert losses[-1] < 0.7 * losses[0], f"training loss did not fall: {losses}"
    prediction = model.predict(spec)
    corr = np.corrcoef(prediction["TEFF"].mean, labels["TEFF"])[0, 1]
    assert corr > 0.7, f"Teff not learned (r={corr:.2f})"
    assert np.isnan(prediction.predictive_std).all() and prediction.meta["n_draws"] == 0  # n_draws=0: no draws


@pytest.fixture(scope="module")
def toy_fit():
    """APOGEE Net I with one stratified fine-tuning round (a short run: its stages, not its accuracy)."""
    spec, labels = toy_problem()
    model = ApogeeNet(version=1, epochs=1, batch_size=8, n_draws=3, fine_tune_rounds=1, progress=False)
    classes = np.where(np.arange(30) < 8, "yso", "red_giant")
    records = []
    model.fit(spec, labels, classes=classes, callbacks=[records.append])
    return model, spec, labels, records


def test_test_split_is_kept_out_of_training(toy_fit):
    model, spec, _, _ = toy_fit
    prediction = model.predict(spec)
    assert prediction.label_names == ["TEFF", "LOGG", "FE_H"]
    assert (prediction["TEFF"].predictive_std > 0).all() and np.isnan(prediction.model_std).all()
    test = model.split_["test"]
    assert test.size and not np.intersect1d(test, model.split_["train"]).size
    assert not np.intersect1d(test, model.split_["dev"]).size
    assert (test < 8).sum() >= 1  # the rare class fills part of the test set


def test_v1_fine_tuning_runs_rounds_after_the_all_star_stage(toy_fit):
    model, _, _, records = toy_fit
    stages = [record["stage"] for record in model.history_]
    assert stages[0] == "all" and "round-01" in stages
    assert {record["stage"] for record in records} == {"all", "round-01"}
    assert any("rare_dev_loss" in record for record in model.history_)


def test_save_and_load_reproduce_predictions(toy_fit, tmp_path):
    model, spec, _, _ = toy_fit
    directory = model.save(tmp_path / "apogee-net")
    config = json.loads((directory / "config.json").read_text())
    assert config["extra"]["version"] == 1 and config["extra"]["metadata_columns"] == list(METADATA_COLUMNS)
    loaded = le.load_model(directory)
    np.testing.assert_allclose(loaded.predict(spec[:4]).mean, model.predict(spec[:4]).mean, rtol=1e-5)
    np.testing.assert_array_equal(loaded.split_["test"], model.split_["test"])


def test_predicting_other_spectrum_formats_is_refused(toy_fit):
    model, spec, _, _ = toy_fit
    normalised = spec[:1].replace(meta={"format": "aspcapstar"})
    with pytest.raises(SpectrumError, match="raw apStar flux"):
        model.predict(normalised)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, labels, params, error, match", [
    (lambda: np.ones((3, N_PIX)), {"TEFF": [1.0, 2.0, 3.0]}, {}, ShapeError, "labelexplorer.Spectra"),
    (lambda: le.Spectra(np.ones((3, 100)), np.linspace(15100, 16900, 100)), {"TEFF": [1.0, 2.0, 3.0]}, {},
     ShapeError, "8575-pixel"),
    (lambda: le.Spectra(np.ones((3, N_PIX)), GRID * 1.001), {"TEFF": [1.0, 2.0, 3.0]}, {}, SpectrumError,
     "APOGEE grid"),
    (lambda: spectra(3), {"MG_H": [0.1, 0.2, 0.3]}, {}, LabelError, "TEFF, LOGG, FE_H"),
    (lambda: spectra(3), {"TEFF": [4000.0, -5.0, 5000.0]}, {}, LabelError, "> 0 K"),
    (lambda: spectra(3), {"TEFF": [4000.0, np.nan, np.nan]}, {}, LabelError, "fewer than 2"),
    (lambda: spectra(3), {"TEFF": [4000.0, 4500.0, 5000.0]}, {"version": 3}, LabelExplorerError, "version"),
    (lambda: spectra(3), {"TEFF": [4000.0, 4500.0, 5000.0]}, {"split": (0.5, 0.1, 0.1)}, LabelExplorerError,
     "split"),
    (lambda: spectra(3), {"TEFF": [4000.0, 4500.0, 5000.0]}, {"weighting": "grid"}, LabelExplorerError,
     "weighting"),
], ids=["not-spectra", "wrong-pixel-count", "wrong-grid", "unsupported-label", "negative-teff",
        "too-few-labels", "unknown-version", "split-not-summing-to-1", "unknown-weighting"])
def test_bad_training_input_is_refused(make, labels, params, error, match):
    with pytest.raises(error, match=match):
        ApogeeNet(progress=False, **params).fit(make(), labels)


def test_wrong_class_count_is_refused():
    with pytest.raises(ShapeError, match="one class per spectrum"):
        ApogeeNet(progress=False).fit(spectra(3), {"TEFF": [4000.0, 4500.0, 5000.0]}, classes=["a", "b"])


def test_attach_photometry_needs_the_id_column():
    with pytest.raises(LabelError, match="APOGEE_ID"):
        attach_photometry(spectra(1), {"ID": ["s0"], "K": [9.0]})


# ------------------------------------------------------------------------------------ real files
def test_real_apstar_files_run_end_to_end(real_data, tmp_path):
    files = sorted((real_data / "apogee" / "apStar").glob("apStar-*.fits"))[:2]
    assert files, "no real apStar files"
    spec = le.read([str(f) for f in files])
    torch.manual_seed(3)
    model = published(tmp_path, ApogeeNetNetwork(use_metadata=True).state_dict(), n_draws=2)
    prediction = model.predict(model.prepare(spec))
    assert np.isfinite(prediction["TEFF"].mean).all() and np.isfinite(prediction["LOGG"].mean).all()
    assert set(prediction.flags) >= {"outside_training_set", "yso_candidate", "feh_not_reported", "low_snr"}


@pytest.fixture(scope="module")
def calibrated_fit():
    """A quick APOGEE Net on 240 toy stars: its noise draws know nothing of its own error."""
    spec, labels = toy_problem(n=320, seed=8)
    labels["FE_H"][-2:] = labels["FE_H"][0]  # every label known here
    settings = dict(ApogeeNet.quick_hyperparameters, split=(0.6, 0.4, 0.0), n_draws=8, epochs=8)
    train = slice(0, 240)
    calibrated = ApogeeNet(**settings).fit(spec[train], {k: v[train] for k, v in labels.items()})
    raw = ApogeeNet(**settings, calibrate_uncertainty=False).fit(spec[train], {k: v[train] for k, v in labels.items()})
    return calibrated, raw, spec[240:], {k: v[240:] for k, v in labels.items()}


def _rms_z(prediction, labels, name):
    estimate = prediction[name]
    return float(np.sqrt(np.nanmean(((estimate.mean - labels[name]) / estimate.total_std) ** 2)))


def test_calibrated_uncertainties_match_the_errors_of_held_out_stars(calibrated_fit):
    calibrated, raw, spec, labels = calibrated_fit
    for name in ("TEFF", "FE_H"):
        assert _rms_z(raw.predict(spec), labels, name) > 2.0, f"{name}: the raw noise spread should be too small"
        assert 0.7 < _rms_z(calibrated.predict(spec), labels, name) < 1.45, name
    prediction = calibrated.predict(spec)
    # the noise spread is scaled, the floor is the network's own error (model_std); Teff's grows with Teff
    np.testing.assert_allclose(prediction.predictive_std,
                               raw.predict(spec).predictive_std * calibrated.uncertainty_scale_, rtol=1e-5)
    teff = prediction["TEFF"]
    if calibrated.uncertainty_floor_[0] > 0:
        np.testing.assert_allclose(teff.model_std / teff.mean, np.log(10) * calibrated.uncertainty_floor_[0])
    assert np.isnan(raw.predict(spec).model_std).all()  # the papers' recipe: no model term


def test_calibrate_refits_on_held_out_stars_and_survives_save_and_load(calibrated_fit, tmp_path):
    calibrated, _, spec, labels = calibrated_fit
    model = copy.deepcopy(calibrated).calibrate(spec, labels)
    for name in ("TEFF", "LOGG", "FE_H"):
        assert 0.8 < _rms_z(model.predict(spec), labels, name) < 1.25, name
    loaded = le.load_model(model.save(tmp_path / "calibrated"))
    np.testing.assert_array_equal(loaded.uncertainty_scale_, model.uncertainty_scale_)
    np.testing.assert_allclose(loaded.predict(spec[:5]).total_std, model.predict(spec[:5]).total_std, rtol=1e-5)
    with pytest.raises(LabelExplorerError, match=r"no column for \['FE_H'\]"):
        model.calibrate(spec, {"TEFF": labels["TEFF"], "LOGG": labels["LOGG"]})


def test_a_model_saved_before_the_calibration_predicts_the_noise_spread(calibrated_fit, tmp_path):
    calibrated, raw, spec, _ = calibrated_fit
    directory = calibrated.save(tmp_path / "old")
    config = json.loads((directory / "config.json").read_text())
    del config["extra"]["uncertainty_scale"], config["extra"]["uncertainty_floor"]
    (directory / "config.json").write_text(json.dumps(config))
    loaded = le.load_model(directory)
    np.testing.assert_allclose(loaded.predict(spec[:5]).predictive_std, raw.predict(spec[:5]).predictive_std,
                               rtol=1e-5)
