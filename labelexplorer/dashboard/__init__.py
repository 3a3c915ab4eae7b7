"""The dashboard: click a star, see its spectrum, sensitivity and uncertainties.

A :class:`~labelexplorer.dashboard.state.ExplorerState` holds the catalog and what the
user looks at; views (``labelexplorer.dashboard.views``) are ``pn.viewable.Viewer``
objects sharing one state, usable alone in a notebook or together in the served app
(``labelexplorer serve`` / ``labelexplorer demo``). Panel and HoloViews are imported only
when a view is first used, so the command line stays fast.

Examples
--------
>>> import pandas as pd
>>> from labelexplorer.dashboard import ExplorerState
>>> state = ExplorerState(pd.DataFrame({"ID": ["a"], "RIDGE__TEFF": [4800.0], "RIDGE__LOGG": [2.4]}))
>>> state.sources
['ridge']
"""

from __future__ import annotations

import importlib

__all__ = ["explore", "ExplorerState", "combine_catalog", "read_catalog", "UniverseSpectra", "GalaxySource"]

_LAZY = {
    "ExplorerState": "labelexplorer.dashboard.state",
    "combine_catalog": "labelexplorer.dashboard.state",
    "read_catalog": "labelexplorer.dashboard.state",
    "UniverseSpectra": "labelexplorer.dashboard.state",
    "GalaxySource": "labelexplorer.dashboard.state",
    "explore": "labelexplorer.dashboard.views.dashboard",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'labelexplorer.dashboard' has no attribute {name!r}")
