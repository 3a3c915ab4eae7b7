"""Analysis of predictions: metrics, clusters, sequences, the MZR, sensitivity and COD."""

from .metrics import bias, calibration_ratio, nmad, outlier_fraction, rmse, sigma_mad, summarize

__all__ = ["bias", "calibration_ratio", "nmad", "outlier_fraction", "rmse", "sigma_mad", "summarize"]
