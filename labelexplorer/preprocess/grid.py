"""The APOGEE wavelength grid, its chips and the gap-removed layouts.

Facts (APOGEE data model): the combined-spectrum grid has 8575 log-linear pixels,
``lambda_i = 10**(4.179 + 6e-6 i)`` Angstrom (vacuum). Three detector chips cover it
with gaps between them; removing the gaps leaves 7514 pixels with the DR13–DR17 chip
ranges and 7214 pixels with the DR12 ranges (the grid used by The Cannon and The Payne).
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ShapeError, UnknownNameError, did_you_mean

__all__ = ["APOGEE_N_PIXELS", "APOGEE_LOG_START", "APOGEE_LOG_STEP", "CHIP_RANGES", "apogee_wavelength",
           "gap_removed_wavelength", "remove_gaps", "chip_slices", "n_gap_removed", "release_for_pixels"]

APOGEE_N_PIXELS = 8575
APOGEE_LOG_START = 4.179
APOGEE_LOG_STEP = 6e-6

CHIP_RANGES = {
    # [start, end) on the 8575-pixel grid for the blue, green and red chips
    "dr13": ((246, 3274), (3585, 6080), (6344, 8335)),
    "dr12": ((322, 3242), (3648, 6048), (6412, 8306)),
}
for _release in ("dr14", "dr16", "dr17"):
    CHIP_RANGES[_release] = CHIP_RANGES["dr13"]


def _ranges(release: str):
    key = str(release).lower()
    if key not in CHIP_RANGES:
        raise UnknownNameError(f"release: unknown APOGEE data release {release!r}; known: {sorted(CHIP_RANGES)}"
                               f"{did_you_mean(key, CHIP_RANGES)}")
    return CHIP_RANGES[key]


def apogee_wavelength() -> np.ndarray:
    """Vacuum wavelengths (Angstrom) of the 8575-pixel APOGEE grid.

    Examples
    --------
    >>> wl = apogee_wavelength()
    >>> wl.size, round(float(wl[0]), 2), round(float(wl[-1]), 2)
    (8575, 15100.8, 16999.81)
    """
    return 10.0 ** (APOGEE_LOG_START + APOGEE_LOG_STEP * np.arange(APOGEE_N_PIXELS))


def n_gap_removed(release: str = "dr17") -> int:
    """Pixel count after gap removal: 7514 (DR13–17) or 7214 (DR12).

    Examples
    --------
    >>> n_gap_removed("dr17"), n_gap_removed("dr12")
    (7514, 7214)
    """
    return sum(end - start for start, end in _ranges(release))


def _keep_index(release: str) -> np.ndarray:
    return np.concatenate([np.arange(start, end) for start, end in _ranges(release)])


def gap_removed_wavelength(release: str = "dr17") -> np.ndarray:
    """Wavelengths of the gap-removed grid of *release*.

    Examples
    --------
    >>> gap_removed_wavelength().shape
    (7514,)
    """
    return apogee_wavelength()[_keep_index(release)]


def remove_gaps(array: np.ndarray, release: str = "dr17") -> np.ndarray:
    """Drop the chip-gap pixels along the last axis of an 8575-pixel array.

    Raises
    ------
    ShapeError
        If the last axis is not 8575 pixels long.

    Examples
    --------
    >>> remove_gaps(np.zeros((2, 8575))).shape
    (2, 7514)
    """
    array = np.asarray(array)
    if array.shape[-1] != APOGEE_N_PIXELS:
        raise ShapeError(f"remove_gaps: expected {APOGEE_N_PIXELS} pixels on the last axis, got {array.shape[-1]}")
    return array[..., _keep_index(release)]


def chip_slices(n_pixels: int, release: str | None = None) -> list[slice]:
    """Slices of the blue, green and red chips for an array of *n_pixels*.

    Works for the full 8575 grid and for both gap-removed grids (7514 and 7214).

    Examples
    --------
    >>> chip_slices(7514)
    [slice(0, 3028, None), slice(3028, 5523, None), slice(5523, 7514, None)]
    """
    if n_pixels == APOGEE_N_PIXELS:
        return [slice(start, end) for start, end in _ranges(release or "dr17")]
    release = release or release_for_pixels(n_pixels)
    bounds = np.cumsum([0] + [end - start for start, end in _ranges(release)])
    if bounds[-1] != n_pixels:
        raise ShapeError(f"chip_slices: {n_pixels} pixels do not match the {release} grid ({bounds[-1]} pixels)")
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def release_for_pixels(n_pixels: int) -> str:
    """The data release whose gap-removed grid has *n_pixels* pixels (``"dr17"`` or ``"dr12"``).

    Examples
    --------
    >>> release_for_pixels(7214)
    'dr12'
    """
    for release in ("dr17", "dr12"):
        if n_gap_removed(release) == n_pixels:
            return release
    raise ShapeError(f"{n_pixels} pixels is not an APOGEE grid (expected 8575, 7514 or 7214)")
