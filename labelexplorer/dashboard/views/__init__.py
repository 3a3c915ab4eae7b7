"""Dashboard views: each a ``pn.viewable.Viewer`` with a ``state`` parameter, usable alone.

Importing this package imports Panel, HoloViews and Datashader and loads HoloViews'
Bokeh backend.
"""

from __future__ import annotations

import holoviews as hv

hv.extension("bokeh", logo=False)
