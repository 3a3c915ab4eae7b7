"""[X/Fe]–[Fe/H] sequences of every element, the active method beside its reference.

Both planes are datashaded (``rasterize`` + ``dynspread``); the reference's running
median is drawn over the method's plane so that a biased or flattened sequence shows at
a glance, and the selected stars are overlaid in both. A table gives, per element, the
bias and robust scatter of the method's [X/Fe] against the reference. [X/Fe] comes from
``X_FE`` or ``X_H − FE_H`` (:mod:`labelexplorer.analysis.sequences`).
"""

from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from holoviews.operation.datashader import dynspread, rasterize

from ...analysis.sequences import binned_sequence, compare_sequences, element_over_iron, sequence_elements
from ...exceptions import LabelError
from .. import theme
from ..state import ExplorerState, source_prefix

__all__ = ["SequenceView", "sequence_columns"]


def sequence_columns(state: ExplorerState, source: str, element: str) -> list[str]:
    """Catalog columns needed to form [X/Fe] and [Fe/H] of *element* for *source*."""
    prefix = source_prefix(source)
    wanted = [f"{prefix}FE_H", f"{prefix}FE_H_ERR"]
    key = element.upper()
    for suffix in ("_FE", "_H"):
        wanted += [f"{prefix}{key}{suffix}", f"{prefix}{key}{suffix}_ERR"]
    return [c for c in wanted if c in state.catalog.columns]


class SequenceView(pn.viewable.Viewer):
    """[X/Fe] against [Fe/H] for the active element: method, reference, and the comparison table.

    Parameters
    ----------
    state : ExplorerState
    all_elements : bool
        Also draw small multiples of every element the method provides.

    Examples
    --------
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b"], "RIDGE__FE_H": [-1.0, 0.0],
    ...                                     "RIDGE__MG_H": [-0.7, 0.05]}))
    >>> SequenceView(state).sequence("ridge", "Mg")["X_FE"].round(2).tolist()
    [0.3, 0.05]
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    all_elements = param.Boolean(default=False, doc="Also show small multiples of every element.")
    width = param.Integer(default=420, doc="Width of each plane in pixels.")
    height = param.Integer(default=340, doc="Height of each plane in pixels.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self._planes = pn.pane.HoloViews(None, sizing_mode="fixed", width=2 * self.width + 120,
                                         height=self.height + 20)
        self._grid = pn.pane.HoloViews(None, visible=False)
        self._table = pn.pane.DataFrame(pd.DataFrame(), float_format="{:.3f}".format, width=480)
        self._message = pn.pane.Alert("", alert_type="info", visible=False)
        self.state.param.watch(self._refresh, ["element", "method", "reference", "catalog", "selection"])
        self.param.watch(self._refresh, ["all_elements"])
        self._refresh()

    # ---------------------------------------------------------------- data
    def sequence(self, source: str | None, element: str | None = None) -> pd.DataFrame | None:
        """``FE_H`` and ``X_FE`` of one source for the element (default: the active one); None if absent."""
        element = element or self.state.element
        if source is None:
            return None
        columns = sequence_columns(self.state, source, element)
        try:
            frame = self.state.frame(columns) if columns else None
            if frame is None:
                return None
            values, _ = element_over_iron(frame, element, source_prefix(source))
        except LabelError:
            return None
        return pd.DataFrame({"FE_H": frame[source_prefix(source) + "FE_H"].to_numpy(float), "X_FE": values})

    def comparison(self) -> pd.DataFrame:
        """Per element: bias and σ_MAD of the method's [X/Fe] against the reference's."""
        method, reference = self.state.method, self.state.reference
        if method is None or reference is None or method == reference:
            return pd.DataFrame()
        elements = [e for e in sequence_elements(self.state.columns, source_prefix(method))
                    if e in sequence_elements(self.state.columns, source_prefix(reference))]
        columns = [c for e in elements for s in (method, reference) for c in sequence_columns(self.state, s, e)]
        if not columns:
            return pd.DataFrame()
        frame = self.state.frame(columns)
        return compare_sequences(frame, source_prefix(method), source_prefix(reference), elements)

    # ---------------------------------------------------------------- drawing
    def _plane(self, data: pd.DataFrame, source: str, element: str, *, width: int, height: int):
        x = hv.Dimension("FE_H", label="[Fe/H] (dex)")
        y = hv.Dimension("X_FE", label=f"[{element}/Fe] (dex)")
        raster = rasterize(hv.Points(data, kdims=[x, y]), aggregator=ds.count(), width=width, height=height)
        return dynspread(raster, threshold=0.6, max_px=2).opts(
            cmap=theme.COUNT_CMAP, cnorm="eq_hist", width=width, height=height, title=f"{source}: [{element}/Fe]",
            tools=["hover"], colorbar=False)

    def selected_points(self, data: pd.DataFrame) -> hv.Points:
        """The selected stars (at most 20,000) in a source's sequence."""
        rows = np.asarray(self.state.selection)[:20000]
        return hv.Points(data.iloc[rows], kdims=["FE_H", "X_FE"]).opts(color=theme.SELECTION_COLOUR, size=3,
                                                                        alpha=0.7)

    def _median(self, data: pd.DataFrame, source: str):
        binned = binned_sequence(data["FE_H"], data["X_FE"])
        return hv.Curve(binned, "FE_H", "median", label=f"{source} median").opts(
            color=theme.source_colour(source), line_dash="dashed", line_width=2)

    def _refresh(self, *_) -> None:
        element = self.state.element
        method, reference = self.state.method, self.state.reference
        ours, theirs = self.sequence(method), self.sequence(reference)
        if ours is None and theirs is None:
            self._message.object = f"No source in this catalog provides [{element}/Fe] (or [{element}/H] and [Fe/H])."
            self._message.visible = True
            self._planes.object = None
        else:
            self._message.visible = False
            panels = []
            for source, data in ((method, ours), (reference, theirs)):
                if data is None:
                    continue
                plane = self._plane(data, source, element, width=self.width, height=self.height) * self.selected_points(data)
                if theirs is not None and source == method and reference != method:
                    plane = plane * self._median(theirs, reference) * self._median(data, method)
                panels.append(plane)
            self._planes.object = hv.Layout(panels).cols(2).opts(shared_axes=True)
        self._table.object = self.comparison()
        self._grid.visible = self.all_elements
        self._grid.object = self.grid() if self.all_elements else None

    def grid(self):
        """Small multiples of [X/Fe]–[Fe/H] for every element of the active method."""
        method = self.state.method
        if method is None:
            return None
        elements = sequence_elements(self.state.columns, source_prefix(method))
        panels = []
        for element in elements:
            data = self.sequence(method, element)
            if data is not None:
                panels.append(self._plane(data, method, element, width=220, height=180))
        return hv.Layout(panels).cols(4).opts(shared_axes=False) if panels else None

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.state.param.element, width=140),
                   pn.widgets.Checkbox.from_param(self.param.all_elements, label="all elements")),
            self._message, self._planes,
            pn.pane.Markdown("**Method against reference**, [X/Fe] per element (bias and σ_MAD in dex)"),
            self._table, self._grid)
