"""SLAM: vectorised SVR evaluation, analytic Jacobian, batched fit, training, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from sklearn.svm import SVR

import labelexplorer as le
from labelexplorer.exceptions import LabelError, LabelExplorerError, ShapeError, SpectrumError
from labelexplorer.models import slam as slam_module
from labelexplorer.models.slam import SLAM, LabelFitter
from labelexplorer.models.svr_kernel import SVRBank

FAST = dict(c_grid=(10.0,), gamma_grid=(0.2, 0.6), n_folds=3, n_jobs=1, progress=False, chunk_size=8,
            error_model_snr=(), outlier_sigma=None)


def toy_stars(n, seed, noise=0.004, n_pixels=40, teff_range=(4200, 5400)):
    """Spectra whose pixels depend smoothly and non-linearly on Teff, logg and [Fe/H]."""
    rng = np.random.default_rng(seed)
    teff, logg, feh = rng.uniform(*teff_range, n), rng.uniform(1.5, 3.5, n), rng.uniform(-1.0, 0.3, n)
    t, g, z = (teff - 4800) / 600, (logg - 2.5), (feh + 0.35) / 0.65
    phase = np.linspace(0, 3, n_pixels)
    depth = (0.25 * np.sin(phase + 0.5 * t[:, None]) ** 2 + 0.15 * np.cos(2 * phase) ** 2 * (g[:, None] + 1.5) / 3
             + 0.12 * (z[:, None] + 1) / 2 * np.sin(3 * phase) ** 2 + 0.05 * t[:, None] * z[:, None])
    flux = 1 - depth + rng.normal(0, noise, depth.shape)
    spectra = le.Spectra(flux, np.linspace(4000, 4400, n_pixels), error=np.full(flux.shape, noise),
                         ids=[f"star{seed}-{i}" for i in range(n)])
    return spectra, {"TEFF": teff, "LOGG": logg, "FE_H": feh}


@pytest.fixture(scope="module")
def trained():
    spectra, labels = toy_stars(150, seed=0)
    model = SLAM(**FAST).fit(spectra, labels)
    return model, spectra, labels


# ---------------------------------------------------------------------- the vectorised SVR bank
def _estimators(rng, shared: bool):
    x_shared = rng.normal(size=(60, 3))
    estimators = []
    for j, gamma in enumerate([0.1, 0.1, 0.5, 1.3, 0.5, 0.1, 2.0]):
        x = x_shared if shared else rng.normal(size=(50 + j, 3))
        y = np.sin(x[:, 0] * (j % 3 + 1)) + 0.3 * x[:, 1] * x[:, 2] + rng.normal(0, 0.05, len(x))
        estimators.append(SVR(C=3.0, gamma=gamma, epsilon=0.05).fit(x, y))
    return estimators


@pytest.mark.parametrize("shared", [True, False], ids=["shared-support-vectors", "distinct-support-vectors"])
def test_bank_equals_sklearn_predict(shared):
    rng = np.random.default_rng(3)
    estimators = _estimators(rng, shared)
    bank = SVRBank.from_estimators(estimators)
    theta = rng.normal(size=(25, 3)) * 1.5
    reference = np.stack([e.predict(theta) for e in estimators], axis=1)
    np.testing.assert_allclose(bank.evaluate(theta), reference, rtol=0, atol=1e-6)
    assert np.abs(reference).max() > 0.1  # a test that could fail


def test_bank_round_trips_through_packed_arrays():
    estimators = _estimators(np.random.default_rng(4), True)
    bank = SVRBank.from_estimators(estimators)
    again = SVRBank(**bank.packed())
    theta = np.random.default_rng(5).normal(size=(4, 3))
    np.testing.assert_array_equal(again.evaluate(theta), bank.evaluate(theta))


def test_analytic_jacobian_equals_finite_differences():
    rng = np.random.default_rng(6)
    bank = SVRBank.from_estimators(_estimators(rng, False))
    theta = rng.normal(size=(5, 3))
    _, jac = bank.evaluate(theta, jacobian=True)
    step = 1e-6
    for label in range(3):
        shift = np.zeros(3)
        shift[label] = step
        numeric = (bank.evaluate(theta + shift) - bank.evaluate(theta - shift)) / (2 * step)
        np.testing.assert_allclose(jac[:, :, label], numeric, rtol=1e-6, atol=1e-7)
    assert np.abs(jac).max() > 0.1


@pytest.mark.parametrize("bad, match", [
    (dict(offsets=[0, 1, 5]), "offsets"),
    (dict(gamma=[1.0, -1.0]), "gamma"),
    (dict(intercept=[0.0]), "intercept"),
], ids=["offsets-past-end", "negative-gamma", "short-intercept"])
def test_bank_refuses_inconsistent_arrays(bad, match):
    arrays = dict(support_vectors=[[0.0], [1.0]], dual_coef=[1.0, 2.0], offsets=[0, 1, 2], gamma=[1.0, 1.0],
                  intercept=[0.0, 0.0])
    arrays.update(bad)
    with pytest.raises(ShapeError, match=match):
        SVRBank(**arrays)


# ---------------------------------------------------------------------- the batched fit
def test_batched_levenberg_marquardt_equals_scipy_least_squares(trained):
    model, spectra, _ = trained
    box = model._label_fitter()
    fitter = LabelFitter(model.bank_, model.flux_mean_, model.flux_scale_, model.model_variance, box.lower, box.upper,
                         model.training_labels_, chi2_tol=0.0)  # converge fully, like least_squares
    test, _ = toy_stars(6, seed=11)
    ours = fitter.fit(test.flux, test.error, ~test.mask)
    default = model.fit_labels(test)  # stops once chi2 changes by < 1e-4: a negligible move
    sigma = np.sqrt(np.einsum("nll->nl", ours.covariance))
    assert np.all(np.abs(default.theta - ours.theta) < 0.05 * sigma)
    weight = ours.weight
    for i in range(len(test)):
        def residual(theta, i=i):
            return weight[i] * (test.flux[i] - fitter.model_flux(theta[None])[0])

        def jacobian(theta, i=i):
            _, jac = model.bank_.evaluate(theta[None], jacobian=True)
            return -(weight[i] * fitter.flux_scale)[:, None] * jac[0]

        start = fitter.initial_guess(test.flux[i:i + 1].astype(float), weight[i:i + 1])[0]
        reference = least_squares(residual, start, jac=jacobian, method="lm", xtol=1e-12, ftol=1e-12)
        np.testing.assert_allclose(ours.theta[i], reference.x, atol=2e-5)
        np.testing.assert_allclose(ours.hessian[i], reference.jac.T @ reference.jac, rtol=1e-4)
    assert ours.converged.all()


def test_fit_recovers_labels_of_unseen_stars(trained):
    model, _, _ = trained
    test, truth = toy_stars(40, seed=7)
    prediction = model.predict(test)
    errors = {name: prediction[name].mean - truth[name] for name in truth}
    assert np.std(errors["TEFF"]) < 40  # K, over a 1200 K range
    assert np.std(errors["LOGG"]) < 0.1
    assert np.std(errors["FE_H"]) < 0.05
    assert not prediction.flags["not_converged"].any()
    assert (prediction.model_std > 0).all()
    # formal errors are honest-ish on a problem where the model is nearly exact
    z = errors["TEFF"] / prediction["TEFF"].model_std
    assert 0.3 < np.std(z) < 3.0


def test_model_spectra_reproduce_the_training_spectra(trained):
    model, spectra, labels = trained
    forward = model.model_spectra(labels)
    assert forward.shape == (len(spectra), spectra.n_pixels)
    assert np.sqrt(np.mean((forward - spectra.flux) ** 2)) < 0.01


def test_initial_guess_is_the_closest_template(trained):
    model, _, _ = trained
    fitter = model._label_fitter()
    theta = fitter.template_theta[[5, 17]]
    flux = fitter.model_flux(theta)
    guess = fitter.initial_guess(flux, np.ones_like(flux))
    np.testing.assert_array_equal(guess, theta)


def test_bad_pixels_get_zero_weight(trained):
    model, _, _ = trained
    test, _ = toy_stars(5, seed=12)
    clean = model.predict(test).mean
    corrupted = test.flux.copy()
    corrupted[:, 10:15] = 50.0
    mask = np.zeros_like(test.mask)
    mask[:, 10:15] = True
    masked = le.Spectra(corrupted, test.wavelength, error=test.error, mask=mask, ids=test.ids)
    shifted = model.predict(masked).mean
    np.testing.assert_allclose(shifted, clean, rtol=0.02)


def test_outside_training_set_and_not_converged_flags(trained):
    model, _, _ = trained
    test, _ = toy_stars(3, seed=13)
    inside = model.predict(test)
    assert not inside.flags["outside_training_set"].any()
    hot, _ = toy_stars(3, seed=14, teff_range=(6500, 7000))  # far beyond the 4200-5400 K training set
    assert model.predict(hot).flags["outside_training_set"].all()
    stubborn = SLAM(**{**FAST, "max_iter": 1})
    stubborn.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    assert stubborn.predict(test).flags["not_converged"].any()


def test_sensitivity_points_at_the_informative_pixels(trained):
    model, spectra, _ = trained
    sensitivity = model.sensitivity(spectra[:10], "TEFF")
    assert sensitivity.shape == (spectra.n_pixels,) and np.isfinite(sensitivity).all()
    assert np.abs(sensitivity).max() > 100  # K per unit of normalised flux


# ---------------------------------------------------------------------- training details
def test_missing_labels_are_left_out_with_a_warning():
    spectra, labels = toy_stars(40, seed=1)
    labels["LOGG"][:4] = -9999.0
    with pytest.warns(UserWarning, match="4 of 40 stars"):
        model = SLAM(**FAST).fit(spectra, labels)
    assert model.training_labels_.shape == (36, 3)
    assert model.n_missing_dropped_ == 4


def test_outliers_are_rejected_and_the_model_refitted():
    spectra, labels = toy_stars(60, seed=2)
    labels["TEFF"][7] += 900.0  # a star with a wrong label
    model = SLAM(**{**FAST, "outlier_sigma": 4.0}).fit(spectra, labels)
    assert spectra.ids[7] in model.rejected_ids_
    assert len(model.rejected_ids_) <= 3
    assert model.training_labels_.shape[0] == 60 - len(model.rejected_ids_)


def test_error_model_falls_with_snr():
    spectra, labels = toy_stars(60, seed=3, noise=0.002)
    model = SLAM(**{**FAST, "error_model_snr": (10.0, 25.0, 60.0), "error_model_stars": 40}).fit(spectra, labels)
    snr = np.array([8.0, 30.0, 300.0, np.nan])
    std = model._predictive_std(snr)
    assert np.all(std[0] > std[2]) and np.all(std[1] >= std[2])
    np.testing.assert_allclose(std[3], model.cv_scatter_)  # no SNR: the CV scatter
    assert model.error_model_.shape == (3, 3) and np.all(model.error_model_ >= 0)


def test_masked_training_pixels_are_left_out_of_that_pixel_only():
    spectra, labels = toy_stars(60, seed=4)
    flux, mask = spectra.flux.copy(), spectra.mask.copy()
    flux[:20, 5] = 40.0
    mask[:20, 5] = True
    dirty = le.Spectra(flux, spectra.wavelength, error=spectra.error, mask=mask, ids=spectra.ids)
    model = SLAM(**FAST).fit(dirty, labels)
    forward = model.model_spectra(labels)
    assert np.abs(forward[:, 5] - spectra.flux[:, 5]).max() < 0.05  # garbage never reached pixel 5
    assert model.alive_.all()


def test_interrupted_training_resumes_from_checkpoint(tmp_path, monkeypatch):
    spectra, labels = toy_stars(40, seed=5, n_pixels=32)
    settings = {**FAST, "checkpoint_dir": tmp_path / "ckpt"}
    original = slam_module._fit_chunk
    calls = []

    def interrupted(pixels, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(pixels)
        return original(pixels, *args, **kwargs)

    monkeypatch.setattr(slam_module, "_fit_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        SLAM(**settings).fit(spectra, labels)
    assert len(list((tmp_path / "ckpt" / "train").glob("chunk_*.npz"))) == 2

    calls.clear()
    def counted(pixels, *args, **kwargs):
        calls.append(pixels)
        return original(pixels, *args, **kwargs)

    monkeypatch.setattr(slam_module, "_fit_chunk", counted)
    resumed = SLAM(**settings).fit(spectra, labels)
    assert sorted(np.concatenate(calls).tolist()) == list(range(16, 32))  # only the unfinished pixels
    fresh = SLAM(**FAST).fit(spectra, labels)
    np.testing.assert_allclose(resumed.predict(spectra).mean, fresh.predict(spectra).mean, rtol=1e-10)


def test_checkpoint_of_other_data_is_refused(tmp_path):
    spectra, labels = toy_stars(30, seed=6, n_pixels=8)
    SLAM(**{**FAST, "checkpoint_dir": tmp_path}).fit(spectra, labels)
    labels["TEFF"] = labels["TEFF"][::-1].copy()
    with pytest.raises(LabelExplorerError, match="different data"):
        SLAM(**{**FAST, "checkpoint_dir": tmp_path}).fit(spectra, labels)


def test_saved_model_holds_packed_arrays_and_predicts_the_same(trained, tmp_path):
    model, spectra, _ = trained
    directory = model.save(tmp_path / "slam")
    with np.load(directory / "weights.npz", allow_pickle=False) as weights:
        offsets = weights["offsets"]
        assert offsets.shape == (spectra.n_pixels + 1,)
        assert weights["support_vectors"].shape == (offsets[-1], 3)
        assert weights["dual_coef"].shape == (offsets[-1],)
    loaded = le.load_model(directory)
    np.testing.assert_allclose(loaded.predict(spectra[:5]).mean, model.predict(spectra[:5]).mean, rtol=1e-10)
    np.testing.assert_allclose(loaded.predict(spectra[:5]).predictive_std, model.predict(spectra[:5]).predictive_std)


# ---------------------------------------------------------------------- bad input
def _bad_inputs(model, spectra):
    empty_mask = np.zeros(spectra.flux.shape, bool)
    empty_mask[1] = True
    return {
        "wrong-pixel-count": (le.Spectra(spectra.flux[:, :-3], spectra.wavelength[:-3], error=spectra.error[:, :-3]),
                              ShapeError, "expected 40 pixels"),
        "all-masked-spectrum": (le.Spectra(spectra.flux, spectra.wavelength, error=spectra.error, mask=empty_mask,
                                           ids=spectra.ids, allow_empty=True), SpectrumError, "no good pixel"),
        "shifted-wavelengths": (le.Spectra(spectra.flux, spectra.wavelength + 5.0, error=spectra.error),
                                ShapeError, "resample"),
        "per-spectrum-grids": (le.Spectra(spectra.flux, np.tile(spectra.wavelength, (len(spectra), 1)),
                                          error=spectra.error), ShapeError, "one wavelength grid"),
        "not-spectra": (spectra.flux, ShapeError, "expects a labelexplorer.Spectra"),
    }


@pytest.mark.parametrize("case", ["wrong-pixel-count", "all-masked-spectrum", "shifted-wavelengths",
                                  "per-spectrum-grids", "not-spectra"])
def test_bad_prediction_input_is_refused_readably(trained, case):
    model, spectra, _ = trained
    data, error, match = _bad_inputs(model, spectra[:4])[case]
    with pytest.raises(error, match=match):
        model.predict(data)


@pytest.mark.parametrize("change, error, match", [
    (dict(n_folds=1), ShapeError, "n_folds"),
    (dict(c_grid=()), ShapeError, "c_grid"),
    (dict(gamma_grid=(-1.0,)), ShapeError, "gamma_grid"),
], ids=["one-fold", "empty-c-grid", "negative-gamma"])
def test_bad_hyperparameters_are_refused_at_fit(change, error, match):
    spectra, labels = toy_stars(20, seed=8, n_pixels=6)
    with pytest.raises(error, match=match):
        SLAM(**{**FAST, **change}).fit(spectra, labels)


def test_too_few_complete_label_rows_is_refused():
    spectra, labels = toy_stars(8, seed=9, n_pixels=6)
    labels["FE_H"][:5] = -9999.0
    with pytest.warns(UserWarning), pytest.raises(LabelError, match="at least 6 stars"):
        SLAM(**FAST).fit(spectra, labels)
