"""APOGEE Net input scaling (flux_scaling), learning-rate defaults and the shared all-star checkpoint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import labelexplorer as le
from labelexplorer.exceptions import LabelExplorerError, ModelFileError
from labelexplorer.models.apogee_net import ApogeeNet, ApogeeNetNetwork, flux_levels, initialise_network
from labelexplorer.preprocess.grid import apogee_wavelength

GRID = apogee_wavelength()
N_PIX = GRID.size
pytestmark = pytest.mark.filterwarnings("ignore:apogee-net. spectra.info has none:UserWarning")


def lined_spectra(levels, *, error_fraction=0.01, seed=0):
    """Spectra with the same absorption lines at the given flux levels (errors scale with the level)."""
    rng = np.random.default_rng(seed)
    shape = 1 - 0.3 * np.sin(np.linspace(0, 60, N_PIX)) ** 8 + 0.01 * rng.normal(size=N_PIX)
    levels = np.asarray(levels, dtype=float)
    flux = levels[:, None] * shape[None, :]
    return le.Spectra(flux, GRID, error=error_fraction * flux, ids=[f"s{i}" for i in range(len(levels))],
                      meta={"format": "apstar"})


@pytest.fixture(scope="module")
def published_model(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("apogee-net") / "model.pt"
    network = ApogeeNetNetwork(use_metadata=False)
    initialise_network(network)  # He weights: outputs that respond to the spectrum
    torch.save(network.state_dict(), path)
    return path


def test_flux_levels_are_the_median_of_unmasked_positive_flux():
    flux = np.array([[0.0, 1.0, 3.0, 5.0, 100.0], [-1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = np.array([[False, False, False, False, True], [False] * 5])
    spec = le.Spectra(flux, np.arange(1.0, 6.0), mask=mask)
    levels = flux_levels(spec)
    assert levels[0] == pytest.approx(3.0)  # the masked 100 and the zero are left out
    assert np.isnan(levels[1])


def test_median_scaling_makes_predictions_independent_of_brightness(published_model):
    model = ApogeeNet.from_published(published_model, n_draws=4).set_params(flux_scaling="median")
    # the same star (same id, so the same noise draws) at 1, 10 and 1000 times the brightness
    predictions = [model.predict(lined_spectra([level], error_fraction=0.1)) for level in (20.0, 200.0, 20_000.0)]
    for label in ("TEFF", "LOGG"):
        means = [p[label].mean[0] for p in predictions]
        spreads = [p[label].predictive_std[0] for p in predictions]
        np.testing.assert_allclose(means, means[0], rtol=1e-4)
        np.testing.assert_allclose(spreads, spreads[0], rtol=1e-2)
    assert predictions[0]["TEFF"].predictive_std[0] > 0
    assert not any(p.flags["outside_training_set"].any() for p in predictions)


def test_raw_flux_predictions_follow_brightness(published_model):
    model = ApogeeNet.from_published(published_model, n_draws=0)
    assert model.flux_scaling == "raw"  # the published weights were trained on raw flux
    teff = model.predict(lined_spectra([20.0, 20_000.0]))["TEFF"].mean
    assert abs(teff[1] - teff[0]) > 1.0  # the case median scaling removes


def test_published_weights_refuse_median_scaling(published_model):
    with pytest.raises(ModelFileError, match="raw apStar flux"):
        ApogeeNet.from_published(published_model, flux_scaling="median")


@pytest.mark.parametrize("params, match", [
    ({"flux_scaling": "continuum"}, "flux_scaling"),
], ids=["unknown-flux-scaling"])
def test_bad_scaling_setting_is_refused(params, match):
    spec = lined_spectra([100.0, 120.0, 140.0])
    with pytest.raises(LabelExplorerError, match=match):
        ApogeeNet(progress=False, **params).fit(spec, {"TEFF": [4000.0, 4500.0, 5000.0]})


def test_learning_rate_defaults_to_each_papers_value():
    assert ApogeeNet(version=1).resolved("learning_rate") == pytest.approx(1e-3)
    assert ApogeeNet(version=2).resolved("learning_rate") == pytest.approx(7.5e-4)
    assert ApogeeNet(version=2, learning_rate=2e-4).resolved("learning_rate") == pytest.approx(2e-4)


def test_runs_differing_only_in_fine_tuning_share_the_all_star_stage(tmp_path):
    rng = np.random.default_rng(3)
    n = 16
    teff = rng.uniform(3300, 5500, n)
    levels = rng.uniform(50, 5000, n)
    spec = lined_spectra(levels)
    depth = 1 - 0.3 * np.outer((5500 - teff) / 2200, np.cos(np.linspace(0, 40, N_PIX)) ** 2)
    spec = spec.replace(flux=spec.flux * depth, error=spec.error * depth)
    labels = {"TEFF": teff, "LOGG": rng.uniform(1.5, 4.5, n), "FE_H": rng.uniform(-0.5, 0.2, n)}
    classes = np.where(np.arange(n) < 6, "yso", "red_giant")
    settings = dict(version=1, epochs=1, batch_size=8, n_draws=0, checkpoint_dir=str(tmp_path), progress=False)
    plain = ApogeeNet(fine_tune_rounds=0, **settings).fit(spec, labels, classes=classes)
    records = []
    tuned = ApogeeNet(fine_tune_rounds=1, **settings).fit(spec, labels, classes=classes, callbacks=[records.append])
    # the all-star stage came from the first run's checkpoint: no epoch of it was trained again
    assert {record["stage"] for record in records} == {"round-01"}
    assert [r for r in tuned.history_ if r["stage"] == "all"] == [r for r in plain.history_ if r["stage"] == "all"]
    # fine-tuning continues at the rate the all-star stage ended with, unless told otherwise
    assert {r["lr"] for r in tuned.history_ if r["stage"] == "round-01" and "lr" in r} == {plain.history_[-1]["lr"]}
    shutil.copytree(tmp_path / "all", tmp_path / "slow" / "all")
    slow = ApogeeNet(fine_tune_rounds=1, fine_tune_learning_rate=1e-5,
                     **{**settings, "checkpoint_dir": str(tmp_path / "slow")})
    slow.fit(spec, labels, classes=classes)
    assert {r["lr"] for r in slow.history_ if r["stage"] == "round-01" and "lr" in r} == {1e-5}
    other = ApogeeNet(**{**settings, "dropout": 0.3, "checkpoint_dir": str(tmp_path)})
    with pytest.raises(LabelExplorerError, match="different training run"):
        other.fit(spec, labels, classes=classes)  # other settings of the all-star stage: refused


def _conformance_toy():
    """The conformance suite's toy problem (tests/models/test_conformance.py), loaded from its file."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("apogee_net_conformance_toy",
                                                  Path(__file__).with_name("test_conformance.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._toy_data


@pytest.mark.slow
def test_quick_settings_learn_the_conformance_toy_at_another_seed():
    seed = 11  # Teff correlation 0.09 with the earlier quick settings (3e-4, fan-in rates); 0.99 now
    model = ApogeeNet(**{**ApogeeNet.quick_hyperparameters, "random_state": seed})
    data, labels = _conformance_toy()(model)
    model.fit(data, labels)
    corr = np.corrcoef(model.predict(data)["TEFF"].mean, labels["TEFF"])[0, 1]
    assert corr > 0.8, f"quick settings did not learn the toy Teff at random_state={seed} (r={corr:.2f})"
