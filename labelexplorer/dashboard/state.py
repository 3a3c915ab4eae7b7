"""The dashboard's state: one ``param.Parameterized`` object every view reads and writes.

Views never talk to each other: a click on the Teff–logg plot sets ``state.star``, the
inspector watches ``state.star``; a box selection sets ``state.selection``, the other
views and the export watch it. All of it is plain Python, testable without a browser.

Catalog schema
--------------
The catalog is one table, **one row per star** (a pandas DataFrame, or a dask DataFrame
for catalogs larger than memory; views only ever ask :meth:`ExplorerState.frame` for the
columns they draw):

``ID`` (str)
    Unique star identifier (``APOGEE_ID`` for the mock universe).
Star columns (no ``__`` in the name)
    Anything describing the star itself: ``CLUSTER`` (``""`` for field stars),
    ``STAR_CLASS``, ``SNR``, ``RA``, ``DEC``, ``HAS_SPECTRUM``, ``TRAINING`` (used to
    train the demo's models)...
``<SOURCE>__<COLUMN>``
    What one *source* says about the star. ``SOURCE`` is a method name upper-cased with
    ``-`` replaced by ``_`` (``RIDGE``, ``BCNN_CENSORED``, ``SLAM``, ``APOGEE_NET``) or a
    reference: ``TRUE`` (the mock's true labels) or ``ASPCAP`` (the survey pipeline).
    ``COLUMN`` follows :meth:`labelexplorer.LabelPrediction.columns`: the label ``X``
    (canonical name, e.g. ``TEFF``, ``MG_FE``, ``AL_H``), ``X_ERR`` (total uncertainty),
    ``X_MODEL_STD``, ``X_PRED_STD`` and ``FLAG_<NAME>``. A star a source did not measure
    holds NaN (flags False); a quantity a source cannot provide is NaN or absent.

:func:`combine_catalog` builds such a table from a star table and per-source prediction
tables; ``labelexplorer.catalog`` output can be served by the same code once it exists,
because the state reads nothing but columns.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd
import param

from .._files import atomic_path
from ..exceptions import LabelError, LabelExplorerError, UnknownNameError, did_you_mean
from ..labels import ASPCAP_ELEMENTS, canonical_label

if TYPE_CHECKING:
    from ..spectra import Spectra

__all__ = ["SEPARATOR", "REFERENCES", "EXPORT_FORMATS", "source_prefix", "source_name", "catalog_sources",
           "source_labels", "combine_catalog", "read_catalog", "ExplorerState", "UniverseSpectra", "GalaxySource",
           "label_element"]

SEPARATOR = "__"
REFERENCES = ("true", "aspcap")
"""Sources that are not predictions: the mock's truth and the survey pipeline (display names)."""
EXPORT_FORMATS = ("csv", "parquet", "fits")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits"}
_QUANTITY_SUFFIXES = ("_ERR", "_MODEL_STD", "_PRED_STD")


# ------------------------------------------------------------------------------------------ schema
def source_prefix(name: str) -> str:
    """Column prefix of a source's columns.

    Examples
    --------
    >>> source_prefix("bcnn-censored"), source_prefix("true")
    ('BCNN_CENSORED__', 'TRUE__')
    """
    return str(name).upper().replace("-", "_") + SEPARATOR


def source_name(token: str) -> str:
    """Display name of a source from its column token (inverse of :func:`source_prefix`).

    Examples
    --------
    >>> source_name("BCNN_CENSORED")
    'bcnn-censored'
    """
    return token.rstrip("_").lower().replace("_", "-")


def catalog_sources(columns: Iterable[str]) -> list[str]:
    """Sources present in a catalog's columns: predictions first (in column order), then references.

    Examples
    --------
    >>> catalog_sources(["ID", "TRUE__TEFF", "RIDGE__TEFF", "RIDGE__TEFF_ERR", "SLAM__LOGG"])
    ['ridge', 'slam', 'true']
    """
    found = []
    for column in columns:
        token, separator, _ = str(column).partition(SEPARATOR)
        if separator and token and source_name(token) not in found:
            found.append(source_name(token))
    return [s for s in found if s not in REFERENCES] + [s for s in REFERENCES if s in found]


def _is_label(name: str) -> bool:
    try:
        return canonical_label(name) == name
    except LabelError:
        return False


def source_labels(columns: Iterable[str], source: str) -> list[str]:
    """Labels (canonical names) a source provides, in column order.

    Examples
    --------
    >>> source_labels(["RIDGE__TEFF", "RIDGE__TEFF_ERR", "RIDGE__FLAG_X", "RIDGE__MG_FE", "SLAM__LOGG"], "ridge")
    ['TEFF', 'MG_FE']
    """
    prefix = source_prefix(source)
    return [c[len(prefix):] for c in columns if str(c).startswith(prefix) and _is_label(c[len(prefix):])]


def label_element(label: str) -> str | None:
    """ASPCAP element spelling of an abundance label, or None for other labels.

    Examples
    --------
    >>> label_element("MG_FE"), label_element("TIII_H"), label_element("FE_H"), label_element("TEFF")
    ('Mg', 'TiII', 'Fe', None)
    """
    for suffix in ("_FE", "_H"):
        if label.endswith(suffix):
            key = label[: -len(suffix)]
            for element in ASPCAP_ELEMENTS:
                if element.upper() == key:
                    return element
    return None


def _prediction_frame(source) -> pd.DataFrame:
    """A flat per-star table (``ID`` + LabelPrediction columns) from a LabelPrediction or a DataFrame."""
    if hasattr(source, "to_pandas") and hasattr(source, "label_names"):
        return source.to_pandas()
    if isinstance(source, pd.DataFrame):
        if "ID" not in source.columns:
            raise LabelExplorerError("prediction table: expected an 'ID' column (as LabelPrediction.to_pandas gives)")
        return source
    raise LabelExplorerError(f"prediction: expected a LabelPrediction or a DataFrame, got {type(source).__name__}")


def combine_catalog(stars: pd.DataFrame, sources: Mapping[str, Any], *, id_column: str = "ID") -> pd.DataFrame:
    """One catalog in the dashboard schema from a star table and per-source tables.

    Parameters
    ----------
    stars : pandas.DataFrame
        One row per star; *id_column* identifies it (renamed ``ID``). Its other columns
        are kept as star columns.
    sources : mapping of source name -> LabelPrediction or DataFrame with an ``ID`` column
        E.g. ``{"ridge": prediction, "true": truth_table}``. Stars a source lacks get NaN
        (flags False); IDs unknown to *stars* are an error.
    id_column : str
        Name of the identifier column of *stars*.

    Examples
    --------
    >>> from labelexplorer import LabelPrediction
    >>> stars = pd.DataFrame({"APOGEE_ID": ["a", "b"], "SNR": [50.0, 80.0]})
    >>> pred = LabelPrediction(["TEFF"], [[4800.0]], model_std=[[20.0]], ids=["b"],
    ...                        flags={"low_snr": [True]})
    >>> catalog = combine_catalog(stars, {"ridge": pred}, id_column="APOGEE_ID")
    >>> catalog.columns.tolist()
    ['ID', 'SNR', 'RIDGE__TEFF', 'RIDGE__TEFF_ERR', 'RIDGE__TEFF_MODEL_STD', 'RIDGE__TEFF_PRED_STD', 'RIDGE__FLAG_LOW_SNR']
    >>> catalog["RIDGE__TEFF"].tolist()[1], catalog["RIDGE__FLAG_LOW_SNR"].tolist()
    (4800.0, [False, True])
    """
    if id_column not in stars.columns:
        raise LabelExplorerError(f"stars: no identifier column {id_column!r}")
    catalog = stars.rename(columns={id_column: "ID"}).reset_index(drop=True)
    catalog["ID"] = catalog["ID"].astype(str)
    if not catalog["ID"].is_unique:
        raise LabelExplorerError("stars: identifiers must be unique (one row per star)")
    position = pd.Index(catalog["ID"])
    parts = [catalog]
    for name, source in sources.items():
        frame = _prediction_frame(source)
        ids = frame["ID"].astype(str).to_numpy()
        rows = position.get_indexer(ids)
        if (rows < 0).any():
            unknown = ids[rows < 0][0]
            raise LabelExplorerError(f"source {name!r}: star {unknown!r} is not in the star table")
        prefix = source_prefix(name)
        columns = {}
        for column in frame.columns:
            if column == "ID":
                continue
            values = frame[column].to_numpy()
            if values.dtype == bool:
                full = np.zeros(len(catalog), dtype=bool)
            else:
                full = np.full(len(catalog), np.nan)
                values = values.astype(np.float64)
            full[rows] = values
            columns[prefix + str(column)] = full
        parts.append(pd.DataFrame(columns))
    return pd.concat(parts, axis=1)


def read_catalog(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read catalog files (Parquet, CSV or FITS) into one dashboard catalog.

    A file already in the dashboard schema (``<SOURCE>__`` columns) is read as is; a flat
    prediction table (``ID``, ``TEFF``, ``TEFF_ERR``...) becomes the source named by its
    ``model`` metadata or, failing that, by its file name. Several files are joined on
    ``ID``.

    Raises
    ------
    LabelExplorerError
        Missing or unreadable files, or a file without an ``ID`` column.
    """
    frames = []
    for path in map(Path, paths):
        frame = _read_table(path)
        if "ID" not in frame.columns:
            raise LabelExplorerError(f"{path}: expected an 'ID' column identifying each star")
        frame["ID"] = frame["ID"].astype(str)
        if not catalog_sources(frame.columns):
            name = str(frame.attrs.get("model") or path.stem)
            frame = combine_catalog(frame[["ID"]], {name: frame})
        frames.append(frame)
    if not frames:
        raise LabelExplorerError("catalog: expected at least one file")
    catalog = frames[0]
    for frame in frames[1:]:
        catalog = catalog.merge(frame, on="ID", how="outer", suffixes=("", "_dup"))
    return catalog.reset_index(drop=True)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LabelExplorerError(f"{path}: catalog file not found")
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet"):
            return pd.read_parquet(path)
        if suffix.endswith(".csv"):
            return pd.read_csv(path, dtype={"ID": str})
        if suffix.endswith((".fits", ".fit", ".fits.gz")):
            from astropy.table import Table

            table = Table.read(path)
            return table.to_pandas()
    except (OSError, ValueError, TypeError) as exc:
        raise LabelExplorerError(f"{path}: unreadable catalog ({exc})") from exc
    raise LabelExplorerError(f"{path}: unknown catalog format; expected .parquet, .csv or .fits")


# ------------------------------------------------------------------------------------------ data sources
class UniverseSpectra:
    """Spectra of a mock universe's stars for the inspector: read from its files, else regenerated.

    Stars without an APOGEE file (most of a large population) are rebuilt from the seed
    with :func:`labelexplorer.mock.regenerate_star`, so every star of the catalog can be
    inspected. Recently used spectra are kept in memory for keyboard navigation.

    Parameters
    ----------
    universe : labelexplorer.mock.Universe or path-like
    """

    def __init__(self, universe):
        from ..mock import Universe

        self.universe = universe if isinstance(universe, Universe) else Universe(universe)
        self._with_files = set(self.universe.spectrum_stars["APOGEE_ID"])
        self.spectrum = functools.lru_cache(maxsize=32)(self._spectrum)
        self.raw = functools.lru_cache(maxsize=8)(self._raw)

    def __repr__(self) -> str:
        return f"UniverseSpectra({self.universe.path})"

    def has_file(self, star_id: str) -> bool:
        """True when the star has APOGEE files (it is part of the spectra the models saw)."""
        return str(star_id) in self._with_files

    def _spectrum(self, star_id: str):
        """The continuum-normalised (aspcapStar) spectrum of one star."""
        if self.has_file(star_id):
            return self.universe.spectra("aspcap", rows=[str(star_id)])
        return self.universe.regenerate(str(star_id), kind="aspcap")

    def batch(self, star_ids) -> Spectra:
        """Normalised spectra of several stars with files, read together (for subset sensitivities)."""
        with_files = [str(s) for s in star_ids if self.has_file(s)]
        if not with_files:
            raise LabelExplorerError("none of the chosen stars has a spectrum file")
        return self.universe.spectra("aspcap", rows=with_files)

    def _raw(self, star_id: str):
        """The raw (apStar, combined) spectrum of one star."""
        if self.has_file(star_id):
            return self.universe.spectra("apstar", rows=[str(star_id)])
        return self.universe.regenerate(str(star_id), kind="apstar")


class GalaxySource:
    """Galaxy catalog and cutouts fixed at start-up (the dashboard never browses the file system).

    Parameters
    ----------
    catalog : pandas.DataFrame
        One row per galaxy, ``objID`` (string) first; true ``oh_p50`` and ``log_mstar``.
    folder : path-like, optional
        Where ``<objID>.jpg`` cutouts live.
    """

    def __init__(self, catalog: pd.DataFrame, folder=None):
        if "objID" not in catalog.columns:
            raise LabelExplorerError("galaxy catalog: expected an 'objID' column")
        self.catalog = catalog.assign(objID=catalog["objID"].astype(str)).reset_index(drop=True)
        self.folder = None if folder is None else Path(folder)

    @classmethod
    def from_universe(cls, universe) -> "GalaxySource | None":
        """The universe's galaxies, or None when it has none."""
        if not universe.config.get("n_galaxies"):
            return None
        return cls(universe.galaxy_catalog(), universe.galaxy_folder)

    def image_path(self, obj_id: str) -> Path | None:
        """Path of a galaxy's cutout, or None (no folder, or no file)."""
        if self.folder is None:
            return None
        path = self.folder / f"{obj_id}.jpg"
        return path if path.is_file() else None


# ------------------------------------------------------------------------------------------ the state
class ExplorerState(param.Parameterized):
    """Everything the views share: the catalog and what the user is looking at.

    Parameters
    ----------
    catalog : pandas.DataFrame or dask.dataframe.DataFrame
        In the schema of this module (see the module docstring).
    models : dict, optional
        Fitted models by source name, for sensitivities, model spectra and COD.
    spectra : object, optional
        Gives a star's spectrum: ``spectra.spectrum(star_id) -> Spectra`` (continuum
        normalised) and optionally ``spectra.raw(star_id)``; e.g. :class:`UniverseSpectra`.
    galaxies : GalaxySource, optional
    **params
        Initial values of the other parameters (``method``, ``label``, ``star``...).

    Examples
    --------
    >>> catalog = pd.DataFrame({"ID": ["a", "b", "c"], "RIDGE__TEFF": [4800.0, 5200.0, np.nan],
    ...                         "RIDGE__LOGG": [2.5, 4.4, np.nan], "TRUE__TEFF": [4790.0, 5210.0, 6000.0]})
    >>> state = ExplorerState(catalog)
    >>> state.method, state.reference, state.label
    ('ridge', 'true', 'TEFF')
    >>> state.select(["b", "c"]); state.selected()["ID"].tolist()
    ['b', 'c']
    >>> state.step_star(1); state.star
    'b'
    """

    catalog = param.Parameter(doc="The catalog: one row per star, <SOURCE>__<COLUMN> columns (pandas or dask).")
    sources = param.List(default=[], doc="Every source in the catalog: prediction methods, then references.")
    methods = param.List(default=[], doc="Sources that are predictions (not the truth or the pipeline).")
    method = param.Selector(default=None, objects=[], allow_None=True,
                            doc="The active method: the one plotted, inspected and exported first.")
    reference = param.Selector(default=None, objects=[], allow_None=True,
                               doc="The source the active method is compared with (the mock's truth, or the pipeline).")
    label = param.Selector(default=None, objects=[], allow_None=True,
                           doc="The active label (canonical name), e.g. for colouring and sensitivities.")
    element = param.Selector(default="Mg", objects=list(ASPCAP_ELEMENTS),
                             doc="The active element: its windows are shaded and its sequence shown.")
    star = param.String(default=None, allow_None=True, doc="ID of the active star (shown by the inspector).")
    selection = param.Array(default=np.empty(0, dtype=np.int64),
                            doc="Row positions of the selected stars (box or lasso selection, or set in Python).")
    models = param.Dict(default={}, doc="Fitted models by source name (sensitivity, model spectra, COD).")
    spectra = param.Parameter(default=None, doc="Source of spectra: .spectrum(star_id) -> Spectra (and .raw).")
    galaxies = param.Parameter(default=None, doc="GalaxySource: galaxy catalog and cutouts, or None.")
    galaxy_selection = param.Array(default=np.empty(0, dtype=np.int64),
                                   doc="Row positions of the selected galaxies in the galaxy catalog.")

    def __init__(self, catalog, *, models: Mapping[str, Any] | None = None, spectra=None, galaxies=None, **params):
        super().__init__(catalog=catalog, models=dict(models or {}), spectra=spectra, galaxies=galaxies)
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._ids: pd.Index | None = None
        self._star_position: tuple = (None, None)
        self._update_sources()
        self.param.update(**params)

    # -------------------------------------------------------------- catalog access
    @param.depends("catalog", watch=True)
    def _update_sources(self) -> None:
        frame = self.catalog
        if frame is None or not hasattr(frame, "columns"):
            raise LabelExplorerError(f"catalog: expected a pandas or dask DataFrame, got {type(frame).__name__}")
        if "ID" not in frame.columns:
            raise LabelExplorerError("catalog: expected an 'ID' column identifying each star")
        self._cache, self._ids, self._star_position = {}, None, (None, None)
        sources = catalog_sources(frame.columns)
        methods = [s for s in sources if s not in REFERENCES]
        references = [s for s in sources if s in REFERENCES]
        self.param.method.objects = methods or sources
        self.param.reference.objects = references or sources
        labels = []
        for source in sources:
            labels += [label for label in source_labels(frame.columns, source) if label not in labels]
        self.param.label.objects = labels
        keep = lambda value, allowed: value if value in allowed else next(iter(allowed), None)  # noqa: E731
        self.param.update(sources=sources, methods=methods, method=keep(self.method, self.param.method.objects),
                          reference=keep(self.reference, self.param.reference.objects),
                          label=keep(self.label, labels), selection=np.empty(0, dtype=np.int64), star=None)

    @property
    def is_dask(self) -> bool:
        """True for a dask catalog (columns are computed on demand)."""
        return hasattr(self.catalog, "compute")

    def __len__(self) -> int:
        return len(self.table(["ID"]))

    @property
    def columns(self) -> list[str]:
        """Every catalog column name."""
        return [str(c) for c in self.catalog.columns]

    def frame(self, columns: Iterable[str]) -> pd.DataFrame:
        """A pandas DataFrame of just the named columns, in catalog order (dask: computed once, cached).

        Raises
        ------
        UnknownNameError
            A column the catalog does not have.
        """
        columns = list(dict.fromkeys(columns))
        missing = [c for c in columns if c not in self.catalog.columns]
        if missing:
            raise UnknownNameError(f"catalog has no column {missing[0]!r}{did_you_mean(missing[0], self.columns)}")
        if not self.is_dask:
            return self.catalog[columns]
        key = tuple(columns)
        if key not in self._cache:
            self._cache[key] = self.catalog[columns].compute().reset_index(drop=True)
            if len(self._cache) > 16:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def table(self, columns: Iterable[str]) -> pd.DataFrame:
        """A pandas DataFrame holding at least the named *columns*, without copying when possible.

        For a pandas catalog this is the catalog itself, shared by every session (views
        address their columns by name); for a dask catalog, the computed columns.
        """
        columns = list(columns)
        if self.is_dask:
            return self.frame(columns)
        missing = [c for c in columns if c not in self.catalog.columns]
        if missing:
            raise UnknownNameError(f"catalog has no column {missing[0]!r}{did_you_mean(missing[0], self.columns)}")
        return self.catalog

    def column(self, source: str | None, quantity: str) -> str | None:
        """Catalog column of *quantity* (``TEFF``, ``TEFF_ERR``, ``FLAG_LOW_SNR``) of *source*, or None."""
        if source is None:
            return None
        name = source_prefix(source) + quantity
        return name if name in self.catalog.columns else None

    def labels_of(self, source: str | None) -> list[str]:
        """Labels a source provides."""
        return [] if source is None else source_labels(self.columns, source)

    def quantities_of(self, source: str | None) -> list[str]:
        """Labels and their uncertainties (``X``, ``X_ERR``, ``X_MODEL_STD``, ``X_PRED_STD``) of a source."""
        out = []
        for label in self.labels_of(source):
            out += [q for q in (label, *(label + s for s in _QUANTITY_SUFFIXES)) if self.column(source, q)]
        return out

    @property
    def ids(self) -> pd.Index:
        """Star IDs in catalog order, as an index for lookups by ID (built on first use)."""
        if self._ids is None:
            self._ids = pd.Index(self.table(["ID"])["ID"].to_numpy().astype(str))
        return self._ids

    def ids_at(self, positions) -> np.ndarray:
        """IDs of the stars at row *positions* (no index needed: cheap for any catalog size)."""
        values = self.table(["ID"])["ID"].iloc[np.asarray(positions, dtype=np.int64)]
        return values.to_numpy().astype(str)

    def _set_star(self, position: int) -> None:
        star = str(self.ids_at([position])[0])
        self._star_position = (star, int(position))  # spares a lookup by ID when stepping from here
        self.star = star

    def positions(self, stars) -> np.ndarray:
        """Row positions of stars given by ID (str) or position (int); a boolean mask works too.

        Raises
        ------
        UnknownNameError
            An ID that is not in the catalog.
        """
        values = np.atleast_1d(np.asarray(stars))
        if values.dtype == bool:
            if values.shape != (len(self),):
                raise LabelExplorerError(f"selection: a boolean mask needs {len(self)} values, got {values.shape}")
            return np.flatnonzero(values)
        if values.size == 0:
            return np.empty(0, dtype=np.int64)
        if values.dtype.kind in "iu":
            if values.min() < 0 or values.max() >= len(self):
                raise LabelExplorerError(f"selection: positions must lie in [0, {len(self)})")
            return values.astype(np.int64)
        known = getattr(self, "_star_position", (None, None))
        if values.size == 1 and str(values[0]) == known[0]:
            return np.array([known[1]], dtype=np.int64)
        rows = self.ids.get_indexer(values.astype(str))
        if (rows < 0).any():
            unknown = str(values[rows < 0][0])
            raise UnknownNameError(f"star {unknown!r} is not in the catalog{did_you_mean(unknown, self.ids[:2000])}")
        return rows.astype(np.int64)

    # -------------------------------------------------------------- active star and selection
    def select_star(self, star) -> None:
        """Make *star* (ID or row position) the active star."""
        self._set_star(int(self.positions([star])[0]))

    def select(self, stars) -> None:
        """Set the selection: IDs, row positions or a boolean mask over the catalog."""
        self.selection = np.unique(self.positions(stars))

    def clear_selection(self) -> None:
        """Select nothing."""
        self.selection = np.empty(0, dtype=np.int64)

    def navigation_order(self) -> np.ndarray:
        """Rows that next/previous step through: the selection, else the stars the method predicted."""
        if self.selection.size:
            return self.selection
        label = next(iter(self.labels_of(self.method)), None)
        if label is not None:
            values = self.frame([self.column(self.method, label)]).iloc[:, 0].to_numpy(dtype=float)
            rows = np.flatnonzero(np.isfinite(values))
            if rows.size:
                return rows
        return np.arange(len(self))

    def step_star(self, step: int = 1) -> None:
        """Move the active star *step* places along :meth:`navigation_order` (wrapping around)."""
        order = self.navigation_order()
        if order.size == 0:
            return
        if self.star is None:
            target = order[0] if step > 0 else order[-1]
        else:
            here = self.positions([self.star])[0]
            slot = int(np.searchsorted(order, here))
            if slot < order.size and order[slot] == here:
                slot += step
            elif step < 0:
                slot -= 1
            target = order[slot % order.size]
        self._set_star(int(target))

    def star_row(self, star: str | None = None) -> pd.Series | None:
        """Every catalog column of one star (default: the active star), or None."""
        star = self.star if star is None else star
        if star is None:
            return None
        position = int(self.positions([star])[0])
        if self.is_dask:
            return self.frame(self.columns).iloc[position]
        return self.catalog.iloc[position]

    def star_table(self, star: str | None = None) -> pd.DataFrame:
        """One star's labels from every source side by side.

        Returns
        -------
        pandas.DataFrame
            Index: label. Columns: a MultiIndex (source, quantity) with quantities
            ``value``, ``total``, ``model``, ``predictive`` (the three uncertainties).
            Empty when there is no active star.
        """
        row = self.star_row(star)
        if row is None:
            return pd.DataFrame()
        names = {"value": "", "total": "_ERR", "model": "_MODEL_STD", "predictive": "_PRED_STD"}
        data = {}
        labels = list(self.param.label.objects)
        for source in self.sources:
            if not self.labels_of(source):
                continue
            for quantity, suffix in names.items():
                values = [row.get(source_prefix(source) + label + suffix, np.nan) for label in labels]
                values = pd.to_numeric(pd.Series(values, index=labels), errors="coerce")
                if quantity == "value" or values.notna().any():
                    data[(source, quantity)] = values
        table = pd.DataFrame(data)
        table.columns = pd.MultiIndex.from_tuples(table.columns, names=["source", "quantity"])
        return table.dropna(how="all")

    def star_flags(self, star: str | None = None) -> dict[str, list[str]]:
        """Names of the flags raised for one star, per source."""
        row = self.star_row(star)
        if row is None:
            return {}
        flags = {}
        for source in self.sources:
            prefix = source_prefix(source) + "FLAG_"
            raised = [c[len(prefix):].lower() for c in row.index if str(c).startswith(prefix) and bool(row[c])]
            flags[source] = raised
        return flags

    # -------------------------------------------------------------- export
    def selected(self) -> pd.DataFrame:
        """Every column of the selected stars, in catalog order (empty when nothing is selected)."""
        rows = self.selection
        if self.is_dask:
            return self.frame(self.columns).iloc[rows].reset_index(drop=True)
        return self.catalog.iloc[rows].reset_index(drop=True)

    def export_bytes(self, format: str = "csv") -> bytes:
        """The selected stars as a CSV, Parquet or FITS file in memory."""
        format = _check_format(format)
        buffer = io.BytesIO()
        _write_frame(self.selected(), buffer, format)
        return buffer.getvalue()

    def export(self, path, format: str | None = None) -> Path:
        """Write the selected stars to *path* (format from the suffix unless given); returns the path.

        The file is written atomically: an interrupted export never leaves a partial file.
        """
        path = Path(path)
        format = _check_format(format or _SUFFIX_FORMATS.get(path.suffix.lower(), path.suffix))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                _write_frame(self.selected(), handle, format)
        return path


def _check_format(format: str) -> str:
    if format not in EXPORT_FORMATS:
        raise UnknownNameError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
                               f"{did_you_mean(str(format), EXPORT_FORMATS)}")
    return format


def _write_frame(frame: pd.DataFrame, handle, format: str) -> None:
    if format == "csv":
        handle.write(frame.to_csv(index=False).encode())
    elif format == "parquet":
        frame.to_parquet(handle, index=False)
    else:
        from astropy.table import Table

        columns = {}
        for name in frame.columns:
            values = frame[name].to_numpy()
            if values.dtype.kind not in "biuf":
                values = np.asarray(frame[name].astype(str), dtype=str)  # FITS needs fixed-width strings
            columns[str(name)] = values
        Table(columns).write(handle, format="fits")
