"""Analysis of predictions: metrics, clusters, sequences, the MZR, sensitivity and COD."""

from .metrics import bias, calibration_ratio, nmad, outlier_fraction, rmse, sigma_mad, summarize

__all__ = ["bias", "calibration_ratio", "nmad", "outlier_fraction", "rmse", "sigma_mad", "summarize"]
from .cod import CODSpectra, cod_full, cod_per_label, cod_spectra  # noqa: E402
from .selection import in_polygon, label_distance  # noqa: E402

__all__ += ["CODSpectra", "cod_full", "cod_per_label", "cod_spectra", "in_polygon", "label_distance"]
