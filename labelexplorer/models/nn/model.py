"""What every torch-backed :class:`~labelexplorer.models.base.LabelModel` shares: its device and size."""

from __future__ import annotations

import torch

from .device import choose_device
from .layers import n_parameters

__all__ = ["TorchModel"]


class TorchModel:
    """Mixin for label models whose fitted network is ``network_`` and whose ``device``
    hyperparameter is ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Examples
    --------
    >>> from labelexplorer.models.bcnn import BCNN
    >>> isinstance(BCNN(), TorchModel), BCNN(device="cpu")._torch_device().type
    (True, 'cpu')
    """

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters of the fitted network."""
        self._check_fitted("count its parameters")
        return n_parameters(self.network_)

    def _torch_device(self) -> torch.device:
        return choose_device(self.device)
