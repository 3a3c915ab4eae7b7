"""The demo pipeline and the ``labelexplorer demo`` / ``labelexplorer serve`` commands.

``labelexplorer demo`` is the first command of the README. On a fresh machine it

1. writes (or reuses) a small mock universe under ``<out>/universe``;
2. reads its spectra once and caches them as ``<out>/cache/spectra-<key>.npz``;
3. trains every requested model with fast settings (:data:`RECIPES`) on 70 % of the
   stars with spectra, or loads it from ``<out>/models/<name>-<key>`` when a previous
   run trained it on the same data with the same settings;
4. predicts every spectrum (cached in ``<out>/predictions/<name>-<key>.parquet``) and
   builds the combined catalog ``<out>/catalog.parquet`` (schema in
   :mod:`labelexplorer.dashboard.state`): every star of the population with its true
   labels (``TRUE__``), its pipeline-like labels (``ASPCAP__``) and each method's;
5. serves the dashboard on 127.0.0.1 and prints the address and the time it took to a
   served page.

A model that fails to train is reported and left out; the dashboard shows the others.
``labelexplorer serve CATALOG...`` serves existing catalog files instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from .._files import atomic_path
from ..exceptions import LabelExplorerError

__all__ = ["DEFAULT_OUT", "DEFAULT_MODELS", "RECIPES", "Recipe", "Demo", "build_demo", "demo_catalog",
           "load_spectra", "training_labels", "configure_parser", "run"]

DEFAULT_OUT = Path(".labelexplorer") / "demo"
DEFAULT_MODELS = ("ridge", "slam", "bcnn-censored", "apogee-net", "galaxy-cnn")
TRAINING_FRACTION = 0.7
_STAR_COLUMNS = ("MOCK_INDEX", "CLUSTER", "STAR_CLASS", "POPULATION", "SNR", "RA", "DEC", "HAS_SPECTRUM")
_TRAINING_STREAM = 7  # seed-sequence entry of the train/test split (other streams belong to the mock)


@dataclass(frozen=True)
class Recipe:
    """How the demo trains one model on the mock universe.

    Attributes
    ----------
    labels : str
        ``"all"`` (Teff, logg, [Fe/H], [M/H], [α/M] and every [X/Fe]), ``"astronn"``
        (Teff, logg and [X/H] of the 19 astroNN elements), ``"basic"`` (Teff, logg,
        [Fe/H]) or ``"galaxy"`` (12 + log(O/H) from images).
    hyperparameters : dict
        Fast settings: the demo must train in a minute or two on a laptop.
    max_training : int, optional
        At most this many training stars (for methods whose cost grows fast with them).
    """

    labels: str
    hyperparameters: dict = field(default_factory=dict)
    max_training: int | None = None


_BCNN_FAST = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "mc_passes": 20, "sensitivity_passes": 4,
              "early_stopping_patience": 4, "progress": False}
RECIPES = {
    "ridge": Recipe("all", {"alpha": 1.0, "n_bootstrap": 2, "n_folds": 2}),
    # one SVR per pixel of 8575: train on 150 stars, no outlier refit, no degraded-SNR error model
    "slam": Recipe("basic", {"c_grid": (10.0,), "gamma_grid": (0.3,), "n_folds": 2, "outlier_sigma": None,
                             "error_model_snr": (), "n_jobs": -1, "progress": False}, max_training=150),
    "bcnn-censored": Recipe("astronn", _BCNN_FAST),
    "bcnn": Recipe("astronn", _BCNN_FAST),
    "galaxy-cnn": Recipe("galaxy", {"depth": 10, "width": 16, "hidden": 64, "image_size": 64, "epochs": 6,
                                    "batch_size": 16, "mc_passes": 4, "progress": False}),
}
"""Fast demo settings per model; a model without a recipe uses its ``quick_hyperparameters``."""


def recipe_for(name: str) -> Recipe:
    """The demo recipe of a registered model (its quick settings when it has no recipe here)."""
    from ..models.base import model_class

    if name in RECIPES:
        return RECIPES[name]
    cls = model_class(name)
    return Recipe("galaxy" if cls.input_kind == "images" else "basic", dict(cls.quick_hyperparameters))


# ------------------------------------------------------------------------------------------ data
def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_spectra(universe, cache_dir: Path):
    """Every APOGEE (aspcapStar) spectrum of the universe, read once and then from an npz cache."""
    from ..spectra import Spectra

    path = Path(cache_dir) / f"spectra-{_digest(universe.config, __version__)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return Spectra(data["flux"], data["wavelength"], error=data["error"], mask=data["mask"],
                           ids=data["ids"].astype(str), info={"snr": data["snr"]},
                           meta={"survey": "APOGEE", "source": str(universe.path)})
    spectra = universe.spectra("aspcap")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, flux=spectra.flux, error=spectra.error, mask=spectra.mask, wavelength=spectra.wavelength,
                     ids=spectra.ids.astype(str), snr=np.asarray(spectra.snr, dtype=float))
    return spectra


def training_labels(universe, kind: str) -> pd.DataFrame:
    """Pipeline-like training labels of the stars with spectra (NaN where the pipeline failed).

    Examples
    --------
    >>> import tempfile
    >>> from labelexplorer.mock import make_universe
    >>> u = make_universe(tempfile.mkdtemp(), n_stars=40, n_spectra=0, n_galaxies=0, n_lamost=0, progress=False)
    >>> training_labels(u, "basic").columns.tolist()
    ['TEFF', 'LOGG', 'FE_H']
    """
    from ..labels import ASTRONN_LABELS

    labels = universe.labels(true=False)
    if kind == "all":
        return labels
    if kind == "basic":
        return labels[["TEFF", "LOGG", "FE_H"]]
    if kind == "astronn":
        out = {}
        for name in ASTRONN_LABELS:
            over_fe = name[:-2] + "_FE"
            out[name] = labels[name] if name in labels else labels[over_fe] + labels["FE_H"]
        return pd.DataFrame(out, index=labels.index)
    raise LabelExplorerError(f"recipe labels: unknown kind {kind!r}; expected all, basic or astronn")


def _split(ids: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic training mask over stars (70 %), from the universe seed."""
    return np.random.default_rng([seed, _TRAINING_STREAM]).random(len(ids)) < TRAINING_FRACTION


def demo_catalog(stars: pd.DataFrame, predictions: dict, training_ids: Sequence[str] = ()) -> pd.DataFrame:
    """The combined catalog: every star, its true and pipeline labels, and every method's predictions.

    Examples
    --------
    >>> from labelexplorer.mock import population
    >>> catalog = demo_catalog(population(30, seed=0), {})
    >>> [c for c in catalog.columns if c.endswith("__TEFF")]
    ['TRUE__TEFF', 'ASPCAP__TEFF']
    """
    from ..mock.stellar import true_label_table
    from .state import combine_catalog

    star_columns = ["APOGEE_ID", *[c for c in _STAR_COLUMNS if c in stars.columns]]
    base = stars[star_columns].copy()
    base["TRAINING"] = base["APOGEE_ID"].isin(set(training_ids))
    truth = true_label_table(stars).reset_index(names="ID")
    names = [c for c in truth.columns if c != "ID"]
    pipeline = {"ID": stars["APOGEE_ID"].to_numpy()}
    for name in names:
        for column in (name, f"{name}_ERR"):
            if column in stars.columns:
                values = stars[column].to_numpy(dtype=float)
                pipeline[column] = np.where(values <= -9000, np.nan, values)
    sources = {**predictions, "true": truth, "aspcap": pd.DataFrame(pipeline)}
    return combine_catalog(base, sources, id_column="APOGEE_ID")


# ------------------------------------------------------------------------------------------ models
@dataclass
class Demo:
    """What :func:`build_demo` made: everything the dashboard needs."""

    out: Path
    universe: object
    catalog: pd.DataFrame
    models: dict
    galaxies: object
    timings: dict
    skipped: dict

    def state(self):
        """A fresh dashboard state over this demo (one per browser session)."""
        from .state import ExplorerState

        return ExplorerState(self.catalog, models=self.models, spectra=self._spectra(), galaxies=self.galaxies)

    def _spectra(self):
        from .state import UniverseSpectra

        if not hasattr(self, "_shared_spectra"):
            self._shared_spectra = UniverseSpectra(self.universe)  # shared by sessions: one cache per process
        return self._shared_spectra


def _train_or_load(name: str, recipe: Recipe, data, labels: pd.DataFrame, directory: Path, log):
    from ..models.base import get_model, load_model

    if (directory / "config.json").is_file():
        log(f"  {name}: loading the model trained by an earlier run ({directory})")
        return load_model(directory)
    log(f"  {name}: training on {len(data)} {'images' if recipe.labels == 'galaxy' else 'spectra'} "
        f"({', '.join(labels.columns[:4])}{'...' if labels.shape[1] > 4 else ''})")
    model = get_model(name, **recipe.hyperparameters).fit(data, labels)
    model.save(directory)
    return model


def _predict_or_load(name: str, model, data, path: Path, log) -> pd.DataFrame:
    if path.is_file():
        return pd.read_parquet(path)
    log(f"  {name}: predicting {len(data)} objects")
    table = model.predict(data).to_pandas()
    table.attrs = {}
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return table


def _stellar_model(name, recipe, universe, spectra, training, seed, out, log):
    labels = training_labels(universe, recipe.labels)
    rows = np.flatnonzero(training)
    if recipe.max_training is not None and rows.size > recipe.max_training:
        rows = np.sort(np.random.default_rng([seed, _TRAINING_STREAM, 1]).choice(rows, recipe.max_training,
                                                                                    replace=False))
    key = _digest(name, recipe.labels, recipe.hyperparameters, universe.config, rows.tolist(), __version__)
    model = _train_or_load(name, recipe, spectra[rows], labels.iloc[rows], out / "models" / f"{name}-{key}", log)
    return model, _predict_or_load(name, model, spectra, out / "predictions" / f"{name}-{key}.parquet", log)


def _galaxy_model(name, recipe, universe, seed, out, log):
    images = universe.images()
    catalog = images.catalog
    truth = pd.DataFrame({"OH_P50": catalog["oh_p50"].to_numpy(float)})
    training = _split(images.ids, seed)
    rows = np.flatnonzero(training)
    key = _digest(name, recipe.hyperparameters, universe.config, __version__)
    model = _train_or_load(name, recipe, images[rows], truth.iloc[rows], out / "models" / f"{name}-{key}", log)
    return model, _predict_or_load(name, model, images, out / "predictions" / f"{name}-{key}.parquet", log)


def _galaxy_source(universe, galaxy_predictions: dict):
    from .state import GalaxySource, source_prefix

    source = GalaxySource.from_universe(universe)
    if source is None or not galaxy_predictions:
        return source
    table = source.catalog
    for name, frame in galaxy_predictions.items():
        renamed = frame.rename(columns={c: source_prefix(name) + c for c in frame.columns if c != "ID"})
        table = table.merge(renamed.rename(columns={"ID": "objID"}).assign(objID=lambda f: f["objID"].astype(str)),
                            on="objID", how="left")
    return GalaxySource(table, source.folder)


def build_demo(out=DEFAULT_OUT, *, n_stars: int = 5000, n_spectra: int = 1000, n_galaxies: int = 300,
               models: Sequence[str] = DEFAULT_MODELS, seed: int = 0, workers: int = 2,
               log: Callable[[str], None] = print) -> Demo:
    """Build (or reuse) the demo: universe, models, predictions and the combined catalog.

    Parameters
    ----------
    out : path-like
        Folder of everything the demo writes; a second run reuses it.
    n_stars, n_spectra, n_galaxies : int
        Size of the mock universe (stars in the catalog, stars with spectra, galaxies).
    models : sequence of str
        Registered model names; unknown names raise, models that fail are skipped.
    seed : int
        Seed of the universe and of the train/test split.
    workers : int
        Processes writing the universe.
    log : callable
        Receives one line per step.

    Examples
    --------
    >>> import tempfile
    >>> demo = build_demo(tempfile.mkdtemp(), n_stars=30, n_spectra=0, n_galaxies=0, models=[], log=lambda line: None)
    >>> len(demo.catalog), demo.state().sources
    (30, ['true', 'aspcap'])
    """
    from ..mock import make_universe
    from ..models.base import available_models

    out = Path(out)
    unknown = [m for m in models if m not in available_models()]
    if unknown:
        from ..exceptions import UnknownNameError, did_you_mean

        raise UnknownNameError(f"--models: unknown model {unknown[0]!r}; available: {', '.join(available_models())}"
                               f"{did_you_mean(unknown[0], available_models())}")
    timings, started = {}, time.perf_counter()
    log(f"mock universe: {n_stars} stars, {n_spectra} with spectra, {n_galaxies} galaxies -> {out / 'universe'}")
    universe = make_universe(out / "universe", n_stars=n_stars, n_spectra=n_spectra, n_galaxies=n_galaxies,
                             n_lamost=0, seed=seed, workers=workers, progress=log is print)
    timings["universe"] = time.perf_counter() - started
    spectra = load_spectra(universe, out / "cache") if n_spectra else None
    training = _split(spectra.ids, seed) if spectra is not None else np.zeros(0, bool)
    timings["spectra"] = time.perf_counter() - started - timings["universe"]
    fitted, predictions, galaxy_predictions, skipped = {}, {}, {}, {}
    for name in models:
        recipe = recipe_for(name)
        step = time.perf_counter()
        try:
            if recipe.labels == "galaxy":
                if not n_galaxies:
                    raise LabelExplorerError("the universe has no galaxies (--galaxies 0)")
                fitted[name], galaxy_predictions[name] = _galaxy_model(name, recipe, universe, seed, out, log)
            else:
                if spectra is None:
                    raise LabelExplorerError("the universe has no spectra (--spectra 0)")
                fitted[name], predictions[name] = _stellar_model(name, recipe, universe, spectra, training, seed,
                                                                 out, log)
        except Exception as exc:  # noqa: BLE001 - one broken method must not take the demo down
            skipped[name] = f"{type(exc).__name__}: {exc}"
            log(f"  {name}: skipped ({skipped[name]})")
        timings[name] = time.perf_counter() - step
    catalog = demo_catalog(universe.stars, predictions, spectra.ids[training] if spectra is not None else ())
    with atomic_path(out / "catalog.parquet") as tmp:
        catalog.to_parquet(tmp, index=False)
    timings["total"] = time.perf_counter() - started
    return Demo(out, universe, catalog, fitted, _galaxy_source(universe, galaxy_predictions), timings, skipped)


# ------------------------------------------------------------------------------------------ command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labelexplorer demo`` or ``labelexplorer serve`` (told apart by the parser's name)."""
    command = parser.prog.split()[-1]
    if command == "serve":
        parser.add_argument("catalog", nargs="+", help="catalog files (Parquet, CSV or FITS) to serve")
        parser.add_argument("--universe", help="a mock universe folder: spectra for the inspector, and its galaxies")
        parser.add_argument("--model", action="append", default=[], metavar="DIR",
                            help="a saved model directory (repeatable): sensitivities and model spectra")
    else:
        parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"working folder (default {DEFAULT_OUT})")
        parser.add_argument("--stars", type=int, default=5000, help="stars in the catalog (default 5000)")
        parser.add_argument("--spectra", type=int, default=1000, help="stars with spectra (default 1000)")
        parser.add_argument("--galaxies", type=int, default=300, help="galaxy cutouts (default 300)")
        parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                            help=f"models to train (default: {' '.join(DEFAULT_MODELS)})")
        parser.add_argument("--seed", type=int, default=0, help="seed of the universe (default 0)")
        parser.add_argument("--workers", type=int, default=2, help="processes writing the universe (default 2)")
        parser.add_argument("--build-only", action="store_true", help="build everything, do not serve")
    parser.add_argument("--port", type=int, default=5006, help="port on 127.0.0.1 (default 5006)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")


def run(args: argparse.Namespace) -> int:
    """Run ``labelexplorer demo`` or ``labelexplorer serve``."""
    started = time.perf_counter()
    if getattr(args, "catalog", None) is not None:
        return _serve_catalogs(args, started)
    demo = build_demo(args.out, n_stars=args.stars, n_spectra=args.spectra, n_galaxies=args.galaxies,
                      models=args.models, seed=args.seed, workers=args.workers)
    built = ", ".join(f"{k} {v:.1f} s" for k, v in demo.timings.items())
    print(f"demo ready: {len(demo.catalog)} stars, methods {', '.join(demo.models) or 'none'} ({built})")
    if args.build_only:
        return 0
    from .app import serve

    serve(demo.state, port=args.port, show=not args.no_browser, started=started)
    return 0


def _serve_catalogs(args: argparse.Namespace, started: float) -> int:
    from ..models.base import load_model
    from .state import ExplorerState, GalaxySource, UniverseSpectra, read_catalog

    catalog = read_catalog(args.catalog)
    models = {}
    for directory in args.model:
        model = load_model(directory)
        models[model.name] = model
    spectra = galaxies = None
    if args.universe:
        spectra = UniverseSpectra(args.universe)
        galaxies = GalaxySource.from_universe(spectra.universe)
    from .app import serve

    serve(lambda: ExplorerState(catalog, models=models, spectra=spectra, galaxies=galaxies), port=args.port,
          show=not args.no_browser, started=started)
    return 0
