"""``make_universe``: write the whole mock universe, resumably, and the ``Universe`` that reads it.

Layout under ``out/``::

    universe.json            seed, counts, package version, the tasks and which are done
    allStar-mock.fits        every star: pipeline-like and true labels, photometry (DR17 columns)
    apStar/apStar-mock-<APOGEE_ID>.fits          raw spectra, combined + visits, bitmask
    aspcapStar/aspcapStar-mock-<APOGEE_ID>.fits  normalised spectra, model, ASPCAP results
    lamost/spec-<mjd>-<plan>_sp<sp>-<fiber>.fits LAMOST-like optical spectra (DR8+ layout)
    lamost-mock-catalog.fits                     their LAMOST-pipeline-like and true labels
    galaxies/train/<objID>.jpg, galaxies/train.csv   SDSS-like gri cutouts and their catalog

The work is split into tasks (the catalogs, chunks of :data:`CHUNK_SIZE` APOGEE or LAMOST
stars, the galaxy sample). Every file is written atomically and a task is recorded as
done in ``universe.json`` only after all its files are complete, so an interrupted run
(Ctrl-C, a killed process) resumes where it stopped when called again with the same
arguments. Everything is deterministic: star *i*'s labels depend only on ``(seed, i)``
(see :mod:`~labelexplorer.mock.stellar`), its APOGEE noise, visits and bad pixels
come from ``numpy.random.default_rng([seed, i])`` (its visits fall within two months of
its opposition, and each visit's Doppler shift, ``VHELIO_AVG`` minus the barycentric
correction of its date, places the sky lines and bad columns on the rest-frame grid),
and no file holds a timestamp, so the
same seed gives byte-identical files and :func:`regenerate_star` rebuilds any star's
spectrum alone.

Size and speed (measured on a 10,000-star universe with 2,000 APOGEE spectra, 500 LAMOST
spectra and 500 galaxies): an apStar file holds 1 row (one visit) or NVISITS + 2 rows of
8575 pixels x 10 bytes (flux, error, bitmask), an aspcapStar file 127 kB; with the default
visits (65 % one, 25 % two, 10 % three) an APOGEE star takes 0.33 MB, so 20,000 spectra
take about 6.5 GB; a LAMOST file 107 kB, a galaxy JPEG 4 kB. The CPU cost is about 9 ms
per APOGEE star and 8 ms per LAMOST star (physics and writing), so a 100,000-star universe
with 20,000 spectra takes about 100 s on two free cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import __version__
from .._files import atomic_path
from ..exceptions import LabelExplorerError, UnknownNameError, did_you_mean
from ..io.apogee import SENTINEL_ERROR
from ..labels import MISSING
from . import writers
from .stellar import LABEL_NAMES, physics_labels, population

__all__ = ["make_universe", "Universe", "regenerate_star", "barycentric_correction", "configure_parser", "run",
           "CHUNK_SIZE", "MANIFEST_NAME", "ALLSTAR_NAME"]

CHUNK_SIZE = 500
"""Stars per resumable chunk of APOGEE or LAMOST spectra."""
MANIFEST_NAME = "universe.json"
ALLSTAR_NAME = "allStar-mock.fits"
LAMOST_CATALOG_NAME = "lamost-mock-catalog.fits"
_FORMAT = "labelexplorer-mock-universe"

# Random streams besides the per-star spectrum stream [seed, index]; keyed so that no two collide.
_LAMOST_STREAM = 1
_FPARAM_STREAM = 2
_VISIT_STREAM = 3
_LASP_STREAM = 4
_GALAXY_STREAM = 5

SPECTRUM_KINDS = ("aspcap", "apstar", "model")


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class _Config:
    seed: int
    n_stars: int
    n_spectra: int
    n_lamost: int
    n_galaxies: int
    chunk_size: int

    def as_dict(self) -> dict:
        return dict(seed=self.seed, n_stars=self.n_stars, n_spectra=self.n_spectra, n_lamost=self.n_lamost,
                    n_galaxies=self.n_galaxies, chunk_size=self.chunk_size)

    def tasks(self) -> list[str]:
        """Every task of the universe, in the order they run."""
        chunks = lambda n: range(-(-n // self.chunk_size))  # noqa: E731
        return (["catalogs"] + [f"apogee-{k:05d}" for k in chunks(self.n_spectra)]
                + [f"lamost-{k:05d}" for k in chunks(self.n_lamost)] + (["galaxies"] if self.n_galaxies else []))


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LabelExplorerError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------- manifest
def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabelExplorerError(f"{path}: unreadable universe manifest ({exc}); expected the JSON written by "
                                 "make_universe - delete the folder to start again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or "config" not in manifest:
        raise LabelExplorerError(f"{path}: not a mock-universe manifest (expected format {_FORMAT!r})")
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    with atomic_path(out / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _start_manifest(out: Path, config: _Config) -> dict:
    """The manifest to continue from: the existing one if it describes the same universe."""
    manifest = _read_manifest(out)
    if manifest is None:
        if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise LabelExplorerError(f"{out}: folder exists and is not a mock universe (no {MANIFEST_NAME}); "
                                     "choose an empty or new folder")
        manifest = {"format": _FORMAT, "version": __version__, "config": config.as_dict(),
                    "tasks": config.tasks(), "done": [], "complete": False,
                    "files": {"allstar": ALLSTAR_NAME, "apstar": "apStar", "aspcapstar": "aspcapStar",
                              "lamost": "lamost", "lamost_catalog": LAMOST_CATALOG_NAME,
                              "galaxies": "galaxies/train", "galaxy_catalog": "galaxies/train.csv"}}
        out.mkdir(parents=True, exist_ok=True)
        _write_manifest(out, manifest)
        return manifest
    differences = {key: (value, config.as_dict()[key]) for key, value in manifest["config"].items()
                   if config.as_dict().get(key) != value}
    if differences:
        listed = ", ".join(f"{key}={old} (asked {new})" for key, (old, new) in differences.items())
        raise LabelExplorerError(f"{out}: holds a different universe ({listed}); use another folder or the "
                                 "same arguments to resume")
    if manifest.get("version") != __version__:
        raise LabelExplorerError(f"{out}: written by labelexplorer {manifest.get('version')}, this is {__version__}; "
                                 "its files may differ - write the universe into a new folder")
    return manifest


def _mark_done(out: Path, manifest: dict, task: str) -> None:
    manifest["done"] = sorted(set(manifest["done"]) | {task}, key=manifest["tasks"].index)
    manifest["complete"] = len(manifest["done"]) == len(manifest["tasks"])
    _write_manifest(out, manifest)


# ---------------------------------------------------------------------------------- APOGEE spectra
def _simulate_apogee(stars: pd.DataFrame, seed: int) -> list[dict]:
    """Noiseless, observed and normalised spectra of *stars*, one dict per star.

    The noiseless physics runs for the whole batch; each star's noise, visits and bad
    pixels come from its own generator ``default_rng([seed, MOCK_INDEX])``.
    """
    from . import apogee_physics

    labels = physics_labels(stars)
    normalized = np.asarray(apogee_physics.normalized_flux(labels), dtype=np.float32)
    continuum = np.asarray(apogee_physics.continuum_shape({**labels, "H": stars["H"].to_numpy()},
                                                          ak=stars["TRUE_AK"].to_numpy()), dtype=np.float32)
    on_chip = writers.chip_mask()
    out = []
    for row, star in enumerate(stars.itertuples(index=False)):
        index, nvisits = int(star.MOCK_INDEX), int(star.NVISITS)
        rng = np.random.default_rng([seed, index])
        mjd = _visit_mjds(seed, index, nvisits, float(star.RA), float(star.DEC))
        correction = barycentric_correction(float(star.RA), float(star.DEC), mjd)
        observed = apogee_physics.observe(normalized[row:row + 1], continuum[row:row + 1], float(star.SNR), rng,
                                          visits=nvisits, velocity=(float(star.VHELIO_AVG) - correction)[None])
        flux = np.asarray(observed["flux"], dtype=np.float32).reshape(-1, normalized.shape[1])
        error = np.asarray(observed["error"], dtype=np.float32).reshape(flux.shape)
        bitmask = np.asarray(observed["bitmask"]).reshape(flux.shape)
        usable = on_chip & (flux[0] != 0) & np.isfinite(error[0]) & (error[0] < SENTINEL_ERROR)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspcap_flux = np.where(usable, flux[0] / continuum[row], 0.0)
            aspcap_error = np.where(usable, error[0] / continuum[row], 0.0)
        extra = np.random.default_rng([seed, index, _FPARAM_STREAM]).normal(0.0, 1.0, 9)
        out.append(dict(flux=flux, error=error, bitmask=bitmask, visit_snr=np.ravel(observed["visit_snr"]),
                        aspcap_flux=aspcap_flux.astype(np.float32), aspcap_error=aspcap_error.astype(np.float32),
                        model=np.where(on_chip, normalized[row], 0.0).astype(np.float32),
                        fparam_noise=extra * writers.fparam_scale(), visit_mjd=mjd,
                        visit_bc=correction))
    return out


def _visit_mjds(seed: int, index: int, nvisits: int, ra: float, dec: float) -> np.ndarray:
    """Deterministic visit dates: a season in 2014-2019 within two months of the star's opposition
    (when it is up at night), visits days to weeks apart."""
    rng = np.random.default_rng([seed, index, _VISIT_STREAM])
    year_start = 56658.0 + 365.25 * rng.integers(0, 6)  # 1 January 2014-2019
    longitude, _ = _ecliptic(ra, dec)
    target = longitude + 180.0 + rng.uniform(-60.0, 60.0)  # the Sun's longitude at the first visit
    sun_at_start = _sun_longitude(year_start)
    start = year_start + ((target - sun_at_start) % 360.0) / _SUN_DEGREES_PER_DAY
    return start + np.concatenate([[0.0], np.cumsum(rng.uniform(1.0, 40.0, nvisits - 1))])


_OBLIQUITY_DEG = 23.439
_EARTH_ORBITAL_KMS = 29.785
_SUN_DEGREES_PER_DAY = 0.9856474


def _ecliptic(ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Ecliptic longitude and latitude (degrees) of equatorial coordinates (degrees, J2000)."""
    a, d, e = np.radians(ra), np.radians(dec), np.radians(_OBLIQUITY_DEG)
    x, y, z = np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)
    y_ecl, z_ecl = y * np.cos(e) + z * np.sin(e), -y * np.sin(e) + z * np.cos(e)
    return np.degrees(np.arctan2(y_ecl, x)) % 360.0, np.degrees(np.arcsin(np.clip(z_ecl, -1.0, 1.0)))


def _sun_longitude(mjd) -> np.ndarray:
    """Apparent ecliptic longitude of the Sun (degrees; low-precision formula, ~0.01 degree)."""
    days = np.asarray(mjd, dtype=float) - 51544.5
    mean_anomaly = np.radians(357.528 + 0.9856003 * days)
    return (280.460 + _SUN_DEGREES_PER_DAY * days + 1.915 * np.sin(mean_anomaly)
            + 0.020 * np.sin(2.0 * mean_anomaly)) % 360.0


def barycentric_correction(ra: float, dec: float, mjd) -> np.ndarray:
    """The Earth's orbital velocity towards a star (km/s): heliocentric velocity = Doppler shift + this.

    A circular orbit (29.79 km/s) and the Sun's low-precision longitude: within ~0.5 km/s of
    the exact correction (the Earth's rotation, 0.4 km/s at most, is left out), which is
    plenty to place sky lines on the rest-frame grid to a tenth of a pixel.

    Parameters
    ----------
    ra, dec : float
        Position (degrees, J2000).
    mjd : float or array_like
        Dates (modified Julian days).

    Returns
    -------
    numpy.ndarray
        One correction per date; ``29.79 cos β sin(λ_sun - λ)`` in ecliptic coordinates.

    Examples
    --------
    >>> bc = barycentric_correction(250.423, 36.461, 57000.0 + np.arange(0, 365, 30))
    >>> bool(np.all(np.abs(bc) < 29.79 * np.cos(np.radians(57.0)) + 0.5))  # M13 is 57 degrees off the ecliptic
    True
    """
    longitude, latitude = _ecliptic(ra, dec)
    return (_EARTH_ORBITAL_KMS * np.cos(np.radians(latitude))
            * np.sin(np.radians(_sun_longitude(mjd) - longitude)))


def _apogee_files(star: dict, spectra: dict) -> tuple[bytes, bytes]:
    """The bytes of one star's apStar and aspcapStar files."""
    apstar = writers.apstar_bytes(star, spectra["flux"], spectra["error"], spectra["bitmask"],
                                  visit_snr=spectra["visit_snr"], visit_mjd=spectra["visit_mjd"],
                                  visit_bc=spectra["visit_bc"])
    aspcap = writers.aspcapstar_bytes(star, spectra["aspcap_flux"], spectra["aspcap_error"], spectra["model"],
                                      fparam_noise=spectra["fparam_noise"])
    return apstar, aspcap


def _write_apogee_chunk(out: str, seed: int, stars: pd.DataFrame) -> int:
    """Simulate and write the apStar and aspcapStar files of one chunk; returns the star count."""
    out = Path(out)
    for star, spectra in zip(stars.to_dict("records"), _simulate_apogee(stars, seed)):
        apstar, aspcap = _apogee_files(star, spectra)
        writers.write_bytes(out / "apStar" / writers.apstar_name(star["APOGEE_ID"]), apstar)
        writers.write_bytes(out / "aspcapStar" / writers.aspcapstar_name(star["APOGEE_ID"]), aspcap)
    return len(stars)


# ---------------------------------------------------------------------------------- LAMOST spectra
def lamost_file_name(index: int) -> str:
    """A LAMOST-style file name ``spec-<MJD>-<PLANID>_sp<SPID>-<FIBERID>.fits``, unique per star index.

    Examples
    --------
    >>> lamost_file_name(4321)
    'spec-58001-MOCK0001_sp02-072.fits'
    """
    plate, within = divmod(int(index), 4000)
    spid, fiber = divmod(within, 250)
    return f"spec-{58000 + plate}-MOCK{plate:04d}_sp{spid + 1:02d}-{fiber + 1:03d}.fits"


def _lasp_labels(stars: pd.DataFrame, seed: int) -> pd.DataFrame:
    """LAMOST-pipeline-like Teff, logg, [Fe/H] with S/N-dependent errors (per-star generators)."""
    snr = stars["LAMOST_SNRG"].to_numpy()
    errors = {"TEFF": 40.0 + 2000.0 / snr, "LOGG": 0.06 + 3.0 / snr, "FEH": 0.04 + 2.0 / snr}
    truth = {"TEFF": stars["TRUE_TEFF"].to_numpy(), "LOGG": stars["TRUE_LOGG"].to_numpy(),
             "FEH": stars["TRUE_FE_H"].to_numpy()}
    noise = np.array([np.random.default_rng([seed, int(i), _LASP_STREAM]).normal(0.0, 1.0, 3)
                      for i in stars["MOCK_INDEX"]]).reshape(-1, 3)
    table = {}
    for k, name in enumerate(("TEFF", "LOGG", "FEH")):
        table[name] = truth[name] + noise[:, k] * errors[name]
        table[f"{name}_ERR"] = errors[name]
    return pd.DataFrame(table, index=stars.index)


def _write_lamost_chunk(out: str, seed: int, stars: pd.DataFrame) -> int:
    """Simulate and write the LAMOST files of one chunk; returns the star count."""
    from . import lamost_physics

    out = Path(out)
    labels = physics_labels(stars)
    labels["ALPHA_M"] = stars["TRUE_ALPHA_M"].to_numpy()
    normalized = lamost_physics.normalized_flux(labels)
    lasp = _lasp_labels(stars, seed)
    for row, star in enumerate(stars.to_dict("records")):
        index = int(star["MOCK_INDEX"])
        rng = np.random.default_rng([seed, index, _LAMOST_STREAM])
        one = {key: values[row:row + 1] for key, values in labels.items()}
        observed = lamost_physics.observe(normalized[row:row + 1], one, float(star["LAMOST_SNRG"]), rng)
        name = lamost_file_name(index)
        header = writers.lamost_header(star, 200_000_000 + index, name, float(star["LAMOST_SNRG"]),
                                       lasp.iloc[row].to_dict())
        lamost_physics.write_lamost_spectrum(out / "lamost" / name, observed["wavelength"], observed["flux"][0],
                                             observed["ivar"][0], observed["andmask"][0], header, layout="dr8",
                                             ormask=observed["ormask"][0])
    return len(stars)


def _write_catalogs(out: Path, stars: pd.DataFrame, config: _Config) -> None:
    header = {"MOCKSEED": (config.seed, "seed of the mock universe"),
              "LEVERS": (__version__, "labelexplorer version")}
    writers.write_allstar(out / ALLSTAR_NAME, stars, header=header)
    lamost = stars[stars["HAS_LAMOST"]]
    if len(lamost):
        writers.write_lamost_catalog(out / LAMOST_CATALOG_NAME, lamost,
                                     _lasp_labels(lamost, config.seed),
                                     [lamost_file_name(i) for i in lamost["MOCK_INDEX"]])


def _write_galaxies(out: Path, config: _Config) -> None:
    from . import galaxies

    rng = np.random.default_rng([config.seed, _GALAXY_STREAM])
    sample = galaxies.galaxy_population(config.n_galaxies, rng)
    images = galaxies.render_images(sample, rng, size=128)
    galaxies.write_galaxy_sample(out / "galaxies", sample, images)


# ---------------------------------------------------------------------------------- orchestration
def _chunks(stars: pd.DataFrame, chunk_size: int, prefix: str) -> dict[str, pd.DataFrame]:
    return {f"{prefix}-{k:05d}": stars.iloc[start:start + chunk_size]
            for k, start in enumerate(range(0, len(stars), chunk_size))}


def _remove_partial_files(out: Path) -> None:
    """Temporary files a killed run left behind (atomic writes never leave them under final names)."""
    for folder in (out, out / "apStar", out / "aspcapStar", out / "lamost"):
        if folder.is_dir():
            for leftover in folder.glob(".*.part"):
                leftover.unlink(missing_ok=True)


def make_universe(out, n_stars: int = 10_000, n_spectra: int = 2_000, n_galaxies: int = 500,
                  n_lamost: int = 500, seed: int = 0, *, workers: int = 2, chunk_size: int = CHUNK_SIZE,
                  progress: bool = True) -> "Universe":
    """Write the mock universe under *out*, or finish an interrupted one, and return it.

    Parameters
    ----------
    out : path-like
        Folder to write (created; must be new, empty, or a universe with the same arguments).
    n_stars : int
        Stars in the population and the allStar catalog.
    n_spectra : int
        Stars with APOGEE apStar + aspcapStar files.
    n_galaxies : int
        Galaxy cutouts (JPEG) with their catalog; 0 for none.
    n_lamost : int
        Stars with LAMOST-like spectra (3800-8000 K; overlapping the APOGEE stars).
    seed : int
        Seed of everything; the same seed gives byte-identical files.
    workers : int
        Processes simulating chunks in parallel (1: in this process). Worker processes are
        spawned, so a script that calls this with ``workers > 1`` needs the usual
        ``if __name__ == "__main__":`` guard (notebooks and the CLI need nothing).
    chunk_size : int
        Stars per resumable chunk.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Universe
        The universe on disk.

    Raises
    ------
    LabelExplorerError
        Bad counts, or *out* holds something else (another universe, other files).

    Examples
    --------
    >>> import tempfile
    >>> universe = make_universe(tempfile.mkdtemp(), n_stars=30, n_spectra=0, n_galaxies=0, n_lamost=0,
    ...                          progress=False)
    >>> universe.complete, len(universe.stars)
    (True, 30)
    """
    config = _Config(seed=_check_int("seed", seed, 0), n_stars=_check_int("n_stars", n_stars, 1),
                     n_spectra=_check_int("n_spectra", n_spectra, 0), n_lamost=_check_int("n_lamost", n_lamost, 0),
                     n_galaxies=_check_int("n_galaxies", n_galaxies, 0),
                     chunk_size=_check_int("chunk_size", chunk_size, 1))
    workers = _check_int("workers", workers, 1)
    stars = population(config.n_stars, config.seed, n_spectra=config.n_spectra, n_lamost=config.n_lamost)
    out = Path(out)
    manifest = _start_manifest(out, config)
    _remove_partial_files(out)
    todo = [task for task in manifest["tasks"] if task not in manifest["done"]]
    if "catalogs" in todo:
        _write_catalogs(out, stars, config)
        _mark_done(out, manifest, "catalogs")
    jobs = {**{name: (_write_apogee_chunk, chunk) for name, chunk in
               _chunks(stars[stars["HAS_SPECTRUM"]], config.chunk_size, "apogee").items()},
            **{name: (_write_lamost_chunk, chunk) for name, chunk in
               _chunks(stars[stars["HAS_LAMOST"]], config.chunk_size, "lamost").items()}}
    pending = {name: job for name, job in jobs.items() if name in todo}
    _run_jobs(out, config.seed, manifest, pending, workers, progress)
    if "galaxies" in todo:
        _write_galaxies(out, config)
        _mark_done(out, manifest, "galaxies")
    return Universe(out)


def _run_jobs(out: Path, seed: int, manifest: dict, pending: dict, workers: int, progress: bool) -> None:
    """Run the spectrum chunks, in this process or a pool, recording each as it completes."""
    from tqdm.auto import tqdm

    total = sum(len(chunk) for _, chunk in pending.values())
    with tqdm(total=total, desc="mock universe", unit="star", disable=not progress or not total) as bar:
        if workers == 1 or len(pending) <= 1:
            for name, (function, chunk) in pending.items():
                bar.update(function(str(out), seed, chunk))
                _mark_done(out, manifest, name)
            return
        context = multiprocessing.get_context("spawn")  # safe with threads (Jupyter, torch) in this process
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(function, str(out), seed, chunk): name
                       for name, (function, chunk) in pending.items()}
            try:
                for future in concurrent.futures.as_completed(futures):
                    bar.update(future.result())
                    _mark_done(out, manifest, futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


# ---------------------------------------------------------------------------------- the Universe
def _select(table: pd.DataFrame, rows, what: str) -> pd.DataFrame:
    """Rows of *table* by None (all), int (first n), slice, positions, APOGEE_IDs or a boolean mask."""
    if rows is None:
        return table
    if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
        return table.iloc[:int(rows)]
    if isinstance(rows, slice):
        return table.iloc[rows]
    values = np.asarray(rows)
    if values.dtype == bool:
        if values.shape != (len(table),):
            raise LabelExplorerError(f"rows: a boolean mask needs {len(table)} values ({what}), got {values.shape}")
        return table[values]
    if values.dtype.kind in "iu":
        if values.size and (values.min() < -len(table) or values.max() >= len(table)):
            raise LabelExplorerError(f"rows: positions must be below {len(table)} ({what})")
        return table.iloc[values]
    if values.dtype.kind in "UO":
        known = pd.Index(table["APOGEE_ID"])
        unknown = [str(v) for v in values if str(v) not in known]
        if unknown:
            raise LabelExplorerError(f"rows: {unknown[0]!r} is not among the {what}"
                                     f"{did_you_mean(unknown[0], known[:1000])}")
        return table.set_index("APOGEE_ID", drop=False).loc[list(map(str, values))].reset_index(drop=True)
    raise LabelExplorerError(f"rows: expected None, an int, a slice, positions, APOGEE_IDs or a boolean mask; "
                             f"got {type(rows).__name__}")


class Universe:
    """A mock universe on disk: its paths, population and readers for models and the dashboard.

    Parameters
    ----------
    path : path-like
        A folder written by :func:`make_universe`.

    Examples
    --------
    >>> import tempfile
    >>> folder = make_universe(tempfile.mkdtemp(), n_stars=20, n_spectra=0, n_galaxies=0, n_lamost=0,
    ...                        progress=False).path
    >>> universe = Universe(folder)
    >>> universe.seed, universe.labels(all_stars=True).shape[0]
    (0, 20)
    """

    def __init__(self, path):
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        if manifest is None:
            raise LabelExplorerError(f"{self.path}: not a mock universe (no {MANIFEST_NAME}); "
                                     "create one with labelexplorer.mock.make_universe")
        self.manifest = manifest
        self.config = dict(manifest["config"])

    def __repr__(self) -> str:
        c = self.config
        done, tasks = len(self.manifest["done"]), len(self.manifest["tasks"])
        state = "complete" if self.complete else f"{done}/{tasks} tasks done"
        return (f"Universe({str(self.path)!r}, seed={c['seed']}, stars={c['n_stars']}, spectra={c['n_spectra']}, "
                f"lamost={c['n_lamost']}, galaxies={c['n_galaxies']}, {state})")

    # ---------------------------------------------------------------- facts and paths
    @property
    def seed(self) -> int:
        """The seed the universe was made with."""
        return int(self.config["seed"])

    @property
    def complete(self) -> bool:
        """True when every task is done (else call make_universe again to finish)."""
        return bool(self.manifest.get("complete"))

    @property
    def allstar_path(self) -> Path:
        """The allStar-like catalog of every star."""
        return self.path / ALLSTAR_NAME

    @property
    def galaxy_folder(self) -> Path:
        """The folder of galaxy JPEGs (its catalog ``train.csv`` lies beside it)."""
        return self.path / "galaxies" / "train"

    @cached_property
    def stars(self) -> pd.DataFrame:
        """The full population (regenerated from the seed, identical to the allStar rows)."""
        c = self.config
        return population(c["n_stars"], c["seed"], n_spectra=c["n_spectra"], n_lamost=c["n_lamost"])

    @property
    def spectrum_stars(self) -> pd.DataFrame:
        """The stars with APOGEE files (the training set), in file-writing order."""
        return self.stars[self.stars["HAS_SPECTRUM"]].reset_index(drop=True)

    @property
    def lamost_stars(self) -> pd.DataFrame:
        """The stars with LAMOST files."""
        return self.stars[self.stars["HAS_LAMOST"]].reset_index(drop=True)

    def files(self, kind: str = "aspcap", rows=None) -> list[Path]:
        """Paths of the APOGEE (``"aspcap"``, ``"apstar"``) or ``"lamost"`` files of the chosen stars."""
        if kind == "lamost":
            chosen = _select(self.lamost_stars, rows, "LAMOST stars")
            return [self.path / "lamost" / lamost_file_name(i) for i in chosen["MOCK_INDEX"]]
        kind = _check_kind(kind)
        chosen = _select(self.spectrum_stars, rows, "stars with APOGEE spectra")
        if kind == "apstar":
            return [self.path / "apStar" / writers.apstar_name(i) for i in chosen["APOGEE_ID"]]
        return [self.path / "aspcapStar" / writers.aspcapstar_name(i) for i in chosen["APOGEE_ID"]]

    # ---------------------------------------------------------------- reading
    def spectra(self, kind: str = "aspcap", rows=None, **options):
        """Read APOGEE spectra of the chosen stars through :func:`labelexplorer.read`.

        Parameters
        ----------
        kind : {"aspcap", "apstar", "model"}
            Normalised aspcapStar spectra, raw apStar spectra, or the noiseless model
            (aspcapStar HDU3).
        rows : optional
            None (all stars with spectra), an int (the first n), a slice, positions,
            APOGEE_IDs or a boolean mask over :attr:`spectrum_stars`.
        **options
            Passed to the reader; the apStar reader's ``rows=`` (combined, visits...) is
            spelled ``apstar_rows=`` here, since ``rows`` picks the stars.

        Returns
        -------
        Spectra
            One spectrum per chosen star (or per visit), ids = APOGEE_ID, in the order of
            :meth:`labels`.

        Examples
        --------
        >>> import tempfile
        >>> universe = make_universe(tempfile.mkdtemp(), n_stars=20, n_spectra=2, n_galaxies=0, n_lamost=0,
        ...                          progress=False)
        >>> spectra = universe.spectra("aspcap")
        >>> spectra.flux.shape, spectra.ids.tolist() == universe.labels().index.tolist()
        ((2, 8575), True)
        """
        from ..io.registry import read

        kind = _check_kind(kind)
        files = self.files("apstar" if kind == "apstar" else "aspcap", rows)
        if not files:
            raise LabelExplorerError(f"{self.path}: no APOGEE spectra selected (the universe has "
                                     f"{self.config['n_spectra']})")
        if kind == "model":
            options["what"] = "model"
        if "apstar_rows" in options:
            options["rows"] = options.pop("apstar_rows")
        return read([str(f) for f in files], **options)

    def labels(self, true: bool = True, rows=None, *, all_stars: bool = False, names: Sequence[str] | None = None):
        """Labels of the chosen stars, indexed by APOGEE_ID, in the order of :meth:`spectra`.

        Parameters
        ----------
        true : bool
            True labels (default) or the pipeline-like ones (NaN where the pipeline gave -9999).
        rows : optional
            As in :meth:`spectra`.
        all_stars : bool
            Select among all stars of the population instead of those with spectra.
        names : sequence of str, optional
            Label columns (default TEFF, LOGG, FE_H, M_H, ALPHA_M and every [X/Fe]).

        Examples
        --------
        >>> import tempfile
        >>> universe = make_universe(tempfile.mkdtemp(), n_stars=20, n_spectra=0, n_galaxies=0, n_lamost=0,
        ...                          progress=False)
        >>> universe.labels(all_stars=True, rows=3, names=["TEFF", "MG_FE"]).shape
        (3, 2)
        """
        table = self.stars if all_stars else self.spectrum_stars
        chosen = _select(table, rows, "stars" if all_stars else "stars with APOGEE spectra")
        columns = list(names) if names is not None else list(LABEL_NAMES)
        source = [f"TRUE_{c}" if true else c for c in columns]
        missing = [c for c in source if c not in chosen]
        if missing:
            raise UnknownNameError(f"labels: unknown label {missing[0]!r}{did_you_mean(missing[0], chosen.columns)}")
        values = chosen[source].to_numpy(dtype=np.float64, copy=True)
        values[values <= MISSING + 1] = np.nan
        return pd.DataFrame(values, columns=columns, index=pd.Index(chosen["APOGEE_ID"], name="APOGEE_ID"))

    def label_errors(self, rows=None, *, names: Sequence[str] | None = None) -> pd.DataFrame:
        """The pipeline-like ``*_ERR`` columns of :meth:`labels` (NaN where missing)."""
        chosen = _select(self.spectrum_stars, rows, "stars with APOGEE spectra")
        columns = list(names) if names is not None else list(LABEL_NAMES)
        values = chosen[[f"{c}_ERR" for c in columns]].to_numpy(dtype=np.float64, copy=True)
        values[values <= MISSING + 1] = np.nan
        return pd.DataFrame(values, columns=columns, index=pd.Index(chosen["APOGEE_ID"], name="APOGEE_ID"))

    def lamost(self, rows=None, **options):
        """Read the LAMOST-like spectra of the chosen LAMOST stars."""
        from ..io.registry import read

        files = self.files("lamost", rows)
        if not files:
            raise LabelExplorerError(f"{self.path}: no LAMOST spectra selected (the universe has "
                                     f"{self.config['n_lamost']})")
        return read([str(f) for f in files], **options)

    def lamost_catalog(self) -> pd.DataFrame:
        """The LAMOST stars' catalog: file names, LAMOST-pipeline-like and true labels."""
        from astropy.table import Table

        path = self.path / LAMOST_CATALOG_NAME
        if not path.is_file():
            raise LabelExplorerError(f"{path}: no LAMOST catalog (the universe has n_lamost="
                                     f"{self.config['n_lamost']}, or is incomplete)")
        table = Table.read(path)
        table.convert_bytestring_to_unicode()
        return table.to_pandas()

    def galaxy_catalog(self) -> pd.DataFrame:
        """The galaxy catalog (``train.csv``), objIDs kept as exact strings."""
        path = self.path / "galaxies" / "train.csv"
        if not path.is_file():
            raise LabelExplorerError(f"{path}: no galaxy catalog (the universe has n_galaxies="
                                     f"{self.config['n_galaxies']}, or is incomplete)")
        return pd.read_csv(path, dtype={"objID": str})

    def images(self, **options):
        """Read the galaxy cutouts and their catalog as an ImageSet."""
        from ..io.registry import read

        if not self.config["n_galaxies"]:
            raise LabelExplorerError(f"{self.path}: this universe has no galaxies (n_galaxies=0)")
        return read(str(self.galaxy_folder), **options)

    def regenerate(self, star, kind: str = "apstar", **options):
        """The spectrum of one star rebuilt from the seed alone; see :func:`regenerate_star`."""
        return regenerate_star(self, star, kind=kind, **options)


def _check_kind(kind: str) -> str:
    if kind not in SPECTRUM_KINDS:
        raise UnknownNameError(f"kind: unknown spectrum kind {kind!r}; expected one of {', '.join(SPECTRUM_KINDS)}"
                               f"{did_you_mean(str(kind), SPECTRUM_KINDS)}")
    return kind


# ---------------------------------------------------------------------------------- regeneration
def _star_row(source, star) -> tuple[pd.DataFrame, int]:
    """The population row of *star* (index or APOGEE_ID) and the seed, from a universe or a seed."""
    if isinstance(source, (str, os.PathLike)):
        source = Universe(source)
    if isinstance(source, Universe):
        table, seed = source.stars, source.seed
        if isinstance(star, (int, np.integer)) and not isinstance(star, bool):
            if not 0 <= int(star) < len(table):
                raise LabelExplorerError(f"star: index {star} outside the universe's {len(table)} stars")
            return table.iloc[[int(star)]], seed
        matches = table[table["APOGEE_ID"] == str(star)]
        if matches.empty:
            raise LabelExplorerError(f"star: {star!r} is not in {source.path}"
                                     f"{did_you_mean(str(star), table['APOGEE_ID'][:1000])}")
        return matches, seed
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        if not isinstance(star, (int, np.integer)) or isinstance(star, bool) or star < 0:
            raise LabelExplorerError("star: with a bare seed, give the star's index (MOCK_INDEX); an APOGEE_ID "
                                     "needs the universe folder")
        return population(int(star) + 1, int(source)).iloc[[int(star)]], int(source)
    raise LabelExplorerError(f"source: expected a Universe, its folder or a seed, got {type(source).__name__}")


def regenerate_star(source, star, *, kind: str = "apstar", **options):
    """Rebuild one star's APOGEE spectrum from ``(seed, star index)`` alone, without its file.

    Parameters
    ----------
    source : Universe, path-like or int
        The universe (or its folder), or a bare seed.
    star : int or str
        ``MOCK_INDEX`` of the star, or its ``APOGEE_ID`` (needs the universe).
    kind : {"apstar", "aspcap", "model"}
        What to return: the raw apStar spectrum, the normalised aspcapStar spectrum or the
        noiseless model.
    **options
        Passed to the reader, e.g. ``rows="visits"`` for apStar.

    Returns
    -------
    Spectra
        What :func:`labelexplorer.read` returns for the star's file (the same arrays; only
        ``info["file"]`` and ``meta["source"]`` differ, as nothing is read from disk).
    """
    from astropy.io import fits

    from ..io.registry import read

    kind = _check_kind(kind)
    row, seed = _star_row(source, star)
    apstar, aspcap = _apogee_files(row.to_dict("records")[0], _simulate_apogee(row, seed)[0])
    if kind == "model":
        options["what"] = "model"
    hdul = fits.HDUList.fromstring(apstar if kind == "apstar" else aspcap)
    return read(hdul, format="apstar" if kind == "apstar" else "aspcapstar", **options)


# ---------------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labelexplorer mock``."""
    parser.add_argument("--out", required=True, help="folder to write (resumes an interrupted run)")
    parser.add_argument("--stars", type=int, default=10_000, help="stars in the population (default 10000)")
    parser.add_argument("--spectra", type=int, default=2_000, help="stars with APOGEE spectra (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same files (default 0)")
    parser.add_argument("--galaxies", type=int, default=500, help="galaxy cutouts (default 500)")
    parser.add_argument("--lamost", type=int, default=500, help="stars with LAMOST spectra (default 500)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``labelexplorer mock``: write (or finish) the universe and print where it is."""
    universe = make_universe(args.out, n_stars=args.stars, n_spectra=args.spectra, n_galaxies=args.galaxies,
                             n_lamost=args.lamost, seed=args.seed, workers=args.workers, progress=not args.quiet)
    print(universe)
    return 0
