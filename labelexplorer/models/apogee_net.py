"""APOGEE Net I and II: a raw-flux CNN for every star, 3,000–50,000 K (Olney et al. 2020; Sprague et al. 2022).

``apogee-net`` (:class:`ApogeeNet`) in two configurations:

* ``version=1`` (APOGEE Net I, paper 002): the spectrum only; targets logg, linear Teff
  and [Fe/H] z-scored with 2.88 ± 1.16, 4716.92 ± 733.01 K, −0.22 ± 0.30; SGD-era
  settings (learning rate 1e-3, dropout 0.1, 100 noise realisations); after converging on
  all stars, *stratified fine-tuning*: rounds of training on the rare classes (M dwarfs and
  young stars) plus a fresh random 5 % of the common class, each round stopped early on the
  development set with its best model reloaded, until the rare classes stop improving.
* ``version=2`` (APOGEE Net II, paper 001): the spectrum plus a 7-feature branch of
  photometry and parallax; targets logg, log10 Teff and [Fe/H] z-scored with
  2.92578 ± 1.18907, 3.67057 ± 0.09177, −0.13088 ± 0.25669; each star's loss weighted by
  ``min(c / density, 5)`` from a Gaussian KDE (bandwidth 0.7671) of the standardised
  (Teff, logg) plane, ``c`` making the mean weight 1, so that rare hot stars and
  supergiants are not sacrificed to the dense red-giant branch; learning rate 7.5e-4,
  dropout 0.07646, 20 noise realisations.

Network (both; layer names as in the public reference code, so published weights load):
input the apStar flux of the combined row, 8575 pixels, NaN → 0, *no* continuum
normalisation, divided by its median (``flux_scaling``, below); 12 ``Conv1d(kernel 3,
padding 1)`` with ReLU in pairs, ``MaxPool(2)`` after each pair, channels
1→8→8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64 (8575 → 133 after six pools, 8512
features); v2 adds ``metadata``: 7 → 8 → 16 → 32 → 32 → 64 with ReLU on
[parallax, G, BP, RP, J, H, K], missing or sentinel values (≥ 98, non-finite) replaced by
fixed fill values and z-scored with fixed means and standard deviations (the reference
code's constants; stored in every saved model); concatenated → fc 512 → fc 512 → 3
outputs in the order [logg, Teff (log10 Teff in v2), Fe/H]. Training: Adam (the shared
loop of :mod:`labelexplorer.models.nn.training`), masked MSE (a missing label adds
nothing), splits 80/10/10 (60/20/20 for the rare classes), early stopping on the
development set with the best model kept, progress bar, Ctrl-C and resume.

Where we depart from the papers, and why (measured on the mock universe; the design is silent):

* **Input scale** (``flux_scaling="median"``). The papers feed the raw flux (paper 002 §3.2
  reports that scaled fluxes did not converge for them). Raw apStar levels span three orders of
  magnitude between stars (13 to 54,000 in the mock sample); a ReLU trunk's features scale with
  the input, so the fully connected layers see the brightness first and the lines second, and
  Adam learned slowly: 12 epochs on 1,200 spectra (v2 without photometry, uniform weights,
  rate 3e-4, batches of 16) reached a best development loss of 0.52 (Teff σ_MAD 334 K, logg
  0.61), 0.33 with one global scale for all stars (194 K, 0.39), 0.38
  with log flux (260 K, 0.40), and 0.06 (103 K, 0.16; the loss below 0.23 from the fourth
  epoch on) with each spectrum divided by its median flux, which keeps the shape of
  the spectrum and loses only the brightness (a matter of distance; v2 gets it with the
  parallax and magnitudes). ``"raw"`` remains for the published weights.
* **Optimiser**: Adam for both (the papers: SGD for v1, Adamax for v2) at the papers'
  learning rates, batches of 128 by default; early stopping and the halving of the rate on
  plateaus as in the shared loop. Stratified fine-tuning continues at the rate the all-star
  stage ended with (``fine_tune_learning_rate``; paper 002 does not say).

Uncertainty (both papers): each spectrum is perturbed ``n_draws`` times with
``flux + N(0, 1) · error``, the error clipped at 5 × the spectrum's median error (chip-gap
pixels, zero flux without an error, stay zero as the network saw them); the reported label
is the median over the draws, its ``predictive_std`` the standard deviation. All draws of
a chunk of spectra go through the network as one tensor batch. Each spectrum's noise comes
from its own generator seeded by ``(random_state, spectrum id)``, so a star's result does
not depend on the batch it is in. Those draws carry the flux noise only, not the
network's own error (on the mock universe's demo they were 6× smaller than the errors),
so at the end of training a scale and a floor per label are fitted on the held-out
development stars (:func:`labelexplorer.models.calibration.uncertainty_calibration`,
as for the BCNNs; for Teff on log10 Teff, whose errors grow with Teff): ``predictive_std``
is the scaled noise spread, ``model_std`` the floor, the network's own error.
``calibrate(spectra, labels)`` refits them on any held-out labelled stars (the only way for
published weights, which come uncalibrated); ``calibrate_uncertainty=False`` keeps the
papers' recipe, with ``model_std`` NaN (no MC dropout in these papers).

Flags: ``feh_not_reported`` ([Fe/H] is NaN above 6500 K, where paper 001 trained on
forced zeros), ``yso_candidate`` (inside the paper-002 polygon (Teff, logg) = (2200, 4.4),
(4500, 3.9), (3200, 1.7)), ``outside_physical_range``, ``outside_training_set`` (flux level
outside the training spectra's, or labels farther than ``outside_distance`` standardised
units from every training star) and ``low_snr``.
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..exceptions import LabelError, LabelExplorerError, ModelFileError, ShapeError, SpectrumError
from ..prediction import LabelPrediction
from ..preprocess.grid import APOGEE_N_PIXELS, apogee_wavelength
from ..spectra import Spectra
from .base import LabelModel, dataset_hash, register_model
from .calibration import uncertainty_calibration
from .nn.device import forked_rng, memory_budget, rows_per_chunk, run_in_chunks
from .nn.layers import n_parameters
from .nn.model import TorchModel
from .nn.training import TrainingSettings, module_tensors, train

__all__ = ["ApogeeNet", "ApogeeNetNetwork", "MetadataNet", "trunk_length", "metadata_features",
           "normalise_metadata", "attach_photometry", "flux_levels", "kde_weights", "split_stars", "star_classes",
           "clipped_errors", "draw_seeds", "noise_draws", "draw_outputs", "LABELS", "OUTPUT_ORDER",
           "METADATA_COLUMNS", "YSO_POLYGON", "FEH_MAX_TEFF", "initialise_network"]

TRUNK_CHANNELS = (8, 8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64)
METADATA_WIDTHS = (8, 16, 32, 32, 64)
FC_WIDTH = 512
N_TRUNK_FEATURES = TRUNK_CHANNELS[-1] * 133
"""64 channels × 133 positions = 8512 features from the convolutional trunk."""

LABELS = ("TEFF", "LOGG", "FE_H")
"""The labels APOGEE Net predicts (any subset can be trained)."""
OUTPUT_ORDER = ("LOGG", "TEFF", "FE_H")
"""Order of the network's three outputs (as in the published weights; Teff is log10 Teff in v2)."""

METADATA_COLUMNS = ("GAIAEDR3_PARALLAX", "GAIAEDR3_PHOT_G_MEAN_MAG", "GAIAEDR3_PHOT_BP_MEAN_MAG",
                    "GAIAEDR3_PHOT_RP_MEAN_MAG", "J", "H", "K")
"""The v2 metadata features, in branch order [parallax, G, BP, RP, J, H, K] (allStar DR17 names)."""
# Fixed constants of the published v2 model (reference code hutchresearch/ApogeeNet2, dataset.py)
METADATA_FILL = np.array([-84.82700, 21.40844, 24.53892, 20.26276, 18.43900, 24.00000, 17.02500])
METADATA_MEAN = np.array([-0.6959113178296891, 13.630030428758845, 14.5224418320574, 12.832448427460813,
                          11.537019017423619, 10.858717523536697, 10.702106344460235])
METADATA_STD = np.array([14.572430555504504, 2.2762944923233883, 2.8342029214199704, 2.136884367623457,
                         1.6793628207779732, 1.4888102872755238, 1.5848713221149886])
METADATA_SENTINEL = 98.0
"""Metadata values at or above this (the catalogs' 99.99 "no measurement") count as missing."""
_METADATA_ALIASES = {
    "GAIAEDR3_PARALLAX": ("GAIAEDR3_PARALLAX", "GAIA_PARALLAX", "PARALLAX"),
    "GAIAEDR3_PHOT_G_MEAN_MAG": ("GAIAEDR3_PHOT_G_MEAN_MAG", "GAIA_PHOT_G_MEAN_MAG", "PHOT_G_MEAN_MAG", "G"),
    "GAIAEDR3_PHOT_BP_MEAN_MAG": ("GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIA_PHOT_BP_MEAN_MAG", "PHOT_BP_MEAN_MAG", "BP"),
    "GAIAEDR3_PHOT_RP_MEAN_MAG": ("GAIAEDR3_PHOT_RP_MEAN_MAG", "GAIA_PHOT_RP_MEAN_MAG", "PHOT_RP_MEAN_MAG", "RP"),
    "J": ("J", "J_MAG", "JMAG"), "H": ("H", "H_MAG", "HMAG"), "K": ("K", "K_MAG", "KMAG", "KS"),
}

# (mean, std) of the standardised targets in OUTPUT_ORDER (paper 002 Table 1; paper 001 Table 2)
TARGET_SCALING = {
    1: ((2.88, 1.16), (4716.92, 733.01), (-0.22, 0.30)),
    2: ((2.925783395767212, 1.1890668869018555), (3.6705732345581055, 0.0917675793170929),
        (-0.13088105618953705, 0.25668784976005554)),
}
# What each paper used; a hyperparameter left at None takes its version's value
VERSION_DEFAULTS = {
    1: dict(use_photometry=False, weighting="uniform", fine_tune_rounds=10, dropout=0.1, n_draws=100,
            learning_rate=1e-3),
    2: dict(use_photometry=True, weighting="kde", fine_tune_rounds=0, dropout=0.07646, n_draws=20,
            learning_rate=7.5e-4),
}
KDE_BANDWIDTH = 0.7671
"""KDE bandwidth in standardised units (paper 001 Table 3, best of the sweep)."""
WEIGHT_CAP = 5.0
FEH_MAX_TEFF = 6500.0
"""[Fe/H] is not reported above this Teff (paper 001 §3.1)."""
YSO_POLYGON = ((2200.0, 4.4), (4500.0, 3.9), (3200.0, 1.7))
"""(Teff, logg) corners of the young-star selection of paper 002 §4.1."""
PHYSICAL_RANGES = {"TEFF": (2000.0, 100000.0), "LOGG": (-1.0, 6.0), "FE_H": (-5.0, 1.5)}
"""Labels outside these are flagged ``outside_physical_range`` (no star has them)."""
PUBLISHED_LABEL_BOX = {"TEFF": (3000.0, 50000.0), "LOGG": (-0.5, 5.5)}
"""The label space of the published v2 training set (paper 001), used for published weights."""
RARE_CLASSES = ("m_dwarf", "yso")
"""The classes paper 002 balanced against the common (Payne) stars."""

_MAX_REFERENCE = 20_000  # training points kept for the KDE and the label-distance flag
_FLOATS_PER_DRAW_PIXEL = 24  # float32 values alive per draw and pixel in a forward pass (activations, draws)
# rows (spectra × draws) per forward: on the CPU ~16 rows keep the 8575-pixel activations in cache
# (benchmarks/bench_apogee_net.py: 250 forwards/s at 8-16 rows, 100 at 320); GPUs want big batches
_MAX_DRAW_ROWS = {"cpu": 16, "cuda": 16384}
_FAN_IN_REFERENCE = 16  # layers with more inputs than this learn proportionally slower (layer_learning_rates)
_FLUX_MARGIN_DEX = 0.3  # widening of the training flux-level range before a spectrum counts as outside


# ============================================================================ network
def trunk_length(n_pixels: int = APOGEE_N_PIXELS) -> int:
    """Positions left after the six ``MaxPool(2)`` of the trunk.

    Examples
    --------
    >>> trunk_length(8575), 64 * trunk_length(8575)
    (133, 8512)
    """
    for _ in range(len(TRUNK_CHANNELS) // 2):
        n_pixels //= 2
    return n_pixels


class MetadataNet(nn.Module):
    """The v2 photometry branch: 7 → 8 → 16 → 32 → 32 → 64, ReLU after each layer (``l1``…``l5``).

    Examples
    --------
    >>> MetadataNet()(torch.zeros(2, 7)).shape
    torch.Size([2, 64])
    """

    def __init__(self):
        super().__init__()
        widths = (len(METADATA_COLUMNS),) + METADATA_WIDTHS
        for index in range(len(METADATA_WIDTHS)):
            self.add_module(f"l{index + 1}", nn.Linear(widths[index], widths[index + 1]))

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            metadata = torch.relu(layer(metadata))
        return metadata


def initialise_network(network: "ApogeeNetNetwork", typical_flux: float = 1.0) -> None:
    """He-normal weights, zero biases; ``conv1`` scaled and offset for the typical flux of the training set.

    torch's default initialisation shrinks the signal by about √6 per ReLU layer, so after
    twelve convolutions the features hardly depend on the spectrum and training starts from
    a constant network. He initialisation keeps the signal's scale through the trunk;
    dividing the first layer by the training spectra's median flux makes the raw flux
    (tens to thousands in apStar units) enter at order one, and its bias makes a flat
    spectrum at that level give zero response, so that lines rather than the flux level
    fill the features — all without normalising the input, which stays raw flux.

    Examples
    --------
    >>> net = ApogeeNetNetwork(use_metadata=False)
    >>> initialise_network(net, typical_flux=100.0)
    >>> flat = torch.full((1, 1, 10), 100.0)
    >>> float(net.conv1(flat)[..., 1:-1].detach().abs().max()) < 1e-5, float(net.fc1.bias.detach().abs().max())
    (True, 0.0)
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    nn.init.normal_(network.fc3.weight, 0.0, 1.0 / math.sqrt(network.fc3.in_features))  # linear output
    if network.metadata is not None:  # missing photometry is filled 3-9 standard deviations out: start quiet
        network.metadata.l5.weight.data.mul_(0.1)
    with torch.no_grad():
        network.conv1.weight /= float(typical_flux)
        # a flat spectrum at the typical level gives zero first-layer response, so that lines,
        # not the flux level, dominate the features at the start of training
        network.conv1.bias.copy_(-network.conv1.weight.sum(dim=(1, 2)) * float(typical_flux))


class ApogeeNetNetwork(nn.Module):
    """The APOGEE Net CNN; ``use_metadata`` adds the v2 photometry branch.

    Parameter names (``conv1``…``conv12``, ``metadata.l1``…``l5``, ``fc1``…``fc3``) are those
    of the public reference code, so its ``state_dict`` loads unchanged.

    Parameters
    ----------
    use_metadata : bool
        Add the 7-feature branch (APOGEE Net II).
    dropout : float
        Dropout on the outputs of ``fc1`` and ``fc2`` (training only).

    Examples
    --------
    >>> net = ApogeeNetNetwork(use_metadata=False)
    >>> net.features(torch.zeros(1, 8575)).shape
    torch.Size([1, 8512])
    >>> net(torch.zeros(2, 8575)).shape
    torch.Size([2, 3])
    """

    def __init__(self, use_metadata: bool, dropout: float = 0.0):
        super().__init__()
        channels = (1,) + TRUNK_CHANNELS
        for index in range(len(TRUNK_CHANNELS)):
            self.add_module(f"conv{index + 1}", nn.Conv1d(channels[index], channels[index + 1], 3, padding=1))
        self.metadata = MetadataNet() if use_metadata else None
        self.fc1 = nn.Linear(N_TRUNK_FEATURES + (METADATA_WIDTHS[-1] if use_metadata else 0), FC_WIDTH)
        self.fc2 = nn.Linear(FC_WIDTH, FC_WIDTH)
        self.fc3 = nn.Linear(FC_WIDTH, len(OUTPUT_ORDER))
        self.dropout = nn.Dropout(dropout)

    @property
    def uses_metadata(self) -> bool:
        """True for the v2 network with its photometry branch."""
        return self.metadata is not None

    def features(self, flux: torch.Tensor) -> torch.Tensor:
        """The 8512 trunk features of spectra ``(n, 8575)`` (or ``(n, 1, 8575)``)."""
        h = flux.unsqueeze(1) if flux.dim() == 2 else flux
        for pair in range(len(TRUNK_CHANNELS) // 2):
            first, second = getattr(self, f"conv{2 * pair + 1}"), getattr(self, f"conv{2 * pair + 2}")
            h = nn.functional.max_pool1d(torch.relu(second(torch.relu(first(h)))), 2)
        return h.flatten(1)

    def forward(self, flux: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(flux)
        if self.metadata is not None:
            if metadata is None:
                raise ShapeError("the APOGEE Net II network needs the 7 metadata features besides the flux")
            h = torch.cat([h, self.metadata(metadata)], dim=1)
        h = torch.relu(self.dropout(self.fc1(h)))
        h = torch.relu(self.dropout(self.fc2(h)))
        return self.fc3(h)


# ============================================================================ inputs
def _info_column(info: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    """The info column holding feature *name* (case-insensitive, common spellings), or None."""
    by_upper = {str(key).upper(): key for key in info}
    for alias in _METADATA_ALIASES[name]:
        if alias in by_upper:
            return np.asarray(info[by_upper[alias]], dtype=np.float64)
    return None


def metadata_features(spectra: Spectra) -> tuple[np.ndarray, list[str]]:
    """The raw v2 features ``(n, 7)`` from ``spectra.info`` (NaN where absent) and the absent columns.

    Examples
    --------
    >>> spec = Spectra(np.ones((1, 3)), [1.0, 2.0, 3.0], info={"J": [10.0], "H": [9.5]})
    >>> values, absent = metadata_features(spec)
    >>> values[0, 4:6].tolist(), absent[:2]
    ([10.0, 9.5], ['GAIAEDR3_PARALLAX', 'GAIAEDR3_PHOT_G_MEAN_MAG'])
    """
    values = np.full((len(spectra), len(METADATA_COLUMNS)), np.nan)
    absent = []
    for j, name in enumerate(METADATA_COLUMNS):
        column = _info_column(spectra.info, name)
        if column is None:
            absent.append(name)
        else:
            values[:, j] = column
    return values, absent


def normalise_metadata(raw, fill=METADATA_FILL, mean=METADATA_MEAN, std=METADATA_STD) -> np.ndarray:
    """Missing (non-finite) and sentinel (≥ 98) features → fill values, then z-scores (float32).

    Examples
    --------
    >>> z = normalise_metadata([[np.nan, 99.99, 14.5, 12.8, 11.5, 10.9, 10.7]])
    >>> bool(np.allclose(z[0, :2], (METADATA_FILL[:2] - METADATA_MEAN[:2]) / METADATA_STD[:2]))
    True
    """
    raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
    if raw.shape[1] != len(METADATA_COLUMNS):
        raise ShapeError(f"metadata: expected {len(METADATA_COLUMNS)} features per star "
                         f"({', '.join(METADATA_COLUMNS)}), got {raw.shape[1]}")
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(raw) & (raw < METADATA_SENTINEL)
    values = np.where(usable, raw, np.asarray(fill, dtype=np.float64))
    return ((values - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


def attach_photometry(spectra: Spectra, table, *, id_column: str = "APOGEE_ID") -> Spectra:
    """Copy the v2 photometry and parallax of each star from a catalog into ``spectra.info``.

    apStar files carry J, H and K but not Gaia; an allStar-like table (the mock universe's
    ``allStar-mock.fits``, DR17 allStar) has all seven columns of :data:`METADATA_COLUMNS`.
    Stars are matched by ``info["APOGEE_ID"]`` (else the spectrum ids); unmatched stars get NaN.

    Parameters
    ----------
    spectra : Spectra
    table : pandas DataFrame, astropy Table or dict of arrays
        With *id_column* and any of the seven columns.
    id_column : str

    Returns
    -------
    Spectra
        A new batch with the columns in ``info``.

    Examples
    --------
    >>> spec = Spectra(np.ones((2, 3)), [1.0, 2.0, 3.0], ids=["a", "b"])
    >>> out = attach_photometry(spec, {"APOGEE_ID": ["b", "a"], "GAIAEDR3_PARALLAX": [2.0, 1.0]})
    >>> out.info["GAIAEDR3_PARALLAX"].tolist()
    [1.0, 2.0]
    """
    import pandas as pd

    frame = table.to_pandas() if hasattr(table, "to_pandas") else pd.DataFrame(dict(table))
    if id_column not in frame:
        raise LabelError(f"attach_photometry: the table has no {id_column!r} column to match stars by")
    ids = np.asarray(spectra.info.get("APOGEE_ID", spectra.ids)).astype(str)
    keys = frame[id_column].astype(str).str.strip()
    frame = frame.assign(**{id_column: keys}).drop_duplicates(id_column).set_index(id_column)
    info = dict(spectra.info)
    found = [name for name in METADATA_COLUMNS if name in frame]
    if not found:
        raise LabelError(f"attach_photometry: the table has none of {', '.join(METADATA_COLUMNS)}")
    for name in found:
        info[name] = frame[name].reindex(ids).to_numpy(dtype=np.float64)
    return spectra.replace(info=info, step=f"attach photometry ({', '.join(found)})")


def _check_spectra(spectra) -> Spectra:
    """A Spectra on the 8575-pixel APOGEE grid, or a clear error."""
    if not isinstance(spectra, Spectra):
        raise ShapeError(f"spectra: expected a labelexplorer.Spectra (e.g. from labelexplorer.read(apStar files)), "
                         f"got {type(spectra).__name__}")
    if spectra.n_pixels != APOGEE_N_PIXELS:
        raise ShapeError(f"spectra: APOGEE Net takes the raw apStar flux on the {APOGEE_N_PIXELS}-pixel APOGEE grid; "
                         f"got {spectra.n_pixels} pixels")
    grid = apogee_wavelength()
    if not np.allclose(spectra.wavelength, grid if spectra.shared_grid else grid[None, :], rtol=1e-6, atol=0.0):
        raise SpectrumError("spectra: the wavelengths are not the APOGEE grid log10(λ) = 4.179 + 6e-6 i; "
                            "APOGEE Net needs apStar spectra in the stellar rest frame")
    return spectra


def flux_levels(spectra: Spectra) -> np.ndarray:
    """Each spectrum's median flux over unmasked pixels with positive flux (NaN where there are none).

    The divisor of ``flux_scaling="median"``: it removes the star's brightness (a matter of
    distance and extinction, spanning three orders of magnitude among apStar spectra) and keeps
    the shape of the spectrum, its spectral energy distribution included.

    Examples
    --------
    >>> spec = Spectra([[0.0, 2.0, 4.0, 6.0], [0.0, 0.0, 0.0, 0.0]], [1.0, 2.0, 3.0, 4.0])
    >>> flux_levels(spec).tolist()
    [4.0, nan]
    """
    flux = np.nan_to_num(np.asarray(spectra.flux, dtype=np.float64), nan=0.0)
    good = ~np.asarray(spectra.mask) & (flux > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a spectrum without positive flux: NaN
        return np.nanmedian(np.where(good, flux, np.nan), axis=1)


def clipped_errors(flux: np.ndarray, error: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """Per-pixel errors for the noise draws: at most *clip* × each spectrum's median error.

    Pixels without an error (inf, NaN, 0) get the cap, except where the flux is 0 (the chip
    gaps, which the network always sees as zeros): there the error is 0.

    Examples
    --------
    >>> flux = np.array([[1.0, 1.0, 1.0, 0.0, 1.0]])
    >>> error = np.array([[0.1, 0.1, 9.0, np.inf, np.inf]])
    >>> clipped_errors(flux, error).astype(float).round(3).tolist()
    [[0.1, 0.1, 0.5, 0.0, 0.5]]
    """
    flux = np.asarray(flux, dtype=np.float32)
    error = np.asarray(error, dtype=np.float32)
    known = np.isfinite(error) & (error > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a spectrum without any error: no noise
        cap = clip * np.nanmedian(np.where(known, error, np.nan), axis=1, keepdims=True)
    out = np.where(known, np.minimum(error, cap), cap)
    out = np.where(~known & (np.nan_to_num(flux) == 0), 0.0, out)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def draw_seeds(ids: Sequence[str], random_state: int) -> list[int]:
    """One noise seed per spectrum from ``(random_state, id)``: a star's draws never depend on its batch.

    Examples
    --------
    >>> draw_seeds(["a", "b"], 0) == draw_seeds(["a", "b"], 0) != draw_seeds(["a", "b"], 1)
    True
    """
    seeds = []
    for identifier in ids:
        state = np.random.SeedSequence([int(random_state), zlib.crc32(str(identifier).encode())])
        seeds.append(int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return seeds


def noise_draws(flux: torch.Tensor, error: torch.Tensor, n_draws: int, seeds: Sequence[int]) -> torch.Tensor:
    """``flux + N(0, 1) · error`` realisations, shape ``(n_spectra, n_draws, n_pixels)``.

    Spectrum *i*'s noise comes from a generator seeded with ``seeds[i]``.

    Examples
    --------
    >>> draws = noise_draws(torch.zeros(2, 5), torch.ones(2, 5), 3, [1, 2])
    >>> draws.shape, bool(torch.equal(draws[0], noise_draws(torch.zeros(1, 5), torch.ones(1, 5), 3, [1])[0]))
    (torch.Size([2, 3, 5]), True)
    """
    n_spectra, n_pixels = flux.shape
    noise = torch.empty((n_spectra, n_draws, n_pixels), dtype=flux.dtype, device=flux.device)
    for row, seed in enumerate(seeds):
        generator = torch.Generator(device=flux.device).manual_seed(int(seed))
        noise[row] = torch.randn((n_draws, n_pixels), generator=generator, dtype=flux.dtype, device=flux.device)
    return noise.mul_(error[:, None, :]).add_(flux[:, None, :])


def draw_outputs(network: ApogeeNetNetwork, flux: torch.Tensor, error: torch.Tensor,
                 metadata: torch.Tensor | None, n_draws: int, seeds: Sequence[int], *,
                 batched: bool = True) -> torch.Tensor:
    """Network outputs (standardised) for every noise draw, shape ``(n_spectra, n_draws, 3)``.

    ``batched=True`` sends all ``n_spectra × n_draws`` realisations through the network as
    one tensor; ``False`` is the naive loop over draws (same draws, same result; for the
    benchmark and tests).

    Examples
    --------
    >>> net = ApogeeNetNetwork(use_metadata=False).eval()
    >>> with torch.no_grad():
    ...     out = draw_outputs(net, torch.ones(2, 8575), torch.full((2, 8575), 0.1), None, 3, [5, 6])
    >>> out.shape
    torch.Size([2, 3, 3])
    """
    draws = noise_draws(flux, error, n_draws, seeds)
    n_spectra, _, n_pixels = draws.shape
    if batched:
        repeated = None if metadata is None else metadata.repeat_interleave(n_draws, dim=0)
        return network(draws.reshape(n_spectra * n_draws, n_pixels), repeated).reshape(n_spectra, n_draws, -1)
    return torch.stack([network(draws[:, k].contiguous(), metadata) for k in range(n_draws)], dim=1)


# ============================================================================ classes, splits, weights
def star_classes(teff, logg) -> np.ndarray:
    """Classes from labels, as paper 002 separated them: ``yso`` (inside :data:`YSO_POLYGON`),
    ``m_dwarf`` (Teff < 4000 K, logg > 3.5), ``hot`` (Teff > 6700 K), ``giant`` (logg < 3.5),
    ``dwarf``; ``unknown`` without both labels.

    Examples
    --------
    >>> star_classes([3400, 3300, 4800, 5800, 15000, np.nan], [3.8, 4.9, 2.5, 4.4, 4.0, 2.0]).tolist()
    ['yso', 'm_dwarf', 'giant', 'dwarf', 'hot', 'unknown']
    """
    from ..analysis.selection import in_polygon

    teff = np.asarray(teff, dtype=np.float64)
    logg = np.asarray(logg, dtype=np.float64)
    known = np.isfinite(teff) & np.isfinite(logg)
    yso = in_polygon(teff, logg, YSO_POLYGON)
    return np.select([~known, yso, (teff < 4000) & (logg > 3.5), teff > 6700, logg < 3.5],
                     ["unknown", "yso", "m_dwarf", "hot", "giant"], "dwarf").astype(object)


def _check_fractions(name: str, fractions) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise LabelExplorerError(f"{name}: expected (train, dev, test) fractions >= 0 summing to 1 with a "
                                 f"positive training share, got {fractions!r}")
    return values


def split_stars(classes, *, rare_classes: Sequence[str] = RARE_CLASSES, split=(0.8, 0.1, 0.1),
                rare_split=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, np.ndarray]:
    """Train / development / test rows, drawn class by class (papers: 80/10/10, rare classes 60/20/20).

    Parameters
    ----------
    classes : array_like of str
        One class per star.
    rare_classes : sequence of str
        Classes split with *rare_split*, so their small numbers still fill a test set.
    split, rare_split : (train, dev, test) fractions
    seed : int

    Returns
    -------
    dict
        ``"train"``, ``"dev"``, ``"test"``: sorted row positions.

    Examples
    --------
    >>> rows = split_stars(["giant"] * 10 + ["yso"] * 5, seed=0)
    >>> [len(rows[part]) for part in ("train", "dev", "test")]
    [11, 2, 2]
    """
    classes = np.asarray(classes).astype(str)
    common, rare = _check_fractions("split", split), _check_fractions("rare_split", rare_split)
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for name in sorted(set(classes)):
        rows = rng.permutation(np.flatnonzero(classes == name))
        fractions = rare if name in set(rare_classes) else common
        n_dev = int(round(fractions[1] * rows.size))
        n_test = int(round(fractions[2] * rows.size))
        while n_dev + n_test >= rows.size and n_dev + n_test > 0:  # always keep a training star
            if n_test >= n_dev:
                n_test -= 1
            else:
                n_dev -= 1
        parts["dev"].append(rows[:n_dev])
        parts["test"].append(rows[n_dev:n_dev + n_test])
        parts["train"].append(rows[n_dev + n_test:])
    return {key: np.sort(np.concatenate(value)).astype(np.int64) for key, value in parts.items()}


def _normalising_constant(inverse_density: np.ndarray, cap: float) -> float:
    """The c with ``mean(min(c / density, cap)) = 1`` (exact: the capped stars are the rarest)."""
    u = np.sort(inverse_density)[::-1]
    n = u.size
    tail = np.cumsum(u[::-1])[::-1]  # tail[k]: sum of all but the k largest
    k = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (n - cap * k) / tail
    below = c * u <= cap * (1 + 1e-12)  # star k itself is not capped
    above = np.concatenate([[True], c[1:] * u[:-1] >= cap * (1 - 1e-12)])  # the k before it are
    valid = (n - cap * k > 0) & below & above
    return float(c[np.flatnonzero(valid)[0]])


def kde_weights(points, *, bandwidth: float = KDE_BANDWIDTH, cap: float = WEIGHT_CAP, fit_rows=None,
                seed: int = 0) -> np.ndarray:
    """Loss weights ``min(c / density, cap)`` from a Gaussian KDE, with mean weight 1 (paper 001).

    Parameters
    ----------
    points : array_like, shape (n, d)
        Standardised coordinates (e.g. z-scored log Teff and logg); rows with NaN get weight 1.
    bandwidth : float
        Kernel width in standardised units.
    cap : float
        Largest weight (>= 1).
    fit_rows : array_like of bool or int, optional
        Rows that build the KDE and whose mean weight is 1 (e.g. the training split;
        default: every complete row). Other rows get weights from the same KDE and c.
    seed : int
        Seeds the subsample of at most 20,000 rows that builds the KDE of larger sets.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> crowd = np.vstack([rng.normal(0, 0.3, (500, 2)), [[5.0, 5.0]]])
    >>> w = kde_weights(crowd)
    >>> round(float(w.mean()), 6), float(w.max()), bool(w[-1] == w.max())
    (1.0, 5.0, True)
    """
    points = np.asarray(points, dtype=np.float64)
    points = points[:, None] if points.ndim == 1 else points
    if cap < 1:
        raise LabelExplorerError(f"cap: expected a largest weight >= 1 (the mean weight is 1), got {cap}")
    if not bandwidth > 0:
        raise LabelExplorerError(f"bandwidth: expected a positive kernel width, got {bandwidth}")
    complete = np.isfinite(points).all(axis=1)
    chosen = np.zeros(len(points), dtype=bool)
    if fit_rows is None:
        chosen[:] = True
    else:
        chosen[np.asarray(fit_rows)] = True
    chosen &= complete
    weights = np.ones(len(points))
    if not chosen.any():
        return weights
    reference = points[chosen]
    if len(reference) > _MAX_REFERENCE:
        reference = reference[np.random.default_rng(seed).choice(len(reference), _MAX_REFERENCE, replace=False)]
    density = np.full(len(points), np.nan)
    rows = np.flatnonzero(complete)
    for start in range(0, rows.size, 2048):
        block = points[rows[start:start + 2048]]
        distance2 = ((block[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2)
        density[rows[start:start + 2048]] = np.exp(-0.5 * distance2 / bandwidth ** 2).mean(axis=1)
    density = np.maximum(density, np.finfo(float).tiny)
    c = _normalising_constant(1.0 / density[chosen], cap)
    weights[complete] = np.minimum(c / density[complete], cap)
    return weights


# ============================================================================ the model
def _json_float(value: float):
    return value if math.isfinite(value) else None


@register_model("apogee-net")
class ApogeeNet(TorchModel, LabelModel):
    """APOGEE Net I (``version=1``) and II (``version=2``): Teff, logg, [Fe/H] from raw apStar flux.

    Hyperparameters left at None take their version's value (:data:`VERSION_DEFAULTS`).

    Parameters
    ----------
    version : {1, 2}
        1: spectrum only, linear Teff targets, stratified fine-tuning. 2: spectrum +
        photometry/parallax branch, log Teff targets, KDE loss weights.
    use_photometry : bool, optional
        Feed the 7 metadata features (``spectra.info``: GAIAEDR3_PARALLAX,
        GAIAEDR3_PHOT_{G,BP,RP}_MEAN_MAG, J, H, K; see :func:`attach_photometry`).
    weighting : {"kde", "uniform"}, optional
        Per-star loss weights.
    kde_bandwidth, weight_cap : float
        Of the KDE weights.
    fine_tune_rounds : int, optional
        Stratified fine-tuning rounds after the all-star training (0: none).
    fine_tune_fraction : float
        Share of the common class drawn afresh for each round (paper: 5 %).
    fine_tune_learning_rate : float, optional
        Learning rate of every fine-tuning round; default: the rate the all-star stage ended
        with (training *continues*). Measured on the mock universe (v1, 14 epochs): restarting
        at the initial 1e-3 made the development loss jump (0.25 → 0.98 within the first
        round) and no round improved the rare classes; continuing, all three rounds did
        (their development loss 0.090 → 0.082).
    fine_tune_patience : int
        Rounds without improvement of the rare classes' development loss before it stops.
    rare_classes : sequence of str
        Classes split 60/20/20 and kept whole in fine-tuning.
    class_column : str
        ``spectra.info`` column with each star's class; without it (and without
        ``fit(..., classes=)``) classes come from the labels (:func:`star_classes`).
    split, rare_split : (train, dev, test) fractions
        The test rows are held out of training (``split_["test"]``); use ``(0.9, 0.1, 0)``
        to train on everything but the development set.
    target_scaling : {"published", "training"}
        z-score the targets with the paper's constants (:data:`TARGET_SCALING`; they were
        the papers' training-set statistics) or with this training set's mean and std.
    flux_scaling : {"median", "raw"}
        ``"median"``: each spectrum (flux and errors) is divided by its median flux
        (:func:`flux_levels`) before the network, which removes the brightness and keeps the
        shape. ``"raw"``: the papers' input, the apStar flux as it is (the published weights
        need it; :meth:`from_published` sets it). Measured on 1,200 mock apStar spectra (levels
        13 to 54,000), 12 epochs: best development loss 0.06 with ``"median"`` against 0.52
        with ``"raw"`` (Teff σ_MAD 103 K against 334 K; logg 0.16 against 0.61).
    epochs : int
        Maximum epochs per training stage.
    batch_size : int
        Spectra per optimizer step (papers: 128).
    learning_rate : float, optional
        Adam's initial learning rate (halved after 3 epochs without improvement); the papers'
        values, 1e-3 (v1) and 7.5e-4 (v2), although they came with SGD (v1) and Adamax (v2).
        With median-scaled flux Adam learns at these rates (1,200 mock spectra, 12 epochs:
        Teff σ_MAD 75 K at 1e-3, 103 K at 3e-4); with raw flux they stalled or diverged.
    layer_learning_rates : {"uniform", "fan-in"}
        ``"uniform"``: one rate for every layer, as in the papers. ``"fan-in"`` multiplies each
        layer's rate by ``min(1, 16 / fan_in)`` (Adam moves every weight by about the rate
        whatever the layer's width, so a step shifts the 8512-input ``fc1`` far more than a
        3-tap convolution). Measured with raw flux: fan-in rates overfit a dozen toy spectra
        where one rate could not, but on 2,500 mock spectra they stalled at the constant
        predictor (dev loss 2.65 after 4 epochs) while one rate of 3e-4 learned (1.88); hence
        the default.
    dropout : float, optional
        Dropout after ``fc1`` and ``fc2`` during training.
    early_stopping_patience : int
        Epochs without improvement of the development loss (papers: 5).
    n_draws : int, optional
        Noise realisations per spectrum at prediction (v1: 100, v2: 20; 0 or 1: none).
    error_clip : float
        Errors are clipped at this multiple of the spectrum's median error.
    outside_distance : float
        Labels farther than this (in standardised target units) from every training star
        are flagged ``outside_training_set``.
    low_snr : float
        Spectra with SNR below this are flagged ``low_snr``.
    calibrate_uncertainty : bool
        Fit a scale of the noise spread and a floor per label on the held-out development
        stars at the end of training (see the module notes); False: the papers'
        noise spread alone.
    random_state : int
        Seed of the weights, splits, shuffling and noise draws.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    draw_batch_size : int, optional
        Spectra per inference chunk (all their draws in one tensor); default from memory.
    checkpoint_dir : str, optional
        Training checkpoints (one sub-folder per stage); Ctrl-C saves, ``fit`` again resumes.
    progress : bool
        Progress bars while training.

    Examples
    --------
    >>> ApogeeNet(version=1).get_params()["version"], ApogeeNet().resolved("n_draws")
    (1, 20)
    """

    # The conformance toy (48 spectra, constant flux level, smooth label patterns) is far from
    # survey spectra: balanced targets, no photometry branch and plain weights make a few epochs
    # enough there. Measured over random_state 0-12: Teff correlation 0.90-1.00 with these
    # settings; 0.09-0.98 with the earlier 3e-4 and fan-in rates, which failed seeds 1 (raw flux) and 11.
    quick_hyperparameters = {"epochs": 6, "batch_size": 4, "learning_rate": 1e-3, "n_draws": 3,
                             "early_stopping_patience": 6, "fine_tune_rounds": 0, "split": (0.85, 0.15, 0.0),
                             "target_scaling": "training", "use_photometry": False, "weighting": "uniform",
                             "dropout": 0.0, "progress": False}
    conformance_n_pixels = APOGEE_N_PIXELS
    conformance_wavelength = apogee_wavelength()

    def __init__(self, version: int = 2, use_photometry: bool | None = None, weighting: str | None = None,
                 kde_bandwidth: float = KDE_BANDWIDTH, weight_cap: float = WEIGHT_CAP,
                 fine_tune_rounds: int | None = None, fine_tune_fraction: float = 0.05, fine_tune_patience: int = 2,
                 fine_tune_learning_rate: float | None = None,
                 rare_classes: Sequence[str] = RARE_CLASSES, class_column: str = "STAR_CLASS",
                 split=(0.8, 0.1, 0.1), rare_split=(0.6, 0.2, 0.2), target_scaling: str = "published",
                 flux_scaling: str = "median",
                 epochs: int = 100, batch_size: int = 128,
                 learning_rate: float | None = None, layer_learning_rates: str = "uniform",
                 dropout: float | None = None, early_stopping_patience: int = 5,
                 n_draws: int | None = None, error_clip: float = 5.0, outside_distance: float = 0.5,
                 low_snr: float = 20.0, calibrate_uncertainty: bool = True, random_state: int = 0,
                 device: str = "auto",
                 draw_batch_size: int | None = None, checkpoint_dir: str | None = None, progress: bool = True):
        self.version = version
        self.use_photometry = use_photometry
        self.weighting = weighting
        self.kde_bandwidth = kde_bandwidth
        self.weight_cap = weight_cap
        self.fine_tune_rounds = fine_tune_rounds
        self.fine_tune_fraction = fine_tune_fraction
        self.fine_tune_patience = fine_tune_patience
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.rare_classes = rare_classes
        self.class_column = class_column
        self.split = split
        self.rare_split = rare_split
        self.target_scaling = target_scaling
        self.flux_scaling = flux_scaling
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.layer_learning_rates = layer_learning_rates
        self.dropout = dropout
        self.early_stopping_patience = early_stopping_patience
        self.n_draws = n_draws
        self.error_clip = error_clip
        self.outside_distance = outside_distance
        self.low_snr = low_snr
        self.calibrate_uncertainty = calibrate_uncertainty
        self.random_state = random_state
        self.device = device
        self.draw_batch_size = draw_batch_size
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress

    # ------------------------------------------------------------------ settings
    def _version(self) -> int:
        if self.version not in VERSION_DEFAULTS:
            raise LabelExplorerError(f"version: expected 1 (APOGEE Net I) or 2 (APOGEE Net II), got {self.version!r}")
        return int(self.version)

    def resolved(self, name: str):
        """A hyperparameter's value, or its version's default when it is None."""
        value = getattr(self, name)
        return VERSION_DEFAULTS[self._version()][name] if value is None else value

    def _scaling(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the three outputs, in OUTPUT_ORDER."""
        return self.target_mean_, self.target_std_

    def _set_scaling(self, values: np.ndarray, names: list[str]) -> None:
        """The papers' constants, or (``target_scaling="training"``) this training set's statistics."""
        table = np.array(TARGET_SCALING[self.version_], dtype=np.float64)
        self.target_mean_, self.target_std_ = table[:, 0].copy(), table[:, 1].copy()
        if self.target_scaling == "published":
            return
        if self.target_scaling != "training":
            raise LabelExplorerError(f"target_scaling: expected 'published' or 'training', got {self.target_scaling!r}")
        for j, name in enumerate(OUTPUT_ORDER):
            if name in names:
                column = values[:, names.index(name)]
                column = np.log10(column) if name == "TEFF" and self.version_ == 2 else column
                column = column[np.isfinite(column)]
                self.target_mean_[j] = column.mean()
                self.target_std_[j] = column.std() if column.std() > 0 else 1.0

    # ------------------------------------------------------------------ inputs
    def prepare(self, spectra):
        """Raw 8575-pixel flux with NaN → 0 (idempotent; no normalisation, by design).

        Examples
        --------
        >>> from labelexplorer.preprocess.grid import apogee_wavelength
        >>> flux = np.ones((1, 8575)); flux[0, :3] = np.nan
        >>> spec = ApogeeNet().prepare(Spectra(flux, apogee_wavelength()))
        >>> spec.flux[0, :4].tolist(), bool(spec.mask[0, 0])
        ([0.0, 0.0, 0.0, 1.0], True)
        """
        spectra = _check_spectra(spectra)
        if not np.isnan(spectra.flux).any():
            return spectra
        return spectra.replace(flux=np.nan_to_num(spectra.flux, nan=0.0), mask=spectra.mask,
                               step="apogee-net: raw flux, NaN -> 0")

    def _inputs(self, spectra: Spectra, use_photometry: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Network flux (n, 8575), the divisor applied to each spectrum (n,), normalised metadata (n, 7) or None."""
        flux = np.nan_to_num(spectra.flux, nan=0.0).astype(np.float32)
        scale = self._flux_scale(spectra)
        flux /= scale[:, None]
        if not use_photometry:
            return flux, scale, None
        raw, absent = metadata_features(spectra)
        if len(absent) == len(METADATA_COLUMNS):
            warnings.warn("apogee-net: spectra.info has none of the photometry/parallax columns "
                          f"({', '.join(METADATA_COLUMNS)}); the photometry branch sees only missing values. "
                          "Add them with labelexplorer.models.apogee_net.attach_photometry(spectra, allstar_table).",
                          UserWarning, stacklevel=4)
        return flux, scale, normalise_metadata(raw, self.metadata_fill_, self.metadata_mean_, self.metadata_std_)

    def _flux_scale(self, spectra: Spectra) -> np.ndarray:
        """Per-spectrum divisor of the flux: its median level (``flux_scaling="median"``) or 1 (``"raw"``)."""
        if self.flux_scaling not in ("median", "raw"):
            raise LabelExplorerError(f"flux_scaling: expected 'median' or 'raw', got {self.flux_scaling!r}")
        if self.flux_scaling == "raw":
            return np.ones(len(spectra), dtype=np.float32)
        levels = flux_levels(spectra)
        return np.where(np.isfinite(levels), levels, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ training
    def fit(self, spectra, labels, label_errors=None, *, classes=None, callbacks=()) -> "ApogeeNet":
        """Train on raw apStar spectra and a label table of TEFF, LOGG, FE_H (any subset).

        Parameters
        ----------
        spectra : Spectra
            8575-pixel raw flux; for v2 with photometry columns in ``info``.
        labels : table
            Any table :func:`labelexplorer.labels.label_array` reads; -9999 / NaN are missing.
        label_errors : ignored
            The papers' MSE loss has no place for label uncertainties.
        classes : array_like of str, optional
            One class per spectrum for the splits and the stratified fine-tuning (default:
            ``spectra.info[class_column]``, else :func:`star_classes` of the labels).
        callbacks : sequence of callables
            Called with each epoch's record (epoch, loss, val_loss, lr, stage).

        Returns
        -------
        self
        """
        self._classes, self._callbacks = classes, tuple(callbacks)
        try:
            return super().fit(spectra, labels, label_errors)
        finally:
            del self._classes, self._callbacks

    def _check_labels(self, values: np.ndarray, names: list[str]) -> None:
        unknown = [name for name in names if name not in LABELS]
        if unknown:
            raise LabelError(f"apogee-net predicts {', '.join(LABELS)} (any subset); cannot learn {unknown}: pass "
                             "only those columns, e.g. labels[['TEFF', 'LOGG', 'FE_H']]")
        if len(set(names)) != len(names):
            raise LabelError(f"labels: each label once, got {names}")
        for j, name in enumerate(names):
            if np.isfinite(values[:, j]).sum() < 2:
                raise LabelError(f"label {name!r}: fewer than 2 training spectra have a known value; cannot fit")
        if "TEFF" in names:
            teff = values[:, names.index("TEFF")]
            if np.any(teff[np.isfinite(teff)] <= 0):
                raise LabelError("label 'TEFF': expected temperatures > 0 K")

    def _targets(self, values: np.ndarray, names: list[str]) -> np.ndarray:
        """Standardised targets (n, 3) in OUTPUT_ORDER; NaN where missing or not trained."""
        mean, std = self._scaling()
        z = np.full((len(values), len(OUTPUT_ORDER)), np.nan)
        for j, name in enumerate(OUTPUT_ORDER):
            if name in names:
                column = values[:, names.index(name)]
                if name == "TEFF" and self.version_ == 2:
                    column = np.log10(column)
                z[:, j] = (column - mean[j]) / std[j]
        return z

    def _star_classes(self, spectra: Spectra, values: np.ndarray, names: list[str]) -> np.ndarray:
        given = getattr(self, "_classes", None)
        if given is None and self.class_column in spectra.info:
            given = spectra.info[self.class_column]
        if given is not None:
            given = np.asarray(given).astype(str)
            if given.shape != (len(spectra),):
                raise ShapeError(f"classes: expected one class per spectrum ({len(spectra)}), got shape {given.shape}")
            return given
        if "TEFF" in names and "LOGG" in names:
            return star_classes(values[:, names.index("TEFF")], values[:, names.index("LOGG")]).astype(str)
        return np.full(len(spectra), "all")

    def _loss(self, network: nn.Module, batch: dict) -> torch.Tensor:
        """Weighted MSE over the known targets (a missing label contributes nothing)."""
        prediction = network(batch["x"], batch.get("m"))
        known, weight = batch["known"], batch["w"][:, None]
        squared = (prediction - batch["y"]) ** 2 * known
        return (weight * squared).sum() / (weight * known).sum().clamp_min(1e-12)

    def _settings(self, description: str, seed: int, stage: str, learning_rate: float) -> TrainingSettings:
        checkpoint = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / stage
        return TrainingSettings(epochs=self.epochs, batch_size=self.batch_size,
                                learning_rate=float(learning_rate), validation_fraction=0.0,
                                lr_patience=3, early_stopping_patience=self.early_stopping_patience, seed=seed,
                                checkpoint_dir=checkpoint, progress=self.progress, description=description)

    def _fingerprint(self, *arrays, fine_tuning: bool = True) -> str:
        """Hash of the data and of the settings that shape training (all but the fine-tuning ones when
        *fine_tuning* is False: the all-star stage does not depend on them, so its checkpoint serves
        a run that differs only in fine-tuning, e.g. with and without it)."""
        ignored = {"progress", "device", "draw_batch_size", "checkpoint_dir", "n_draws", "error_clip",
                   "calibrate_uncertainty", "outside_distance", "low_snr"}
        if not fine_tuning:
            ignored |= {"fine_tune_rounds", "fine_tune_fraction", "fine_tune_patience", "fine_tune_learning_rate"}
        settings = {k: v for k, v in self.get_params().items() if k not in ignored}
        text = json.dumps(settings, sort_keys=True, default=str).encode()
        return dataset_hash(*arrays, np.frombuffer(text, np.uint8))

    def _fit(self, spectra, values, names, errors):
        self.version_ = self._version()
        self._check_labels(values, names)
        self._set_scaling(values, names)
        spectra = self.prepare(spectra)
        self.use_photometry_ = bool(self.resolved("use_photometry"))
        self.metadata_fill_, self.metadata_mean_, self.metadata_std_ = METADATA_FILL, METADATA_MEAN, METADATA_STD
        flux, _, metadata = self._inputs(spectra, self.use_photometry_)
        targets = self._targets(values, names)
        classes = self._star_classes(spectra, values, names)
        split = split_stars(classes, rare_classes=self.rare_classes, split=self.split, rare_split=self.rare_split,
                            seed=self.random_state)
        weights = self._weights(targets, split["train"])
        data = {"x": torch.as_tensor(flux), "y": torch.as_tensor(np.nan_to_num(targets).astype(np.float32)),
                "known": torch.as_tensor(np.isfinite(targets).astype(np.float32)),
                "w": torch.as_tensor(weights.astype(np.float32))}
        if metadata is not None:
            data["m"] = torch.as_tensor(metadata)
        device = self._torch_device()
        if sum(t.numel() * 4 for t in data.values()) < memory_budget(device):
            data = {key: value.to(device) for key, value in data.items()}
        arrays = (flux, targets, weights, classes.astype("U"), np.zeros(0) if metadata is None else metadata)
        with forked_rng(device):
            torch.manual_seed(self.random_state)
            network = ApogeeNetNetwork(self.use_photometry_, self.resolved("dropout"))
            initialise_network(network, _typical_flux(flux[split["train"]]))
            network = network.to(device)
            _calibrate_outputs(network, data, split["train"], self.random_state)
            if self.progress:
                print(f"apogee-net v{self.version_}: {n_parameters(network):,} parameters, {len(flux)} spectra "
                      f"(train {split['train'].size}, dev {split['dev'].size}, test {split['test'].size}), "
                      f"weights {self.resolved('weighting')}, device {device}")
            history = self._train_stage(network, data, split["train"], split["dev"], "all", self.random_state,
                                        self._fingerprint(*arrays, fine_tuning=False), "all stars",
                                        float(self.resolved("learning_rate")))
            final_rate = history[-1]["lr"] if history else float(self.resolved("learning_rate"))
            rate = final_rate if self.fine_tune_learning_rate is None else float(self.fine_tune_learning_rate)
            history += self._fine_tune(network, data, split, classes, self._fingerprint(*arrays), rate)
        network.eval()
        self.network_ = network
        self.history_ = history
        self.split_ = split
        self.training_format_ = str(spectra.meta.get("format", ""))
        self.flux_range_ = self._flux_range(spectra, split["train"])
        reference = targets[split["train"]]
        if len(reference) > _MAX_REFERENCE:
            reference = reference[np.random.default_rng(self.random_state).choice(len(reference), _MAX_REFERENCE,
                                                                                  replace=False)]
        self.training_targets_ = reference.astype(np.float32)
        self.training_hash_ = dataset_hash(flux, values)
        self.label_names_ = list(names)  # what predict needs for the calibration (fit sets it again)
        # on the development stars (the test stars stay clean for the user's own checks)
        dev = split["dev"]
        truth = values[np.ix_(dev, [names.index(name) for name in self.label_names_])]
        self._fit_calibration(spectra[dev], truth, fit=self.calibrate_uncertainty)

    def calibrate(self, spectra, labels) -> "ApogeeNet":
        """Refit the uncertainty calibration on held-out labelled spectra; returns self.

        Training fits it on its development stars; published weights come
        without one. Any spectra with reference labels that the network never trained on
        serve, the more the better (a few hundred pin a factor to ~±10 %).

        Parameters
        ----------
        spectra : Spectra
            Held-out spectra, as for :meth:`predict`.
        labels : table
            Reference labels with at least every label of the model; -9999 / NaN skipped.

        Returns
        -------
        self

        Examples
        --------
        >>> from labelexplorer.preprocess.grid import apogee_wavelength
        >>> rng = np.random.default_rng(0)
        >>> teff = rng.uniform(4000.0, 5000.0, 60)
        >>> flux = 1.0 - 0.1 * np.outer(teff / 5000.0, np.ones(8575)) + rng.normal(0, 0.01, (60, 8575))
        >>> spectra = Spectra(flux, apogee_wavelength(), error=np.full(flux.shape, 0.01))
        >>> labels = {"TEFF": teff, "LOGG": np.full(60, 2.5), "FE_H": np.zeros(60)}
        >>> model = ApogeeNet(**ApogeeNet.quick_hyperparameters).fit(spectra[:40], {k: v[:40] for k, v in labels.items()})
        >>> model.calibrate(spectra[40:], {k: v[40:] for k, v in labels.items()}).uncertainty_scale_.shape
        (3,)
        """
        self._check_fitted("be calibrated")
        self._fit_calibration(spectra, self._reference_labels(spectra, labels)[0], fit=True)
        return self

    def _fit_calibration(self, spectra: Spectra, truth: np.ndarray, *, fit: bool) -> None:
        """Set ``uncertainty_scale_`` and ``uncertainty_floor_`` (per label; Teff's floor in dex of Teff)
        from *spectra* and their labels *truth* in this model's label order."""
        n_labels = len(self.label_names_)
        self.uncertainty_scale_, self.uncertainty_floor_ = np.ones(n_labels), np.zeros(n_labels)
        if not fit or len(spectra) == 0:
            return
        prediction = self._predict(spectra)
        for j, name in enumerate(self.label_names_):
            # without noise draws (n_draws 0 or no errors) the floor alone
            spread = np.nan_to_num(prediction.predictive_std[:, j])
            residual, std = _calibration_space(name, prediction.mean[:, j], spread, truth[:, j])
            scale, floor = uncertainty_calibration(residual, std)
            if np.isfinite(scale) and np.isfinite(floor):
                self.uncertainty_scale_[j], self.uncertainty_floor_[j] = scale, floor

    def _weights(self, targets: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
        weighting = self.resolved("weighting")
        if weighting not in ("kde", "uniform"):
            raise LabelExplorerError(f"weighting: expected 'kde' or 'uniform', got {weighting!r}")
        plane = [j for j, name in enumerate(OUTPUT_ORDER) if name in ("TEFF", "LOGG")]
        coordinates = targets[:, plane]
        known_columns = np.isfinite(coordinates).any(axis=0)
        if weighting == "uniform" or not known_columns.any():
            return np.ones(len(targets))
        return kde_weights(coordinates[:, known_columns], bandwidth=self.kde_bandwidth, cap=self.weight_cap,
                           fit_rows=train_rows, seed=self.random_state)

    def _train_stage(self, network, data, train_rows, dev_rows, stage: str, seed: int, fingerprint: str,
                     what: str, learning_rate: float) -> list[dict]:
        description = f"apogee-net v{self.version_} ({what})"
        callbacks = [lambda record, call=call: call({**record, "stage": stage})
                     for call in getattr(self, "_callbacks", ())]
        result = train(network, self._loss, data, self._settings(description, seed, stage, learning_rate),
                       device=next(network.parameters()).device, callbacks=callbacks,
                       fingerprint=f"{fingerprint}-{stage}", rows=(train_rows, dev_rows),
                       parameter_groups=self._parameter_groups(network))
        return [{**record, "stage": stage} for record in result.history]

    def _parameter_groups(self, network: nn.Module) -> list[dict] | None:
        """One optimizer group per layer, its learning rate scaled by min(1, 16 / fan_in)."""
        if self.layer_learning_rates == "uniform":
            return None
        if self.layer_learning_rates != "fan-in":
            raise LabelExplorerError(f"layer_learning_rates: expected 'fan-in' or 'uniform', got "
                                     f"{self.layer_learning_rates!r}")
        return [{"params": list(layer.parameters()), "lr_scale": min(1.0, _FAN_IN_REFERENCE / layer.weight[0].numel())}
                for layer in network.modules() if isinstance(layer, (nn.Conv1d, nn.Linear))]

    def _rows_loss(self, network, data, rows: np.ndarray) -> float:
        """The weighted MSE over *rows*, dropout off."""
        network.eval()
        total, weight = 0.0, 0.0
        with torch.no_grad():
            for start in range(0, rows.size, 256):
                index = torch.as_tensor(rows[start:start + 256], device=data["x"].device)
                batch = {key: value[index] for key, value in data.items()}
                prediction = network(batch["x"], batch.get("m"))
                w = batch["w"][:, None] * batch["known"]
                total += float((w * (prediction - batch["y"]) ** 2).sum())
                weight += float(w.sum())
        network.train()
        return total / weight if weight > 0 else math.nan

    def _fine_tune(self, network, data, split, classes, fingerprint: str, learning_rate: float) -> list[dict]:
        """Paper 002 §3.4: rare classes + a fresh 5 % of the common class per round, best model reloaded."""
        rounds = int(self.resolved("fine_tune_rounds"))
        rare = np.isin(classes, list(self.rare_classes))
        train_rows, dev_rows = split["train"], split["dev"]
        rare_train, common_train = train_rows[rare[train_rows]], train_rows[~rare[train_rows]]
        if rounds <= 0 or rare_train.size == 0 or common_train.size == 0:
            return []
        watched = dev_rows[rare[dev_rows]] if rare[dev_rows].any() else dev_rows
        best_loss, best_state = self._rows_loss(network, data, watched), module_tensors(network)
        history, waited = [], 0
        n_common = max(1, int(round(self.fine_tune_fraction * common_train.size)))
        for round_number in range(1, rounds + 1):
            drawn = np.random.default_rng([self.random_state, round_number]).choice(common_train, n_common,
                                                                                   replace=False)
            rows = np.sort(np.concatenate([rare_train, drawn]))
            stage = f"round-{round_number:02d}"
            history += self._train_stage(network, data, rows, dev_rows, stage, self.random_state + 1000 * round_number,
                                         fingerprint, f"fine-tuning round {round_number}", learning_rate)
            loss = self._rows_loss(network, data, watched)
            history.append({"stage": stage, "rare_dev_loss": loss})
            if loss < best_loss - 1e-4:
                best_loss, best_state, waited = loss, module_tensors(network), 0
            else:
                waited += 1
                if waited >= self.fine_tune_patience:
                    break
        network.load_state_dict({key: value.to(next(network.parameters()).device) for key, value in best_state.items()})
        return history

    @staticmethod
    def _flux_range(spectra: Spectra, rows: np.ndarray) -> np.ndarray:
        """log10 flux levels spanned by the training spectra *rows*, widened by a margin."""
        levels = np.log10(flux_levels(spectra)[rows])
        levels = levels[np.isfinite(levels)]
        if levels.size == 0:
            return np.array([np.nan, np.nan])
        low, high = np.percentile(levels, [0.5, 99.5])
        return np.array([low - _FLUX_MARGIN_DEX, high + _FLUX_MARGIN_DEX])

    # ------------------------------------------------------------------ published weights
    @classmethod
    def from_published(cls, path, **hyperparameters) -> "ApogeeNet":
        """Load the published APOGEE Net weights (``model.pt``, a plain ``state_dict``).

        The version follows from the keys: ``metadata.l1``…``l5`` present → APOGEE Net II
        (outputs [logg, log10 Teff, Fe/H], v2 scaling), else APOGEE Net I (the same output
        order with linear Teff and v1 scaling is assumed). The input is the raw flux
        (``flux_scaling="raw"``), as the papers trained. Loading is safe: tensors only
        (``torch.load(..., weights_only=True)``), never pickled code.

        Parameters
        ----------
        path : path-like
        **hyperparameters
            Inference settings (``n_draws``, ``device``, ``random_state``...).

        Raises
        ------
        ModelFileError
            Missing or unreadable file, not a plain state_dict, wrong keys or shapes.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> torch.save(ApogeeNetNetwork(use_metadata=True).state_dict(), path)
        >>> model = ApogeeNet.from_published(path, n_draws=2)
        >>> model.version, model.flux_scaling, model.label_names_
        (2, 'raw', ['TEFF', 'LOGG', 'FE_H'])
        """
        path = Path(path)
        state = _read_state_dict(path)
        version = 2 if any(key.startswith("metadata.") for key in state) else 1
        if hyperparameters.get("version", version) != version:
            raise ModelFileError(f"{path}: holds APOGEE Net {'I' * version} weights, not version "
                                 f"{hyperparameters['version']}")
        photometry = hyperparameters.get("use_photometry")
        if photometry is not None and bool(photometry) != (version == 2):
            raise ModelFileError(f"{path}: use_photometry={photometry} contradicts the weights (version {version})")
        if hyperparameters.get("flux_scaling", "raw") != "raw":
            raise ModelFileError(f"{path}: the published weights were trained on raw apStar flux; "
                                 f"flux_scaling={hyperparameters['flux_scaling']!r} would feed them another input")
        hyperparameters.update(version=version, flux_scaling="raw")
        model = cls(**hyperparameters)
        network = ApogeeNetNetwork(use_metadata=version == 2)
        _load_network_state(network, state, path)
        model.version_ = version
        model.target_mean_, model.target_std_ = (np.array(TARGET_SCALING[version], dtype=np.float64)[:, k]
                                                 for k in (0, 1))
        model.use_photometry_ = version == 2
        model.metadata_fill_, model.metadata_mean_, model.metadata_std_ = METADATA_FILL, METADATA_MEAN, METADATA_STD
        model.network_ = network.to(model._torch_device()).eval()
        model.history_, model.training_format_ = [], "apstar"
        model.flux_range_ = np.array([np.nan, np.nan])
        model.training_targets_ = None
        model.split_ = {part: np.zeros(0, dtype=np.int64) for part in ("train", "dev", "test")}
        model.label_names_ = list(LABELS)
        model.uncertainty_scale_, model.uncertainty_floor_ = np.ones(len(LABELS)), np.zeros(len(LABELS))
        model.training_hash_ = "published:" + dataset_hash(np.frombuffer(path.read_bytes(), np.uint8))
        return model

    @property
    def is_published(self) -> bool:
        """True for a model loaded with :meth:`from_published` (no training set known)."""
        return self.is_fitted and self.training_targets_ is None

    # ------------------------------------------------------------------ inference
    def _draw_chunk(self, n_draws: int, device: torch.device) -> int:
        if self.draw_batch_size:
            return int(self.draw_batch_size)
        draws = max(n_draws, 1)
        per_spectrum = draws * APOGEE_N_PIXELS * _FLOATS_PER_DRAW_PIXEL * 4
        return rows_per_chunk(per_spectrum, device, maximum=max(1, _MAX_DRAW_ROWS.get(device.type, 16) // draws))

    def _outputs(self, flux: np.ndarray, error: np.ndarray | None, metadata: np.ndarray | None,
                 ids: Sequence[str], n_draws: int) -> np.ndarray:
        """Standardised network outputs (n, draws, 3); one noiseless pass when *error* is None."""
        device = self._torch_device()
        network = self.network_.to(device).eval()
        seeds = draw_seeds(ids, self.random_state)

        def run(rows: slice) -> np.ndarray:
            x = torch.as_tensor(flux[rows], device=device)
            m = None if metadata is None else torch.as_tensor(metadata[rows], device=device)
            with torch.no_grad():
                if error is None:
                    return network(x, m)[:, None, :].cpu().numpy()
                e = torch.as_tensor(error[rows], device=device)
                return draw_outputs(network, x, e, m, n_draws, seeds[rows]).cpu().numpy()

        draws = n_draws if error is not None else 1
        return np.concatenate(run_in_chunks(run, len(flux), self._draw_chunk(draws, device)))

    def _physical(self, z):
        """Standardised outputs (..., 3) → (logg, Teff, Fe/H) in physical units (numpy or torch)."""
        mean, std = self._scaling()
        logg, teff, feh = (z[..., j] * float(std[j]) + float(mean[j]) for j in range(3))
        if self.version_ == 2:
            teff = 10.0 ** teff
        return logg, teff, feh

    def _predict(self, spectra):
        spectra = self.prepare(spectra)
        self._check_format(spectra)
        flux, scale, metadata = self._inputs(spectra, self.use_photometry_)
        n_draws = int(self.resolved("n_draws"))
        use_draws = spectra.has_errors and n_draws >= 1
        error = clipped_errors(flux, spectra.error / scale[:, None], self.error_clip) if use_draws else None
        z = self._outputs(flux, error, metadata, spectra.ids, n_draws).astype(np.float64)
        physical = dict(zip(OUTPUT_ORDER, self._physical(z)))
        columns = [physical[name] for name in self.label_names_]
        samples = np.stack(columns, axis=-1)  # (n, draws, labels)
        mean = np.median(samples, axis=1)
        std = samples.std(axis=1, ddof=1) if samples.shape[1] > 1 else np.full(mean.shape, np.nan)
        flags = self._flags(spectra, mean, z)
        scale, floor = self.uncertainty_scale_, self.uncertainty_floor_
        std = std * scale
        # Teff's floor is relative (dex of Teff), the others' in their own units; none fitted: unknown
        model_std = np.stack([mean[:, j] * np.log(10.0) * floor[j] if name == "TEFF" else
                              np.full(len(mean), floor[j]) for j, name in enumerate(self.label_names_)], axis=1)
        model_std[:, floor == 0] = np.nan
        if "TEFF" in self.label_names_ and "FE_H" in self.label_names_:
            hot = flags["feh_not_reported"]
            column = self.label_names_.index("FE_H")
            mean[hot, column] = np.nan
            std[hot, column] = np.nan
            model_std[hot, column] = np.nan
        meta = {"model": self.name, "version": self.version_, "n_draws": samples.shape[1] if use_draws else 0,
                "photometry": self.use_photometry_, "published": self.is_published}
        return LabelPrediction(self.label_names_, mean, model_std, std, ids=spectra.ids, flags=flags, meta=meta)

    def _check_format(self, spectra: Spectra) -> None:
        trained, given = self.training_format_, str(spectra.meta.get("format", ""))
        if trained and given and trained != given:
            raise SpectrumError(f"spectra: this model was trained on {trained} flux but got {given} spectra; "
                                "APOGEE Net takes the raw apStar flux (labelexplorer.read(apStar files))")

    def _flags(self, spectra: Spectra, mean: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
        from ..analysis.selection import in_polygon, label_distance

        n = len(spectra)
        value = {name: mean[:, j] for j, name in enumerate(self.label_names_)}
        nan = np.full(n, np.nan)
        teff, logg = value.get("TEFF", nan), value.get("LOGG", nan)
        with np.errstate(invalid="ignore"):
            feh_hidden = teff > FEH_MAX_TEFF
            unphysical = np.zeros(n, dtype=bool)
            for name, (low, high) in PHYSICAL_RANGES.items():
                if name in value:
                    unphysical |= (value[name] < low) | (value[name] > high)
            low_snr = np.asarray(spectra.snr, dtype=float) < self.low_snr
        outside = self._outside_inputs(spectra)
        watched = [OUTPUT_ORDER.index(name) for name in self.label_names_]
        if self.training_targets_ is not None:
            distance = label_distance(np.median(z, axis=1)[:, watched], self.training_targets_[:, watched], 1.0)
            outside |= distance > self.outside_distance
        else:
            for name, (low, high) in PUBLISHED_LABEL_BOX.items():
                if name in value:
                    with np.errstate(invalid="ignore"):
                        outside |= (value[name] < low) | (value[name] > high)
        return {"outside_training_set": outside, "outside_physical_range": unphysical,
                "feh_not_reported": feh_hidden, "yso_candidate": in_polygon(teff, logg, YSO_POLYGON),
                "low_snr": low_snr}

    def _outside_inputs(self, spectra: Spectra) -> np.ndarray:
        """Spectra with no usable flux, or (raw flux only) a flux level outside the training spectra's.

        With ``flux_scaling="median"`` the network never sees the level, so a star brighter or
        fainter than the training stars is not outside what it learned.
        """
        levels = np.log10(flux_levels(spectra))
        low, high = self.flux_range_
        if self.flux_scaling != "raw" or not np.isfinite(low):
            return ~np.isfinite(levels)
        with np.errstate(invalid="ignore"):
            return ~np.isfinite(levels) | (levels < low) | (levels > high)

    # ------------------------------------------------------------------ sensitivity
    def _sensitivity(self, spectra, label):
        """Mean d label / d flux (label units per flux unit) of the noiseless network; masked pixels 0.

        With ``flux_scaling="median"`` the derivative is taken with each spectrum's level held fixed.
        """
        spectra = self.prepare(spectra)
        flux, scale, metadata = self._inputs(spectra, self.use_photometry_)
        device = self._torch_device()
        network = self.network_.to(device).eval()
        column = OUTPUT_ORDER.index(label)

        def gradient(rows: slice) -> np.ndarray:
            x = torch.as_tensor(flux[rows], device=device).requires_grad_(True)
            m = None if metadata is None else torch.as_tensor(metadata[rows], device=device)
            value = self._physical(network(x, m))[column]
            (grad,) = torch.autograd.grad(value.sum(), x)
            return grad.cpu().numpy()

        grads = np.concatenate(run_in_chunks(gradient, len(flux), self._draw_chunk(3, device))) / scale[:, None]
        grads[spectra.mask] = 0.0
        return grads.mean(axis=0)

    # ------------------------------------------------------------------ persistence
    def _config_extra(self) -> dict:
        return {"version": self.version_, "use_photometry": self.use_photometry_,
                "target_mean": self.target_mean_.tolist(), "target_std": self.target_std_.tolist(),
                "output_order": list(OUTPUT_ORDER),
                "metadata_columns": list(METADATA_COLUMNS), "metadata_fill": self.metadata_fill_.tolist(),
                "metadata_mean": self.metadata_mean_.tolist(), "metadata_std": self.metadata_std_.tolist(),
                "training_format": self.training_format_,
                "uncertainty_scale": self.uncertainty_scale_.tolist(),
                "uncertainty_floor": self.uncertainty_floor_.tolist(),
                "flux_range": [_json_float(float(v)) for v in self.flux_range_],
                "n_parameters": n_parameters(self.network_), "published": self.is_published,
                "history": [{k: (_json_float(float(v)) if isinstance(v, (int, float)) else v) for k, v in r.items()}
                            for r in self.history_]}

    def _load_config_extra(self, extra: dict) -> None:
        try:
            self.version_ = int(extra["version"])
            self.use_photometry_ = bool(extra["use_photometry"])
            self.target_mean_ = np.asarray(extra["target_mean"], dtype=np.float64)
            self.target_std_ = np.asarray(extra["target_std"], dtype=np.float64)
            self.metadata_fill_ = np.asarray(extra["metadata_fill"], dtype=np.float64)
            self.metadata_mean_ = np.asarray(extra["metadata_mean"], dtype=np.float64)
            self.metadata_std_ = np.asarray(extra["metadata_std"], dtype=np.float64)
            self.training_format_ = str(extra.get("training_format", ""))
            # models saved before the calibration, and published weights: the noise spread alone
            n_labels = len(getattr(self, "label_names_", OUTPUT_ORDER))
            self.uncertainty_scale_ = np.asarray(extra.get("uncertainty_scale", np.ones(n_labels)), dtype=np.float64)
            self.uncertainty_floor_ = np.asarray(extra.get("uncertainty_floor", np.zeros(n_labels)), dtype=np.float64)
            self.flux_range_ = np.array([np.nan if v is None else float(v) for v in extra["flux_range"]])
            self._published = bool(extra.get("published", False))
            self.history_ = list(extra.get("history", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"apogee-net config.json: missing or bad entry ({exc})") from exc
        lengths_ok = (all(a.shape == (len(METADATA_COLUMNS),) for a in
                          (self.metadata_fill_, self.metadata_mean_, self.metadata_std_))
                      and self.target_mean_.shape == self.target_std_.shape == (len(OUTPUT_ORDER),))
        if self.version_ not in TARGET_SCALING or not lengths_ok:
            raise ModelFileError("apogee-net config.json: unknown version, or target / metadata constants of the "
                                 "wrong length")

    def _save_weights(self, directory: Path) -> None:
        tensors = {f"network.{k}": v for k, v in module_tensors(self.network_).items()}
        for part, rows in self.split_.items():
            tensors[f"split.{part}"] = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.int64))
        if self.training_targets_ is not None:
            tensors["training_targets"] = torch.as_tensor(np.ascontiguousarray(self.training_targets_))
        save_file(tensors, str(directory / "model.safetensors"))

    def _load_weights(self, directory: Path) -> None:
        path = Path(directory) / "model.safetensors"
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: unreadable APOGEE Net weights ({exc})") from exc
        state = {k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")}
        network = ApogeeNetNetwork(self.use_photometry_)
        _load_network_state(network, state, path)
        self.network_ = network.to(self._torch_device()).eval()
        self.split_ = {part: tensors.get(f"split.{part}", torch.zeros(0, dtype=torch.int64)).numpy()
                       for part in ("train", "dev", "test")}
        targets = tensors.get("training_targets")
        if targets is None and not getattr(self, "_published", False):
            raise ModelFileError(f"{path}: missing the training_targets array")
        self.training_targets_ = None if targets is None else targets.numpy()
        if self.training_targets_ is not None and self.training_targets_.shape[1:] != (len(OUTPUT_ORDER),):
            raise ModelFileError(f"{path}: training_targets has shape {tuple(self.training_targets_.shape)}, "
                                 f"expected (n, {len(OUTPUT_ORDER)})")


def _calibration_space(name: str, mean: np.ndarray, std: np.ndarray, truth: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and uncertainties as the calibration fits them: log10 Teff for TEFF (its errors
    grow with Teff, from 3,000 to 50,000 K), the label itself otherwise."""
    if name != "TEFF":
        return mean - truth, std
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log10(mean) - np.log10(truth), std / (mean * np.log(10.0))


def _typical_flux(flux: np.ndarray) -> float:
    """Median of the positive flux values (1 when there are none)."""
    positive = flux[flux > 0]
    return float(np.median(positive)) if positive.size else 1.0


def _calibrate_outputs(network: ApogeeNetNetwork, data: Mapping[str, torch.Tensor], rows: np.ndarray, seed: int,
                       sample: int = 64, spread: float = 0.1) -> None:
    """Start the outputs at the training targets' mean with a spread over stars of *spread* (LSUV-like).

    With raw flux as input, freshly initialised outputs scale with each star's brightness
    (many standardised units apart); starting from the mean label with a small, still
    spectrum-dependent spread spares the first epochs, which would otherwise only undo that.
    """
    chosen = np.sort(np.random.default_rng(seed).permutation(rows)[:sample])
    index = torch.as_tensor(chosen, device=data["x"].device)
    with torch.no_grad():
        outputs = network.eval()(data["x"][index], data["m"][index] if "m" in data else None)
        network.train()
        known = data["known"][index]
        target_mean = (data["y"][index] * known).sum(0) / known.sum(0).clamp_min(1)
        scale = torch.ones(outputs.shape[1], device=outputs.device)
        if len(chosen) > 1:
            scale = spread / outputs.std(0).clamp_min(1e-12)
        network.fc3.weight.mul_(scale[:, None])
        network.fc3.bias.copy_(target_mean - outputs.mean(0) * scale)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict from a ``.pt`` file, read without unpickling code."""
    import pickle

    if not path.is_file():
        raise ModelFileError(f"{path}: no such weights file (the published APOGEE Net II model.pt)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: not a readable tensors-only state_dict ({str(exc).splitlines()[0]})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ModelFileError(f"{path}: expected a plain state_dict (parameter name -> tensor), got "
                             f"{type(state).__name__}")
    prefix = "module."  # saved from nn.DataParallel
    if state and all(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def _load_network_state(network: ApogeeNetNetwork, state: Mapping[str, torch.Tensor], path) -> None:
    """Load *state* into *network*, or a ModelFileError naming the wrong keys or shapes."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: not APOGEE Net weights: missing keys {missing[:4]}, unexpected keys "
                             f"{unexpected[:4]} (expected conv1…conv12, fc1…fc3 and, for v2, metadata.l1…l5)")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelFileError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    network.load_state_dict({key: value.to(torch.float32) for key, value in state.items()}, strict=True)
