"""Narrow profile components folded onto a few of them (pho.gaussians.narrow_fold, docs/model.md
"Narrow components folded"): the interpolation's exactness, the image against the unfolded model,
the Jacobian against finite differences, and the compiled call against the reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import central_difference, check_gradient, fd_step, tan_wcs

import pho
from pho import _reference as ref
from pho import gaussians
from pho.demo import build_demo, demo_psf
from pho.gaussians import LOCAL_PARAMETERS, image_gaussians, narrow_fold
from pho.sersic import auto_profile

PROFILE = auto_profile()


def _exposure(fwhm_pix, rotation_deg=25.0, flip=True, size=64):
    wcs = tan_wcs(150.0, 2.0, (0.5 * size, 0.5 * size), rotation_deg=rotation_deg, flip=flip)
    return pho.Exposure(np.zeros((size, size)), np.ones((size, size)), wcs, demo_psf(fwhm_pix), "B")


def _sersic(n, rh, q, shape_parameters="q_pa"):
    return pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, q, 0.4, n, rh, profile=PROFILE)],
                     shape_parameters=shape_parameters)


def _unfolded(monkeypatch):
    monkeypatch.setattr(gaussians, "NARROW_NODES", 0)


def test_fold_interpolates_powers_of_r2_exactly():
    """Each folded component's amplitude goes to the nodes by Lagrange weights in r^2: powers of r^2
    below the node count (flux, second moment, ...) are carried exactly; other rows are untouched."""
    e = _exposure(2.0)
    em = gaussians.ExposureModel(gaussians.SceneModel(_sersic(2.0, 0.1, 0.7)), e)
    flat = em._flat[0]
    W = flat["fold"]
    assert W is not None, "a 2-px PSF core at 0.03 arcsec/px must fold the table's narrow components"
    r2 = PROFILE.radii_arcsec**2
    M, L = len(r2), em.n_psf
    assert W.shape == (M * L, M)
    K = gaussians.NARROW_NODES
    for l in range(L):
        Wl = W[l::L]  # (M, M): rows of PSF Gaussian l
        nodes = np.flatnonzero(np.any(Wl != 0, axis=1) & ~np.all(Wl == np.eye(M), axis=1))
        folded = np.flatnonzero(~np.any(Wl != 0, axis=1))
        touched = np.flatnonzero(np.any(Wl[:, :] != np.eye(M), axis=0))  # components whose amplitude moved
        if len(folded) == 0:
            continue
        assert len(nodes) <= K
        for p in range(K):
            np.testing.assert_allclose((r2[nodes] ** p) @ Wl[np.ix_(nodes, touched)], r2[touched] ** p,
                                       rtol=1e-9, atol=1e-12 * r2[touched].max() ** p)
        untouched = np.setdiff1d(np.arange(M), touched)
        assert np.array_equal(Wl[np.ix_(untouched, untouched)], np.eye(len(untouched)))


def test_fold_is_off_with_no_nodes(monkeypatch):
    _unfolded(monkeypatch)
    e = _exposure(2.0)
    assert narrow_fold(PROFILE.radii_arcsec**2, np.array([[[4.0, 0.0, 4.0]]]), e.D) is None
    em = gaussians.ExposureModel(gaussians.SceneModel(_sersic(2.0, 0.1, 0.7)), e)
    assert em._flat[0]["fold"] is None


def test_folded_image_is_within_its_bound(monkeypatch):
    """Over n, r_h, q and PSF widths, the folded image is within 2e-5 of the unfolded one's peak and
    carries the same counts (the fold keeps the sum of amplitudes), with fewer Gaussians to render."""
    worst, saved = 0.0, 0
    for fwhm, n, rh, q in itertools.product([0.6, 1.2, 4.0], [0.5, 1.0, 4.0, 6.0], [0.002, 0.01, 0.1, 1.0], [1.0, 0.15]):
        e = _exposure(fwhm)
        scene = _sersic(n, rh, q)
        g1 = image_gaussians(scene, e, jacobian=False).gaussians
        with monkeypatch.context() as m:
            _unfolded(m)
            g0 = image_gaussians(scene, e, jacobian=False).gaussians

        def counts(g):
            return np.sum(g[:, 0] * 2 * np.pi / np.sqrt(g[:, 3] * g[:, 5] - g[:, 4] ** 2))

        assert counts(g1) == pytest.approx(counts(g0), rel=1e-12)
        i0, i1 = ref.render(g0, e.shape), ref.render(g1, e.shape)
        worst = max(worst, np.abs(i1 - i0).max() / i0.max())
        saved += int(np.count_nonzero(g0[:, 0])) - int(np.count_nonzero(g1[:, 0]))
    assert worst < 2e-5
    assert saved > 0


@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2"])
def test_folded_jacobian_matches_finite_differences(shape_parameters):
    e = _exposure(1.5)
    scene = _sersic(3.0, 0.08, 0.6, shape_parameters)
    theta = scene.get_vector()
    em = gaussians.ExposureModel(gaussians.SceneModel(scene), e)
    assert em._flat[0]["fold"] is not None
    ig = image_gaussians(scene, e, theta)
    G = ig.gaussians.shape[0]

    def f(t):
        return image_gaussians(scene, e, t, jacobian=False).gaussians

    for i, kind in enumerate(scene.parameter_kinds):
        an = np.zeros((G, 6))
        for k in range(len(LOCAL_PARAMETERS)):
            hit = ig.param_index[:, k] == i
            an[hit] += ig.jacobian[hit, :, k]
        fd = central_difference(f, theta, i, fd_step(kind, theta[i]))
        scale = np.maximum(np.abs(an).max(axis=0), np.abs(fd).max(axis=0))
        err = np.abs(fd - an).max(axis=0)
        assert np.all(err <= 2e-6 * scale + 1e-300), f"{scene.parameter_names[i]}: column errors {err} vs scale {scale}"


def test_compiled_call_folds_as_the_reference_does(monkeypatch):
    """The demo (two Sersics and a star, four exposures) folds in every exposure; the compiled call
    leaves the folded Gaussians out and gives the reference backend's ln L and gradient, which match
    finite differences parameter by parameter (boxes widened so that the model is smooth, as in
    test_likelihood.py)."""
    pytest.importorskip("pho._stamp", reason="the compiled extension is not built here")
    demo = build_demo(np.random.default_rng(3))
    theta = demo.truth.get_vector()
    fast = pho.Likelihood(demo.truth, demo.exposures, backend="cpu", workers=1)
    slow = pho.Likelihood(demo.truth, demo.exposures, backend="reference")
    assert all(f["fold"] is not None for em in fast._models for f in em._flat if f is not None)
    v1, g1 = fast.lnlike_and_grad(theta)
    assert fast._plan and fast._plan[0] is not None  # the compiled path ran
    v0, g0 = slow.lnlike_and_grad(theta)
    assert v1 == pytest.approx(v0, rel=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-10 * np.abs(g0).max())
    monkeypatch.setattr(ref, "BOX_NSIGMA", 40.0)
    smooth = pho.Likelihood(demo.truth, demo.exposures, backend="reference")
    _, grad = smooth.lnlike_and_grad(theta)
    check_gradient(smooth.lnlike, grad, theta, demo.truth.parameter_kinds, names=smooth.parameter_names, rtol=1e-5)
