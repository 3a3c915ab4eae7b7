"""Galaxy gas-phase metallicity from gri colour images (Wu & Boada 2019): ``galaxy-cnn``.

The network is a ResNet (34 layers in the paper; 10/18/34 and any width here, see
:mod:`labelexplorer.models.nn.resnet`) with fastai's regression head: concatenated
average and max pooling → BN → dropout 0.25 → linear 512 → ReLU → BN → dropout 0.5 →
linear, one output per label (``OH_P50`` = 12 + log(O/H); ``LOG_MSTAR`` for the
paper's §5.1 control; several at once if asked).

Training (paper appendix, as far as it fits a model trained from scratch):

* loss: RMSE of the standardised labels (per label, then averaged; missing labels add
  nothing);
* AdamW (decoupled weight decay) with cosine annealing at every step and warm restarts
  (cycles of ``restart_epochs · restart_mult^k`` epochs);
* discriminative learning rates for the three fastai layer groups (early trunk, late
  trunk, head): ``learning_rate × layer_lr_ratios`` — the paper's 0.001/0.01/0.01 is
  ``learning_rate=0.01, layer_lr_ratios=(0.1, 1, 1)``;
* optionally the trunk frozen for the first ``frozen_epochs`` (the paper trains only the
  head for two epochs after loading ImageNet weights; no ImageNet download is possible
  here, so weights come from a file: ``pretrained=path``);
* augmentation: every training image goes through one of the 8 transforms of the
  dihedral group (rotations by 90° and flips), drawn at random per image and step;
* the weights of the epoch with the lowest validation loss are kept, then the batch
  normalisation statistics are re-estimated over the training images (with the network
  fixed), since short runs leave the running averages behind the weights.

Inputs of any size are re-binned to ``image_size`` pixels (area averages,
:func:`rebin_images`) and normalised per channel with the training set's mean and
standard deviation. The resolution study of the paper (Fig. 4) is this model at
``image_size`` 64, 32, ..., 1.

Prediction: test-time augmentation over the 8 dihedral transforms and ``mc_passes``
Monte Carlo dropout passes of the head (the trunk has no dropout, so it runs once per
transform and only the head is repeated). ``mean`` averages everything;
``predictive_std`` is the spread of the 8 transforms' predictions (what the image's
orientation changes; NaN with ``tta=False``); ``model_std`` the MC dropout spread
(NaN with ``mc_passes=0``). Masks come from seeded generators (``random_state``), so a
saved and reloaded model predicts the same values.

Uncertainty calibration: both spreads are much smaller than the actual errors (on the
mock galaxies their raw total was 1/2 to 1/8 of the RMSE): neither knows the scatter of
the label that the image cannot explain. At the end of training a scale and a floor per
label (:func:`labelexplorer.models.calibration.uncertainty_calibration`) are fitted on
up to 1024 held-out training images, as for the BCNNs: ``model_std`` is the scaled MC
spread, ``predictive_std`` the scaled orientation spread with the floor added in
quadrature — the floor is that unexplained scatter, an aleatoric error.
``calibrate(images, labels)`` refits them on any held-out labelled images;
``calibrate_uncertainty=False`` keeps the raw spreads. The model also keeps
``validation_rmse_`` (reported in ``prediction.meta["validation_rmse"]``); with
``validation_fraction=0`` all of this is measured on training images, and optimistic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..exceptions import LabelError, LabelExplorerError, ShapeError, UnknownNameError, did_you_mean
from ..images import ImageSet
from ..labels import canonical_label
from ..prediction import LabelPrediction
from .base import LabelModel, dataset_hash, register_model
from .calibration import uncertainty_calibration
from .nn.device import autocast, forked_rng, resolve_precision, run_in_chunks
from .nn.layers import DropoutStreams, dropout_disabled, n_parameters
from .nn.model import TorchModel
from .nn.resnet import ResNetRegressor, load_trunk_weights
from .nn.training import TrainingSettings, split_indices, train
from .nn.weights import WEIGHTS_FILE, model_file_errors, read_network, save_network

__all__ = ["GalaxyCNN", "dihedral", "random_dihedral", "rebin_images", "as_image_array"]

_REFERENCE_IMAGES = 1024  # held-out images for the calibration, the flag's yardstick and the RMSE
_RECALIBRATION_IMAGES = 4096
_PREDICT_BATCH = 128


# ============================================================================ image helpers
def as_image_array(images, argument: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(n, 3, H, W)`` float32 and ids from an ImageSet or an array, checked.

    Raises
    ------
    ShapeError
        Not 4-D with 3 channels first, empty, non-finite, or values outside [0, 1].

    Examples
    --------
    >>> pixels, ids = as_image_array(np.zeros((2, 3, 4, 4)))
    >>> pixels.shape, ids.tolist()
    ((2, 3, 4, 4), ['0', '1'])
    >>> as_image_array(np.zeros((2, 4, 4, 3)))
    Traceback (most recent call last):
    ...
    labelexplorer.exceptions.ShapeError: images: expected (n, 3, H, W) colour images with 3 channels first, got shape (2, 4, 4, 3)...
    """
    if isinstance(images, ImageSet):
        pixels, ids = images.images, images.ids
    else:
        try:
            pixels = np.asarray(images, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{argument}: expected an ImageSet or an (n, 3, H, W) array, "
                             f"got {type(images).__name__}") from exc
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            hint = " (channels last? use array.transpose(0, 3, 1, 2))" if pixels.ndim == 4 and pixels.shape[-1] == 3 else ""
            raise ShapeError(f"{argument}: expected (n, 3, H, W) colour images with 3 channels first, got shape "
                             f"{pixels.shape}{hint}")
        ids = np.array([str(i) for i in range(pixels.shape[0])])
    if pixels.shape[0] == 0:
        raise ShapeError(f"{argument}: no images")
    if not np.isfinite(pixels).all():
        raise ShapeError(f"{argument}: pixel values must be finite (found NaN or inf)")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ShapeError(f"{argument}: pixel values must lie in [0, 1], found {low:g}..{high:g}"
                         f"{' (8-bit images: divide by 255)' if high > 2 else ''}")
    return pixels, ids


def _overlap_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) weights: the share of each new pixel's extent covered by each old pixel."""
    edges = np.arange(new + 1) * (old / new)
    low, high = edges[:-1, None], edges[1:, None]
    pixel = np.arange(old)[None, :]
    overlap = np.clip(np.minimum(high, pixel + 1) - np.maximum(low, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def rebin_images(pixels: np.ndarray, size: int, *, chunk: int = 256) -> np.ndarray:
    """Re-bin ``(n, 3, H, W)`` images to ``(n, 3, size, size)`` float32 by area averaging.

    Each new pixel is the area-weighted mean of the old pixels it covers (exact block
    means when *size* divides H and W); when enlarging, a new pixel takes the value of
    the old pixel it lies in (shared between two where it straddles a border). The mean
    of every image is kept. Images already of that size are returned as they are.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4).repeat(3, axis=1)
    >>> rebin_images(x, 2)[0, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    >>> rebin_images(x, 1)[0, :, 0, 0].tolist()
    [7.5, 7.5, 7.5]
    >>> float(rebin_images(x, 3).mean())
    7.5
    """
    if int(size) != size or size < 1:
        raise ShapeError(f"image_size: expected a positive integer number of pixels, got {size!r}")
    size = int(size)
    n, channels, height, width = pixels.shape
    if (height, width) == (size, size):
        return np.ascontiguousarray(pixels, dtype=np.float32)
    if height % size == 0 and width % size == 0:
        return pixels.reshape(n, channels, size, height // size, size, width // size).mean(
            axis=(3, 5), dtype=np.float64).astype(np.float32)
    rows, columns = _overlap_matrix(height, size), _overlap_matrix(width, size)
    out = np.empty((n, channels, size, size), np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(pixels[start:start + chunk], dtype=np.float64)
        out[start:start + chunk] = np.einsum("ph,nchw,qw->ncpq", rows, block, columns, optimize=True)
    return out


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform *k* (0–7) of the dihedral group of the square: rotate by ``k mod 4`` × 90°, then
    flip left–right when ``k >= 4``. Transform 0 is the identity.

    Examples
    --------
    >>> x = torch.tensor([[[[1, 2], [3, 4]]]])
    >>> dihedral(x, 1)[0, 0].tolist(), dihedral(x, 4)[0, 0].tolist()
    ([[2, 4], [1, 3]], [[2, 1], [4, 3]])
    """
    x = torch.rot90(x, int(k) % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """Each image of a batch ``(b, C, S, S)`` through a random dihedral transform (torch's generator).

    Examples
    --------
    >>> x = torch.rand(16, 3, 5, 5)
    >>> out = random_dihedral(x)
    >>> out.shape == x.shape, bool(torch.allclose(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3))))
    (True, True)
    """
    choice = torch.randint(0, 8, (x.shape[0],), device=x.device)
    out = torch.empty_like(x)
    for k in range(8):
        rows = torch.nonzero(choice == k).flatten()
        if rows.numel():
            out[rows] = dihedral(x[rows], k)
    return out


def _rmse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSE per label over the known (finite) targets, averaged over labels."""
    known = torch.isfinite(target)
    squared = torch.where(known, prediction - torch.nan_to_num(target), torch.zeros_like(prediction)).square()
    mse = squared.sum(dim=0) / known.sum(dim=0).clamp_min(1)
    return torch.sqrt(mse + 1e-12).mean()


# ============================================================================ the model
@register_model("galaxy-cnn")
class GalaxyCNN(TorchModel, LabelModel):
    """ResNet regression of galaxy labels (12 + log(O/H), stellar mass) from gri images.

    Parameters
    ----------
    depth : int
        ResNet depth: 10, 18 or 34 (the paper: 34).
    width : int
        Channels of the first stage (64 in the standard ResNets; fewer is faster).
    hidden : int
        Units of the head's hidden layer (fastai: 512).
    dropout : (float, float)
        Head dropout rates before its two linear layers (fastai: 0.25, 0.5).
    image_size : int
        Side in pixels the images are re-binned to (the paper: 128; its resolution
        study: 64 ... 1).
    epochs : int
        Training epochs (the paper: 10). 7 = three whole cosine cycles of 1, 2 and 4 epochs.
    batch_size : int
        Images per optimizer step (the paper: 256).
    learning_rate : float
        Peak AdamW learning rate of the last layer group (the head).
    layer_lr_ratios : (float, float, float)
        Learning-rate multipliers of the early trunk, late trunk and head.
    weight_decay : float
        Decoupled (AdamW) weight decay.
    restart_epochs, restart_mult : int
        Cosine cycles last ``restart_epochs · restart_mult^k`` epochs.
    frozen_epochs : int, optional
        Initial epochs in which only the head is trained. Default: 2 with
        ``pretrained`` weights (as in the paper), else 0.
    pretrained : str, optional
        File of trunk weights (``.safetensors``, or a torch state dict read with
        ``weights_only=True``) using the standard ResNet names; an ``fc.*`` classifier
        in it is ignored. Read only by ``fit``.
    augment : bool
        Random dihedral transforms of the training images.
    tta : bool
        Test-time augmentation over the 8 dihedral transforms (gives ``predictive_std``).
    mc_passes : int
        Monte Carlo dropout passes of the head per transform (0: dropout off, no
        ``model_std``).
    validation_fraction : float
        Share of the training images held out to pick the best epoch.
    early_stopping_patience : int, optional
        Epochs without validation improvement before stopping; None: never stop early
        (warm restarts make the validation loss rise and fall by design).
    outside_std_factor : float
        Flag ``outside_training_set`` when the total uncertainty exceeds this multiple of
        its median on held-out training images, or the prediction leaves the training
        label range widened by 10 %.
    calibrate_uncertainty : bool
        Fit a scale and a floor of the uncertainties on held-out training images at the
        end of training (see the module notes); False keeps the raw spreads.
    random_state : int
        Seed of the weights, split, shuffling, augmentation and dropout masks.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    precision : str
        ``"auto"`` (float32 on the CPU, bfloat16 on CUDA), ``"float32"`` or ``"bfloat16"``:
        the trunk's arithmetic in training and inference (the head always runs in
        float32). On a CPU with native bfloat16 (AVX512-BF16), bfloat16 with channels-last
        trained ×1.6–1.9 and predicted ×1.3–1.9 faster than float32
        (``benchmarks/bench_galaxy_cnn.py``), moved the predictions of the same weights by
        < 0.1 σ of the label, and trained a model as accurate as float32 on the mock
        galaxies (RMSE 0.0633 vs 0.0638 dex).
    channels_last : bool
        Run convolutions on channels-last tensors: the same results to rounding; fastest
        together with bfloat16, ×0.7–1.2 on its own.
    checkpoint_dir : str, optional
        Training checkpoints: Ctrl-C saves one; ``fit`` with the same folder resumes.
    progress : bool
        Show a progress bar while training.

    Attributes
    ----------
    network_ : ResNetRegressor
        The trained network (weights of the best validation epoch).
    channel_mean_, channel_std_ : ndarray (3,)
        Per-channel normalisation of the training images.
    label_mean_, label_std_, label_range_ : ndarray
        Label standardisation and training range (n_labels,), (n_labels, 2).
    reference_std_ : ndarray (n_labels,)
        Median total uncertainty on held-out images (the yardstick of the flag).
    uncertainty_scale_, uncertainty_floor_ : ndarray (n_labels,)
        The calibration: scale of both spreads, and the floor (in standardised label
        units) added to ``predictive_std``.
    validation_rmse_ : ndarray (n_labels,)
        RMSE on held-out images.
    history_ : list of dict
        Per-epoch training and validation loss and learning rate.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bright = rng.uniform(0.2, 0.8, 24)
    >>> images = ImageSet(bright[:, None, None, None] * np.ones((24, 3, 8, 8)))
    >>> model = GalaxyCNN(depth=10, width=4, hidden=8, image_size=8, epochs=2, batch_size=8,
    ...                   mc_passes=4, progress=False).fit(images, {"OH_P50": 8.5 + bright})
    >>> prediction = model.predict(images[:3])
    >>> prediction.mean.shape, bool(np.isfinite(prediction["OH_P50"].total_std).all())
    ((3, 1), True)
    """

    input_kind = "images"
    quick_hyperparameters = {"depth": 10, "width": 8, "hidden": 32, "image_size": 32, "epochs": 3, "batch_size": 8,
                             "learning_rate": 3e-3, "mc_passes": 4, "progress": False}

    def __init__(self, depth: int = 34, width: int = 64, hidden: int = 512, dropout: Sequence[float] = (0.25, 0.5),
                 image_size: int = 128, epochs: int = 7, batch_size: int = 64, learning_rate: float = 3e-3,
                 layer_lr_ratios: Sequence[float] = (0.1, 1.0, 1.0), weight_decay: float = 0.01,
                 restart_epochs: int = 1, restart_mult: int = 2, frozen_epochs: int | None = None,
                 pretrained: str | None = None, augment: bool = True, tta: bool = True, mc_passes: int = 16,
                 validation_fraction: float = 0.2, early_stopping_patience: int | None = None,
                 outside_std_factor: float = 3.0, calibrate_uncertainty: bool = True, random_state: int = 0,
                 device: str = "auto",
                 precision: str = "auto", channels_last: bool = True, checkpoint_dir: str | None = None,
                 progress: bool = True):
        self.depth = depth
        self.width = width
        self.hidden = hidden
        self.dropout = dropout
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.layer_lr_ratios = layer_lr_ratios
        self.weight_decay = weight_decay
        self.restart_epochs = restart_epochs
        self.restart_mult = restart_mult
        self.frozen_epochs = frozen_epochs
        self.pretrained = pretrained
        self.augment = augment
        self.tta = tta
        self.mc_passes = mc_passes
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.outside_std_factor = outside_std_factor
        self.calibrate_uncertainty = calibrate_uncertainty
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress

    # ------------------------------------------------------------------ network
    def network_for(self, n_labels: int = 1) -> ResNetRegressor:
        """The untrained network these hyperparameters build (seeded by ``random_state``).

        Examples
        --------
        >>> n_parameters(GalaxyCNN(depth=18).network_for().trunk)
        11176512
        """
        dropout = tuple(float(rate) for rate in self.dropout)
        if len(dropout) != 2:
            raise LabelExplorerError(f"dropout: expected two rates (before each head layer), got {self.dropout!r}")
        with forked_rng(torch.device("cpu")):
            torch.manual_seed(self.random_state)
            return ResNetRegressor(int(self.depth), int(self.width), n_labels, int(self.hidden), dropout)


    def _precision(self, device: torch.device) -> str:
        return resolve_precision(self.precision, device)

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, images) -> np.ndarray:
        """Model input: pixels re-binned to ``image_size`` and normalised per channel.

        Examples
        --------
        >>> model = GalaxyCNN(image_size=4)
        >>> model.channel_mean_, model.channel_std_ = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
        >>> float(model.prepare_images(np.ones((1, 3, 8, 8)))[0, 0, 0, 0])
        2.0
        """
        pixels, _ = as_image_array(images)
        pixels = rebin_images(pixels, self.image_size)
        return ((pixels - self.channel_mean_[None, :, None, None]) / self.channel_std_[None, :, None, None]).astype(
            np.float32)

    # ------------------------------------------------------------------ training
    def fit(self, images, labels, label_errors=None, *, callbacks=()) -> "GalaxyCNN":
        """Train on *images* (an ImageSet or (n, 3, H, W) array in [0, 1]) and a label table.

        Parameters
        ----------
        images : ImageSet or ndarray
        labels : table
            E.g. ``{"OH_P50": ...}`` or the image catalog; NaN / -9999 are missing.
        label_errors : ignored
            The RMSE loss has no place for per-image uncertainties.
        callbacks : sequence of callables
            Called with each epoch's record (epoch, loss, val_loss, lr).

        Returns
        -------
        self
        """
        pixels, ids = as_image_array(images)  # before the labels are counted against len(images)
        self._callbacks = tuple(callbacks)
        try:
            return super().fit(ImageSet(pixels, ids), labels, label_errors)
        finally:
            del self._callbacks

    def _fit(self, images: ImageSet, values, names, errors):
        pixels = rebin_images(images.images, self.image_size)
        label_mean, label_std, label_range = _label_scaling(values, names)
        self.channel_mean_ = pixels.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
        self.channel_std_ = np.maximum(pixels.std(axis=(0, 2, 3), dtype=np.float64), 1e-3).astype(np.float32)
        x = torch.as_tensor((pixels - self.channel_mean_[None, :, None, None]) / self.channel_std_[None, :, None, None])
        y = torch.as_tensor(((values - label_mean) / label_std).astype(np.float32))
        training_hash = dataset_hash(pixels, values)
        device = self._torch_device()
        with forked_rng(device):
            network = self.network_for(len(names))
            if self.pretrained:
                load_trunk_weights(network.trunk, self.pretrained)
            network = network.to(device, memory_format=self._memory_format())
            if self.progress:
                print(f"{self.name}: ResNet-{self.depth} width {self.width}, {n_parameters(network):,} parameters, "
                      f"{len(x)} images of {self.image_size} px, labels {list(names)}, device {device}")
            result = train(network, self._loss, {"x": x, "y": y}, self._training_settings(), device=device,
                           callbacks=getattr(self, "_callbacks", ()), parameter_groups=self._parameter_groups(network),
                           fingerprint=self._fingerprint(training_hash, names))
            self._recalibrate_batchnorm(network, x, device)
        network.eval()
        self.network_ = network
        self.label_mean_, self.label_std_, self.label_range_ = label_mean, label_std, label_range
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.training_hash_ = training_hash
        _, val_rows = split_indices(len(x), self.validation_fraction, self.random_state)
        reference = (val_rows if val_rows.size else np.arange(len(x)))[:_REFERENCE_IMAGES]
        self._fit_calibration(x[reference].numpy(), y[reference].numpy(), fit=self.calibrate_uncertainty)

    def calibrate(self, images, labels) -> "GalaxyCNN":
        """Refit the uncertainty calibration on held-out labelled images; returns self.

        Training fits it on up to 1024 of its validation images; any images with
        reference labels that the network never trained on serve as well, the more the
        better. ``reference_std_`` (the flag's yardstick) and ``validation_rmse_`` are
        refitted on them too.

        Parameters
        ----------
        images : ImageSet or ndarray
            Held-out images, as for :meth:`predict`.
        labels : table
            Reference labels with at least every label of the model; NaN / -9999 skipped.

        Returns
        -------
        self

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> bright = rng.uniform(0.2, 0.8, 40)
        >>> images = ImageSet(bright[:, None, None, None] * np.ones((40, 3, 8, 8)))
        >>> model = GalaxyCNN(depth=10, width=4, hidden=8, image_size=8, epochs=1, batch_size=8, mc_passes=4,
        ...                   progress=False).fit(images[:24], {"OH_P50": 8.5 + bright[:24]})
        >>> model.calibrate(images[24:], {"OH_P50": 8.5 + bright[24:]}).uncertainty_scale_.shape
        (1,)
        """
        self._check_fitted("be calibrated")
        pixels, _ = as_image_array(images)
        values, _ = self._reference_labels(pixels, labels)
        self._fit_calibration(self.prepare_images(pixels), (values - self.label_mean_) / self.label_std_, fit=True)
        return self

    def _fit_calibration(self, x: np.ndarray, y: np.ndarray, *, fit: bool) -> None:
        """Set ``uncertainty_scale_``, ``uncertainty_floor_``, ``reference_std_`` and ``validation_rmse_``
        from prepared images *x* and their standardised labels *y* (NaN: missing)."""
        mean, model_std, predictive_std = self._moments(x)
        raw = np.hypot(np.nan_to_num(model_std), np.nan_to_num(predictive_std))
        residual = mean - y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a label without held-out values gives NaN
            rmse = np.sqrt(np.nanmean(residual ** 2, axis=0))
        n_labels = raw.shape[1]
        scale, floor = np.ones(n_labels), np.zeros(n_labels)
        for j in range(n_labels) if fit else ():  # with no TTA and no MC passes, the floor alone
            fitted = uncertainty_calibration(residual[:, j], raw[:, j])
            if np.isfinite(fitted).all():
                scale[j], floor[j] = fitted
        self.uncertainty_scale_, self.uncertainty_floor_ = scale, floor
        self.reference_std_ = np.median(np.hypot(scale * raw, floor), axis=0) * self.label_std_
        self.validation_rmse_ = rmse * self.label_std_

    def _parameter_groups(self, network: ResNetRegressor) -> list[dict]:
        ratios = [float(r) for r in self.layer_lr_ratios]
        if len(ratios) != 3:
            raise LabelExplorerError(f"layer_lr_ratios: expected 3 multipliers (early trunk, late trunk, head), "
                                     f"got {self.layer_lr_ratios!r}")
        frozen = self.frozen_epochs if self.frozen_epochs is not None else (2 if self.pretrained else 0)
        groups = network.layer_groups()
        return [{"params": groups[i], "lr_scale": ratios[i], "frozen_epochs": int(frozen) if i < 2 else 0}
                for i in range(3)]

    def _training_settings(self) -> TrainingSettings:
        patience = self.early_stopping_patience if self.early_stopping_patience is not None else self.epochs + 1
        return TrainingSettings(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                                validation_fraction=self.validation_fraction, early_stopping_patience=patience,
                                seed=self.random_state, checkpoint_dir=self.checkpoint_dir, progress=self.progress,
                                description=f"training {self.name}", optimizer="adamw",
                                weight_decay=self.weight_decay, schedule="cosine-restarts",
                                restart_epochs=self.restart_epochs, restart_mult=self.restart_mult)

    def _fingerprint(self, training_hash: str, names) -> str:
        """Identifies data and training hyperparameters, so a checkpoint is only resumed by the same run."""
        ignored = {"progress", "device", "checkpoint_dir", "tta", "mc_passes", "outside_std_factor",
                   "calibrate_uncertainty"}
        settings = {k: v for k, v in self.get_params().items() if k not in ignored}
        text = json.dumps(settings, sort_keys=True, default=str) + ",".join(names) + training_hash
        return dataset_hash(np.frombuffer(text.encode(), np.uint8))

    def _features(self, network: ResNetRegressor, x: torch.Tensor) -> torch.Tensor:
        """Trunk features in float32 (the trunk itself may run in bfloat16; the head never does)."""
        with autocast(x.device, self._precision(x.device)):
            features = network.trunk(x.contiguous(memory_format=self._memory_format()))
        return features.float()

    def _loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        x = batch["x"]
        if network.training and len(x) == 1:
            # batch statistics of a single image are undefined: use the running ones for this step
            network.eval()
            try:
                prediction = network.head(self._features(network, random_dihedral(x) if self.augment else x))
            finally:
                network.train()
        elif network.training:
            prediction = network.head(self._features(network, random_dihedral(x) if self.augment else x))
        else:  # validation: the deterministic network
            with dropout_disabled(network):
                prediction = network.head(self._features(network, x))
        return _rmse_loss(prediction, batch["y"])

    @torch.no_grad()
    def _recalibrate_batchnorm(self, network: nn.Module, x: torch.Tensor, device: torch.device) -> None:
        """Running BN statistics as exact averages over (augmented) training images."""
        layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average
        rows = torch.as_tensor(np.random.default_rng(self.random_state).permutation(len(x))[:_RECALIBRATION_IMAGES])
        network.train()
        torch.manual_seed(self.random_state)
        batch = max(self.batch_size, 2)
        for start in range(0, rows.numel(), batch):
            xb = x[rows[start:start + batch]].to(device)
            if xb.shape[0] < 2:
                continue
            network.head(self._features(network, random_dihedral(xb) if self.augment else xb))
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        network.eval()

    # ------------------------------------------------------------------ inference
    def _moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised mean, model std (MC) and predictive std (TTA), each (n, L); NaN where not computed."""
        device = self._torch_device()
        network = self.network_.to(device).eval()
        streams = DropoutStreams(self.random_state, device)
        transforms = range(8) if self.tta else (0,)
        passes = int(self.mc_passes)

        def run(rows: slice) -> np.ndarray:
            xb = torch.as_tensor(x[rows], device=device)
            draws = []
            with torch.no_grad():
                for k in transforms:
                    features = self._features(network, dihedral(xb, k))
                    if passes > 0:
                        out = network.head(features, streams, repeats=passes).reshape(passes, len(xb), -1)
                    else:
                        with dropout_disabled(network.head):
                            out = network.head(features)[None]
                    draws.append(out)
            return torch.stack(draws).cpu().numpy().astype(np.float64)  # (transforms, passes, b, L)

        draws = np.concatenate(run_in_chunks(run, len(x), _PREDICT_BATCH), axis=2)
        mean = draws.mean(axis=(0, 1))
        model_std = np.sqrt(draws.var(axis=1).mean(axis=0)) if passes > 1 else np.full(mean.shape, np.nan)
        predictive_std = draws.mean(axis=1).std(axis=0) if len(transforms) > 1 else np.full(mean.shape, np.nan)
        return mean, model_std, predictive_std

    def _predict(self, images):
        pixels, ids = as_image_array(images)
        x = self.prepare_images(pixels)
        mean, model_std, predictive_std = self._moments(x)
        mean = mean * self.label_std_ + self.label_mean_
        scale, floor = self.label_std_ * self.uncertainty_scale_, self.label_std_ * self.uncertainty_floor_
        model_std = model_std * scale
        # the floor is the label's scatter that the image cannot explain: aleatoric, with the orientation spread
        predictive_std = np.where(np.isnan(predictive_std) & (floor == 0), np.nan,
                                  np.hypot(np.nan_to_num(predictive_std) * scale, floor))
        total = np.sqrt(np.nan_to_num(model_std) ** 2 + np.nan_to_num(predictive_std) ** 2)
        low, high = self.label_range_[:, 0], self.label_range_[:, 1]
        margin = 0.1 * (high - low)
        outside = ((mean < low - margin) | (mean > high + margin)
                   | (total > self.outside_std_factor * self.reference_std_)).any(axis=1)
        return LabelPrediction(self.label_names_, mean, model_std, predictive_std, ids=ids,
                               flags={"outside_training_set": outside},
                               meta={"model": self.name, "tta_transforms": 8 if self.tta else 1,
                                     "mc_passes": int(self.mc_passes), "image_size": int(self.image_size),
                                     "validation_rmse": dict(zip(self.label_names_, self.validation_rmse_.tolist()))})

    def uncalibrated_std(self, prediction: LabelPrediction) -> np.ndarray:
        """The raw total uncertainty of *prediction* (a result of this model): its MC and orientation spreads
        before the calibration, shape (n, n_labels) in this model's label order.

        Examples
        --------
        >>> model = GalaxyCNN()
        >>> model.label_names_, model.label_std_ = ["OH_P50"], np.array([0.2])
        >>> model.uncertainty_scale_, model.uncertainty_floor_ = np.array([2.0]), np.array([0.3])
        >>> prediction = LabelPrediction(["OH_P50"], [[8.9]], [[0.08]], [[np.hypot(0.12, 0.06)]])
        >>> model.uncalibrated_std(prediction).round(3)  # hypot(0.08, 0.12) / 2
        array([[0.072]])
        """
        scale, floor = self.uncertainty_scale_, self.uncertainty_floor_ * self.label_std_
        model_std = np.nan_to_num(prediction.model_std) / scale
        orientation = np.sqrt(np.maximum(np.nan_to_num(prediction.predictive_std) ** 2 - floor ** 2, 0.0)) / scale
        return np.hypot(model_std, orientation)

    # ------------------------------------------------------------------ sensitivity
    def saliency(self, images, label: str) -> np.ndarray:
        """d label / d pixel of each image at the model's resolution, ``(n, 3, S, S)``.

        Gradients of the deterministic network (dropout off, no test-time augmentation)
        with respect to the re-binned pixel values in [0, 1], in label units per unit of
        pixel value: where in the image, and in which band, the prediction is decided.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> images = ImageSet(rng.uniform(0, 1, (16, 3, 8, 8)))
        >>> model = GalaxyCNN(depth=10, width=4, hidden=8, image_size=8, epochs=1, batch_size=8,
        ...                   progress=False).fit(images, {"OH_P50": rng.normal(8.9, 0.1, 16)})
        >>> model.saliency(images[:2], "OH_P50").shape
        (2, 3, 8, 8)
        """
        self._check_fitted("compute saliency maps")
        column = self.label_names_.index(_known_label(label, self.label_names_))
        x = torch.as_tensor(self.prepare_images(images))
        device = self._torch_device()
        network = self.network_.to(device).eval()

        def gradient(rows: slice) -> np.ndarray:
            xb = x[rows].to(device).requires_grad_(True)
            with dropout_disabled(network):
                network.head(self._features(network, xb))[:, column].sum().backward()
            return xb.grad.cpu().numpy()

        grads = np.concatenate(run_in_chunks(gradient, len(x), _PREDICT_BATCH))
        # d/d(pixel) = d/d(normalised) / channel_std, back in label units
        return grads / self.channel_std_[None, :, None, None] * self.label_std_[column]

    def _sensitivity(self, images, label):
        return self.saliency(images, label).mean(axis=0).ravel()

    # ------------------------------------------------------------------ persistence
    def _config_extra(self) -> dict:
        return {"best_epoch": int(self.best_epoch_), "n_parameters": n_parameters(self.network_),
                "history": [{k: (float(v) if np.isfinite(v) else None) for k, v in record.items()}
                            for record in self.history_]}

    def _load_config_extra(self, extra: dict) -> None:
        self.history_ = list(extra.get("history", []))
        self.best_epoch_ = int(extra.get("best_epoch", 0))

    def _save_weights(self, directory: Path) -> None:
        save_network(directory, self.network_, {
            "channel_mean": self.channel_mean_, "channel_std": self.channel_std_, "label_mean": self.label_mean_,
            "label_std": self.label_std_, "label_range": self.label_range_, "reference_std": self.reference_std_,
            "validation_rmse": self.validation_rmse_, "uncertainty_scale": self.uncertainty_scale_,
            "uncertainty_floor": self.uncertainty_floor_})

    def _load_weights(self, directory: Path) -> None:
        state, arrays = read_network(directory, self.name)
        n_labels = len(self.label_names_)
        with model_file_errors(Path(directory) / WEIGHTS_FILE, self.name):
            for name in ("channel_mean", "channel_std"):
                setattr(self, f"{name}_", arrays[name].astype(np.float32))
            for name in ("label_mean", "label_std", "label_range", "reference_std", "validation_rmse"):
                setattr(self, f"{name}_", arrays[name].astype(np.float64))
            # models saved before the calibration: the raw spreads
            self.uncertainty_scale_ = arrays.get("uncertainty_scale", np.ones(n_labels)).astype(np.float64)
            self.uncertainty_floor_ = arrays.get("uncertainty_floor", np.zeros(n_labels)).astype(np.float64)
            if not (self.channel_mean_.shape == self.channel_std_.shape == (3,)
                    and self.label_mean_.shape == self.label_std_.shape == self.reference_std_.shape
                    == self.validation_rmse_.shape == self.uncertainty_scale_.shape
                    == self.uncertainty_floor_.shape == (n_labels,)
                    and self.label_range_.shape == (n_labels, 2)):
                raise ValueError(f"normalisation arrays do not match 3 channels and the {n_labels} labels")
            network = self.network_for(n_labels)
            network.load_state_dict(state, strict=True)
        self.network_ = network.to(self._torch_device(), memory_format=self._memory_format()).eval()


# ============================================================================ helpers
def _label_scaling(values: np.ndarray, names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    known = np.isfinite(values)
    for j, name in enumerate(names):
        if known[:, j].sum() < 2:
            raise LabelError(f"label {name!r}: fewer than 2 training images have a known value; cannot fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    return mean, np.where(std > 0, std, 1.0), np.column_stack([low, high])


def _known_label(label: str, names: list[str]) -> str:
    key = canonical_label(label)
    if key not in names:
        raise UnknownNameError(f"label {label!r} is not predicted by this model; available: {names}"
                               f"{did_you_mean(key, names)}")
    return key
