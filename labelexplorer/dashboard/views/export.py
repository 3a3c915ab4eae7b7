"""Export of the selected stars: a download button in the page, ``state.export`` in Python.

The file holds every catalog column of the selected stars, in catalog order, as CSV,
Parquet or FITS. Nothing is written on the server: the browser receives the bytes.
"""

from __future__ import annotations

import io

import panel as pn
import param

from ..state import EXPORT_FORMATS, ExplorerState

__all__ = ["ExportView"]


class ExportView(pn.viewable.Viewer):
    """How many stars are selected, a format choice and a download button.

    Parameters
    ----------
    state : ExplorerState
    format : {"csv", "parquet", "fits"}

    Examples
    --------
    >>> import pandas as pd
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b"], "TRUE__TEFF": [4000.0, 5000.0]}))
    >>> view = ExportView(state)
    >>> view.download.disabled
    True
    >>> state.select(["b"]); view._payload().read().decode().splitlines()
    ['ID,TRUE__TEFF', 'b,5000.0']
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    format = param.Selector(default="csv", objects=list(EXPORT_FORMATS), doc="File format of the export.")
    filename_stem = param.String(default="labelexplorer-selection", doc="Name of the downloaded file, without suffix.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.summary = pn.pane.Markdown("", css_classes=["selection-summary"])
        self.download = pn.widgets.FileDownload(callback=self._payload, filename=self._filename(),
                                                color="success", label="Download selection", width=230,
                                                embed=False)
        self.clear_button = pn.widgets.Button(label="clear selection", width=230)
        self.clear_button.on_click(lambda _: self.state.clear_selection())
        self.state.param.watch(self._update, ["selection"])
        self.param.watch(self._update, ["format"])
        self._update()

    def _filename(self) -> str:
        return f"{self.filename_stem}.{self.format}"

    def _payload(self) -> io.BytesIO:
        return io.BytesIO(self.state.export_bytes(self.format))

    def _update(self, *_) -> None:
        n = int(self.state.selection.size)
        self.summary.object = (f"**<span id='selection-count'>{n}</span> stars selected** of {len(self.state)}"
                               if n else "No stars selected: drag a box or lasso on a plane.")
        self.download.filename = self._filename()
        self.download.disabled = n == 0

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.summary, pn.widgets.RadioButtonGroup.from_param(self.param.format, width=230),
                         self.download, self.clear_button)
