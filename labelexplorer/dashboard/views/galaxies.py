"""Galaxies: the mass–metallicity relation, predicted against true metallicity, and a gallery.

The galaxy table (:class:`~labelexplorer.dashboard.state.GalaxySource`) holds the true
(or catalog) ``oh_p50`` and ``log_mstar`` and, once a galaxy model has predicted, its
columns ``<METHOD>__OH_P50`` (``_ERR``...), in the star catalog's schema. The MZR is
drawn with the Tremonti et al. (2004) curve and the binned median and NMAD
(:mod:`labelexplorer.analysis.mzr`); a box
selection on it fills the gallery with those galaxies' cutouts and their true and
predicted metallicities. Without predictions the truth is shown alone; without
galaxies, an empty state.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ...analysis.metrics import nmad, rmse
from ...analysis.mzr import binned_mzr, tremonti_mzr
from .. import theme
from ..state import ExplorerState, catalog_sources, source_prefix

__all__ = ["GalaxyView", "TRUE_METALLICITY", "STELLAR_MASS"]

TRUE_METALLICITY = "oh_p50"
STELLAR_MASS = "log_mstar"
_TREMONTI_RANGE = (8.5, 11.5)  # log M* over which Tremonti et al. (2004) fitted their relation


class GalaxyView(pn.viewable.Viewer):
    """MZR with the Tremonti curve, predicted vs true metallicity, and a gallery of the selection.

    Parameters
    ----------
    state : ExplorerState
        Its ``galaxies`` (a GalaxySource) is what is shown.
    max_images : int
        Cutouts in the gallery.

    Examples
    --------
    >>> from labelexplorer.dashboard.state import GalaxySource
    >>> galaxies = GalaxySource(pd.DataFrame({"objID": ["1", "2"], "log_mstar": [9.5, 10.5],
    ...                                       "oh_p50": [8.8, 9.05], "GALAXY_CNN__OH_P50": [8.85, 9.0]}))
    >>> view = GalaxyView(ExplorerState(pd.DataFrame({"ID": ["s"]}), galaxies=galaxies))
    >>> view.methods(), view.scores().loc["galaxy-cnn", "rmse"].round(3)
    (['galaxy-cnn'], np.float64(0.05))
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    max_images = param.Integer(default=12, bounds=(0, 200), doc="Cutouts shown in the gallery.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self._mzr = pn.pane.HoloViews(None, sizing_mode="fixed", width=560, height=430)
        self._versus = pn.pane.HoloViews(None, sizing_mode="fixed", width=460, height=430)
        self._gallery = pn.GridBox(ncols=6)
        self._message = pn.pane.Alert("", alert_type="info", visible=False)
        self.state.param.watch(self._draw_gallery, ["galaxy_selection"])
        self.state.param.watch(self._refresh, ["galaxies"])
        self._refresh()

    @property
    def table(self) -> pd.DataFrame | None:
        """The galaxy table, or None."""
        return None if self.state.galaxies is None else self.state.galaxies.catalog

    def methods(self) -> list[str]:
        """Sources with a metallicity prediction in the galaxy table."""
        table = self.table
        if table is None:
            return []
        return [s for s in catalog_sources(table.columns) if source_prefix(s) + "OH_P50" in table.columns]

    def scores(self) -> pd.DataFrame:
        """RMSE and NMAD of each method's metallicity against the truth."""
        rows = {}
        for method in self.methods():
            predicted = self.table[source_prefix(method) + "OH_P50"].to_numpy(float)
            truth = self.table[TRUE_METALLICITY].to_numpy(float)
            rows[method] = {"n": int(np.isfinite(predicted).sum()), "rmse": rmse(predicted, truth),
                            "nmad": nmad(predicted, truth)}
        return pd.DataFrame.from_dict(rows, orient="index", columns=["n", "rmse", "nmad"])

    def select_box(self, bounds) -> np.ndarray:
        """Select galaxies with (log M*, true metallicity) inside ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = bounds
        mass = self.table[STELLAR_MASS].to_numpy(float)
        metal = self.table[TRUE_METALLICITY].to_numpy(float)
        inside = (mass >= min(x0, x1)) & (mass <= max(x0, x1)) & (metal >= min(y0, y1)) & (metal <= max(y0, y1))
        self.state.galaxy_selection = np.flatnonzero(inside)
        return self.state.galaxy_selection

    # ---------------------------------------------------------------- drawing
    def _refresh(self, *_) -> None:
        table = self.table
        if table is None or not {TRUE_METALLICITY, STELLAR_MASS} <= set(table.columns):
            self._message.object = "No galaxies were given at start-up (or their table lacks oh_p50 / log_mstar)."
            self._message.visible = True
            self._mzr.object = self._versus.object = None
            return
        self._message.visible = False
        self._mzr.object = self.mzr_figure()
        self._versus.object = self.versus_figure()
        self._draw_gallery()

    def mzr_figure(self):
        """MZR: galaxies, Tremonti curve, binned median ± NMAD of truth and predictions."""
        table = self.table
        mass = hv.Dimension(STELLAR_MASS, label=theme.axis_label("LOG_MSTAR"))
        metal = hv.Dimension(TRUE_METALLICITY, label=theme.axis_label("OH_P50"))
        points = hv.Points(table, kdims=[mass, metal], label="true").opts(
            color=theme.source_colour("true"), size=4, alpha=0.5, tools=["box_select", "hover"],
            active_tools=["box_select"])
        bounds = hv.streams.BoundsXY(source=points, bounds=None)
        bounds.add_subscriber(lambda bounds=None, **_: bounds is not None and self.select_box(bounds))
        self._bounds_stream = bounds
        grid = np.linspace(*_TREMONTI_RANGE, 100)
        layers = [points, hv.Curve((grid, tremonti_mzr(grid)), mass, metal, label="Tremonti et al. 2004").opts(
            color="#e6550d", line_width=2)]
        series = {"true": table[TRUE_METALLICITY].to_numpy(float)}
        series.update({m: table[source_prefix(m) + "OH_P50"].to_numpy(float) for m in self.methods()})
        for name, values in series.items():
            binned = binned_mzr(table[STELLAR_MASS].to_numpy(float), values)
            if not binned.empty:
                layers.append(hv.ErrorBars((binned["mass"], binned["median"], binned["nmad"]), mass,
                                           [metal, "scatter"], label=f"{name} median ± NMAD").opts(
                    color=theme.source_colour(name), line_width=2))
        return hv.Overlay(layers).opts(width=540, height=420, legend_position="bottom_right", show_grid=True,
                                       title="Mass–metallicity relation")

    def versus_figure(self):
        """Predicted against true metallicity for every method (None without predictions)."""
        methods = self.methods()
        if not methods:
            return hv.Text(0.5, 0.5, "no galaxy model has predicted yet").opts(width=440, height=420,
                                                                               xaxis=None, yaxis=None)
        truth = self.table[TRUE_METALLICITY].to_numpy(float)
        lo, hi = np.nanpercentile(truth, [0.5, 99.5])
        axes = [hv.Dimension("true", label="true 12 + log(O/H)"), hv.Dimension("predicted", label="predicted")]
        layers = [hv.Curve(([lo, hi], [lo, hi]), *axes).opts(color="#999999", line_dash="dashed")]
        scores = self.scores()
        for method in methods:
            predicted = self.table[source_prefix(method) + "OH_P50"].to_numpy(float)
            label = f"{method}: RMSE {scores.loc[method, 'rmse']:.3f}, NMAD {scores.loc[method, 'nmad']:.3f}"
            layers.append(hv.Points((truth, predicted), kdims=axes, label=label).opts(
                color=theme.source_colour(method), size=4, alpha=0.6))
        return hv.Overlay(layers).opts(width=440, height=420, legend_position="top_left", show_grid=True,
                                       title="Predicted against true metallicity")

    def gallery_items(self) -> list[dict]:
        """The galaxies shown in the gallery: objID, image path, true and predicted metallicity."""
        table = self.table
        if table is None:
            return []
        rows = self.state.galaxy_selection if self.state.galaxy_selection.size else np.arange(len(table))
        items = []
        for row in rows[: self.max_images]:
            record = table.iloc[int(row)]
            predicted = {m: float(record[source_prefix(m) + "OH_P50"]) for m in self.methods()}
            items.append({"objID": record["objID"], "path": self.state.galaxies.image_path(record["objID"]),
                          "true": float(record[TRUE_METALLICITY]), "predicted": predicted})
        return items

    def _draw_gallery(self, *_) -> None:
        cards = []
        for item in self.gallery_items():
            caption = f"true {item['true']:.2f}" + "".join(
                f"<br>{m} {v:.2f}" for m, v in item["predicted"].items() if np.isfinite(v))
            image = pn.pane.JPG(str(item["path"]), width=128, height=128) if item["path"] else pn.Spacer(
                width=128, height=128)
            cards.append(pn.Column(image, pn.pane.HTML(f"<small>{item['objID']}<br>{caption}</small>"), width=140))
        self._gallery.objects = cards

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self._message, pn.Row(self._mzr, self._versus),
                         pn.pane.Markdown("**Gallery** (box-select on the MZR to choose galaxies)"), self._gallery)
