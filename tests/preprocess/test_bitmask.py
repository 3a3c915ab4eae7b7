"""APOGEE_PIXMASK bits: encoding, decoding and the default bad-pixel set, on synthetic and real bitmasks."""

from __future__ import annotations

import numpy as np
import pytest

from labelexplorer.exceptions import LabelExplorerError, SpectrumError, UnknownNameError
from labelexplorer.preprocess.bitmask import APOGEE_PIXMASK_BITS, DEFAULT_BAD_BITS, bad_pixel_mask, decode, encode
from labelexplorer.preprocess.grid import chip_slices


def test_definition_matches_the_data_model():
    assert APOGEE_PIXMASK_BITS["BADPIX"] == 0
    assert APOGEE_PIXMASK_BITS["SIG_SKYLINE"] == 12
    assert APOGEE_PIXMASK_BITS["NOT_ENOUGH_PSF"] == 14
    assert sorted(APOGEE_PIXMASK_BITS.values()) == list(range(15))
    assert DEFAULT_BAD_BITS == (0, 1, 2, 3, 4, 5, 6, 7, 12)


@pytest.mark.parametrize("name", list(APOGEE_PIXMASK_BITS))
def test_each_bit_round_trips(name):
    value = encode([name])
    assert value == 2 ** APOGEE_PIXMASK_BITS[name]
    assert decode(value) == [name]


def test_combinations_round_trip_in_bit_order():
    names = ["SIG_TELLURIC", "BADPIX", "PERSIST_LOW", "CRPIX"]
    value = encode(names)
    assert value == 1 + 2 + 2 ** 11 + 2 ** 13
    assert decode(value) == ["BADPIX", "CRPIX", "PERSIST_LOW", "SIG_TELLURIC"]
    assert encode(decode(value)) == value
    assert encode(["badpix", 1]) == 3  # names are case-insensitive, numbers accepted


def test_unnamed_bits_are_reported_by_number():
    assert decode(2 ** 20 + 1) == ["BADPIX", "BIT20"]


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(UnknownNameError, match="did you mean 'SIG_SKYLINE'"):
        encode(["SIG_SKYLNE"])


@pytest.mark.parametrize("call", [
    pytest.param(lambda: encode(["NOT_A_BIT"]), id="unknown-name"),
    pytest.param(lambda: encode([40]), id="bit-number-out-of-range"),
    pytest.param(lambda: decode(-1), id="negative-value"),
    pytest.param(lambda: bad_pixel_mask(np.array([0.5, 1.0])), id="non-integer-float-bitmask"),
    pytest.param(lambda: bad_pixel_mask(np.array(["a", "b"])), id="string-bitmask"),
    pytest.param(lambda: bad_pixel_mask(np.array([1, 2]), bits=["BADPIXX"]), id="unknown-bit-in-selection"),
])
def test_bad_input_raises_a_labelexplorer_error(call):
    with pytest.raises(LabelExplorerError):
        call()


def test_default_bad_set_flags_only_the_bad_bits():
    informational = [encode([name]) for name in ("LITTROW_GHOST", "PERSIST_HIGH", "PERSIST_MED", "PERSIST_LOW",
                                                  "SIG_TELLURIC", "NOT_ENOUGH_PSF")]
    bad = [2 ** bit for bit in DEFAULT_BAD_BITS]
    values = np.array([0] + informational + bad + [2 ** 9 + 2 ** 12])
    expected = np.array([False] * (1 + len(informational)) + [True] * (len(bad) + 1))
    np.testing.assert_array_equal(bad_pixel_mask(values), expected)


def test_bits_by_name_or_number_and_float_storage_agree():
    values = np.array([[0, 2 ** 9, 2 ** 13, 2 ** 9 + 2 ** 13]], dtype=np.int16)
    by_name = bad_pixel_mask(values, bits=["PERSIST_HIGH"])
    np.testing.assert_array_equal(by_name, [[False, True, False, True]])
    np.testing.assert_array_equal(bad_pixel_mask(values, bits=[9]), by_name)
    np.testing.assert_array_equal(bad_pixel_mask(values.astype(np.float32), bits=[9]), by_name)


def test_float_nan_bitmask_is_refused():
    with pytest.raises(SpectrumError, match="integer"):
        bad_pixel_mask(np.array([np.nan, 1.0]))


def test_real_apstar_bitmasks_mask_a_sensible_fraction(real_data):
    from astropy.io import fits

    paths = sorted((real_data / "apogee" / "apStar").glob("apStar-*.fits"))
    assert paths, "no real apStar files found"
    in_chip = np.zeros(8575, dtype=bool)
    for chip in chip_slices(8575):
        in_chip[chip] = True
    for path in paths:
        with fits.open(path) as hdul:
            bitmask = np.atleast_2d(hdul[3].data)[0]
        bad = bad_pixel_mask(bitmask)
        on_chips = bad[in_chip].mean()
        # real detectors: a few to tens of per cent of chip pixels are bad; the gaps are mostly flagged
        assert 0.01 < on_chips < 0.5, (path.name, on_chips)
        assert bad[~in_chip].mean() > on_chips, path.name
        skyline = (bitmask & encode("SIG_SKYLINE")) != 0
        assert bad[skyline].all(), path.name
        persistence_only = bitmask == encode("PERSIST_LOW")
        assert not bad[persistence_only].any(), path.name
