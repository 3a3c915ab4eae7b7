"""Throughput of the mock APOGEE physics: sparse, batched line profiles vs a per-line Python loop.

Measured in the same run, on the same stars (a mix of giants, dwarfs, M stars and hot stars):

- vectorised: :func:`labelexplorer.mock.apogee_physics.normalized_flux` for the whole batch
  (line amplitudes as (n_stars, n_lines) arrays, one sparse product per profile family);
- naive: the same amplitudes, but each line's profile evaluated and added star by star in a
  Python loop (what one writes first). It runs on a subset and its rate is per spectrum;
- the rest of the path of a mock apStar spectrum: :func:`continuum_shape` and :func:`observe`
  (noise, sky, bitmask, 1-3 visits), per star as the universe writer calls it.

Usage::

    python benchmarks/bench_mock_speed.py [--n-stars 2000] [--n-naive 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.special import erf

from labelexplorer.mock import apogee_physics as physics
from labelexplorer.preprocess.grid import APOGEE_N_PIXELS


def random_labels(n: int, seed: int) -> dict:
    """A mock-like mix: 60 % giants, 25 % FGK dwarfs, 10 % M dwarfs, 5 % hot stars."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05])
    teff = np.choose(kind, [rng.uniform(3600, 5200, n), rng.uniform(4800, 6800, n), rng.uniform(2800, 3800, n),
                            rng.uniform(7000, 40000, n)])
    logg = np.choose(kind, [rng.uniform(0.8, 3.5, n), rng.uniform(3.8, 4.7, n), rng.uniform(4.5, 5.2, n),
                            rng.uniform(3.5, 4.5, n)])
    vsini = np.choose(kind, [rng.uniform(0, 5, n), rng.uniform(0, 15, n), rng.uniform(0, 10, n),
                             rng.uniform(20, 250, n)])
    labels = {"TEFF": teff, "LOGG": logg, "FE_H": rng.uniform(-1.5, 0.4, n), "VSINI": vsini,
              "H": rng.uniform(8, 13, n)}
    for element in ("C", "N", "O", "MG", "AL", "SI", "CA", "MN", "NI"):
        labels[f"{element}_FE"] = rng.normal(0.0, 0.15, n)
    return labels


def naive_normalized_flux(labels: dict) -> np.ndarray:
    """Same physics, but every line profile is evaluated and added in a Python loop, star by star."""
    model = physics._line_model()
    stars = physics._stars(labels)
    out = np.empty((stars.n, APOGEE_N_PIXELS), dtype=np.float32)
    pixels = np.arange(APOGEE_N_PIXELS)
    centres = physics._pixel_position(model.wavelength)
    sigma = physics._SIGMA_BASE_PX
    for i in range(stars.n):
        star = stars.subset(slice(i, i + 1))
        photosphere = physics._photosphere(star)
        cores, wings = physics._metal_amplitudes(star, photosphere, model)
        eta = np.zeros(APOGEE_N_PIXELS)
        for line, centre in enumerate(centres):
            window = pixels[max(int(centre) - 8, 0):min(int(centre) + 9, APOGEE_N_PIXELS)]
            offset = window - centre
            profile = 0.5 * (erf((offset + 0.5) / (np.sqrt(2) * sigma)) - erf((offset - 0.5) / (np.sqrt(2) * sigma)))
            eta[window] += cores[0, line] * profile * np.sqrt(2 * np.pi) * sigma
        for k, line in enumerate(model.wing_rows):
            window = pixels[max(int(centres[line]) - 120, 0):min(int(centres[line]) + 121, APOGEE_N_PIXELS)]
            eta[window] += wings[0, k] * physics._wing_shape(window - centres[line])
        eta += physics._hydrogen_opacity(star, photosphere, model)[0]
        flux = (1.0 - physics._saturation_map(star.teff) * -np.expm1(-eta)).astype(np.float32)
        out[i] = physics._broaden(flux, star)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=2000)
    parser.add_argument("--n-naive", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels = random_labels(args.n_stars, args.seed)
    physics.normalized_flux({k: v[:1] for k, v in labels.items()})  # build the cached line model once

    start = time.perf_counter()
    flux = physics.normalized_flux(labels)
    vectorised = time.perf_counter() - start

    subset = {k: v[:args.n_naive] for k, v in labels.items()}
    start = time.perf_counter()
    naive = naive_normalized_flux(subset)
    loop = time.perf_counter() - start
    difference = float(np.max(np.abs(naive - flux[:args.n_naive])))

    start = time.perf_counter()
    continuum = physics.continuum_shape(labels, ak=np.full(args.n_stars, 0.1))
    continuum_time = time.perf_counter() - start

    n_observe = min(args.n_stars, 500)
    visits = np.random.default_rng(args.seed).choice([1, 2, 3], size=n_observe, p=[0.65, 0.25, 0.10])
    start = time.perf_counter()
    for i in range(n_observe):
        physics.observe(flux[i:i + 1], continuum[i:i + 1], 100.0, np.random.default_rng([args.seed, i]),
                        visits=int(visits[i]))
    observe_time = time.perf_counter() - start

    rate_vectorised = args.n_stars / vectorised
    rate_naive = args.n_naive / loop
    print(f"lines: {physics._line_model().wavelength.size} metal/molecular + "
          f"{physics._line_model().h_wavelength.size} hydrogenic; {args.n_stars} stars")
    print(f"{'path':<44} {'spectra/s':>10}")
    print(f"{'normalized_flux, vectorised (sparse products)':<44} {rate_vectorised:10.1f}")
    print(f"{'normalized_flux, per-line Python loop':<44} {rate_naive:10.1f}")
    print(f"{'continuum_shape':<44} {args.n_stars / continuum_time:10.1f}")
    print(f"{'observe, one star per call (1-3 visits)':<44} {n_observe / observe_time:10.1f}")
    print(f"speed-up of the vectorised path: {rate_vectorised / rate_naive:.0f}x "
          f"(max |difference| between the two: {difference:.1e})")
    per_star = 1.0 / rate_vectorised + continuum_time / args.n_stars + observe_time / n_observe
    print(f"20,000 spectra (physics + continuum + noise, one core): {20000 * per_star / 60:.1f} min")


if __name__ == "__main__":
    main()
