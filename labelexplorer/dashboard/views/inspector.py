"""The star inspector: one star's spectrum, what the model looked at, and how sure it is.

For the active star it shows the spectrum with its errors and masked pixels shaded,
the model spectra that exist (SLAM's forward model at the star's SLAM labels; the
pipeline's model stored in the file), the continuum (raw mode), the active element's
windows, the sensitivity d label / d pixel of the active method for the active label,
and a table of every source's labels with the total, model and predictive
uncertainties side by side, plus raised flags. Next/previous buttons and the arrow keys
(or ``j``/``k``) step through the selection, or through the catalog.
"""

from __future__ import annotations

import functools
import html

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ...exceptions import LabelExplorerError
from ...preprocess.grid import APOGEE_N_PIXELS
from .. import theme
from ..state import ExplorerState, label_element, source_prefix

__all__ = ["StarInspector", "KeyboardNavigation", "element_windows", "mask_intervals", "star_table_html"]

_NAVIGATION_KEYS = {"ArrowRight": 1, "ArrowLeft": -1, "j": 1, "k": -1}


@functools.lru_cache(maxsize=1)
def element_windows():
    """Element windows on the 8575-pixel APOGEE grid from the project's line list (cached)."""
    from ...preprocess.grid import apogee_wavelength
    from ...preprocess.linelist import load_linelist
    from ...preprocess.windows import MOLECULE_ELEMENTS, windows_from_linelist

    return windows_from_linelist(load_linelist(), apogee_wavelength(), group=MOLECULE_ELEMENTS)


def mask_intervals(wavelength: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Runs of True in *mask* as wavelength intervals ``[[start, end], ...]`` (pixel centres).

    Examples
    --------
    >>> mask_intervals(np.arange(6.0), np.array([1, 1, 0, 0, 1, 0], bool)).tolist()
    [[0.0, 1.0], [4.0, 4.0]]
    """
    mask = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return np.column_stack([wavelength[starts], wavelength[stops]]) if starts.size else np.empty((0, 2))


def _robust_limits(flux: np.ndarray) -> tuple[float, float]:
    """Flux axis range from the 0.5-99.5 percentiles plus a margin: a few wild pixels must not flatten the plot.

    Examples
    --------
    >>> flux = np.r_[np.linspace(0.6, 1.05, 998), -50.0, 80.0]
    >>> [round(v, 2) for v in _robust_limits(flux)]
    [0.53, 1.12]
    """
    finite = flux[np.isfinite(flux)]
    if finite.size == 0:
        return (np.nan, np.nan)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    margin = 0.15 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
    return (float(lo - margin), float(hi + margin))


def _format_value(label: str, value: float) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.0f}" if label.startswith("TEFF") else f"{value:.3f}"


def star_table_html(table: pd.DataFrame) -> str:
    """One star's labels as a compact HTML table: per source, ``value ± total`` over ``model · predictive``.

    *table* is :meth:`ExplorerState.star_table`. Teff is shown to 1 K, other labels to
    0.001 dex; unknown values are left blank.

    Examples
    --------
    >>> columns = pd.MultiIndex.from_tuples([("ridge", "value"), ("ridge", "total"), ("ridge", "model"),
    ...                                      ("ridge", "predictive")])
    >>> frame = pd.DataFrame([[4812.34, 50.0, 30.0, 40.0]], index=["TEFF"], columns=columns)
    >>> "4812 ± 50" in star_table_html(frame), "model 30 · pred 40" in star_table_html(frame)
    (True, True)
    """
    sources = list(dict.fromkeys(table.columns.get_level_values(0)))
    head = "".join(f"<th>{html.escape(source)}</th>" for source in sources)
    rows = []
    for label in table.index:
        cells = []
        for source in sources:
            get = lambda quantity: float(table[(source, quantity)].get(label, np.nan)) if (  # noqa: E731
                source, quantity) in table.columns else np.nan
            value, total = _format_value(label, get("value")), _format_value(label, get("total"))
            parts = [value + (f" ± {total}" if total else "")]
            model, predictive = _format_value(label, get("model")), _format_value(label, get("predictive"))
            if model or predictive:
                parts.append(f"<br><small>model {model or '–'} · pred {predictive or '–'}</small>")
            cells.append(f"<td>{''.join(parts)}</td>")
        rows.append(f"<tr><th>{html.escape(str(label))}</th>{''.join(cells)}</tr>")
    return (f"<table class='star-table'><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


_TABLE_CSS = """
table.star-table { border-collapse: collapse; font-size: 12px; }
table.star-table th, table.star-table td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee;
                                           white-space: nowrap; }
table.star-table td small { color: #777; }
"""


class KeyboardNavigation(pn.reactive.ReactiveHTML):
    """Invisible component counting arrow-key (and j/k) presses in the page.

    Typing in an input field is ignored. ``presses`` increases by one per key press and
    ``key`` is the key, so a watcher on ``presses`` sees every press, repeats included.
    """

    presses = param.Integer(default=0, doc="Number of navigation key presses so far.")
    key = param.String(default="", doc="The last navigation key pressed.")

    _template = '<div id="keys" style="display:none"></div>'
    _scripts = {"render": """
      if (window._labelexplorerKeys) { document.removeEventListener('keydown', window._labelexplorerKeys) }
      window._labelexplorerKeys = (event) => {
        const origin = event.composedPath()[0]
        const tag = (origin && origin.tagName) || ''
        if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || (origin && origin.isContentEditable)) { return }
        if (['ArrowRight', 'ArrowLeft', 'j', 'k'].includes(event.key)) {
          data.key = event.key
          data.presses = data.presses + 1
        }
      }
      document.addEventListener('keydown', window._labelexplorerKeys)
    """}


class StarInspector(pn.viewable.Viewer):
    """Everything about the active star.

    Parameters
    ----------
    state : ExplorerState
    flux : {"normalised", "raw"}
        Continuum-normalised spectrum, or the raw spectrum with its continuum.
    show_sensitivity : bool
        Compute and plot d label / d pixel of the active method (costs a model call).

    Examples
    --------
    >>> state = ExplorerState(pd.DataFrame({"ID": ["a", "b"], "RIDGE__TEFF": [4000.0, 5000.0]}))
    >>> inspector = StarInspector(state)
    >>> state.step_star(1)
    >>> "<span id='active-star'>a</span>" in inspector._header.object
    True
    >>> inspector.status  # no spectrum source was given
    'No spectrum source was given at start-up: only the catalog values are shown.'
    """

    state = param.ClassSelector(class_=ExplorerState, doc="The shared dashboard state.")
    flux = param.Selector(default="normalised", objects=["normalised", "raw"],
                          doc="Continuum-normalised spectrum, or the raw spectrum with its continuum.")
    show_sensitivity = param.Boolean(default=True, doc="Plot d label / d pixel of the active method.")
    width = param.Integer(default=900, doc="Width of the spectrum plots in pixels.")
    status = param.String(default="", doc="What the inspector could not show for this star, if anything.")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self._header = pn.pane.HTML("", sizing_mode="stretch_width")
        self._plots = pn.pane.HoloViews(None, sizing_mode="fixed", width=self.width + 80, height=560)
        self._table = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[_TABLE_CSS], max_height=520,
                                   styles={"overflow-y": "auto"})
        self._flags = pn.pane.Markdown("")
        self._notes = pn.pane.Markdown("", styles={"color": "#a05a00"})
        self.keys = KeyboardNavigation()
        self.keys.param.watch(self._on_key, "presses")
        self.previous_button = pn.widgets.Button(label="◀ previous", width=110)
        self.next_button = pn.widgets.Button(label="next ▶", color="primary", width=110)
        self.previous_button.on_click(lambda _: self.state.step_star(-1))
        self.next_button.on_click(lambda _: self.state.step_star(1))
        self.state.param.watch(self._refresh, ["star", "method", "label", "element", "catalog"])
        self.param.watch(self._refresh, ["flux", "show_sensitivity"])
        self._refresh()

    # ---------------------------------------------------------------- data for the active star
    def spectrum(self):
        """The active star's spectrum (normalised or raw), or None with a note in ``status``."""
        source = self.state.spectra
        if self.state.star is None or source is None:
            return None
        try:
            if self.flux == "raw" and hasattr(source, "raw"):
                return source.raw(self.state.star)
            return source.spectrum(self.state.star)
        except LabelExplorerError as exc:
            self._note(f"No spectrum for {self.state.star}: {exc}")
            return None

    def _model_label(self, model) -> str | None:
        """The label of *model* that answers for the active label ([X/H] stands in for [X/Fe])."""
        label = self.state.label
        names = getattr(model, "label_names_", [])
        if label in names:
            return label
        element = label_element(label or "")
        for alternative in ([f"{element.upper()}_H", f"{element.upper()}_FE"] if element else []):
            if alternative in names:
                return alternative
        return None

    def sensitivity(self, spectrum):
        """(label, d label / d pixel on the spectrum's grid) of the active method, or None."""
        model = self.state.models.get(self.state.method)
        if model is None or spectrum is None or self.flux == "raw":
            return None
        label = self._model_label(model)
        if label is None:
            self._note(f"{self.state.method} does not predict {self.state.label}: no sensitivity to show.")
            return None
        try:
            values = np.asarray(model.sensitivity(spectrum, label), dtype=float)
        except LabelExplorerError as exc:
            self._note(f"{self.state.method}: no sensitivity ({exc})")
            return None
        if values.size != spectrum.n_pixels and spectrum.n_pixels == APOGEE_N_PIXELS:
            from ...preprocess.continuum import pixels_on_grid

            values = pixels_on_grid(values, APOGEE_N_PIXELS, fill=np.nan)
        return label, values

    def model_spectra(self, spectrum) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Model spectra to overlay: the pipeline model in the file, and any method's forward model."""
        curves = {}
        if spectrum is None or self.flux == "raw":
            return curves
        stored = spectrum.info.get("model_flux")
        if stored is not None:
            model_flux = np.asarray(stored[0], dtype=float)
            curves["pipeline model"] = (spectrum.wavelength, np.where(model_flux > 0, model_flux, np.nan))
        row = self.state.star_row()
        for name, model in self.state.models.items():
            if not hasattr(model, "model_spectra") or row is None:
                continue
            labels = [row.get(source_prefix(name) + label, np.nan) for label in model.label_names_]
            labels = np.asarray(labels, dtype=float)
            if not np.isfinite(labels).all():
                continue
            try:
                flux = np.asarray(model.model_spectra(labels[None, :])[0], dtype=float)
            except LabelExplorerError as exc:
                self._note(f"{name}: no model spectrum ({exc})")
                continue
            curves[f"{name} model"] = (np.asarray(getattr(model, "wavelength_", spectrum.wavelength), float), flux)
        return curves

    def continuum(self, raw_spectrum):
        """The continuum of the raw spectrum: raw / normalised flux where both are known."""
        if raw_spectrum is None or self.flux != "raw":
            return None
        normalised = self.state.spectra.spectrum(self.state.star)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((normalised.flux[0] > 0) & ~raw_spectrum.mask[0], raw_spectrum.flux[0] / normalised.flux[0],
                             np.nan)
        return ratio

    # ---------------------------------------------------------------- drawing
    def _note(self, text: str) -> None:
        self._notes_list.append(text)

    def _refresh(self, *_) -> None:
        self._notes_list: list[str] = []
        self._header.object = self._header_html()
        spectrum = self.spectrum()
        self._plots.object = self.figure(spectrum)
        self._table.object = self._table_html()
        flags = self.state.star_flags()
        raised = [f"**{source}**: {', '.join(names)}" for source, names in flags.items() if names]
        self._flags.object = ("⚠ flags — " + "; ".join(raised)) if raised else ""
        self.status = " ".join(self._notes_list)
        self._notes.object = self.status

    def _header_html(self) -> str:
        star = self.state.star
        if star is None:
            return ("<h3>Star inspector</h3><p>Click a star in the label plane (or press → / ←) to see its "
                    "spectrum, sensitivity and uncertainties. Active star: <span id='active-star'></span></p>")
        row = self.state.star_row()
        facts = []
        for column, fmt in (("STAR_CLASS", "{}"), ("CLUSTER", "cluster {}"), ("SNR", "S/N {:.0f}"),
                            ("TRAINING", "{}")):
            value = row.get(column) if row is not None else None
            if value is None or (isinstance(value, float) and not np.isfinite(value)) or value == "":
                continue
            if column == "TRAINING":
                value = "training star" if bool(value) else "not in training set"
            facts.append(fmt.format(value))
        return (f"<h3>Star <span id='active-star'>{star}</span></h3>"
                f"<p>{' · '.join(map(str, facts))} — method <b>{self.state.method}</b>, label "
                f"<b>{self.state.label}</b>, element windows of <b>{self.state.element}</b></p>")

    def figure(self, spectrum):
        """Spectrum (with errors, masks, models, windows) above the sensitivity, sharing wavelength."""
        if spectrum is None:
            if self.state.star is not None and self.state.spectra is None:
                self._note("No spectrum source was given at start-up: only the catalog values are shown.")
            return None
        wavelength = np.asarray(spectrum.wavelength if spectrum.wavelength.ndim == 1 else spectrum.wavelength[0],
                                dtype=float)
        flux = np.where(spectrum.mask[0], np.nan, spectrum.flux[0]).astype(float)
        error = np.asarray(spectrum.error[0], dtype=float)
        wl = hv.Dimension("wavelength", label="Wavelength (Å, vacuum)")
        fx = hv.Dimension("flux", label="Normalised flux" if self.flux == "normalised" else "Flux")
        windows = self._window_intervals()
        layers = [hv.VSpans(mask_intervals(wavelength, spectrum.mask[0]), kdims=[wl, "x1"], label="masked").opts(
            color=theme.MASK_COLOUR, alpha=0.35)]
        layers.append(hv.VSpans(windows, kdims=[wl, "x1"], label=f"{self.state.element} windows").opts(
            color=theme.WINDOW_COLOUR, alpha=0.25))
        band = np.where(np.isfinite(error) & (error < 10 * np.nanmedian(np.abs(flux))), error, np.nan)
        layers.append(hv.Spread((wavelength, flux, band), kdims=[wl], vdims=[fx, "error"], label="±1σ").opts(
            color="#9ecae1", alpha=0.6))
        layers.append(hv.Curve((wavelength, flux), kdims=[wl], vdims=[fx], label="spectrum").opts(
            color="#08306b", line_width=1))
        for name, (model_wl, model_flux) in self.model_spectra(spectrum).items():
            source = name.split(" ")[0]
            layers.append(hv.Curve((model_wl, model_flux), kdims=[wl], vdims=[fx], label=name).opts(
                color=theme.source_colour(source) if source != "pipeline" else "#636363", line_width=1, alpha=0.8))
        continuum = self.continuum(spectrum)
        if continuum is not None:
            layers.append(hv.Curve((wavelength, continuum), kdims=[wl], vdims=[fx], label="continuum").opts(
                color="#e6550d", line_width=2))
        top = hv.Overlay(layers).opts(width=self.width, height=theme.SPECTRUM_HEIGHT, legend_position="right",
                                      show_grid=True, title=f"{self.state.star}", tools=["hover"],
                                      ylim=_robust_limits(flux))
        sensitivity = self.sensitivity(spectrum) if self.show_sensitivity else None
        if sensitivity is None:
            return hv.Layout([top]).cols(1)
        label, values = sensitivity
        sy = hv.Dimension("sensitivity", label=f"d {label} / d flux")
        bottom = (hv.VSpans(windows, kdims=[wl, "x1"]).opts(color=theme.WINDOW_COLOUR, alpha=0.25)
                  * hv.HLine(0).opts(color="#999999", line_width=1)
                  * hv.Curve((wavelength, values), kdims=[wl], vdims=[sy], label=self.state.method).opts(
                      color=theme.source_colour(self.state.method), line_width=1))
        bottom = bottom.opts(width=self.width, height=200, show_grid=True,
                             title=f"Sensitivity of {self.state.method} {label} (the pixels it looks at)")
        return (top + bottom).cols(1).opts(shared_axes=True)

    def _window_intervals(self) -> np.ndarray:
        windows = element_windows()
        if self.state.element not in windows:
            self._note(f"The line list has no window for {self.state.element}.")
            return np.empty((0, 2))
        return windows.as_intervals(self.state.element)

    def _table_html(self) -> str:
        table = self.state.star_table()
        return "" if table.empty else star_table_html(table)

    # ---------------------------------------------------------------- keyboard
    def _on_key(self, event) -> None:
        self.state.step_star(_NAVIGATION_KEYS.get(self.keys.key, 0) or 1)

    def summary_panel(self) -> pn.viewable.Viewable:
        """Header, navigation, flags and the table of every source's labels."""
        controls = pn.Row(self.previous_button, self.next_button,
                          pn.widgets.RadioButtonGroup.from_param(self.param.flux, width=200),
                          pn.widgets.Checkbox.from_param(self.param.show_sensitivity, label="sensitivity"),
                          self.keys)
        return pn.Column(self._header, controls, self._notes, self._flags,
                         pn.pane.Markdown("**Labels of every source** (value, then total, model and predictive σ)"),
                         self._table, sizing_mode="stretch_width")

    def plots_panel(self) -> pn.viewable.Viewable:
        """The spectrum and sensitivity plots."""
        return self._plots

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.summary_panel(), self.plots_panel(), sizing_mode="stretch_width")
