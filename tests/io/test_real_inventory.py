"""Every real file under shared/data/{apogee,lamost,galaxies} is read by the project and makes sense.

The readers' own tests check spectra in depth; this inventory makes sure no real file is
left unread (a new file in the shared folder fails here until a check covers it) and checks
the auxiliary files (grids, masks, windows, the DR14 example) for their physical content.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.preprocess import grid
from labelexplorer.preprocess.continuum import continuum_pixels_from_file
from labelexplorer.preprocess.windows import ElementWindows, read_filt, read_wind, read_window_bitmask

SPECTRUM_FOLDERS = ("apogee/apStar", "apogee/aspcapStar", "apogee/apVisit", "lamost/cmost", "lamost/laspec",
                    "lamost/lamost_dr1")
AUXILIARY = {
    "apogee/grid/apogee_wavelength.npz", "apogee/grid/apogee_mask.npz", "apogee/grid/cannon_cont_pixels_apogee.npz",
    "apogee/masks/aspcap_l31c_masks.npy", "apogee/example_dr14/apogee_dr14_example.npz",
    "apogee/example_dr14/apogee_dr14_example.json",
    *(f"apogee/masks/dr{r}_contmask.npy" for r in (13, 14, 16, 17)),
}


def _relative_files(root, folder):
    return sorted(str(p.relative_to(root)) for p in (root / folder).rglob("*") if p.is_file() and not p.name.startswith("README"))


def test_every_real_file_has_a_check(real_data):
    covered = set(AUXILIARY)
    for folder in SPECTRUM_FOLDERS:
        covered |= set(_relative_files(real_data, folder))
    covered |= set(_relative_files(real_data, "apogee/windows_dr17"))
    covered |= set(_relative_files(real_data, "galaxies"))
    every = set()
    for top in ("apogee", "lamost", "galaxies"):
        every |= set(_relative_files(real_data, top))
    assert every - covered == set(), "real files without a check"


@pytest.mark.parametrize("folder", SPECTRUM_FOLDERS)
def test_every_spectrum_file_reads_with_a_plausible_grid(real_data, folder):
    files = _relative_files(real_data, folder)
    assert files, f"no files in {folder}"
    for name in files:
        spec = le.read(real_data / name)
        good = ~spec.mask
        assert good.any(axis=1).all(), name
        wl = np.broadcast_to(spec.wavelength, spec.flux.shape)[good]
        band = (15000, 17100) if name.startswith("apogee") else (3600, 9300)
        assert band[0] < wl.min() and wl.max() < band[1], name
        assert np.isfinite(spec.flux[good]).all(), name


def test_payne_grid_is_the_dr12_gap_removed_grid(real_data):
    wavelength = np.load(real_data / "apogee/grid/apogee_wavelength.npz")["wavelength"]
    np.testing.assert_allclose(wavelength, grid.gap_removed_wavelength("dr12"), atol=0.01)
    mask = np.load(real_data / "apogee/grid/apogee_mask.npz")["apogee_mask"]
    assert mask.shape == (7214,) and 0 < mask.mean() < 0.5
    cannon = continuum_pixels_from_file(real_data / "apogee/grid/cannon_cont_pixels_apogee.npz")
    assert cannon.shape == (7214,) and cannon.sum() == 529


@pytest.mark.parametrize("release, count", [(13, 529), (14, 529), (16, 532), (17, 532)])
def test_continuum_masks_have_the_documented_pixel_counts(real_data, release, count):
    pixels = continuum_pixels_from_file(real_data / f"apogee/masks/dr{release}_contmask.npy")
    assert pixels.shape == (7514,) and pixels.sum() == count
    on_full_grid = continuum_pixels_from_file(real_data / f"apogee/masks/dr{release}_contmask.npy", 8575)
    assert on_full_grid.sum() == count  # the gaps hold no continuum pixel


def test_astronn_window_bitmask_has_every_element(real_data):
    windows = read_window_bitmask(real_data / "apogee/masks/aspcap_l31c_masks.npy")
    assert set(windows) >= {"Fe", "Mg", "Al", "C", "N"}
    assert windows["Fe"].sum() > windows["Mg"].sum() > 0


def test_every_dr17_window_file_is_read(real_data):
    folder = real_data / "apogee/windows_dr17"
    wavelength = grid.gap_removed_wavelength()
    for path in sorted(folder.iterdir()):
        if path.name.startswith("README"):
            continue
        if path.suffix in (".filt", ".mask", ".txt"):  # per-pixel weights; .txt are the global masks
            weights = read_filt(path)
            assert weights.shape == (7514,) and weights.max() > 0 and weights.min() >= 0, path.name
        elif path.name == "wave.dat":  # the wavelength of every pixel the windows are defined on
            table = np.loadtxt(path)
            np.testing.assert_allclose(table[:, 0], grid.gap_removed_wavelength(), atol=0.01)
        else:  # .wind and the two-column C13.dat
            windows = read_wind(path)
            assert (windows[:, 0] > wavelength[0] - 5).all() and (windows[:, 1] < wavelength[-1] + 5).all(), path.name
    element_windows = ElementWindows.from_filt_dir(folder)
    mg = element_windows.as_intervals("Mg")
    assert any(start <= 15745.0 <= end for start, end in mg)  # Mg I 15745 Å (vacuum)


def test_dr14_example_labels_and_grid(real_data):
    meta = json.loads((real_data / "apogee/example_dr14/apogee_dr14_example.json").read_text())
    assert meta["object_id"] == "2M08002084+4044415"
    assert meta["effective_temperature"] == pytest.approx(4858.5, abs=0.1)
    arrays = np.load(real_data / "apogee/example_dr14/apogee_dr14_example.npz")
    np.testing.assert_allclose(arrays["wavelength_nm"] * 10, grid.gap_removed_wavelength(), rtol=2e-5)
    good = arrays["good_pixel_mask"]
    assert 0.85 < np.median(arrays["normalized_flux"][good]) < 1.05
