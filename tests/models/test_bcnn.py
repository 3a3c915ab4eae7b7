"""The censored Bayesian CNN and its uncensored control (Leung & Bovy 2019) on toy spectra."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import labelexplorer as le
from labelexplorer.exceptions import FileFormatError, LabelError, LabelExplorerError, NotTrainedError, ShapeError
from labelexplorer.labels import ASTRONN_LABELS
from labelexplorer.models.bcnn import (BCNN, BCNNNetwork, CensoredBCNN, CensoredBCNNNetwork, _mean_trunk_features,
                                       _refuse_dead_trunk, mc_samples)
from labelexplorer.models.coverage import TrainingCoverage
from labelexplorer.models.nn import DropoutStreams, n_parameters, stopgrad_passthrough
from labelexplorer.models.nn.device import native_cpu_bfloat16
from labelexplorer.preprocess.grid import APOGEE_N_PIXELS, chip_slices, gap_removed_wavelength, remove_gaps

WAVELENGTH = gap_removed_wavelength()
N_PIXELS = WAVELENGTH.size
MG_PIXELS = np.r_[2000:2030, 4100:4115]
AL_PIXELS = np.r_[5000:5030]
WINDOWS = {"Mg": np.isin(np.arange(N_PIXELS), MG_PIXELS), "Al": np.isin(np.arange(N_PIXELS), AL_PIXELS)}
LABELS = ["MG_H", "TEFF", "AL_H", "FE_H", "LOGG"]  # any order: the model keeps it


def _toy(n, seed, *, noise=0.005):
    """Spectra whose broad shape follows Teff/logg/[Fe/H] and whose Mg and Al windows follow [Mg/H], [Al/H]."""
    rng = np.random.default_rng(seed)
    teff, logg = rng.uniform(4000, 5200, n), rng.uniform(1.0, 3.5, n)
    feh = rng.uniform(-1.0, 0.3, n)
    mg = feh + 0.1 + rng.normal(0, 0.1, n)
    al = mg + rng.normal(0, 0.1, n)
    x = np.linspace(0, 1, N_PIXELS)
    flux = (1 - 0.06 * np.outer((teff - 4600) / 600, np.sin(20 * x) ** 2)
            - 0.05 * np.outer(logg / 3, np.cos(13 * x) ** 2) - 0.04 * np.outer(feh + 1, np.sin(7 * x + 1) ** 2))
    flux[:, MG_PIXELS] -= 0.1 * (mg[:, None] + 1.5)
    flux[:, AL_PIXELS] -= 0.1 * (al[:, None] + 1.5)
    flux += rng.normal(0, noise, flux.shape)
    labels = {"MG_H": mg, "TEFF": teff, "AL_H": al, "FE_H": feh, "LOGG": logg}
    spectra = le.Spectra(flux, WAVELENGTH, error=np.full(flux.shape, noise), ids=[f"t{seed}-{i}" for i in range(n)])
    return spectra, labels


# the paper's recipe (no variance warm-up): the toy checks below were set on it; the warm-up has its own
# tests, and the default (with it) runs in the conformance suite and benchmarks/eval_bcnn_mock.py
QUICK = dict(epochs=12, batch_size=32, learning_rate=3e-3, mc_passes=16, sensitivity_passes=4, progress=False,
             random_state=1, variance_warmup=0.0)


@pytest.fixture(scope="module")
def censored():
    spectra, labels = _toy(256, seed=0)
    labels["LOGG"][:20] = -9999.0  # missing values train nothing
    return CensoredBCNN(windows=WINDOWS, **QUICK).fit(spectra, labels)


@pytest.fixture(scope="module")
def held_out():
    return _toy(64, seed=1)


# ----------------------------------------------------------------------------- architecture
def test_parameter_count_matches_the_paper_with_astronn_windows(real_data):
    model = CensoredBCNN(windows=real_data / "apogee" / "masks" / "aspcap_l31c_masks.npy")
    network = model.network_for(ASTRONN_LABELS)
    assert len(network.branches) == 19
    assert n_parameters(network) == pytest.approx(3.5e6, rel=0.01)
    wide = [b.dense1.out_features for b in network.branches]
    assert sorted(wide)[-2:] == [256, 256] and wide.count(32) == 17  # C and N get 256 -> 64


def test_default_windows_come_from_the_line_list():
    from labelexplorer.preprocess.linelist import load_linelist
    from labelexplorer.preprocess.windows import MOLECULE_ELEMENTS, windows_from_linelist

    network = CensoredBCNN().network_for(["TEFF", "LOGG", "FE_H", "MG_H"])
    expected = windows_from_linelist(load_linelist(), WAVELENGTH, group=MOLECULE_ELEMENTS).mask("Mg")
    assert torch.equal(network.windows[0], torch.as_tensor(expected))
    assert network.branches[0].dense1.in_features == int(expected.sum())


def test_uncensored_control_predicts_everything_from_the_full_spectrum():
    network = BCNN().network_for(ASTRONN_LABELS)
    assert isinstance(network, BCNNNetwork) and network.value.out_features == 22
    assert not any(isinstance(m, torch.nn.ModuleList) for m in network.modules())


def _small_censored(latent_zero: bool):
    windows = torch.zeros(2, 64, dtype=torch.bool)
    windows[0, 5:15] = True
    windows[1, 30:40] = True
    torch.manual_seed(0)
    network = CensoredBCNNNetwork(64, [0, 1, 2], [3, 4], windows, [(32, 16), (32, 16)], 0.3, 2, 0.5)
    if latent_zero:
        torch.nn.init.zeros_(network.latent.weight)
        torch.nn.init.zeros_(network.latent.bias)
    return network


def _grads(module):
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_stopgrad_keeps_element_losses_out_of_the_trunk_heads():
    network = _small_censored(latent_zero=True)
    value, log_var = network(torch.randn(8, 64))
    (value[:, 3:].square().sum() + log_var[:, 3:].sum()).backward()  # element losses only
    for part in (network.trunk, network.trunk_value, network.trunk_log_var):
        assert all(float(g.abs().max()) == 0.0 for g in _grads(part))
    assert float(network.branches[0].dense1.weight.grad.abs().max()) > 0
    # with a live latent link the element losses reach the trunk body (max-norm limited), never the heads
    network = _small_censored(latent_zero=False)
    value, _ = network(torch.randn(8, 64))
    value[:, 3:].square().sum().backward()
    assert float(network.trunk.dense2.weight.grad.abs().max()) > 0
    assert all(float(g.abs().max()) == 0.0 for g in _grads(network.trunk_value))


def test_variance_warmup_trains_the_values_and_holds_the_variances():
    network = _small_censored(latent_zero=False)
    batch = {"x": torch.randn(8, 64), "y": torch.randn(8, 5), "y_err": torch.full((8, 5), 0.1)}
    model = CensoredBCNN(windows=WINDOWS)
    for warmup in (True, False):
        network.zero_grad(set_to_none=True)
        model._loss(network, {**batch, "warmup": warmup}).backward()
        log_var_heads = [network.trunk_log_var] + [branch.log_var for branch in network.branches]
        held = all(float(g.abs().max()) == 0.0 for head in log_var_heads for g in _grads(head))
        assert held == warmup
        assert float(network.trunk_value.weight.grad.abs().max()) > 0
        assert float(network.branches[1].value.weight.grad.abs().max()) > 0


def test_the_warmup_epochs_are_never_the_kept_ones():
    spectra, labels = _toy(96, seed=5)
    model = BCNN(**{**QUICK, "epochs": 8, "learning_rate": 1e-3, "variance_warmup": 0.5}).fit(spectra, labels)
    assert model.best_epoch_ > 4 and len(model.history_) >= 5


def test_a_dead_full_spectrum_branch_is_refused():
    network = BCNNNetwork(N_PIXELS, 3, 0.3)
    x = torch.as_tensor(_toy(8, seed=6)[0].flux - 1.0)
    _refuse_dead_trunk(_mean_trunk_features(network, x, torch.device("cpu")), "bcnn")  # a live one passes
    torch.nn.init.constant_(network.trunk.dense1.bias, -1e6)  # every unit of the 192 off: the 64 are constant
    with pytest.raises(LabelExplorerError, match="bcnn: training ended with a dead full-spectrum branch"):
        _refuse_dead_trunk(_mean_trunk_features(network, x, torch.device("cpu")), "bcnn")


@pytest.mark.parametrize("share", [-0.1, 1.0, 2])
def test_a_warmup_share_outside_zero_to_one_is_refused(share):
    spectra, labels = _toy(8, seed=4)
    with pytest.raises(LabelExplorerError, match=r"variance_warmup: expected a share of the epochs in \[0, 1\)"):
        BCNN(**{**QUICK, "variance_warmup": share}).fit(spectra, labels)


def test_sensitivity_includes_the_stopgrad_path():
    network = _small_censored(latent_zero=True)
    x = torch.randn(4, 64, requires_grad=True)
    outside = np.r_[0:5, 15:64]

    def gradient():
        x.grad = None
        network(x, DropoutStreams(0))[0][:, 3].sum().backward()
        return x.grad.abs().sum(0).numpy()

    blocked = gradient()
    assert blocked[outside].max() == 0.0 and blocked[5:15].max() > 0  # only the Mg window, as in training
    with stopgrad_passthrough(network):
        passed = gradient()
    assert passed[outside].max() > 0  # through TEFF/LOGG/FE_H, as the analysis must see it


@pytest.mark.parametrize("counter_based", [False, True], ids=["torch-generator", "counter-based"])
def test_batched_monte_carlo_equals_naive_full_passes(counter_based):
    network = _small_censored(latent_zero=False).eval()
    x = torch.randn(5, 64)
    fast = mc_samples(network, x, 7, DropoutStreams(3, counter_based=counter_based))
    slow = mc_samples(network, x, 7, DropoutStreams(3, counter_based=counter_based), batched=False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert float(fast[0].detach().std(0).min()) > 0  # passes differ: dropout is on at inference


def test_max_norm_constrains_the_latent_link_after_training(censored):
    assert float(censored.network_.latent.weight.detach().norm(dim=1).max()) <= 0.5 + 1e-6


# ----------------------------------------------------------------------------- behaviour
def test_learns_the_toy_problem_in_the_users_label_order(censored, held_out):
    spectra, labels = held_out
    prediction = censored.predict(spectra)
    assert prediction.label_names == LABELS == censored.label_names_
    for name, least in {"TEFF": 0.95, "FE_H": 0.95, "MG_H": 0.95, "AL_H": 0.85}.items():
        r = np.corrcoef(prediction[name].mean, labels[name])[0, 1]
        assert r > least, f"{name}: r = {r:.2f}"
    assert (prediction.model_std > 0).all() and (prediction.predictive_std > 0).all()


def test_validation_calibration_brings_uncertainties_to_the_true_scatter(censored):
    spectra, labels = _toy(200, seed=1)
    prediction = censored.predict(spectra)
    assert censored.get_params()["calibrate_uncertainty"]
    raw_total = censored.uncalibrated_std(prediction)
    badly_off = 0
    for name in ("TEFF", "FE_H", "MG_H", "AL_H"):  # rms, not std: the toy network's bias is error too
        residual = prediction[name].mean - labels[name]
        calibrated = np.sqrt(np.mean((residual / prediction[name].total_std) ** 2))
        raw = np.sqrt(np.mean((residual / raw_total[:, censored.label_names_.index(name)]) ** 2))
        assert 0.65 < calibrated < 1.5, f"{name}: {calibrated:.2f}"
        # 26 validation spectra pin a factor to ~±15 %: calibration must fix what is badly off
        if abs(np.log(raw)) > np.log(1.4):
            badly_off += 1
            assert abs(np.log(calibrated)) < 0.5 * abs(np.log(raw)), f"{name}: raw {raw:.2f}, calibrated {calibrated:.2f}"
    assert badly_off, "the raw uncertainties of the toy network should be off for some label"
    # each factor carries its bootstrap error: positive, and small against the factor itself
    spread = censored.uncertainty_scale_spread_
    assert spread.shape == censored.uncertainty_scale_.shape
    assert (spread > 0).all() and (spread < 0.5 * censored.uncertainty_scale_).all()
    assert censored.uncertainty_floor_.shape == spread.shape and (censored.uncertainty_floor_ >= 0).all()


def test_calibrating_on_held_out_spectra_allows_for_their_label_errors(censored):
    spectra, labels = _toy(300, seed=5)
    # label noise 1.5x the model's own uncertainty: it dominates the residuals unless allowed for
    typical = np.median(censored.predict(spectra).total_std, axis=0)
    scale = {name: 1.5 * typical[censored.label_names_.index(name)] for name in labels}
    rng = np.random.default_rng(5)
    noisy = {name: labels[name] + rng.normal(0, scale[name], 300) for name in labels}
    errors = {name: np.full(300, scale[name]) for name in labels}
    # compared: the calibrated uncertainty (reference_std_, the median of hypot(scale * total,
    # floor)), not the scale alone: label noise of one size for all stars may go into the floor
    calibrated = {}
    for case, (reference, known) in {"clean": (labels, None), "noisy, errors given": (noisy, errors),
                                     "noisy, errors unstated": (noisy, None)}.items():
        model = copy.deepcopy(censored).calibrate(spectra, reference, known)
        calibrated[case] = dict(zip(model.label_names_, model.reference_std_))
        assert np.all(model.uncertainty_scale_spread_ >= 0) and model.reference_std_.shape == (5,)
    for name in ("TEFF", "MG_H", "AL_H"):
        clean, given, unstated = (calibrated[case][name] for case in calibrated)
        assert abs(np.log(given / clean)) < 0.4, f"{name}: {given:.3g} vs {clean:.3g}"
        assert unstated > 1.3 * clean, f"{name}: unstated label noise must widen the uncertainty"
    # the clean recalibration holds on other stars (rms, not std: the toy network's bias is error too)
    model = copy.deepcopy(censored).calibrate(spectra, labels)
    other, truth = _toy(200, seed=6)
    prediction = model.predict(other)
    for name in ("TEFF", "FE_H", "MG_H"):
        z = np.sqrt(np.mean(((prediction[name].mean - truth[name]) / prediction[name].total_std) ** 2))
        assert 0.8 < z < 1.25, f"{name}: {z:.2f}"


@pytest.mark.parametrize("case, error, match", [
    ("missing-label", LabelError, r"no column for \['AL_H'\]"),
    ("negative-error", LabelError, "label_errors: uncertainties must be >= 0"),
    ("row-count", le.LabelExplorerError, "labels: expected 20 rows"),
    ("untrained", NotTrainedError, "be calibrated"),
], ids=lambda value: value if isinstance(value, str) and " " not in value and "\\" not in value else None)
def test_bad_calibration_input_is_refused_and_keeps_the_calibration(censored, case, error, match):
    spectra, labels = _toy(20, seed=7)
    model, errors = copy.deepcopy(censored), None
    before = model.uncertainty_scale_.copy()
    if case == "missing-label":
        del labels["AL_H"]
    elif case == "negative-error":
        errors = {name: np.full(20, -0.1) for name in labels}
    elif case == "row-count":
        labels = {name: values[:10] for name, values in labels.items()}
    else:
        model = CensoredBCNN(windows=WINDOWS, **QUICK)
    with pytest.raises(error, match=match):
        model.calibrate(spectra, labels, errors)
    if case != "untrained":
        np.testing.assert_array_equal(model.uncertainty_scale_, before)


def test_element_sensitivity_sits_in_its_window(censored, held_out):
    spectra, _ = held_out
    sensitivity = np.abs(censored.sensitivity(spectra[:8], "[Mg/H]"))
    assert sensitivity.shape == (N_PIXELS,)
    inside = sensitivity[WINDOWS["Mg"]].mean()
    elsewhere = sensitivity[~WINDOWS["Mg"] & ~WINDOWS["Al"]]
    assert inside > 20 * elsewhere.mean()
    assert elsewhere.max() > 0  # the StopGrad path (TEFF, LOGG, FE_H) is part of the analysis
    per_star = censored.sensitivity_map(spectra[:8], "MG_H")
    np.testing.assert_allclose(per_star.mean(axis=0), censored.sensitivity(spectra[:8], "MG_H"), rtol=1e-5,
                               atol=1e-9)


def test_predictions_are_reproducible_for_a_seed(censored, held_out):
    spectra, _ = held_out
    first, second = censored.predict(spectra[:6]), censored.predict(spectra[:6])
    np.testing.assert_array_equal(first.mean, second.mean)
    censored.set_params(random_state=99)
    try:
        other = censored.predict(spectra[:6])
    finally:
        censored.set_params(random_state=QUICK["random_state"])
    assert not np.array_equal(first.mean, other.mean)
    assert np.abs(first.mean - other.mean).max(axis=0)[1] < 3 * first.total_std[:, 1].max()  # same answer


def test_chunks_in_threads_give_the_same_predictions_as_one_thread(censored, held_out):
    spectra, _ = held_out
    threads = torch.get_num_threads()
    censored.set_params(mc_batch_size=3, precision="float32")
    try:
        torch.set_num_threads(1)
        alone = censored.predict(spectra[:10])
        torch.set_num_threads(2)
        threaded = censored.predict(spectra[:10])
        first_chunk = censored.predict(spectra[:3])
        repeated = censored.predict(spectra[[0, 1, 2, 0, 1, 2]])
    finally:
        torch.set_num_threads(threads)
        censored.set_params(mc_batch_size=None, precision="auto")
    np.testing.assert_array_equal(threaded.mean, alone.mean)
    np.testing.assert_array_equal(threaded.total_std, alone.total_std)
    np.testing.assert_array_equal(first_chunk.mean, alone.mean[:3])
    # each chunk has its own masks: the same spectra in the second chunk get another MC draw
    assert not np.array_equal(repeated.mean[:3], repeated.mean[3:])
    assert np.abs(repeated.mean[:3] - repeated.mean[3:]).max(axis=0)[1] < 3 * repeated.total_std[:, 1].max()


def test_bfloat16_inference_stays_close_to_float32(censored, held_out):
    spectra, _ = held_out
    predictions = {}
    try:
        for precision in ("float32", "bfloat16", "auto"):
            censored.set_params(precision=precision)
            predictions[precision] = censored.predict(spectra[:8])
    finally:
        censored.set_params(precision="auto")
    reference, reduced, auto = predictions["float32"], predictions["bfloat16"], predictions["auto"]
    assert reduced.meta["precision"] == "bfloat16" and reference.meta["precision"] == "float32"
    assert (np.abs(reduced.mean - reference.mean) / reference.total_std).max() < 0.5
    # "auto" takes bfloat16 only on hardware that has it, and only within 0.1 sigma of float32
    assert auto.meta["precision"] in (("bfloat16", "float32") if native_cpu_bfloat16() else ("float32",))
    if auto.meta["precision"] == "bfloat16":
        assert (np.abs(auto.mean - reference.mean) / reference.total_std).max() < 0.1


@pytest.mark.skipif(not native_cpu_bfloat16(), reason="bfloat16 is only tried on CPUs that have it")
def test_the_bfloat16_verdict_is_kept_for_later_predictions(monkeypatch, censored, held_out):
    import labelexplorer.models.bcnn as bcnn_module

    spectra, _ = held_out
    checks = []
    agrees = bcnn_module.precision_agrees
    monkeypatch.setattr(bcnn_module, "precision_agrees", lambda *a, **k: checks.append(1) or agrees(*a, **k))
    model = copy.deepcopy(censored)  # a copy holds a new network: it checks afresh
    first, second = model.predict(spectra[:8]), model.predict(spectra[8:16])
    assert len(checks) == 1 and first.meta["precision"] == second.meta["precision"]
    model.fit(*_toy(64, seed=9))  # new weights: a new check (at the calibration), kept for predict
    model.predict(spectra[:8])
    assert len(checks) == 2


def test_flags_mark_low_snr_and_stars_unlike_the_training_set(censored, held_out):
    spectra, _ = held_out
    normal = censored.predict(spectra)
    assert normal.flags["outside_training_set"].mean() < 0.2
    assert not normal.flags["low_snr"].any()
    rng = np.random.default_rng(5)
    strange = le.Spectra(1 - rng.uniform(0, 0.8, (3, N_PIXELS)), WAVELENGTH, error=np.full((3, N_PIXELS), 0.05))
    flagged = censored.predict(strange)
    assert flagged.flags["outside_training_set"].all()
    assert flagged.flags["low_snr"].all()  # median flux/error ~ 12 < 30


def test_labels_the_training_set_lacked_for_stars_like_these_are_flagged(censored, held_out):
    """The coverage's plumbing, on a split of the features themselves (a toy network's features need
    not separate a toy population; on the mock universe they flag 95 % of the dwarfs without LOGG)."""
    model = copy.deepcopy(censored)
    features = model._trunk_features(model._design(model._model_grid(_toy(256, seed=0)[0])))
    scale = features.std(axis=0) + 1e-6
    centre = features.mean(axis=0)
    axis = np.linalg.svd((features - centre) / scale, full_matrices=False)[2][0]
    score = (features - centre) / scale @ axis
    known = np.ones((len(features), len(model.label_names_)), bool)
    logg = model.label_names_.index("LOGG")
    known[score > np.median(score), logg] = False  # as DR14 had no LOGG for a whole kind of star
    model.coverage_ = TrainingCoverage(features, known)
    test = held_out[0]
    test_score = (model._trunk_features(model._design(test)) - centre) / scale @ axis
    share = model.label_coverage(test)
    far, near = test_score > np.quantile(score, 0.75), test_score < np.quantile(score, 0.25)
    assert far.sum() >= 5 and near.sum() >= 5
    assert np.median(share[far, logg]) < 0.3 and np.median(share[near, logg]) > 0.7
    assert np.all(share[:, [j for j in range(share.shape[1]) if j != logg]] == 1.0)
    flags = model.predict(test).flags
    np.testing.assert_array_equal(flags["untrained_label"], share[:, logg] < 0.5)
    assert np.all(flags["outside_training_set"][share[:, logg] < 0.5])  # LOGG is watched


def test_save_and_load_restore_the_model_without_external_files(tmp_path, held_out):
    spectra, labels = _toy(48, seed=2)
    bitmask = np.zeros(N_PIXELS, np.int32)
    bitmask[MG_PIXELS] |= 1 << 5  # Mg is bit 5 of the astroNN window bitmask
    bitmask[AL_PIXELS] |= 1 << 6
    np.save(tmp_path / "masks.npy", bitmask)
    model = CensoredBCNN(windows=str(tmp_path / "masks.npy"), **{**QUICK, "epochs": 1}).fit(spectra, labels)
    directory = model.save(tmp_path / "saved")
    (tmp_path / "masks.npy").unlink()
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors"}
    config = json.loads((directory / "config.json").read_text())
    assert config["extra"]["n_parameters"] == model.n_parameters
    loaded = le.load_model(directory)
    assert loaded.label_names_ == LABELS
    for name, window in model.windows_.items():
        np.testing.assert_array_equal(loaded.windows_[name], window)
    before, after = model.predict(held_out[0]), loaded.predict(held_out[0])
    np.testing.assert_array_equal(after.mean, before.mean)
    np.testing.assert_array_equal(after.total_std, before.total_std)
    for flag in ("outside_training_set", "untrained_label"):
        np.testing.assert_array_equal(after.flags[flag], before.flags[flag])
    np.testing.assert_array_equal(loaded.label_coverage(held_out[0]), model.label_coverage(held_out[0]))
    np.testing.assert_array_equal(loaded.uncertainty_scale_spread_, model.uncertainty_scale_spread_)
    np.testing.assert_array_equal(loaded.uncertainty_floor_, model.uncertainty_floor_)
    few = held_out[0][:2]
    np.testing.assert_array_equal(loaded.sensitivity(few, "AL_H"), model.sensitivity(few, "AL_H"))


def test_a_model_saved_without_coverage_still_predicts(tmp_path, censored, held_out):
    old = copy.deepcopy(censored)
    old.coverage_ = None  # as saved before coverage was recorded
    loaded = le.load_model(old.save(tmp_path / "old"))
    assert np.isnan(loaded.label_coverage(held_out[0])).all()
    prediction = loaded.predict(held_out[0])
    assert not prediction.flags["untrained_label"].any()
    np.testing.assert_array_equal(prediction.mean, censored.predict(held_out[0]).mean)


def test_interrupted_fit_resumes_from_its_checkpoint(tmp_path):
    spectra, labels = _toy(64, seed=3)
    settings = {**QUICK, "epochs": 3, "batch_size": 16}
    reference = CensoredBCNN(windows=WINDOWS, **settings).fit(spectra, labels)

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    model = CensoredBCNN(windows=WINDOWS, checkpoint_dir=str(tmp_path), **settings)
    with pytest.raises(KeyboardInterrupt):
        model.fit(spectra, labels, callbacks=[stop_after_first_epoch])
    assert not model.is_fitted
    model.fit(spectra, labels)
    assert [r["epoch"] for r in model.history_] == [1, 2, 3]
    # on a GPU, cuDNN's backward sums in no fixed order: bit-identical runs are not on offer there
    tolerance = dict(rtol=1e-5, atol=1e-7) if next(model.network_.parameters()).is_cpu else {}
    for key, value in reference.network_.state_dict().items():
        torch.testing.assert_close(model.network_.state_dict()[key], value, **tolerance)


def test_full_grid_input_is_gap_removed_and_normalised(tmp_path, censored, held_out):
    from labelexplorer.preprocess.continuum import normalise_continuum

    full = _on_full_grid(held_out[0][:4])
    with pytest.raises(ShapeError, match="continuum"):
        censored.predict(full)
    continuum = np.zeros(N_PIXELS, bool)
    continuum[::7] = True
    np.save(tmp_path / "cont.npy", continuum)
    censored.set_params(continuum_pixels=str(tmp_path / "cont.npy"))
    try:
        automatic = censored.predict(full)
    finally:
        censored.set_params(continuum_pixels=None)
        censored.__dict__.pop("continuum_mask_", None)
    by_hand = normalise_continuum(le.Spectra(remove_gaps(full.flux), WAVELENGTH, error=remove_gaps(full.error),
                                             ids=full.ids), continuum)
    np.testing.assert_allclose(automatic.mean, censored.predict(by_hand).mean, rtol=1e-5)


def _on_full_grid(spectra):
    """The toy spectra on the 8575 grid, times a smooth continuum, with zeros in the chip gaps."""
    flux = np.zeros((len(spectra), APOGEE_N_PIXELS), np.float32)
    error = np.full(flux.shape, 1e10, np.float32)
    start = 0
    for chip in chip_slices(APOGEE_N_PIXELS):
        n = chip.stop - chip.start
        shape = 800 * (1 + 0.2 * np.linspace(-1, 1, n) ** 2)
        flux[:, chip] = spectra.flux[:, start:start + n] * shape
        error[:, chip] = spectra.error[:, start:start + n] * shape
        start += n
    wavelength = 10 ** (4.179 + 6e-6 * np.arange(APOGEE_N_PIXELS))
    return le.Spectra(flux, wavelength, error=error, mask=flux == 0, ids=spectra.ids)


# ----------------------------------------------------------------------------- bad input
def _bad_fits():
    spectra, labels = _toy(8, seed=4)
    only_mg = {"MG_H": labels["MG_H"]}
    return [
        ("wrong-pixel-count", lambda: (le.Spectra(spectra.flux[:, :7000], WAVELENGTH[:7000]), labels),
         ShapeError, "spectra: expected 7514 pixels"),
        ("not-spectra", lambda: (spectra.flux, labels), ShapeError, "spectra: expected a labelexplorer.Spectra"),
        ("no-trunk-label", lambda: (spectra, only_mg), LabelError, "needs TEFF, LOGG and FE_H"),
        ("label-without-window", lambda: (spectra, {**labels, "CA_H": labels["FE_H"]}), LabelError,
         "'CA_H'.*has none"),
        ("non-element-label", lambda: (spectra, {**labels, "M_H": labels["FE_H"]}), LabelError, "'M_H'"),
        ("too-few-known-values", lambda: (spectra, {**labels, "TEFF": np.r_[5000.0, [-9999.0] * 7]}), LabelError,
         "'TEFF': fewer than 2"),
    ]


@pytest.mark.parametrize("case", _bad_fits(), ids=lambda case: case[0])
def test_bad_training_input_is_refused_clearly(case):
    _, make, error, match = case
    spectra, labels = make()
    with pytest.raises(error, match=match):
        CensoredBCNN(windows=WINDOWS, **QUICK).fit(spectra, labels)


def test_negative_label_errors_are_refused():
    spectra, labels = _toy(8, seed=4)
    errors = {name: np.full(8, 0.1) for name in labels}
    errors["TEFF"][0] = -1.0
    with pytest.raises(LabelError, match="label_errors"):
        BCNN(**QUICK).fit(spectra, labels, errors)


@pytest.mark.parametrize("windows, match", [("no/such/file.txt", "neither a folder"), (42, "expected None, a path")],
                         ids=["unknown-path", "wrong-type"])
def test_unusable_windows_are_refused(windows, match):
    with pytest.raises(FileFormatError, match=match):
        CensoredBCNN(windows=windows).network_for(["TEFF", "LOGG", "FE_H", "MG_H"])


def test_predicting_other_pixel_counts_names_the_argument(censored):
    with pytest.raises(ShapeError, match="spectra: expected 7514 pixels"):
        censored.predict(le.Spectra(np.ones((1, 100)), np.linspace(15100, 15200, 100)))


def test_uncensored_model_takes_any_labels():
    spectra, labels = _toy(48, seed=6)
    model = BCNN(**{**QUICK, "epochs": 2}).fit(spectra, {"M_H": labels["FE_H"], "CA_H": labels["MG_H"]})
    assert model.predict(spectra[:3]).mean.shape == (3, 2)
