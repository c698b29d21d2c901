"""The one-call compiled likelihood (pho._stamp) against the per-step path it replaces on the cpu backend."""

import numpy as np
import pytest

import pho
from pho import likelihood as likelihood_module
from helpers import blended_problem

pytest.importorskip("pho._stamp", reason="the compiled extension is not built here")


def _both(like, theta, numpy_model=False):
    """(compiled lnL, compiled grad, compiled lnlike) and the same by the per-step path (with the
    NumPy image Gaussians and vector-Jacobian product where ``numpy_model``)."""
    theta, src = like._split(theta)
    fast = like._compiled(theta, True)
    assert fast is not None, "the compiled path should apply here"
    fast_lnl = like._compiled(theta, False)[0]
    saved = [em.compiled for em in like._models]
    try:
        if numpy_model:
            for em in like._models:
                em.compiled = False
        slow = like._lnlike_and_grad_steps(theta, src)
        slow_lnl = like._lnlike_steps(theta, src)
    finally:
        for em, c in zip(like._models, saved):
            em.compiled = c
    return fast, fast_lnl, slow, slow_lnl


def _assert_same(fast, fast_lnl, slow, slow_lnl):
    assert fast[0] == pytest.approx(slow[0], rel=1e-12, abs=0)
    assert fast_lnl == pytest.approx(slow_lnl, rel=1e-12, abs=0)
    assert fast_lnl == pytest.approx(fast[0], rel=1e-14, abs=0)
    g, g0 = fast[1], slow[1]
    assert g.shape == g0.shape
    # each component to 1e-12 of itself, or of the largest (components near zero cancel)
    np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-12 * np.abs(g0).max())


@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2", "eta"])
@pytest.mark.parametrize("sky", [None, "constant", "plane", ("plane", "none")])
def test_compiled_stamp_equals_per_step_path(cosmos_image_path, rng, kind, shape_parameters, sky):
    """Two Sersics and a star, two exposures in two bands (rotated, flipped WCS), all noise models,
    shape parameterizations and sky models: the one compiled call gives the per-step numbers."""
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind=kind, shape_parameters=shape_parameters)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1, kind=kind, sky=sky)
    theta = np.concatenate([theta, 0.003 * np.arange(1, len(like.sky_names) + 1)])  # the model stays > 0
    for numpy_model in (False, True):
        _assert_same(*_both(like, theta, numpy_model=numpy_model))


def test_compiled_stamp_with_the_table_profile_and_masked_pixels(cosmos_image_path, rng):
    """pho's own Sersic table (multi-scale amplitudes), some masked pixels, several threads."""
    from pho.sersic import auto_profile

    scene, exposures, theta = blended_problem(cosmos_image_path, rng, profile=auto_profile())
    e = exposures[0]
    mask = np.zeros(e.shape, dtype=bool)
    mask[5:9, 10:30] = True
    exposures[0] = pho.Exposure(e.pixels, e.ivar, e.wcs, e.psf, e.band, mask=mask, counts_per_flux=e.counts_per_flux,
                                background=e.background)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=2)
    like._backend.min_work_per_thread = 0  # both threads on these small stamps
    _assert_same(*_both(like, theta))
    # the public calls take the compiled path and return its numbers
    value, grad = like.lnlike_and_grad(theta)
    fast = like._compiled(theta, True)
    assert value == fast[0] and np.array_equal(grad, fast[1])
    assert like.lnlike(theta) == fast[0]


def test_compiled_stamp_without_the_negligible_test(cosmos_image_path, rng, monkeypatch):
    """NEGLIGIBLE_FRACTION = 0 (every Gaussian kept) is read at each call, as on the per-step path."""
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
    _assert_same(*_both(like, theta))
    monkeypatch.setattr(pho.gaussians, "NEGLIGIBLE_FRACTION", 0.0)
    _assert_same(*_both(like, theta))


def test_compiled_stamp_switch_and_where_it_does_not_apply(cosmos_image_path, rng, monkeypatch):
    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    assert pho.Likelihood(scene, exposures, backend="reference")._build_plan() is None
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
    v1, g1 = like.lnlike_and_grad(theta)
    assert like._plan  # built on the first call
    monkeypatch.setattr(likelihood_module, "COMPILED_STAMP", False)
    off = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
    v0, g0 = off.lnlike_and_grad(theta)
    assert off._plan is None
    assert v1 == pytest.approx(v0, rel=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-12 * np.abs(g0).max())


@pytest.mark.parametrize("workers", [1, 2])
def test_kept_exponentials_equal_the_ones_computed_again(cosmos_image_path, rng, workers):
    """The gradient pass reading the render's exponentials (pho._stamp.keep_max) gives the numbers of
    the pass that computes them again, on one thread (Gaussian by Gaussian) and two (row by row); the
    buffer grows when the boxes do (larger r_h), and a limit below a call's work turns keeping off."""
    from pho import _stamp

    scene, exposures, theta = blended_problem(cosmos_image_path, rng, profile=None)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=workers)
    like._backend.min_work_per_thread = 0
    wider = theta.copy()
    wider[np.array(scene.parameter_names) == "s0.rh"] *= 3.0  # larger boxes: the buffer must grow
    default = _stamp.keep_max()
    try:
        for th in (theta, wider, theta):
            _stamp.keep_max(default)
            kept = like._compiled(th, True)
            _stamp.keep_max(0)
            again = like._compiled(th, True)
            # on one thread the render also takes each box's rows by recurrence (pho_render_box_keep)
            assert kept[0] == pytest.approx(again[0], rel=1e-13, abs=0)
            np.testing.assert_allclose(kept[1], again[1], rtol=1e-12, atol=1e-12 * np.abs(again[1]).max())
            _assert_same(*_both(like, th))
            _stamp.keep_max(default)
            _assert_same(*_both(like, th))
    finally:
        _stamp.keep_max(default)
    with pytest.raises(ValueError, match=">= 0"):
        _stamp.keep_max(-1)


def test_compiled_stamp_falls_back_for_the_errors(cosmos_image_path, rng):
    """Values the per-step path refuses give its errors through the compiled path too."""
    scene, exposures, theta = blended_problem(cosmos_image_path, rng, kind="poisson")
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1, kind="poisson", sky="constant")
    th = np.concatenate([theta, [0.0, 0.0]])
    th[-2] = -10.0  # the sky takes the model below zero on exposure 0
    with pytest.raises(pho.errors.PhoValueError, match="<= 0"):
        like.lnlike_and_grad(th)
    with pytest.raises(pho.errors.PhoValueError, match="<= 0"):
        like.lnlike(th)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
    big = theta.copy()
    big[np.array(scene.parameter_kinds) == "flux"] = 1e200
    with pytest.raises(pho.errors.PhoValueError, match="overflow"):
        like.lnlike_and_grad(big)


def test_compiled_stamp_is_rebuilt_for_copies_and_pickles(cosmos_image_path, rng):
    import pickle

    scene, exposures, theta = blended_problem(cosmos_image_path, rng)
    like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
    v, g = like.lnlike_and_grad(theta)
    for other in (pickle.loads(pickle.dumps(like)), like.with_workers(1), like.with_psf_at(theta)):
        assert other._plan is False or other._plan is None or other._plan[0] is not like._plan[0]
        v1, g1 = other.lnlike_and_grad(theta)
        assert v1 == v and np.array_equal(g1, g)


@pytest.mark.parametrize("which", ["table", "multiscale"])
def test_compiled_profile_amplitudes_equal_the_profile(which):
    """pho._stamp's spline and band blending give the profile's amplitudes, over the whole r_h range
    (every scale and every blending band of the multi-scale profile) and n range."""
    from pho._stamp import profile_amplitudes
    from pho.likelihood import _profile_spec
    from pho.sersic import auto_profile, default_profile

    prof = default_profile() if which == "table" else auto_profile()
    spec = _profile_spec(prof)
    assert spec is not None
    lo, hi = prof.rh_range_arcsec
    n_lo, n_hi = prof.n_range
    rhs = np.clip(np.exp(np.linspace(np.log(lo), np.log(hi), 400)), lo, hi)
    if which == "multiscale":  # inside each blending band too
        rhs = np.concatenate([rhs, [np.sqrt(b[0] * b[1]) for b in prof._bands], [b[0] * 1.0001 for b in prof._bands]])
    blended = 0
    for k, rh in enumerate(rhs):
        n = n_lo + (n_hi - n_lo) * ((k * 0.37) % 1.0)
        got = profile_amplitudes(spec, n, float(rh))
        want = np.array(prof.amplitudes(n, float(rh)))
        for row in range(3):
            np.testing.assert_allclose(got[row], want[row], rtol=0, atol=1e-13 * max(np.abs(want[row]).max(), 1e-300))
        if which == "multiscale":
            blended += prof._weight(float(rh))[1] > 0
    assert which == "table" or blended >= len(prof._bands)
