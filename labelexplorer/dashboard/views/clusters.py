"""Cluster homogeneity: members' abundance spread against their mean uncertainty, per source.

For the chosen cluster (``CLUSTER`` column of the catalog), each source's spread of
[Fe/H] and [X/Fe] among members (dots) is drawn beside its mean quoted uncertainty
(dashes), as in Leung & Bovy (2019) Figs. 12–13; the Mg–Al plane of the members shows
whether a globular cluster's real anticorrelation survives (computations in
:mod:`labelexplorer.analysis.clusters`).
"""

from __future__ import annotations

import holoviews as hv
import pandas as pd
import panel as pn
import param

from ...analysis.clusters import homogeneity_report, members, mg_al
from ...analysis.sequences import sequence_elements
from ...exceptions import LabelError
from .. import theme
from ..state import ExplorerState, source_prefix
from .sequences import sequence_columns

__all__ = ["ClusterView"]

_PANEL, _PANELS_PER_ROW = 230, 4  # size of each Mg-Al panel (px) and panels per row


class ClusterView(pn.viewable.Viewer):
    """Homogeneity of one cluster for every source, and its Mg–Al plane.

    Parameters
    ----------
    state : ExplorerState
    cluster : str
        A name from the catalog's ``CLUSTER`` column.

    Examples
    --------
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b", "c"], "CLUSTER": ["M67", "M67", ""],
    ...                                     "TRUE__FE_H": [0.01, -0.01, -0.5]}))
    >>> view = ClusterView(state)
    >>> view.cluster, round(float(view.report()["spread"][0]), 4)
    ('M67', 0.0141)
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    cluster = param.Selector(default=None, objects=[], allow_None=True, doc="The cluster shown.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self._spread = pn.pane.HoloViews(None, sizing_mode="fixed", width=900, height=360)
        self._mg_al = pn.pane.HoloViews(None, sizing_mode="fixed", width=(_PANEL + 20) * _PANELS_PER_ROW + 60,
                                        height=_PANEL + 30)
        self._table = pn.pane.DataFrame(pd.DataFrame(), float_format="{:.3f}".format, max_height=400)
        self._message = pn.pane.Alert("", alert_type="info", visible=False)
        self._update_clusters()
        self.state.param.watch(self._on_catalog, ["catalog"])
        self.state.param.watch(self._refresh, ["method", "reference"])
        self.param.watch(self._refresh, ["cluster"])
        self._refresh()

    def _on_catalog(self, *_) -> None:
        self._update_clusters()
        self._refresh()

    def _update_clusters(self) -> None:
        if "CLUSTER" not in self.state.catalog.columns:
            self.param.cluster.objects = []
            self.cluster = None
            return
        names = sorted(set(self.state.frame(["CLUSTER"])["CLUSTER"].astype(str)) - {"", "nan", "None"})
        self.param.cluster.objects = names
        if self.cluster not in names:
            self.cluster = names[0] if names else None

    def sources(self) -> dict[str, str]:
        """Sources compared: every source of the catalog, display name -> prefix."""
        return {source: source_prefix(source) for source in self.state.sources}

    def labels(self) -> list[str]:
        """FE_H and every [X/Fe] some source provides."""
        elements = []
        for prefix in self.sources().values():
            elements += [e for e in sequence_elements(self.state.columns, prefix) if e not in elements]
        return ["FE_H"] + [f"{e.upper()}_FE" for e in elements]

    def _frame(self) -> pd.DataFrame:
        columns = ["CLUSTER"]
        for source in self.state.sources:
            for element in ("Fe", *[label[:-3] for label in self.labels()[1:]]):
                columns += sequence_columns(self.state, source, element)
        return self.state.frame(columns)

    def report(self) -> pd.DataFrame:
        """Spread and mean uncertainty of every label for every source in the chosen cluster."""
        if self.cluster is None:
            return pd.DataFrame()
        return homogeneity_report(self._frame(), self.sources(), self.labels(), clusters=[self.cluster])

    def mg_al(self) -> dict:
        """Mg–Al result (:func:`labelexplorer.analysis.clusters.mg_al`) per source that has both."""
        if self.cluster is None:
            return {}
        frame = self._frame()
        mask = members(frame, self.cluster)
        out = {}
        for name, prefix in self.sources().items():
            try:
                out[name] = mg_al(frame, mask, prefix)
            except LabelError:
                continue
        return out

    def _refresh(self, *_) -> None:
        if self.cluster is None:
            self._message.object = "This catalog has no `CLUSTER` column (or no cluster members)."
            self._message.visible = True
            self._spread.object = self._mg_al.object = None
            self._table.object = pd.DataFrame()
            return
        self._message.visible = False
        report = self.report()
        self._table.object = report.drop(columns=["cluster"]).set_index(["label", "source"])
        self._spread.object = self._spread_plot(report)
        self._mg_al.object = self._mg_al_plot()

    def _spread_plot(self, report: pd.DataFrame):
        layers = []
        for source, part in report.groupby("source", sort=False):
            colour = theme.source_colour(source)
            layers.append(hv.Scatter(part, "label", "spread", label=f"{source} spread").opts(
                color=colour, size=9, marker="circle"))
            if part["mean_error"].notna().any():
                layers.append(hv.Scatter(part, "label", "mean_error", label=f"{source} mean σ").opts(
                    color=colour, size=14, marker="dash", line_width=3))
        if not layers:
            return None
        return hv.Overlay(layers).opts(
            width=880, height=340, xrotation=60, logy=True, legend_position="right", show_grid=True,
            ylabel="dex", xlabel="", title=f"{self.cluster}: members' spread (●) against mean uncertainty (—)")

    def _mg_al_plot(self):
        results = self.mg_al()
        panels = []
        for source, result in results.items():
            if result.n < 2:
                continue
            title = f"{source}: r {result.pearson_r:.2f}, σ[Al/Fe] {result.al_spread:.2f}"
            panels.append(hv.Scatter((result.mg, result.al), "[Mg/Fe]", "[Al/Fe]").opts(
                color=theme.source_colour(source), size=5, width=_PANEL, height=_PANEL, title=title,
                fontsize={"title": 10}))
        if not panels:
            return None
        self._mg_al.height = (_PANEL + 30) * -(-len(panels) // _PANELS_PER_ROW)
        return hv.Layout(panels).cols(_PANELS_PER_ROW).opts(shared_axes=True)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.widgets.Select.from_param(self.param.cluster, width=200), self._message, self._spread,
                         pn.pane.Markdown("**Mg–Al of the members** (a globular cluster keeps a real anticorrelation)"),
                         self._mg_al, self._table)
