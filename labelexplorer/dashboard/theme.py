"""Colours, colour maps and sizes shared by every view, so the views look like one product.

Pure Python constants and tiny helpers (no Panel import), so that tests and the CLI can
use them cheaply.
"""

from __future__ import annotations

__all__ = ["SOURCE_COLOURS", "source_colour", "COUNT_CMAP", "VALUE_CMAP", "ERROR_CMAP", "SELECTION_COLOUR",
           "ACTIVE_STAR_COLOUR", "WINDOW_COLOUR", "MASK_COLOUR", "PLOT_WIDTH", "PLOT_HEIGHT", "SPECTRUM_HEIGHT",
           "ACCENT", "axis_label"]

#: one colour per source; references are grey/black so predictions stand out
SOURCE_COLOURS = {
    "true": "#222222",
    "aspcap": "#7f7f7f",
    "ridge": "#1f77b4",
    "bcnn-censored": "#d62728",
    "bcnn": "#ff7f0e",
    "slam": "#2ca02c",
    "apogee-net": "#9467bd",
    "galaxy-cnn": "#8c564b",
}
_FALLBACK = ("#17becf", "#bcbd22", "#e377c2", "#aec7e8", "#98df8a")

COUNT_CMAP = "fire"  # datashader's perceptually uniform map for densities
VALUE_CMAP = "viridis"  # labels
ERROR_CMAP = "inferno"  # uncertainties
SELECTION_COLOUR = "#00bcd4"
ACTIVE_STAR_COLOUR = "#e6007e"
WINDOW_COLOUR = "#ffb000"
MASK_COLOUR = "#bbbbbb"
ACCENT = "#1f4e79"

PLOT_WIDTH = 560
PLOT_HEIGHT = 460
SPECTRUM_HEIGHT = 260

_AXIS_LABELS = {"TEFF": "Teff (K)", "LOGG": "log g (dex)", "FE_H": "[Fe/H] (dex)", "M_H": "[M/H] (dex)",
                "ALPHA_M": "[α/M] (dex)", "LOG_TEFF": "log Teff", "OH_P50": "12 + log(O/H)",
                "LOG_MSTAR": "log M* (M☉)", "SNR": "S/N"}


def source_colour(name: str) -> str:
    """Colour of a source (method or reference); unknown names get a stable fallback.

    Examples
    --------
    >>> source_colour("ridge"), source_colour("ridge") == source_colour("ridge")
    ('#1f77b4', True)
    """
    if name in SOURCE_COLOURS:
        return SOURCE_COLOURS[name]
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def axis_label(quantity: str) -> str:
    """Readable axis title of a catalog quantity (``MG_FE`` -> ``[Mg/Fe] (dex)``).

    Examples
    --------
    >>> axis_label("TEFF"), axis_label("MG_FE"), axis_label("AL_H_ERR")
    ('Teff (K)', '[Mg/Fe] (dex)', 'σ [Al/H] (total, dex)')
    """
    suffixes = {"_ERR": "σ {} (total{})", "_MODEL_STD": "σ {} (model{})", "_PRED_STD": "σ {} (predictive{})"}
    for suffix, template in suffixes.items():
        if quantity.endswith(suffix):
            inner = axis_label(quantity[: -len(suffix)])
            name, _, unit = inner.partition(" (")
            return template.format(name, ", " + unit[:-1] if unit else "")
    if quantity in _AXIS_LABELS:
        return _AXIS_LABELS[quantity]
    for suffix in ("_FE", "_H"):
        if quantity.endswith(suffix):
            element = quantity[: -len(suffix)].capitalize().replace("Tiii", "TiII")
            return f"[{element}/{suffix[1:].capitalize()}] (dex)"
    return quantity
