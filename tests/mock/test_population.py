"""The mock star population: classes, chemistry, clusters, photometry, pipeline-like labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelexplorer.exceptions import LabelExplorerError
from labelexplorer.labels import MISSING
from labelexplorer.mock import population
from labelexplorer.mock.stellar import BLOCK_SIZE, STAR_CLASSES, X_FE_LABELS, physics_labels, true_label_table


@pytest.fixture(scope="module")
def stars() -> pd.DataFrame:
    return population(12_000, seed=7, n_spectra=2_000, n_lamost=500)


def test_every_class_is_present_with_its_teff_logg_range(stars):
    ranges = {  # class: (Teff low, Teff high, logg low, logg high)
        "red_giant": (3500, 5600, 0.2, 3.7), "red_clump": (4300, 5300, 2.1, 2.8),
        "dwarf": (3900, 6900, 3.4, 4.8), "m_dwarf": (2700, 4100, 4.4, 5.4),
        "yso": (3000, 5000, 3.0, 4.3), "hot": (7000, 50000, 3.4, 4.5),
    }
    assert set(stars["STAR_CLASS"]) == set(STAR_CLASSES)
    for name, (t_low, t_high, g_low, g_high) in ranges.items():
        members = stars[stars["STAR_CLASS"] == name]
        assert len(members) > 50, name
        assert members["TRUE_TEFF"].between(t_low, t_high).all(), name
        assert members["TRUE_LOGG"].between(g_low, g_high).all(), name
    assert stars.loc[stars["STAR_CLASS"] == "hot", "TRUE_TEFF"].max() > 30_000


def test_young_stars_sit_below_the_main_sequence_inside_the_yso_polygon(stars):
    young = stars[stars["STAR_CLASS"] == "yso"]
    dwarfs = stars[(stars["STAR_CLASS"] == "m_dwarf")]
    assert young["TRUE_LOGG"].median() < dwarfs["TRUE_LOGG"].median() - 0.8
    # APOGEE Net's YSO polygon upper edge from (2200, 4.4) to (4500, 3.9)
    inside = young[young["TRUE_TEFF"] < 4500]
    upper = 4.4 - 0.5 * (inside["TRUE_TEFF"] - 2200) / 2300
    assert (inside["TRUE_LOGG"] <= upper).mean() > 0.95


def test_alpha_is_bimodal_at_fixed_metallicity(stars):
    field = stars[(stars["CLUSTER"] == "") & stars["TRUE_FE_H"].between(-0.4, -0.2)
                  & (stars["POPULATION"] != "young")]
    counts, edges = np.histogram(field["TRUE_MG_FE"], bins=np.arange(-0.1, 0.4, 0.025))
    centres = 0.5 * (edges[1:] + edges[:-1])
    low = counts[(centres > -0.02) & (centres < 0.09)].max()
    high = counts[(centres > 0.14) & (centres < 0.26)].max()
    trough = counts[(centres > 0.09) & (centres < 0.14)].min()
    assert trough < 0.5 * min(low, high)
    # the high-alpha sequence has its knee near [Fe/H] = -0.6: flat below, declining above
    thick = stars[stars["POPULATION"] == "thick_disc"]
    plateau = thick.loc[thick["TRUE_FE_H"] < -0.8, "TRUE_MG_FE"].median()
    rich = thick.loc[thick["TRUE_FE_H"] > -0.1, "TRUE_MG_FE"].median()
    assert 0.22 < plateau < 0.34 and rich < plateau - 0.1


def test_element_trends_follow_nucleosynthesis(stars):
    field = stars[(stars["CLUSTER"] == "") & (stars["POPULATION"] != "young")]
    corr = lambda a, b: np.corrcoef(field[a], field[b])[0, 1]  # noqa: E731
    assert corr("TRUE_O_FE", "TRUE_MG_FE") > 0.8  # alpha elements move together
    assert corr("TRUE_MN_FE", "TRUE_FE_H") > 0.3  # Mn rises with Fe
    giants = field[field["STAR_CLASS"] == "red_giant"]
    dwarfs = field[field["STAR_CLASS"] == "dwarf"]
    # first dredge-up: giants have less C and more N than dwarfs
    assert giants["TRUE_C_FE"].median() < dwarfs["TRUE_C_FE"].median() - 0.05
    assert giants["TRUE_N_FE"].median() > dwarfs["TRUE_N_FE"].median() + 0.15
    assert set(X_FE_LABELS) <= {c.removeprefix("TRUE_") for c in stars.columns}
    assert len(X_FE_LABELS) == 25


@pytest.mark.parametrize("cluster, fe_h", [("M67", 0.0), ("NGC6819", 0.09)])
def test_open_clusters_are_chemically_homogeneous(stars, cluster, fe_h):
    members = stars[stars["CLUSTER"] == cluster]
    assert len(members) > 100
    assert abs(members["TRUE_FE_H"].mean() - fe_h) < 0.01
    assert {"dwarf", "red_giant"} <= set(members["STAR_CLASS"])
    for column in ["TRUE_FE_H", *(f"TRUE_{label}" for label in X_FE_LABELS)]:
        # C and N change at the first dredge-up, equally for all giants (one mass per cluster)
        group = members[members["STAR_CLASS"] == "red_giant"] if column in ("TRUE_C_FE", "TRUE_CI_FE",
                                                                           "TRUE_N_FE") else members
        assert group[column].std() <= 0.02, column


def test_globular_cluster_has_the_mg_al_anticorrelation(stars):
    m13 = stars[stars["CLUSTER"] == "M13"]
    assert len(m13) > 100 and set(m13["STAR_CLASS"]) == {"red_giant"}
    assert abs(m13["TRUE_FE_H"].mean() + 1.55) < 0.02
    assert 0.35 < m13["TRUE_AL_FE"].std() < 0.65  # ~0.5 dex Al spread (Meszaros et al. M13: 0.53)
    assert np.corrcoef(m13["TRUE_MG_FE"], m13["TRUE_AL_FE"])[0, 1] < -0.5
    assert np.corrcoef(m13["TRUE_NA_FE"], m13["TRUE_O_FE"])[0, 1] < -0.5
    assert m13["TRUE_FE_H"].std() < 0.02  # iron stays homogeneous


@pytest.fixture(scope="module")
def metal_poor_field_giants() -> pd.DataFrame:
    stars = population(40_000, seed=0)
    giants = stars[(stars["CLUSTER"] == "") & stars["STAR_CLASS"].isin(["red_giant", "red_clump"])]
    return giants[(giants["TRUE_FE_H"] < -1.0) & (giants["AL_FE"] > MISSING) & (giants["MG_FE"] > MISSING)]


def test_metal_poor_field_al_matches_the_real_dr12_labels(metal_poor_field_giants, real_data):
    real = pd.read_csv(real_data / "catalogs" / "apogee_dr12_labels.csv")
    real = real[(real["FE_H"] > -1e3) & (real["FE_H"] < -1.0) & (real["AL_H"] > -1e3) & (real["MG_H"] > -1e3)]
    real_al, real_mg = real["AL_H"] - real["FE_H"], real["MG_H"] - real["FE_H"]
    mock_al, mock_mg = metal_poor_field_giants["AL_FE"], metal_poor_field_giants["MG_FE"]
    assert len(real) > 100 and len(metal_poor_field_giants) > 300
    # the same median and wide range, and almost no Al-Mg correlation (the disc's is strong)
    assert abs(mock_al.median() - real_al.median()) < 0.08
    assert np.percentile(mock_al, 98) - np.percentile(mock_al, 2) > 0.8
    assert np.percentile(real_al, 98) - np.percentile(real_al, 2) > 0.8
    assert abs(np.corrcoef(mock_al, mock_mg)[0, 1]) < 0.35 and abs(np.corrcoef(real_al, real_mg)[0, 1]) < 0.35


def test_halo_has_accreted_stars_and_cluster_escapees(metal_poor_field_giants):
    halo = metal_poor_field_giants
    accreted, in_situ = halo[halo["POPULATION"] == "accreted_halo"], halo[halo["POPULATION"] == "halo"]
    assert len(accreted) > 1.5 * len(in_situ) > 0
    # accreted: lower alpha and low Al against the in-situ, thick-disc-like halo
    assert accreted["TRUE_MG_FE"].median() < in_situ["TRUE_MG_FE"].median() - 0.1
    assert accreted["TRUE_AL_FE"].median() < in_situ["TRUE_AL_FE"].median() - 0.3
    # escapees: Al- and N-rich, Mg-poor (a few per cent of the metal-poor giants)
    escapees = halo[(halo["TRUE_AL_FE"] > 0.6) & (halo["TRUE_N_FE"] > 0.4)]
    assert 0.005 < len(escapees) / len(halo) < 0.05
    assert escapees["TRUE_MG_FE"].median() < in_situ["TRUE_MG_FE"].median()

def test_radial_velocities_follow_the_components_and_clusters(stars):
    v = stars.set_index("POPULATION")["VHELIO_AVG"]
    assert np.all(np.isfinite(v))
    assert 20.0 < v["thin_disc"].std() < 45.0 < v["thick_disc"].std() < 100.0 < v["accreted_halo"].std()
    members = stars.groupby("CLUSTER")["VHELIO_AVG"]
    for cluster, (systemic, dispersion) in {"M67": (33.6, 0.8), "NGC6819": (2.5, 1.0), "M13": (-244.5, 7.1)}.items():
        assert members.mean()[cluster] == pytest.approx(systemic, abs=4 * dispersion / np.sqrt(members.size()[cluster]))
        assert members.std()[cluster] == pytest.approx(dispersion, rel=0.3)
    # the halo does not share the Sun's rotation: towards l = 90 it comes at us, towards l = 270 it recedes
    halo = stars[stars["POPULATION"].str.contains("halo") & (stars["GLAT"].abs() < 30)]
    ahead, behind = halo["GLON"].between(45, 135), halo["GLON"].between(225, 315)
    assert halo.loc[ahead, "VHELIO_AVG"].mean() < -100.0 < 100.0 < halo.loc[behind, "VHELIO_AVG"].mean()


def test_photometry_is_finite_and_ordered(stars):
    for band in ("J", "H", "K"):
        assert np.isfinite(stars[band]).all()
    assert stars["H"].between(5.0, 17.0).all()
    gaia = stars.dropna(subset=["GAIAEDR3_PHOT_G_MEAN_MAG", "GAIAEDR3_PHOT_BP_MEAN_MAG",
                                "GAIAEDR3_PHOT_RP_MEAN_MAG"])
    assert len(gaia) > 0.9 * len(stars)
    cool = gaia[gaia["TRUE_TEFF"] < 6000]
    # red stars: BP fainter than G fainter than RP; J brighter than G for cool stars
    assert (cool["GAIAEDR3_PHOT_BP_MEAN_MAG"] > cool["GAIAEDR3_PHOT_RP_MEAN_MAG"]).all()
    assert (cool["J"] < cool["GAIAEDR3_PHOT_G_MEAN_MAG"]).all()
    # colours track temperature: BP-RP decreases with Teff (low-extinction stars)
    clear = gaia[gaia["TRUE_AK"] < 0.05]
    colour = clear["GAIAEDR3_PHOT_BP_MEAN_MAG"] - clear["GAIAEDR3_PHOT_RP_MEAN_MAG"]
    assert np.corrcoef(np.log10(clear["TRUE_TEFF"]), colour)[0, 1] < -0.8
    # parallaxes: M dwarfs are near (large parallax), giants far
    plx = stars.groupby("STAR_CLASS")["GAIAEDR3_PARALLAX"].median()
    assert plx["m_dwarf"] > 3 * plx["dwarf"] > 3 * plx["red_giant"]
    m67 = stars[stars["CLUSTER"] == "M67"]
    assert abs(m67["GAIAEDR3_PARALLAX"].median() - 1000 / 860) < 0.05


def test_snr_and_visits_look_like_apogee(stars):
    snr = stars["SNR"]
    assert 0.6 < snr.between(50, 300).mean() < 0.9
    assert snr.max() > 800 and snr.min() >= 5  # a long tail to high S/N
    assert set(stars["NVISITS"]) == {1, 2, 3}
    assert (stars["NVISITS"] == 1).mean() > 0.5


def test_pipeline_labels_have_errors_and_realistic_failures(stars):
    good = stars[(stars["TEFF"] != MISSING) & (stars["SNR"] > 100) & (stars["STAR_CLASS"] == "red_giant")]
    pull = (good["TEFF"] - good["TRUE_TEFF"]) / good["TEFF_ERR"]
    assert 0.8 < pull.std() < 1.2 and abs(pull.mean()) < 0.1
    hot = stars[stars["TRUE_TEFF"] > 8000]
    assert (hot["MG_FE"] == MISSING).all() and (hot["FE_H"] == MISSING).all()
    assert (stars.loc[stars["TRUE_TEFF"] > 20000, "TEFF"] == MISSING).all()
    m_dwarfs = stars[stars["STAR_CLASS"] == "m_dwarf"]
    assert 0.1 < (m_dwarfs["LOGG"] == MISSING).mean() < 0.7
    assert ((stars["MG_FE"] == MISSING) == (stars["MG_FE_ERR"] == MISSING)).all()
    giants = stars[stars["STAR_CLASS"] == "red_giant"]
    assert (giants["MG_FE"] != MISSING).mean() > 0.9


def test_ids_are_unique_two_mass_designations_matching_the_coordinates(stars):
    assert stars["APOGEE_ID"].is_unique
    assert stars["APOGEE_ID"].str.fullmatch(r"2M\d{8}[+-]\d{7}").all()
    first = stars.iloc[0]
    hours = int(first["APOGEE_ID"][2:4]) + int(first["APOGEE_ID"][4:6]) / 60
    assert abs(hours * 15 - first["RA"]) < 0.3


def test_selection_counts_and_targeting(stars):
    assert stars["HAS_SPECTRUM"].sum() == 2_000 and stars["HAS_LAMOST"].sum() == 500
    lamost = stars[stars["HAS_LAMOST"]]
    assert lamost["TRUE_TEFF"].between(3800, 8000).all()
    assert lamost["HAS_SPECTRUM"].mean() > stars["HAS_SPECTRUM"].mean()  # the surveys overlap
    members = stars["CLUSTER"] != ""
    assert stars.loc[members, "HAS_SPECTRUM"].mean() > 2 * stars.loc[~members, "HAS_SPECTRUM"].mean()


def test_rows_depend_only_on_seed_and_index():
    small = population(300, seed=3)
    large = population(BLOCK_SIZE + 300, seed=3)
    columns = [c for c in small.columns if not c.startswith("HAS_")]
    pd.testing.assert_frame_equal(small[columns], large[columns].iloc[:300])
    other = population(300, seed=4)
    assert not np.allclose(small["TRUE_TEFF"], other["TRUE_TEFF"])


def test_label_helpers():
    stars = population(10, seed=0)
    truth = true_label_table(stars)
    assert truth.index.tolist() == stars["APOGEE_ID"].tolist()
    np.testing.assert_array_equal(truth["MG_FE"], stars["TRUE_MG_FE"])
    labels = physics_labels(stars)
    assert {"TEFF", "LOGG", "FE_H", "VMICRO", "VSINI", "MG_FE", "AL_FE"} <= set(labels)
    assert "FE_FE" not in labels


@pytest.mark.parametrize("arguments, message", [
    (dict(n_stars=0), "n_stars"),
    (dict(n_stars=-5), "n_stars"),
    (dict(n_stars=2.5), "n_stars"),
    (dict(n_stars=10, n_spectra=11), "n_spectra"),
    (dict(n_stars=10, n_lamost=-1), "n_lamost"),
    (dict(n_stars=10, n_lamost=10), "n_lamost"),
], ids=["zero-stars", "negative-stars", "float-stars", "more-spectra-than-stars", "negative-lamost",
        "too-many-lamost"])
def test_bad_counts_are_refused_with_the_argument_named(arguments, message):
    with pytest.raises(LabelExplorerError, match=message):
        population(**arguments)
