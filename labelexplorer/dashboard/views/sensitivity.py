"""Mean sensitivity of subsets of stars over wavelength, and SLAM's COD spectra, over the windows.

Which pixels does a method use for a label, and does that change between metal-poor
and metal-rich stars? This view averages ``model.sensitivity(spectra, label)`` over two
subsets (the current selection, metal-poor, metal-rich or any star with a spectrum; at
most ``max_stars`` each) and draws both curves with the element's windows shaded. When a
model provides coefficients of dependence (SLAM's ``cod()``), the full and per-label COD
spectra are drawn below.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from ...exceptions import LabelExplorerError
from .. import theme
from ..state import ExplorerState, label_element
from .inspector import element_windows

__all__ = ["SensitivityView", "SUBSETS"]

SUBSETS = ("selection", "metal-poor", "metal-rich", "all with spectra")
_METAL_POOR, _METAL_RICH = -0.5, 0.0  # [Fe/H] limits of the subsets (dex)


class SensitivityView(pn.viewable.Viewer):
    """d label / d pixel averaged over two subsets, with the windows of the label's element.

    Parameters
    ----------
    state : ExplorerState
    first, second : str
        Subsets compared (see :data:`SUBSETS`).
    max_stars : int
        Stars per subset used for the mean (evenly spaced through the subset).

    Examples
    --------
    >>> import pandas as pd
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b", "c"], "RIDGE__FE_H": [-1.2, -0.1, 0.3]}))
    >>> view = SensitivityView(state)
    >>> view.subset_rows("metal-poor").tolist(), view.subset_rows("metal-rich").tolist()
    ([0], [2])
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    first = param.Selector(default="metal-poor", objects=list(SUBSETS), doc="First subset of stars.")
    second = param.Selector(default="metal-rich", objects=list(SUBSETS), doc="Second subset of stars.")
    max_stars = param.Integer(default=40, bounds=(1, 2000), doc="Stars per subset used for the mean sensitivity.")
    width = param.Integer(default=900, doc="Plot width in pixels.")
    status = param.String(default="", doc="Why a curve is missing, if one is.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.compute_button = pn.widgets.Button(label="compute sensitivities", color="primary", width=200)
        self.compute_button.on_click(lambda _: self.compute())
        self._plot = pn.pane.HoloViews(None, sizing_mode="fixed", width=self.width + 160, height=300)
        self._cod = pn.pane.HoloViews(None, sizing_mode="fixed", width=self.width + 160, height=300)
        self._status = pn.pane.Markdown("")
        self.curves: dict[str, np.ndarray] = {}
        self.state.param.watch(self._draw_cod, ["method", "label", "element"])
        self._draw_cod()

    # ---------------------------------------------------------------- data
    def subset_rows(self, subset: str) -> np.ndarray:
        """Catalog rows of a subset, restricted to stars with spectra the method predicted."""
        method = self.state.method
        feh_column = self.state.column(method, "FE_H") or self.state.column(self.state.reference, "FE_H")
        first_label = next(iter(self.state.labels_of(method)), None)
        predicted = self.state.column(method, first_label) if first_label else None
        if predicted is None:
            return np.empty(0, dtype=np.int64)
        values = self.state.frame([predicted]).iloc[:, 0].to_numpy(dtype=float)
        usable = np.isfinite(values)
        if subset == "selection":
            chosen = np.zeros(len(self.state), bool)
            chosen[self.state.selection] = True
            usable &= chosen
        elif subset in ("metal-poor", "metal-rich"):
            if feh_column is None:
                return np.empty(0, dtype=np.int64)
            feh = self.state.frame([feh_column]).iloc[:, 0].to_numpy(dtype=float)
            usable &= (feh < _METAL_POOR) if subset == "metal-poor" else (feh > _METAL_RICH)
        return np.flatnonzero(usable)

    def _spectra(self, rows: np.ndarray):
        if rows.size > self.max_stars:
            rows = rows[np.linspace(0, rows.size - 1, self.max_stars).astype(int)]
        ids = list(self.state.ids_at(rows))
        source = self.state.spectra
        if hasattr(source, "batch"):
            return source.batch(ids)
        from ...spectra import Spectra

        return Spectra.concatenate([source.spectrum(i) for i in ids])

    def compute(self) -> dict[str, np.ndarray]:
        """Mean sensitivity of the active method's label for both subsets; draws and returns them."""
        self.curves, notes = {}, []
        model = self.state.models.get(self.state.method)
        label = self.state.label
        if model is None:
            notes.append(f"No fitted {self.state.method} model was loaded: sensitivities need the model.")
        elif self.state.spectra is None:
            notes.append("No spectrum source was given at start-up.")
        else:
            names = getattr(model, "label_names_", [])
            element = label_element(label or "")
            alternatives = [label] + ([f"{element.upper()}_H", f"{element.upper()}_FE"] if element else [])
            label = next((name for name in alternatives if name in names), None)
            if label is None:
                notes.append(f"{self.state.method} does not predict {self.state.label}.")
            else:
                notes += self._compute_subsets(model, label)
        self.status = " ".join(notes)
        self._status.object = self.status
        self._plot.object = self._figure(label)
        return self.curves

    def _compute_subsets(self, model, label: str) -> list[str]:
        notes = []
        for subset in dict.fromkeys([self.first, self.second]):
            rows = self.subset_rows(subset)
            if rows.size == 0:
                notes.append(f"subset '{subset}' is empty.")
                continue
            try:
                spectra = self._spectra(rows)
                self.curves[subset] = np.asarray(model.sensitivity(spectra, label), dtype=float)
                self._wavelength = np.asarray(spectra.wavelength, dtype=float)
            except LabelExplorerError as exc:
                notes.append(f"subset '{subset}': {exc}")
        return notes

    # ---------------------------------------------------------------- drawing
    def _windows(self):
        wl = hv.Dimension("wavelength", label="Wavelength (Å, vacuum)")
        windows = element_windows()
        element = label_element(self.state.label or "") or self.state.element
        intervals = windows.as_intervals(element) if element in windows else np.empty((0, 2))
        return hv.VSpans(intervals, kdims=[wl, "x1"], label=f"{element} windows").opts(
            color=theme.WINDOW_COLOUR, alpha=0.25)

    def _figure(self, label):
        if not self.curves:
            return None
        layers = [self._windows(), hv.HLine(0).opts(color="#999999", line_width=1)]
        colours = ("#08519c", "#cb181d")
        for (subset, values), colour in zip(self.curves.items(), colours):
            grid = self._wavelength if self._wavelength.size == values.size else np.arange(values.size)
            layers.append(hv.Curve((grid, values), "wavelength", "sensitivity", label=subset).opts(
                color=colour, line_width=1))
        return hv.Overlay(layers).opts(width=self.width, height=280, legend_position="right", show_grid=True,
                                       ylabel=f"d {label} / d flux",
                                       title=f"Mean sensitivity of {self.state.method} {label}")

    def _cod_model(self):
        for name in [self.state.method, *self.state.models]:
            model = self.state.models.get(name)
            if model is not None and hasattr(model, "cod"):
                return name, model
        return None, None

    def cod_figure(self):
        """COD spectra of the first model that has them (SLAM), or None."""
        name, model = self._cod_model()
        if model is None:
            return None
        try:
            cod = model.cod()
        except LabelExplorerError:
            return None
        wl = hv.Dimension("wavelength", label="Wavelength (Å, vacuum)")
        layers = [self._windows(), hv.Curve((cod.wavelength, cod.full), wl, "COD", label="full").opts(
            color="#444444", line_width=1)]
        label = self.state.label
        if label in cod.label_names and np.isfinite(cod[label]).any():
            layers.append(hv.Curve((cod.wavelength, cod[label]), wl, "COD", label=label).opts(
                color=theme.source_colour(name), line_width=1))
        return hv.Overlay(layers).opts(width=self.width, height=280, legend_position="right", show_grid=True,
                                       title=f"{name}: coefficient of dependence (how well the labels explain each pixel)")

    def _draw_cod(self, *_) -> None:
        self._cod.object = self.cod_figure()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.first, width=170),
                   pn.widgets.Select.from_param(self.param.second, width=170),
                   pn.widgets.IntInput.from_param(self.param.max_stars, width=110), self.compute_button),
            self._status, self._plot, self._cod)
