"""Cluster homogeneity and the globular cluster's Mg–Al anticorrelation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelexplorer.analysis.clusters import cluster_homogeneity, homogeneity_report, members, mg_al
from labelexplorer.exceptions import LabelError


@pytest.fixture
def cluster_table() -> pd.DataFrame:
    """400 members of 'A' ([Fe/H] -0.1, measured with σ 0.05 and honest errors) and 100 field stars."""
    rng = np.random.default_rng(4)
    n = 500
    names = np.where(np.arange(n) < 400, "A", "")
    feh = np.where(names == "A", -0.1, rng.normal(-0.3, 0.4, n)) + rng.normal(0, 0.05, n)
    return pd.DataFrame({"CLUSTER": names, "X__FE_H": feh, "X__FE_H_ERR": 0.05,
                         "X__MG_H": feh + 0.1 + rng.normal(0, 0.05, n), "X__MG_H_ERR": 0.03,
                         "Y__FE_H": feh, "Y__FE_H_ERR": 0.10})


def test_members_mask_and_errors(cluster_table):
    assert members(cluster_table, "A").sum() == 400
    with pytest.raises(LabelError, match=r"clusters present: \['A'\]"):
        members(cluster_table, "M67")
    with pytest.raises(LabelError, match="'GROUP'"):
        members(cluster_table, "A", column="GROUP")


def test_honest_errors_give_a_ratio_of_one(cluster_table):
    result = cluster_homogeneity(cluster_table, members(cluster_table, "A"), ["FE_H", "MG_FE", "AL_FE"], prefix="X__")
    assert result.index.tolist() == ["FE_H", "MG_FE"]  # the source has no Al: left out
    fe = result.loc["FE_H"]
    assert fe["n"] == 400 and fe["mean"] == pytest.approx(-0.1, abs=0.01)
    assert fe["ratio"] == pytest.approx(1.0, abs=0.1)
    assert fe["robust_spread"] == pytest.approx(0.05, abs=0.01)
    mg = result.loc["MG_FE"]  # [Mg/Fe] = [Mg/H] - [Fe/H]: spread 0.05, error sqrt(0.03² + 0.05²)
    assert mg["spread"] == pytest.approx(0.05, abs=0.01)
    assert mg["mean_error"] == pytest.approx(np.hypot(0.03, 0.05))


def test_inflated_errors_give_a_ratio_below_one(cluster_table):
    result = cluster_homogeneity(cluster_table, members(cluster_table, "A"), ["FE_H"], prefix="Y__")
    assert result.loc["FE_H", "ratio"] == pytest.approx(0.5, abs=0.06)


def test_too_few_members_give_nan_not_an_error():
    table = {"FE_H": [0.1, np.nan, np.nan], "FE_H_ERR": [0.1, 0.1, 0.1]}
    row = cluster_homogeneity(table, np.ones(3, bool), ["FE_H"]).loc["FE_H"]
    assert row["n"] == 1 and np.isnan(row["spread"]) and np.isnan(row["ratio"])


def test_report_covers_every_cluster_and_source(cluster_table):
    table = cluster_table.assign(CLUSTER=np.where(np.arange(500) >= 450, "B", cluster_table["CLUSTER"]))
    report = homogeneity_report(table, {"x": "X__", "y": "Y__"}, ["FE_H"])
    assert report[["cluster", "source"]].values.tolist() == [["A", "x"], ["A", "y"], ["B", "x"], ["B", "y"]]
    assert report.set_index(["cluster", "source"]).loc[("B", "x"), "n"] == 50


def test_mg_al_anticorrelation():
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 200)  # fraction of second-generation material
    table = {"MG_FE": 0.35 - 0.2 * p + rng.normal(0, 0.02, 200), "AL_FE": -0.1 + 1.0 * p + rng.normal(0, 0.03, 200)}
    table["MG_FE"][:5] = np.nan
    result = mg_al(table, np.ones(200, bool))
    assert result.n == 195
    assert result.pearson_r < -0.9
    assert result.slope == pytest.approx(-5.0, rel=0.15)
    assert result.al_range > 0.8


def test_mg_al_of_a_source_without_aluminium_raises():
    with pytest.raises(LabelError, match="AL_FE"):
        mg_al({"MG_FE": [0.1, 0.2], "FE_H": [0.0, 0.0]}, np.ones(2, bool))


def test_mock_clusters_open_homogeneous_globular_anticorrelated():
    from labelexplorer.mock import population
    from labelexplorer.mock.stellar import true_label_table

    stars = population(6000, seed=0)
    truth = true_label_table(stars).reset_index(drop=True).add_prefix("TRUE__")
    truth["CLUSTER"] = stars["CLUSTER"].to_numpy()
    m67 = cluster_homogeneity(truth, members(truth, "M67"), ["FE_H", "AL_FE"], prefix="TRUE__")
    assert m67.loc["FE_H", "spread"] < 0.03 and m67.loc["AL_FE", "spread"] < 0.05
    m13 = mg_al(truth, members(truth, "M13"), prefix="TRUE__")
    assert m13.pearson_r < -0.5 and m13.al_spread > 0.15
