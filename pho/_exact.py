"""An independent, high-accuracy pixel integral of one Gaussian: the yardstick for pho's rule.

Used by the tests and the benchmarks to measure the error of the integration rule in
``pho._reference``; never by the model itself. Each pixel is integrated exactly along x (erfc
of the Gaussian's conditional profile along x at fixed y) and with an ``n_y``-point
Gauss-Legendre rule along y. ``tests/test_pixel_integration.py`` checks it against scipy's
``dblquad``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["exact_pixels"]


def _erf_diff(a, b):
    """erf(b) - erf(a) without cancellation in the tails (a <= b)."""
    from scipy.special import erfc  # here, not at import: keeps ``import pho`` light

    return np.where(a >= 0, erfc(a) - erfc(b), np.where(b <= 0, erfc(-b) - erfc(-a), 2.0 - erfc(-a) - erfc(b)))


def exact_pixels(row, jj, ii, n_y: int = 64) -> np.ndarray:
    """Integral of one image Gaussian over pixels ``[ii, jj]``.

    Parameters
    ----------
    row : array_like of shape (6,)
        ``A, x0, y0, Fxx, Fxy, Fyy`` (docs/ARCHITECTURE.md).
    jj, ii : ndarray of float
        Pixel columns (x) and rows (y), same shape.
    n_y : int
        Gauss-Legendre nodes along y.

    Returns
    -------
    ndarray
        Counts in each pixel, shape of ``jj``.
    """
    amp, x0, y0, fxx, fxy, fyy = row
    u, w = np.polynomial.legendre.leggauss(n_y)
    det = fxx * fyy - fxy * fxy
    total = np.zeros(np.shape(jj))
    k = math.sqrt(fxx / 2.0)
    for uk, wk in zip(0.5 * u, 0.5 * w):
        dy = ii + uk - y0
        shift = fxy * dy / fxx
        lo = k * (jj - 0.5 - x0 + shift)
        hi = k * (jj + 0.5 - x0 + shift)
        total += wk * np.exp(-0.5 * dy * dy * det / fxx) * _erf_diff(lo, hi)
    return amp * math.sqrt(math.pi / (2.0 * fxx)) * total
