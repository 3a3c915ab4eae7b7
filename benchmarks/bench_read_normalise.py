"""Throughput of reading apStar files and continuum-normalising them: batch path vs one at a time.

Writes N synthetic apStar-like files (HDU1 flux, HDU2 error, HDU3 bitmask; three rows
of 8575 pixels like a two-visit star) into a temporary folder — or uses the real apStar
files of ``../shared/data`` repeated — then measures, in the same run:

- batch: read every file, stack the combined rows into one ``Spectra``, normalise once;
- loop:  read one file, normalise it, next file (the naive way).

Usage::

    python benchmarks/bench_read_normalise.py [--n-files 200] [--real] [--repeat 3] [--reader astropy]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from labelexplorer._files import atomic_path
from labelexplorer.preprocess.bitmask import bad_pixel_mask, encode
from labelexplorer.preprocess.continuum import continuum_pixels_from_file, normalise_continuum
from labelexplorer.preprocess.grid import APOGEE_N_PIXELS, apogee_wavelength, chip_slices
from labelexplorer.spectra import Spectra

REAL_DATA = Path(os.environ.get("LABELEXPLORER_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WAVELENGTH = apogee_wavelength()


def write_synthetic_apstar(folder: Path, n_files: int, seed: int = 0) -> list[Path]:
    """apStar-like files (two visits: four rows), smooth chip continua × lines + noise, gaps at 0, bad bits."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    on_chip = np.zeros(APOGEE_N_PIXELS, dtype=bool)
    for chip in chip_slices(APOGEE_N_PIXELS):
        on_chip[chip] = True
    lines = 1.0 - 0.3 * (rng.random(APOGEE_N_PIXELS) < 0.3) * rng.random(APOGEE_N_PIXELS)
    paths = []
    for index in range(n_files):
        continuum = (300 + 100 * rng.random()) * (1 + 0.2 * np.sin(WAVELENGTH / 700.0 + rng.random()))
        flux = np.where(on_chip, continuum * lines, 0.0)
        error = np.where(on_chip, continuum / 100.0, 1e10)
        rows = np.stack([flux + rng.normal(0, 1, flux.shape) * error * on_chip for _ in range(4)])
        bitmask = np.where(rng.random((4, APOGEE_N_PIXELS)) < 0.03, encode("SIG_SKYLINE"), 0)
        bitmask[:, ~on_chip] = encode("BADPIX")
        primary = fits.PrimaryHDU()
        primary.header.update(NVISITS=2, OBJID=f"2M{index:08d}+0000000", SNR=100.0, TELESCOP="apo25m")
        grid = {"CRVAL1": 4.179, "CDELT1": 6e-6, "CRPIX1": 1, "CTYPE1": "LOG-LINEAR"}
        hdul = fits.HDUList([primary, fits.ImageHDU(rows.astype(np.float32), fits.Header(grid)),
                             fits.ImageHDU(np.tile(error, (4, 1)).astype(np.float32), fits.Header(grid)),
                             fits.ImageHDU(bitmask.astype(np.int16), fits.Header(grid))])
        path = folder / f"apStar-synthetic-{index:05d}.fits"
        with atomic_path(path) as tmp:
            hdul.writeto(tmp)
        paths.append(path)
    return paths


def read_combined(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row 0 (the combined spectrum) of an apStar file: flux, error, bad-pixel mask."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        flux, error, bitmask = (np.atleast_2d(hdul[i].data)[0] for i in (1, 2, 3))
    return flux, error, bad_pixel_mask(bitmask)


def read_batch(paths, reader: str) -> Spectra:
    """All files as one Spectra: through ``labelexplorer.read`` or the plain astropy reader above."""
    if reader == "labelexplorer":
        import labelexplorer

        return labelexplorer.read(paths)
    rows = [read_combined(path) for path in paths]
    return Spectra(np.stack([r[0] for r in rows]), WAVELENGTH, error=np.stack([r[1] for r in rows]),
                   mask=np.stack([r[2] for r in rows]))


def read_one(path, reader: str) -> Spectra:
    if reader == "labelexplorer":
        import labelexplorer

        return labelexplorer.read(path)
    flux, error, bad = read_combined(path)
    return Spectra(flux, WAVELENGTH, error=error, mask=bad)


def batch(paths, mask, reader) -> tuple[float, float]:
    start = time.perf_counter()
    spectra = read_batch(paths, reader)
    read = time.perf_counter()
    normalise_continuum(spectra, mask)
    end = time.perf_counter()
    return end - start, end - read


def loop(paths, mask, reader) -> tuple[float, float]:
    start, normalising = time.perf_counter(), 0.0
    for path in paths:
        spectrum = read_one(path, reader)
        before = time.perf_counter()
        normalise_continuum(spectrum, mask)
        normalising += time.perf_counter() - before
    return time.perf_counter() - start, normalising


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-files", type=int, default=200, help="number of files (real ones are repeated)")
    parser.add_argument("--real", action="store_true", help="use the real apStar files of shared/data, repeated")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions; the best is reported")
    parser.add_argument("--reader", choices=["labelexplorer", "astropy"], default="labelexplorer",
                        help="labelexplorer.read (the project reader) or a minimal astropy reader")
    args = parser.parse_args()
    if args.reader == "labelexplorer" and importlib.util.find_spec("labelexplorer.io.apogee") is None:
        args.reader = "astropy"

    mask_file = REAL_DATA / "apogee" / "masks" / "dr17_contmask.npy"
    if mask_file.is_file():
        mask, mask_name = continuum_pixels_from_file(mask_file), "DR17 continuum mask"
    else:
        mask = np.zeros(7514, dtype=bool)
        mask[::14] = True
        mask_name = "every 14th pixel (shared/data absent)"

    with tempfile.TemporaryDirectory() as folder:
        if args.real:
            real = sorted((REAL_DATA / "apogee" / "apStar").glob("apStar-*.fits"))
            paths = [real[i % len(real)] for i in range(args.n_files)]
            source = f"{len(real)} real apStar files repeated"
        else:
            paths = write_synthetic_apstar(Path(folder), args.n_files)
            source = "synthetic apStar-like files"
        batch(paths[:5], mask, args.reader), loop(paths[:5], mask, args.reader)  # warm-up: imports, caches
        batch_runs = [batch(paths, mask, args.reader) for _ in range(args.repeat)]
        loop_runs = [loop(paths, mask, args.reader) for _ in range(args.repeat)]
    # the best of each column separately: the machine is shared, so the minimum is the least disturbed run
    (batch_total, batch_norm), (loop_total, loop_norm) = np.min(batch_runs, axis=0), np.min(loop_runs, axis=0)

    n = len(paths)
    print(f"{n} spectra of {APOGEE_N_PIXELS} px from {source} (reader: {args.reader}); "
          f"continuum pixels: {mask_name}; best of {args.repeat}")
    print(f"{'path':<34}{'read + normalise':>20}{'normalise only':>20}")
    print(f"{'batch (read all, normalise once)':<34}{n / batch_total:>14.0f} sp/s{n / batch_norm:>14.0f} sp/s")
    print(f"{'loop (read one, normalise one)':<34}{n / loop_total:>14.0f} sp/s{n / loop_norm:>14.0f} sp/s")
    print(f"{'ratio batch / loop':<34}{loop_total / batch_total:>18.2f}x{loop_norm / batch_norm:>18.2f}x")


if __name__ == "__main__":
    main()
