"""Preprocessing: the APOGEE grid, bitmasks, continuum normalisation, element windows, pseudo-continuum."""

from .bitmask import APOGEE_PIXMASK_BITS, DEFAULT_BAD_BITS, bad_pixel_mask, decode, encode  # noqa: F401
from .continuum import (continuum_pixels_from_file, derive_continuum_pixels, normalise_continuum,  # noqa: F401
                        pixels_on_grid)
from .windows import (ElementWindows, read_filt, read_wind, read_window_bitmask,  # noqa: F401
                      windows_from_linelist)
