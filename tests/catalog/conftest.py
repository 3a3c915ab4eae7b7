"""Fixtures of the catalog tests: a tiny survey of real apStar-format files and a ridge model trained on it.

The survey's spectra are linear in TEFF and LOGG (so the ridge baseline recovers them
well) on top of a star-dependent flux level, with noise, written through the mock
universe's apStar writer so that the catalog code reads them exactly as survey files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

N_STARS = 24
N_PIXELS = 8575


class Survey(NamedTuple):
    folder: Path
    files: list[Path]
    labels: pd.DataFrame  # APOGEE_ID, TEFF, LOGG (truth)


def write_survey(folder: Path, n_stars: int = N_STARS, seed: int = 7) -> Survey:
    """*n_stars* single-visit apStar files whose flux encodes TEFF and LOGG linearly."""
    from labelexplorer.mock.writers import write_apstar

    rng = np.random.default_rng(seed)
    teff = rng.uniform(4000.0, 5500.0, n_stars)
    logg = rng.uniform(1.0, 4.5, n_stars)
    pixel = np.arange(N_PIXELS)
    teff_pattern = 0.05 * np.sin(pixel / 37.0)
    logg_pattern = 0.03 * np.cos(pixel / 53.0)
    folder.mkdir(parents=True, exist_ok=True)
    files, ids = [], []
    for i in range(n_stars):
        apogee_id = f"2M{i:08d}+0000000"
        star = dict(APOGEE_ID=apogee_id, NVISITS=1, SNR=100.0 + i, RA=10.0 + i, DEC=-5.0, GLON=0.0, GLAT=0.0,
                    J=10.0, H=9.5, K=9.4, TELESCOPE="apo25m", FIELD="catalog-test")
        flux = 1.0 + (teff[i] - 4750.0) / 1000.0 * teff_pattern + (logg[i] - 2.75) * logg_pattern
        flux = flux + rng.normal(0.0, 0.002, N_PIXELS)
        path = folder / f"apStar-test-{apogee_id}.fits"
        write_apstar(path, star, flux.astype(np.float32), np.full(N_PIXELS, 0.002, np.float32),
                     np.zeros(N_PIXELS, np.int16))
        files.append(path)
        ids.append(apogee_id)
    return Survey(folder, files, pd.DataFrame({"APOGEE_ID": ids, "TEFF": teff, "LOGG": logg}))


@pytest.fixture(scope="session")
def survey(tmp_path_factory) -> Survey:
    """The shared survey (read-only: tests that damage files work on a copy)."""
    return write_survey(tmp_path_factory.mktemp("survey") / "apStar")


@pytest.fixture()
def survey_copy(survey, tmp_path) -> Survey:
    """A private copy of the survey that a test may damage."""
    folder = tmp_path / "apStar"
    shutil.copytree(survey.folder, folder)
    return Survey(folder, [folder / f.name for f in survey.files], survey.labels)


@pytest.fixture(scope="session")
def ridge_dir(survey, tmp_path_factory) -> Path:
    """A ridge model trained on the survey, saved."""
    import labelexplorer as le

    spectra = le.read([str(f) for f in survey.files])
    model = le.get_model("ridge", alpha=1e-2, n_bootstrap=4, n_folds=3).fit(spectra, survey.labels[["TEFF", "LOGG"]])
    return model.save(tmp_path_factory.mktemp("models") / "ridge")
