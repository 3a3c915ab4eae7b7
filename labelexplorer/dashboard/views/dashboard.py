"""The whole dashboard as one Viewer, and :func:`explore`, its entry point in notebooks.

:class:`Dashboard` wires every view to one :class:`~labelexplorer.dashboard.state.ExplorerState`:
the shared selectors (method, reference, label, element) and the export sit in the
sidebar, the views in tabs. ``app.py`` puts the same two parts into a page template when
served, so what a notebook shows is what a colleague gets from ``labelexplorer serve``.
"""

from __future__ import annotations

from pathlib import Path

import panel as pn
import param

from ..state import ExplorerState, GalaxySource, UniverseSpectra, read_catalog
from .clusters import ClusterView
from .export import ExportView
from .galaxies import GalaxyView
from .inspector import StarInspector
from .sensitivity import SensitivityView
from .sequences import SequenceView
from .teff_logg import LabelPlane

__all__ = ["Dashboard", "explore"]

_TITLE = "labelexplorer"


class Dashboard(pn.viewable.Viewer):
    """Every view of the dashboard on one state.

    Parameters
    ----------
    state : ExplorerState
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.plane = LabelPlane(state)
        self.inspector = StarInspector(state)
        self.sequences = SequenceView(state)
        self.clusters = ClusterView(state)
        self.sensitivity = SensitivityView(state)
        self.galaxies = GalaxyView(state)
        self.export = ExportView(state)

    def sidebar(self) -> pn.viewable.Viewable:
        """Shared selectors and the export."""
        selectors = pn.Param(self.state, parameters=["method", "reference", "label", "element"], show_name=False,
                             width=240)
        return pn.Column("### Shown", selectors, "### Selection", self.export, width=260)

    def main(self) -> pn.viewable.Viewable:
        """The views, in tabs (only the visible tab is rendered in the browser)."""
        stars = pn.Column(pn.Row(self.plane, self.inspector.summary_panel()), self.inspector.plots_panel())
        return pn.Tabs(("Stars", stars), ("Sequences", self.sequences), ("Clusters", self.clusters),
                       ("Sensitivity & COD", self.sensitivity), ("Galaxies", self.galaxies), dynamic=True,
                       sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.sidebar(), self.main())


def explore(catalog=None, *, universe=None, models=None, spectra=None, galaxies=None, **state_params) -> Dashboard:
    """The dashboard for a notebook (or for ``pn.serve``).

    Parameters
    ----------
    catalog : DataFrame, path or list of paths, or ExplorerState
        A catalog in the dashboard schema (see :mod:`labelexplorer.dashboard.state`),
        catalog files (Parquet, CSV, FITS), or a ready state.
    universe : labelexplorer.mock.Universe or path, optional
        A mock universe: gives every star's spectrum and the galaxies.
    models : dict, optional
        Fitted models by source name (sensitivities, model spectra, COD).
    spectra, galaxies : optional
        A spectrum source and a :class:`GalaxySource`, overriding the universe's.
    **state_params
        Initial ``method``, ``label``, ``star``... of the state.

    Returns
    -------
    Dashboard
        Display it in a notebook (after ``pn.extension(inline=True)``), or reach the
        state and views through ``.state``, ``.plane``, ``.inspector``...

    Examples
    --------
    >>> import pandas as pd
    >>> dashboard = explore(pd.DataFrame({"ID": ["a", "b"], "RIDGE__TEFF": [4000.0, 5000.0],
    ...                                   "RIDGE__LOGG": [1.0, 4.0]}))
    >>> dashboard.plane.click(4100.0, 1.2), dashboard.state.star
    ('a', 'a')
    """
    if isinstance(catalog, ExplorerState):
        return Dashboard(catalog)
    if isinstance(catalog, (str, Path)) or (isinstance(catalog, (list, tuple)) and catalog and
                                             isinstance(catalog[0], (str, Path))):
        catalog = read_catalog([catalog] if isinstance(catalog, (str, Path)) else catalog)
    if universe is not None:
        spectra = spectra if spectra is not None else UniverseSpectra(universe)
        if galaxies is None:
            galaxies = GalaxySource.from_universe(spectra.universe)
    state = ExplorerState(catalog, models=models, spectra=spectra, galaxies=galaxies, **state_params)
    return Dashboard(state)
