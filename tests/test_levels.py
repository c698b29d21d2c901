"""Wide Gaussians on coarse node grids (pho._levels): accuracy against the pixel kernel, exact gradient,
geometry of the grids, and the compiled likelihood's levels against the per-step path."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pho
from pho import _backends, _levels, _reference as ref


def _gaussian(sigma_minor, q, theta, amp=1.0, x0=30.3, y0=33.7):
    """Packed Gaussian of minor-axis sigma ``sigma_minor`` px, axis ratio q, major axis at theta."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([(sigma_minor / q) ** 2, sigma_minor**2]) @ rot.T
    f = np.linalg.inv(cov)
    return np.array([amp, x0, y0, f[0, 0], f[0, 1], f[1, 1]])


@pytest.mark.parametrize("n", list(range(1, 80)) + [127, 128, 129, 255, 256, 511, 1000])
def test_axis_grids_cover_every_stencil(n):
    """Every finer node's stencil lies inside the coarser grid: each interpolation row sums to 1 with
    1 or 6 weights, and the coarse nodes span the finer grid's positions."""
    grids = _levels.axis_grids(n, 6)
    for level in range(1, 7):
        (m_f, n_f), (m_c, n_c) = grids[level - 1], grids[level]
        p = _levels._axis_matrix(m_f, n_f, m_c, n_c)
        assert p.shape == (n_f, n_c)
        np.testing.assert_array_equal(p.sum(axis=1), 1.0)
        assert set(np.count_nonzero(p, axis=1).tolist()) <= {1, 6}
        h_f, h_c = 2 ** (level - 1), 2**level
        # positions: the first and last coarse nodes reach two below and three above the finer ones'
        assert h_c * (0 - m_c) <= h_f * (0 - m_f) - 2 * h_c + h_c
        assert h_c * (n_c - 1 - m_c) >= h_f * (n_f - 1 - m_f) + 2 * h_c


def test_grid_levels_stop_when_coarsening_stops_paying():
    assert len(_levels.grid_levels((256, 256))) == _levels.MAX_LEVEL + 1
    assert len(_levels.grid_levels((32, 32))) == 3  # 1024 -> 441 -> 256 nodes; 196 would be 77%
    assert len(_levels.grid_levels((8, 8))) == 1  # a 10 x 10 grid is no saving on 64 pixels
    for levels in (_levels.grid_levels((64, 70)), _levels.grid_levels((37, 29))):
        for lv in range(1, len(levels)):
            assert levels[lv][1] * levels[lv][3] <= _levels.MAX_NODE_RATIO * levels[lv - 1][1] * levels[lv - 1][3]


def test_gaussian_levels_switch_at_sigma_per_node():
    for level in range(1, 5):
        s = _levels.SIGMA_PER_NODE * 2**level
        g = np.array([_gaussian(s * (1 + 1e-9), 0.5, 0.3), _gaussian(s * (1 - 1e-9), 0.5, 0.3)])
        assert _levels.gaussian_levels(g, 4).tolist() == [level, level - 1]
    assert _levels.gaussian_levels(np.array([_gaussian(1000.0, 1.0, 0.0)]), 2).tolist() == [2]
    bad = np.array([[1.0, 0, 0, -1e-4, 0.0, -1e-4], [1.0, 0, 0, 1e-4, 0.0, -1e-4], [np.nan, 0, 0, 1, 0, 1]])
    assert _levels.gaussian_levels(bad, 4).tolist() == [0, 0, 0]


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("q, theta", [(1.0, 0.0), (0.7, 0.4), (0.3, 1.1)])
def test_levels_reproduce_the_pixel_rule(level, q, theta):
    """At the switching point sigma_min = SIGMA_PER_NODE h and a little above it, the interpolated image
    is within 5e-5 of the Gaussian's peak of the pixel kernel's (untruncated): half of the 1e-4 by which
    the pixel rule itself changes where it switches integration order (docs/pixel_integration.md)."""
    shape = (160, 170)
    s = _levels.SIGMA_PER_NODE * 2**level
    for factor in (1.0, 1.25):
        g = _gaussian(s * factor * (1 + 1e-9), q, theta, x0=81.3, y0=77.6)[None]
        assert _levels.gaussian_levels(g, 4)[0] == level
        want = ref.render(g, shape, nsigma=8.0)  # the rule without the box truncation (exp(-4.56^2/2) = 3e-5)
        got = _levels.render(ref.render, g, shape)
        err = np.max(np.abs(got - want))
        assert 0 < err <= 5e-5 * g[0, 0]  # nonzero: the level was used


def test_levels_gradient_matches_finite_differences():
    """d(sum w I)/d(A, x0, y0, Fxx, Fxy, Fyy) of the levelled model, each parameter of Gaussians on levels
    0-3, against central differences of the same model."""
    rng = np.random.default_rng(5)
    shape = (64, 70)
    g = np.array([_gaussian(11.0, 0.6, 0.3, amp=2.0), _gaussian(21.0, 0.8, 1.1, x0=10.2, y0=50.1),
                  _gaussian(41.0, 0.9, 2.0), _gaussian(3.0, 0.5, 0.1), _gaussian(10.5, 0.4, 2.5, x0=60.0, y0=5.0)])
    assert sorted(set(_levels.gaussian_levels(g, 4).tolist())) == [0, 1, 2, 3]
    w = rng.normal(size=shape)
    grad = _levels.gradient(ref.gradient, g, w)

    def f(gg):
        return float(np.sum(w * _levels.render(ref.render, gg, shape)))

    for k in range(len(g)):
        for c in range(6):
            step = 1e-6 * max(abs(g[k, c]), 1e-3)
            up, down = g.copy(), g.copy()
            up[k, c] += step
            down[k, c] -= step
            fd = (f(up) - f(down)) / (2 * step)
            assert grad[k, c] == pytest.approx(fd, rel=1e-6, abs=1e-9 * np.abs(grad[k]).max()), (k, c)


def test_prolong_and_restrict_are_transposes():
    rng = np.random.default_rng(2)
    grids = _levels.grid_levels((75, 90))
    for lv in range(1, len(grids)):
        coarse = rng.normal(size=(grids[lv][1], grids[lv][3]))
        fine = rng.normal(size=(grids[lv - 1][1], grids[lv - 1][3]))
        a = np.sum(_levels.prolong(coarse, grids, lv) * fine)
        b = np.sum(coarse * _levels.restrict(fine, grids, lv))
        assert a == pytest.approx(b, rel=1e-12)


def test_max_level_zero_is_the_pixel_kernel():
    g = np.array([_gaussian(20.0, 0.7, 0.3), _gaussian(2.0, 0.7, 0.3)])
    shape = (64, 64)
    np.testing.assert_array_equal(_levels.render(ref.render, g, shape, max_level=0), ref.render(g, shape))
    w = np.ones(shape)
    np.testing.assert_array_equal(_levels.gradient(ref.gradient, g, w, max_level=0), ref.gradient(g, w))


def _big_galaxy_likelihood(backend, workers=1):
    """A large Sersic and a small one on a 150 x 140 stamp: image Gaussians on levels 0-4."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [70.5, 75.5]
    w.wcs.cd = [[-0.03 / 3600, 0.0], [0.0, 0.03 / 3600]]
    rng = np.random.default_rng(3)
    shape = (150, 140)
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"F160W": 50.0}, q=0.6, pa=0.5, n=3.0, rh=1.2),
                       pho.Sersic(150.0 + 0.5 / 3600, 2.0 - 0.7 / 3600, {"F160W": 5.0}, q=0.8, pa=1.5, n=1.0, rh=0.1)])
    blank = pho.Exposure(np.zeros(shape), np.full(shape, 1e4), w, pho.PSFMixture.gaussian(2.5), "F160W")
    model = pho.Likelihood(scene, [blank], backend="reference").model_images(scene.get_vector())[0]
    exposure = pho.Exposure(model + rng.normal(size=shape) * 0.01, blank.ivar, w, blank.psf, "F160W")
    return pho.Likelihood(scene, [exposure], backend=backend, workers=workers), scene.get_vector() * (1 + 1e-6)


@pytest.mark.parametrize("workers", [1, 2])
def test_compiled_levels_equal_the_per_step_path(workers):
    pytest.importorskip("pho._stamp", reason="the compiled extension is not built here")
    like, theta = _big_galaxy_likelihood("cpu", workers)
    like._backend.min_work_per_thread = 0
    em = like._models[0]
    g, _ = em.forward(like._scene_model.prepare(theta))
    levels = _levels.gaussian_levels(g, len(_levels.grid_levels(like.exposures[0].shape)) - 1)
    assert set(levels.tolist()) == {0, 1, 2, 3, 4}
    theta_v, src = like._split(theta)
    fast = like._compiled(theta_v, True)
    assert fast is not None
    slow = like._lnlike_and_grad_steps(theta_v, src)
    assert fast[0] == pytest.approx(slow[0], rel=1e-12, abs=0)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-12, atol=1e-12 * np.abs(slow[1]).max())
    assert like._compiled(theta_v, False)[0] == pytest.approx(slow[0], rel=1e-12, abs=0)
    # against the reference backend (NumPy kernel, same levels)
    reference, _ = _big_galaxy_likelihood("reference")
    value, grad = reference.lnlike_and_grad(theta)
    assert fast[0] == pytest.approx(value, rel=1e-11, abs=0)
    np.testing.assert_allclose(fast[1], grad, rtol=1e-9, atol=1e-10 * np.abs(grad).max())


def test_compiled_levels_follow_max_level(monkeypatch):
    """Changing MAX_LEVEL rebuilds the plan; with 0 the compiled model is the pixel kernel's, within the
    levels' bound of the levelled one."""
    pytest.importorskip("pho._stamp", reason="the compiled extension is not built here")
    like, theta = _big_galaxy_likelihood("cpu")
    levelled = like.model_images(theta)[0]
    value = like.lnlike(theta)
    monkeypatch.setattr(_levels, "MAX_LEVEL", 0)
    value0 = like.lnlike(theta)
    theta_v, src = like._split(theta)
    assert value0 == pytest.approx(like._lnlike_steps(theta_v, src), rel=1e-12, abs=0)
    flat = like.model_images(theta)[0]
    assert value0 != value
    assert np.max(np.abs(levelled - flat)) < 5e-5 * np.max(flat)


def test_levels_keep_the_galaxy_within_its_accuracy():
    """The big galaxy's image with levels against every Gaussian on the pixels: within 5e-5 of the peak,
    and the same flux to 1e-6."""
    like, theta = _big_galaxy_likelihood("reference")
    levelled = like.model_images(theta)[0]
    be = _backends.get_backend("reference")
    em = like._models[0]
    g, _ = em.forward(like._scene_model.prepare(theta))
    keep = em.significant(g)
    flat = ref.render(np.ascontiguousarray(g if keep is None else g[keep]), like.exposures[0].shape) + \
        like.exposures[0].background
    assert np.max(np.abs(levelled - flat)) < 5e-5 * np.max(flat)
    assert levelled.sum() == pytest.approx(flat.sum(), rel=1e-6)
    assert be.name == "reference"
