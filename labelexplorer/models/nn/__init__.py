"""Deep-learning parts shared by the torch models: layers, losses, the training loop, devices.

Importing this package imports torch, so :mod:`labelexplorer.models` loads it lazily.
"""

from .device import autocast, choose_device, configure_threads, resolve_precision, rows_per_chunk, run_in_chunks
from .layers import (DropoutStreams, MCDropout, StopGrad, apply_max_norm, dropout_disabled, n_parameters,
                     number_dropout_layers, stopgrad_passthrough)
from .losses import per_label_loss, robust_censored_loss
from .training import TrainingResult, TrainingSettings, split_indices, train

__all__ = ["autocast", "choose_device", "configure_threads", "resolve_precision", "rows_per_chunk", "run_in_chunks",
           "DropoutStreams", "MCDropout", "StopGrad", "apply_max_norm", "dropout_disabled", "n_parameters",
           "number_dropout_layers", "stopgrad_passthrough", "per_label_loss", "robust_censored_loss",
           "TrainingResult", "TrainingSettings", "split_indices", "train"]
