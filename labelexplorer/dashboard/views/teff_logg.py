"""The label plane (Teff–logg by default, any pair of labels): millions of stars, one click each.

Stars are drawn with HoloViews ``rasterize`` + ``dynspread`` (Datashader), never as one
glyph per star, so 10^6–10^7 stars stay interactive; coloured by count, any label or
any uncertainty of the active method. Temperature and gravity axes are inverted, as in
every HR diagram. A click picks the nearest star in *screen* coordinates
(:class:`NearestStar`: a KD-tree in range-normalised coordinates plus an exact
correction for the current zoom) and makes it the active star; box and lasso selections
set the state's selection. Zoomed in to fewer than ``max_points`` stars, they are drawn
individually on top of the raster.
"""

from __future__ import annotations

import threading
import weakref

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from holoviews.operation.datashader import dynspread, rasterize
from scipy.spatial import cKDTree

from ...analysis.selection import in_polygon
from .. import theme
from ..state import ExplorerState

__all__ = ["NearestStar", "LabelPlane", "nearest_star_tree"]

_INVERTED = ("TEFF", "LOG_TEFF", "LOGG")  # HR-diagram convention: hot and dwarf stars to the left/bottom
_MAX_CANDIDATES = 4096  # beyond this many tree candidates, a brute-force pass is cheaper


class NearestStar:
    """Nearest star to a click, in the plot's screen coordinates.

    The tree is built once in coordinates normalised by the full data range. A zoomed
    view stretches the axes by different factors ``a`` and ``b``, so the screen distance
    is at least ``min(a, b)`` times the tree distance: among the ``k`` nearest stars in
    the tree, the one nearest on screen is the answer as soon as ``min(a, b)`` times the
    ``k``-th tree distance exceeds its screen distance; otherwise ``k`` grows fourfold (up
    to a few thousand, after which one vectorised pass over every star is cheaper).

    Parameters
    ----------
    x, y : array_like
        Coordinates of every row; rows with NaN are never picked.

    Examples
    --------
    >>> tree = NearestStar([4000.0, 5000.0, 6000.0, np.nan], [1.0, 4.0, 4.5, 2.0])
    >>> tree.nearest(4900.0, 3.0)
    1
    >>> tree.nearest(5600.0, 4.4, x_range=(5500.0, 6100.0), y_range=(3.5, 5.0))
    2
    """

    def __init__(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        good = np.isfinite(x) & np.isfinite(y)
        self.rows = np.flatnonzero(good)
        points = np.column_stack([x[good], y[good]])
        self.offset = points.min(axis=0) if points.size else np.zeros(2)
        span = points.max(axis=0) - self.offset if points.size else np.ones(2)
        self.scale = np.where(span > 0, span, 1.0)
        # unbalanced, non-compact nodes: several times faster to build, queries barely slower
        self.tree = (cKDTree((points - self.offset) / self.scale, balanced_tree=False, compact_nodes=False)
                     if points.size else None)

    def __len__(self) -> int:
        return int(self.rows.size)

    def nearest(self, x: float, y: float, x_range=None, y_range=None) -> int | None:
        """Row position of the star nearest to (x, y) on screen, or None when there is none.

        *x_range* and *y_range* are the plot's current axis ranges (default: the full data).
        """
        if self.tree is None or not (np.isfinite(x) and np.isfinite(y)):
            return None
        query = (np.array([x, y]) - self.offset) / self.scale
        stretch = np.array([self._stretch(x_range, 0), self._stretch(y_range, 1)])
        k, n = 8, len(self)
        while k <= _MAX_CANDIDATES:
            distance, index = self.tree.query(query, k=min(k, n))
            distance, index = np.atleast_1d(distance), np.atleast_1d(index)
            screen = np.hypot(*((self.tree.data[index] - query) * stretch).T)
            best = int(np.argmin(screen))
            # every star beyond the k nearest lies at least stretch.min() * distance[-1] away on screen
            if k >= n or stretch.min() * distance[-1] >= screen[best]:
                return int(self.rows[index[best]])
            k *= 4
        # far from every star in a strongly stretched view: one vectorised pass bounds the cost
        screen = np.hypot(*((self.tree.data - query) * stretch).T)
        return int(self.rows[np.argmin(screen)])

    def _stretch(self, axis_range, axis: int) -> float:
        """Screen units per tree unit along *axis* for a view of *axis_range*."""
        if axis_range is None or None in tuple(axis_range):
            return 1.0
        width = abs(float(axis_range[1]) - float(axis_range[0]))
        return float(self.scale[axis] / width) if width > 0 else 1.0


# Trees are shared by every session showing the same catalog columns (one per process).
_TREES: dict[tuple, NearestStar] = {}


_TREES_LOCK = threading.Lock()


def nearest_star_tree(state: ExplorerState, x_column: str, y_column: str) -> NearestStar:
    """The (cached) :class:`NearestStar` of two catalog columns of *state*'s catalog.

    Built once per process and catalog, whichever session asks first (the plane starts
    building it in the background as soon as it is drawn, so the first click rarely waits).
    """
    key = (id(state.catalog), x_column, y_column)
    with _TREES_LOCK:
        if key not in _TREES:
            frame = state.table([x_column, y_column])
            _TREES[key] = NearestStar(frame[x_column].to_numpy(), frame[y_column].to_numpy())
            weakref.finalize(state.catalog, _TREES.pop, key, None)
        return _TREES[key]


def _label_choices(state: ExplorerState) -> list[str]:
    return list(state.param.label.objects) or ["TEFF", "LOGG"]


class LabelPlane(pn.viewable.Viewer):
    """Datashaded plane of two labels of one source; click for a star, drag for a selection.

    Parameters
    ----------
    state : ExplorerState
    x, y : str
        Labels on the axes (default Teff and logg).
    colour : str
        ``"count"`` or a quantity of the plotted source (a label or an uncertainty).
    show : {"method", "reference"}
        Plot the state's active method or its reference.

    Examples
    --------
    >>> import pandas as pd
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b"], "RIDGE__TEFF": [4000.0, 5000.0],
    ...                                     "RIDGE__LOGG": [1.0, 4.0]}))
    >>> plane = LabelPlane(state)
    >>> plane.click(4900.0, 3.9), state.star
    ('b', 'b')
    >>> plane.select_box((3500.0, 0.0, 4500.0, 2.0)).tolist()
    [0]
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    x = param.Selector(default="TEFF", objects=["TEFF"], doc="Label on the horizontal axis.")
    y = param.Selector(default="LOGG", objects=["LOGG"], doc="Label on the vertical axis.")
    colour = param.Selector(default="count", objects=["count"],
                            doc="Colour by star count, or by the mean of a label or uncertainty per pixel.")
    show = param.Selector(default="method", objects=["method", "reference"],
                          doc="Plot the active method or the reference source.")
    max_points = param.Integer(default=5000, bounds=(0, None),
                               doc="Zoomed in to at most this many stars, draw them individually.")
    width = param.Integer(default=theme.PLOT_WIDTH, doc="Plot width in pixels.")
    height = param.Integer(default=theme.PLOT_HEIGHT, doc="Plot height in pixels.")
    last_tap = param.Tuple(default=None, length=2, allow_None=True, doc="Data coordinates of the last click.")

    def __init__(self, state: ExplorerState, **params):
        chosen = {name: params.pop(name) for name in ("x", "y", "colour") if name in params}
        super().__init__(state=state, **params)
        self._pane = pn.pane.HoloViews(sizing_mode="fixed", width=self.width + 90, height=self.height + 10)
        self._message = pn.pane.Alert("", alert_type="info", visible=False)
        self._update_choices()
        self.param.update(**chosen)  # validated against the catalog's labels, known only now
        self._refreshing = False
        self._refresh()
        self.param.watch(self._refresh, ["x", "y", "colour", "show"])
        self.state.param.watch(self._refresh, ["catalog", "method", "reference"])

    # ---------------------------------------------------------------- data
    @property
    def source(self) -> str | None:
        """The source plotted: the active method or the reference."""
        return self.state.method if self.show == "method" else self.state.reference

    def _refresh(self, *_) -> None:
        """Update the widget choices, then draw once (however many parameters changed)."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            self._update_choices()
        finally:
            self._refreshing = False
        self._redraw()

    def _update_choices(self) -> None:
        labels = _label_choices(self.state)
        self.param.x.objects = labels
        self.param.y.objects = labels
        if self.x not in labels:
            self.x = "TEFF" if "TEFF" in labels else labels[0]
        if self.y not in labels:
            self.y = "LOGG" if "LOGG" in labels else labels[min(1, len(labels) - 1)]
        choices = ["count", *self.state.quantities_of(self.source)]
        self.param.colour.objects = choices
        if self.colour not in choices:
            self.colour = "count"

    def _columns(self) -> tuple[str | None, str | None, str | None]:
        column = self.state.column
        colour = None if self.colour == "count" else column(self.source, self.colour)
        return column(self.source, self.x), column(self.source, self.y), colour

    def tree(self) -> NearestStar | None:
        """The nearest-star search of the plotted columns (None when they are missing)."""
        x_column, y_column, _ = self._columns()
        if x_column is None or y_column is None:
            return None
        return nearest_star_tree(self.state, x_column, y_column)

    # ---------------------------------------------------------------- interaction (callable from tests)
    def click(self, x: float, y: float, x_range=None, y_range=None) -> str | None:
        """Make the star nearest to the data point (x, y) active; returns its ID."""
        self.last_tap = (float(x), float(y))
        tree = self.tree()
        row = None if tree is None else tree.nearest(x, y, x_range or self._view_range("x"),
                                                     y_range or self._view_range("y"))
        if row is not None:
            self.state.select_star(row)
        return None if row is None else self.state.star

    def select_box(self, bounds) -> np.ndarray:
        """Select the plotted stars inside ``(x0, y0, x1, y1)``; returns their row positions."""
        x, y = self._xy()
        x0, y0, x1, y1 = bounds
        inside = ((x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1)))
        rows = np.flatnonzero(inside)
        self.state.select(rows)
        return rows

    def select_lasso(self, vertices) -> np.ndarray:
        """Select the plotted stars inside a polygon ``[(x, y), ...]``; returns their row positions."""
        vertices = np.asarray(vertices, dtype=float)
        x, y = self._xy()
        good = np.isfinite(x) & np.isfinite(y)
        rows = np.flatnonzero(good)[in_polygon(x[good], y[good], vertices)] if len(vertices) >= 3 else []
        self.state.select(np.asarray(rows, dtype=np.int64))
        return self.state.selection

    def _xy(self) -> tuple[np.ndarray, np.ndarray]:
        x_column, y_column, _ = self._columns()
        if x_column is None or y_column is None:
            n = len(self.state)
            return np.full(n, np.nan), np.full(n, np.nan)
        frame = self.state.table([x_column, y_column])
        return frame[x_column].to_numpy(dtype=float), frame[y_column].to_numpy(dtype=float)

    def _view_range(self, axis: str):
        stream = getattr(self, "_range_stream", None)
        return None if stream is None else getattr(stream, f"{axis}_range")

    # ---------------------------------------------------------------- drawing
    def _redraw(self, *_) -> None:
        x_column, y_column, colour_column = self._columns()
        if x_column is None or y_column is None:
            missing = self.x if x_column is None else self.y
            self._message.object = (f"**{self.source or 'No source'}** has no **{missing}** in this catalog: "
                                    "choose other axes or another method.")
            self._message.visible = True
            self._pane.object = None
            return
        self._message.visible = False
        self._pane.object = self.figure(x_column, y_column, colour_column)
        threading.Thread(target=nearest_star_tree, args=(self.state, x_column, y_column), daemon=True).start()

    def figure(self, x_column: str, y_column: str, colour_column: str | None):
        """The HoloViews overlay: raster, zoomed-in stars, selection and active star."""
        catalog = self.state.table([x_column, y_column] + ([colour_column] if colour_column else []))
        x_dim = hv.Dimension(x_column, label=theme.axis_label(self.x))
        y_dim = hv.Dimension(y_column, label=theme.axis_label(self.y))
        vdims = [hv.Dimension(colour_column, label=theme.axis_label(self.colour))] if colour_column else []
        points = hv.Points(catalog, kdims=[x_dim, y_dim], vdims=vdims)
        aggregator = ds.count() if colour_column is None else ds.mean(colour_column)
        raster = rasterize(points, aggregator=aggregator, width=self.width, height=self.height, dynamic=True)
        self.raster = raster
        self._tap = hv.streams.Tap(source=raster, x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._bounds = hv.streams.BoundsXY(source=raster, bounds=None)
        self._bounds.add_subscriber(self._on_bounds)
        self._lasso = hv.streams.Lasso(source=raster, geometry=None)
        self._lasso.add_subscriber(self._on_lasso)
        self._range_stream = hv.streams.RangeXY(source=raster)
        cmap = theme.COUNT_CMAP if colour_column is None else (
            theme.ERROR_CMAP if colour_column.endswith(("_ERR", "_STD")) else theme.VALUE_CMAP)
        shaded = dynspread(raster, threshold=0.6, max_px=3).opts(
            cmap=cmap, cnorm="eq_hist" if colour_column is None else "linear", colorbar=True,
            width=self.width, height=self.height, tools=["tap", "box_select", "lasso_select", "hover"],
            active_tools=["box_select", "wheel_zoom"], default_tools=["pan", "wheel_zoom", "reset", "save"],
            invert_xaxis=self.x in _INVERTED, invert_yaxis=self.y in _INVERTED, clipping_colors={"NaN": (0, 0, 0, 0)},
            xlim=self._limits(catalog[x_column]), ylim=self._limits(catalog[y_column]),
            title=f"{self.source}: {theme.axis_label(self.y)} vs {theme.axis_label(self.x)}")
        zoomed = hv.DynamicMap(self._zoomed_points, streams=[self._range_stream])
        selected = hv.DynamicMap(self._selected_points, streams=[hv.streams.Params(self.state, ["selection"])])
        active = hv.DynamicMap(self._active_point, streams=[hv.streams.Params(self.state, ["star"])])
        self._dims = (x_dim, y_dim, vdims)
        return (shaded * zoomed * selected * active).opts(hv.opts.Overlay(legend_position="top_left"))

    @staticmethod
    def _limits(values, pad: float = 0.04) -> tuple[float, float]:
        """Data range with a margin, so that stars on the edge are not cut in half."""
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return (np.nan, np.nan)
        lo, hi = float(finite.min()), float(finite.max())
        margin = pad * (hi - lo) if hi > lo else 0.5
        return (lo - margin, hi + margin)

    def _frame(self, rows) -> pd.DataFrame:
        """The plotted columns of some rows (copies only those rows)."""
        x_dim, y_dim, vdims = self._dims
        columns = [x_dim.name, y_dim.name] + [d.name for d in vdims]
        frame = self.state.table(columns)
        return frame.iloc[np.asarray(rows, dtype=np.int64), frame.columns.get_indexer(columns)]

    def _points(self, rows, **style):
        x_dim, y_dim, vdims = self._dims
        return hv.Points(self._frame(rows), kdims=[x_dim, y_dim], vdims=vdims).opts(**style)

    def _zoomed_points(self, x_range=None, y_range=None):
        """Individual stars when the view holds few enough of them (else nothing)."""
        x_dim, y_dim, vdims = self._dims
        if x_range is None or y_range is None:
            return hv.Points([], kdims=[x_dim, y_dim], vdims=vdims)
        x, y = self._xy()
        inside = ((x >= min(x_range)) & (x <= max(x_range)) & (y >= min(y_range)) & (y <= max(y_range)))
        rows = np.flatnonzero(inside)
        if rows.size > self.max_points:
            rows = rows[:0]
        style = dict(size=5, color=vdims[0].name if vdims else "#444444", cmap=theme.VALUE_CMAP,
                     tools=["hover"], muted_alpha=0)
        return self._points(rows, **style)

    def _selected_points(self, selection=None):
        rows = np.asarray(self.state.selection)
        if rows.size > 20 * self.max_points:  # huge selections: a sample shows where they are
            rows = rows[:: rows.size // (20 * self.max_points) + 1]
        return self._points(rows, size=3, color=theme.SELECTION_COLOUR, alpha=0.6, tools=[])

    def _active_point(self, star=None):
        rows = [] if self.state.star is None else list(self.state.positions([self.state.star]))
        return self._points(rows, size=16, fill_alpha=0, line_color=theme.ACTIVE_STAR_COLOUR, line_width=3,
                            marker="circle", tools=[])

    # ---------------------------------------------------------------- stream callbacks
    def _on_tap(self, x=None, y=None, **_) -> None:
        if x is not None and y is not None:
            self.click(x, y)

    def _on_bounds(self, bounds=None, **_) -> None:
        if bounds is not None:
            self.select_box(bounds)

    def _on_lasso(self, geometry=None, **_) -> None:
        if geometry is not None and len(geometry) >= 3:
            self.select_lasso(geometry)

    # ---------------------------------------------------------------- layout
    def controls(self) -> pn.viewable.Viewable:
        """Widgets of this view (axes, colour, source)."""
        return pn.Param(self, parameters=["x", "y", "colour", "show"], show_name=False,
                        widgets={"show": pn.widgets.RadioButtonGroup}, width=260)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.controls()), self._message, self._pane)
