"""[X/Fe]–[Fe/H] sequences from either abundance convention."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelexplorer.analysis.sequences import (
    binned_sequence,
    compare_sequences,
    element_over_iron,
    iron,
    sequence_elements,
    sequence_table,
)
from labelexplorer.exceptions import LabelError


def test_x_fe_is_taken_directly_when_present():
    table = {"MG_FE": [0.2, np.nan], "MG_FE_ERR": [0.03, 0.04], "MG_H": [9.0, 9.0], "FE_H": [0.0, 0.0]}
    values, errors = element_over_iron(table, "Mg")
    np.testing.assert_array_equal(values, [0.2, np.nan])
    np.testing.assert_array_equal(errors, [0.03, 0.04])


def test_x_fe_from_x_h_minus_fe_h_with_errors_in_quadrature():
    table = pd.DataFrame({"BCNN__AL_H": [-1.2, 0.3], "BCNN__AL_H_ERR": [0.06, 0.03], "BCNN__FE_H": [-1.5, 0.1],
                          "BCNN__FE_H_ERR": [0.08, 0.04]})
    values, errors = element_over_iron(table, "al", prefix="BCNN__")
    np.testing.assert_allclose(values, [0.3, 0.2])
    np.testing.assert_allclose(errors, [0.1, 0.05])


def test_missing_uncertainties_are_nan_not_an_error():
    values, errors = element_over_iron({"CA_H": [0.1], "FE_H": [0.0]}, "Ca")
    assert values.tolist() == [0.1] and np.isnan(errors).all()


@pytest.mark.parametrize("table, message", [
    ({"MG_H": [0.1]}, "MG_FE"), ({"FE_H": [0.0]}, "MG_H"), ({}, "MG_FE"),
], ids=["no-iron", "no-magnesium", "empty"])
def test_missing_columns_raise_label_error_naming_them(table, message):
    with pytest.raises(LabelError, match=message):
        element_over_iron(table, "Mg")


def test_iron_needs_fe_h():
    with pytest.raises(LabelError, match="X__FE_H"):
        iron({"FE_H": [0.0]}, prefix="X__")


def test_sequence_elements_in_aspcap_order():
    columns = ["FE_H", "NI_H", "MG_FE", "C_H", "TIII_H", "TEFF", "FE_H_ERR"]
    assert sequence_elements(columns) == ["C", "Mg", "TiII", "Ni"]
    assert sequence_elements(["X__MG_FE", "MG_H"], prefix="X__") == ["Mg"]


def test_sequence_table_holds_every_element_and_its_error():
    table = sequence_table({"FE_H": [-1.0, 0.0], "FE_H_ERR": [0.03, 0.04], "MG_H": [-0.6, 0.0],
                            "MG_H_ERR": [0.04, 0.03]})
    np.testing.assert_allclose(table["MG_FE"], [0.4, 0.0])
    np.testing.assert_allclose(table["MG_FE_ERR"], [0.05, 0.05])


def test_binned_sequence_recovers_a_plateau_and_a_decline():
    rng = np.random.default_rng(0)
    feh = rng.uniform(-2.0, 0.4, 20000)
    alpha = np.where(feh < -0.8, 0.3, 0.3 - 0.3 * (feh + 0.8) / 1.2) + rng.normal(0, 0.02, feh.size)
    binned = binned_sequence(feh, alpha, bins=np.arange(-2.0, 0.41, 0.2))
    plateau = binned[binned["FE_H"] < -1.0]
    assert np.allclose(plateau["median"], 0.3, atol=0.01)
    assert np.allclose(plateau["sigma_mad"], 0.02, atol=0.005)
    assert binned["median"].iloc[-1] < 0.03  # the last bin (0.2-0.4 dex) lies on the decline


def test_binned_sequence_ignores_nan_and_thin_bins():
    feh = np.array([-0.5] * 10 + [0.5] * 3 + [np.nan])
    xfe = np.array([0.1] * 10 + [0.0] * 3 + [5.0])
    binned = binned_sequence(feh, xfe, bins=[-1.0, 0.0, 1.0], min_count=5)
    assert binned["FE_H"].tolist() == [-0.5] and binned["n"].tolist() == [10]
    assert binned_sequence([np.nan], [np.nan]).empty


def test_compare_sequences_reports_bias_scatter_and_quoted_error():
    rng = np.random.default_rng(1)
    n = 5000
    feh = rng.uniform(-1, 0.3, n)
    truth = rng.normal(0.1, 0.1, n)
    table = pd.DataFrame({"TRUE__FE_H": feh, "TRUE__MG_FE": truth, "M__FE_H": feh,
                          "M__MG_H": feh + truth + 0.02 + rng.normal(0, 0.05, n), "M__MG_H_ERR": 0.05})
    result = compare_sequences(table, "M__", "TRUE__")
    assert result.index.tolist() == ["Mg"]
    assert result.loc["Mg", "bias"] == pytest.approx(0.02, abs=0.005)
    assert result.loc["Mg", "sigma_mad"] == pytest.approx(0.05, abs=0.005)
    assert np.isnan(result.loc["Mg", "median_error"])  # no FE_H_ERR: the [Mg/Fe] error is unknown


def test_mock_population_has_the_alpha_plateau_in_magnesium():
    from labelexplorer.mock import population

    stars = population(3000, seed=0)
    feh, mg = stars["TRUE_FE_H"].to_numpy(), stars["TRUE_MG_FE"].to_numpy()
    binned = binned_sequence(feh, mg, bins=[-2.0, -1.0, -0.2, 0.2])
    assert binned["median"].iloc[0] > binned["median"].iloc[-1] + 0.15
