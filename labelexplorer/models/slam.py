"""SLAM, the Stellar LAbel Machine (Zhang, Liu & Deng 2020, ApJS 246, 9), made fast.

SLAM is a *generative* data-driven model: every pixel ``j`` of the standardised
spectrum is an RBF-kernel support-vector regression ``f_j(θ)`` of the standardised
labels ``θ``; labels of a new spectrum are those that make the model spectrum match it.

Training (per pixel, in parallel over pixels with joblib, with a progress bar)
    Labels and fluxes are standardised (zero mean, unit variance; flux per pixel over the
    stars where that pixel is good). For every (C, γ) of the grid (ε fixed, 0.05 in the
    paper), a k-fold cross-validation gives the CV MSE; the pair with the lowest CV MSE
    is refitted on all stars. Bad pixels (masked, or inverse variance 0) are left out of
    that pixel's fit only. The CV MSE (times the pixel's variance) is the pixel's model
    variance σ²_model,j. Only stars with *every* label known are used: SLAM's SVRs need
    a complete label vector (stars with a missing label are dropped, with a warning).
Outlier rejection (paper §4.2)
    Training stars whose cross-validated labels deviate by more than ``outlier_sigma``
    times the standard deviation of the residuals in any label are removed and the model refitted,
    keeping each pixel's (C, γ). The cross-validated labels come for free: the k fold
    models of the chosen (C, γ) of every pixel form k whole-spectrum models, each of
    which never saw its fold — so this is leave-1/k-out (the paper used leave-1/10-out;
    set ``n_folds=10`` to match it).
Prediction
    Our own vectorised evaluation of all pixels' SVRs with an analytic Jacobian
    (:class:`~labelexplorer.models.svr_kernel.SVRBank`), a χ² template match against
    the training stars (their labels, with the model's noise-free spectra, for all
    observed spectra in one matrix product) as the initial guess, then a batched
    Levenberg–Marquardt fit of many stars at once minimising
    ``Σ_j (f_obs,j − f_j(θ))² / (σ²_obs,j + σ²_model,j)`` with bad pixels at zero weight,
    inside a box of the training label range (±10 %). With ``continuum_knots`` a smooth
    multiplicative continuum correction is fitted in turn with the labels (for spectra divided
    by a pseudo-continuum, whose shape depends on their noise). The covariance ``(JᵀWJ)⁻¹`` gives
    ``model_std`` (the paper's "SLAM error"); ``predictive_std`` is the empirical error
    law ``σ(SNR) = a·exp(−b·SNR) + c`` per label, fitted at training time to the
    cross-validated scatter of training spectra degraded to a few SNRs (SNR = median
    |flux|/error over good pixels; without errors, the CV scatter at the training SNR).
    Flags: ``not_converged`` (iteration limit), ``outside_training_set`` (label distance
    D to the nearest training star, in units of the training label scatter, above a
    threshold — by default twice the 99th percentile of the training stars' own
    nearest-neighbour distances — or a label stuck on the box).
COD (paper §6)
    ``compute_cod(spectra, labels)`` retrains without each label in turn (checkpointed
    like training) and ``cod()`` returns :class:`~labelexplorer.analysis.cod.CODSpectra`.

Interruptible training: with ``checkpoint_dir`` every finished chunk of pixels is written
there atomically (``.npz``); running ``fit`` again with the same data, hyperparameters
and directory resumes where it stopped. A saved model holds support vectors, dual
coefficients, intercepts and γ per pixel (packed: concatenated with offsets) and the
scalers in ``weights.npz`` — no pickled estimator anywhere.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..exceptions import LabelError, LabelExplorerError, ModelFileError, ShapeError, SpectrumError
from ..prediction import LabelPrediction
from ..spectra import Spectra
from .base import LabelModel, dataset_hash, load_npz, register_model, save_npz
from .svr_kernel import SVRBank

__all__ = ["SLAM", "LabelFitter", "FitResult", "continuum_basis", "cod_window_contrast"]

_BOX_MARGIN = 0.1  # fraction of the training label range the fit may leave the training box by
_MAX_TEMPLATES = 2000  # training stars used as χ² templates for the initial guess
_FIT_BYTES = 64 * 2**20  # working memory of one batch of stars in the label fit
_CHECKPOINT_FORMAT = 1
_BANK_ARRAYS = ("support_vectors", "dual_coef", "offsets", "gamma", "intercept")  # SVRBank.packed()
_CONTINUUM_ITERATIONS = 20  # at most; on the LAMOST mocks the labels settle (to < 1 K) after ~8
_CONTINUUM_XTOL = 1e-3  # label change (standardised) below which a star's continuum iterations stop


# ====================================================================== training of one pixel
def _segments(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``values[start:start + count]`` for every (start, count), vectorised."""
    total = int(counts.sum())
    if total == 0:
        return values[:0]
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return values[np.repeat(starts, counts) + within]


def _fit_pixel(x, y, good, folds, settings, fixed=None) -> dict:
    """Grid-search k-fold CV of one pixel's SVR, refit on all its good stars.

    Returns the chosen (C, γ), CV MSE and MD, the grid's CV MSEs, the final model
    (support-vector indices into the training stars, dual coefficients, intercept) and,
    when asked, the k fold models of the chosen (C, γ).
    """
    from sklearn.svm import SVR

    n_folds, epsilon = settings["n_folds"], settings["epsilon"]
    grid = [(c, g) for c in settings["c_grid"] for g in settings["gamma_grid"]] if fixed is None else [fixed]
    rows = np.flatnonzero(good)
    out = {"n_good": rows.size, "grid_mse": np.full(len(settings["c_grid"]) * len(settings["gamma_grid"]), np.nan)}
    if rows.size < settings["min_stars"]:
        return out  # a dead pixel: too few good stars to learn anything
    xs, ys, fs = x[rows], y[rows], folds[rows]
    best = None
    for position, (c, gamma) in enumerate(grid):
        predicted = np.empty(rows.size)
        fold_models = []
        for fold in range(n_folds):
            test = fs == fold
            if not test.any() or test.all():
                fold_models.append(None)  # nothing held out (or nothing left): the final model stands in
                if test.all():
                    predicted[test] = 0.0
                continue
            svr = SVR(kernel="rbf", C=c, gamma=gamma, epsilon=epsilon).fit(xs[~test], ys[~test])
            predicted[test] = svr.predict(xs[test])
            fold_models.append((rows[~test][svr.support_], svr.dual_coef_.ravel(), float(svr.intercept_[0])))
        mse = float(np.mean((predicted - ys) ** 2))
        if fixed is None:
            out["grid_mse"][position] = mse
        if best is None or mse < best[2]:
            best = (c, gamma, mse, float(np.mean(predicted - ys)), fold_models)
    c, gamma, out["cv_mse"], out["cv_md"], fold_models = best
    out["C"], out["gamma"] = c, gamma
    if settings["refit"]:
        svr = SVR(kernel="rbf", C=c, gamma=gamma, epsilon=epsilon).fit(xs, ys)
        final = (rows[svr.support_], svr.dual_coef_.ravel(), float(svr.intercept_[0]))
        out["final"] = final
        if settings["keep_folds"]:
            out["folds"] = [model if model is not None else final for model in fold_models]
    return out


def _fit_chunk(pixels, x, y, good, folds, settings, fixed_c=None, fixed_gamma=None) -> dict:
    """Fit the pixels of one chunk (columns of *y*/*good*) and pack the results into arrays."""
    results = [_fit_pixel(x, y[:, i], good[:, i], folds, settings,
                          None if fixed_c is None else (float(fixed_c[i]), float(fixed_gamma[i])))
               for i in range(len(pixels))]
    return _pack(np.asarray(pixels), results, settings)


def _pack(pixels: np.ndarray, results: list[dict], settings: dict) -> dict:
    """Per-pixel results -> flat arrays (variable-length parts concatenated with counts)."""
    k = settings["n_folds"]
    empty = (np.zeros(0, np.int32), np.zeros(0), 0.0)
    no_index = [np.zeros(0, np.int32)]  # keeps concatenate happy (and int32) when a chunk has no support vector
    finals = [r.get("final", empty) for r in results]
    fold_models = [model for r in results for model in r.get("folds", [empty] * k)]
    dead_gamma = float(settings["gamma_grid"][0])
    packed = {
        "pixels": pixels.astype(np.int64),
        "n_good": np.array([r["n_good"] for r in results], np.int64),
        "C": np.array([r.get("C", np.nan) for r in results], float),
        "gamma": np.array([r.get("gamma", dead_gamma) for r in results], float),
        "cv_mse": np.array([r.get("cv_mse", 1.0) for r in results], float),
        "cv_md": np.array([r.get("cv_md", 0.0) for r in results], float),
        "alive": np.array(["cv_mse" in r for r in results], bool),
        "grid_mse": np.array([r["grid_mse"] for r in results], float).reshape(len(results), -1),
        "intercept": np.array([f[2] for f in finals], float),
        "sv_count": np.array([len(f[0]) for f in finals], np.int64),
        "sv_index": np.concatenate([np.asarray(f[0], np.int32) for f in finals] + no_index),
        "dual": np.concatenate([np.asarray(f[1], float) for f in finals] + [np.zeros(0)]),
    }
    if settings["keep_folds"]:
        packed.update({
            "fold_intercept": np.array([f[2] for f in fold_models], float).reshape(len(results), k),
            "fold_count": np.array([len(f[0]) for f in fold_models], np.int64).reshape(len(results), k),
            "fold_sv_index": np.concatenate([np.asarray(f[0], np.int32) for f in fold_models] + no_index),
            "fold_dual": np.concatenate([np.asarray(f[1], float) for f in fold_models] + [np.zeros(0)]),
        })
    return packed


def _assemble(chunks: list[dict], n_pixels: int) -> dict:
    """Chunks (any order) -> per-pixel arrays in pixel order, with offsets for the packed parts."""
    pixels = np.concatenate([c["pixels"] for c in chunks])
    if not np.array_equal(np.sort(pixels), np.arange(n_pixels)):
        raise LabelExplorerError(f"SLAM training: results cover {np.unique(pixels).size} of {n_pixels} pixels")
    order = np.argsort(pixels)
    out = {}
    for key in ("n_good", "C", "gamma", "cv_mse", "cv_md", "alive", "grid_mse", "intercept", "sv_count"):
        out[key] = np.concatenate([c[key] for c in chunks])[order]
    out["sv_index"], out["dual"] = _reorder_packed(chunks, order, "sv_count", ("sv_index", "dual"))
    out["sv_offsets"] = np.r_[0, np.cumsum(out["sv_count"])]
    if "fold_count" in chunks[0]:
        out["fold_intercept"] = np.concatenate([c["fold_intercept"] for c in chunks])[order]
        out["fold_count"] = np.concatenate([c["fold_count"] for c in chunks])[order]
        flat_counts = [c["fold_count"].reshape(-1) for c in chunks]
        k = chunks[0]["fold_count"].shape[1]
        flat_order = (order[:, None] * k + np.arange(k)).reshape(-1)
        out["fold_sv_index"], out["fold_dual"] = _reorder_packed(
            [{"count": fc, "a": c["fold_sv_index"], "b": c["fold_dual"]} for fc, c in zip(flat_counts, chunks)],
            flat_order, "count", ("a", "b"))
        out["fold_offsets"] = np.r_[0, np.cumsum(out["fold_count"].reshape(-1))]
    return out


def _reorder_packed(chunks, order, count_key, value_keys):
    counts = np.concatenate([c[count_key] for c in chunks])
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    values = [np.concatenate([c[key] for c in chunks]) for key in value_keys]
    return tuple(_segments(v, starts[order], counts[order]) for v in values)


# ====================================================================== checkpoints
class _Checkpoint:
    """One training stage's finished chunks under ``checkpoint_dir/<stage>/`` (or in memory only)."""

    def __init__(self, root, stage: str, key: str):
        self.folder = None if root is None else Path(root) / stage
        self.key = key
        if self.folder is None:
            return
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            try:
                stored = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                raise ModelFileError(f"{manifest}: unreadable checkpoint manifest ({exc})") from exc
            if stored.get("key") != key or stored.get("format") != _CHECKPOINT_FORMAT:
                raise LabelExplorerError(
                    f"checkpoint_dir {root}: stage {stage!r} holds a checkpoint of different data or "
                    f"hyperparameters; use another checkpoint_dir or delete {self.folder}")
        else:
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps({"key": key, "format": _CHECKPOINT_FORMAT, "stage": stage}))

    def finished(self) -> list[dict]:
        if self.folder is None:
            return []
        return [load_npz(path) for path in sorted(self.folder.glob("chunk_*.npz"))]

    def write(self, chunk: dict) -> None:
        if self.folder is None:
            return
        with atomic_path(self.folder / f"chunk_{int(chunk['pixels'][0]):07d}.npz") as tmp:
            with open(tmp, "wb") as handle:
                save_npz(handle, chunk)


# ====================================================================== the label fit
def _snr(flux: np.ndarray, error: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Median |flux| / error over good pixels (NaN without errors)."""
    with np.errstate(all="ignore"):
        ratio = np.where(good & np.isfinite(error) & (error > 0), np.abs(flux) / error, np.nan)
        return np.nanmedian(np.where(np.isfinite(ratio), ratio, np.nan), axis=1) if ratio.size else ratio


class LabelFitter:
    """Fit labels to spectra with one whole-spectrum SVR model (batched Levenberg–Marquardt).

    Parameters
    ----------
    bank : SVRBank
        The per-pixel SVRs (standardised labels -> standardised flux).
    flux_mean, flux_scale : ndarray (n_pixels,)
        Flux standardisation: flux = mean + scale * f.
    model_variance : ndarray (n_pixels,)
        σ²_model,j in flux units; ``inf`` gives a pixel zero weight.
    lower, upper : ndarray (n_labels,)
        Box (standardised labels) the fit stays in.
    templates : ndarray (n_templates, n_labels)
        Standardised labels whose model spectra serve as χ² templates for the initial guess.
    max_iter : int
        Levenberg–Marquardt iterations before a star is declared not converged.
    xtol, ftol, chi2_tol : float
        Convergence: a step below ``xtol`` (standardised labels), or a χ² decrease below
        ``ftol`` relative or ``chi2_tol`` absolute. The absolute test stops the slow crawl
        along the curved valleys of low-SNR spectra once the labels move by a negligible
        fraction of their formal error (Δχ² = 1e-4 is a 0.01σ move).
    continuum_basis : ndarray (n_pixels, n_basis), optional
        Smooth functions (a B-spline basis: see :func:`continuum_basis`) in which a
        multiplicative correction of the observed spectrum is fitted with the labels: after
        each label fit, the ratio observed / model spectrum is fitted (weighted least squares
        in this basis), the spectrum is divided by it and the labels are refitted, until the
        labels stop moving.
        This takes out the difference between the pseudo-continuum of a noisy spectrum and
        that of the high-SNR training spectra, which otherwise biases the labels at low SNR.

    Examples
    --------
    >>> from sklearn.svm import SVR
    >>> x = np.linspace(-2, 2, 30)[:, None]
    >>> bank = SVRBank.from_estimators([SVR(gamma=0.5, epsilon=0.01).fit(x, np.tanh(a * x[:, 0])) for a in (1, 2)])
    >>> fitter = LabelFitter(bank, np.zeros(2), np.ones(2), np.zeros(2), [-2.0], [2.0], x)
    >>> truth = bank.evaluate([[0.3]])
    >>> result = fitter.fit(truth, np.full((1, 2), 1e-3), np.ones((1, 2), bool))
    >>> round(float(result.theta[0, 0]), 3), bool(result.converged[0])
    (0.3, True)
    """

    def __init__(self, bank: SVRBank, flux_mean, flux_scale, model_variance, lower, upper, templates,
                 *, max_iter: int = 100, xtol: float = 1e-7, ftol: float = 1e-10, chi2_tol: float = 1e-4,
                 continuum_basis=None):
        self.bank = bank
        self.flux_mean = np.asarray(flux_mean, dtype=np.float64)
        self.flux_scale = np.asarray(flux_scale, dtype=np.float64)
        self.model_variance = np.asarray(model_variance, dtype=np.float64)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.template_theta = np.atleast_2d(np.asarray(templates, dtype=np.float64))
        self.max_iter, self.xtol, self.ftol, self.chi2_tol = int(max_iter), float(xtol), float(ftol), float(chi2_tol)
        self.continuum_basis = None if continuum_basis is None else np.asarray(continuum_basis, dtype=np.float64)
        self._template_flux = None

    # ------------------------------------------------------------------ pieces
    def model_flux(self, theta) -> np.ndarray:
        """Model spectra (flux units) at standardised labels *theta* (n, n_labels)."""
        return self.flux_mean + self.flux_scale * self.bank.evaluate(theta)

    def weights(self, error, good) -> np.ndarray:
        """``1 / sqrt(σ²_obs + σ²_model)`` per pixel; 0 where bad (or the model pixel is dead)."""
        error = np.asarray(error, dtype=np.float64)
        observed = np.where(np.isfinite(error), error, 0.0) ** 2  # unknown errors: model variance alone
        total = observed + self.model_variance
        with np.errstate(divide="ignore"):
            weight = np.where(good & np.isfinite(total) & (total > 0), 1.0 / np.sqrt(total), 0.0)
        return weight

    def initial_guess(self, flux: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """The template (training star) with the smallest χ², for every spectrum at once."""
        if self._template_flux is None:
            self._template_flux = self.model_flux(self.template_theta)
        templates = self._template_flux
        w2 = weight**2
        wf = w2 * flux
        chi2 = (np.sum(wf * flux, axis=1)[:, None] - 2.0 * wf @ templates.T + w2 @ (templates**2).T)
        return self.template_theta[np.argmin(chi2, axis=1)].copy()

    def _residuals(self, flux, weight, theta, jacobian: bool):
        f, jac = self.bank.evaluate_lp(theta, jacobian=jacobian)
        residual = weight * (flux - self.flux_mean - self.flux_scale * f)
        if jacobian:
            jac *= (weight * self.flux_scale)[:, None, :]  # d model / d theta, weighted
        return residual, jac

    # ------------------------------------------------------------------ the fit
    def continuum_ratio(self, flux, result: "FitResult") -> np.ndarray:
        """Smooth fit (in ``continuum_basis``) of observed / model flux at the fitted labels, per spectrum.

        Weighted least squares with the weights of the ratio (the label fit's weights times
        the model flux), pulled weakly towards 1 so that basis functions without good pixels
        stay at "no correction" (B-splines sum to one).
        """
        basis = self.continuum_basis
        model = self.model_flux(result.theta)
        weight = (result.weight * model) ** 2
        ratio = np.where(weight > 0, np.asarray(flux, dtype=np.float64) / np.where(model != 0, model, 1.0), 0.0)
        rows = max(1, _FIT_BYTES // (8 * basis.size))  # spectra per block of the (n, p, n_basis) intermediate
        normal = np.concatenate([np.einsum("np,pa,pb->nab", weight[start:start + rows], basis, basis, optimize=True)
                                 for start in range(0, weight.shape[0], rows)])
        ridge = 1e-6 * np.trace(normal, axis1=1, axis2=2)[:, None] / basis.shape[1] + 1e-300
        normal[:, np.arange(basis.shape[1]), np.arange(basis.shape[1])] += ridge
        rhs = (weight * ratio) @ basis + ridge
        coefficients = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
        return coefficients @ basis.T

    def fit(self, flux, error, good, theta0=None) -> "FitResult":
        """Fit every spectrum (rows of *flux*, *error*, *good*); returns a :class:`FitResult`."""
        flux = np.asarray(flux, dtype=np.float64)
        error = np.asarray(error, dtype=np.float64)
        good = np.asarray(good, dtype=bool)
        result = self._fit_spectra(flux, error, good, theta0)
        if self.continuum_basis is None:
            return result
        # labels and continuum in turn (each step lowers χ²) until the labels stop moving
        active = np.arange(flux.shape[0])
        for _ in range(_CONTINUUM_ITERATIONS):
            # a spectrum is never rescaled by more than a factor of 2 (a bad fit must not run away)
            correction = np.clip(self.continuum_ratio(flux[active], result.take(active)), 0.5, 2.0)
            update = self._fit_spectra(flux[active] / correction, error[active] / correction, good[active],
                                       result.theta[active])
            moved = np.max(np.abs(update.theta - result.theta[active]), axis=1) > _CONTINUUM_XTOL
            result.put(active, update)
            active = active[moved]
            if active.size == 0:
                break
        return result

    def _fit_spectra(self, flux, error, good, theta0) -> "FitResult":
        weight = self.weights(error, good)
        flux = np.where(weight > 0, flux, 0.0)
        n = flux.shape[0]
        batch = max(1, _FIT_BYTES // (8 * self.bank.n_pixels * (self.bank.n_labels + 3)))
        parts = []
        for start in range(0, n, batch):
            rows = slice(start, start + batch)
            guess = self.initial_guess(flux[rows], weight[rows]) if theta0 is None else np.atleast_2d(theta0)[rows]
            parts.append(self._levenberg_marquardt(flux[rows], weight[rows], guess))
        return FitResult.concatenate(parts, weight)

    def _levenberg_marquardt(self, flux, weight, theta) -> "FitResult":
        n, n_labels = theta.shape
        theta = np.clip(theta, self.lower, self.upper)
        residual, jac = self._residuals(flux, weight, theta, True)
        cost = np.einsum("np,np->n", residual, residual)
        damping = np.full(n, 1e-3)
        converged = np.zeros(n, bool)
        iterations = np.zeros(n, np.int64)
        active = np.arange(n)
        eye = np.eye(n_labels)
        for _ in range(self.max_iter):
            if active.size == 0:
                break
            a = active
            hessian = jac[a] @ np.swapaxes(jac[a], 1, 2)  # (n_a, L, L)
            gradient = np.einsum("nlp,np->nl", jac[a], residual[a])
            diagonal = np.einsum("nll->nl", hessian)
            floor = 1e-12 * np.maximum(diagonal.max(axis=1, keepdims=True), 1e-300)
            system = hessian + (damping[a, None] * np.maximum(diagonal, floor))[:, :, None] * eye
            step = np.linalg.solve(system, gradient[:, :, None])[:, :, 0]
            # labels on the box that the step pushes outwards are held fixed (projected step)
            blocked = ((theta[a] <= self.lower) & (step < 0)) | ((theta[a] >= self.upper) & (step > 0))
            if blocked.any():
                free = (~blocked).astype(float)
                system = system * free[:, :, None] * free[:, None, :] + blocked[:, :, None] * eye
                step = np.linalg.solve(system, (gradient * free)[:, :, None])[:, :, 0]
            trial = np.clip(theta[a] + step, self.lower, self.upper)
            taken = trial - theta[a]
            trial_residual, _ = self._residuals(flux[a], weight[a], trial, False)
            trial_cost = np.einsum("np,np->n", trial_residual, trial_residual)
            better = trial_cost < cost[a]
            gain = cost[a] - trial_cost
            iterations[a] += 1
            done = (np.max(np.abs(taken), axis=1) <= self.xtol * (self.xtol + np.max(np.abs(theta[a]), axis=1)))
            done |= better & (gain <= np.maximum(self.ftol * cost[a], self.chi2_tol))
            accepted = a[better]
            if accepted.size:
                theta[accepted] = trial[better]
                cost[accepted] = trial_cost[better]
                residual[accepted], jac[accepted] = self._residuals(flux[accepted], weight[accepted],
                                                                    theta[accepted], True)
            damping[a] = np.where(better, np.maximum(damping[a] / 10.0, 1e-12), damping[a] * 10.0)
            converged[a[done]] = True
            active = a[~done]
        hessian = jac @ np.swapaxes(jac, 1, 2)
        at_bound = np.any((theta <= self.lower + 1e-9) | (theta >= self.upper - 1e-9), axis=1)
        return FitResult(theta, hessian, converged, iterations, cost, at_bound, weight)


@dataclass
class FitResult:
    """Labels fitted by :class:`LabelFitter` (standardised), with what their errors need."""

    theta: np.ndarray  # (n, L)
    hessian: np.ndarray  # (n, L, L): JᵀWJ at the solution
    converged: np.ndarray  # (n,)
    iterations: np.ndarray  # (n,)
    chi2: np.ndarray  # (n,)
    at_bound: np.ndarray  # (n,)
    weight: np.ndarray  # (n, p)

    @property
    def covariance(self) -> np.ndarray:
        """``(JᵀWJ)⁻¹`` (pseudo-inverse: a label the spectrum says nothing about gets a huge error)."""
        return np.linalg.pinv(self.hessian)

    _FIELDS = ("theta", "hessian", "converged", "iterations", "chi2", "at_bound", "weight")

    def take(self, rows: np.ndarray) -> "FitResult":
        """The results of spectra *rows* only."""
        return FitResult(*(getattr(self, name)[rows] for name in self._FIELDS))

    def put(self, rows: np.ndarray, other: "FitResult") -> None:
        """Overwrite the results of spectra *rows* with *other* (in place)."""
        for name in self._FIELDS:
            getattr(self, name)[rows] = getattr(other, name)

    @classmethod
    def concatenate(cls, parts: list["FitResult"], weight: np.ndarray) -> "FitResult":
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("theta", "hessian", "converged", "iterations", "chi2", "at_bound")), weight)


# ====================================================================== the model
@dataclass
class _TrainingSet:
    """Standardised training data of one stage."""

    rows: np.ndarray  # positions in the Spectra given to fit
    x: np.ndarray  # (m, L) standardised labels
    y: np.ndarray  # (m, p) standardised flux (0 where bad)
    good: np.ndarray  # (m, p)
    folds: np.ndarray  # (m,)
    flux_mean: np.ndarray
    flux_scale: np.ndarray


@register_model("slam")
class SLAM(LabelModel):
    """The Stellar LAbel Machine: per-pixel RBF SVRs, labels by maximum likelihood.

    Parameters
    ----------
    c_grid, gamma_grid : sequence of float
        Penalty C and RBF width γ tried for every pixel (standardised labels). The paper
        used C = 10^[0, 0.5, 1, 1.5, 2] and γ = 10^[-3, -2.5, -2, -1.5, -1] (§4.2).
    epsilon : float
        SVR tube radius in standardised flux (fixed; 0.05 in the paper).
    n_folds : int
        Folds of the per-pixel cross-validation (also the leave-1/k-out of outlier rejection).
    outlier_sigma : float or None
        Reject training stars whose CV labels deviate by more than this many standard
        deviations of the CV residuals in any label, then refit (None: no rejection).
    error_model_snr : sequence of float
        SNRs to which training spectra are degraded to fit σ(SNR) = a·exp(−b·SNR) + c
        (empty: predictive_std is the CV scatter at the training SNR).
    error_model_stars : int
        Training stars (at most) used per SNR of the error model.
    max_iter : int
        Levenberg–Marquardt iterations before a star is flagged ``not_converged``.
    continuum_knots : float or None
        Å between the knots of a smooth multiplicative continuum correction fitted together
        with the labels (see :class:`LabelFitter`). For spectra divided by a pseudo-continuum
        use its knot spacing (100 Å for LAMOST): the pseudo-continuum of a noisy spectrum
        differs from that of the high-SNR training spectra (it follows the noise), which
        biased Teff by −50 to −100 K at S/N 40–100 on the LAMOST mocks. None: no correction
        (spectra normalised by a true continuum, such as aspcapStar).
    label_distance_threshold : float or None
        Flag ``outside_training_set`` above this label distance D (nearest training star,
        in units of the training label scatter); None: automatic (see module docstring).
    n_jobs : int
        Parallel workers of the training (joblib; -1: all cores).
    chunk_size : int
        Pixels per parallel task and per checkpoint file.
    checkpoint_dir : str or Path, optional
        Where finished chunks of pixels are written, to resume an interrupted training.
    progress : bool
        Show a progress bar while training.
    random_state : int
        Seed of the fold assignment and of the error-model subsets.

    Examples
    --------
    >>> import numpy as np
    >>> from labelexplorer import Spectra
    >>> rng = np.random.default_rng(0)
    >>> teff = rng.uniform(4000, 6000, 40)
    >>> wl = np.linspace(5000, 5100, 12)
    >>> flux = 1 - 0.3 * np.exp(-((teff[:, None] - 5000) / 800) ** 2) * np.sin(np.arange(12)) ** 2
    >>> spec = Spectra(flux + rng.normal(0, 0.002, flux.shape), wl, error=np.full(flux.shape, 0.002))
    >>> model = SLAM(c_grid=[10.0], gamma_grid=[0.5], n_folds=3, n_jobs=1, progress=False,
    ...              error_model_snr=()).fit(spec, {"TEFF": teff})
    >>> pred = model.predict(spec)
    >>> bool(np.median(np.abs(pred["TEFF"].mean - teff)) < 100)
    True
    >>> model.model_spectra(np.array([[5000.0]])).shape  # the forward model
    (1, 12)
    >>> cod = model.compute_cod(spec, {"TEFF": teff})  # coefficients of dependence
    >>> cod.label_names, bool(cod.full.max() > 0.9)
    (['TEFF'], True)
    """

    quick_hyperparameters = {"c_grid": (10.0,), "gamma_grid": (0.3,), "n_folds": 3, "n_jobs": 1,
                             "progress": False, "error_model_snr": (20.0,), "error_model_stars": 30}

    def __init__(self, c_grid=(1.0, 10.0, 100.0), gamma_grid=(0.01, 0.1, 1.0), epsilon: float = 0.05,
                 n_folds: int = 5, outlier_sigma: float | None = 4.0, error_model_snr=(10.0, 20.0, 40.0, 80.0),
                 error_model_stars: int = 300, max_iter: int = 100, continuum_knots: float | None = None,
                 label_distance_threshold: float | None = None,
                 n_jobs: int = -1, chunk_size: int = 16, checkpoint_dir=None, progress: bool = True,
                 random_state: int = 0):
        self.c_grid = c_grid
        self.gamma_grid = gamma_grid
        self.epsilon = epsilon
        self.n_folds = n_folds
        self.outlier_sigma = outlier_sigma
        self.error_model_snr = error_model_snr
        self.error_model_stars = error_model_stars
        self.max_iter = max_iter
        self.continuum_knots = continuum_knots
        self.label_distance_threshold = label_distance_threshold
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.random_state = random_state

    # ------------------------------------------------------------------ checks
    def _check_hyperparameters(self) -> None:
        grids = {"c_grid": self.c_grid, "gamma_grid": self.gamma_grid}
        for name, grid in grids.items():
            values = np.atleast_1d(np.asarray(grid, dtype=float))
            if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
                raise ShapeError(f"{name}: expected a non-empty list of positive numbers, got {grid!r}")
        if int(self.n_folds) < 2:
            raise ShapeError(f"n_folds: expected at least 2, got {self.n_folds!r}")
        if not self.epsilon >= 0:
            raise ShapeError(f"epsilon: expected >= 0, got {self.epsilon!r}")
        if int(self.chunk_size) < 1:
            raise ShapeError(f"chunk_size: expected >= 1, got {self.chunk_size!r}")
        if self.continuum_knots is not None and not (np.isfinite(self.continuum_knots) and self.continuum_knots > 0):
            raise ShapeError(f"continuum_knots: expected None or a positive number of Å, got {self.continuum_knots!r}")

    def _check_spectra(self, spectra, action: str) -> Spectra:
        if not isinstance(spectra, Spectra):
            raise ShapeError(f"spectra: SLAM.{action} expects a labelexplorer.Spectra, got {type(spectra).__name__}")
        if not spectra.shared_grid:
            raise ShapeError("spectra: SLAM needs one wavelength grid shared by every spectrum; resample first "
                             "(labelexplorer.preprocess.resample.resample(spectra, grid))")
        if action == "fit":
            return spectra
        expected = self.wavelength_.size
        if spectra.n_pixels != expected:
            raise ShapeError(f"spectra: expected {expected} pixels (the SLAM training grid, "
                             f"{self.wavelength_[0]:.1f}-{self.wavelength_[-1]:.1f} Å), got {spectra.n_pixels}")
        tolerance = 0.1 * np.min(np.diff(self.wavelength_)) if expected > 1 else 1e-6
        if np.max(np.abs(spectra.wavelength - self.wavelength_)) > tolerance:
            raise ShapeError("spectra: wavelength grid differs from the SLAM training grid; resample onto "
                             "model.wavelength_ first (labelexplorer.preprocess.resample.resample)")
        return spectra

    def _settings(self, refit=True, keep_folds=True) -> dict:
        return {"c_grid": [float(c) for c in np.atleast_1d(self.c_grid)],
                "gamma_grid": [float(g) for g in np.atleast_1d(self.gamma_grid)],
                "epsilon": float(self.epsilon), "n_folds": int(self.n_folds),
                "min_stars": max(2 * int(self.n_folds), 5), "refit": refit, "keep_folds": keep_folds}

    # ------------------------------------------------------------------ training
    def _fit(self, spectra, values, names, errors):
        self._check_hyperparameters()
        spectra = self._check_spectra(spectra, "fit")
        complete = np.isfinite(values).all(axis=1)
        if not complete.all():
            warnings.warn(f"SLAM trains only on stars with every label known: {int((~complete).sum())} of "
                          f"{complete.size} stars have a missing value in {names} and are left out", UserWarning,
                          stacklevel=3)
        settings = self._settings()
        if complete.sum() < settings["min_stars"]:
            raise LabelError(f"labels: SLAM needs at least {settings['min_stars']} stars with every label known "
                             f"({names}); got {int(complete.sum())}")
        self.training_hash_ = dataset_hash(spectra.flux, values)
        self.wavelength_ = np.asarray(spectra.wavelength, dtype=np.float64)
        rows = np.flatnonzero(complete)
        self.n_missing_dropped_ = int((~complete).sum())

        first = self._training_set(spectra, values, rows)
        results = self._run_stage("train", first, settings)
        self._adopt(first, results)
        cv_theta = self._cross_validated(spectra, first, results)
        self.rejected_ids_ = []
        if self.outlier_sigma is not None:
            outliers = self._outliers(cv_theta, first.x)
            if outliers.any():
                self.rejected_ids_ = spectra.ids[first.rows[outliers]].tolist()
                second = self._training_set(spectra, values, first.rows[~outliers])
                searched = results["grid_mse"]
                results = self._run_stage("refit", second, settings, fixed=(results["C"], results["gamma"]))
                self._adopt(second, results)
                self.grid_mse_ = searched  # the refit keeps each pixel's (C, γ): the search is the first stage's
                cv_theta = self._cross_validated(spectra, second, results)
                first = second
        self._fit_error_model(spectra, first, results, cv_theta)
        self._set_label_distance_threshold()
        self.lolo_cv_mse_ = np.full((len(names), self.wavelength_.size), np.nan)

    def _training_set(self, spectra: Spectra, values: np.ndarray, rows: np.ndarray) -> _TrainingSet:
        labels = values[rows]
        self.label_mean_ = labels.mean(axis=0)
        scale = labels.std(axis=0)
        self.label_scale_ = np.where(scale > 0, scale, 1.0)
        good = ~spectra.mask[rows]
        if spectra.has_errors:
            good &= spectra.ivar[rows] > 0
        flux = np.where(good, spectra.flux[rows], np.nan).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pixels bad in every star: NaN, made dead below
            mean = np.nan_to_num(np.nanmean(flux, axis=0), nan=1.0)
            scale = np.nan_to_num(np.nanstd(flux, axis=0), nan=0.0)
        scale = np.where(scale > 0, scale, 1.0)
        y = np.where(good, (flux - mean) / scale, 0.0)
        folds = np.random.default_rng(self.random_state).permutation(rows.size) % int(self.n_folds)
        return _TrainingSet(rows, (labels - self.label_mean_) / self.label_scale_, y, good, folds, mean, scale)

    def _run_stage(self, stage: str, data: _TrainingSet, settings: dict, fixed=None) -> dict:
        """Train every pixel of one stage in parallel chunks, resuming from the checkpoint."""
        from joblib import Parallel, delayed
        from tqdm.auto import tqdm

        n_pixels = data.y.shape[1]
        key_arrays = [data.x, data.y, data.good, data.folds] + ([] if fixed is None else list(fixed))
        key = dataset_hash(*key_arrays, np.frombuffer(json.dumps(settings, sort_keys=True).encode(), np.uint8))
        checkpoint = _Checkpoint(self.checkpoint_dir, stage, key)
        chunks = checkpoint.finished()
        done = np.zeros(n_pixels, bool)
        for chunk in chunks:
            done[chunk["pixels"]] = True
        size = int(self.chunk_size)
        todo = [np.arange(s, min(s + size, n_pixels)) for s in range(0, n_pixels, size)
                if not done[s:min(s + size, n_pixels)].all()]
        jobs = (delayed(_fit_chunk)(pixels, data.x, data.y[:, pixels], data.good[:, pixels], data.folds, settings,
                                    *(() if fixed is None else (fixed[0][pixels], fixed[1][pixels])))
                for pixels in todo)
        with tqdm(total=n_pixels, initial=int(done.sum()), desc=f"SLAM {stage}", unit="px",
                  disable=not self.progress) as bar:
            for chunk in Parallel(n_jobs=self.n_jobs, return_as="generator_unordered")(jobs):
                checkpoint.write(chunk)
                chunks.append(chunk)
                bar.update(chunk["pixels"].size)
        return _assemble(chunks, n_pixels)

    def _adopt(self, data: _TrainingSet, results: dict) -> None:
        """Make *results* the model's learned state."""
        self.flux_mean_, self.flux_scale_ = data.flux_mean, data.flux_scale
        self.C_, self.gamma_ = results["C"], results["gamma"]
        self.cv_mse_, self.cv_md_ = results["cv_mse"], results["cv_md"]
        self.alive_ = results["alive"]
        self.grid_mse_ = results["grid_mse"]
        self.training_labels_ = data.x
        self.bank_ = SVRBank(data.x[results["sv_index"]], results["dual"], results["sv_offsets"], results["gamma"],
                             results["intercept"])
        self._fitter = None

    def _fold_bank(self, data: _TrainingSet, results: dict, fold: int) -> SVRBank:
        k = int(self.n_folds)
        counts = results["fold_count"][:, fold]
        starts = results["fold_offsets"][np.arange(counts.size) * k + fold]
        index = _segments(results["fold_sv_index"], starts, counts)
        return SVRBank(data.x[index], _segments(results["fold_dual"], starts, counts), np.r_[0, np.cumsum(counts)],
                       results["gamma"], results["fold_intercept"][:, fold])

    def _make_fitter(self, bank: SVRBank, templates: np.ndarray) -> LabelFitter:
        span = self.training_labels_.max(axis=0) - self.training_labels_.min(axis=0)
        lower = self.training_labels_.min(axis=0) - _BOX_MARGIN * span
        upper = self.training_labels_.max(axis=0) + _BOX_MARGIN * span
        variance = self._model_variance()
        if templates.shape[0] > _MAX_TEMPLATES:
            pick = np.random.default_rng(self.random_state).choice(templates.shape[0], _MAX_TEMPLATES, replace=False)
            templates = templates[np.sort(pick)]
        basis = None if self.continuum_knots is None else continuum_basis(self.wavelength_, self.continuum_knots)
        return LabelFitter(bank, self.flux_mean_, self.flux_scale_, variance, lower, upper, templates,
                           max_iter=self.max_iter, continuum_basis=basis)

    def _cross_validated(self, spectra, data: _TrainingSet, results: dict) -> np.ndarray:
        """Standardised labels of every training star fitted by the fold model that never saw it."""
        theta = np.empty_like(data.x)
        for fold in range(int(self.n_folds)):
            held = data.folds == fold
            if not held.any():
                continue
            fitter = self._make_fitter(self._fold_bank(data, results, fold), data.x[~held])
            rows = data.rows[held]
            flux, error, good = spectra.flux[rows], spectra.error[rows], ~spectra.mask[rows]
            theta[held] = fitter.fit(flux, error, good).theta
        return theta

    def _outliers(self, cv_theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Stars whose CV label residual exceeds ``outlier_sigma`` standard deviations in any label (paper §4.2)."""
        residual = cv_theta - x
        sigma = residual.std(axis=0)
        sigma = np.where(sigma > 0, sigma, np.inf)
        return np.any(np.abs(residual - residual.mean(axis=0)) > float(self.outlier_sigma) * sigma, axis=1)

    # ------------------------------------------------------------------ error model σ(SNR)
    def _fit_error_model(self, spectra, data: _TrainingSet, results: dict, cv_theta: np.ndarray) -> None:
        from ..analysis.metrics import sigma_mad

        scale = self.label_scale_
        residual = (cv_theta - data.x) * scale
        self.cv_scatter_ = np.array([sigma_mad(residual[:, j]) for j in range(residual.shape[1])])
        good = ~spectra.mask[data.rows]
        native_snr = _snr(spectra.flux[data.rows].astype(float), spectra.error[data.rows].astype(float), good)
        points = [(float(np.nanmedian(native_snr)) if np.isfinite(native_snr).any() else np.nan, self.cv_scatter_)]
        rng = np.random.default_rng(self.random_state + 1)
        for target in np.atleast_1d(np.asarray(self.error_model_snr, dtype=float)):
            eligible = np.flatnonzero(~(native_snr < 1.1 * target))  # NaN (no errors) counts as noise-free
            if eligible.size < 3:
                continue
            pick = np.sort(rng.choice(eligible, min(eligible.size, int(self.error_model_stars)), replace=False))
            flux, error, snr = self._degrade(spectra, data.rows[pick], good[pick], target, rng)
            theta = np.empty((pick.size, data.x.shape[1]))
            for fold in np.unique(data.folds[pick]):
                mine = data.folds[pick] == fold
                fitter = self._make_fitter(self._fold_bank(data, results, fold), data.x[data.folds != fold])
                theta[mine] = fitter.fit(flux[mine], error[mine], good[pick][mine]).theta
            residual = (theta - data.x[pick]) * scale
            points.append((float(np.nanmedian(snr)), np.array([sigma_mad(residual[:, j])
                                                                for j in range(residual.shape[1])])))
        self.error_model_ = np.array([_fit_error_law([p[0] for p in points], [p[1][j] for p in points])
                                      for j in range(len(scale))])

    @staticmethod
    def _degrade(spectra, rows, good, target, rng):
        """Spectra *rows* with Gaussian noise added so that their median SNR becomes *target*."""
        flux = spectra.flux[rows].astype(np.float64)
        error = spectra.error[rows].astype(np.float64)
        level = np.nanmedian(np.where(good, np.abs(flux), np.nan), axis=1, keepdims=True)
        wanted = np.broadcast_to(level / target, flux.shape)
        current = np.where(np.isfinite(error), error, 0.0)
        extra = np.sqrt(np.clip(wanted**2 - current**2, 0.0, None))
        noisy = flux + rng.normal(size=flux.shape) * extra
        new_error = np.where(good, np.maximum(current, wanted), np.inf)
        return noisy, new_error, _snr(noisy, new_error, good)

    def _predictive_std(self, snr: np.ndarray) -> np.ndarray:
        a, b, c = self.error_model_.T
        law = a * np.exp(-b * np.clip(snr, 0.0, None)[:, None]) + c
        return np.where(np.isfinite(snr)[:, None], law, self.cv_scatter_[None, :])

    def _set_label_distance_threshold(self) -> None:
        from scipy.spatial import cKDTree

        if self.label_distance_threshold is not None:
            self.distance_threshold_ = float(self.label_distance_threshold)
            return
        # each training star's distance to its nearest *other* training star (k=2: the first is itself)
        x = self.training_labels_
        distances = cKDTree(x).query(x, k=2)[0][:, 1]
        self.distance_threshold_ = float(2.0 * np.percentile(distances, 99))

    # ------------------------------------------------------------------ prediction
    @property
    def model_variance(self) -> np.ndarray:
        """σ²_model,j in flux units: each pixel's CV MSE times its training variance (inf: dead pixel)."""
        self._check_fitted("give its model variance")
        return self._model_variance()

    def _model_variance(self) -> np.ndarray:
        return np.where(self.alive_, self.cv_mse_ * self.flux_scale_**2, np.inf)

    def _label_fitter(self) -> LabelFitter:
        # prediction-time hyperparameters may change after training (set_params): rebuild the fitter then
        key = (self.continuum_knots, self.max_iter)
        if getattr(self, "_fitter", None) is None or getattr(self, "_fitter_key", None) != key:
            self._fitter = self._make_fitter(self.bank_, self.training_labels_)
            self._fitter_key = key
        return self._fitter

    def fit_labels(self, spectra: Spectra) -> FitResult:
        """The raw fit (standardised labels, Hessian, convergence) of every spectrum.

        :meth:`predict` turns it into a LabelPrediction; see the class example.
        """
        self._check_fitted("fit labels")
        spectra = self._check_spectra(spectra, "predict")
        good = ~spectra.mask
        fitter = self._label_fitter()
        usable = fitter.weights(spectra.error, good) > 0
        empty = np.flatnonzero(~usable.any(axis=1))
        if empty.size:
            raise SpectrumError(f"spectra: spectrum {spectra.ids[empty[0]]!r} has no good pixel where the SLAM model "
                                f"is defined ({empty.size} such spectra); remove them before predicting")
        return fitter.fit(spectra.flux, spectra.error, good)

    def _predict(self, spectra):
        from ..analysis.selection import label_distance

        result = self.fit_labels(spectra)
        mean = result.theta * self.label_scale_ + self.label_mean_
        variance = np.einsum("nll->nl", result.covariance)
        model_std = np.sqrt(np.clip(variance, 0.0, None)) * self.label_scale_
        snr = _snr(spectra.flux.astype(float), spectra.error.astype(float), ~spectra.mask)
        distance = label_distance(result.theta, self.training_labels_, 1.0)
        outside = (distance > self.distance_threshold_) | result.at_bound
        return LabelPrediction(self.label_names_, mean, model_std, self._predictive_std(snr), ids=spectra.ids,
                               flags={"not_converged": ~result.converged, "outside_training_set": outside},
                               meta={"model": self.name, "label_distance_threshold": self.distance_threshold_})

    def model_spectra(self, labels) -> np.ndarray:
        """Model spectra (flux units) for physical labels, shape (n, n_pixels): SLAM's forward model.

        *labels* is a table or an array (n, n_labels) in the order of ``label_names_``.
        """
        self._check_fitted("compute model spectra")
        from ..labels import label_array

        if isinstance(labels, np.ndarray) and labels.dtype.names is None:
            values = np.atleast_2d(labels).astype(float)
        else:
            values, _ = label_array(labels, self.label_names_)
        if values.shape[1] != len(self.label_names_):
            raise ShapeError(f"labels: expected {len(self.label_names_)} columns {self.label_names_}, "
                             f"got {values.shape[1]}")
        return self._label_fitter().model_flux((values - self.label_mean_) / self.label_scale_)

    def _sensitivity(self, spectra, label):
        """Mean ∂label/∂flux_j at each spectrum's fitted labels (linear response of the fit)."""
        result = self.fit_labels(spectra)
        fitter = self._label_fitter()
        _, jac = fitter._residuals(np.zeros_like(result.weight), result.weight, result.theta, True)
        gain = np.einsum("nkl,nlp->nkp", result.covariance, jac) * result.weight[:, None, :]
        j = self.label_names_.index(label)
        return np.nan_to_num(gain[:, j, :].mean(axis=0) * self.label_scale_[j])

    # ------------------------------------------------------------------ COD
    def compute_cod(self, spectra: Spectra, labels):
        """Retrain without each label in turn (checkpointed) and return the COD spectra.

        *spectra* and *labels* must be the training data given to :meth:`fit`.
        """
        self._check_fitted("compute CODs")
        from ..labels import label_array

        values, names = label_array(labels, self.label_names_) if not isinstance(labels, tuple) else labels
        if dataset_hash(spectra.flux, values) != self.training_hash_:
            raise LabelExplorerError("compute_cod: expected the spectra and labels the model was trained on "
                                     "(their hash differs from training_hash_)")
        rows = np.flatnonzero(np.isfinite(values).all(axis=1) & ~np.isin(spectra.ids, self.rejected_ids_))
        data = self._training_set(spectra, values, rows)  # same stars, so the same standardisation
        settings = self._settings(refit=False, keep_folds=False)
        lolo = np.ones((len(self.label_names_), self.wavelength_.size))
        for j, name in enumerate(self.label_names_):
            if len(self.label_names_) == 1:
                break  # without its only label a pixel is a constant: MSE 1
            reduced = _TrainingSet(data.rows, np.delete(data.x, j, axis=1), data.y, data.good, data.folds,
                                   data.flux_mean, data.flux_scale)
            lolo[j] = self._run_stage(f"lolo-{name}", reduced, settings)["cv_mse"]
        self.lolo_cv_mse_ = lolo
        return self.cod()

    def cod(self):
        """Coefficients of dependence as :class:`~labelexplorer.analysis.cod.CODSpectra`.

        The per-label CODs are NaN until :meth:`compute_cod` has been run.
        """
        self._check_fitted("give CODs")
        from ..analysis.cod import cod_spectra

        mse = np.where(self.alive_, self.cv_mse_, 1.0)
        return cod_spectra(self.wavelength_, self.label_names_, mse, self.lolo_cv_mse_,
                           meta={"model": self.name, "training_hash": self.training_hash_})

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("label_mean", "label_scale", "flux_mean", "flux_scale", "wavelength", "C", "cv_mse",
               "cv_md", "alive", "grid_mse", "training_labels", "cv_scatter", "error_model", "lolo_cv_mse")

    def _config_extra(self) -> dict:
        return {"n_training_stars": int(self.training_labels_.shape[0]), "n_missing_dropped": self.n_missing_dropped_,
                "rejected_ids": list(self.rejected_ids_), "distance_threshold": self.distance_threshold_,
                "error_model": "sigma(SNR) = a*exp(-b*SNR) + c per label; SNR = median |flux|/error over good pixels"}

    def _load_config_extra(self, extra: dict) -> None:
        self.n_missing_dropped_ = int(extra.get("n_missing_dropped", 0))
        self.rejected_ids_ = list(extra.get("rejected_ids", []))
        self.distance_threshold_ = float(extra.get("distance_threshold", np.inf))

    def _save_weights(self, directory: Path) -> None:
        arrays = {name: getattr(self, name + "_") for name in self._ARRAYS}
        arrays.update(self.bank_.packed())
        save_npz(directory / "weights.npz", arrays)

    def _load_weights(self, directory: Path) -> None:
        n_labels = len(self.label_names_)
        path = directory / "weights.npz"
        arrays = load_npz(path, {name: None for name in self._ARRAYS + _BANK_ARRAYS})
        n_pixels = arrays["wavelength"].size
        shapes = {"label_mean": (n_labels,), "label_scale": (n_labels,), "flux_mean": (n_pixels,),
                  "cv_mse": (n_pixels,), "error_model": (n_labels, 3), "lolo_cv_mse": (n_labels, n_pixels)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ModelFileError(f"{path}: array {name!r} has shape {arrays[name].shape}, expected {shape}")
        try:
            self.bank_ = SVRBank(arrays["support_vectors"], arrays["dual_coef"], arrays["offsets"], arrays["gamma"],
                                 arrays["intercept"])
        except ShapeError as exc:
            raise ModelFileError(f"{path}: inconsistent support-vector arrays ({exc})") from exc
        if self.bank_.n_pixels != n_pixels or self.bank_.n_labels != n_labels:
            raise ModelFileError(f"{path}: support vectors for {self.bank_.n_pixels} pixels x {self.bank_.n_labels} "
                                 f"labels, expected {n_pixels} x {n_labels}")
        for name in self._ARRAYS:
            setattr(self, name + "_", arrays[name])
        self.gamma_ = self.bank_.gamma
        self.alive_ = self.alive_.astype(bool)
        self._fitter = None


def continuum_basis(wavelength, knot_spacing: float) -> np.ndarray:
    """Cubic B-splines with knots every *knot_spacing* Å over *wavelength*, shape (n_pixels, n_basis).

    They sum to one at every pixel, so coefficients of 1 mean "no correction".

    Examples
    --------
    >>> basis = continuum_basis(np.linspace(4000.0, 5000.0, 101), 250.0)
    >>> basis.shape, bool(np.allclose(basis.sum(axis=1), 1.0))
    ((101, 7), True)
    """
    from scipy.interpolate import BSpline

    wavelength = np.asarray(wavelength, dtype=np.float64)
    low, high = float(wavelength.min()), float(wavelength.max())
    n_intervals = max(int(round((high - low) / float(knot_spacing))), 1)
    knots = np.r_[[low] * 3, np.linspace(low, high, n_intervals + 1), [high] * 3]
    return BSpline.design_matrix(wavelength, knots, 3).toarray()


def cod_window_contrast(cod, windows, n_top: int = 20):
    """How sharply each label's COD spectrum picks out its own pixels (its element's lines).

    The check behind "each element's COD peaks in its lines" (paper Fig. 10), made a number.

    Parameters
    ----------
    cod : CODSpectra
        Per-label CODs (from :meth:`SLAM.compute_cod`).
    windows : mapping of str to array_like of bool
        Label name -> mask over ``cod.wavelength`` of the pixels that label should govern
        (e.g. ``windows_from_linelist(...).mask(element)`` at the model's pixels).
    n_top : int
        How many of the label's highest-COD pixels ``top_fraction`` looks at.

    Returns
    -------
    pandas.DataFrame
        One row per label: ``top_fraction`` (share of its *n_top* highest-COD pixels inside
        its windows), ``chance`` (share of all pixels inside them: what ``top_fraction``
        would be if the COD ignored the windows), ``ratio`` (mean COD inside / mean COD
        outside; inf when the outside mean is 0), ``mean_in``, ``mean_out`` and ``max``.

    Raises
    ------
    ShapeError
        If a mask does not have one value per COD pixel or selects no pixel (or every pixel).

    Examples
    --------
    >>> from labelexplorer.analysis.cod import cod_spectra
    >>> mg_lines = np.array([False, True, True, False, False, False])
    >>> without = [np.where(mg_lines, 0.6, 0.9), np.where(mg_lines, 0.9, 0.6)]  # MSE without TEFF, without MG_FE
    >>> cod = cod_spectra(np.arange(6.0), ["TEFF", "MG_FE"], np.full(6, 0.5), without)
    >>> table = cod_window_contrast(cod, {"MG_FE": mg_lines}, n_top=2)
    >>> table.loc["MG_FE", ["top_fraction", "ratio"]].round(2).tolist()
    [1.0, 4.0]
    """
    import pandas as pd

    rows = {}
    for label, mask in windows.items():
        mask = np.asarray(mask, dtype=bool)
        values = np.nan_to_num(np.asarray(cod[label], dtype=np.float64), nan=0.0)
        if mask.shape != values.shape or mask.all() or not mask.any():
            raise ShapeError(f"windows[{label!r}]: expected a boolean mask over the {values.size} COD pixels with "
                             f"pixels both inside and outside, got shape {mask.shape} with {int(mask.sum())} inside")
        top = np.argsort(-values, kind="stable")[: int(n_top)]
        inside, outside = values[mask].mean(), values[~mask].mean()
        rows[label] = {"top_fraction": float(mask[top].mean()), "chance": float(mask.mean()),
                       "ratio": float(inside / outside) if outside > 0 else np.inf,
                       "mean_in": float(inside), "mean_out": float(outside), "max": float(values.max())}
    return pd.DataFrame.from_dict(rows, orient="index")


def _fit_error_law(snr, scatter) -> tuple[float, float, float]:
    """Fit σ(SNR) = a·exp(−b·SNR) + c (a, b, c >= 0) through the points; constant if too few.

    Examples
    --------
    >>> snr = np.array([10.0, 20.0, 40.0, 80.0, 150.0])
    >>> a, b, c = _fit_error_law(snr, 300 * np.exp(-0.05 * snr) + 50)
    >>> round(a), round(b, 3), round(c)
    (300, 0.05, 50)
    """
    from scipy.optimize import curve_fit

    snr, scatter = np.asarray(snr, float), np.asarray(scatter, float)
    finite_scatter = scatter[np.isfinite(scatter)]
    known = np.isfinite(snr) & np.isfinite(scatter)
    floor = float(np.min(finite_scatter)) if finite_scatter.size else np.nan
    if known.sum() < 3:
        return 0.0, 0.0, float(scatter[0]) if np.isfinite(scatter[0]) else floor
    x, y = snr[known], scatter[known]
    low, high = np.argmin(x), np.argmax(x)
    guess = (max(y[low] - y[high], 1e-12) * np.exp(x[low] * 2.0 / np.ptp(x)), 2.0 / max(np.ptp(x), 1e-12), y[high])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(lambda s, a, b, c: a * np.exp(-b * s) + c, x, y, p0=guess,
                                  bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, np.inf]), maxfev=10000)
    except (RuntimeError, ValueError):
        return 0.0, 0.0, float(np.median(y))
    return tuple(float(p) for p in params)
