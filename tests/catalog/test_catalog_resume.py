"""Interrupted and failing catalog runs: a killed process resumes, bad files are named, nothing written is lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from labelexplorer.catalog import LEDGER_NAME, Catalog, predict_catalog
from labelexplorer.exceptions import FileFormatError, LabelExplorerError

BATCH = 4

# The CLI, with reading slowed down so that the kill lands between batches, not after the last one.
SLOW_CLI = ("import sys, time\n"
            "import labelexplorer.catalog as catalog\n"
            "read = catalog._read_batch\n"
            "catalog._read_batch = lambda files, options: (time.sleep(0.5), read(files, options))[1]\n"
            "from labelexplorer.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


@pytest.fixture(scope="module")
def reference(survey, ridge_dir, tmp_path_factory):
    """The uninterrupted catalog."""
    out = tmp_path_factory.mktemp("reference") / "reference.parquet"
    return predict_catalog(ridge_dir, survey.folder, out, batch_size=BATCH, progress=False)


def _ledger(output):
    return json.loads((output.with_name(f"{output.stem}.parts") / LEDGER_NAME).read_text())


def test_killed_run_resumes_to_the_uninterrupted_catalog(survey, ridge_dir, reference, tmp_path):
    output = tmp_path / "killed.parquet"
    parts = tmp_path / "killed.parts"
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "predict", str(ridge_dir), str(survey.folder),
                                "-o", str(output), "--batch-size", str(BATCH), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # kill once the second part file appears: the first batch is then surely in the ledger, and the
        # second may or may not be (a part written but not yet recorded is redone on resume)
        while len(list(parts.glob("part-*.parquet"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert not output.exists()  # no half-written catalog
    n_batches = -(-len(survey.files) // BATCH)
    recorded = len(_ledger(output)["done"])
    assert recorded >= 1 and recorded < n_batches
    partial = Catalog.open(parts)  # an unfinished run can be looked at
    assert 0 < len(partial) < len(survey.files) and partial.meta["model"] == "ridge"

    resumed = predict_catalog(ridge_dir, survey.folder, output, batch_size=BATCH, progress=False)
    assert resumed.meta["batches_from_earlier_runs"] == recorded
    assert pq.read_table(output).equals(pq.read_table(reference._files[0]))
    assert not parts.exists()


@pytest.mark.parametrize("damage", ["truncated", "not-fits", "empty-file", "wrong-pixel-count", "all-nan-flux"])
def test_bad_file_in_a_batch_is_named_and_skipped(damage, survey_copy, ridge_dir, reference, tmp_path):
    bad = survey_copy.files[5]  # the middle of the second batch
    _damage(bad, damage)
    output = tmp_path / "skip.parquet"
    with pytest.warns(UserWarning, match="1 of 24 input files were skipped"):
        catalog = predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, progress=False)
    errors = catalog.errors
    assert errors["file"].tolist() == [str(bad)] and len(errors.loc[0, "message"]) > 10
    assert catalog.meta["n_errors"] == 1
    frame, expected = catalog.to_pandas(), reference.to_pandas()
    expected = expected[expected["ID"] != survey_copy.labels["APOGEE_ID"][5]].reset_index(drop=True)
    assert frame["ID"].tolist() == expected["ID"].tolist()
    np.testing.assert_allclose(frame["TEFF"], expected["TEFF"], rtol=1e-12)
    np.testing.assert_allclose(frame["LOGG_MODEL_STD"], expected["LOGG_MODEL_STD"], rtol=1e-9)


def test_bad_file_with_on_error_fail_stops_and_keeps_finished_batches(survey_copy, ridge_dir, reference, tmp_path):
    bad = survey_copy.files[5]
    _damage(bad, "truncated")
    output = tmp_path / "fail.parquet"
    with pytest.raises(FileFormatError, match=re.escape(bad.name)) as info:
        predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, on_error="fail", progress=False)
    assert "on_error='fail'" in str(info.value)
    assert not output.exists()
    assert list(_ledger(output)["done"]) == ["0"]
    assert (tmp_path / "fail.parts" / "part-000000.parquet").is_file()

    # the written batch is not lost: a run that skips bad files starts from it
    with pytest.warns(UserWarning, match="skipped"):
        catalog = predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, progress=False)
    assert catalog.meta["batches_from_earlier_runs"] == 1 and len(catalog) == 23
    assert catalog.errors["file"].tolist() == [str(bad)]


def test_unfinished_run_of_other_settings_is_not_mixed_in(survey_copy, ridge_dir, tmp_path):
    _damage(survey_copy.files[5], "not-fits")
    output = tmp_path / "mixed.parquet"
    with pytest.raises(FileFormatError):
        predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, on_error="fail", progress=False)
    with pytest.raises(LabelExplorerError, match="resume=False"):
        predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH + 1, progress=False)
    with pytest.warns(UserWarning):
        catalog = predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH + 1, resume=False,
                                  progress=False)
    assert catalog.meta["batches_from_earlier_runs"] == 0 and len(catalog) == 23


def test_leftovers_of_a_killed_write_are_ignored(survey, ridge_dir, reference, tmp_path):
    missing = tmp_path / "missing.fits"  # listed in the table of files, but not on disk
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(f) for f in [*survey.files[:BATCH], missing, *survey.files[BATCH:]]))
    output = tmp_path / "left.parquet"
    with pytest.raises(FileFormatError, match="missing.fits: no such file"):  # stops after batch 0
        predict_catalog(ridge_dir, listing, output, batch_size=BATCH, on_error="fail", progress=False)
    parts = tmp_path / "left.parts"
    (parts / ".part-000001.parquet.abc.part").write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
    (parts / "part-000001.parquet").write_bytes(b"written but never recorded")  # killed before the ledger
    with pytest.warns(UserWarning):
        catalog = predict_catalog(ridge_dir, listing, output, batch_size=BATCH, progress=False)
    assert catalog.meta["batches_from_earlier_runs"] == 1
    assert len(catalog) == 24 and catalog.errors["file"].tolist() == [str(missing)]
    np.testing.assert_allclose(catalog.to_pandas()["TEFF"], reference.to_pandas()["TEFF"], rtol=1e-12)


def test_every_file_bad_is_an_error_with_the_list_written(ridge_dir, tmp_path):
    junk = [tmp_path / f"junk{i}.fits" for i in range(3)]
    for path in junk:
        path.write_text("not a spectrum")
    with pytest.raises(LabelExplorerError, match="all 3 failed"):
        predict_catalog(ridge_dir, junk, tmp_path / "none.parquet", progress=False)
    listed = (tmp_path / "none.errors.csv").read_text().splitlines()
    assert listed[0] == "file,message" and [line.split(",")[0] for line in listed[1:]] == [str(p) for p in junk]


def _damage(path, how: str) -> None:
    from astropy.io import fits

    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "not-fits":
        path.write_text("this is not a FITS file\n")
    elif how == "empty-file":
        path.write_bytes(b"")
    elif how in ("wrong-pixel-count", "all-nan-flux"):
        with fits.open(path) as hdul:
            hdul = fits.HDUList([hdu.copy() for hdu in hdul])
        if how == "all-nan-flux":
            hdul[1].data = np.full_like(hdul[1].data, np.nan)
        else:
            for index in (1, 2, 3):
                hdul[index].data = hdul[index].data[:4000]
        hdul.writeto(path, overwrite=True)
    else:
        raise ValueError(how)
