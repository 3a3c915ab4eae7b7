"""Element windows: official ASPCAP files, astroNN's bitmask, windows from line lists, grid mapping."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from labelexplorer.exceptions import FileFormatError, ShapeError, UnknownNameError
from labelexplorer.labels import ASPCAP_ELEMENTS
from labelexplorer.preprocess.grid import apogee_wavelength, gap_removed_wavelength
from labelexplorer.preprocess.windows import (MOLECULE_ELEMENTS, ElementWindows, read_filt, read_wind,
                                              read_window_bitmask, windows_from_linelist)

# Mg I 15740.716, 15748.988 and 15765.842 Å in air (NIST) are these in vacuum (n_air ≈ 1.000274 at 1.57 µm)
MG_I_VACUUM = (15745.03, 15753.30, 15770.16)


@pytest.fixture(scope="module")
def window_dir(real_data):
    return real_data / "apogee" / "windows_dr17"


@pytest.fixture(scope="module")
def official(window_dir):
    return ElementWindows.from_filt_dir(window_dir)


# ---------------------------------------------------------------------------- official DR17 files
def test_official_fe_window_covers_many_pixels(official, window_dir):
    fe = read_filt(window_dir / "Fe.filt")
    assert fe.shape == (7514,)
    assert (fe > 0).sum() > 1000  # iron lines are everywhere in the H band
    assert 0 < fe.max() <= 1
    np.testing.assert_array_equal(official.mask("Fe"), fe > 0)
    assert 20 < (official.mask("Mg")).sum() < 500  # a handful of strong Mg lines


def test_official_mg_windows_contain_the_mg_i_lines(official, window_dir):
    wind = read_wind(window_dir / "Mg.wind", used_only=True)
    intervals = official.as_intervals("Mg")
    for line in MG_I_VACUUM:
        assert np.any((wind[:, 0] < line) & (line < wind[:, 1])), line
        assert np.any((intervals[:, 0] < line) & (line < intervals[:, 1])), line
    weights, wavelength = official["Mg"], official.wavelength
    for line in MG_I_VACUUM:
        near = np.abs(wavelength - line) < 1.5
        assert weights[np.argmin(np.abs(wavelength - line))] > 0.3
        centroid = np.sum(weights[near] * wavelength[near]) / np.sum(weights[near])
        assert abs(centroid - line) < 0.5, (line, centroid)  # the weights peak on the line


@pytest.mark.parametrize("element", ["Mg", "Fe", "Al", "Mn"])
def test_filt_intervals_lie_inside_the_wind_windows(official, window_dir, element):
    wind = read_wind(window_dir / f"{element}.wind")
    intervals = official.as_intervals(element)
    pixel = 0.25  # Å, about one pixel of slack for the pixel edges
    inside = [np.any((wind[:, 0] - pixel <= a) & (b <= wind[:, 1] + pixel)) for a, b in intervals]
    assert np.mean(inside) > 0.95


def test_astronn_bitmask_agrees_with_the_official_filt_files(official, real_data):
    path = real_data / "apogee" / "masks" / "aspcap_l31c_masks.npy"
    masks = read_window_bitmask(path)
    assert list(masks) == list(ASPCAP_ELEMENTS)
    from_bitmask = ElementWindows.from_bitmask(path)
    shared = [element for element in from_bitmask.elements if element in official]
    assert len(shared) >= 20
    for element in shared:
        a, b = from_bitmask.mask(element), official.mask(element)
        overlap = (a & b).sum() / (a | b).sum()
        assert overlap > 0.8, (element, overlap)


# ---------------------------------------------------------------------------- the container
def _demo_windows():
    weights = np.zeros(7514)
    weights[3020:3035] = 0.5  # straddles the blue/green chip gap at pixel 3028
    weights[100:110] = 1.0
    return ElementWindows({"Mg": weights, "TiII": np.zeros(7514)}, source="demo")


def test_lookup_accepts_label_spellings_and_suggests_names():
    windows = _demo_windows()
    assert windows.mask("MG_FE").sum() == windows.mask("mg").sum() == 25
    assert "TIII_H" in windows and "Fe" not in windows
    with pytest.raises(UnknownNameError, match="did you mean 'Mg'"):
        windows.mask("Mgg")


def test_molecule_and_element_with_the_same_letters_stay_apart():
    co, cobalt = np.zeros(7514), np.zeros(7514)
    co[:10], cobalt[100:103] = 1.0, 1.0
    windows = ElementWindows({"CO": co, "Co": cobalt})
    assert windows.mask("CO").sum() == 10 and windows.mask("Co").sum() == 3
    assert windows.mask("CO_FE").sum() == 3  # a label name means the element, cobalt
    with pytest.raises(UnknownNameError, match="ambiguous"):
        windows.mask("co")


def test_intervals_split_at_chip_gaps():
    windows = _demo_windows()
    intervals = windows.as_intervals("Mg")
    wavelength = gap_removed_wavelength()
    assert intervals.shape == (3, 2)
    assert intervals[1, 0] < wavelength[3020] < wavelength[3027] < intervals[1, 1]
    assert intervals[1, 1] < wavelength[3028] and intervals[2, 0] < wavelength[3028]
    assert np.all(np.diff(intervals, axis=1) > 0)
    assert windows.as_intervals("TiII").shape == (0, 2)


def test_empty_windows_keep_their_grid():
    empty = windows_from_linelist(_lines(), elements=["Ce"])
    assert len(empty) == 0 and empty.n_pixels == 7514
    assert ElementWindows({}, n_pixels=7514).on_grid(8575).n_pixels == 8575


def test_on_grid_maps_between_7514_and_8575():
    windows = _demo_windows()
    full = windows.on_grid(8575)
    assert full.n_pixels == 8575 and full.wavelength.size == 8575
    assert full.mask("Mg").sum() == 25
    np.testing.assert_allclose(full.as_intervals("Mg"), windows.as_intervals("Mg"))
    np.testing.assert_array_equal(full.on_grid(7514)["Mg"], windows["Mg"])
    dr12 = windows.on_grid(7214)  # pixels 100-110 of the DR13+ blue chip lie outside the DR12 chip
    assert dr12.mask("Mg").sum() < 25


@pytest.mark.parametrize("weights", [
    pytest.param({"Fe": np.ones(100)}, id="not-an-apogee-grid"),
    pytest.param({"Fe": np.full(7514, 2.0)}, id="weights-above-one"),
    pytest.param({"Fe": np.ones(7514), "Mg": np.ones(8575)}, id="mixed-grids"),
    pytest.param({"Fe": np.ones((2, 7514))}, id="two-dimensional"),
    pytest.param({"Fe": ["a"] * 7514}, id="not-numbers"),
])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ShapeError):
        ElementWindows(weights)


# ---------------------------------------------------------------------------- bad files
def _write(folder, case):
    path = folder / f"{case}.filt"
    if case == "wrong-length":
        path.write_text("0.5\n" * 100)
    elif case == "not-numbers":
        path.write_text("a b c\n" * 7514)
    elif case == "weights-outside-0-1":
        path.write_text("1.5\n" * 7514)
    elif case == "two-columns":
        path.write_text("0.5 0.5\n" * 7514)
    return path


@pytest.mark.parametrize("case", ["missing", "wrong-length", "not-numbers", "weights-outside-0-1", "two-columns"])
def test_bad_filt_files_raise_file_format_errors(tmp_path, case):
    path = _write(tmp_path, case)
    with pytest.raises(FileFormatError, match=path.name):
        read_filt(path)


def test_bad_wind_file(tmp_path):
    path = tmp_path / "X.wind"
    path.write_text("15200 15100 1\n")
    with pytest.raises(FileFormatError, match="end after it starts"):
        read_wind(path)


@pytest.mark.parametrize("array", [
    pytest.param(np.ones(7514), id="float-array"),
    pytest.param(np.ones(100, np.int32), id="wrong-length"),
    pytest.param(np.full(7514, 2 ** 28, np.int32), id="bits-beyond-elements"),
    pytest.param(np.array([{"a": 1}], dtype=object), id="pickled-objects"),
])
def test_bad_window_bitmask_files(tmp_path, array):
    path = tmp_path / "masks.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(FileFormatError, match="masks.npy"):
        read_window_bitmask(path)


def test_filt_dir_without_files(tmp_path):
    with pytest.raises(FileFormatError, match="no <element>.filt"):
        ElementWindows.from_filt_dir(tmp_path)


# ---------------------------------------------------------------------------- line lists
def _lines():
    return pd.DataFrame({
        "element": ["Mg", "Mg", "Fe", "Fe", "CO", "Al", "Fe"],
        "wavelength": [15745.03, 15770.16, 15494.6, 16000.0, 15978.7, 16723.5, 14000.0],
        "log_gf": [-0.2, 0.1, -1.0, -3.0, -5.0, -0.5, 0.0],
        "excitation": [5.9, 5.9, 4.6, 4.6, 0.3, 4.1, 1.0],
        "kind": ["atom", "atom", "atom", "atom", "molecule", "atom", "atom"],
    })


def test_linelist_windows_centre_on_the_lines():
    windows = windows_from_linelist(_lines())
    assert windows.elements == ("Al", "CO", "Fe", "Mg")
    wavelength = windows.wavelength
    step = np.median(np.diff(wavelength))
    for element, centre in [("Mg", 15745.03), ("Mg", 15770.16), ("Fe", 15494.6), ("Al", 16723.5)]:
        near = np.abs(wavelength - centre) < 3.0
        peak = wavelength[near][np.argmax(windows[element][near])]
        assert abs(peak - centre) <= step, (element, centre, peak)
        interval = windows.as_intervals(element)
        hit = interval[(interval[:, 0] < centre) & (centre < interval[:, 1])]
        assert hit.shape == (1, 2)
        width = hit[0, 1] - hit[0, 0]
        assert 2 * 2.5 * centre / 22500 - 2 * step <= width <= 2 * 2.5 * centre / 22500 + 2 * step


def test_linelist_weights_follow_line_strength():
    windows = windows_from_linelist(_lines())
    wavelength = windows.wavelength
    fe = windows["Fe"]

    def peak(centre):
        return fe[np.abs(wavelength - centre) < 1.0].max()

    assert peak(15494.6) > 0.9  # the strongest Fe line of the list
    assert peak(16000.0) < 0.05  # 2 dex weaker in log gf
    flat = windows_from_linelist(_lines(), weight_by_strength=False)["Fe"]
    assert flat[np.abs(wavelength - 16000.0) < 0.1].max() > 0.9


def test_linelist_options_half_width_group_and_grid():
    wide = windows_from_linelist(_lines(), half_width=4.0)
    assert wide.as_intervals("Al")[0, 1] - wide.as_intervals("Al")[0, 0] == pytest.approx(8.0, abs=0.5)
    grouped = windows_from_linelist(_lines(), group=MOLECULE_ELEMENTS, elements=["C", "Mg"])
    assert grouped.elements == ("C", "Mg")
    on_full = windows_from_linelist(_lines(), wavelength=apogee_wavelength())
    assert on_full.n_pixels == 8575
    np.testing.assert_allclose(on_full.on_grid(7514)["Mg"], windows_from_linelist(_lines())["Mg"], atol=1e-12)


@pytest.mark.parametrize("lines, wavelength", [
    pytest.param(pd.DataFrame({"element": ["Fe"], "wavelength": [15500.0]}), None, id="missing-columns"),
    pytest.param(_lines(), np.linspace(15000, 17000, 100), id="grid-not-apogee"),
])
def test_linelist_bad_input(lines, wavelength):
    with pytest.raises(ShapeError):
        windows_from_linelist(lines, wavelength)


@pytest.mark.skipif(importlib.util.find_spec("labelexplorer.preprocess.linelist") is None,
                    reason="the project line list loader is not there yet")
def test_project_linelist_windows_overlap_the_official_ones(official):
    from labelexplorer.preprocess.linelist import load_linelist

    windows = windows_from_linelist(load_linelist())
    assert "Fe" in windows and "Mg" in windows
    for element in ("Fe", "Mg"):
        ours, theirs = windows.mask(element), official.mask(element)
        assert (ours & theirs).sum() / theirs.sum() > 0.7, element  # the official pixels are covered
