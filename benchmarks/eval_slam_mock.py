"""SLAM on the mock universe: CV scatter and bias vs SNR, COD peaks, and a fit of the real LAMOST files.

What it does (every spectrum goes through the project's readers and preprocessing):

1. makes (or reuses) a mock universe under ``--universe`` with LAMOST-like and APOGEE-like files;
2. **LAMOST**: reads the LAMOST-like files, divides by the pseudo-continuum, resamples onto
   3900–5800 Å (the paper's range) every ``--step`` Å, trains SLAM on the ``--n-train``
   highest-SNR stars with the catalog's pipeline-like labels (Teff, logg, [Fe/H]; the
   paper trained on LASP labels), predicts every other star and prints scatter (std, as
   the paper's eq. 10, and σ_MAD) and bias against the catalog labels and the true labels
   in the paper's S/N_g bins, next to the paper's figures at S/N_g > 100 (50 K, 0.09 dex,
   0.07 dex); then the COD spectra (leave-one-label-out retraining) and their peaks;
3. **APOGEE**: reads the aspcapStar-like files, keeps giants, trains on ``--n-apogee-pixels``
   pixels chosen by their correlation with each label (a subset of the 7514-pixel grid, to
   fit the time budget) with more labels, and prints the same statistics;
4. **real LAMOST files** in ``../shared/data/lamost``: read, shifted to the rest frame
   (header Z), normalised, resampled and fitted with the LAMOST model: labels, formal
   errors, convergence and outside-training-set flags.

Usage::

    python benchmarks/eval_slam_mock.py [--universe /tmp/labelexplorer-slam-eval] [--quick]
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import numpy as np

from labelexplorer import Spectra, read
from labelexplorer.analysis.metrics import bias, sigma_mad
from labelexplorer.exceptions import LabelExplorerError
from labelexplorer.mock import make_universe
from labelexplorer.models.slam import SLAM
from labelexplorer.preprocess.pseudo_continuum import pseudo_continuum_normalise
from labelexplorer.preprocess.resample import resample

REAL_DATA = Path(os.environ.get("LABELEXPLORER_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SNR_BINS = [(5, 20), (20, 40), (40, 60), (60, 80), (80, 100), (100, np.inf)]
PAPER_HIGH_SNR = {"TEFF": 50.0, "LOGG": 0.09, "FE_H": 0.07}  # LAMOST-trained CV scatter at S/N_g > 100


def timed(message: str):
    """Print *message* with the seconds since the previous call."""
    now = time.perf_counter()
    print(f"[{now - timed.last:6.1f} s] {message}", flush=True)
    timed.last = now


timed.last = time.perf_counter()


def rest_frame_lamost(spectra: Spectra, step: float) -> Spectra:
    """Rest frame (header redshift Z), pseudo-continuum normalised, on 3900–5800 Å every *step* Å."""
    z = np.asarray(spectra.info.get("Z", np.zeros(len(spectra))), dtype=float)
    z = np.where(np.isfinite(z) & (np.abs(z) < 0.01), z, 0.0)
    if np.any(z != 0):
        spectra = spectra.replace(wavelength=spectra.wavelength[None, :] / (1 + z[:, None]), step="rest frame (Z)")
    normalised = pseudo_continuum_normalise(spectra)
    return resample(normalised, np.arange(3900.0, 5800.0 + 1e-9, step))


def usable(spectra: Spectra, max_bad: float = 0.1) -> np.ndarray:
    """Spectra with at most *max_bad* of their pixels masked (the paper drops those with > 50 bad pixels)."""
    return spectra.mask.mean(axis=1) <= max_bad


def report(title: str, names, predicted, reference, snr, prediction=None) -> None:
    """Scatter (std and σ_MAD) and bias per label in the SNR bins."""
    print(f"\n{title}")
    header = "  S/N bin     n " + "".join(f"| {n:>8} std  σ_MAD   bias " for n in names)
    print(header)
    for low, high in SNR_BINS:
        rows = (snr >= low) & (snr < high)
        if rows.sum() < 3:
            continue
        cells = []
        for j in range(len(names)):
            r = predicted[rows, j] - reference[rows, j]
            r = r[np.isfinite(r)]
            cells.append(f"| {np.std(r):12.3g} {sigma_mad(r):6.3g} {bias(r):+7.3g} ")
        label = f"{low:>3}-{high:<4}" if np.isfinite(high) else f"{low:>3}+    "
        print(f"  {label} {rows.sum():5d} " + "".join(cells))
    if prediction is not None:
        high = snr >= 100
        if high.any():
            print("  at S/N >= 100: median formal error (model_std) "
                  + ", ".join(f"{n} {np.median(prediction.model_std[high, j]):.3g}" for j, n in enumerate(names))
                  + "; median predictive_std "
                  + ", ".join(f"{n} {np.median(prediction.predictive_std[high, j]):.3g}" for j, n in enumerate(names)))


def train(spectra, labels, names, args) -> tuple[SLAM, float]:
    model = SLAM(c_grid=args.c_grid, gamma_grid=args.gamma_grid, n_folds=args.folds, n_jobs=args.n_jobs,
                 progress=False, error_model_snr=(10.0, 20.0, 40.0, 80.0), error_model_stars=args.error_model_stars)
    start = time.perf_counter()
    model.fit(spectra, dict(zip(names, labels.T)))
    return model, time.perf_counter() - start


def lamost_part(universe, args):
    catalog = universe.lamost_catalog().set_index("obsid")
    spectra = universe.lamost()
    timed(f"read {len(spectra)} LAMOST-like files")
    spectra = rest_frame_lamost(spectra, args.step)
    spectra = spectra[usable(spectra)]
    timed(f"pseudo-continuum + resample: {spectra.n_pixels} px every {args.step} Å; {len(spectra)} usable spectra")
    rows = catalog.loc[spectra.ids.astype(np.int64)]
    names = ["TEFF", "LOGG", "FE_H"]
    pipeline = rows[["teff", "logg", "feh"]].to_numpy(float)
    truth = rows[["TRUE_TEFF", "TRUE_LOGG", "TRUE_FE_H"]].to_numpy(float)
    snr = rows["snrg"].to_numpy(float)
    quality = ((pipeline[:, 0] > 4000) & (pipeline[:, 0] < 8000) & (pipeline[:, 1] > 0.5) & (pipeline[:, 1] < 5.5)
               & (pipeline[:, 2] > -2.5) & (pipeline[:, 2] < 1.0))
    # a third of the S/N_g >= 100 stars are held out, so that the test set reaches the paper's top bin
    rng = np.random.default_rng(args.seed)
    high = np.flatnonzero(quality & (snr >= 100))
    held_out = rng.choice(high, high.size // 3, replace=False)
    candidates = np.setdiff1d(np.flatnonzero(quality), held_out)
    train_rows = np.sort(candidates[np.argsort(-snr[candidates])][: args.n_train])
    test_rows = np.setdiff1d(np.arange(len(spectra)), train_rows)
    print(f"LAMOST training set: {train_rows.size} stars with S/N_g {snr[train_rows].min():.0f}-"
          f"{snr[train_rows].max():.0f}; test set: {test_rows.size} stars")
    model, seconds = train(spectra[train_rows], pipeline[train_rows], names, args)
    timed(f"trained SLAM on LAMOST ({seconds:.0f} s, {1e3 * seconds / spectra.n_pixels:.0f} ms per pixel incl. "
          f"outlier rejection and error model); rejected {len(model.rejected_ids_)} outliers")
    prediction = model.predict(spectra[test_rows])
    timed(f"predicted {test_rows.size} test spectra ({100 * prediction.flags['not_converged'].mean():.1f} % not "
          f"converged, {100 * prediction.flags['outside_training_set'].mean():.1f} % outside the training set)")
    report("LAMOST test set vs pipeline-like catalog labels (the paper's comparison)", names, prediction.mean,
           pipeline[test_rows], snr[test_rows], prediction)
    report("LAMOST test set vs TRUE labels", names, prediction.mean, truth[test_rows], snr[test_rows])
    print("  paper (LAMOST DR5, CV scatter at S/N_g > 100): "
          + ", ".join(f"{n} {v}" for n, v in PAPER_HIGH_SNR.items()))
    print("  error law sigma(SNR) = a exp(-b SNR) + c: "
          + "; ".join(f"{n} a={a:.3g} b={b:.3g} c={c:.3g}" for n, (a, b, c) in zip(names, model.error_model_)))
    if args.cod:
        cod = model.compute_cod(spectra[train_rows], dict(zip(names, pipeline[train_rows].T)))
        timed("COD (leave-one-label-out retraining) on the LAMOST model")
        print_cod(cod, names)
    return model


def print_cod(cod, names) -> None:
    print(f"  median COD_full {np.median(cod.full):.2f}; pixels dominated by each label: "
          + ", ".join(f"{n} {np.mean(cod.dominant_label() == n) * 100:.0f} %" for n in names))
    for name in names:
        peaks = ", ".join(f"{w:.0f}" for w in cod.peaks(name, n=6, min_separation=4))
        print(f"  COD({name}) peaks at {peaks} Å (max {np.nanmax(cod[name]):.2f})")


def select_pixels(spectra: Spectra, labels: np.ndarray, n_pixels: int) -> np.ndarray:
    """The pixels most correlated with each label in turn (round robin), never-masked pixels only."""
    good = (~spectra.mask).mean(axis=0) > 0.9
    flux = np.where(spectra.mask, 0.0, spectra.flux)[:, good]
    flux = flux - flux.mean(axis=0)
    flux = flux / np.where(flux.std(axis=0) > 0, flux.std(axis=0), np.inf)
    centred = (labels - labels.mean(axis=0)) / labels.std(axis=0)
    correlation = np.full((labels.shape[1], spectra.n_pixels), -1.0)
    correlation[:, good] = np.abs(centred.T @ flux) / len(labels)
    chosen: list[int] = []
    ranked = [list(np.argsort(-c)) for c in correlation]
    while len(chosen) < min(n_pixels, int(good.sum())):
        for ranking in ranked:
            while ranking and ranking[0] in chosen:
                ranking.pop(0)
            if ranking and len(chosen) < n_pixels:
                chosen.append(int(ranking.pop(0)))
    return np.sort(chosen)


def apogee_part(universe, args):
    names = ["TEFF", "LOGG", "FE_H", "MG_FE", "AL_FE", "N_FE"]
    spectra = universe.spectra("aspcap")
    labels = universe.labels(true=False, names=names).to_numpy(float)
    truth = universe.labels(true=True, names=names).to_numpy(float)
    snr = np.asarray(spectra.info.get("snr", spectra.snr), dtype=float)
    timed(f"read {len(spectra)} aspcapStar-like files")
    giants = (np.isfinite(labels).all(axis=1) & (labels[:, 0] > 3800) & (labels[:, 0] < 5500) & (labels[:, 1] < 3.8))
    spectra, labels, truth, snr = spectra[giants], labels[giants], truth[giants], snr[giants]
    rng = np.random.default_rng(0)
    train_rows = np.sort(rng.choice(np.flatnonzero(snr > 70), min(args.n_train, int((snr > 70).sum()) * 3 // 4),
                                    replace=False))
    test_rows = np.setdiff1d(np.arange(len(spectra)), train_rows)
    pixels = select_pixels(spectra[train_rows], labels[train_rows], args.n_apogee_pixels)
    subset = spectra.replace(flux=spectra.flux[:, pixels], error=spectra.error[:, pixels],
                             mask=spectra.mask[:, pixels], wavelength=spectra.wavelength[pixels],
                             step=f"{pixels.size} pixels most correlated with the labels")
    print(f"APOGEE giants: {train_rows.size} training (SNR > 70), {test_rows.size} test; {pixels.size} of "
          f"{spectra.n_pixels} pixels (chosen by correlation with each label)")
    model, seconds = train(subset[train_rows], labels[train_rows], names, args)
    timed(f"trained SLAM on APOGEE ({seconds:.0f} s); rejected {len(model.rejected_ids_)} outliers")
    prediction = model.predict(subset[test_rows])
    timed(f"predicted {test_rows.size} APOGEE test spectra ({100 * prediction.flags['not_converged'].mean():.1f} % not "
          "converged)")
    report("APOGEE test giants vs pipeline-like labels", names, prediction.mean, labels[test_rows], snr[test_rows],
           prediction)
    report("APOGEE test giants vs TRUE labels", names, prediction.mean, truth[test_rows], snr[test_rows])
    if args.cod:
        cod = model.compute_cod(subset[train_rows], dict(zip(names, labels[train_rows].T)))
        timed("COD on the APOGEE model")
        print_cod(cod, names)


def real_lamost_part(model: SLAM, args) -> None:
    files = sorted(glob.glob(str(REAL_DATA / "lamost" / "*" / "*.fits*")))
    if not files:
        print(f"\nno real LAMOST files under {REAL_DATA / 'lamost'}; skipped")
        return
    batches, skipped = [], []
    for path in files:
        try:
            one = read(path)
        except LabelExplorerError as err:
            skipped.append(f"{Path(path).name}: {err}")
            continue
        if str(one.info.get("CLASS", ["STAR"])[0]).upper() == "STAR":
            batches.append(one.replace(info={k: np.asarray(one.info.get(k, [np.nan]), float) for k in ("Z", "SNRG")}))
        else:
            skipped.append(f"{Path(path).name}: CLASS={one.info['CLASS'][0]}")
    spectra = rest_frame_lamost(Spectra.concatenate(batches), args.step)
    has_pixels = (~spectra.mask).sum(axis=1) > 0.5 * spectra.n_pixels
    spectra = spectra[has_pixels]
    prediction = model.predict(spectra)
    names = prediction.label_names
    print(f"\nreal LAMOST spectra: {len(files)} files, {len(spectra)} fitted ({len(skipped)} skipped: "
          f"{'; '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''})")
    print(f"  all labels finite: {bool(np.isfinite(prediction.mean).all())}; converged "
          f"{int((~prediction.flags['not_converged']).sum())}/{len(spectra)}; outside training set "
          f"{int(prediction.flags['outside_training_set'].sum())}")
    for i in range(len(spectra)):
        values = ", ".join(f"{n} {prediction.mean[i, j]:.4g}±{prediction.model_std[i, j]:.2g}"
                           for j, n in enumerate(names))
        flags = [f for f, v in prediction.flags.items() if v[i]]
        print(f"  {spectra.ids[i][:30]:30s} S/N_g {spectra.info['SNRG'][i]:6.1f}  {values} {' '.join(flags)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--universe", default="/tmp/labelexplorer-slam-eval")
    parser.add_argument("--n-stars", type=int, default=8000)
    parser.add_argument("--n-lamost", type=int, default=2500)
    parser.add_argument("--n-apogee", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--step", type=float, default=4.0, help="Å between pixels of the LAMOST grid")
    parser.add_argument("--n-apogee-pixels", type=int, default=300)
    parser.add_argument("--c-grid", type=float, nargs="+", default=[10.0])
    parser.add_argument("--gamma-grid", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--error-model-stars", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-cod", dest="cod", action="store_false")
    parser.add_argument("--no-apogee", dest="apogee", action="store_false")
    parser.add_argument("--no-lamost", dest="lamost", action="store_false", help="skip LAMOST (and the real files)")
    parser.add_argument("--save-model", help="directory to save the LAMOST-trained model in")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_stars, args.n_lamost, args.n_apogee, args.n_train, args.step = 1500, 300, 200, 150, 8.0
        args.n_apogee_pixels, args.error_model_stars = 100, 50
    universe = make_universe(args.universe, n_stars=args.n_stars, n_spectra=args.n_apogee, n_galaxies=0,
                             n_lamost=args.n_lamost, seed=args.seed, workers=args.n_jobs, progress=False)
    timed(f"mock universe ready: {universe}")
    if args.lamost:
        model = lamost_part(universe, args)
        if args.save_model:
            model.save(args.save_model)
        real_lamost_part(model, args)
    if args.apogee:
        apogee_part(universe, args)
    timed("done")


if __name__ == "__main__":
    main()
