"""SLAM throughput: our vectorised SVR evaluation + batched Levenberg–Marquardt vs the reference way.

The reference implementation (astroslam) predicts a spectrum by calling one scikit-learn
``SVR.predict`` per pixel in a Python loop, inside ``scipy.optimize.least_squares``
(numerical Jacobian), one star at a time. Both ways are measured here in the same run,
on the same trained model (the reference gets the very same per-pixel SVRs, refitted
with scikit-learn from the chosen C and γ) and the same χ² initial guesses:

- training: seconds per pixel of the grid-search CV (C grid × γ grid × k folds + refit);
- model spectra per second: all pixels' SVRs (with the analytic Jacobian) vs a loop of
  ``SVR.predict`` over pixels for one star at a time;
- prediction: spectra per second of ``SLAM.predict`` (ours: the whole batch at once) and of
  the reference on a few stars (it is slow), their ratio, and the largest label difference.

Spectra are LAMOST-like (the mock universe's noiseless generator, 3900–5800 Å on a 1 Å
grid as in the SLAM paper, optionally binned), with Gaussian noise at the given SNR.

Usage::

    python benchmarks/bench_slam.py [--n-train 500] [--n-pixels 600] [--n-test 500] [--n-reference 4]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from labelexplorer import Spectra
from labelexplorer.mock.lamost_physics import lamost_wavelength, normalized_flux
from labelexplorer.models.slam import SLAM


def lamost_like(n: int, n_pixels: int, snr: float, seed: int):
    """Normalised LAMOST-like spectra of giants and dwarfs on ``n_pixels`` of a 3900-5800 Å 1 Å grid."""
    rng = np.random.default_rng(seed)
    labels = {"TEFF": rng.uniform(4000, 6500, n), "LOGG": rng.uniform(1.0, 4.8, n), "FE_H": rng.uniform(-1.5, 0.4, n)}
    grid = np.arange(3900.0, 5800.0, 1.0)
    grid = grid[np.linspace(0, grid.size - 1, min(n_pixels, grid.size)).astype(int)]
    native = normalized_flux(labels).astype(np.float64)
    flux = np.stack([np.interp(grid, lamost_wavelength(), row) for row in native])
    error = np.full(flux.shape, 1.0 / snr)
    return Spectra(flux + rng.normal(size=flux.shape) * error, grid, error=error), labels


def reference_estimators(model: SLAM, spectra: Spectra, labels: dict):
    """One scikit-learn SVR per pixel, as the reference keeps them (same data, C and γ as ours)."""
    from sklearn.svm import SVR

    x = (np.column_stack([labels[n] for n in model.label_names_]) - model.label_mean_) / model.label_scale_
    y = (spectra.flux - model.flux_mean_) / model.flux_scale_
    return [SVR(C=c, gamma=g, epsilon=model.epsilon).fit(x, y[:, j])
            for j, (c, g) in enumerate(zip(model.C_, model.gamma_))]


def reference_fit(model: SLAM, estimators, spectra: Spectra, start: np.ndarray) -> np.ndarray:
    """The reference: least_squares around a Python loop over per-pixel SVR.predict (2-point Jacobian)."""
    from scipy.optimize import least_squares

    weight = model._label_fitter().weights(spectra.error, ~spectra.mask)
    out = []
    for i in range(len(spectra)):
        def residual(theta, i=i):
            f = np.array([svr.predict(theta[None])[0] for svr in estimators])
            return weight[i] * (spectra.flux[i] - model.flux_mean_ - model.flux_scale_ * f)

        out.append(least_squares(residual, start[i], method="lm").x)
    return np.array(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-pixels", type=int, default=600)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-reference", type=int, default=4, help="stars fitted the reference way")
    parser.add_argument("--snr", type=float, default=60.0)
    parser.add_argument("--c-grid", type=float, nargs="+", default=[10.0])
    parser.add_argument("--gamma-grid", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)

    train, train_labels = lamost_like(args.n_train, args.n_pixels, 150.0, seed=0)
    test, test_labels = lamost_like(args.n_test, args.n_pixels, args.snr, seed=1)
    model = SLAM(c_grid=args.c_grid, gamma_grid=args.gamma_grid, n_folds=args.folds, n_jobs=args.n_jobs,
                 error_model_snr=(), outlier_sigma=None, progress=False)
    start = time.perf_counter()
    model.fit(train, train_labels)
    train_seconds = time.perf_counter() - start
    fits_per_pixel = len(args.c_grid) * len(args.gamma_grid) * args.folds + 1
    n_sv = np.diff(model.bank_.offsets)
    print(f"training: {args.n_train} stars x {train.n_pixels} px, {fits_per_pixel} SVR fits per pixel, "
          f"{args.n_jobs} jobs: {train_seconds:.1f} s = {1e3 * train_seconds / train.n_pixels:.1f} ms per pixel "
          f"(+ label CV of the training stars); support vectors per pixel: median {np.median(n_sv):.0f}")
    print(f"  at this size, 3,000 pixels would take {3000 * train_seconds / train.n_pixels / 60:.1f} min with "
          f"{args.n_jobs} jobs (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    model.predict(test[:2])  # builds the fast layout and the χ² templates once
    start = time.perf_counter()
    ours = model.predict(test)
    ours_seconds = time.perf_counter() - start
    ours_rate = len(test) / ours_seconds
    print(f"ours:      {len(test)} spectra in {ours_seconds:.2f} s = {ours_rate:.1f} spectra/s "
          f"(converged {100 * np.mean(~ours.flags['not_converged']):.0f} %)")

    estimators = reference_estimators(model, train, train_labels)
    theta = model.training_labels_[: min(200, len(model.training_labels_))]
    start = time.perf_counter()
    model.bank_.evaluate(theta, jacobian=True)
    bank_rate = len(theta) / (time.perf_counter() - start)
    start = time.perf_counter()
    for row in theta[:5]:
        [svr.predict(row[None]) for svr in estimators]
    loop_rate = 5 / (time.perf_counter() - start)
    print(f"model spectra: ours {bank_rate:.0f}/s with the Jacobian; per-pixel SVR.predict loop {loop_rate:.1f}/s "
          f"without it ({bank_rate / loop_rate:.0f}x)")
    subset = test[: args.n_reference]
    fitter = model._label_fitter()
    guess = fitter.initial_guess(np.nan_to_num(subset.flux.astype(float)), fitter.weights(subset.error, ~subset.mask))
    start = time.perf_counter()
    reference = reference_fit(model, estimators, subset, guess)
    reference_seconds = time.perf_counter() - start
    reference_rate = len(subset) / reference_seconds
    difference = np.abs(reference * model.label_scale_ + model.label_mean_ - ours.mean[: args.n_reference]).max(axis=0)
    print(f"reference: {len(subset)} spectra in {reference_seconds:.2f} s = {reference_rate:.2f} spectra/s "
          f"(per-pixel SVR.predict loop in least_squares)")
    print(f"speed-up:  {ours_rate / reference_rate:.0f}x; largest label difference ours vs reference: "
          + ", ".join(f"{n} {d:.3g}" for n, d in zip(model.label_names_, difference)))
    truth = np.column_stack([test_labels[n] for n in model.label_names_])
    scatter = np.std(ours.mean - truth, axis=0)
    print("test scatter at SNR {:.0f}: ".format(args.snr)
          + ", ".join(f"{n} {s:.3g}" for n, s in zip(model.label_names_, scatter)))


if __name__ == "__main__":
    main()
