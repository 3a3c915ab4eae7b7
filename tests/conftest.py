"""Shared fixtures. Real survey files are reached only through ``real_data`` (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path:
    configured = os.environ.get("LABELEXPLORER_REAL_DATA")
    return Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public survey files (../shared/data or $LABELEXPLORER_REAL_DATA).

    Missing folder: skip, except under CI (CI=true) where it is a failure, so that
    real-data coverage can never silently disappear.
    """
    folder = _real_data_dir()
    if not folder.is_dir():
        message = (f"real survey data not found at {folder}; set LABELEXPLORER_REAL_DATA "
                   "to the shared/data folder")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder
