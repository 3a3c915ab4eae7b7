"""The mock APOGEE physics: line list, spectra that respond to labels as real ones do, and the noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelexplorer.exceptions import LabelError, ShapeError, SpectrumError, UnknownNameError
from labelexplorer.labels import ASPCAP_ELEMENTS
from labelexplorer.mock import apogee_physics as physics
from labelexplorer.preprocess.bitmask import APOGEE_PIXMASK_BITS, DEFAULT_BAD_BITS
from labelexplorer.preprocess.grid import CHIP_RANGES, apogee_wavelength
from labelexplorer.preprocess.linelist import COLUMNS, lines_for_element, load_linelist

WAVELENGTH = apogee_wavelength()
ON_CHIP = np.zeros(WAVELENGTH.size, dtype=bool)
for _start, _end in CHIP_RANGES["dr13"]:
    ON_CHIP[_start:_end] = True
BAD_VALUE = sum(1 << bit for bit in DEFAULT_BAD_BITS)


def stars(**columns) -> dict:
    """Label dict with arrays; scalars are broadcast to the longest column."""
    n = max(np.size(value) for value in columns.values())
    return {key: np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy() for key, value in columns.items()}


def near_lines(wavelengths: np.ndarray, half_width_px: int) -> np.ndarray:
    """Boolean mask of grid pixels within ±half_width_px of any of *wavelengths*."""
    positions = np.rint((np.log10(wavelengths) - np.log10(WAVELENGTH[0])) / 6e-6).astype(int)
    positions = positions[(positions >= 0) & (positions < WAVELENGTH.size)]
    mask = np.zeros(WAVELENGTH.size, dtype=bool)
    for offset in range(-half_width_px, half_width_px + 1):
        mask[np.clip(positions + offset, 0, WAVELENGTH.size - 1)] = True
    return mask


# ------------------------------------------------------------------------------------------ line list
def test_linelist_has_the_columns_and_every_aspcap_element():
    lines = load_linelist()
    assert list(lines.columns) == list(COLUMNS)
    assert lines["wavelength"].is_monotonic_increasing
    assert lines["wavelength"].between(15050, 17050).all()
    attributed = set(lines["element"]) | set(lines["abundance_element"])
    missing = [element for element in ASPCAP_ELEMENTS if element not in attributed]
    assert not missing, f"no lines for {missing}"
    assert set(lines["kind"]) == {"atomic", "molecular", "hydrogen", "helium"}
    assert (lines.loc[lines["species"] == "CN", "abundance_element"] == "N").all()
    assert (lines.loc[lines["species"] == "OH", "abundance_element"] == "O").all()


@pytest.mark.parametrize("species, wavelength", [
    ("Mg I", 15770.15),  # 15765.84 Å in air
    ("Al I", 16723.54),  # 16718.96 Å in air
    ("K I", 15167.23),   # 15163.07 Å in air
    ("Ce II", 15789.06),  # 15784.75 Å in air (Cunha et al. 2017)
], ids=["Mg I", "Al I", "K I", "Ce II"])
def test_known_lines_are_at_their_vacuum_wavelengths(species, wavelength):
    lines = load_linelist()
    found = lines.loc[lines["species"] == species, "wavelength"]
    assert np.min(np.abs(found - wavelength)) < 0.05


def test_computed_series_match_known_wavelengths():
    br = lines_for_element("H").set_index("label")["wavelength"]
    assert br["Br11"] == pytest.approx(16811.117, abs=0.01)
    assert br["Br13"] == pytest.approx(16113.721, abs=0.01)
    co = lines_for_element("C")
    assert set(co["element"]) == {"CO"}
    heads = co[co["label"].str.startswith("12CO 3-0 R")]["wavelength"]
    assert heads.min() == pytest.approx(15581.6, abs=0.2)  # the 3-0 band head, 15577.4 Å in air
    assert (lines_for_element("He")["kind"] == "helium").all()


@pytest.mark.parametrize("name", ["Xx", "", "Fe2"], ids=["unknown", "empty", "typo"])
def test_lines_for_unknown_element_raises(name):
    with pytest.raises(UnknownNameError, match="element"):
        lines_for_element(name)


# ------------------------------------------------------------------------------------------ spectra
@pytest.fixture(scope="module")
def giant_grid():
    """A few reference stars computed once for the module."""
    labels = stars(TEFF=[4500, 4500, 3800, 6000, 9500, 9500, 30000, 30000],
                   LOGG=[2.5, 2.5, 1.0, 4.3, 3.0, 4.5, 4.0, 4.0],
                   FE_H=[0, 0, 0, 0, 0, 0, 0, -5.0],
                   MG_FE=[0, 0.3, 0, 0, 0, 0, 0, 0])
    return physics.normalized_flux(labels)


def test_normalized_flux_shape_dtype_range_and_determinism(giant_grid):
    assert giant_grid.shape == (8, 8575) and giant_grid.dtype == np.float32
    assert np.all(np.isfinite(giant_grid))
    assert giant_grid.min() > 0.0 and giant_grid.max() <= 1.0 + 1e-5
    again = physics.normalized_flux(stars(TEFF=4500, LOGG=2.5, FE_H=0.0))
    np.testing.assert_array_equal(again[0], giant_grid[0])


def test_magnesium_changes_flux_inside_its_lines(giant_grid):
    """[Mg/Fe] + 0.3 deepens the Mg lines and (almost) nothing else.

    The strong Mg I lines have damping wings of ±2–3 Å, so "inside the lines" is ±12 px of the
    line centres (4.9 % of the grid), or where removing Mg changes the flux at all.
    """
    change = np.abs(giant_grid[1] - giant_grid[0])
    assert change.sum() > 0.5  # the lines respond at all
    inside = near_lines(lines_for_element("Mg")["wavelength"].to_numpy(), 12)
    assert inside.mean() < 0.06
    assert change[inside].sum() / change.sum() > 0.8
    no_magnesium = physics.normalized_flux(stars(TEFF=4500, LOGG=2.5, FE_H=0.0, MG_FE=-3.0))[0]
    magnesium = np.abs(no_magnesium - giant_grid[0]) > 1e-3
    assert magnesium.mean() < 0.08 and change[magnesium].sum() / change.sum() > 0.9
    assert np.mean(giant_grid[1][inside]) < np.mean(giant_grid[0][inside])  # more Mg, deeper lines


def test_brackett_lines_widen_and_grow_with_gravity_in_a_stars(giant_grid):
    window = (WAVELENGTH > 16711) & (WAVELENGTH < 16911)  # Br11 at 16811 Å
    low, high = giant_grid[4][window], giant_grid[5][window]
    assert (1 - high).sum() > 1.3 * (1 - low).sum()  # equivalent width
    half_width = [np.count_nonzero(1 - row > (1 - row).max() / 2) for row in (low, high)]
    assert half_width[1] > 1.3 * half_width[0]


def test_hot_star_is_dominated_by_hydrogen_and_helium(giant_grid):
    hot, metal_free = giant_grid[6], giant_grid[7]
    absorption = (1 - hot[ON_CHIP]).sum()
    assert absorption > 20  # strong H and He lines
    assert np.abs(hot - metal_free)[ON_CHIP].sum() / absorption < 0.02  # metal lines nearly gone
    brackett = near_lines(lines_for_element("H")["wavelength"].to_numpy(), 40)
    assert (1 - hot[brackett & ON_CHIP]).sum() / absorption > 0.6


def test_cool_giants_show_co_and_oh(giant_grid):
    cool, warm = giant_grid[2], giant_grid[3]
    heads = np.searchsorted(WAVELENGTH, [15581.6, 15779.5, 15981.9, 16188.9])
    depth = [1 - cool[i:i + 6].min() for i in heads]
    assert min(depth) > 0.2
    assert max(1 - warm[i:i + 6].min() for i in heads) < 0.08
    lines = load_linelist()
    oh = near_lines(lines.loc[lines["species"] == "OH", "wavelength"].to_numpy(), 0)
    assert np.median(1 - cool[oh & ON_CHIP]) > 0.08 > np.median(1 - warm[oh & ON_CHIP])


def test_carbon_and_oxygen_labels_drive_the_molecules():
    flux = physics.normalized_flux(stars(TEFF=3800, LOGG=1.0, FE_H=0.0, C_FE=[0.0, -0.4], O_FE=[0.0, 0.0]))
    co = near_lines(lines_for_element("C")["wavelength"].to_numpy(), 0) & ON_CHIP
    assert (1 - flux[1][co]).sum() < 0.8 * (1 - flux[0][co]).sum()


def test_rotation_broadens_lines_but_keeps_their_strength():
    flux = physics.normalized_flux(stars(TEFF=5000, LOGG=3.0, FE_H=0.0, VSINI=[0.0, 40.0]))
    slow, fast = flux[:, ON_CHIP]
    assert (1 - fast).max() < 0.75 * (1 - slow).max()
    assert (1 - fast).sum() == pytest.approx((1 - slow).sum(), rel=0.03)


@pytest.mark.parametrize("labels, message", [
    ({"LOGG": [2.0], "FE_H": [0.0]}, "TEFF"),
    ({"TEFF": [4500.0, 4600.0], "LOGG": [2.0], "FE_H": [0.0, 0.0]}, "length 2"),
    ({"TEFF": [np.nan], "LOGG": [2.0], "FE_H": [0.0]}, "NaN"),
    ({"TEFF": [500.0], "LOGG": [2.0], "FE_H": [0.0]}, "TEFF"),
    ({"TEFF": [4500.0], "LOGG": [2.0], "FE_H": [0.0], "MG_FE": ["high"]}, "MG_FE"),
], ids=["missing-teff", "wrong-length", "nan", "out-of-range", "not-numbers"])
def test_bad_labels_raise_label_error(labels, message):
    with pytest.raises(LabelError, match=message):
        physics.normalized_flux(labels)


# ------------------------------------------------------------------------------------------ continuum
def test_continuum_is_in_apstar_units_and_zero_in_the_gaps():
    continuum = physics.continuum_shape(stars(TEFF=[4800, 4800], LOGG=2.5, FE_H=0.0, H=[9.0, 12.0]), ak=[0.0, 1.0])
    assert continuum.shape == (2, 8575) and continuum.dtype == np.float32
    assert np.all(continuum[:, ~ON_CHIP] == 0) and np.all(continuum[:, ON_CHIP] > 0)
    level = np.median(continuum[:, ON_CHIP], axis=1)
    assert 1000 < level[0] < 4000  # H = 9: ~2.8e-14 erg/s/cm²/Å
    assert level[0] / level[1] == pytest.approx(10 ** 1.2, rel=0.15)  # 3 mag fainter
    blue, red = (np.median(continuum[1, start:end]) / np.median(continuum[0, start:end])
                 for start, end in (CHIP_RANGES["dr13"][0], CHIP_RANGES["dr13"][2]))
    assert red > blue  # extinction reddens


# ------------------------------------------------------------------------------------------ observing
@pytest.fixture(scope="module")
def model():
    labels = stars(TEFF=4800, LOGG=2.5, FE_H=0.0, H=[8.0, 12.5])
    return physics.normalized_flux(labels), physics.continuum_shape(labels)


@pytest.mark.parametrize("visits", [None, 1, 3], ids=["single", "one-visit", "three-visits"])
def test_noise_matches_the_requested_snr(model, visits):
    normalized, continuum = model
    snr = np.array([60.0, 150.0])
    out = physics.observe(normalized, continuum, snr, [np.random.default_rng(s) for s in (1, 2)], visits=visits)
    rows = {None: 1, 1: 1, 3: 5}[visits]
    expected_shape = (2, 8575) if visits is None else (2, rows, 8575)
    assert out["flux"].shape == out["error"].shape == out["bitmask"].shape == expected_shape
    assert out["flux"].dtype == np.float32 and out["error"].dtype == np.float32 and out["bitmask"].dtype == np.int16
    flux, error, bitmask = (out[k] if visits is None else out[k][:, 0] for k in ("flux", "error", "bitmask"))
    truth = normalized * continuum
    for i in range(2):
        good = ON_CHIP & ((bitmask[i].astype(np.int64) & BAD_VALUE) == 0)
        assert np.median(truth[i][good] / error[i][good]) == pytest.approx(snr[i], rel=1e-3)
        clean = ON_CHIP & (bitmask[i] == 0)
        pulls = (flux[i][clean] - truth[i][clean]) / error[i][clean]
        assert np.std(pulls) == pytest.approx(1.0, abs=0.05) and abs(np.mean(pulls)) < 0.05
    if visits == 3:
        visit_snr = out["visit_snr"]
        np.testing.assert_allclose(np.sqrt((visit_snr ** 2).sum(axis=1)), snr, rtol=0.05)
        or_row, and_row, visit_rows = out["bitmask"][0, 0], out["bitmask"][0, 1], out["bitmask"][0, 2:]
        np.testing.assert_array_equal(or_row, np.bitwise_or.reduce(visit_rows, axis=0))
        np.testing.assert_array_equal(and_row, np.bitwise_and.reduce(visit_rows, axis=0))


def test_bitmask_flags_gaps_bad_pixels_and_sky_lines(model):
    normalized, continuum = model
    out = physics.observe(normalized, continuum, 100.0, [np.random.default_rng(s) for s in (5, 6)])
    flux, error, bitmask = out["flux"], out["error"], out["bitmask"].astype(np.int64)
    bit = {name: 1 << number for name, number in APOGEE_PIXMASK_BITS.items()}
    assert np.all(flux[:, ~ON_CHIP] == 0) and np.all(error[:, ~ON_CHIP] == 1e10)
    assert np.all(bitmask[:, ~ON_CHIP] & bit["BADPIX"])
    bad_on_chip = (bitmask[:, ON_CHIP] & bit["BADPIX"]) != 0
    assert 0.002 < bad_on_chip.mean() < 0.03
    assert np.all((bitmask[:, ON_CHIP][bad_on_chip] & (bit["BADDARK"] | bit["BADFLAT"])) != 0)
    sky = near_lines(physics.SKY_LINES, 1) & ON_CHIP
    faint_sky = (bitmask[1] & bit["SIG_SKYLINE"]) != 0
    assert faint_sky[sky].mean() > 0.5 and faint_sky[~sky & ON_CHIP].mean() < 0.05
    assert (bitmask[0] & bit["SIG_SKYLINE"]).astype(bool).sum() < faint_sky.sum()  # bright star: fewer
    assert np.median(error[1][faint_sky]) > 1.3 * np.median(error[1][ON_CHIP & ~faint_sky])


def test_sky_lines_and_bad_columns_move_with_the_doppler_shift(model):
    """Rest-frame spectra: a visit at -245 km/s (M13) sees every sky line 59 pixels redwards."""
    normalized, continuum = model
    bit = {name: 1 << number for name, number in APOGEE_PIXMASK_BITS.items()}
    shift = int(round(245.0 / 4.1418))
    sky, bad = {}, {}
    for velocity in (0.0, -245.0):
        masks = physics.observe(normalized[1:], continuum[1:], 100.0, np.random.default_rng(3), visits=2,
                                velocity=[[velocity, velocity]])["bitmask"][0, 2:].astype(np.int64)
        sky[velocity] = np.flatnonzero(masks[0] & bit["SIG_SKYLINE"])
        bad[velocity] = np.flatnonzero(masks[0] & bit["BADDARK"])
    assert sky[0.0].size > 20 and bad[0.0].size > 10
    at_rest = near_lines(physics.SKY_LINES, 4) & ON_CHIP  # a faint star: the line wings are flagged too
    moved = near_lines(physics.SKY_LINES * (1 + 245.0 / 299792.458), 4) & ON_CHIP
    assert at_rest[sky[-245.0]].mean() < 0.6
    assert at_rest[sky[0.0]].mean() > 0.9 and moved[sky[-245.0]].mean() > 0.9
    assert np.isin(bad[0.0] + shift, bad[-245.0]).mean() > 0.8  # off-chip and clipped columns aside
    per_visit = physics.observe(normalized[1:], continuum[1:], 100.0, np.random.default_rng(3), visits=2,
                                velocity=[[0.0, -245.0]])["bitmask"][0].astype(np.int64)
    first, second = (np.flatnonzero(row & bit["SIG_SKYLINE"]) for row in per_visit[2:])
    assert at_rest[first].mean() > 0.9 and moved[second].mean() > 0.9
    assert set(first) | set(second) <= set(np.flatnonzero(per_visit[0] & bit["SIG_SKYLINE"]))


def test_persistence_and_cosmic_rays_appear_with_their_bits(model):
    normalized, continuum = model
    bit = {name: 1 << number for name, number in APOGEE_PIXMASK_BITS.items()}
    masks = np.array([physics.observe(normalized[:1], continuum[:1], 80.0, np.random.default_rng(seed))["bitmask"][0]
                      for seed in range(12)]).astype(np.int64)
    persistent = (masks & (bit["PERSIST_LOW"] | bit["PERSIST_MED"] | bit["PERSIST_HIGH"])) != 0
    assert persistent.any(axis=1).sum() >= 1 and not persistent.all()
    green = np.zeros(8575, dtype=bool)
    green[slice(*CHIP_RANGES["dr13"][1])] = True
    assert not persistent[:, ~green].any()
    assert ((masks & bit["CRPIX"]) != 0).any()


def test_observe_is_reproducible_per_star(model):
    normalized, continuum = model
    both = physics.observe(normalized, continuum, 80.0, [np.random.default_rng(7), np.random.default_rng(8)])
    alone = physics.observe(normalized[1:], continuum[1:], 80.0, np.random.default_rng(8))
    np.testing.assert_array_equal(both["flux"][1], alone["flux"][0])
    other = physics.observe(normalized[1:], continuum[1:], 80.0, np.random.default_rng(9))
    assert not np.array_equal(other["flux"][0], alone["flux"][0])


@pytest.mark.parametrize("change, error", [
    (dict(normalized=np.ones((2, 100))), ShapeError),
    (dict(snr=-5.0), SpectrumError),
    (dict(snr=np.nan), SpectrumError),
    (dict(rng=42), SpectrumError),
    (dict(visits=0), SpectrumError),
    (dict(velocity=np.nan), SpectrumError),
    (dict(velocity=np.zeros((2, 3))), SpectrumError),
], ids=["wrong-pixels", "negative-snr", "nan-snr", "seed-not-generator", "zero-visits", "nan-velocity",
        "velocity-shape"])
def test_observe_rejects_bad_input(model, change, error):
    normalized, continuum = model
    arguments = dict(normalized=normalized, continuum=continuum, snr=50.0, rng=np.random.default_rng(0), visits=None)
    arguments.update(change)
    with pytest.raises(error):
        physics.observe(arguments.pop("normalized"), arguments.pop("continuum"), arguments.pop("snr"),
                        arguments.pop("rng"), **arguments)


# ------------------------------------------------------------------------------------------ realism
@pytest.mark.realdata
def test_mock_resembles_the_real_dr14_giant(real_data):
    import json

    folder = real_data / "apogee" / "example_dr14"
    meta = json.loads((folder / "apogee_dr14_example.json").read_text())
    data = np.load(folder / "apogee_dr14_example.npz", allow_pickle=False)
    alpha = meta["alpha_enhancement"]
    labels = stars(TEFF=meta["effective_temperature"], LOGG=meta["log_surface_gravity"], FE_H=meta["metallicity"],
                   VMICRO=meta["microturbulence_km_s"], VMACRO=meta["macroscopic_broadening_km_s"],
                   C_FE=meta["carbon_over_m"], N_FE=meta["nitrogen_over_m"], O_FE=alpha, MG_FE=alpha, SI_FE=alpha,
                   S_FE=alpha, CA_FE=alpha, TI_FE=alpha)
    from labelexplorer.preprocess.grid import remove_gaps

    mock = remove_gaps(physics.normalized_flux(labels)[0])
    good = data["good_pixel_mask"]
    real = data["normalized_flux"]
    assert np.corrcoef(1 - mock[good], 1 - real[good])[0, 1] > 0.6
    assert pd.Series(mock[good]).corr(pd.Series(real[good]), method="spearman") > 0.4
