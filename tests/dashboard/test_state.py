"""The dashboard state and catalog schema, without Panel rendering or a browser."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from labelexplorer import LabelPrediction
from labelexplorer.dashboard.state import (
    ExplorerState,
    catalog_sources,
    combine_catalog,
    read_catalog,
    source_labels,
    source_name,
    source_prefix,
)
from labelexplorer.exceptions import LabelExplorerError, UnknownNameError


@pytest.fixture
def catalog(dashboard_catalog) -> pd.DataFrame:
    return dashboard_catalog.copy()


@pytest.fixture
def state(catalog) -> ExplorerState:
    return ExplorerState(catalog)


# ------------------------------------------------------------------------------------ schema
def test_prefix_and_name_round_trip():
    for name in ("ridge", "bcnn-censored", "apogee-net", "true"):
        assert source_name(source_prefix(name)[:-2]) == name


def test_catalog_sources_orders_methods_before_references(catalog):
    assert catalog_sources(catalog.columns) == ["ridge", "bcnn-censored", "true"]
    assert source_labels(catalog.columns, "bcnn-censored") == ["TEFF", "LOGG", "FE_H", "MG_H"]


def test_combine_catalog_places_values_on_the_right_rows(catalog):
    assert catalog["ID"].tolist()[:2] == ["2M00000000", "2M00000001"]
    assert catalog["RIDGE__TEFF"].iloc[:20].isna().all()
    np.testing.assert_allclose(catalog["RIDGE__TEFF"].iloc[20:], catalog["TRUE__TEFF"].iloc[20:], atol=0.1)
    total = np.hypot(0.03, 0.04)
    np.testing.assert_allclose(catalog["RIDGE__TEFF_ERR"].iloc[20:], total)
    assert catalog["RIDGE__FLAG_LOW_SNR"].dtype == bool
    assert not catalog["RIDGE__FLAG_LOW_SNR"].iloc[:20].any()
    assert (catalog["RIDGE__FLAG_LOW_SNR"].iloc[20:] == (catalog["SNR"].iloc[20:] < 50)).all()


@pytest.mark.parametrize("problem, call", [
    ("unknown star", lambda s: combine_catalog(s, {"x": pd.DataFrame({"ID": ["zz"], "TEFF": [1.0]})})),
    ("no ID column", lambda s: combine_catalog(s.drop(columns="ID"), {})),
    ("duplicate IDs", lambda s: combine_catalog(pd.concat([s, s]), {})),
    ("not a prediction", lambda s: combine_catalog(s, {"x": [1, 2]})),
], ids=lambda v: v if isinstance(v, str) else "")
def test_combine_catalog_rejects_bad_input(problem, call):
    with pytest.raises(LabelExplorerError):
        call(pd.DataFrame({"ID": ["a", "b"]}))


# ------------------------------------------------------------------------------------ state
def test_state_defaults_follow_the_catalog(state):
    assert state.sources == ["ridge", "bcnn-censored", "true"]
    assert state.methods == ["ridge", "bcnn-censored"]
    assert (state.method, state.reference, state.label) == ("ridge", "true", "TEFF")
    assert state.param.label.objects == ["TEFF", "LOGG", "FE_H", "MG_FE", "AL_FE", "MG_H"]
    assert state.column("ridge", "MG_FE_ERR") == "RIDGE__MG_FE_ERR"
    assert state.column("bcnn-censored", "MG_FE") is None
    assert state.quantities_of("bcnn-censored")[:2] == ["TEFF", "TEFF_ERR"]


def test_state_rejects_a_catalog_without_ids():
    with pytest.raises(LabelExplorerError, match="'ID'"):
        ExplorerState(pd.DataFrame({"RIDGE__TEFF": [1.0]}))


def test_new_catalog_resets_choices_and_selection(state, catalog):
    state.method = "bcnn-censored"
    state.select([1, 2])
    state.catalog = catalog.drop(columns=[c for c in catalog.columns if c.startswith("BCNN")])
    assert state.method == "ridge" and state.selection.size == 0 and state.star is None


@pytest.mark.parametrize("given", [["2M00000005", "2M00000007"], [5, 7], "mask"], ids=["ids", "positions", "mask"])
def test_select_by_ids_positions_or_mask(state, given):
    if given == "mask":
        given = np.isin(np.arange(len(state)), [5, 7])
    state.select(given)
    assert state.selection.tolist() == [5, 7]
    assert state.selected()["ID"].tolist() == ["2M00000005", "2M00000007"]


@pytest.mark.parametrize("bad, error", [
    (["2M0000000X"], UnknownNameError), ([10_000], LabelExplorerError), (np.ones(3, bool), LabelExplorerError),
], ids=["unknown-id", "position-out-of-range", "mask-wrong-length"])
def test_bad_selections_raise_clear_errors(state, bad, error):
    with pytest.raises(error):
        state.select(bad)
    assert state.selection.size == 0


def test_unknown_star_suggests_a_close_id(state):
    with pytest.raises(UnknownNameError, match=r"'2M00000O50' is not in the catalog \(did you mean '2M\d{8}'"):
        state.select_star("2M00000O50")


def test_step_star_walks_the_selection_and_wraps(state):
    state.select([40, 10, 90])
    seen = []
    for _ in range(4):
        state.step_star(1)
        seen.append(state.star)
    assert seen == ["2M00000010", "2M00000040", "2M00000090", "2M00000010"]
    state.step_star(-1)
    assert state.star == "2M00000090"


def test_step_star_without_selection_skips_stars_the_method_did_not_predict(state):
    state.step_star(1)
    assert state.star == "2M00000020"  # ridge has no prediction for the first 20 stars
    state.step_star(-1)
    assert state.star == "2M00000199"


def test_star_table_puts_every_source_side_by_side(state, catalog):
    state.select_star("2M00000050")
    table = state.star_table()
    assert table.loc["TEFF", ("ridge", "value")] == pytest.approx(catalog.loc[50, "RIDGE__TEFF"])
    assert table.loc["TEFF", ("ridge", "total")] == pytest.approx(0.05)
    assert table.loc["TEFF", ("ridge", "model")] == pytest.approx(0.03)
    assert table.loc["MG_H", ("bcnn-censored", "value")] == pytest.approx(catalog.loc[50, "BCNN_CENSORED__MG_H"])
    assert ("true", "total") not in table.columns  # the truth has no uncertainties: no empty column
    assert np.isnan(table.loc["MG_H", ("ridge", "value")])


def test_star_flags(state, catalog):
    low = int(np.flatnonzero((catalog["SNR"] < 50) & catalog["RIDGE__TEFF"].notna())[0])
    assert state.star_flags(catalog["ID"][low])["ridge"] == ["low_snr"]
    assert state.star_flags() == {}


# ------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("format", ["csv", "parquet", "fits"])
def test_export_contains_exactly_the_selected_stars(state, tmp_path, format):
    chosen = [3, 50, 120]
    state.select(chosen)
    path = state.export(tmp_path / f"subset.{format}")
    if format == "csv":
        back = pd.read_csv(path, dtype={"ID": str})
    elif format == "parquet":
        back = pd.read_parquet(path)
    else:
        from astropy.table import Table

        back = Table.read(path).to_pandas()
    assert back["ID"].astype(str).tolist() == ["2M00000003", "2M00000050", "2M00000120"]
    np.testing.assert_allclose(back["TRUE__TEFF"], state.catalog["TRUE__TEFF"].iloc[chosen])
    assert list(back.columns) == state.columns
    assert state.export_bytes(format)[:4] == path.read_bytes()[:4]


def test_export_of_an_unknown_format_raises_and_writes_nothing(state, tmp_path):
    state.select([1])
    with pytest.raises(UnknownNameError, match="csv, parquet, fits"):
        state.export(tmp_path / "subset.xlsx")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------ reading catalogs
def test_read_catalog_joins_flat_prediction_files_by_id(tmp_path):
    a = LabelPrediction(["TEFF"], [[4800.0], [5100.0]], ids=["s1", "s2"]).to_pandas()
    b = LabelPrediction(["LOGG"], [[2.5]], ids=["s2"]).to_pandas()
    a.to_parquet(tmp_path / "ridge.parquet")
    b.to_csv(tmp_path / "slam.csv", index=False)
    catalog = read_catalog([tmp_path / "ridge.parquet", tmp_path / "slam.csv"])
    assert catalog_sources(catalog.columns) == ["ridge", "slam"]
    assert catalog.set_index("ID").loc["s2", "SLAM__LOGG"] == 2.5
    assert np.isnan(catalog.set_index("ID").loc["s1", "SLAM__LOGG"])


@pytest.mark.parametrize("name, content", [
    ("missing.parquet", None), ("table.xlsx", b"PK"), ("broken.parquet", b"not parquet"),
    ("noid.csv", b"TEFF\n4800\n"),
], ids=["missing-file", "unknown-suffix", "truncated-parquet", "no-id-column"])
def test_read_catalog_errors_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LabelExplorerError, match=name):
        read_catalog([path])


def test_dask_catalog_is_read_column_by_column(catalog):
    dd = pytest.importorskip("dask.dataframe")
    state = ExplorerState(dd.from_pandas(catalog, npartitions=3))
    assert state.is_dask and len(state) == len(catalog)
    frame = state.frame(["RIDGE__TEFF", "TRUE__TEFF"])
    assert isinstance(frame, pd.DataFrame)
    np.testing.assert_array_equal(frame["TRUE__TEFF"].to_numpy(), catalog["TRUE__TEFF"].to_numpy())
    state.select(["2M00000150"])
    assert state.star_table("2M00000150").loc["TEFF", ("true", "value")] == catalog.loc[150, "TRUE__TEFF"]
    assert pd.read_csv(io.BytesIO(state.export_bytes("csv")))["ID"].tolist() == ["2M00000150"]
