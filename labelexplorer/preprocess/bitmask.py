"""The APOGEE pixel bitmask (``APOGEE_PIXMASK``): names, decoding and bad-pixel masks.

Facts (APOGEE data model, ``APOGEE_PIXMASK``): each pixel of an apStar/aspcapStar
spectrum carries an integer whose bits flag detector and reduction problems. Bits
0–7 and 12 (bad pixel, cosmic ray, saturated, unfixable, bad dark, bad flat, bad
error, no sky, significant sky line) are the ones conventionally treated as bad
(e.g. by astroNN's default bad-pixel set); persistence and telluric flags are
informational.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..exceptions import SpectrumError, UnknownNameError, did_you_mean

__all__ = ["APOGEE_PIXMASK_BITS", "DEFAULT_BAD_BITS", "bad_pixel_mask", "decode", "encode"]

APOGEE_PIXMASK_BITS: dict[str, int] = {
    "BADPIX": 0,
    "CRPIX": 1,
    "SATPIX": 2,
    "UNFIXABLE": 3,
    "BADDARK": 4,
    "BADFLAT": 5,
    "BADERR": 6,
    "NOSKY": 7,
    "LITTROW_GHOST": 8,
    "PERSIST_HIGH": 9,
    "PERSIST_MED": 10,
    "PERSIST_LOW": 11,
    "SIG_SKYLINE": 12,
    "SIG_TELLURIC": 13,
    "NOT_ENOUGH_PSF": 14,
}

DEFAULT_BAD_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 12)

_NAMES_BY_BIT = {bit: name for name, bit in APOGEE_PIXMASK_BITS.items()}


def _bit_number(bit: int | str) -> int:
    """A bit given by name or number, checked against the definition."""
    if isinstance(bit, str):
        key = bit.strip().upper()
        if key not in APOGEE_PIXMASK_BITS:
            raise UnknownNameError(f"APOGEE_PIXMASK: unknown bit name {bit!r}; known: {list(APOGEE_PIXMASK_BITS)}"
                                   f"{did_you_mean(key, APOGEE_PIXMASK_BITS)}")
        return APOGEE_PIXMASK_BITS[key]
    number = int(bit)
    if not 0 <= number < 31:
        raise UnknownNameError(f"APOGEE_PIXMASK: bit number {bit!r} out of range (expected 0-30)")
    return number


def encode(names: Iterable[str | int] | str) -> int:
    """The integer with the bits *names* set (names or bit numbers).

    Raises
    ------
    UnknownNameError
        If a name is not an ``APOGEE_PIXMASK`` bit (the message suggests a close name).

    Examples
    --------
    >>> encode(["BADPIX", "SATPIX"])
    5
    >>> encode("SIG_SKYLINE")
    4096
    """
    if isinstance(names, str):
        names = [names]
    value = 0
    for name in names:
        value |= 1 << _bit_number(name)
    return value


def decode(value: int) -> list[str]:
    """The names of the bits set in one bitmask value, lowest bit first.

    Bits without a name in :data:`APOGEE_PIXMASK_BITS` are reported as ``"BIT<n>"``.

    Examples
    --------
    >>> decode(4101)
    ['BADPIX', 'SATPIX', 'SIG_SKYLINE']
    >>> decode(0)
    []
    """
    value = int(value)
    if value < 0:
        raise SpectrumError(f"decode: bitmask value must be non-negative, got {value}")
    names, bit = [], 0
    while value >> bit:
        if (value >> bit) & 1:
            names.append(_NAMES_BY_BIT.get(bit, f"BIT{bit}"))
        bit += 1
    return names


def bad_pixel_mask(bitmask: np.ndarray, bits: Iterable[int | str] = DEFAULT_BAD_BITS) -> np.ndarray:
    """True where any of *bits* (names or numbers) is set in an integer bitmask array.

    Parameters
    ----------
    bitmask : array of int
        ``APOGEE_PIXMASK`` values, any shape (e.g. HDU3 of an apStar file).
    bits : iterable of int or str
        The bits that make a pixel bad; default :data:`DEFAULT_BAD_BITS`.

    Returns
    -------
    numpy.ndarray of bool, same shape as *bitmask* (True = bad).

    Examples
    --------
    >>> bad_pixel_mask(np.array([0, 1, 2**9, 2**12]))
    array([False,  True, False,  True])
    >>> bad_pixel_mask(np.array([0, 2**9]), bits=["PERSIST_HIGH"])
    array([False,  True])
    """
    array = np.asarray(bitmask)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise SpectrumError("bad_pixel_mask: bitmask must hold integer values (got non-integer floats)")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        raise SpectrumError(f"bad_pixel_mask: bitmask must be an integer array, got dtype {array.dtype}")
    selector = encode(list(bits))
    return (array.astype(np.int64) & selector) != 0
