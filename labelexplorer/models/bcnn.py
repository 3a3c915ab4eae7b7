"""Bayesian CNNs for APOGEE spectra: the censored network of Leung & Bovy (2019) and its control.

``bcnn-censored`` (:class:`CensoredBCNN`, astroNN's ``ApogeeBCNNCensored``):

* Full-spectrum branch: Conv1D(2, 8, same) → ReLU → MCDropout → Conv1D(4, 8) → ReLU →
  MaxPool(4) → flatten (7512 values) → MCDropout → Dense 192 ReLU → MCDropout → Dense 64
  ReLU → value and log-variance heads for TEFF, LOGG and FE_H.
* Latent link: Dense(2, linear, weights max-norm 0.5) on the 64-unit layer, concatenated
  with StopGrad([TEFF, LOGG, FE_H]): five numbers fed to every element branch. StopGrad
  keeps the element losses from training the TEFF/LOGG/FE_H heads; the 2-unit link does
  pass them on into the trunk, limited by its max-norm (as in astroNN).
* One element branch per other label: only the pixels of that element's window (a
  binary mask, gathered, as astroNN's BoolMask does) → Dense 32 ReLU → MCDropout → Dense
  16 ReLU → MCDropout (C and N: 256 → 64) → concatenated with the five latent values →
  value and log-variance heads.

``bcnn`` (:class:`BCNN`, astroNN's ``ApogeeBCNN``) is the uncensored control: the same
full-spectrum branch predicts every label, without element branches or StopGrad.

Facts shared by both (paper §2–4): dropout 0.3 on every MCDropout, on at inference too;
L2 5e-9 on the convolutions, the 192- and 64-unit layers and each element's first dense
layer; N(0, 0.05) initial weights on the convolutions and hidden dense layers; Adam with
learning rate 5e-4, batches of 64, 10 % validation split, learning rate ×0.5 after 2
epochs without improvement; the robust censored loss
(:func:`~labelexplorer.models.nn.losses.robust_censored_loss`). With the astroNN
(ASPCAP DR14) windows and 22 labels the censored network has ≈3.5 M parameters.

Variance warm-up (our change to the paper's recipe, on by default): for the first
``variance_warmup`` share of the epochs the loss holds the learned variances at 1
(standardised units), then the robust loss takes over. With learned variances from the
first step, a group of stars the network cannot fit yet (a globular cluster's Al-rich
giants among disc stars) is given large variances, which take the weight off their
residuals, and it stays unfitted (Seitzer et al. 2022 describe the effect): on the mock
universe the censored network fitted its own globular-cluster training stars' [Al/H]
with slope 0.44 and stated ±0.23 dex for them, although a linear fit of its Al branch's
first layer recovers them to 0.07 dex. ``variance_warmup=0`` is the paper's recipe.

Input: continuum-normalised spectra on the 7514-pixel gap-removed APOGEE grid; masked
pixels are set to 1 (the continuum) and the per-pixel training mean is subtracted (no
scaling: training and test spectra differ in SNR). Spectra on the full 8575-pixel grid
have their gaps removed and are continuum-normalised automatically
(:func:`labelexplorer.preprocess.continuum.normalise_continuum`, a degree-2 Chebyshev per
chip fitted to continuum pixels: those of the file given as ``continuum_pixels``, or
else derived from the training set with The Cannon's criterion and stored in the model).
Labels are standardised per label ignoring missing values (-9999, NaN), which add
nothing to the loss.

Inference: ``mc_passes`` Monte Carlo dropout passes. The layers in front of the first
dropout (first convolution, each element's first dense layer) are deterministic, so they
run once per spectrum and only the stochastic rest is repeated, batched over passes
(:func:`mc_samples`: groups of passes × spectra rows, small blocks that stay in cache on
a CPU, tens of thousands of rows on a GPU). Mean = mean over passes; model variance =
variance over passes; predictive variance = exp(mean over passes of the log-variance
output). Masks come from one seeded generator per dropout layer and chunk of spectra
(``random_state`` and the chunk's first row), one mask per pass shared by the spectra of
the chunk (see :func:`mc_samples`), so predictions are reproducible at a given
``mc_batch_size`` whatever the number of threads (the chunking decides which random
numbers a spectrum gets; with an automatic batch size, on the same machine). On a CPU the
chunks run in one thread per core, each with one torch thread (×1.3 on 2 cores over two
intra-op threads, benchmarks/bench_bcnn.py).

Calibration (our addition to the paper's recipe, on by default): the predictive
variance is learned against the training labels *with dropout on*, so it already
contains the dropout scatter that the MC model variance adds again, and the total comes
out too large (about 2× on the mock universe, where the truth is known). After training,
one factor per label rescales both parts and a floor is added to the model part, so that
on the validation spectra ``(prediction − label) / sqrt((k·total)² + f² + σ_known²)`` has
unit variance for the smaller and the larger half of the uncertainties alike
(:func:`labelexplorer.models.calibration.uncertainty_calibration`; the floor is the
network's own error that no S/N removes); the known label errors are left unscaled, so
``sqrt((k·total)² + f²)`` estimates the error against the truth. The factors and floors
are ``uncertainty_scale_`` and ``uncertainty_floor_`` (standardised units), saved with the
model; ``calibrate_uncertainty=False`` keeps the paper's raw uncertainties.
``uncertainty_scale_spread_`` is each factor's bootstrap error: when the labels are
noisier than the network, 10 % of a few thousand spectra fix a factor only to ±10–25 %
with a single factor, more when scale and floor share the work (on the mock universe,
600 validation spectra left [Ni/H] at 1.56). :meth:`BCNN.calibrate` refits on any
held-out labelled stars; the error shrinks as ``1/sqrt(n)``, but grows with the square
of the ratio of label to network error (on the mock universe, 10,000 held-out stars put
every label of both networks within 0.91–1.15).

Flags: ``low_snr`` (known SNR below ``low_snr``); ``outside_training_set``: the total
uncertainty of TEFF, LOGG or FE_H above ``outside_std_factor`` times its median on
training-like spectra, a label outside the training range (±10 %), a spectrum farther
from the training spectra than they are from each other, or TEFF, LOGG or FE_H learned
from fewer than half of its nearest training spectra (:meth:`BCNN.label_coverage`,
:mod:`labelexplorer.models.coverage`: the uncertainty alone misses extrapolations that
the dropout ensemble agrees on, such as the dwarfs' LOGG of a giants-only LOGG
training set); ``untrained_label``: any label learned from fewer than half of them.

Sensitivity: d label / d flux by autograd through the MC mean (``sensitivity_passes``
passes; 0 = the deterministic mean network), StopGrad letting gradients through.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .calibration import uncertainty_calibration, uncertainty_scale_spread
from .coverage import TrainingCoverage
from ..exceptions import FileFormatError, LabelError, LabelExplorerError, ShapeError, UnknownNameError, did_you_mean
from ..labels import canonical_label
from ..prediction import LabelPrediction
from ..preprocess.grid import APOGEE_N_PIXELS, gap_removed_wavelength, n_gap_removed, remove_gaps
from ..spectra import Spectra
from .base import LabelModel, dataset_hash, register_model
from .nn.device import (autocast, flush_denormals, forked_rng, memory_budget, precision_agrees,
                        resolve_precision, rows_per_chunk, run_in_chunks)
from .nn.layers import (DropoutStreams, MCDropout, StopGrad, apply_max_norm, dropout_disabled, n_parameters,
                        number_dropout_layers, stopgrad_passthrough)
from .nn.losses import robust_censored_loss
from .nn.model import TorchModel
from .nn.training import TrainingSettings, split_indices, train
from .nn.weights import WEIGHTS_FILE, model_file_errors, read_network, save_network

__all__ = ["BCNN", "CensoredBCNN", "BCNNNetwork", "CensoredBCNNNetwork", "mc_samples", "TRUNK_LABELS"]

N_PIXELS = n_gap_removed("dr17")
TRUNK_LABELS = ("TEFF", "LOGG", "FE_H")
"""Labels of the full-spectrum branch of the censored network (and the ones its flags watch)."""

_BRANCH_HIDDEN = {"C": (256, 64), "N": (256, 64)}
_DEFAULT_HIDDEN = (32, 16)
_TRUNK_HIDDEN = (192, 64)
_KERNEL = 8
_POOL = 4
_INIT_STD = 0.05
# float32 values alive per row and pixel during a forward (activations, masks, pooling)
_FLOATS_PER_ROW_PIXEL = 16
# Rows (passes x spectra) per stochastic forward. On the CPU all passes of a chunk at once
# (the many small element-branch layers cost per call, not per row) while the trunk runs
# them in cache-sized blocks (SpectrumTrunk.cpu_block_rows); a GPU wants large forwards.
_ROWS_PER_FORWARD = {"cpu": 8192, "cuda": 32768}
# 64 spectra per chunk: the per-pass work (masks gathered for the convolution) is shared by
# more spectra than with 32 (x1.07-1.10, benchmarks/bench_bcnn.py)
_CPU_CHUNK_SPECTRA = 64
_CALIBRATION_SPECTRA = 2000  # validation spectra used for the calibration (at most; the MC passes cost)
_COVERED_SHARE = 0.5  # a label is extrapolated when fewer of a star's nearest training spectra had it


# ============================================================================ networks
def _same_padding(x: torch.Tensor) -> torch.Tensor:
    """Keras' 'same' padding for the even kernel: 3 zeros before, 4 after (output length = input)."""
    return nn.functional.pad(x, ((_KERNEL - 1) // 2, _KERNEL // 2))


def _init_hidden(layer: nn.Module) -> None:
    """N(0, 0.05) weights and zero biases (the paper's initialisation of hidden layers)."""
    nn.init.normal_(layer.weight, 0.0, _INIT_STD)
    nn.init.zeros_(layer.bias)


def _init_head(layer: nn.Linear) -> None:
    """Glorot-uniform weights and zero biases (Keras' default, used for the output heads)."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


class SpectrumTrunk(nn.Module):
    """The full-spectrum branch up to its 64-unit layer.

    ``stem`` (first convolution + ReLU) is deterministic; ``forward`` is the stochastic rest.
    """

    cpu_block_rows = 128
    """Rows (passes × spectra) per block of the stochastic layers on a CPU. 64-128 rows run
    equally fast; from 256 rows on, the activations (tens of MB) may be mapped afresh, page
    by page, at every block (up to 2× slower), and 3200 rows, a 32-spectrum chunk in one
    block, run at a third of the speed (benchmarks/bench_bcnn.py, AMD Zen 4)."""

    cpu_ensemble_block_rows = 256
    """The same for inference with shared masks (:meth:`_ensemble_passes`), which reuses its
    buffers: the rows of one product with dense1's weights, 256-512 rows run equally fast
    (×1.03 over 128, ×1.2 over 64; benchmarks/bench_bcnn.py)."""

    cpu_conv_rows = 16
    """Rows per convolution in inference with shared masks: its inputs (165 kB a row in
    float32) and outputs stay in the core's cache (16 rows: ×1.1 over 32, ×1.5 over 64)."""

    def __init__(self, n_pixels: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 2, _KERNEL)
        self.drop_conv = MCDropout(dropout)
        self.conv2 = nn.Conv1d(2, 4, _KERNEL)
        self.drop_flat = MCDropout(dropout)
        self.dense1 = nn.Linear(4 * (n_pixels // _POOL), _TRUNK_HIDDEN[0])
        self.drop_dense = MCDropout(dropout)
        self.dense2 = nn.Linear(*_TRUNK_HIDDEN)
        for layer in (self.conv1, self.conv2, self.dense1, self.dense2):
            _init_hidden(layer)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(_same_padding(x.unsqueeze(1))))

    def forward(self, stem: torch.Tensor, streams: DropoutStreams | None = None, repeats: int = 1) -> torch.Tensor:
        """The 64-unit layer for *repeats* dropout passes over *stem*, pass-major.

        On a CPU the passes go through in blocks of about ``cpu_block_rows`` rows whose
        activations stay in the caches. Every dropout layer draws its masks from its own
        stream (the networks number them) in pass order whatever the blocks, so the result
        does not depend on them.
        """
        cpu = stem.device.type == "cpu"
        if self._ensemble_inference(streams):
            per_block = max(1, self.cpu_ensemble_block_rows // max(len(stem), 1)) if cpu else repeats
            return self._ensemble_passes(stem, streams, repeats, min(per_block, repeats))
        per_block = max(1, self.cpu_block_rows // max(len(stem), 1)) if cpu else repeats
        if per_block >= repeats:
            return self._passes(stem, streams, repeats)
        return torch.cat([self._passes(stem, streams, min(per_block, repeats - start))
                          for start in range(0, repeats, per_block)])

    def _passes(self, stem: torch.Tensor, streams: DropoutStreams | None, repeats: int) -> torch.Tensor:
        h = self.drop_conv(stem, streams, repeats)
        h = self.drop_flat(self.conv_relu_pool(h), streams, passes=repeats)
        h = self.drop_dense(torch.relu(self.dense1(h)), streams, passes=repeats)
        return torch.relu(self.dense2(h))

    def _ensemble_inference(self, streams: DropoutStreams | None) -> bool:
        """True for inference (no autograd) with one mask per pass (shared streams), all dropout on."""
        layers = (self.drop_conv, self.drop_flat, self.drop_dense)
        return (streams is not None and streams.shared and not torch.is_grad_enabled()
                and all(layer.enabled and layer.rate > 0 for layer in layers))

    def _ensemble_passes(self, stem: torch.Tensor, streams: DropoutStreams, repeats: int, per_block: int
                         ) -> torch.Tensor:
        """``_passes`` for inference with shared masks, in blocks of *per_block* passes, into reused buffers.

        The same function as ``_passes`` (the same masks, float rounding aside), arranged
        for speed: conv2 + MaxPool(4) is one batched matrix product per row, (4 positions
        × 4 channels) × (2 channels × 11 taps) Toeplitz weights times the 22 inputs each
        group of four outputs reads (gathered once per chunk for the stem and for the
        masks: a pass's input is their product), whose output is already laid out for a
        max over contiguous planes. Masks are applied by broadcast multiplications, the
        bias and ReLU after the maximum (they commute with it; the bias, scaled by the
        next mask, in the same operation as that mask), and every block writes
        into the same buffers: fresh tens of megabytes per block made the kernel map and
        zero pages every time (up to half the CPU time). Under bfloat16 autocast
        everything runs in bfloat16 with weights cast once (not at every product).
        On a Zen 4 core 1.5-1.75× (float32) and 1.7-1.9× (bfloat16) the speed of ``_passes``
        with per-row masks (benchmarks/bench_bcnn.py).
        """
        b, groups = len(stem), self.dense1.in_features // _POOL
        dtype = _autocast_dtype(stem)
        conv_w, conv_b, w1, b1, w2, b2 = self._inference_weights(dtype)
        keep_conv, kept_conv = self.drop_conv.pass_masks(repeats, stem.shape[1:], streams, dtype)
        keep_flat, kept_flat = self.drop_flat.pass_masks(repeats, (self.dense1.in_features,), streams, dtype)
        keep_dense, kept_dense = self.drop_dense.pass_masks(repeats, (self.dense1.out_features,), streams, dtype)
        # as MCDropout computes it: (x * (1 / kept)) * keep; the masks scaled are exactly 0 or 1 / kept
        keep_flat, keep_dense = keep_flat.mul_(1.0 / kept_flat), keep_dense.mul_(1.0 / kept_dense)
        # conv2's bias enters with dense1's input mask: relu(pooled + bias) * keep = relu(pooled * keep + bias * keep)
        masked_bias = (keep_flat.view(repeats, -1, groups) * conv_b).view(repeats, -1)
        stem_taps = _pooled_conv_inputs((stem * (1.0 / kept_conv)).to(dtype), groups)
        mask_taps = _pooled_conv_inputs(keep_conv, groups)
        rows = per_block * b
        conv_rows = min(rows, self.cpu_conv_rows) if stem.device.type == "cpu" else rows
        spectra, group = min(b, conv_rows), max(1, conv_rows // b)  # per convolution: spectra of `group` passes
        inputs = stem.new_empty((group, spectra, *stem_taps.shape[1:]), dtype=dtype)
        conv = stem.new_empty((group * spectra, conv_w.shape[0], groups), dtype=dtype)
        pooled = stem.new_empty((per_block, b, self.conv2.out_channels, groups), dtype=dtype)
        out = stem.new_empty((repeats * b, self.dense2.out_features), dtype=dtype)
        with torch.autocast(stem.device.type, enabled=False):  # in `dtype` already: no casts per product
            for start in range(0, repeats, per_block):
                k = min(per_block, repeats - start)
                n, passes = k * b, slice(start, start + k)
                for first_pass, first in itertools.product(range(0, k, group), range(0, b, spectra)):
                    q, m = min(group, k - first_pass), min(spectra, b - first)
                    h = torch.mul(stem_taps[first:first + m], mask_taps[start + first_pass:start + first_pass + q, None],
                                  out=inputs[:q, :m]).view(q * m, *stem_taps.shape[1:])
                    h = torch.bmm(conv_w.expand(q * m, -1, -1), h, out=conv[:q * m]).view(q, m, _POOL, -1, groups)
                    _max_of_positions(h, pooled[first_pass:first_pass + q, first:first + m])
                h = pooled[:k].view(k, b, -1)
                h = torch.addcmul(masked_bias[passes].unsqueeze(1), h, keep_flat[passes].unsqueeze(1), out=h)
                h = torch.addmm(b1, h.clamp_min_(0).view(n, -1), w1).clamp_min_(0)
                h = h.view(k, b, -1).mul_(keep_dense[passes].unsqueeze(1)).view(n, -1)
                torch.addmm(b2, h, w2, out=out[start * b:start * b + n]).clamp_min_(0)
        return out

    def _inference_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Weights of ``_ensemble_passes`` in *dtype*, made again only when a parameter changed."""
        parameters = (self.conv2.weight, self.conv2.bias, self.dense1.weight, self.dense1.bias,
                      self.dense2.weight, self.dense2.bias)
        key = (dtype,) + tuple((p.data_ptr(), p._version) for p in parameters)
        cached = self.__dict__.get("_inference_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                # row s * 4 + c: conv2's channel c at position s of a group of four; column i * 11 + t:
                # input channel i at tap t (conv2's kernel shifted by s, zeros around)
                weights = (_shifted_kernels(self.conv2.weight, 0).flatten(0, 1).flatten(1), self.conv2.bias[:, None],
                           self.dense1.weight.t(), self.dense1.bias, self.dense2.weight.t(), self.dense2.bias)
                cached = (key, tuple(w.detach().to(dtype) for w in weights))
            self.__dict__["_inference_cache"] = cached
        return cached[1]

    def conv_relu_pool(self, h: torch.Tensor) -> torch.Tensor:
        """``MaxPool(4)(ReLU(conv2(h)))`` ('same' padding), flattened channel-major, as one strided convolution.

        Each group of four pooled positions is one output position of a convolution with
        stride 4 whose 16 output channels are (conv2 channel, position in the group): its
        kernel holds conv2's kernel shifted by 0-3 taps (a block-Toeplitz weight of 12
        taps, built from ``conv2.weight`` at every call, so autograd trains conv2 through
        it). 1.5× the multiply-adds, but 16 output channels vectorise where 4 did not: on
        a CPU the layers run 2.5-3× faster (benchmarks/bench_bcnn.py). The ReLU commutes
        with the maximum and is applied after it, to a quarter of the values. Ties in the
        maximum (all-zero inputs) may route gradients to another pooled position than
        ``MaxPool1d`` does, through zero inputs only: the gradients of the weights and of
        the stem are the same.
        """
        groups = h.shape[-1] // _POOL
        weight = _shifted_kernels(self.conv2.weight, 1).transpose(0, 1).flatten(0, 1)  # rows: channel * 4 + position
        out = nn.functional.conv1d(h, weight, self.conv2.bias.repeat_interleave(_POOL), stride=_POOL,
                                   padding=_KERNEL // 2)
        return torch.relu(out.view(len(h), -1, _POOL, groups).amax(2)).flatten(1)

    def regularised_weights(self) -> list[torch.Tensor]:
        return [self.conv1.weight, self.conv2.weight, self.dense1.weight, self.dense2.weight]


def _shifted_kernels(weight: torch.Tensor, lead: int) -> torch.Tensor:
    """conv2's kernel shifted by 0-3 taps, one per position of a pooling group, after *lead* zeros:
    ``(position, out channel, in channel, lead + 11 taps)``, the block-Toeplitz weight of both conv + pool paths."""
    return torch.stack([nn.functional.pad(weight, (shift + lead, _POOL - 1 - shift)) for shift in range(_POOL)])


def _max_of_positions(conv: torch.Tensor, out: torch.Tensor) -> None:
    """``amax(conv, 2)`` into *out* for ``conv`` of shape (..., 4 positions, channels, groups), as three
    element-wise maxima of contiguous planes: 1.2-1.5x faster than ``amax``, which fills *out* first."""
    torch.maximum(conv[:, :, 0], conv[:, :, 1], out=out)
    torch.maximum(out, conv[:, :, 2], out=out)
    torch.maximum(out, conv[:, :, 3], out=out)


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of matrix products on *x*'s device: the autocast one where autocast is on."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def _pooled_conv_inputs(h: torch.Tensor, groups: int) -> torch.Tensor:
    """``(n, channels, pixels) -> (n, channels * 11, groups)``: the 'same'-padded inputs that the four
    conv2 outputs of each pooling group read (taps ``4 g`` to ``4 g + 10`` after 3 padding zeros)."""
    taps = _same_padding(h).unfold(-1, _KERNEL + _POOL - 1, _POOL)[:, :, :groups]
    return taps.transpose(2, 3).reshape(len(h), -1, groups)


class ElementBranch(nn.Module):
    """One element's mini network over the pixels of its window."""

    def __init__(self, pixels: torch.Tensor, hidden: tuple[int, int], n_context: int, dropout: float):
        super().__init__()
        self.register_buffer("pixels", pixels, persistent=False)
        self.dense1 = nn.Linear(int(pixels.numel()), hidden[0])
        self.drop1 = MCDropout(dropout)
        self.dense2 = nn.Linear(*hidden)
        self.drop2 = MCDropout(dropout)
        self.value = nn.Linear(hidden[1] + n_context, 1)
        self.log_var = nn.Linear(hidden[1] + n_context, 1)
        _init_hidden(self.dense1)
        _init_hidden(self.dense2)
        _init_head(self.value)
        _init_head(self.log_var)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense1(x[:, self.pixels]))

    def forward(self, stem, context, streams=None, repeats: int = 1):
        h = self.drop1(stem, streams, repeats)
        h = self.drop2(torch.relu(self.dense2(h)), streams, passes=repeats)
        z = torch.cat([h, context], dim=1)
        return self.value(z), self.log_var(z)


class BCNNNetwork(nn.Module):
    """Uncensored network: every label from the full-spectrum branch.

    ``forward(x, streams, repeats)`` returns ``(value, log_var)``, each ``(repeats * b, n_labels)``
    in pass-major order; ``stems`` and ``heads`` split it into its deterministic and
    stochastic parts.

    Examples
    --------
    >>> net = BCNNNetwork(64, 3, 0.3)
    >>> value, log_var = net(torch.zeros(2, 64), DropoutStreams(0), repeats=5)
    >>> value.shape, log_var.shape
    (torch.Size([10, 3]), torch.Size([10, 3]))
    """

    def __init__(self, n_pixels: int, n_labels: int, dropout: float):
        super().__init__()
        self.trunk = SpectrumTrunk(n_pixels, dropout)
        self.value = nn.Linear(_TRUNK_HIDDEN[1], n_labels)
        self.log_var = nn.Linear(_TRUNK_HIDDEN[1], n_labels)
        _init_head(self.value)
        _init_head(self.log_var)
        number_dropout_layers(self)

    def stems(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk.stem(x)]

    def heads(self, stems, streams=None, repeats: int = 1):
        h = self.trunk(stems[0], streams, repeats)
        return self.value(h), self.log_var(h)

    def forward(self, x, streams=None, repeats: int = 1):
        return self.heads(self.stems(x), streams, repeats)

    def regularised_weights(self) -> list[torch.Tensor]:
        return self.trunk.regularised_weights()

    def constrain(self) -> None:
        """No weight constraint in the uncensored network."""


class CensoredBCNNNetwork(nn.Module):
    """Censored network: trunk labels from the full spectrum, element labels from their windows.

    Parameters
    ----------
    n_pixels : int
    trunk_columns : list of int
        Output columns of the full-spectrum heads (TEFF, LOGG, FE_H, whichever are asked).
    branch_columns : list of int
        Output column of each element branch.
    windows : bool tensor (n_branches, n_pixels)
        Binary window of each branch (kept as a buffer, so saved with the weights).
    branch_hidden : list of (int, int)
        Hidden sizes of each branch.
    dropout, latent_size, max_norm : float, int, float

    Examples
    --------
    >>> windows = torch.zeros(1, 64, dtype=torch.bool); windows[0, 10:20] = True
    >>> net = CensoredBCNNNetwork(64, [0, 2], [1], windows, [(32, 16)], 0.3, 2, 0.5)
    >>> value, _ = net(torch.zeros(4, 64))
    >>> value.shape
    torch.Size([4, 3])
    """

    def __init__(self, n_pixels: int, trunk_columns, branch_columns, windows: torch.Tensor, branch_hidden,
                 dropout: float, latent_size: int, max_norm: float):
        super().__init__()
        self.max_norm = float(max_norm)
        self.trunk = SpectrumTrunk(n_pixels, dropout)
        n_trunk = len(trunk_columns)
        self.trunk_value = nn.Linear(_TRUNK_HIDDEN[1], n_trunk)
        self.trunk_log_var = nn.Linear(_TRUNK_HIDDEN[1], n_trunk)
        with warnings.catch_warnings():  # latent_size=0 cuts the link: an empty layer is meant
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.latent = nn.Linear(_TRUNK_HIDDEN[1], latent_size)
            _init_head(self.trunk_value)
            _init_head(self.trunk_log_var)
            _init_hidden(self.latent)
        self.stop = StopGrad()
        self.register_buffer("windows", windows.to(torch.bool))
        self.branches = nn.ModuleList([
            ElementBranch(torch.nonzero(window).flatten(), hidden, n_trunk + latent_size, dropout)
            for window, hidden in zip(windows, branch_hidden)])
        order = np.argsort(np.asarray(list(trunk_columns) + list(branch_columns)))
        self.register_buffer("output_order", torch.as_tensor(order, dtype=torch.long), persistent=False)
        number_dropout_layers(self)
        self.constrain()

    def stems(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk.stem(x)] + [branch.stem(x) for branch in self.branches]

    def heads(self, stems, streams=None, repeats: int = 1):
        h = self.trunk(stems[0], streams, repeats)
        values, log_vars = [self.trunk_value(h)], [self.trunk_log_var(h)]
        context = torch.cat([self.latent(h), self.stop(values[0])], dim=1)
        for branch, stem in zip(self.branches, stems[1:]):
            value, log_var = branch(stem, context, streams, repeats)
            values.append(value)
            log_vars.append(log_var)
        return torch.cat(values, 1)[:, self.output_order], torch.cat(log_vars, 1)[:, self.output_order]

    def forward(self, x, streams=None, repeats: int = 1):
        return self.heads(self.stems(x), streams, repeats)

    def regularised_weights(self) -> list[torch.Tensor]:
        return self.trunk.regularised_weights() + [branch.dense1.weight for branch in self.branches]

    def constrain(self) -> None:
        """Max-norm on the latent link (called after every optimizer step)."""
        apply_max_norm(self.latent, self.max_norm)


def mc_samples(network: nn.Module, x: torch.Tensor, passes: int, streams: DropoutStreams | None = None, *,
               batched: bool = True, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo dropout draws of ``(value, log_var)``, each ``(passes, b, n_labels)``.

    ``batched=True`` computes the deterministic stems once and runs the stochastic rest
    for groups of passes, each group one forward over ``group × b`` rows (*rows* rows at
    most; default: all passes at once; on a CPU the trunk splits a forward into blocks of
    :attr:`SpectrumTrunk.cpu_block_rows` rows). ``batched=False`` is the naive way:
    *passes* full forwards. With the same *streams* seed both give the same draws on the CPU.

    With shared streams (``DropoutStreams(seed, shared=True)``, what the models use) pass
    ``n`` drops the same units for every spectrum: the passes are an ensemble of sampled
    networks, the same for all spectra. Each spectrum's draws have exactly the
    distribution that per-spectrum masks give them (its MC mean and variance are as
    unbiased and as noisy); only the Monte Carlo noise of different spectra is correlated,
    since they share the networks, and a spectrum's result no longer depends on which
    spectra run with it. Inference (no autograd) then takes the trunk's fast path
    (:meth:`SpectrumTrunk._ensemble_passes`: a fraction of the random numbers, masks by
    broadcasting, reused buffers, bfloat16 weights cast once; 1.5-1.75× float32 and
    1.7-1.9× bfloat16 the per-spectrum-mask speed on a Zen 4 core, benchmarks/bench_bcnn.py).

    Examples
    --------
    >>> net = BCNNNetwork(64, 2, 0.3)
    >>> x = torch.randn(3, 64)
    >>> fast, _ = mc_samples(net, x, 4, DropoutStreams(1), rows=6)
    >>> slow, _ = mc_samples(net, x, 4, DropoutStreams(1), batched=False)
    >>> fast.shape, bool(torch.allclose(fast, slow, atol=1e-6))
    (torch.Size([4, 3, 2]), True)
    >>> with torch.no_grad():
    ...     shared, _ = mc_samples(net, x, 4, DropoutStreams(1, shared=True))
    ...     naive, _ = mc_samples(net, x, 4, DropoutStreams(1, shared=True), batched=False)
    >>> bool(torch.allclose(shared, naive, atol=1e-6))
    True
    """
    b = x.shape[0]
    if not batched:
        draws = [network(x, streams) for _ in range(passes)]
        return torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])
    stems = network.stems(x)
    group = passes if rows is None else max(1, min(passes, rows // max(b, 1)))
    values, log_vars = [], []
    for start in range(0, passes, group):
        repeats = min(group, passes - start)
        value, log_var = network.heads(stems, streams, repeats=repeats)
        values.append(value.reshape(repeats, b, -1))
        log_vars.append(log_var.reshape(repeats, b, -1))
    return torch.cat(values), torch.cat(log_vars)


# ============================================================================ helpers
def _mean_trunk_features(network: nn.Module, x, device: torch.device) -> np.ndarray:
    """The full-spectrum branch's 64 units, dropout off, for design rows *x* (in chunks, a thread per core):
    the training coverage's features, and what shows a dead branch."""
    network = network.to(device).eval()

    def features(rows: slice) -> np.ndarray:
        xb = torch.as_tensor(x[rows], device=device)
        with torch.no_grad(), dropout_disabled(network), flush_denormals():
            return network.trunk(network.trunk.stem(xb)).float().cpu().numpy()

    workers = torch.get_num_threads() if device.type == "cpu" else 1
    return np.concatenate(run_in_chunks(features, len(x), _CPU_CHUNK_SPECTRA, workers=workers))


def _refuse_dead_trunk(features: np.ndarray, name: str) -> None:
    """Raise if the full-spectrum branch's 64 units (*features* of the training spectra, from
    :func:`_mean_trunk_features`) take the same values for every spectrum.

    Such a network (every ReLU of a layer off for every input, which small, fast-learning
    runs sometimes end in) predicts the same TEFF, LOGG and FE_H for any star, with
    confident-looking uncertainties: refusing it beats returning it.
    """
    if len(features) > 1 and np.array_equal(features.max(axis=0), features.min(axis=0)):
        raise LabelExplorerError(f"{name}: training ended with a dead full-spectrum branch (its 64-unit layer is the "
                                 f"same for every training spectrum); fit again with another random_state or a "
                                 f"smaller learning_rate")


def _element_hidden(element: str) -> tuple[int, int]:
    return _BRANCH_HIDDEN.get(element.upper(), _DEFAULT_HIDDEN)


def _fill_masked(spectra: Spectra) -> np.ndarray:
    """Flux with masked pixels set to 1, the continuum level of a normalised spectrum."""
    return np.where(spectra.mask, np.float32(1.0), spectra.flux).astype(np.float32)


def _remove_gaps(spectra: Spectra) -> Spectra:
    wavelength = remove_gaps(spectra.wavelength)
    return spectra.replace(flux=remove_gaps(spectra.flux), error=remove_gaps(spectra.error),
                           mask=remove_gaps(spectra.mask), wavelength=wavelength,
                           step="remove APOGEE chip gaps (8575 -> 7514 px)")


def _json_float(value: float):
    return value if math.isfinite(value) else None


# ============================================================================ the models
@register_model("bcnn")
class BCNN(TorchModel, LabelModel):
    """Uncensored Bayesian CNN (astroNN ``ApogeeBCNN``): every label from the full spectrum.

    Parameters
    ----------
    epochs : int
        Maximum number of epochs (early stopping usually ends training sooner).
    batch_size : int
        Spectra per optimizer step.
    learning_rate : float
        Initial Adam learning rate (halved after 2 epochs without validation improvement).
    validation_fraction : float
        Share of the training spectra held out for the validation loss.
    early_stopping_patience : int
        Epochs without improvement of the validation loss before training stops; the
        weights of the best epoch are kept.
    min_epochs : int
        Early stopping monitors the validation loss from this epoch on, so training runs
        at least this long and never keeps an earlier epoch (small training sets take few
        steps per epoch, and their small validation loss is noisy).
    variance_warmup : float
        Share of ``epochs`` at the start during which the loss holds every learned
        variance at 1 (standardised units; the known label errors still count), so the
        means are fitted before the variances. With the learned variances on from the
        first step, stars the network cannot fit yet get large variances and with them
        little weight, and stay unfitted: on the mock universe the censored network fitted
        its own globular-cluster training stars' [Al/H] with slope 0.44 at the paper's
        setting (0), and held-out members with slope 0.67 after a warm-up of 0.25 and 0.79
        after one of 0.5 (benchmarks/eval_bcnn_mock.py). The warm-up's epochs set no best
        epoch.
    dropout : float
        Rate of every MC dropout layer.
    l2 : float
        L2 penalty on the regularised weights (added to the loss as ``l2 · Σ w²``).
    mc_passes : int
        Monte Carlo dropout passes per prediction.
    sensitivity_passes : int
        MC passes averaged by :meth:`sensitivity` (0: the deterministic mean network,
        dropout off).
    continuum_pixels : str, optional
        Continuum-pixel mask file (e.g. astroNN's ``dr17_contmask.npy``) used to normalise
        8575-pixel input; by default derived from the training set when needed.
    outside_std_factor : float
        A star is flagged ``outside_training_set`` when the total uncertainty of TEFF,
        LOGG or FE_H exceeds this multiple of its median on training-like stars, or a
        predicted label falls outside the training range widened by 10 %.
    low_snr : float
        Spectra with a known SNR below this are flagged ``low_snr``.
    calibrate_uncertainty : bool
        Rescale each label's model and predictive std by one factor fitted on the
        validation spectra (see the module notes on calibration).
    random_state : int
        Seed of the weights, the validation split, the shuffling and the dropout masks.
    device : str
        ``"auto"`` (CUDA if present, else every CPU core), ``"cpu"`` or ``"cuda"``.
    precision : str
        ``"auto"``, ``"float32"`` or ``"bfloat16"`` for MC inference (see
        :mod:`labelexplorer.models.nn.device`). ``"auto"`` takes bfloat16 where the device
        has it natively and the first chunk of the first prediction agrees with float32
        within 0.1 σ; the verdict is kept for this network and device (a catalog predicts
        batch after batch). Training always runs in float32.
    mc_batch_size : int, optional
        Spectra per inference chunk; default sized from the free memory.
    checkpoint_dir : str, optional
        Folder for training checkpoints: Ctrl-C saves one, and ``fit`` with the same
        folder and data resumes from it.
    progress : bool
        Show a progress bar while training.

    Examples
    --------
    >>> model = BCNN(epochs=2, mc_passes=4, progress=False)
    >>> model.mc_passes
    4
    """

    #: tiny settings that make the conformance tests fast
    quick_hyperparameters = {"epochs": 12, "batch_size": 8, "learning_rate": 2e-3, "mc_passes": 8,
                             "sensitivity_passes": 2, "early_stopping_patience": 12, "progress": False}
    conformance_n_pixels = N_PIXELS
    conformance_wavelength = gap_removed_wavelength()

    def __init__(self, epochs: int = 60, batch_size: int = 64, learning_rate: float = 5e-4,
                 validation_fraction: float = 0.1, early_stopping_patience: int = 4, min_epochs: int = 0,
                 variance_warmup: float = 0.5, dropout: float = 0.3, l2: float = 5e-9, mc_passes: int = 100, sensitivity_passes: int = 16,
                 continuum_pixels: str | None = None, outside_std_factor: float = 3.0, low_snr: float = 30.0,
                 calibrate_uncertainty: bool = True, random_state: int = 0, device: str = "auto", precision: str = "auto",
                 mc_batch_size: int | None = None, checkpoint_dir: str | None = None, progress: bool = True):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.min_epochs = min_epochs
        self.variance_warmup = variance_warmup
        self.dropout = dropout
        self.l2 = l2
        self.mc_passes = mc_passes
        self.sensitivity_passes = sensitivity_passes
        self.continuum_pixels = continuum_pixels
        self.outside_std_factor = outside_std_factor
        self.low_snr = low_snr
        self.calibrate_uncertainty = calibrate_uncertainty
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.mc_batch_size = mc_batch_size
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress

    # ------------------------------------------------------------------ network layout
    def _build_network(self, names: list[str], n_pixels: int, windows: np.ndarray | None = None) -> nn.Module:
        return BCNNNetwork(n_pixels, len(names), self.dropout)

    def _layout(self, names: list[str]) -> np.ndarray | None:
        """Check the labels can be predicted; return the binary windows (None: no branches)."""
        return None

    def network_for(self, label_names) -> nn.Module:
        """The untrained network these hyperparameters build for *label_names*.

        Useful to inspect the architecture before training, e.g. its parameter count.

        Examples
        --------
        >>> from labelexplorer.models.nn import n_parameters
        >>> n_parameters(BCNN().network_for(["TEFF", "LOGG"]))
        1455194
        """
        names = [canonical_label(name) for name in label_names]
        windows = self._layout(names)
        with forked_rng(torch.device("cpu")):
            torch.manual_seed(self.random_state)
            return self._build_network(names, N_PIXELS, windows)

    # ------------------------------------------------------------------ input handling
    def _model_grid(self, spectra, *, labels: np.ndarray | None = None, names=None) -> Spectra:
        """Spectra on the 7514-pixel grid, continuum-normalised (8575-pixel input is converted)."""
        if not isinstance(spectra, Spectra):
            raise ShapeError(f"spectra: expected a labelexplorer.Spectra, got {type(spectra).__name__}")
        if spectra.n_pixels == N_PIXELS:
            return spectra
        if spectra.n_pixels != APOGEE_N_PIXELS:
            raise ShapeError(f"spectra: expected {N_PIXELS} pixels (continuum-normalised, APOGEE gap-removed grid) "
                             f"or {APOGEE_N_PIXELS} (full APOGEE grid, normalised automatically), "
                             f"got {spectra.n_pixels}")
        from ..preprocess.continuum import normalise_continuum

        spectra = _remove_gaps(spectra)
        mask = self._continuum_mask(spectra, labels, names)
        return normalise_continuum(spectra, mask)

    def _continuum_mask(self, spectra: Spectra, labels, names) -> np.ndarray:
        from ..preprocess.continuum import continuum_pixels_from_file, derive_continuum_pixels

        if getattr(self, "continuum_mask_", None) is not None:
            return self.continuum_mask_
        if self.continuum_pixels is not None:
            mask = continuum_pixels_from_file(self.continuum_pixels, N_PIXELS)
        elif labels is not None:
            stellar = [i for i, name in enumerate(names) if name in TRUNK_LABELS] or list(range(len(names)))
            mask = derive_continuum_pixels(spectra, labels[:, stellar])
        else:
            raise ShapeError(f"spectra: {APOGEE_N_PIXELS}-pixel input needs continuum pixels, but this model was "
                             f"trained on normalised {N_PIXELS}-pixel spectra; normalise them first "
                             "(labelexplorer.preprocess.normalise_continuum) or set continuum_pixels")
        self.continuum_mask_ = mask
        return mask

    def _design(self, spectra: Spectra) -> np.ndarray:
        """Model input: masked pixels set to 1, minus the training mean spectrum."""
        return _fill_masked(spectra) - self.pixel_mean_

    # ------------------------------------------------------------------ training
    def fit(self, spectra, labels, label_errors=None, *, callbacks=()) -> "BCNN":
        """Train on *spectra* (a Spectra on the 7514 or 8575 APOGEE grid) and a label table.

        Parameters
        ----------
        spectra : Spectra
        labels : table
            Any table :func:`labelexplorer.labels.label_array` reads; -9999 / NaN are missing.
        label_errors : table or array, optional
            Known 1-σ label uncertainties (σ_known in the loss); NaN = unknown.
        callbacks : sequence of callables
            Called with each epoch's record (epoch, loss, val_loss, lr).

        Returns
        -------
        self
        """
        self._callbacks = tuple(callbacks)
        try:
            return super().fit(spectra, labels, label_errors)
        finally:
            del self._callbacks

    def _fit(self, spectra, values, names, errors):
        settings = self._training_settings()  # the cheap checks of hyperparameters and labels come first
        windows = self._layout(names)
        label_mean, label_std, label_range = self._label_scaling(values, names)
        self.__dict__.pop("continuum_mask_", None)  # a refit derives or loads it afresh
        spectra = self._model_grid(spectra, labels=values, names=names)
        flux = _fill_masked(spectra)
        self.pixel_mean_ = flux.mean(axis=0)
        x = torch.as_tensor(flux - self.pixel_mean_)
        y = torch.as_tensor(((values - label_mean) / label_std).astype(np.float32))
        y_err = torch.zeros_like(y) if errors is None else torch.as_tensor(
            np.nan_to_num(errors / label_std, nan=0.0).astype(np.float32))
        device = self._torch_device()
        with forked_rng(device):
            torch.manual_seed(self.random_state)
            network = self._build_network(list(names), spectra.n_pixels, windows).to(device)
            if self.progress:
                print(f"{self.name}: {n_parameters(network):,} trainable parameters, {len(names)} labels, "
                      f"{len(spectra)} spectra, device {device}")
            data = {"x": x, "y": y, "y_err": y_err}
            if sum(t.numel() * 4 for t in data.values()) < memory_budget(device):
                data = {key: value.to(device) for key, value in data.items()}
            result = train(network, self._loss, data, settings, device=device,
                           constrain=lambda module: module.constrain(), callbacks=getattr(self, "_callbacks", ()),
                           fingerprint=self._fingerprint(flux, values, errors, names))
        features = _mean_trunk_features(network, x, device)  # before the network is kept: a dead one is refused
        _refuse_dead_trunk(features, self.name)
        self.network_ = network
        self.label_mean_, self.label_std_, self.label_range_ = label_mean, label_std, label_range
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        _, val_rows = split_indices(len(x), self.validation_fraction, self.random_state)
        self._calibrate(x, y, y_err, val_rows)
        self.coverage_ = TrainingCoverage(features, np.isfinite(values), seed=self.random_state)
        self.training_hash_ = dataset_hash(flux, values)

    def _label_scaling(self, values: np.ndarray, names: list[str]):
        known = np.isfinite(values)
        for j, name in enumerate(names):
            if known[:, j].sum() < 2:
                raise LabelError(f"label {name!r}: fewer than 2 training spectra have a known value; cannot fit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)
        return mean, std, np.column_stack([np.nanmin(values, axis=0), np.nanmax(values, axis=0)])

    def _training_settings(self) -> TrainingSettings:
        return TrainingSettings(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                                validation_fraction=self.validation_fraction,
                                early_stopping_patience=self.early_stopping_patience,
                                min_epochs=self.min_epochs, warmup_epochs=self._warmup_epochs(),
                                seed=self.random_state,
                                checkpoint_dir=self.checkpoint_dir, progress=self.progress,
                                description=f"training {self.name}")

    def _fingerprint(self, flux, values, errors, names) -> str:
        ignored = {"progress", "device", "precision", "mc_batch_size", "checkpoint_dir", "mc_passes",
                   "sensitivity_passes", "outside_std_factor", "low_snr", "calibrate_uncertainty"}
        settings = {k: v for k, v in self.get_params().items() if k not in ignored}
        text = json.dumps(settings, sort_keys=True, default=str) + ",".join(names)
        extra = np.zeros(0) if errors is None else errors
        return dataset_hash(flux, values, extra, np.frombuffer(text.encode(), np.uint8))

    def _warmup_epochs(self) -> int:
        if not 0 <= self.variance_warmup < 1:
            raise LabelExplorerError(f"variance_warmup: expected a share of the epochs in [0, 1), "
                                     f"got {self.variance_warmup!r}")
        return int(round(self.variance_warmup * self.epochs))

    def _loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        value, log_var = network(batch["x"])
        if batch.get("warmup"):  # the variance heads wait (no gradient): σ² = 1 + σ_known²
            log_var = torch.zeros_like(log_var)
        loss = robust_censored_loss(batch["y"], value, log_var, batch["y_err"])
        if self.l2:
            loss = loss + self.l2 * sum(weight.square().sum() for weight in network.regularised_weights())
        return loss

    def _calibrate(self, x: torch.Tensor, y: torch.Tensor, y_err: torch.Tensor, val_rows: np.ndarray) -> None:
        """Fit the calibration on the validation spectra at the end of training.

        Without a validation split (or with ``calibrate_uncertainty=False``) the factors
        stay 1 and the floors 0, and only the flags' yardstick is set.
        """
        rows = (val_rows if val_rows.size else np.arange(len(x)))[:_CALIBRATION_SPECTRA]
        moments = self._mc_moments(x[rows].numpy(), self.mc_passes)[:3]
        fit = self.calibrate_uncertainty and val_rows.size > 0
        self._fit_calibration(*moments, y[rows].cpu().numpy(), y_err[rows].cpu().numpy(), fit=fit)

    def calibrate(self, spectra, labels, label_errors=None) -> "BCNN":
        """Refit the uncertainty calibration on held-out labelled spectra; returns self.

        Training calibrates on its validation spectra, and with labels noisier than the
        network a few hundred of them pin a factor only to ±10–25 % and a floor hardly at
        all (``uncertainty_scale_spread_``). Any spectra with reference labels that the
        network never trained on do better, the more the better (the error shrinks as
        ``1/sqrt(n)``). They should be like the training set (the same kind of stars and
        S/N). The flags' yardstick (``reference_std_``) is refitted too. On the mock
        universe (benchmarks/eval_bcnn_mock.py ``--calibration-spectra``), 3,900 held-out
        stars put std((prediction − truth) / total_std) of ``bcnn-censored`` within
        0.89–1.16 for 21 of its 22 labels; [Na/H], whose label errors (0.19 dex) are four
        times the network's, stayed at 1.37 (its factor ±25 %: a 2 % error in the
        realised label noise moves it that much). 10,000 stars put all 22 within 0.91–1.15.

        Parameters
        ----------
        spectra : Spectra
            Held-out spectra, as for :meth:`predict`.
        labels : table
            Reference labels (any table :func:`labelexplorer.labels.label_array` reads)
            with at least every label of the model; -9999 / NaN are skipped.
        label_errors : table or array, optional
            Their known 1-σ errors, left out of the fitted uncertainty.

        Returns
        -------
        self

        Examples
        --------
        >>> from labelexplorer import Spectra
        >>> rng = np.random.default_rng(0)
        >>> flux = (1 + 0.01 * rng.normal(size=(40, N_PIXELS))).astype(np.float32)
        >>> spectra = Spectra(flux, gap_removed_wavelength())
        >>> labels = {"TEFF": rng.normal(4800, 300, 40)}
        >>> model = BCNN(epochs=1, mc_passes=4, progress=False).fit(spectra, labels)
        >>> model.calibrate(spectra[:20], {"TEFF": labels["TEFF"][:20]}).uncertainty_scale_.shape
        (1,)
        """
        self._check_fitted("be calibrated")
        values, errors = self._reference_labels(spectra, labels, label_errors)
        y = (values - self.label_mean_) / self.label_std_
        y_err = np.zeros_like(y) if errors is None else np.nan_to_num(errors, nan=0.0) / self.label_std_
        spectra = self._model_grid(spectra)
        self._check_pixels(spectra)
        self._fit_calibration(*self._mc_moments(self._design(spectra), self.mc_passes)[:3], y, y_err, fit=True)
        return self

    def _fit_calibration(self, mean, model_var, log_var, y, y_err, *, fit: bool) -> None:
        """Set ``uncertainty_scale_``, ``uncertainty_floor_``, their spread and ``reference_std_``.

        All in standardised units. ``reference_std_`` is the median calibrated total
        uncertainty per label on these training-like spectra.
        """
        total = np.sqrt(model_var + np.exp(log_var))
        n_labels = total.shape[1]
        scale, floor, spread = np.ones(n_labels), np.zeros(n_labels), np.zeros(n_labels)
        if fit:
            columns = [(mean[:, j] - y[:, j], total[:, j], y_err[:, j]) for j in range(n_labels)]
            fitted = np.array([uncertainty_calibration(*column) for column in columns])
            usable = np.isfinite(fitted).all(axis=1)
            scale, floor = np.where(usable, fitted[:, 0], 1.0), np.where(usable, fitted[:, 1], 0.0)
            spread = np.array([uncertainty_scale_spread(*column, seed=self.random_state) for column in columns])
        self.uncertainty_scale_, self.uncertainty_floor_ = scale, floor
        self.uncertainty_scale_spread_ = np.where(np.isfinite(spread), spread, 0.0)
        self.reference_std_ = np.median(np.hypot(total * scale, floor), axis=0) * self.label_std_

    # ------------------------------------------------------------------ inference
    def _mc_layout(self, passes: int, n_pixels: int, device: torch.device, *, grad: bool = False) -> tuple[int, int]:
        """Spectra per chunk and rows per stochastic forward for *passes* MC passes."""
        rows = _ROWS_PER_FORWARD.get(device.type, _ROWS_PER_FORWARD["cpu"])
        if self.mc_batch_size:
            return int(self.mc_batch_size), rows
        if device.type == "cpu":
            return _CPU_CHUNK_SPECTRA, rows
        # a chunk's stems plus one forward of `rows` rows (3x for the graph kept by autograd)
        bytes_per_spectrum = (1 + min(passes, rows)) * n_pixels * _FLOATS_PER_ROW_PIXEL * 4 * (3 if grad else 1)
        return rows_per_chunk(bytes_per_spectrum, device, maximum=max(1, rows)), rows

    def _mc_moments(self, x: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Standardised MC mean, model variance, mean log-variance (each (n, L)) and the precision used.

        Each chunk of spectra draws its masks from its own streams (``part`` = first row),
        one mask per pass shared by the spectra of the chunk (their MC noise is correlated,
        each spectrum's draws are as with per-spectrum masks: :func:`mc_samples`), so the
        chunks may run in any order: on a CPU in one thread per core.
        """
        device = self._torch_device()
        network = self.network_.to(device).eval()
        precision = resolve_precision(self.precision, device, checked=True)
        chunk, rows_per_forward = self._mc_layout(passes, x.shape[1], device)

        def moments(rows: slice, use_precision: str) -> list[np.ndarray]:
            xb = torch.as_tensor(x[rows], device=device)
            streams = DropoutStreams(self.random_state, device, part=rows.start, shared=True)
            with torch.no_grad(), autocast(device, use_precision), flush_denormals():
                value, log_var = mc_samples(network, xb, passes, streams, rows=rows_per_forward)
            value, log_var = value.float(), log_var.float()
            return [t.cpu().numpy() for t in (value.mean(0), value.var(0, unbiased=False), log_var.mean(0))]

        parts = []
        # the verdict on bfloat16 holds for this network on this device: catalogs call predict per batch
        verdict_key = (device.type, id(self.network_))  # a refit or a load makes a new network
        verdict = self.__dict__.get("_precision_verdict", (None, None))
        if self.precision == "auto" and precision == "bfloat16" and verdict[0] == verdict_key:
            precision = verdict[1]
        elif self.precision == "auto" and precision == "bfloat16":
            # bfloat16 only if it reproduces float32 within 0.1 sigma on the first chunk
            first = slice(0, min(chunk, len(x)))
            trial, reference = moments(first, "bfloat16"), moments(first, "float32")
            scale = torch.sqrt(torch.as_tensor(reference[1] + np.exp(reference[2])))
            agrees = precision_agrees(torch.as_tensor(trial[0]), torch.as_tensor(reference[0]), scale)
            precision = "bfloat16" if agrees else "float32"
            parts.append(trial if agrees else reference)
            self.__dict__["_precision_verdict"] = (verdict_key, precision)
        done = sum(len(part[0]) for part in parts)
        workers = torch.get_num_threads() if device.type == "cpu" else 1
        parts += run_in_chunks(lambda rows: moments(slice(rows.start + done, rows.stop + done), precision),
                               len(x) - done, chunk, workers=workers)
        mean, model_var, log_var = (np.concatenate([p[i] for p in parts]).astype(np.float64) for i in range(3))
        return mean, model_var, log_var, precision

    def _trunk_features(self, x) -> np.ndarray:
        return _mean_trunk_features(self.network_, x, self._torch_device())

    def label_coverage(self, spectra) -> np.ndarray:
        """Share of each star's 10 nearest training spectra that had each label (not missing).

        Nearest in the full-spectrum branch's 64 units (dropout off); see
        :mod:`labelexplorer.models.coverage`. Below one half a label is extrapolated from
        stars whose value of it the network never saw (the dwarfs' LOGG when the training
        set had giants' LOGG only), and :meth:`predict` flags the star ``untrained_label``
        (and ``outside_training_set`` for TEFF, LOGG or FE_H).

        Returns
        -------
        numpy.ndarray, shape (n_spectra, n_labels)
            In the order of ``label_names_``; NaN for a model saved without coverage.

        Examples
        --------
        >>> from labelexplorer.preprocess.grid import gap_removed_wavelength
        >>> wavelength, rng = gap_removed_wavelength(), np.random.default_rng(0)
        >>> teff = rng.uniform(4000.0, 5000.0, 40)
        >>> flux = 1.0 - 0.05 * np.outer(teff / 5000.0, np.sin(wavelength)) + rng.normal(0, 0.01, (40, wavelength.size))
        >>> logg = np.where(teff < 4500.0, 2.5, np.nan)  # the hotter stars' LOGG is missing
        >>> model = BCNN(epochs=1, mc_passes=2, progress=False).fit(Spectra(flux, wavelength),
        ...                                                          {"TEFF": teff, "LOGG": logg})
        >>> share = model.label_coverage(Spectra(flux[:5], wavelength))
        >>> share.shape, bool(((share >= 0) & (share <= 1)).all())
        ((5, 2), True)
        """
        self._check_fitted("assess label coverage")
        spectra = self._model_grid(spectra)
        self._check_pixels(spectra)
        return self._coverage(self._design(spectra))[0]

    def _coverage(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "coverage_", None) is None:  # a model saved before coverage was recorded
            return np.full((len(x), len(self.label_names_)), np.nan), np.full(len(x), np.nan)
        return self.coverage_.assess(self._trunk_features(x))

    def _predict(self, spectra):
        spectra = self._model_grid(spectra)
        self._check_pixels(spectra)
        x = self._design(spectra)
        mean, model_var, log_var, precision = self._mc_moments(x, self.mc_passes)
        mean = mean * self.label_std_ + self.label_mean_
        scale = self.label_std_ * self.uncertainty_scale_
        # the calibration floor is error of the network itself, whatever the noise: model uncertainty
        model_std = np.hypot(np.sqrt(model_var) * scale, self.uncertainty_floor_ * self.label_std_)
        predictive_std = np.exp(0.5 * log_var) * scale
        flags = self._flags(spectra, mean, np.sqrt(model_std ** 2 + predictive_std ** 2), *self._coverage(x))
        return LabelPrediction(self.label_names_, mean, model_std, predictive_std, ids=spectra.ids, flags=flags,
                               meta={"model": self.name, "mc_passes": self.mc_passes, "precision": precision})

    def uncalibrated_std(self, prediction: LabelPrediction) -> np.ndarray:
        """The paper's raw total uncertainty of *prediction* (a result of this model), before calibration.

        ``sqrt(model_var + exp(mean log-variance))`` without ``uncertainty_scale_`` and
        ``uncertainty_floor_``, shape (n, n_labels) in this model's label order: what the
        calibration changed, to compare with the paper's recipe.

        Examples
        --------
        >>> from labelexplorer.prediction import LabelPrediction
        >>> model = BCNN()
        >>> model.label_names_, model.label_std_ = ["TEFF"], np.array([100.0])
        >>> model.uncertainty_scale_, model.uncertainty_floor_ = np.array([0.5]), np.array([0.3])
        >>> prediction = LabelPrediction(["TEFF"], [[5000.0]], [[50.0]], [[40.0]])
        >>> model.uncalibrated_std(prediction).round(1)   # model 40 / 0.5 = 80, predictive 40 / 0.5 = 80
        array([[113.1]])
        """
        floor = self.uncertainty_floor_ * self.label_std_
        model_std = np.sqrt(np.clip(np.asarray(prediction.model_std) ** 2 - floor ** 2, 0.0, None))
        return np.hypot(model_std, prediction.predictive_std) / self.uncertainty_scale_

    def _check_pixels(self, spectra: Spectra) -> None:
        if spectra.n_pixels != self.pixel_mean_.size:
            raise ShapeError(f"spectra: expected {self.pixel_mean_.size} pixels (the training grid), "
                             f"got {spectra.n_pixels}")

    def _flags(self, spectra: Spectra, mean: np.ndarray, total_std: np.ndarray, coverage: np.ndarray,
               distance: np.ndarray) -> dict[str, np.ndarray]:
        watched = [j for j, name in enumerate(self.label_names_) if name in TRUNK_LABELS] or list(
            range(len(self.label_names_)))
        uncertain = (total_std[:, watched] > self.outside_std_factor * self.reference_std_[watched]).any(axis=1)
        low, high = self.label_range_[:, 0], self.label_range_[:, 1]
        margin = 0.1 * (high - low)
        outside_range = ((mean < low - margin) | (mean > high + margin)).any(axis=1)
        with np.errstate(invalid="ignore"):
            low_snr = np.asarray(spectra.snr, dtype=float) < self.low_snr
            uncovered = coverage < _COVERED_SHARE  # NaN (no coverage recorded) compares False
            far = distance > 1.0
        return {"outside_training_set": uncertain | outside_range | far | uncovered[:, watched].any(axis=1),
                "untrained_label": uncovered.any(axis=1), "low_snr": low_snr}

    # ------------------------------------------------------------------ sensitivity
    def sensitivity_map(self, spectra, label: str, passes: int | None = None) -> np.ndarray:
        """Per-spectrum d label / d flux, shape (n_spectra, n_pixels), in label units per unit flux.

        The derivative of the MC mean over *passes* dropout passes (default
        ``sensitivity_passes``; 0 = the deterministic mean network with dropout off), with
        StopGrad letting gradients through (it only blocks them in training). Masked
        pixels get 0: their flux is replaced by the continuum, so it cannot move the label.

        Examples
        --------
        >>> import numpy as np
        >>> from labelexplorer import Spectra
        >>> from labelexplorer.preprocess.grid import gap_removed_wavelength
        >>> rng = np.random.default_rng(0)
        >>> teff = rng.uniform(4000, 5000, 16)
        >>> flux = 1 - 0.1 * np.outer(teff / 5000, np.ones(7514)) + rng.normal(0, 0.01, (16, 7514))
        >>> spec = Spectra(flux, gap_removed_wavelength())
        >>> model = BCNN(epochs=1, mc_passes=2, progress=False).fit(spec, {"TEFF": teff})
        >>> model.sensitivity_map(spec[:3], "Teff", passes=2).shape
        (3, 7514)
        """
        self._check_fitted("compute sensitivities")
        key = canonical_label(label)
        if key not in self.label_names_:
            raise UnknownNameError(f"label {label!r} is not predicted by this model; available: {self.label_names_}"
                                   f"{did_you_mean(key, self.label_names_)}")
        passes = self.sensitivity_passes if passes is None else int(passes)
        spectra = self._model_grid(spectra)
        self._check_pixels(spectra)
        x = self._design(spectra)
        column = self.label_names_.index(key)
        device = self._torch_device()
        network = self.network_.to(device)
        streams = DropoutStreams(self.random_state, device)
        repeats = max(passes, 1)
        chunk, rows_per_forward = self._mc_layout(repeats, x.shape[1], device, grad=True)

        def gradient(rows: slice) -> np.ndarray:
            xb = torch.as_tensor(x[rows], device=device).requires_grad_(True)
            off = dropout_disabled(network) if passes == 0 else contextlib.nullcontext()
            with stopgrad_passthrough(network), off, flush_denormals():
                value, _ = mc_samples(network, xb, repeats, streams if passes else None, rows=rows_per_forward)
            (grad,) = torch.autograd.grad(value[..., column].mean(0).sum(), xb)
            return grad.cpu().numpy()

        grads = np.concatenate(run_in_chunks(gradient, len(x), chunk)) * self.label_std_[column]
        grads[spectra.mask] = 0.0
        return grads

    def _sensitivity(self, spectra, label):
        return self.sensitivity_map(spectra, label).mean(axis=0)

    # ------------------------------------------------------------------ persistence
    def _config_extra(self) -> dict:
        return {"n_pixels": int(self.pixel_mean_.size), "best_epoch": int(self.best_epoch_),
                "n_parameters": n_parameters(self.network_),
                "history": [{k: _json_float(float(v)) for k, v in record.items()} for record in self.history_]}

    def _load_config_extra(self, extra: dict) -> None:
        self.history_ = list(extra.get("history", []))
        self.best_epoch_ = int(extra.get("best_epoch", 0))

    def _save_weights(self, directory: Path) -> None:
        arrays = {"pixel_mean": self.pixel_mean_, "label_mean": self.label_mean_, "label_std": self.label_std_,
                  "label_range": self.label_range_, "reference_std": self.reference_std_,
                  "uncertainty_scale": self.uncertainty_scale_, "uncertainty_floor": self.uncertainty_floor_,
                  "uncertainty_scale_spread": self.uncertainty_scale_spread_}
        if getattr(self, "continuum_mask_", None) is not None:
            arrays["continuum_mask"] = self.continuum_mask_
        if getattr(self, "coverage_", None) is not None:
            arrays.update(self.coverage_.to_arrays())
        save_network(directory, self.network_, arrays)

    def _load_weights(self, directory: Path) -> None:
        state, arrays = read_network(directory, self.name)
        n_labels = len(self.label_names_)
        with model_file_errors(Path(directory) / WEIGHTS_FILE, self.name):
            self.pixel_mean_ = arrays["pixel_mean"].astype(np.float32)
            for name in ("label_mean", "label_std", "label_range", "reference_std", "uncertainty_scale"):
                setattr(self, f"{name}_", arrays[name].astype(np.float64))
            if "continuum_mask" in arrays:
                self.continuum_mask_ = arrays["continuum_mask"].astype(bool)
            self.coverage_ = TrainingCoverage.from_arrays(arrays)  # None for models saved before it
            # models saved before the floor and the spread were recorded: no floor, unknown spread
            self.uncertainty_floor_ = arrays.get("uncertainty_floor", np.zeros(n_labels)).astype(np.float64)
            self.uncertainty_scale_spread_ = arrays.get("uncertainty_scale_spread",
                                                        np.full(n_labels, np.nan)).astype(np.float64)
            shapes_ok = (self.label_mean_.shape == self.label_std_.shape == self.reference_std_.shape
                         == self.uncertainty_scale_.shape == self.uncertainty_scale_spread_.shape
                         == self.uncertainty_floor_.shape == (n_labels,)
                         and self.label_range_.shape == (n_labels, 2))
            if not shapes_ok:
                raise ValueError(f"label arrays do not match the {n_labels} labels of config.json")
            windows = state.get("windows")
            network = self._build_network(self.label_names_, self.pixel_mean_.size,
                                          None if windows is None else windows.numpy())
            network.load_state_dict(state, strict=True)
        self.network_ = network.to(self._torch_device()).eval()


@register_model("bcnn-censored")
class CensoredBCNN(BCNN):
    """Censored Bayesian CNN (astroNN ``ApogeeBCNNCensored``): elements only from their windows.

    TEFF, LOGG and FE_H come from the full spectrum (at least one of them is required);
    every other label needs an element window (``MG_H``, ``MG_FE`` → Mg, ``TIII_H`` → TiII)
    and gets its own branch. Labels may come in any order and any subset.

    Parameters
    ----------
    windows : None, str, mapping or ElementWindows
        Element windows, used as binary masks. None: built from the project's line list
        (:func:`labelexplorer.preprocess.windows.windows_from_linelist`). A path: a folder
        of official ASPCAP ``<El>.filt`` files or astroNN's ``aspcap_l31c_masks.npy``
        bitmask. A mapping: element → boolean mask over the 7514 grid or ``[[start, end],
        ...]`` wavelength intervals (vacuum Å). The windows are saved with the model.
        ``get_params`` reports in-memory windows as wavelength intervals (JSON-friendly).
    latent_size : int
        Units of the latent link from the 64-unit layer to the element branches (the
        paper: 2). The link carries what the full spectrum says about an element where
        the training stars make it predictable (in the disc, [Al/Fe] follows the α
        sequences), and a branch that leans on it under-weights its own window where that
        relation breaks, as in a globular cluster. 0 cuts the link: on the mock universe,
        trained with the paper's recipe (``variance_warmup=0``) and no cluster star, the
        slope of predicted against true [Al/H] in M13 went from 0.38 to 0.53
        (benchmarks/eval_bcnn_mock.py ``--latent-size``); the variance warm-up did more
        (0.63 with the link kept, ``variance_warmup=0.5``).
    max_norm : float
        Max-norm bound on the latent link's weights.
    **others
        As :class:`BCNN`.

    Examples
    --------
    >>> model = CensoredBCNN(windows={"Mg": [[15740.0, 15750.0]]}, epochs=2, progress=False)
    >>> model.get_params()["windows"]
    {'Mg': [[15740.0, 15750.0]]}
    """

    def __init__(self, windows=None, latent_size: int = 2, max_norm: float = 0.5, epochs: int = 60,
                 batch_size: int = 64, learning_rate: float = 5e-4, validation_fraction: float = 0.1,
                 early_stopping_patience: int = 4, min_epochs: int = 0, variance_warmup: float = 0.5,
                 dropout: float = 0.3, l2: float = 5e-9,
                 mc_passes: int = 100, sensitivity_passes: int = 16, continuum_pixels: str | None = None,
                 outside_std_factor: float = 3.0, low_snr: float = 30.0, calibrate_uncertainty: bool = True,
                 random_state: int = 0, device: str = "auto", precision: str = "auto",
                 mc_batch_size: int | None = None, checkpoint_dir: str | None = None, progress: bool = True):
        super().__init__(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         validation_fraction=validation_fraction, early_stopping_patience=early_stopping_patience,
                         min_epochs=min_epochs, variance_warmup=variance_warmup, dropout=dropout, l2=l2, mc_passes=mc_passes, sensitivity_passes=sensitivity_passes,
                         continuum_pixels=continuum_pixels, outside_std_factor=outside_std_factor, low_snr=low_snr,
                         calibrate_uncertainty=calibrate_uncertainty, random_state=random_state, device=device, precision=precision, mc_batch_size=mc_batch_size,
                         checkpoint_dir=checkpoint_dir, progress=progress)
        self.windows = windows
        self.latent_size = latent_size
        self.max_norm = max_norm

    def get_params(self) -> dict:
        params = super().get_params()
        windows = params["windows"]
        if windows is not None and not isinstance(windows, (str, os.PathLike)):
            params["windows"] = _windows_as_intervals(windows)
        elif isinstance(windows, os.PathLike):
            params["windows"] = os.fspath(windows)
        return params

    def _split_labels(self, names: list[str]) -> tuple[list[int], list[int]]:
        trunk = [j for j, name in enumerate(names) if name in TRUNK_LABELS]
        if not trunk:
            raise LabelError(f"bcnn-censored needs TEFF, LOGG and FE_H (at least one of them) for its full-spectrum "
                             f"branch, which feeds the element branches; got {list(names)}")
        return trunk, [j for j, name in enumerate(names) if name not in TRUNK_LABELS]

    def _layout(self, names):
        trunk, branches = self._split_labels(names)
        missing = [name for name in TRUNK_LABELS if name not in names]
        if missing:
            warnings.warn(f"bcnn-censored: {', '.join(missing)} not among the labels; the element branches will "
                          f"see only {[names[j] for j in trunk]} from the full-spectrum branch", UserWarning,
                          stacklevel=4)
        if not branches:
            return np.zeros((0, N_PIXELS), dtype=bool)
        windows = _resolve_windows(self.windows)
        masks = []
        for j in branches:
            name = names[j]
            if name not in windows:
                raise LabelError(f"label {name!r}: bcnn-censored predicts it from its element's window, but "
                                 f"{windows.source} has none (elements: {', '.join(windows.elements)}); predict it "
                                 "with model 'bcnn' instead, or pass windows=")
            mask = windows.mask(name)
            if not mask.any():
                raise LabelError(f"label {name!r}: the window of its element in {windows.source} is empty")
            masks.append(mask)
        return np.array(masks)

    def _build_network(self, names, n_pixels, windows=None):
        trunk, branches = self._split_labels(names)
        windows = np.zeros((0, n_pixels), dtype=bool) if windows is None else np.asarray(windows, dtype=bool)
        if windows.shape != (len(branches), n_pixels):
            raise ValueError(f"windows have shape {windows.shape}, expected {(len(branches), n_pixels)}")
        hidden = [_element_hidden(names[j].split("_")[0]) for j in branches]
        return CensoredBCNNNetwork(n_pixels, trunk, branches, torch.as_tensor(windows), hidden, self.dropout,
                                   self.latent_size, self.max_norm)

    @property
    def windows_(self) -> dict[str, np.ndarray]:
        """The binary window of every element branch, by label name (empty before fitting)."""
        if not self.is_fitted:
            return {}
        _, branches = self._split_labels(self.label_names_)
        masks = self.network_.windows.cpu().numpy()
        return {self.label_names_[j]: masks[i] for i, j in enumerate(branches)}


# ============================================================================ windows
def _resolve_windows(source):
    """Element windows on the 7514 grid from whatever the user gave (see CensoredBCNN)."""
    from ..preprocess.windows import ElementWindows

    if source is None:
        windows = _linelist_windows()
    elif isinstance(source, ElementWindows):
        windows = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            windows = ElementWindows.from_filt_dir(path)
        elif path.suffix == ".npy":
            windows = ElementWindows.from_bitmask(path)
        else:
            raise FileFormatError(f"windows: {path} is neither a folder of <element>.filt files nor an astroNN "
                                  "window bitmask (.npy)")
    elif isinstance(source, Mapping):
        windows = ElementWindows({element: _window_mask(element, value) for element, value in source.items()},
                                 source="windows argument")
    else:
        raise FileFormatError(f"windows: expected None, a path, a mapping or ElementWindows, got "
                              f"{type(source).__name__}")
    return windows if windows.n_pixels == N_PIXELS else windows.on_grid(N_PIXELS)


def _linelist_windows():
    """Windows from the project's line list (molecular CO/CN/OH lines count for C, N, O)."""
    from ..preprocess.windows import MOLECULE_ELEMENTS, windows_from_linelist

    try:
        from ..preprocess.linelist import load_linelist
    except ImportError as exc:  # pragma: no cover - the line list ships with the package
        raise FileFormatError("windows: the project's line list is not available; pass windows= (a folder of "
                              ".filt files or astroNN's window bitmask)") from exc
    return windows_from_linelist(load_linelist(), gap_removed_wavelength(), group=MOLECULE_ELEMENTS)


def _window_mask(element: str, value) -> np.ndarray:
    """A boolean mask over the 7514 grid from a mask or from [[start, end], ...] intervals (Å)."""
    array = np.asarray(value)
    if array.ndim == 1 and array.size == N_PIXELS:
        return array.astype(bool)
    if array.ndim == 2 and array.shape[1] == 2:
        wavelength = gap_removed_wavelength()
        inside = np.zeros(N_PIXELS, dtype=bool)
        for start, end in array.astype(float):
            inside |= (wavelength >= start) & (wavelength <= end)
        return inside
    raise ShapeError(f"windows[{element!r}]: expected a boolean mask of {N_PIXELS} pixels or [[start, end], ...] "
                     f"wavelength intervals, got shape {array.shape}")


def _windows_as_intervals(windows) -> dict[str, list]:
    """JSON-friendly ``{element: [[start, end], ...]}`` (vacuum Å) of in-memory windows."""
    from ..preprocess.windows import ElementWindows

    if isinstance(windows, ElementWindows):
        on_grid = windows.on_grid(N_PIXELS)
        windows = {element: on_grid.mask(element) for element in on_grid.elements}
    out = {}
    for element, value in windows.items():
        array = np.asarray(value)
        if array.ndim == 2:  # already intervals
            out[element] = array.astype(float).tolist()
            continue
        single = ElementWindows({element: _window_mask(element, array)}, source="windows")
        out[element] = np.round(single.as_intervals(element), 3).tolist()
    return out
