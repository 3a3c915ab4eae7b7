"""Core container behaviour that every reader and model relies on."""

import numpy as np
import pytest

import labelexplorer as le
from labelexplorer.exceptions import LabelError, ShapeError, SpectrumError

WL = np.linspace(15100.0, 15200.0, 6)


def test_spectra_without_errors_stay_usable_through_replace():
    spec = le.Spectra(np.ones((2, 6)), WL)
    assert not spec.has_errors and not spec.mask.any()
    again = spec.replace(flux=spec.flux * 2, step="double")
    assert not again.mask.any() and not again.has_errors
    assert again.meta["history"] == ["double"]
    assert (again.ivar == 0).all()


def test_non_finite_flux_and_errors_are_masked():
    flux = np.ones((1, 6)); flux[0, 1] = np.nan
    error = np.full((1, 6), 0.1); error[0, 2] = np.inf; error[0, 3] = 0.0
    spec = le.Spectra(flux, WL, error=error)
    assert spec.mask[0].tolist() == [False, True, True, True, False, False]
    assert spec.ivar[0, 0] == pytest.approx(100.0) and spec.ivar[0, 2] == 0


@pytest.mark.parametrize("kwargs, error", [
    ({"error": -np.ones((1, 6))}, SpectrumError),
    ({"ivar": np.ones((1, 5))}, ShapeError),
    ({"mask": np.zeros((2, 6), bool)}, ShapeError),
], ids=["negative-errors", "ivar-wrong-shape", "mask-wrong-shape"])
def test_bad_arrays_are_refused(kwargs, error):
    with pytest.raises(error):
        le.Spectra(np.ones((1, 6)), WL, **kwargs)


def test_all_nan_spectrum_is_refused_with_its_id():
    flux = np.ones((2, 6)); flux[1] = np.nan
    with pytest.raises(SpectrumError, match="'b'"):
        le.Spectra(flux, WL, ids=["a", "b"])


def test_per_pixel_info_follows_selection_and_concatenation():
    bitmask = np.arange(12).reshape(2, 6)
    spec = le.Spectra(np.ones((2, 6)), WL, ids=["a", "b"], info={"pixel_bitmask": bitmask, "snr": [10, 20]})
    picked = spec["b"]
    assert picked.info["pixel_bitmask"].tolist() == [bitmask[1].tolist()]
    both = le.Spectra.concatenate([spec, picked])
    assert both.info["pixel_bitmask"].shape == (3, 6) and both.info["snr"].tolist() == [10, 20, 20]


def test_unknown_id_is_a_label_error():
    spec = le.Spectra(np.ones((1, 6)), WL, ids=["a"])
    with pytest.raises(LabelError, match="'zz'"):
        spec["zz"]


def test_wavelength_must_increase():
    with pytest.raises(SpectrumError, match="increasing"):
        le.Spectra(np.ones((1, 6)), WL[::-1])
