"""SLAM on the mock universe: CV scatter and bias vs SNR, COD peaks, and a fit of the real LAMOST files.

What it does (every spectrum goes through the project's readers and preprocessing):

1. makes (or reuses) a mock universe under ``--universe`` with LAMOST-like and APOGEE-like files;
2. **LAMOST**: reads the LAMOST-like files, divides by the pseudo-continuum, resamples onto
   3900–5800 Å (the paper's range) every ``--step`` Å, trains SLAM on the ``--n-train``
   highest-SNR stars with the catalog's pipeline-like labels (Teff, logg, [Fe/H]; the
   paper trained on LASP labels), predicts every other star and prints scatter (std, as
   the paper's eq. 10, and σ_MAD) and bias against the catalog labels and the true labels
   in the paper's S/N_g bins, next to the paper's figures at S/N_g > 100 (50 K, 0.09 dex,
   0.07 dex), and again without SLAM's continuum correction (``continuum_knots``: the
   pseudo-continuum of a noisy spectrum is not that of the high-S/N training spectra,
   which biased Teff by −50 K at S/N 40–100); then the COD spectra (leave-one-label-out
   retraining) and their peaks;
3. **APOGEE**: reads the aspcapStar-like files, keeps giants, trains with Teff, logg, [Fe/H],
   [Mg/Fe], [Al/Fe], [N/Fe] on every pixel of the Mg and Al line windows plus
   ``--n-other-pixels`` random ones (continuum, other species, CN for N), prints the same
   statistics, and checks that each element's COD peaks in its own windows (a table:
   share of its top-20 COD pixels inside, mean COD inside / outside). It prints first how
   much of each label the other labels predict (R²): leave-one-label-out retraining can only
   attribute the rest, and in the mock population [Mg/Fe] and [Al/Fe] follow [Fe/H] and
   each other closely, so with pipeline-like labels what is left is mostly label noise.
   The check is repeated with the same spectra and their true labels, and on mock spectra
   of the same stars with [X/Fe] shuffled among them (independent of the other labels);
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
from labelexplorer.mock.apogee_physics import normalized_flux
from labelexplorer.models.slam import SLAM, cod_window_contrast
from labelexplorer.preprocess.linelist import load_linelist
from labelexplorer.preprocess.pseudo_continuum import pseudo_continuum_normalise
from labelexplorer.preprocess.resample import resample
from labelexplorer.preprocess.windows import MOLECULE_ELEMENTS, windows_from_linelist

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


def train(spectra, labels, names, args, **overrides) -> tuple[SLAM, float]:
    settings = dict(c_grid=args.c_grid, gamma_grid=args.gamma_grid, n_folds=args.folds, n_jobs=args.n_jobs,
                    progress=False, error_model_snr=(10.0, 20.0, 40.0, 80.0), error_model_stars=args.error_model_stars)
    model = SLAM(**{**settings, **overrides})
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
    model, seconds = train(spectra[train_rows], pipeline[train_rows], names, args,
                           continuum_knots=args.continuum_knots or None)
    timed(f"trained SLAM on LAMOST ({seconds:.0f} s, {1e3 * seconds / spectra.n_pixels:.0f} ms per pixel incl. "
          f"outlier rejection and error model); rejected {len(model.rejected_ids_)} outliers")
    prediction = model.predict(spectra[test_rows])
    timed(f"predicted {test_rows.size} test spectra ({100 * prediction.flags['not_converged'].mean():.1f} % not "
          f"converged, {100 * prediction.flags['outside_training_set'].mean():.1f} % outside the training set)")
    report("LAMOST test set vs pipeline-like catalog labels (the paper's comparison)", names, prediction.mean,
           pipeline[test_rows], snr[test_rows], prediction)
    report("LAMOST test set vs TRUE labels", names, prediction.mean, truth[test_rows], snr[test_rows])
    if model.continuum_knots is not None:
        plain = model.set_params(continuum_knots=None).predict(spectra[test_rows])
        model.set_params(continuum_knots=args.continuum_knots)
        report("LAMOST test set vs TRUE labels, the same model WITHOUT the continuum correction (continuum_knots=None)",
               names, plain.mean, truth[test_rows], snr[test_rows])
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


APOGEE_LABELS = ["TEFF", "LOGG", "FE_H", "MG_FE", "AL_FE", "N_FE"]
ELEMENT_OF = {"MG_FE": "Mg", "AL_FE": "Al", "N_FE": "N"}  # N is measured from the CN lines, as in ASPCAP


def element_windows(wavelength: np.ndarray) -> dict[str, np.ndarray]:
    """Label -> mask of its element's windows on the APOGEE grid: ±2.5 FWHM around each of its lines.

    Every line counts, not only the strongest: a saturated line's abundance response lies in
    its wings, and the mock's weaker Mg lines carry a fifth of the [Mg/Fe] response.
    """
    windows = windows_from_linelist(load_linelist(), wavelength, group=MOLECULE_ELEMENTS, weight_by_strength=False)
    return {label: windows.mask(element) for label, element in ELEMENT_OF.items()}


def window_pixels(spectra: Spectra, windows: dict[str, np.ndarray], n_other: int, rng) -> np.ndarray:
    """Every good pixel of the Mg and Al windows and *n_other* random good pixels elsewhere.

    The random ones sample the continuum and other species' lines; the CN lines of N cover
    ~40 % of the spectrum, so N's windows are sampled by them too.
    """
    good = (~spectra.mask).mean(axis=0) > 0.9
    own = good & (windows["MG_FE"] | windows["AL_FE"])
    others = np.flatnonzero(good & ~own)
    return np.sort(np.r_[np.flatnonzero(own), rng.choice(others, min(n_other, others.size), replace=False)])


def label_predictability(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cross-validated R² of each label predicted from the others (gradient boosting, 5 folds).

    Leave-one-label-out retraining can give a label only the part of its spectral signature
    that the other labels do not already predict: this R² is the share it cannot get.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import cross_val_predict

    r2 = []
    for j in range(labels.shape[1]):
        others = np.delete(labels, j, axis=1)
        guess = cross_val_predict(HistGradientBoostingRegressor(max_iter=100, random_state=seed), others,
                                  labels[:, j], cv=5)
        r2.append(1.0 - np.var(labels[:, j] - guess) / np.var(labels[:, j]))
    return np.array(r2)


def report_attribution_limit(names, labels, truth) -> None:
    """Spread, predictability from the other labels (given and true labels), and the label noise."""
    r2, r2_true = np.clip(label_predictability(labels), 0, 1), np.clip(label_predictability(truth), 0, 1)
    print("  label    spread  R² from the others (true labels)  spread not predicted  label error (vs truth)")
    for j, name in enumerate(names):
        spread = np.std(labels[:, j])
        print(f"  {name:7s} {spread:7.3g}      {r2[j]:5.2f} ({r2_true[j]:4.2f})               "
              f"{spread * np.sqrt(1 - r2[j]):7.3g}            {np.std(labels[:, j] - truth[:, j]):7.3g}")


def report_cod_windows(title: str, cod, windows: dict[str, np.ndarray], n_top: int = 20) -> None:
    """The per-element table: are each element's highest CODs in its own windows?"""
    table = cod_window_contrast(cod, windows, n_top=n_top)
    print(f"\n{title}\n  (top_fraction: share of the {n_top} highest-COD pixels inside the element's windows; chance:"
          " share of all pixels inside; ratio: mean COD inside / outside)")
    print("  " + table.to_string(float_format=lambda v: f"{v:8.3g}").replace("\n", "\n  "))


def train_and_cod(spectra, labels, names, args, **overrides) -> SLAM:
    model, seconds = train(spectra, labels, names, args, **overrides)
    timed(f"trained SLAM ({seconds:.0f} s, {spectra.n_pixels} px x {len(spectra)} stars); rejected "
          f"{len(model.rejected_ids_)} outliers")
    if args.cod:
        model.compute_cod(spectra, dict(zip(names, labels.T)))
        timed("COD (leave-one-label-out retraining)")
    return model


def decorrelated_spectra(true_table, pixels: np.ndarray, snr: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mock H-band spectra of these stars with their [X/Fe] of ELEMENT_OF shuffled among them.

    Shuffling keeps each label's spread but makes it independent of every other label (and of
    the other elements, e.g. [O/Fe] of the OH lines, which follows [Mg/Fe] in the population).
    Returns (labels, flux with Gaussian noise at each star's S/N) on *pixels*.
    """
    values = {column: true_table[column].to_numpy(float) for column in true_table.columns}
    for label in ELEMENT_OF:
        values[label] = rng.permutation(values[label])
    flux = normalized_flux(values)[:, pixels].astype(np.float64)
    flux += rng.normal(size=flux.shape) / snr[:, None]
    return np.column_stack([values[name] for name in APOGEE_LABELS]), flux


def apogee_part(universe, args):
    names = APOGEE_LABELS
    spectra = universe.spectra("aspcap")
    labels = universe.labels(true=False, names=names).to_numpy(float)
    true_table = universe.labels(true=True)
    truth = true_table[names].to_numpy(float)
    snr = np.asarray(spectra.info.get("snr", spectra.snr), dtype=float)
    timed(f"read {len(spectra)} aspcapStar-like files")
    giants = (np.isfinite(labels).all(axis=1) & (labels[:, 0] > 3800) & (labels[:, 0] < 5500) & (labels[:, 1] < 3.8))
    spectra, labels, truth, snr = spectra[giants], labels[giants], truth[giants], snr[giants]
    true_table = true_table[giants]
    rng = np.random.default_rng(0)
    bright = np.flatnonzero(snr > args.apogee_min_snr)
    train_rows = np.sort(rng.choice(bright, bright.size * 3 // 4, replace=False))
    test_rows = np.setdiff1d(np.arange(len(spectra)), train_rows)
    windows = element_windows(spectra.wavelength)
    pixels = window_pixels(spectra[train_rows], windows, args.n_other_pixels, rng)
    windows = {label: mask[pixels] for label, mask in windows.items()}
    subset = spectra.replace(flux=spectra.flux[:, pixels], error=spectra.error[:, pixels],
                             mask=spectra.mask[:, pixels], wavelength=spectra.wavelength[pixels],
                             step=f"{pixels.size} pixels: Mg and Al windows and a random sample")
    print(f"APOGEE giants: {train_rows.size} training (S/N > {args.apogee_min_snr:g}), {test_rows.size} test; "
          f"{pixels.size} of {spectra.n_pixels} pixels (" + ", ".join(f"{ELEMENT_OF[k]} windows {int(m.sum())}"
                                                                     for k, m in windows.items()) + ")")
    print("\nWhat leave-one-label-out can attribute, in this training set (pipeline-like labels):")
    report_attribution_limit(names, labels[train_rows], truth[train_rows])
    model = train_and_cod(subset[train_rows], labels[train_rows], names, args)
    prediction = model.predict(subset[test_rows])
    timed(f"predicted {test_rows.size} APOGEE test spectra ({100 * prediction.flags['not_converged'].mean():.1f} % not "
          "converged)")
    report("APOGEE test giants vs pipeline-like labels", names, prediction.mean, labels[test_rows], snr[test_rows],
           prediction)
    report("APOGEE test giants vs TRUE labels", names, prediction.mean, truth[test_rows], snr[test_rows])
    if not args.cod:
        return
    print_cod(model.cod(), names)
    report_cod_windows("COD in the element windows: the mock population, pipeline-like labels", model.cod(), windows)
    print("\nThe same spectra and stars trained on their TRUE labels (no label noise to hide the [X/Fe] that the "
          "other labels do not predict):")
    report_attribution_limit(names, truth[train_rows], truth[train_rows])
    exact = train_and_cod(subset[train_rows], truth[train_rows], names, args)
    report_cod_windows("COD in the element windows: the mock population, true labels", exact.cod(), windows)
    if args.decorrelated:
        values, flux = decorrelated_spectra(true_table.iloc[train_rows], pixels, np.clip(snr[train_rows], 20, 300),
                                            rng)
        shuffled = Spectra(flux.astype(np.float32), subset.wavelength, error=(1.0 / np.clip(snr[train_rows], 20, 300)
                           )[:, None] * np.ones((1, pixels.size), np.float32), ids=subset.ids[train_rows])
        print("\nThe same stars with [Mg/Fe], [Al/Fe], [N/Fe] shuffled among them (mock physics, true labels):")
        report_attribution_limit(names, values, values)
        model = train_and_cod(shuffled, values, names, args, error_model_snr=())
        report_cod_windows("COD in the element windows: [X/Fe] independent of the other labels", model.cod(), windows)


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
    parser.add_argument("--n-other-pixels", type=int, default=150,
                        help="APOGEE pixels sampled outside the Mg and Al windows (all of those are used)")
    parser.add_argument("--apogee-min-snr", type=float, default=50.0,
                        help="3/4 of the giants above this S/N train the APOGEE model")
    parser.add_argument("--c-grid", type=float, nargs="+", default=[10.0])
    parser.add_argument("--gamma-grid", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--continuum-knots", type=float, default=100.0,
                        help="SLAM continuum_knots for the LAMOST model (Å, as the pseudo-continuum; 0: none)")
    parser.add_argument("--error-model-stars", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-cod", dest="cod", action="store_false")
    parser.add_argument("--no-apogee", dest="apogee", action="store_false")
    parser.add_argument("--no-decorrelated", dest="decorrelated", action="store_false",
                        help="skip the APOGEE COD check on spectra with [X/Fe] shuffled among the stars")
    parser.add_argument("--no-lamost", dest="lamost", action="store_false", help="skip LAMOST (and the real files)")
    parser.add_argument("--save-model", help="directory to save the LAMOST-trained model in")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_stars, args.n_lamost, args.n_apogee, args.n_train, args.step = 1500, 300, 200, 150, 8.0
        args.n_other_pixels, args.error_model_stars = 50, 50
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
