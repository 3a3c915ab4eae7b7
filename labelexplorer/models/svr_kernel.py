"""All pixels' RBF support-vector regressions evaluated at once, with their analytic Jacobian.

SLAM (Zhang, Liu & Deng 2020) models every pixel ``j`` of a standardised spectrum as an
RBF-kernel SVR of the standardised labels ``θ``::

    f_j(θ) = Σ_k α_jk exp(−γ_j ||θ − s_jk||²) + b_j

The reference implementation calls one scikit-learn estimator per pixel in a Python loop,
which is what makes it slow. :class:`SVRBank` holds every pixel's support vectors packed
(concatenated, with offsets) and evaluates all pixels for a batch of stars with a few
matrix products:

- the support vectors of every pixel are rows of one small set of label vectors (in SLAM
  they are training stars, shared between pixels), so the distinct vectors are found once
  (``np.unique``) and each kernel value ``exp(−γ ||θ − s||²)`` is computed once per
  distinct (γ, vector) pair instead of once per (pixel, support vector);
- pixels are grouped by their γ (a handful of grid values); within a group the dual
  coefficients form a matrix ``A`` (distinct vectors × pixels), dense or sparse, so that
  ``f = K @ A + b`` for the whole batch of stars is one BLAS product;
- the Jacobian follows from ``∂K_k/∂θ_l = −2γ (θ_l − s_kl) K_k``:
  ``∂f/∂θ_l = −2γ (θ_l (K @ A) − (K s_l) @ A)``, one more product with the stacked
  ``K s_l`` of all labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..exceptions import ShapeError

__all__ = ["SVRBank"]

_DENSE_FILL = 0.15  # coefficient matrices fuller than this are stored dense (BLAS beats sparse products)
_BATCH_BYTES = 96 * 2**20  # working memory per batch of stars in evaluate()


@dataclass
class _Group:
    """Pixels sharing one γ: their columns, the distinct support vectors they use and A."""

    gamma: float
    pixels: np.ndarray  # (p_g,) pixel indices
    basis: np.ndarray  # (m_g, L) distinct support vectors used by these pixels
    basis_sq: np.ndarray  # (m_g,) squared norms of the basis rows
    coef: np.ndarray | sparse.csr_array  # (m_g, p_g) dual coefficients


class SVRBank:
    """Many RBF-kernel SVRs (one per pixel) over the same label space, evaluated together.

    Parameters
    ----------
    support_vectors : array_like, shape (n_sv_total, n_labels)
        Every pixel's support vectors, concatenated pixel after pixel.
    dual_coef : array_like, shape (n_sv_total,)
        The dual coefficient ``α`` of each support vector.
    offsets : array_like of int, shape (n_pixels + 1,)
        Pixel ``j`` owns rows ``offsets[j]:offsets[j + 1]``.
    gamma : array_like, shape (n_pixels,)
        RBF width of each pixel (> 0).
    intercept : array_like, shape (n_pixels,)
        Constant ``b_j`` of each pixel.

    Examples
    --------
    >>> from sklearn.svm import SVR
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 2))
    >>> svrs = [SVR(gamma=g).fit(x, np.sin(x[:, 0] * (j + 1))) for j, g in enumerate([0.5, 0.5, 2.0])]
    >>> bank = SVRBank.from_estimators(svrs)
    >>> bank.n_pixels, bank.n_labels
    (3, 2)
    >>> reference = np.stack([s.predict(x[:5]) for s in svrs], axis=1)
    >>> bool(np.allclose(bank.evaluate(x[:5]), reference, atol=1e-10))
    True
    """

    def __init__(self, support_vectors, dual_coef, offsets, gamma, intercept):
        self.support_vectors = np.atleast_2d(np.asarray(support_vectors, dtype=np.float64))
        self.dual_coef = np.asarray(dual_coef, dtype=np.float64).ravel()
        self.offsets = np.asarray(offsets, dtype=np.int64).ravel()
        self.gamma = np.asarray(gamma, dtype=np.float64).ravel()
        self.intercept = np.asarray(intercept, dtype=np.float64).ravel()
        self._check()
        self._groups: list[_Group] | None = None

    def _check(self) -> None:
        n_pixels = self.gamma.size
        if self.intercept.shape != (n_pixels,) or self.offsets.shape != (n_pixels + 1,):
            raise ShapeError(f"SVRBank: expected intercept ({n_pixels},) and offsets ({n_pixels + 1},) for "
                             f"{n_pixels} pixels, got {self.intercept.shape} and {self.offsets.shape}")
        n_sv = self.dual_coef.size
        if self.support_vectors.shape[0] != n_sv and not (n_sv == 0 and self.support_vectors.size == 0):
            raise ShapeError(f"SVRBank: {self.support_vectors.shape[0]} support vectors but {n_sv} dual coefficients")
        if self.offsets[0] != 0 or self.offsets[-1] != n_sv or np.any(np.diff(self.offsets) < 0):
            raise ShapeError(f"SVRBank: offsets must rise from 0 to the number of support vectors ({n_sv})")
        if not np.all(np.isfinite(self.gamma) & (self.gamma > 0)):
            raise ShapeError("SVRBank: every gamma must be finite and > 0")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_estimators(cls, estimators) -> "SVRBank":
        """Pack fitted scikit-learn ``SVR(kernel="rbf")`` estimators, one per pixel."""
        estimators = list(estimators)
        vectors = [np.asarray(e.support_vectors_, dtype=np.float64) for e in estimators]
        counts = [v.shape[0] for v in vectors]
        return cls(np.concatenate(vectors), np.concatenate([e.dual_coef_.ravel() for e in estimators]),
                   np.r_[0, np.cumsum(counts)], [float(e._gamma) for e in estimators],
                   [float(e.intercept_[0]) for e in estimators])

    def packed(self) -> dict[str, np.ndarray]:
        """The packed arrays (what a saved model stores): names are the constructor's."""
        return {"support_vectors": self.support_vectors, "dual_coef": self.dual_coef, "offsets": self.offsets,
                "gamma": self.gamma, "intercept": self.intercept}

    @property
    def n_pixels(self) -> int:
        """Number of SVRs (pixels)."""
        return self.gamma.size

    @property
    def n_labels(self) -> int:
        """Dimension of the label space."""
        return self.support_vectors.shape[1]

    # ------------------------------------------------------------------ fast layout
    def _layout(self) -> list[_Group]:
        """Group pixels by γ and turn their dual coefficients into (distinct vectors × pixels) matrices."""
        if self._groups is not None:
            return self._groups
        pixel_of_row = np.repeat(np.arange(self.n_pixels), np.diff(self.offsets))
        if self.dual_coef.size:
            distinct, vector_of_row = np.unique(self.support_vectors, axis=0, return_inverse=True)
            vector_of_row = vector_of_row.ravel()
        else:
            distinct, vector_of_row = np.zeros((0, self.n_labels)), np.zeros(0, dtype=np.int64)
        groups = []
        for gamma in np.unique(self.gamma):
            pixels = np.flatnonzero(self.gamma == gamma)
            rows = np.flatnonzero(np.isin(pixel_of_row, pixels))
            used, local_vector = np.unique(vector_of_row[rows], return_inverse=True)
            local_pixel = np.searchsorted(pixels, pixel_of_row[rows])
            coef = sparse.csr_array((self.dual_coef[rows], (local_vector.ravel(), local_pixel)),
                                    shape=(used.size, pixels.size))
            coef.sum_duplicates()
            if used.size * pixels.size == 0 or coef.nnz / (used.size * pixels.size) > _DENSE_FILL:
                coef = coef.toarray()
            basis = distinct[used]
            groups.append(_Group(float(gamma), pixels, basis, np.einsum("kl,kl->k", basis, basis), coef))
        self._groups = groups
        return groups

    def _batch_size(self, jacobian: bool) -> int:
        widest = max([g.basis.shape[0] for g in self._layout()] + [self.n_pixels, 1])
        per_star = 8 * widest * ((self.n_labels + 2) if jacobian else 2)
        return max(1, _BATCH_BYTES // per_star)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, theta, *, jacobian: bool = False):
        """Every pixel's SVR at the label vectors *theta*.

        Parameters
        ----------
        theta : array_like, shape (n_stars, n_labels) or (n_labels,)
            Standardised labels.
        jacobian : bool
            Also return ``∂f_j/∂θ_l``.

        Returns
        -------
        f : ndarray, shape (n_stars, n_pixels)
        jac : ndarray, shape (n_stars, n_pixels, n_labels)
            Only when *jacobian* is True.

        Examples
        --------
        >>> bank = SVRBank([[0.0], [1.0]], [1.0, -0.5], [0, 1, 2], [1.0, 2.0], [0.1, 0.0])
        >>> f, jac = bank.evaluate([[0.5]], jacobian=True)
        >>> np.round(f, 4).tolist()  # exp(-0.25) + 0.1, -0.5 exp(-0.5)
        [[0.8788, -0.3033]]
        >>> np.round(jac[0, :, 0], 4).tolist()  # -2γ(θ - s) α K
        [-0.7788, -0.6065]
        """
        f, jac_lp = self.evaluate_lp(theta, jacobian=jacobian)
        return (f, np.moveaxis(jac_lp, 1, 2)) if jacobian else f

    def evaluate_lp(self, theta, *, jacobian: bool = False):
        """Like :meth:`evaluate`, but the Jacobian has shape (n_stars, n_labels, n_pixels).

        The label axis before the pixel axis is the layout the batched least-squares solver
        wants (``J Jᵀ`` over contiguous pixels); ``None`` stands in for it without *jacobian*.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        if theta.ndim != 2 or theta.shape[1] != self.n_labels:
            raise ShapeError(f"theta: expected shape (n_stars, {self.n_labels}), got {theta.shape}")
        n = theta.shape[0]
        f = np.empty((n, self.n_pixels))
        jac = np.empty((n, self.n_labels, self.n_pixels)) if jacobian else None
        step = self._batch_size(jacobian)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            self._evaluate_batch(theta[rows], f[rows], None if jac is None else jac[rows])
        f += self.intercept
        return f, jac

    def _evaluate_batch(self, theta: np.ndarray, f: np.ndarray, jac: np.ndarray | None) -> None:
        n, n_labels = theta.shape
        theta_sq = np.einsum("nl,nl->n", theta, theta)
        for group in self._layout():
            if group.basis.shape[0] == 0:
                f[:, group.pixels] = 0.0
                if jac is not None:
                    jac[:, :, group.pixels] = 0.0
                continue
            distance_sq = theta_sq[:, None] + group.basis_sq[None, :] - 2.0 * theta @ group.basis.T
            kernel = np.exp(-group.gamma * np.maximum(distance_sq, 0.0))  # (n, m_g)
            values = np.asarray(kernel @ group.coef)  # (n, p_g)
            f[:, group.pixels] = values
            if jac is None:
                continue
            weighted = (kernel[:, None, :] * group.basis.T[None, :, :]).reshape(n * n_labels, -1)
            moments = np.asarray(weighted @ group.coef).reshape(n, n_labels, -1)  # Σ_k α K_k s_kl
            jac[:, :, group.pixels] = -2.0 * group.gamma * (theta[:, :, None] * values[:, None, :] - moments)
