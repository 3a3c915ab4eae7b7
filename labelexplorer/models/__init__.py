"""Label-predicting methods behind one interface (:class:`LabelModel`) and their registry."""

from .base import LabelModel, available_models, get_model, load_model, model_class, register_model

__all__ = ["LabelModel", "available_models", "get_model", "load_model", "model_class", "register_model"]
