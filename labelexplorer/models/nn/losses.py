"""The robust, censored regression loss of Leung & Bovy (2019, eqs. 5-7).

Per star *i* and label *d*, with the network's value ``ŷ`` and log-variance output ``s``::

    J_id = ½ (y − ŷ)² / σ² + ½ ln σ²,      σ² = exp(s) + σ_known²

Missing labels (NaN in the standardised targets) contribute 0. The mean over the *D*
labels is multiplied by ``D / D_i`` (the number of known labels of star *i*), so that
missing labels do not lower the effective learning rate; a star with no known label
contributes 0 (never a division by zero). The batch loss is the mean over the stars.
"""

from __future__ import annotations

import torch

__all__ = ["robust_censored_loss", "per_label_loss"]


def per_label_loss(target: torch.Tensor, value: torch.Tensor, log_var: torch.Tensor,
                   known_error: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of every (star, label) entry, 0 where the target is missing (NaN).

    Parameters
    ----------
    target, value, log_var : tensor (n, D)
        Standardised labels (NaN = missing), predictions and predicted ln variances.
    known_error : tensor (n, D), optional
        Standardised known label uncertainties σ_known (0 or NaN = none).

    Examples
    --------
    >>> t = torch.tensor([[1.0, float("nan")]])
    >>> per_label_loss(t, torch.zeros(1, 2), torch.zeros(1, 2)).tolist()
    [[0.5, 0.0]]
    """
    known = torch.isfinite(target)
    variance = torch.exp(log_var)
    if known_error is not None:
        variance = variance + torch.nan_to_num(known_error, nan=0.0).square()
    residual = torch.where(known, target, value) - value
    loss = 0.5 * residual.square() / variance + 0.5 * torch.log(variance)
    return torch.where(known, loss, torch.zeros_like(loss))


def robust_censored_loss(target: torch.Tensor, value: torch.Tensor, log_var: torch.Tensor,
                         known_error: torch.Tensor | None = None) -> torch.Tensor:
    """Batch loss: mean over stars of (mean over labels × D / D_i); all-missing stars give 0.

    Examples
    --------
    Two labels, one missing: the known entry's loss ½·1² = 0.5, times D/D_i = 2, over 2
    labels gives 0.5; the second star has no known label and adds 0 to the mean:

    >>> t = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]])
    >>> float(robust_censored_loss(t, torch.zeros(2, 2), torch.zeros(2, 2)))
    0.25
    """
    entries = per_label_loss(target, value, log_var, known_error)
    n_known = torch.isfinite(target).sum(dim=1)
    per_star = entries.sum(dim=1) / n_known.clamp_min(1)
    return per_star.mean()
