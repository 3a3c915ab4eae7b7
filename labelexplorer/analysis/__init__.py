"""Analysis of predictions: metrics, clusters, sequences, the MZR, sensitivity and COD.

Dependency rule (a deliberate refinement of DESIGN §1): ``metrics``, ``selection``,
``cod`` and ``mzr`` are leaf modules — numpy plus the core types only — holding the one
implementation of scatter statistics, label distances/polygons and coefficients of
dependence. Models and the catalog use them (SLAM's error law and COD, APOGEE Net's YSO
polygon, ``Catalog.compare``, the mock galaxies' MZR), so ``mock``, ``models`` and
``catalog`` may import them.
The rest of ``analysis`` (clusters, sequences, baselines) works on predictions
and catalogs and sits after them; nothing in ``analysis`` imports the dashboard.
"""

from .cod import CODSpectra, cod_full, cod_per_label, cod_spectra
from .metrics import bias, calibration_ratio, nmad, outlier_fraction, rmse, sigma_mad, summarize
from .selection import in_polygon, label_distance

__all__ = ["bias", "calibration_ratio", "nmad", "outlier_fraction", "rmse", "sigma_mad", "summarize",
           "CODSpectra", "cod_full", "cod_per_label", "cod_spectra", "in_polygon", "label_distance"]
