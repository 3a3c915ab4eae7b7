"""Fixtures shared by the dashboard tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelexplorer import LabelPrediction
from labelexplorer.dashboard.state import combine_catalog


def small_catalog(n: int = 200, seed: int = 3) -> pd.DataFrame:
    """Two predicted sources and the truth; the first 20 stars are not predicted by ridge."""
    rng = np.random.default_rng(seed)
    stars = pd.DataFrame({"APOGEE_ID": [f"2M{i:08d}" for i in range(n)],
                          "CLUSTER": np.where(np.arange(n) < 30, "M67", ""), "SNR": rng.uniform(20, 300, n)})
    teff, logg = rng.uniform(3800, 6500, n), rng.uniform(0.5, 5.0, n)
    feh, mg_fe, al_fe = rng.normal(-0.2, 0.3, n), rng.normal(0.1, 0.1, n), rng.normal(0.0, 0.2, n)
    truth = pd.DataFrame({"ID": stars["APOGEE_ID"], "TEFF": teff, "LOGG": logg, "FE_H": feh, "MG_FE": mg_fe,
                          "AL_FE": al_fe})
    predicted = np.arange(20, n)
    values = np.column_stack([teff, logg, feh, mg_fe, al_fe])[predicted] + rng.normal(0, 0.01, (predicted.size, 5))
    ridge = LabelPrediction(["TEFF", "LOGG", "FE_H", "MG_FE", "AL_FE"], values,
                            model_std=np.full((predicted.size, 5), 0.03), predictive_std=np.full((predicted.size, 5), 0.04),
                            ids=stars["APOGEE_ID"][predicted], flags={"low_snr": stars["SNR"][predicted] < 50})
    bcnn = LabelPrediction(["TEFF", "LOGG", "FE_H", "MG_H"],
                           np.column_stack([teff, logg, feh, mg_fe + feh]) + 0.05, ids=stars["APOGEE_ID"])
    return combine_catalog(stars, {"ridge": ridge, "bcnn-censored": bcnn, "true": truth}, id_column="APOGEE_ID")


@pytest.fixture(scope="session")
def dashboard_catalog() -> pd.DataFrame:
    """A 200-star catalog: ridge (stars 20-199, three uncertainties, a flag), a censored BCNN ([Mg/H],
    no uncertainties, every star, +0.05 offsets) and the truth; stars 0-29 are M67 members."""
    return small_catalog()
