"""The embedded mock universe: a deterministic survey written in the real file formats.

``make_universe(out, ...)`` writes a seeded star population (allStar-like catalog),
APOGEE apStar/aspcapStar spectra, LAMOST-like spectra and SDSS-like galaxy cutouts, so
the default demo exercises exactly the code path real data takes. ``Universe`` reads it
back for models and the dashboard; ``regenerate_star`` rebuilds any star's spectrum from
``(seed, star index)`` alone; ``population`` is the star table on its own.

Examples
--------
>>> from labelexplorer.mock import population
>>> stars = population(100, seed=0)
>>> sorted(set(stars["STAR_CLASS"]))[:3]
['dwarf', 'hot', 'm_dwarf']
"""

from __future__ import annotations

from .stellar import population
from .universe import Universe, make_universe, regenerate_star

__all__ = ["make_universe", "Universe", "population", "regenerate_star"]
