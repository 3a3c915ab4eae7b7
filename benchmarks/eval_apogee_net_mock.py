"""APOGEE Net I and II on the mock universe: scatter per class, photometry, KDE weights, σ vs SNR, real files.

What it does (every spectrum goes through the project's apStar reader):

1. makes (or reuses) a mock universe under ``--universe``; its apStar files are mostly giants
   and dwarfs, so hot stars, M dwarfs and young stars without files are added from the same
   population with :func:`labelexplorer.mock.regenerate_star` (the same simulation and the
   same reader, from an in-memory FITS file) up to ``--rare`` of each; Gaia photometry and
   parallax come from the allStar-like table (:func:`attach_photometry`); the arrays are
   cached beside the universe for re-runs;
2. trains, on the same 80/10/10 split (60/20/20 for M dwarfs and young stars), with the true
   labels ([Fe/H] missing for hot stars, masked in the loss, where paper 001 forced zeros):
   **v1 without fine-tuning** (spectrum only, linear Teff), **v1** (the same all-star stage,
   resumed from its checkpoint, then stratified fine-tuning), **v2** (photometry branch,
   log Teff, KDE weights), **v2 without photometry** and **v2 with uniform weights**; prints
   each training stage's epochs and best epoch (is early stopping picking an early one?);
3. prints, on the held-out test stars, the scatter between prediction and truth per class
   (giants, dwarfs, M dwarfs, young stars, hot stars) like paper 002's Table 3, for each
   model, and v1 with against without fine-tuning on the rare classes — every comparison is
   printed whichever way it comes out;
4. prints the v2 uncertainties (spread over noise draws) against SNR (paper 002 Fig. 4) and
   the v2 model's predictions when its photometry is withheld at inference;
5. runs the v2 models with and without photometry on the real DR13 apStar files in
   ``../shared/data/apogee/apStar`` (J, H, K from their headers; no Gaia): labels,
   uncertainties and flags.

The machine this was written for has 2 shared CPU cores, so the default budget is small
(``--epochs 14`` per stage on ~2,500 spectra, batches of 16, 3 fine-tuning rounds, ~30-45
minutes of training in all, depending on how busy the machine is) and predictions use ``--draws 8`` noise realisations instead of the papers'
100 / 20: the figures show the method's behaviour, not the papers' accuracy (100k+ stars, many
epochs). Learning rates are the versions' defaults (the papers': 1e-3 for v1, 7.5e-4 for v2).

Usage::

    python benchmarks/eval_apogee_net_mock.py [--universe /tmp/labelexplorer-apogee-net-eval] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from labelexplorer import Spectra, read
from labelexplorer.analysis.metrics import bias, calibration_ratio, sigma_mad
from labelexplorer.mock import make_universe, regenerate_star
from labelexplorer.models.apogee_net import ApogeeNet, attach_photometry

REAL_DATA = Path(os.environ.get("LABELEXPLORER_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLASS_GROUPS = {"giants": ("red_giant", "red_clump"), "dwarfs": ("dwarf",), "M dwarfs": ("m_dwarf",),
                "young stars": ("yso",), "hot stars": ("hot",)}
RARE = ("m_dwarf", "yso")
TOPPED_UP = ("hot", "m_dwarf", "yso")
SNR_BINS = [(0, 30), (30, 60), (60, 100), (100, 200), (200, np.inf)]
CACHE_NAME = "apogee_net_eval_sample.npz"


def timed(message: str) -> None:
    """Print *message* with the seconds since the previous call."""
    now = time.perf_counter()
    print(f"[{now - timed.last:6.1f} s] {message}", flush=True)
    timed.last = now


timed.last = time.perf_counter()


# ---------------------------------------------------------------------------------------- the sample
def build_sample(universe, rare: int, seed: int) -> tuple[Spectra, pd.DataFrame]:
    """The universe's apStar spectra plus regenerated rare stars, with photometry attached."""
    with_files = universe.spectrum_stars
    spectra = universe.spectra("apstar")
    stars = universe.stars
    rng = np.random.default_rng(seed)
    extra = []
    for name in TOPPED_UP:
        have = int((with_files["STAR_CLASS"] == name).sum())
        pool = stars[(stars["STAR_CLASS"] == name) & ~stars["HAS_SPECTRUM"]]
        take = min(max(rare - have, 0), len(pool))
        extra.append(pool.iloc[np.sort(rng.choice(len(pool), take, replace=False))])
    extra = pd.concat(extra)
    regenerated = [regenerate_star(universe, int(index), kind="apstar") for index in extra["MOCK_INDEX"]]
    spectra = Spectra.concatenate([spectra, *regenerated])
    table = pd.concat([with_files, extra], ignore_index=True)
    return attach_photometry(spectra, table), table


def cached_sample(universe, rare: int, seed: int) -> tuple[Spectra, pd.DataFrame]:
    """:func:`build_sample`, cached as plain arrays (no pickle) beside the universe."""
    path = universe.path / CACHE_NAME
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            if int(cached["rare"]) == rare and int(cached["seed"]) == seed:
                info = {key[5:]: cached[key] for key in cached.files if key.startswith("info_")}
                spectra = Spectra(cached["flux"], cached["wavelength"], error=cached["error"], mask=cached["mask"],
                                  ids=cached["ids"], info=info, meta={"survey": "APOGEE", "format": "apstar"},
                                  allow_empty=True)
                table = universe.stars.set_index("MOCK_INDEX").loc[cached["mock_index"]].reset_index()
                return spectra, table
    spectra, table = build_sample(universe, rare, seed)
    numeric = {f"info_{k}": v for k, v in spectra.info.items() if np.asarray(v).dtype.kind in "fiub"}
    np.savez(path, flux=spectra.flux, error=spectra.error, mask=spectra.mask, wavelength=spectra.wavelength,
             ids=spectra.ids.astype(str), mock_index=table["MOCK_INDEX"].to_numpy(), rare=rare, seed=seed, **numeric)
    return spectra, table


def training_labels(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """True Teff, logg, [Fe/H]; [Fe/H] missing for hot stars (paper 001 had no reliable values)."""
    feh = table["TRUE_FE_H"].to_numpy(dtype=float).copy()
    feh[table["STAR_CLASS"].to_numpy() == "hot"] = np.nan
    return {"TEFF": table["TRUE_TEFF"].to_numpy(dtype=float), "LOGG": table["TRUE_LOGG"].to_numpy(dtype=float),
            "FE_H": feh}


# ---------------------------------------------------------------------------------------- reports
def class_table(title: str, prediction, table: pd.DataFrame, rows: np.ndarray) -> dict:
    """Scatter (std and σ_MAD) and bias per class and label on *rows*; returns σ_MAD per (class, label)."""
    print(f"\n{title}")
    print(f"  {'class':<12}{'n':>5} | {'Teff std':>9} {'σ_MAD':>7} {'bias':>7} | {'logg std':>8} {'σ_MAD':>6} "
          f"{'bias':>6} | {'[Fe/H] std':>10} {'σ_MAD':>6} {'bias':>6}")
    truth = {"TEFF": table["TRUE_TEFF"].to_numpy(float), "LOGG": table["TRUE_LOGG"].to_numpy(float),
             "FE_H": table["TRUE_FE_H"].to_numpy(float)}
    classes = table["STAR_CLASS"].to_numpy()
    out = {}
    for group, members in {"all": tuple(set(classes)), **CLASS_GROUPS}.items():
        chosen = rows[np.isin(classes[rows], members)]
        cells = []
        for label, fmt in (("TEFF", "{:9.0f} {:7.0f} {:+7.0f}"), ("LOGG", "{:8.3f} {:6.3f} {:+6.3f}"),
                           ("FE_H", "{:10.3f} {:6.3f} {:+6.3f}")):
            where = np.flatnonzero(np.isin(rows, chosen))
            predicted, true = prediction[label].mean[where], truth[label][chosen]
            good = np.isfinite(predicted) & np.isfinite(true)
            residual = predicted[good] - true[good]
            std = float(np.std(residual)) if residual.size > 1 else np.nan
            cells.append(fmt.format(std, sigma_mad(residual), bias(residual)))
            out[(group, label)] = sigma_mad(residual)
        print(f"  {group:<12}{chosen.size:>5} | " + " | ".join(cells))
    return out


def snr_table(prediction, snr: np.ndarray) -> None:
    """Median uncertainty (std over noise draws) per SNR bin (paper 002 Fig. 4)."""
    print("\nv2 uncertainty (median std over noise draws) vs SNR, test stars")
    print(f"  {'SNR':<10}{'n':>5} | {'σ Teff (K)':>10} {'σ log Teff':>10} {'σ logg':>7} {'σ [Fe/H]':>8}")
    teff, teff_std = prediction["TEFF"].mean, prediction["TEFF"].predictive_std
    for low, high in SNR_BINS:
        rows = (snr >= low) & (snr < high)
        if rows.sum() == 0:
            continue
        log_std = np.nanmedian(teff_std[rows] / teff[rows] / np.log(10))
        print(f"  {f'{low:.0f}-{high:.0f}':<10}{int(rows.sum()):>5} | {np.nanmedian(teff_std[rows]):10.1f} "
              f"{log_std:10.4f} {np.nanmedian(prediction['LOGG'].predictive_std[rows]):7.3f} "
              f"{np.nanmedian(prediction['FE_H'].predictive_std[rows]):8.3f}")


def calibration_table(model, prediction, table: pd.DataFrame, rows: np.ndarray) -> None:
    """std((prediction − truth) / σ) per class: the calibrated total σ against the papers' noise spread alone."""
    print("\nv2 calibration on the test stars: std((prediction − truth) / σ), 1 = honest; calibrated total σ "
          "(fitted on the development stars) vs the papers' noise-draw spread")
    print(f"  {'class':<12}{'n':>5} | {'Teff cal':>8} {'raw':>6} | {'logg cal':>8} {'raw':>6} | {'[Fe/H] cal':>10} {'raw':>6}")
    classes = table["STAR_CLASS"].to_numpy()[rows]
    for group, members in {"all": tuple(set(classes)), **CLASS_GROUPS}.items():
        chosen = np.isin(classes, members)
        cells = []
        for j, label in enumerate(model.label_names_):
            estimate, truth = prediction[label], table[f"TRUE_{label}"].to_numpy(float)[rows]
            raw = estimate.predictive_std / model.uncertainty_scale_[j]
            cells.append(f"{calibration_ratio(estimate.mean[chosen], truth[chosen], estimate.total_std[chosen]):8.2f} "
                         f"{calibration_ratio(estimate.mean[chosen], truth[chosen], raw[chosen]):6.1f}")
        print(f"  {group:<12}{int(chosen.sum()):>5} | " + " | ".join(cells))


def weighting_table(uniform: dict, kde: dict) -> None:
    """KDE vs uniform weights: σ_MAD per class, both shown whichever is better."""
    print("\nKDE vs uniform loss weights (v2 with photometry), σ_MAD on test stars")
    print(f"  {'class':<12} | {'Teff unif':>9} {'Teff KDE':>9} | {'logg unif':>9} {'logg KDE':>9}")
    for group in ("all", *CLASS_GROUPS):
        print(f"  {group:<12} | {uniform[(group, 'TEFF')]:9.0f} {kde[(group, 'TEFF')]:9.0f} | "
              f"{uniform[(group, 'LOGG')]:9.3f} {kde[(group, 'LOGG')]:9.3f}")


def fine_tuning_table(without: dict, with_: dict) -> None:
    """v1 with against without stratified fine-tuning, σ_MAD per class (the rare classes are its target)."""
    print("\nv1 stratified fine-tuning (M dwarfs, young stars + 5 % of the rest per round), σ_MAD on test stars")
    print(f"  {'class':<12} | {'Teff without':>12} {'with':>6} | {'logg without':>12} {'with':>6} | "
          f"{'[Fe/H] without':>14} {'with':>6}")
    for group in ("all", *CLASS_GROUPS):
        print(f"  {group:<12} | {without[(group, 'TEFF')]:12.0f} {with_[(group, 'TEFF')]:6.0f} | "
              f"{without[(group, 'LOGG')]:12.3f} {with_[(group, 'LOGG')]:6.3f} | "
              f"{without[(group, 'FE_H')]:14.3f} {with_[(group, 'FE_H')]:6.3f}")


def stage_summary(name: str, history: list[dict]) -> str:
    """Each training stage's learning curve (train / development loss per epoch) and best epoch."""
    lines = [f"{name}: learning curves (train / dev loss per epoch; * best dev epoch, the one kept)"]
    for stage in dict.fromkeys(record["stage"] for record in history if "epoch" in record):
        records = [record for record in history if record.get("stage") == stage and "epoch" in record]
        best = int(np.nanargmin([record["val_loss"] for record in records]))
        curve = " ".join(f"{r['loss']:.3f}/{r['val_loss']:.3f}{'*' if k == best else ''}"
                         for k, r in enumerate(records))
        lines.append(f"  {stage:<9} {len(records):>2} epochs, best {best + 1:>2}: {curve}")
    return "\n".join(lines)


def real_files(model: ApogeeNet, name: str) -> None:
    """Run a model on the real apStar files end to end."""
    files = sorted((REAL_DATA / "apogee" / "apStar").glob("apStar-*.fits"))
    if not files:
        print(f"\n(no real apStar files under {REAL_DATA})")
        return
    spectra = read([str(f) for f in files])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no Gaia columns in apStar headers: filled as missing
        prediction = model.predict(model.prepare(spectra))
    print(f"\nreal DR13 apStar files ({len(files)}), {name} model, J/H/K from the headers, Gaia missing")
    print(f"  {'APOGEE_ID':<20}{'SNR':>6} | {'Teff':>7} {'±':>5} | {'logg':>5} {'±':>5} | "
          f"{'[Fe/H]':>6} {'±':>5} | flags")
    for i, star in enumerate(prediction.ids):
        flags = ",".join(name for name, values in prediction.flags.items() if values[i]) or "-"
        print(f"  {star:<20}{spectra.snr[i]:6.0f} | {prediction['TEFF'].mean[i]:7.0f} "
              f"{prediction['TEFF'].predictive_std[i]:5.0f} | {prediction['LOGG'].mean[i]:5.2f} "
              f"{prediction['LOGG'].predictive_std[i]:5.2f} | {prediction['FE_H'].mean[i]:6.2f} "
              f"{prediction['FE_H'].predictive_std[i]:5.2f} | {flags}")
    finite = np.isfinite(prediction["TEFF"].mean).all() and np.isfinite(prediction["LOGG"].mean).all()
    print(f"  finite Teff and logg for every file: {finite}")


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universe", default="/tmp/labelexplorer-apogee-net-eval")
    parser.add_argument("--stars", type=int, default=20_000, help="population size")
    parser.add_argument("--spectra", type=int, default=2_000, help="stars with apStar files")
    parser.add_argument("--rare", type=int, default=250, help="hot stars, M dwarfs and young stars each")
    parser.add_argument("--epochs", type=int, default=14, help="epochs per training stage")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: each version's")
    parser.add_argument("--fine-tune-rounds", type=int, default=3, help="v1 stratified fine-tuning rounds")
    parser.add_argument("--draws", type=int, default=8, help="noise realisations per prediction")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = parser.parse_args()
    if args.quick:
        args.universe, args.stars, args.spectra, args.rare, args.epochs = args.universe + "-quick", 3000, 120, 20, 1

    universe = make_universe(args.universe, n_stars=args.stars, n_spectra=args.spectra, n_galaxies=0, n_lamost=0,
                             seed=args.seed, workers=2, progress=False)
    spectra, table = cached_sample(universe, args.rare, args.seed)
    labels = training_labels(table)
    classes = table["STAR_CLASS"].to_numpy().astype(str)
    counts = pd.Series(classes).value_counts().to_dict()
    timed(f"sample: {len(spectra)} apStar spectra {counts}")

    common = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  n_draws=args.draws, random_state=args.seed, progress=False)
    # both v1 runs share the all-star stage: the second resumes it from the first's checkpoint
    v1_checkpoints = tempfile.TemporaryDirectory(prefix="apogee-net-v1-")
    configurations = {
        "v1 without fine-tuning": dict(version=1, fine_tune_rounds=0, checkpoint_dir=v1_checkpoints.name),
        "v1": dict(version=1, fine_tune_rounds=args.fine_tune_rounds, fine_tune_patience=1,
                   checkpoint_dir=v1_checkpoints.name),
        "v2": dict(version=2),
        "v2 without photometry": dict(version=2, use_photometry=False),
        "v2 uniform weights": dict(version=2, weighting="uniform"),
    }
    models, predictions, scatter, training_seconds = {}, {}, {}, {}
    for name, settings in configurations.items():
        start = time.perf_counter()
        model = ApogeeNet(**settings, **common).fit(spectra, labels, classes=classes)
        training_seconds[name] = time.perf_counter() - start
        test = model.split_["test"]
        timed(f"{name}: trained in {training_seconds[name]:.0f} s, "
              f"{sum(1 for r in model.history_ if 'epoch' in r)} epochs over its stages")
        print(stage_summary(name, model.history_))
        predictions[name] = model.predict(spectra[test])
        models[name] = model
        scatter[name] = class_table(f"{name}: prediction − truth on {test.size} test stars", predictions[name],
                                    table, test)
        timed(f"{name}: predicted the test stars ({args.draws} draws each)")
    v1_checkpoints.cleanup()
    print(f"\ntraining time in all: {sum(training_seconds.values()):.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in training_seconds.items())})")
    fine_tuning_table(scatter["v1 without fine-tuning"], scatter["v1"])

    test = models["v2"].split_["test"]
    print("\nv2 with vs without photometry, σ_MAD on test stars (trained without: 'v2 without photometry')")
    print(f"  {'class':<12} | {'Teff with':>9} {'without':>8} | {'logg with':>9} {'without':>8}")
    for group in ("all", *CLASS_GROUPS):
        print(f"  {group:<12} | {scatter['v2'][(group, 'TEFF')]:9.0f} "
              f"{scatter['v2 without photometry'][(group, 'TEFF')]:8.0f} | {scatter['v2'][(group, 'LOGG')]:9.3f} "
              f"{scatter['v2 without photometry'][(group, 'LOGG')]:8.3f}")
    test_spectra = spectra[test]
    withheld = test_spectra.replace(info={k: v for k, v in test_spectra.info.items() if not k.startswith("GAIAEDR3")
                                          and k not in ("J", "H", "K")}, step="photometry withheld")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        blind = models["v2"].predict(withheld)
    class_table("v2 trained with photometry, photometry withheld at prediction", blind, table, test)
    weighting_table(scatter["v2 uniform weights"], scatter["v2"])
    snr_table(predictions["v2"], np.asarray(spectra.snr)[test])
    calibration_table(models["v2"], predictions["v2"], table, test)
    flags = predictions["v2"].flags
    print("\nv2 flags on the test stars: " + ", ".join(f"{k} {int(v.sum())}" for k, v in flags.items()))
    young = np.isin(classes[test], ["yso"])
    print(f"  yso_candidate: {int(flags['yso_candidate'][young].sum())}/{int(young.sum())} young stars, "
          f"{int(flags['yso_candidate'][~young].sum())}/{int((~young).sum())} others")
    real_files(models["v2"], "v2")
    real_files(models["v2 without photometry"], "v2 without photometry")
    timed("done")


if __name__ == "__main__":
    main()
