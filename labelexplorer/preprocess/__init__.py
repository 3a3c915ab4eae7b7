"""Preprocessing: the APOGEE grid, bitmasks, continuum normalisation, element windows, pseudo-continuum."""
