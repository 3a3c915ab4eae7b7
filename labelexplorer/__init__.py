"""labelexplorer: physical labels with honest uncertainties from survey spectra and images.

The names users type are available from the top level; heavy parts (torch models,
the dashboard) are imported only when first used.

Examples
--------
>>> import labelexplorer as le
>>> model = le.get_model("ridge")
>>> type(model).__name__
'RidgeBaseline'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .exceptions import LabelExplorerError, NotTrainedError  # noqa: E402
from .images import ImageSet  # noqa: E402
from .prediction import LabelPrediction  # noqa: E402
from .spectra import Spectra  # noqa: E402

_LAZY = {
    "read": "labelexplorer.io.registry",
    "get_model": "labelexplorer.models.base",
    "load_model": "labelexplorer.models.base",
    "available_models": "labelexplorer.models.base",
    "label_array": "labelexplorer.labels",
}
_SUBMODULES = ("io", "preprocess", "models", "mock", "analysis", "catalog", "dashboard", "labels", "cli")

__all__ = ["Spectra", "ImageSet", "LabelPrediction", "LabelExplorerError", "NotTrainedError", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"labelexplorer.{name}")
    raise AttributeError(f"module 'labelexplorer' has no attribute {name!r}")
