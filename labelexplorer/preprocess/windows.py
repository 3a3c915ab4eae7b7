"""Element windows: which APOGEE pixels carry the information about each element.

Three sources, one object (:class:`ElementWindows`, element → per-pixel weights on an
APOGEE grid):

- the official ASPCAP DR17 window files: ``<El>.filt`` (one weight in [0, 1] per pixel
  of the 7514-pixel gap-removed grid) and ``<El>.wind`` (the windows in vacuum
  Angstrom) — :func:`read_filt`, :func:`read_wind`, :meth:`ElementWindows.from_filt_dir`;
- astroNN's ``aspcap_l31c_masks.npy``, an int32 bitmask over the 7514 grid whose bit i
  is element i of :data:`labelexplorer.labels.ASPCAP_ELEMENTS` —
  :func:`read_window_bitmask`, :meth:`ElementWindows.from_bitmask`;
- a line list (element, vacuum wavelength, log gf, excitation potential) —
  :func:`windows_from_linelist`.

The censored BCNN feeds each element branch the spectrum multiplied by that element's
binary window (``.mask(element)``); plots shade ``.as_intervals(element)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..exceptions import FileFormatError, ShapeError, UnknownNameError, did_you_mean
from ..labels import ASPCAP_ELEMENTS
from .continuum import pixels_on_grid
from .grid import APOGEE_N_PIXELS, apogee_wavelength, gap_removed_wavelength, n_gap_removed, release_for_pixels

__all__ = ["ElementWindows", "read_filt", "read_wind", "read_window_bitmask", "windows_from_linelist",
           "MOLECULE_ELEMENTS", "APOGEE_RESOLUTION"]

APOGEE_RESOLUTION = 22_500
"""APOGEE's resolving power R = λ/Δλ (FWHM), used for resolution-based window widths."""

MOLECULE_ELEMENTS = {"CO": "C", "CN": "N", "OH": "O"}
"""How ASPCAP measures C, N and O in the H band: from CO, CN and OH lines (pass as ``group=``)."""

_N_WINDOW_GRID = n_gap_removed("dr17")
_WINDOW_GRIDS = (APOGEE_N_PIXELS, _N_WINDOW_GRID, n_gap_removed("dr12"))
_ELEMENT_SPELLING = {element.upper(): element for element in ASPCAP_ELEMENTS}


def _grid_wavelength(n_pixels: int) -> np.ndarray:
    """Vacuum wavelengths of the APOGEE grid with *n_pixels* (8575, 7514 or 7214)."""
    if n_pixels == APOGEE_N_PIXELS:
        return apogee_wavelength()
    return gap_removed_wavelength(release_for_pixels(n_pixels))


# ---------------------------------------------------------------------------- file readers
def _read_text_columns(path: Path, n_columns: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file (expected {what})")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: not a text table of numbers (expected {what})") from exc
    if values.shape[1] < n_columns or not np.all(np.isfinite(values)):
        raise FileFormatError(f"{path}: expected {what}, got {values.shape[1]} column(s) or non-finite values")
    return values


def read_filt(path: str | os.PathLike) -> np.ndarray:
    """Read an ASPCAP ``.filt`` (or ``.mask``) file: one weight in [0, 1] per pixel of the 7514 grid.

    Parameters
    ----------
    path : path-like
        A text file with one number per line (7514 lines for DR13–DR17 windows).

    Returns
    -------
    numpy.ndarray, shape (7514,), float64

    Raises
    ------
    FileFormatError
        If the file is missing, not numeric, of the wrong length or holds weights outside [0, 1].

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "Xx.filt"
    >>> weights = np.zeros(7514); weights[100:104] = [0.2, 1.0, 1.0, 0.3]
    >>> _ = path.write_text("\\n".join(f"{w:12.8f}" for w in weights))
    >>> filt = read_filt(path)
    >>> filt.shape, float(filt.sum())
    ((7514,), 2.5)
    """
    path = Path(path)
    values = _read_text_columns(path, 1, "one window weight per line")
    if values.shape[1] != 1 or values.shape[0] != _N_WINDOW_GRID:
        raise FileFormatError(f"{path}: expected {_N_WINDOW_GRID} lines of one weight each (the 7514-pixel grid), "
                              f"got shape {values.shape}")
    weights = values[:, 0]
    if np.any(weights < 0) or np.any(weights > 1):
        raise FileFormatError(f"{path}: window weights must lie in [0, 1]")
    return weights


def read_wind(path: str | os.PathLike, *, used_only: bool = False) -> np.ndarray:
    """Read an ASPCAP ``.wind`` file: window start and end in vacuum Angstrom and a use flag.

    Parameters
    ----------
    path : path-like
        Text file with lines ``start end flag``, or ``start end`` (flag 1, e.g. the DR17
        ``C13.dat`` windows of the 13CO features).
    used_only : bool
        Keep only the windows flagged 1 (those ASPCAP used).

    Returns
    -------
    numpy.ndarray, shape (n_windows, 3): start, end, flag.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "Mg.wind"
    >>> _ = path.write_text("15233.924 15238.429 0\\n15743.413 15747.336 1\\n")
    >>> read_wind(path, used_only=True).tolist()
    [[15743.413, 15747.336, 1.0]]
    """
    path = Path(path)
    values = _read_text_columns(path, 2, "lines of 'start end [flag]' in Angstrom")[:, :3]
    if values.shape[1] == 2:
        values = np.column_stack([values, np.ones(len(values))])
    if np.any(values[:, 1] <= values[:, 0]):
        raise FileFormatError(f"{path}: every window must end after it starts")
    return values[values[:, 2] == 1] if used_only else values


def read_window_bitmask(path: str | os.PathLike, elements: Iterable[str] = ASPCAP_ELEMENTS) -> dict[str, np.ndarray]:
    """Read astroNN's ``aspcap_l31c_masks.npy``: element windows as bits of an int over the 7514 grid.

    Parameters
    ----------
    path : path-like
        ``.npy`` integer array of 7514 values; bit i belongs to ``elements[i]``.
    elements : iterable of str
        Element of each bit, default :data:`labelexplorer.labels.ASPCAP_ELEMENTS`.

    Returns
    -------
    dict of str to bool array (7514,)

    Raises
    ------
    FileFormatError
        If the file is missing, pickled, not integer, of the wrong length, or has bits set
        beyond the listed elements.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "masks.npy"
    >>> bits = np.zeros(7514, np.int32); bits[5] = 1 | 4   # C and N
    >>> np.save(path, bits)
    >>> windows = read_window_bitmask(path)
    >>> [name for name, mask in windows.items() if mask[5]]
    ['C', 'N']
    """
    path = Path(path)
    elements = list(elements)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file (expected a .npy window bitmask)")
    try:
        bits = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"{path}: not a readable .npy array without pickled objects ({exc})") from exc
    if not isinstance(bits, np.ndarray) or bits.dtype.kind not in "iu" or bits.shape != (_N_WINDOW_GRID,):
        raise FileFormatError(f"{path}: expected an integer array of shape ({_N_WINDOW_GRID},), "
                              f"got {getattr(bits, 'dtype', type(bits).__name__)} {getattr(bits, 'shape', '')}")
    bits = bits.astype(np.int64)
    if np.any(bits < 0) or np.any(bits >> len(elements)):
        raise FileFormatError(f"{path}: bits beyond the {len(elements)} listed elements are set")
    return {element: (bits >> i) & 1 == 1 for i, element in enumerate(elements)}


# ---------------------------------------------------------------------------- the container
class ElementWindows:
    """Per-element pixel weights on an APOGEE grid.

    Parameters
    ----------
    weights : mapping of str to array_like
        Element name → weights in [0, 1] (or booleans), all of one APOGEE pixel count
        (8575, 7514 or 7214).
    source : str
        Where the windows came from (shown in ``repr`` and error messages).
    n_pixels : int, optional
        Grid size when *weights* is empty (default 7514); otherwise taken from the weights.

    Examples
    --------
    >>> weights = np.zeros(7514); weights[1000:1010] = 1.0
    >>> windows = ElementWindows({"Mg": weights}, source="demo")
    >>> windows.elements, int(windows.mask("mg").sum()), windows.on_grid(8575).n_pixels
    (('Mg',), 10, 8575)
    >>> windows.as_intervals("Mg").round(1).tolist()
    [[15362.9, 15365.0]]
    """

    def __init__(self, weights: Mapping[str, np.ndarray], *, source: str = "element windows",
                 n_pixels: int | None = None):
        self.source = str(source)
        self._weights: dict[str, np.ndarray] = {}
        sizes = set() if n_pixels is None else {int(n_pixels)}
        for element, values in weights.items():
            try:
                values = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ShapeError(f"{self.source}: weights of {element!r} are not numbers") from exc
            if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
                raise ShapeError(f"{self.source}: weights of {element!r} must be a 1-D array of values in [0, 1]")
            sizes.add(values.size)
            self._weights[str(element)] = values
        if len(sizes) > 1 or (sizes and next(iter(sizes)) not in _WINDOW_GRIDS):
            raise ShapeError(f"{self.source}: every element needs weights on one APOGEE grid (8575, 7514 or 7214 "
                             "pixels)")
        self.n_pixels = sizes.pop() if sizes else _N_WINDOW_GRID

    # -------------------------------------------------------------- constructors
    @classmethod
    def from_filt_dir(cls, folder: str | os.PathLike, elements: Iterable[str] | None = None) -> "ElementWindows":
        """Official ASPCAP windows from the ``<El>.filt`` files of a folder (all of them by default).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "Na.filt").write_text("0.5\\n" * 7514)
        >>> ElementWindows.from_filt_dir(folder).elements
        ('Na',)
        """
        folder = Path(folder)
        if elements is None:
            paths = sorted(folder.glob("*.filt"))
            if not paths:
                raise FileFormatError(f"{folder}: no <element>.filt window files found")
        else:
            paths = [folder / f"{element}.filt" for element in elements]
        return cls({path.stem: read_filt(path) for path in paths}, source=str(folder))

    @classmethod
    def from_bitmask(cls, path: str | os.PathLike, elements: Iterable[str] = ASPCAP_ELEMENTS) -> "ElementWindows":
        """Binary windows from astroNN's ``aspcap_l31c_masks.npy`` (see :func:`read_window_bitmask`).

        Elements without any window pixel are left out.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "masks.npy"
        >>> bits = np.zeros(7514, np.int32); bits[:3] = 2 ** 17   # Fe
        >>> np.save(path, bits)
        >>> ElementWindows.from_bitmask(path).elements
        ('Fe',)
        """
        masks = read_window_bitmask(path, elements)
        return cls({element: mask for element, mask in masks.items() if mask.any()}, source=str(path))

    # -------------------------------------------------------------- access
    @property
    def elements(self) -> tuple[str, ...]:
        """Element names, in the order they were given."""
        return tuple(self._weights)

    @property
    def wavelength(self) -> np.ndarray:
        """Vacuum wavelengths (Angstrom) of the grid the weights live on."""
        return _grid_wavelength(self.n_pixels)

    def _key(self, element: str) -> str:
        """The stored name of *element*: exact spelling first, then case-insensitive, label names too.

        Case matters where it must: ``"CO"`` (the molecule) and ``"Co"`` (cobalt) can both be
        present, so a case-insensitive match is used only when it is unambiguous.
        """
        if element in self._weights:
            return element
        key = str(element).strip().upper()
        for suffix in ("_FE", "_H"):
            # a label name (MG_FE, CO_H) names an element, never a molecule: use the ASPCAP spelling
            spelling = _ELEMENT_SPELLING.get(key[: -len(suffix)]) if key.endswith(suffix) else None
            if spelling in self._weights:
                return spelling
        matches = [name for name in self._weights if name.upper() == key]
        if len(matches) > 1:
            raise UnknownNameError(f"{self.source}: {element!r} is ambiguous between {matches}; give the exact spelling")
        if not matches:
            raise UnknownNameError(f"{self.source}: no window for element {element!r}; known: {list(self._weights)}"
                                   f"{did_you_mean(str(element), self._weights)}")
        return matches[0]

    def weights(self, element: str) -> np.ndarray:
        """Per-pixel weights in [0, 1] of *element* (a copy)."""
        return self._weights[self._key(element)].copy()

    def __getitem__(self, element: str) -> np.ndarray:
        return self.weights(element)

    def __contains__(self, element: object) -> bool:
        try:
            self._key(str(element))
        except UnknownNameError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._weights)

    def __repr__(self) -> str:
        return f"<ElementWindows {len(self)} elements on {self.n_pixels} px from {self.source}>"

    def mask(self, element: str, threshold: float = 0.0) -> np.ndarray:
        """Binary window of *element*: True where its weight exceeds *threshold*."""
        return self._weights[self._key(element)] > threshold

    def on_grid(self, n_pixels: int) -> "ElementWindows":
        """The same windows on another APOGEE grid (8575 ↔ 7514 ↔ 7214); gap pixels get weight 0."""
        return ElementWindows({element: pixels_on_grid(values, n_pixels, fill=0.0)
                               for element, values in self._weights.items()}, source=self.source, n_pixels=n_pixels)

    def as_intervals(self, element: str, threshold: float = 0.0) -> np.ndarray:
        """Wavelength intervals ``[[start, end], ...]`` (Angstrom, pixel edges) covered by *element*.

        Runs of window pixels are split at chip gaps, so every interval lies on one chip.
        """
        wavelength = self.wavelength
        inside = self.mask(element, threshold)
        edges = _pixel_edges(wavelength)
        jumps = np.diff(wavelength) > 1.5 * np.median(np.diff(wavelength) / wavelength[:-1]) * wavelength[:-1]
        # a run starts where the window begins or where a chip gap interrupts it
        starts = np.flatnonzero(inside & ~np.concatenate([[False], inside[:-1] & ~jumps]))
        stops = np.flatnonzero(inside & ~np.concatenate([inside[1:] & ~jumps, [False]]))
        return np.column_stack([edges[starts, 0], edges[stops, 1]]) if starts.size else np.empty((0, 2))


def _pixel_edges(wavelength: np.ndarray) -> np.ndarray:
    """Lower and upper edge of each pixel of a log-linear grid (half a step either side)."""
    half = 0.5 * np.median(np.diff(np.log(wavelength)))
    return np.column_stack([wavelength * np.exp(-half), wavelength * np.exp(half)])


# ---------------------------------------------------------------------------- line lists
_LINELIST_COLUMNS = ("element", "wavelength", "log_gf", "excitation")


def _check_linelist(lines) -> None:
    missing = [column for column in _LINELIST_COLUMNS if column not in getattr(lines, "columns", ())]
    if missing:
        raise ShapeError(f"lines: expected a DataFrame with columns {list(_LINELIST_COLUMNS)}; missing {missing}")


def _line_strength(lines, reference_teff: float) -> np.ndarray:
    """Relative strength of each line at *reference_teff*: log gf − θ χ with θ = 5040 K / Teff.

    The Boltzmann factor of the lower level (χ in eV) times the oscillator strength is what
    sets a weak line's depth; abundances cancel because weights are normalised per element.
    """
    return np.asarray(lines["log_gf"], float) - (5040.0 / reference_teff) * np.asarray(lines["excitation"], float)


def windows_from_linelist(lines, wavelength: np.ndarray | None = None, *, half_width: float | None = None,
                          resolution: float = APOGEE_RESOLUTION, n_fwhm: float = 2.5, weight_by_strength: bool = True,
                          reference_teff: float = 4500.0, group: Mapping[str, str] | None = None,
                          elements: Iterable[str] | None = None) -> ElementWindows:
    """Element windows built around the lines of a line list.

    Each line gets a window of ±*half_width* Angstrom, or, by default, ±``n_fwhm`` times
    the instrumental FWHM ``λ / resolution`` (≈ ±1.8 Å at 16000 Å for APOGEE, the size of
    the ASPCAP windows). Inside it the weight follows the line's instrumental profile (a
    Gaussian of that FWHM), scaled by the line's strength relative to the strongest line
    of its element when *weight_by_strength*; overlapping lines keep the largest weight.

    Parameters
    ----------
    lines : pandas.DataFrame
        Columns ``element`` (ASPCAP spelling: "Fe", "Mg", "TiII", or molecule names),
        ``wavelength`` (vacuum Å), ``log_gf``, ``excitation`` (eV); ``kind`` is optional.
    wavelength : array_like, optional
        Target APOGEE grid (8575, 7514 or 7214 px); default the 7514 grid.
    half_width : float, optional
        Fixed window half-width in Angstrom (overrides the resolution-based width).
    resolution, n_fwhm : float
        Resolving power and the half-width in units of the FWHM.
    weight_by_strength : bool
        Scale weights by 10**(strength − max strength of the element), strength = log gf − θ χ.
    reference_teff : float
        Temperature (K) of θ = 5040/Teff in the strength.
    group : mapping, optional
        Rename species before grouping, e.g. :data:`MOLECULE_ELEMENTS` to count CO lines as C.
    elements : iterable of str, optional
        Keep only these (renamed) species.

    Returns
    -------
    ElementWindows
        Species with at least one line on the grid.

    Examples
    --------
    >>> import pandas as pd
    >>> lines = pd.DataFrame({"element": ["Mg", "Mg", "Fe"], "wavelength": [15745.0, 15770.1, 15500.0],
    ...                       "log_gf": [-0.3, 0.1, -1.0], "excitation": [5.9, 5.9, 4.2]})
    >>> windows = windows_from_linelist(lines)
    >>> windows.elements
    ('Fe', 'Mg')
    >>> peak = windows.wavelength[np.argmax(windows["Mg"])]
    >>> bool(abs(peak - 15770.1) < 0.3)
    True
    """
    import pandas as pd

    _check_linelist(lines)
    grid = _grid_wavelength(_N_WINDOW_GRID) if wavelength is None else np.asarray(wavelength, dtype=np.float64)
    if grid.ndim != 1 or grid.size not in _WINDOW_GRIDS:
        raise ShapeError(f"wavelength: expected an APOGEE grid of 8575, 7514 or 7214 pixels, got shape {grid.shape}")
    table = pd.DataFrame({column: lines[column] for column in _LINELIST_COLUMNS})
    table["element"] = table["element"].astype(str).map(lambda name: (group or {}).get(name, name))
    if elements is not None:
        table = table[table["element"].isin(list(elements))]
    table = table[(table["wavelength"] > grid[0]) & (table["wavelength"] < grid[-1])]
    fwhm = table["wavelength"].to_numpy(float) / resolution
    half = np.full(fwhm.shape, float(half_width)) if half_width is not None else n_fwhm * fwhm
    strength = _line_strength(table, reference_teff)
    relative = strength - table.assign(s=strength).groupby("element")["s"].transform("max").to_numpy()
    amplitude = 10.0 ** relative if weight_by_strength else np.ones(len(table))
    names = sorted(table["element"].unique())
    index = table["element"].map({name: i for i, name in enumerate(names)}).to_numpy(int)
    weights = _paint_lines(grid, table["wavelength"].to_numpy(float), half, fwhm, amplitude, index, len(names))
    return ElementWindows(dict(zip(names, weights)), source="line list", n_pixels=grid.size)


def _paint_lines(grid, centres, half, fwhm, amplitude, index, n_species) -> np.ndarray:
    """Max over lines of amplitude × Gaussian profile within ±half of each centre, per species."""
    weights = np.zeros((n_species, grid.size))
    if centres.size == 0:
        return weights
    first = np.searchsorted(grid, centres - half)
    last = np.searchsorted(grid, centres + half, side="right")
    width = int(np.max(last - first))
    pixels = first[:, None] + np.arange(width)[None, :]  # (lines, width), vectorised over lines
    valid = pixels < last[:, None]
    pixels = np.minimum(pixels, grid.size - 1)
    offset = grid[pixels] - centres[:, None]
    sigma = fwhm[:, None] / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    profile = amplitude[:, None] * np.exp(-0.5 * (offset / sigma) ** 2)
    rows = np.broadcast_to(index[:, None], pixels.shape)
    np.maximum.at(weights, (rows[valid], pixels[valid]), profile[valid])
    return weights
