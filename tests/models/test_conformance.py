"""One conformance suite run over every registered model (DESIGN §3, scikit-learn style)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.exceptions import LabelError, LabelExplorerError, ModelFileError, NotTrainedError, UnknownNameError
from labelexplorer.models import available_models, get_model, model_class

MODELS = available_models()


def _toy_data(model):
    """A small learnable problem in the input kind and pixel count the model needs."""
    rng = np.random.default_rng(1)
    n = 48
    if model.input_kind == "images":
        size = getattr(model, "conformance_image_size", 32)
        brightness = rng.uniform(0.1, 0.9, n)
        images = brightness[:, None, None, None] * np.ones((n, 3, size, size)) + rng.normal(0, 0.01, (n, 3, size, size))
        labels = {"OH_P50": 8.5 + brightness}
        return le.ImageSet(np.clip(images, 0, 1), ids=[f"g{i}" for i in range(n)]), labels
    n_pixels = getattr(model, "conformance_n_pixels", 64)
    teff = rng.uniform(4000, 5500, n)
    feh = rng.uniform(-1, 0.3, n)
    x = np.linspace(0, 1, n_pixels)
    flux = (1 - 0.2 * np.outer((teff - 4000) / 1500, np.sin(20 * x) ** 2)
            - 0.1 * np.outer(feh + 1, np.cos(13 * x) ** 2) + rng.normal(0, 0.005, (n, n_pixels)))
    labels = {"TEFF": teff, "FE_H": feh.copy()}
    labels["FE_H"][:3] = -9999.0  # missing values must be accepted
    wavelength = getattr(model, "conformance_wavelength", None)
    if wavelength is None:
        wavelength = np.linspace(15100, 16900, n_pixels)
    spectra = le.Spectra(flux, wavelength, error=np.full((n, n_pixels), 0.005),
                         ids=[f"s{i}" for i in range(n)])
    return spectra, labels


def _quick(name):
    cls = model_class(name)
    return cls(**cls.quick_hyperparameters)


@pytest.fixture(scope="module", params=MODELS)
def fitted(request):
    model = _quick(request.param)
    data, labels = _toy_data(model)
    returned = model.fit(data, labels)
    return request.param, model, returned, data, labels


@pytest.mark.parametrize("name", MODELS)
def test_constructor_stores_hyperparameters_only(name):
    model = _quick(name)
    learned = [k for k in vars(model) if k.endswith("_") and not k.startswith("_")]
    assert learned == []
    params = model.get_params()
    assert type(model)(**params).get_params() == params


@pytest.mark.parametrize("name", MODELS)
def test_unknown_hyperparameter_is_refused_with_suggestion(name):
    model = _quick(name)
    first = next(iter(model.get_params()))
    with pytest.raises(UnknownNameError, match="did you mean"):
        model.set_params(**{first + "x": 1})


@pytest.mark.parametrize("name", MODELS)
def test_negative_label_errors_are_refused_before_training(name):
    model = _quick(name)
    data, labels = _toy_data(model)
    errors = {key: np.full(len(data), 0.1) for key in labels}
    errors[next(iter(errors))][0] = -0.1
    with pytest.raises(LabelError, match="label_errors: uncertainties must be >= 0"):
        model.fit(data, labels, errors)
    assert not hasattr(model, "label_names_")


@pytest.mark.parametrize("name", MODELS)
def test_predict_before_fit_says_what_to_call(name):
    model = _quick(name)
    data, _ = _toy_data(model)
    with pytest.raises(NotTrainedError, match=r"\.fit\("):
        model.predict(data)


def test_fit_returns_self_and_predicts_every_star(fitted):
    name, model, returned, data, labels = fitted
    assert returned is model
    prediction = model.predict(data)
    assert isinstance(prediction, le.LabelPrediction)
    assert prediction.mean.shape == (len(data), len(labels))
    assert prediction.ids.tolist() == data.ids.tolist()
    assert np.isfinite(prediction.mean).all()
    total = prediction.total_std
    assert ((total > 0) | np.isnan(total)).all()
    assert np.isfinite(total).any(), "a model must provide at least one uncertainty"
    assert prediction.meta["model"] == name


def test_predictions_follow_the_labels(fitted):
    name, model, _, data, labels = fitted
    prediction = model.predict(data)
    first = next(iter(labels))
    truth = np.asarray(labels[first], dtype=float)
    good = truth > -9000
    corr = np.corrcoef(prediction[first].mean[good], truth[good])[0, 1]
    assert corr > 0.5, f"{name} did not learn {first} on an easy problem (r={corr:.2f})"


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    name, model, _, data, _ = fitted
    directory = model.save(tmp_path / "model")
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == name
    for path in directory.iterdir():
        assert path.suffix in {".json", ".safetensors", ".npz"}, f"unexpected file {path.name}"
        if path.suffix == ".npz":
            np.load(path, allow_pickle=False).files  # raises if anything needs pickle
    loaded = le.load_model(directory)
    assert type(loaded) is type(model)
    assert loaded.label_names_ == model.label_names_
    np.testing.assert_allclose(loaded.predict(data).mean, model.predict(data).mean, rtol=1e-5, atol=1e-6)


def test_corrupt_saved_model_is_refused(fitted, tmp_path):
    _, model, _, _, _ = fitted
    directory = model.save(tmp_path / "model")
    for path in directory.iterdir():
        if path.suffix != ".json":
            path.write_bytes(b"not weights")
    with pytest.raises(ModelFileError, match=str(directory)):
        le.load_model(directory)


def test_missing_config_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="config.json"):
        le.load_model(tmp_path)


def test_sensitivity_shape_or_clear_refusal(fitted):
    name, model, _, data, labels = fitted
    first = next(iter(labels))
    try:
        sens = model.sensitivity(data[:4], first)
    except LabelExplorerError as err:
        assert "sensitivit" in str(err)
        return
    n_pixels = data.n_pixels if model.input_kind == "spectra" else None
    assert sens.ndim == 1 and (n_pixels is None or sens.shape == (n_pixels,))
    assert np.isfinite(sens).all()


def test_sensitivity_of_unknown_label_is_refused(fitted):
    _, model, _, data, _ = fitted
    with pytest.raises(LabelExplorerError):
        model.sensitivity(data[:2], "NOT_A_LABEL")


def test_unknown_model_name_suggests_close_one():
    with pytest.raises(UnknownNameError, match="did you mean 'ridge'"):
        get_model("ridgee")
