"""A trained network and its companion arrays in one ``model.safetensors`` file.

Every torch model saves the same way: the network's state dict under ``network.<key>``
and its normalisation arrays (label means, scalers, calibration factors, …) under their
own names, in one safetensors file — tensors only, nothing executable, no pickle. Reading
turns every failure (missing or truncated file, missing key, wrong shape) into a
:class:`~labelexplorer.exceptions.ModelFileError` that names the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...exceptions import LabelExplorerError, ModelFileError

__all__ = ["WEIGHTS_FILE", "save_network", "read_network", "model_file_errors"]

WEIGHTS_FILE = "model.safetensors"
_NETWORK = "network."


def save_network(directory, network: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write *network*'s weights and *arrays* to ``directory/model.safetensors``; return the path.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = save_network(folder, torch.nn.Linear(2, 1), {"label_mean": np.zeros(3)})
    >>> state, arrays = read_network(folder, "example")
    >>> sorted(state), arrays["label_mean"].shape
    (['bias', 'weight'], (3,))
    """
    tensors = {_NETWORK + key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    tensors.update({key: torch.as_tensor(np.ascontiguousarray(value)) for key, value in arrays.items()})
    path = Path(directory) / WEIGHTS_FILE
    save_file(tensors, str(path))
    return path


def read_network(directory, what: str) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The state dict and the companion arrays (numpy) saved by :func:`save_network`.

    *what* names the model in the error raised for an unreadable file.

    Examples
    --------
    >>> import tempfile
    >>> read_network(tempfile.mkdtemp(), "bcnn")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    labelexplorer.exceptions.ModelFileError: .../model.safetensors: unreadable or inconsistent bcnn weights (...)
    """
    path = Path(directory) / WEIGHTS_FILE
    with model_file_errors(path, what):
        tensors = load_file(str(path))
    state = {key[len(_NETWORK):]: value for key, value in tensors.items() if key.startswith(_NETWORK)}
    arrays = {key: value.numpy() for key, value in tensors.items() if not key.startswith(_NETWORK)}
    return state, arrays


@contextlib.contextmanager
def model_file_errors(path, what: str) -> Iterator[None]:
    """Turn the errors of reading or applying saved weights into a :class:`ModelFileError`.

    Examples
    --------
    >>> with model_file_errors("saved/model.safetensors", "slam"):
    ...     {}["label_mean"]
    Traceback (most recent call last):
    ...
    labelexplorer.exceptions.ModelFileError: saved/model.safetensors: unreadable or inconsistent slam weights ('label_mean')
    """
    try:
        yield
    except ModelFileError:
        raise
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError, LabelExplorerError) as exc:
        raise ModelFileError(f"{path}: unreadable or inconsistent {what} weights ({exc})") from exc
