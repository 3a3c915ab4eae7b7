"""Scale-out on Dask: a 2-worker LocalCluster gives the single-process catalog, bit for bit (ridge)."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from labelexplorer.catalog import predict_catalog
from labelexplorer.exceptions import FileFormatError

BATCH = 5


@pytest.fixture(scope="module")
def single(survey, ridge_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "single.parquet"
    return predict_catalog(ridge_dir, survey.folder, out, batch_size=BATCH, progress=False)


@pytest.fixture(scope="module")
def client():
    """The cluster ``scheduler="local", workers=2`` starts (shared by the tests: starting one takes seconds)."""
    from labelexplorer.catalog import _dask_client

    with _dask_client("local", 2) as client:
        yield client


def test_local_cluster_gives_the_single_process_catalog_bit_for_bit(single, survey, ridge_dir, client, tmp_path):
    workers = client.scheduler_info()["workers"].values()
    assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers)
    catalog = predict_catalog(ridge_dir, survey.folder, tmp_path / "dask.parquet", batch_size=BATCH,
                              scheduler=client, progress=False)
    assert len(catalog) == 24
    assert pq.read_table(catalog._files[0]).equals(pq.read_table(single._files[0]))
    assert catalog.meta["model_hash"] == single.meta["model_hash"]
    # only the run-to-run provenance differs
    assert catalog.meta["scheduler"] != single.meta["scheduler"] == "in-process"


def test_bad_file_on_a_worker_is_named_and_skipped_like_in_process(survey_copy, ridge_dir, client, tmp_path):
    bad = survey_copy.files[7]
    bad.write_bytes(bad.read_bytes()[:5000])  # truncated
    with pytest.warns(UserWarning, match="skipped"):
        in_process = predict_catalog(ridge_dir, survey_copy.folder, tmp_path / "one.parquet", batch_size=BATCH,
                                     progress=False)
    with pytest.warns(UserWarning, match="skipped"):
        on_dask = predict_catalog(ridge_dir, survey_copy.folder, tmp_path / "two.parquet", batch_size=BATCH,
                                  scheduler=client, progress=False)
    assert on_dask.errors["file"].tolist() == [str(bad)] == in_process.errors["file"].tolist()
    assert pq.read_table(on_dask._files[0]).equals(pq.read_table(in_process._files[0]))
    assert len(on_dask) == 23


def test_on_error_fail_on_dask_keeps_what_was_written(survey_copy, ridge_dir, client, tmp_path):
    bad = survey_copy.files[-1]  # in the last batch: every other batch can finish first
    bad.write_text("garbage")
    output = tmp_path / "fail.parquet"
    with pytest.raises(FileFormatError, match=re.escape(bad.name)):
        predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, scheduler=client, on_error="fail",
                        progress=False)
    assert not output.exists()
    bad.unlink()  # the user removes the bad file: the input list changes, so the run starts over
    catalog = predict_catalog(ridge_dir, survey_copy.folder, output, batch_size=BATCH, scheduler=client,
                              resume=False, progress=False)
    assert len(catalog) == 23 and catalog.errors.empty
