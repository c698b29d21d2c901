"""Pixel integration rule (pho._reference) against an independent high-accuracy integral.

The independent integral integrates each pixel exactly along x (erf / erfc of the Gaussian's
conditional profile) and with a 64-point Gauss-Legendre rule along y; one case is checked
against scipy's dblquad as well, so the yardstick itself is verified.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from pho import _reference as ref
from pho._exact import exact_pixels
from pho.errors import PhoValueError


gaussian_row = ref.packed_gaussian  # (flux, x0, y0, fwhm_minor_pix, q, theta_rad) -> packed row


def worst_relative_error(row, shape):
    """Worst |rule / exact - 1| over pixels above 1% of the peak (the rule's own box)."""
    img = ref.render(row[None, :], shape)
    ii, jj = np.nonzero(img > 0)
    ex = exact_pixels(row, jj.astype(float), ii.astype(float))
    sel = ex > 0.01 * ex.max()
    return float(np.max(np.abs(img[ii[sel], jj[sel]] / ex[sel] - 1.0)))


def test_yardstick_matches_dblquad():
    row = gaussian_row(1.0, 10.25, 10.25, 1.0, 0.3, 0.7)
    jj = np.array([10.0, 11.0, 9.0, 11.0])
    ii = np.array([10.0, 10.0, 11.0, 12.0])
    ours = exact_pixels(row, jj, ii)
    amp, x0, y0, fxx, fxy, fyy = row
    for k in range(len(jj)):

        def f(y, x):
            dx, dy = x - x0, y - y0
            return amp * math.exp(-0.5 * (fxx * dx * dx + 2 * fxy * dx * dy + fyy * dy * dy))

        val, _ = integrate.dblquad(f, jj[k] - 0.5, jj[k] + 0.5, ii[k] - 0.5, ii[k] + 0.5, epsabs=0, epsrel=1e-12)
        assert ours[k] == pytest.approx(val, rel=1e-9)


def test_seed_figure1_case_is_accurate():
    """FWHM 1 pixel at shift (0.25, 0.25): the seed's second order is ~20% off; the rule is not."""
    row = gaussian_row(1.0, 20.25, 20.25, 1.0, 1.0, 0.0)
    assert worst_relative_error(row, (41, 41)) < 1e-3
    # and the second-order rule alone would fail here (so the test can fail)
    img = ref.render(row[None, :], (41, 41))
    ex = exact_pixels(row, np.array([20.0]), np.array([20.0]))[0]
    fxx = row[3]
    e = row[0] * math.exp(-0.5 * fxx * 2 * 0.25**2)
    second = e * (1 + (2 * (fxx * 0.25) ** 2 - 2 * fxx) / 24)
    assert abs(second / ex - 1) > 0.05
    assert abs(img[20, 20] / ex - 1) < 1e-3


FWHMS = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 3.2, 4.0, 8.0, 12.0]
SHIFTS = [(0.0, 0.0), (0.25, 0.25), (0.5, 0.1), (0.37, -0.41)]
ANGLES = [0.0, 0.3, math.pi / 4, 1.2]


@pytest.mark.parametrize("fwhm", FWHMS)
@pytest.mark.parametrize("q", [1.0, 0.3])
def test_rule_error_below_1e3(fwhm, q):
    angles = ANGLES if q < 1 else [0.0]
    worst = 0.0
    for theta in angles:
        for sx, sy in SHIFTS:
            size = int(2 * ref.BOX_NSIGMA * fwhm / q / ref.FWHM_PER_SIGMA) + 8
            c = size // 2
            row = gaussian_row(1.0, c + sx, c + sy, fwhm, q, theta)
            worst = max(worst, worst_relative_error(row, (size, size)))
    assert worst < 1e-3, f"FWHM {fwhm} q {q}: worst relative error {worst:.2e}"


def test_orders_follow_thresholds():
    rows = np.array([gaussian_row(1.0, 0, 0, f, 1.0, 0.0) for f in [0.45, 0.5, 0.6, 1.0, 1.5, 3.0, 4.0, 8.0, 9.0]])
    assert ref.integration_orders(rows).tolist() == [7, 7, 6, 5, 4, 3, ref.ORDER_FOURTH, ref.ORDER_FOURTH, 0]
    # rotation: the effective width is that of the narrower cross-section along x or y
    r = gaussian_row(1.0, 0, 0, 1.0, 0.3, math.pi / 4)
    assert 1.0 < ref.FWHM_PER_SIGMA / math.sqrt(max(r[3], r[5])) < 1.5
    assert ref.integration_orders(r[None, :])[0] == 4


def test_box_keeps_flux_within_1e5():
    for fwhm, q, theta, sx in [(1.0, 1.0, 0.0, 0.3), (3.0, 0.3, 0.7, 0.1), (10.0, 0.5, 2.0, 0.45)]:
        size = 200
        row = gaussian_row(1.0, 100 + sx, 100.2, fwhm, q, theta)
        img = ref.render(row[None, :], (size, size))
        boxes = ref.pixel_boxes(row[None, :], (size, size))
        assert boxes[0, 1] - boxes[0, 0] < size - 10  # the box really cuts
        assert abs(img.sum() - 1.0) < 1e-5


def test_box_half_pixel_inclusion():
    # sigma_x = 1, box half-width BOX_NSIGMA; pixel j is in when [j-1/2, j+1/2] meets the box
    row = np.array([[1.0, 10.0, 10.0, 1.0, 0.0, 1.0]])
    b = ref.pixel_boxes(row, (30, 30))[0]
    r = ref.BOX_NSIGMA
    assert b[0] == math.ceil(10 - r - 0.5) and b[1] == math.floor(10 + r + 0.5)
    # clipping to the stamp, and a box wholly outside is empty
    far = np.array([[1.0, -50.0, 5.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
    bb = ref.pixel_boxes(far, (10, 10))
    assert bb[0, 0] > bb[0, 1]
    assert bb[1, 0] == 0 and bb[1, 2] == 0


CASES = [  # (fwhm_minor, q, theta, shift) covering every order
    (0.5, 1.0, 0.0, (0.1, 0.2)),
    (0.6, 0.5, 0.4, (0.3, -0.2)),
    (0.9, 0.7, 1.0, (0.25, 0.25)),
    (1.5, 0.4, 2.0, (-0.3, 0.1)),
    (3.0, 0.6, 0.5, (0.45, 0.05)),
    (4.0, 0.7, 0.3, (0.15, -0.3)),   # fourth-order correction
    (6.5, 0.4, 2.3, (-0.4, 0.45)),   # fourth-order correction, elongated
    (10.0, 0.5, 0.9, (0.2, -0.35)),
]


@pytest.mark.parametrize("case", CASES)
def test_derivatives_match_finite_differences(case):
    fwhm, q, theta, (sx, sy) = case
    size = int(2 * ref.BOX_NSIGMA * fwhm / q / ref.FWHM_PER_SIGMA) + 6
    c = size // 2
    row = gaussian_row(3.0, c + sx, c + sy, fwhm, q, theta)
    shape = (size, size)
    d = ref.render_derivatives(row[None, :], shape)[0]
    base = ref.render(row[None, :], shape)
    scales = [row[0], 1.0, 1.0, row[3], math.sqrt(row[3] * row[5]), row[5]]
    for p in range(6):
        h = 1e-5 * scales[p]
        up, dn = row.copy(), row.copy()
        up[p] += h
        dn[p] -= h
        assert ref.integration_orders(up[None])[0] == ref.integration_orders(dn[None])[0]
        iu = ref.render(up[None, :], shape)
        idn = ref.render(dn[None, :], shape)
        inside = (iu != 0) & (idn != 0) & (base != 0)
        fd = (iu - idn)[inside] / (2 * h)
        an = d[p][inside]
        tol = 1e-6 * np.max(np.abs(an)) + 1e-12
        assert np.max(np.abs(fd - an)) < tol, f"parameter {p}"
        assert np.max(np.abs(an)) > 0


def test_gradient_is_weighted_sum_of_derivative_images(rng):
    rows = np.array([gaussian_row(2.0, 8.3, 9.1, 0.8, 0.5, 0.3), gaussian_row(5.0, 12.0, 7.5, 9.0, 0.7, 1.1)])
    w = rng.normal(size=(20, 24))
    grad = ref.gradient(rows, w)
    d = ref.render_derivatives(rows, w.shape)
    assert np.allclose(grad, np.einsum("gpij,ij->gp", d, w), rtol=1e-12, atol=0)


def test_bad_gaussians_raise():
    with pytest.raises(PhoValueError, match="shape"):
        ref.render(np.zeros((3, 5)), (4, 4))
    with pytest.raises(PhoValueError, match="positive definite"):
        ref.render(np.array([[1.0, 0, 0, 1.0, 2.0, 1.0]]), (4, 4))
    with pytest.raises(PhoValueError, match="non-finite"):
        ref.render(np.array([[np.nan, 0, 0, 1.0, 0.0, 1.0]]), (4, 4))
    with pytest.raises(PhoValueError, match="non-negative"):
        ref.render(np.array([[1.0, 0, 0, 1.0, 0.0, 1.0]]), (-1, 4))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gaussians_narrower_than_the_rule_are_refused_by_every_backend(backend):
    from pho import _backends

    if backend not in _backends.available_backends():
        pytest.skip(f"backend {backend} is not built")
    be = _backends.get_backend(backend)
    ok = ref.packed_gaussian(100.0, 8.0, 8.0, ref.MIN_FWHM_PIX * 1.001, 1.0, 0.0)[None, :]
    assert be.render(ok, (17, 17)).sum() == pytest.approx(100.0, rel=1e-3)  # the rule's bound at the limit
    for fwhm, q, theta in [(0.3, 1.0, 0.0), (0.074, 1.0, 0.0), (2.4e-6, 1.0, 0.0), (0.2, 0.1, 0.7)]:
        g = np.vstack([ok, ref.packed_gaussian(100.0, 8.25, 8.0, fwhm, q, theta)])
        with pytest.raises(PhoValueError, match=r"image Gaussian 1 is too narrow .* < 0\.35 pixel"):
            be.render(g, (17, 17))
        with pytest.raises(PhoValueError, match="too narrow"):
            be.gradient(g, np.ones((17, 17)))
