"""The one model interface (:class:`LabelModel`) and the registry of methods.

Every method (BCNN, APOGEE Net, SLAM, galaxy CNN, the ridge baseline) is a
scikit-learn-style estimator: ``__init__`` stores hyperparameters only, ``fit``
returns ``self``, learned state lives in attributes with a trailing underscore, and
``predict`` returns a :class:`~labelexplorer.prediction.LabelPrediction`.

Saved models are directories holding ``config.json`` (model type, hyperparameters,
label names, normalisation constants, package version, training-set hash) and
weights as ``safetensors`` or ``.npz`` written by the subclass. Nothing is pickled:
a model directory from a stranger can't run code when loaded.

A subclass implements ``_fit``, ``_predict``, ``_state`` (arrays to save),
``_set_state`` (arrays loaded) and optionally ``_sensitivity``; it registers itself with
:func:`register_model`. Heavy modules (torch) are imported lazily through
``_BUILTIN_MODELS``, so ``import labelexplorer`` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._files import atomic_directory
from ..exceptions import LabelError, LabelExplorerError, ModelFileError, NotTrainedError, UnknownNameError, did_you_mean

__all__ = ["LabelModel", "register_model", "get_model", "model_class", "available_models", "load_model",
           "dataset_hash"]

_REGISTRY: dict[str, type["LabelModel"]] = {}
# name -> module that registers it on import (kept lazy: torch is slow to import)
_BUILTIN_MODELS = {
    "ridge": "labelexplorer.models.ridge",
    "slam": "labelexplorer.models.slam",
    "bcnn-censored": "labelexplorer.models.bcnn",
    "bcnn": "labelexplorer.models.bcnn",
    "galaxy-cnn": "labelexplorer.models.galaxy_cnn",
    "apogee-net": "labelexplorer.models.apogee_net",
}


def register_model(name: str):
    """Class decorator adding a :class:`LabelModel` subclass to the registry under *name*."""

    def decorate(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_models() -> list[str]:
    """Names of every registered model.

    Examples
    --------
    >>> "ridge" in available_models()
    True
    """
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODELS))


def model_class(name: str) -> type["LabelModel"]:
    """The class registered as *name*; an unknown name gets a "did you mean" hint."""
    if name not in _REGISTRY and name in _BUILTIN_MODELS:
        importlib.import_module(_BUILTIN_MODELS[name])
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; available: {', '.join(available_models())}"
                               f"{did_you_mean(name, available_models())}")
    return _REGISTRY[name]


def get_model(name: str, **hyperparameters) -> "LabelModel":
    """An untrained model from the registry.

    Examples
    --------
    >>> get_model("ridge", alpha=2.0)
    RidgeBaseline(alpha=2.0, ...)
    """
    return model_class(name)(**hyperparameters)


def load_model(directory) -> "LabelModel":
    """Load a saved model directory of any registered type (see :meth:`LabelModel.load`)."""
    return LabelModel.load(directory)


def dataset_hash(*arrays) -> str:
    """A short sha256 of training arrays, stored in ``config.json`` for provenance.

    Examples
    --------
    >>> len(dataset_hash(np.zeros(3)))
    16
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


class LabelModel:
    """Base class of every label-predicting method.

    Attributes (set by ``fit`` or ``load``)
    ----------------------------------------
    label_names_ : list of str
        Canonical names of the predicted labels.
    training_hash_ : str
        Hash of the training inputs.
    """

    name: ClassVar[str] = "base"
    #: what ``fit``/``predict`` take: "spectra" (a Spectra) or "images" (an ImageSet)
    input_kind: ClassVar[str] = "spectra"
    #: hyperparameters that make ``fit`` run in seconds; used by the conformance tests
    quick_hyperparameters: ClassVar[dict] = {}

    # --------------------------------------------------------------- hyperparameters
    @classmethod
    def _hyperparameter_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._hyperparameter_names()}

    def set_params(self, **params) -> "LabelModel":
        """Change hyperparameters (before fitting); unknown names raise."""
        valid = self._hyperparameter_names()
        for key, value in params.items():
            if key not in valid:
                raise UnknownNameError(f"{type(self).__name__} has no hyperparameter {key!r}; "
                                       f"valid: {valid}{did_you_mean(key, valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in list(self.get_params().items())[:1])
        more = ", ..." if len(self.get_params()) > 1 else ""
        return f"{type(self).__name__}({params}{more})"

    # --------------------------------------------------------------- public API
    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` or ``load`` has set the learned state."""
        return hasattr(self, "label_names_")

    def _check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise NotTrainedError(
                f"{type(self).__name__} ({self.name!r}) is not trained, so it cannot {action}: call "
                f".fit(data, labels) first, or labelexplorer.load_model(directory) for a saved model")

    def fit(self, data, labels, label_errors=None) -> "LabelModel":
        """Learn labels from *data* (a Spectra or an ImageSet) and a label table; returns self.

        *labels* is any table accepted by :func:`labelexplorer.labels.label_array`; missing
        values (-9999, NaN) are allowed where the method supports them.
        """
        values, names, errors = self._label_values(data, labels, label_errors)
        self._fit(data, values, names, errors)
        self.label_names_ = list(names)
        return self

    @staticmethod
    def _label_values(data, labels, label_errors=None) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """``(values, names, errors)`` of a label table and its optional errors, one row per item of *data*."""
        from ..labels import label_array

        values, names = label_array(labels) if not isinstance(labels, tuple) else labels
        if values.shape[0] != len(data):
            raise LabelExplorerError(f"labels: expected {len(data)} rows (one per spectrum/image), "
                                     f"got {values.shape[0]}")
        errors = None
        if label_errors is not None:
            errors, _ = label_array(label_errors, names) if not isinstance(label_errors, np.ndarray) else (
                np.asarray(label_errors, dtype=float), names)
            if errors.shape != values.shape:
                raise LabelExplorerError(f"label_errors: expected shape {values.shape} like labels, got {errors.shape}")
            if np.any(errors[np.isfinite(errors)] < 0):
                raise LabelError("label_errors: uncertainties must be >= 0")
        return values, list(names), errors

    def _reference_labels(self, data, labels, label_errors=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Reference labels of *data* (and their errors) in this model's label order, for a
        calibration on held-out data: every label of the model is needed; NaN where missing."""
        values, names, errors = self._label_values(data, labels, label_errors)
        missing = [name for name in self.label_names_ if name not in names]
        if missing:
            raise LabelError(f"labels: no column for {missing}; calibrating needs every label of the model "
                             f"({self.label_names_})")
        columns = [names.index(name) for name in self.label_names_]
        return values[:, columns], None if errors is None else errors[:, columns]

    def prepare(self, data):
        """Bring data as the readers return it into the form this model was trained on.

        Batch inference (:func:`labelexplorer.catalog.predict_catalog`) calls
        ``model.predict(model.prepare(batch))`` on every batch of raw survey files, so the
        catalog code never needs to know what a method expects. The default returns *data*
        unchanged. A model whose training input differs from what the readers return
        overrides it (BCNN: remove the chip gaps and normalise the continuum onto 7514 px;
        SLAM: resample onto its grid). An override must be idempotent (prepared data come
        back unchanged) and work spectrum by spectrum (a spectrum's result must not depend
        on the rest of the batch), so that catalogs do not depend on how files are batched.

        Examples
        --------
        >>> import numpy as np
        >>> from labelexplorer import Spectra
        >>> spec = Spectra(np.ones((1, 3)), [1.0, 2.0, 3.0])
        >>> get_model("ridge").prepare(spec) is spec
        True
        """
        return data

    def predict(self, data):
        """Predict labels with uncertainties; returns a LabelPrediction."""
        self._check_fitted("predict")
        prediction = self._predict(data)
        prediction.meta.setdefault("model", self.name)
        prediction.meta.setdefault("training_hash", getattr(self, "training_hash_", ""))
        return prediction

    def sensitivity(self, data, label: str) -> np.ndarray:
        """Mean d label / d pixel over the spectra in *data*, shape (n_pixels,)."""
        self._check_fitted("compute sensitivities")
        from ..labels import canonical_label

        key = canonical_label(label)
        if key not in self.label_names_:
            raise UnknownNameError(f"label {label!r} is not predicted by this model; "
                                   f"available: {self.label_names_}{did_you_mean(key, self.label_names_)}")
        return self._sensitivity(data, key)

    def _sensitivity(self, data, label):
        raise LabelExplorerError(f"{type(self).__name__} does not provide per-pixel sensitivities")

    # --------------------------------------------------------------- persistence
    def save(self, directory) -> Path:
        """Write ``config.json`` and weights into *directory* (atomically); returns the path."""
        from .. import __version__

        self._check_fitted("be saved")
        directory = Path(directory)
        config = {
            "model_type": self.name,
            "hyperparameters": self.get_params(),
            "label_names": self.label_names_,
            "training_hash": getattr(self, "training_hash_", ""),
            "package_version": __version__,
            "extra": self._config_extra(),
        }
        with atomic_directory(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_json_default))
            self._save_weights(tmp)
        return directory

    @classmethod
    def load(cls, directory) -> "LabelModel":
        """Load a model saved with :meth:`save`, whatever its registered type."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ModelFileError(f"{directory}: not a saved model (expected {config_path.name} inside)")
        try:
            config = json.loads(config_path.read_text())
            model_type = config["model_type"]
            hyperparameters = config["hyperparameters"]
            label_names = config["label_names"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{config_path}: unreadable model config ({exc})") from exc
        target = model_class(model_type)
        if cls is not LabelModel and not issubclass(target, cls):
            raise ModelFileError(f"{directory}: holds a {model_type!r} model, not {cls.name!r}")
        model = target(**hyperparameters)
        model.label_names_ = list(label_names)
        model.training_hash_ = config.get("training_hash", "")
        model._load_config_extra(config.get("extra", {}))
        model._load_weights(directory)
        return model

    # subclasses override these three
    def _config_extra(self) -> dict:
        return {}

    def _load_config_extra(self, extra: dict) -> None:
        pass

    def _save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def _load_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def _fit(self, data, values: np.ndarray, names: list[str], errors: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, data):
        raise NotImplementedError


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in config.json")


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to an uncompressed ``.npz`` (no object arrays: loading never unpickles)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ModelFileError(f"{path}: array {key!r} has dtype object, which would need pickle")
    np.savez(path, **arrays)


def load_npz(path: Path, expected: dict[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Read a ``.npz`` with ``allow_pickle=False`` and check the expected shapes."""
    if not Path(path).is_file():
        raise ModelFileError(f"{path}: weights file missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: unreadable weights ({exc})") from exc
    for key, shape in (expected or {}).items():
        if key not in arrays:
            raise ModelFileError(f"{path}: missing array {key!r}")
        if shape is not None and arrays[key].shape != tuple(shape):
            raise ModelFileError(f"{path}: array {key!r} has shape {arrays[key].shape}, expected {tuple(shape)}")
    return arrays
