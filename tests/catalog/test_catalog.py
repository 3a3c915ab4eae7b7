"""Batch inference into catalogs (single process) and the Catalog API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table

import labelexplorer as le
from labelexplorer.catalog import Catalog, _batch_seed, expand_inputs, predict_catalog, train_model
from labelexplorer.cli import main
from labelexplorer.exceptions import FileFormatError, LabelError, LabelExplorerError, NotTrainedError

LABEL_COLUMNS = ["TEFF", "TEFF_ERR", "TEFF_MODEL_STD", "TEFF_PRED_STD", "LOGG", "LOGG_ERR", "LOGG_MODEL_STD",
                 "LOGG_PRED_STD"]


@pytest.fixture(scope="module")
def catalog(survey, ridge_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog") / "ridge.parquet"
    return predict_catalog(ridge_dir, survey.folder, out, batch_size=5, progress=False,
                           fits=out.with_suffix(".fits"))


# ---------------------------------------------------------------------------- the catalog's content
def test_catalog_holds_the_models_predictions_in_file_order(catalog, survey, ridge_dir):
    frame = catalog.to_pandas()
    model = le.load_model(ridge_dir)
    direct = model.predict(le.read([str(f) for f in survey.files]))
    assert frame["ID"].tolist() == survey.labels["APOGEE_ID"].tolist()
    assert frame["FILE"].tolist() == [str(f) for f in survey.files]
    np.testing.assert_allclose(frame["TEFF"], direct["TEFF"].mean, rtol=1e-12)
    np.testing.assert_allclose(frame["LOGG_ERR"], direct["LOGG"].total_std, rtol=1e-12)
    # the ridge baseline recovers labels that are linear in the flux
    assert np.abs(frame["TEFF"] - survey.labels["TEFF"]).max() < 20.0
    assert np.abs(frame["LOGG"] - survey.labels["LOGG"]).max() < 0.02
    np.testing.assert_array_equal(frame["SNR"], 100.0 + np.arange(len(frame)))


def test_catalog_columns_metadata_and_tidy_folder(catalog, survey):
    assert catalog.columns == ["ID", *LABEL_COLUMNS, "FLAG_OUTSIDE_TRAINING_SET", "SNR", "FILE"]
    meta = catalog.meta
    assert meta["model"] == "ridge" and len(meta["model_hash"]) == 16
    assert meta["label_names"] == ["TEFF", "LOGG"] == catalog.label_names
    assert meta["n_rows"] == meta["n_files"] == len(catalog) == 24
    assert meta["n_batches"] == 5 and meta["n_errors"] == 0 and meta["inputs"] == [str(survey.folder)]
    assert meta["created"].startswith("20") and meta["package_version"] == le.__version__
    path = catalog._files[0]
    assert not path.with_name("ridge.parts").exists() and not path.with_name("ridge.errors.csv").exists()
    assert catalog.errors.empty and list(catalog.errors.columns) == ["file", "message"]


def test_fits_copy_matches_the_parquet_catalog(catalog):
    path = catalog._files[0].with_suffix(".fits")
    table = Table.read(path, hdu=1, character_as_bytes=False)
    frame = catalog.to_pandas()
    assert table.colnames == catalog.columns
    assert table["ID"].tolist() == frame["ID"].tolist()
    np.testing.assert_array_equal(table["TEFF"], frame["TEFF"])
    np.testing.assert_array_equal(table["FLAG_OUTSIDE_TRAINING_SET"], frame["FLAG_OUTSIDE_TRAINING_SET"])
    header = fits.getheader(path, 0)
    assert header["MODEL"] == "ridge" and header["MODELHSH"] == catalog.meta["model_hash"]


def test_data_columns_do_not_depend_on_the_run(catalog, ridge_dir, survey, tmp_path):
    again = predict_catalog(ridge_dir, survey.folder, tmp_path / "again.parquet", batch_size=5, progress=False)
    first, second = pq.read_table(catalog._files[0]), pq.read_table(again._files[0])
    assert first.equals(second)  # bit for bit, metadata aside
    assert again.meta["model_hash"] == catalog.meta["model_hash"]


def test_in_memory_model_gives_the_saved_models_catalog(catalog, ridge_dir, survey, tmp_path):
    model = le.load_model(ridge_dir)
    again = predict_catalog(model, survey.files, tmp_path / "memory.parquet", batch_size=5, progress=False)
    assert again.meta["model_hash"] == catalog.meta["model_hash"]
    assert pq.read_table(catalog._files[0]).equals(pq.read_table(again._files[0]))
    assert not list(tmp_path.glob(".labelexplorer-model-*"))  # the temporary model copy is gone


def test_completed_catalog_is_returned_without_recomputing(catalog, ridge_dir, survey):
    again = predict_catalog(ridge_dir, survey.folder, catalog._files[0], batch_size=5, progress=False)
    assert again.meta["created"] == catalog.meta["created"]


# ---------------------------------------------------------------------------- inputs
def test_inputs_from_tables_lists_and_folders_agree(survey, tmp_path):
    expected = [str(f) for f in survey.files]
    csv = survey.folder.parent / "files.csv"  # relative paths are taken from the table's folder
    pd.DataFrame({"APOGEE_ID": survey.labels["APOGEE_ID"],
                  "File": [f"apStar/{f.name}" for f in survey.files]}).to_csv(csv, index=False)
    text = tmp_path / "files.txt"
    text.write_text("# one path per line\n" + "\n".join(expected[::-1]) + "\n")
    fits_table = tmp_path / "allStar-files.fits"
    Table({"APOGEE_ID": survey.labels["APOGEE_ID"].to_numpy(dtype=str), "FILE": expected}).write(fits_table)
    assert expand_inputs(survey.folder) == expected
    assert expand_inputs(csv) == expected
    assert expand_inputs(fits_table) == expected
    assert expand_inputs(text) == expected[::-1]
    assert expand_inputs([survey.files[3], survey.folder]) == [expected[3]] + expected[:3] + expected[4:]


def test_mock_universe_folder_means_its_apstar_files(tmp_path):
    from labelexplorer.mock import make_universe

    universe = make_universe(tmp_path / "universe", n_stars=8, n_spectra=2, n_galaxies=0, n_lamost=0, workers=1,
                             progress=False)
    assert expand_inputs(universe.path) == [str(p) for p in universe.files("apstar")]


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kwargs, message", [
    pytest.param({"batch_size": 0}, "batch_size", id="batch-size-zero"),
    pytest.param({"batch_size": 2.5}, "batch_size", id="batch-size-float"),
    pytest.param({"on_error": "ignore"}, "on_error", id="unknown-on-error"),
    pytest.param({"workers": 0}, "workers", id="no-workers"),
])
def test_bad_arguments_are_named(kwargs, message, ridge_dir, survey, tmp_path):
    with pytest.raises(LabelExplorerError, match=message):
        predict_catalog(ridge_dir, survey.folder, tmp_path / "c.parquet", progress=False, **kwargs)
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.parametrize("case", ["missing-input", "empty-folder", "csv-without-paths", "output-is-folder",
                                  "not-a-model", "untrained-model"])
def test_bad_inputs_and_models_are_named(case, ridge_dir, survey, tmp_path):
    model, inputs, output = ridge_dir, survey.folder, tmp_path / "c.parquet"
    error, named = LabelExplorerError, None
    if case == "missing-input":
        inputs = named = tmp_path / "nowhere"
        error = FileFormatError
    elif case == "empty-folder":
        inputs = named = tmp_path / "empty"
        inputs.mkdir()
    elif case == "csv-without-paths":
        inputs = named = tmp_path / "table.csv"
        inputs.write_text("APOGEE_ID,TEFF\n2M1,4000\n")
    elif case == "output-is-folder":
        output = named = tmp_path
    elif case == "not-a-model":
        model = named = tmp_path / "model"
        model.mkdir()
    else:
        model, error = le.get_model("ridge"), NotTrainedError
    with pytest.raises(error) as info:
        predict_catalog(model, inputs, output, progress=False)
    assert named is None or str(named) in str(info.value)


# ---------------------------------------------------------------------------- seeds of MC models
def test_batch_seed_depends_on_the_file_name_not_its_folder():
    assert _batch_seed(0, "/a/apStar-1.fits") == _batch_seed(0, "/b/c/apStar-1.fits")
    assert _batch_seed(0, "/a/apStar-1.fits") != _batch_seed(0, "/a/apStar-2.fits")
    assert _batch_seed(0, "/a/apStar-1.fits") != _batch_seed(1, "/a/apStar-1.fits")


def test_models_random_state_is_seeded_per_batch_and_restored(ridge_dir, survey, tmp_path, monkeypatch):
    model = le.load_model(ridge_dir)
    seen = []
    original = type(model)._predict

    def spy(self, data):
        seen.append((self.random_state, str(data.ids[0])))
        return original(self, data)

    monkeypatch.setattr(type(model), "_predict", spy)
    predict_catalog(model, survey.folder, tmp_path / "seeded.parquet", batch_size=10, progress=False)
    firsts = [survey.files[0], survey.files[10], survey.files[20]]
    assert seen == [(_batch_seed(0, str(f)), survey.labels["APOGEE_ID"][i]) for f, i in zip(firsts, (0, 10, 20))]
    assert model.random_state == 0


# ---------------------------------------------------------------------------- the Catalog API
def test_catalog_open_len_head_and_columns(catalog):
    opened = Catalog.open(catalog._files[0])
    assert len(opened) == 24 and opened.columns == catalog.columns
    head = opened.head(3)
    assert head["ID"].tolist() == catalog.to_pandas()["ID"].tolist()[:3]
    assert list(opened.to_pandas(["ID", "TEFF"]).columns) == ["ID", "TEFF"]
    assert "Catalog 24 rows" in repr(opened)
    with pytest.raises(LabelError, match="TEF"):
        opened.to_pandas(["TEF"])


@pytest.mark.parametrize("bad", ["not-parquet", "missing", "empty-folder"])
def test_catalog_open_names_bad_paths(bad, tmp_path):
    path = tmp_path / "x.parquet"
    if bad == "not-parquet":
        path.write_text("ID,TEFF\n")
    elif bad == "empty-folder":
        path = tmp_path
    with pytest.raises(FileFormatError, match=str(path)):
        Catalog.open(path)


def test_filter_by_query_function_and_mask(catalog):
    frame = catalog.to_pandas()
    expected = frame.loc[(frame.TEFF < 4800) & (frame.LOGG > 2), "ID"].tolist()
    assert catalog.filter("TEFF < 4800 and LOGG > 2").to_pandas()["ID"].tolist() == expected
    assert catalog.filter(lambda df: (df.TEFF < 4800) & (df.LOGG > 2)).to_pandas()["ID"].tolist() == expected
    mask = ((frame.TEFF < 4800) & (frame.LOGG > 2)).to_numpy()
    selected = catalog.filter(mask)
    assert selected.to_pandas()["ID"].tolist() == expected and len(selected) == len(expected)
    assert selected.meta["model"] == "ridge"
    with pytest.raises(LabelExplorerError, match="TEMP"):
        catalog.filter("TEMP < 5")
    with pytest.raises(LabelExplorerError, match="24 booleans"):
        catalog.filter(mask[:5])


def test_join_to_an_allstar_like_table(catalog, survey, tmp_path):
    allstar = tmp_path / "allStar-test.fits"
    table = Table({"APOGEE_ID": survey.labels["APOGEE_ID"][::-1].to_numpy(dtype=str)[:20],
                   "TEFF": survey.labels["TEFF"][::-1].to_numpy()[:20].astype(np.float32),
                   "SNR": np.full(20, 50.0, np.float32)})
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table)]).writeto(allstar)
    joined = catalog.join(allstar, on="APOGEE_ID").to_pandas()
    assert len(joined) == 24 and joined["ID"].tolist() == catalog.to_pandas()["ID"].tolist()
    reference = survey.labels.set_index("APOGEE_ID")["TEFF"]
    matched = joined.dropna(subset=["TEFF_REF"])
    assert len(matched) == 20
    np.testing.assert_allclose(matched["TEFF_REF"], reference[matched["ID"]].to_numpy(), rtol=1e-6)
    assert joined["TEFF_REF"].isna().sum() == 4 and "SNR_REF" in joined
    with pytest.raises(LabelError, match="OBJID"):
        catalog.join(allstar, on="OBJID")


def test_crossmatch_and_compare_two_methods(catalog, survey, tmp_path):
    spectra = le.read([str(f) for f in survey.files])
    stiff = le.get_model("ridge", alpha=30.0, n_bootstrap=4, n_folds=3).fit(spectra, survey.labels[["TEFF", "LOGG"]])
    other = predict_catalog(stiff, survey.files[4:], tmp_path / "stiff.parquet", batch_size=8, progress=False)
    matched = catalog.crossmatch(other).to_pandas()
    assert len(matched) == 20 and {"TEFF", "TEFF_2"} <= set(matched.columns)
    comparison = catalog.compare(other)
    a, b = catalog.to_pandas().iloc[4:], other.to_pandas()
    difference = a["TEFF"].to_numpy() - b["TEFF"].to_numpy()
    summary = comparison.summary
    assert list(summary.index) == ["TEFF", "LOGG"] and int(summary.loc["TEFF", "n"]) == 20
    assert summary.loc["TEFF", "bias"] == pytest.approx(np.median(difference))
    assert summary.loc["TEFF", "sigma_mad"] == pytest.approx(
        1.4826 * np.median(np.abs(difference - np.median(difference))))
    np.testing.assert_allclose(comparison.differences["TEFF_DIFF"], difference)
    z = difference / np.hypot(a["TEFF_ERR"].to_numpy(), b["TEFF_ERR"].to_numpy())
    np.testing.assert_allclose(comparison.differences["TEFF_Z"], z)


# ---------------------------------------------------------------------------- command line
def test_cli_train_then_predict(survey, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    survey.labels.to_csv(labels, index=False)
    model_dir = tmp_path / "model"
    assert main(["train", "ridge", "--spectra", str(survey.folder), "--labels", str(labels), "--label-names",
                 "TEFF,LOGG", "-o", str(model_dir), "--set", "alpha=0.01", "--set", "n_bootstrap=2"]) == 0
    model = le.load_model(model_dir)
    assert model.alpha == 0.01 and model.label_names_ == ["TEFF", "LOGG"]
    out = tmp_path / "cli.parquet"
    assert main(["predict", str(model_dir), str(survey.folder), "-o", str(out), "--batch-size", "7", "--quiet",
                 "--fits", str(tmp_path / "cli.fits")]) == 0
    assert "wrote 24 rows" in capsys.readouterr().out
    frame = Catalog.open(out).to_pandas()
    assert np.abs(frame["TEFF"] - survey.labels["TEFF"]).max() < 20.0
    assert (tmp_path / "cli.fits").is_file()


def test_cli_reports_bad_input_in_one_line(ridge_dir, tmp_path, capsys):
    assert main(["predict", str(ridge_dir), str(tmp_path / "nowhere"), "-o", str(tmp_path / "c.parquet")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_train_model_joins_labels_by_id_and_skips_unknown_stars(survey, tmp_path):
    labels = survey.labels.iloc[:18]  # six stars have no labels
    with pytest.warns(UserWarning, match="6 without a row"):
        model = train_model("ridge", survey.folder, labels, tmp_path / "m", label_names=["Teff"], alpha=0.01,
                            n_bootstrap=0)
    assert model.label_names_ == ["TEFF"] and (tmp_path / "m" / "config.json").is_file()
    predicted = model.predict(le.read([str(f) for f in survey.files[:18]]))["TEFF"].mean
    assert np.abs(predicted - labels["TEFF"].to_numpy()).max() < 30.0
