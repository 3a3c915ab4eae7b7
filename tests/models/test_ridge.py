import numpy as np
import pytest

from labelexplorer.models.ridge import _GramRidge


@pytest.mark.parametrize("n, p", [(40, 300), (80, 20)], ids=["dual-gram", "primal"])
def test_subset_fits_equal_the_textbook_ridge_solution(n, p):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(n, p)), rng.normal(size=n)
    rows = rng.choice(n, n // 2, replace=True)  # bootstrap-like subset with repeats
    intercept, coef = _GramRidge(x, 0.5).fit(rows, y[rows])
    xs = x[rows] - x[rows].mean(axis=0)
    expected = np.linalg.solve(xs.T @ xs + 0.5 * np.eye(p), xs.T @ (y[rows] - y[rows].mean()))
    np.testing.assert_allclose(coef, expected, atol=1e-10)
    assert intercept == pytest.approx(y[rows].mean() - x[rows].mean(axis=0) @ expected)
