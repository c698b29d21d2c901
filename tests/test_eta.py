"""Conformal shear (shape_parameters="eta"): definition, Jacobians to (q, pa) and back, the shape
matrices and their exact gradient (finite differences to 1e-6), priors, outputs, and a fit that
recovers the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import central_difference, tan_wcs, two_component_psf

import pho
import pho._reference
from pho.errors import PhoRangeError, PhoValueError
from pho.gaussians import _shape_matrices, image_gaussians
from pho.priors import ETA_MAX, ETA_SIGMA, TruncatedNormal, default_priors
from pho.profiles import AnalyticStandInProfile
from pho.transforms import (
    eta_from_q_pa,
    eta_jacobian_from_q_pa,
    q_pa_from_eta,
    q_pa_jacobian_from_eta,
)

PROFILE = AnalyticStandInProfile()


@pytest.fixture
def smooth_boxes(monkeypatch):
    """Reference-backend boxes of 40 sigma: the model is then smooth, so finite differences
    measure the derivative and not a box edge crossing a pixel (see test_likelihood.py)."""
    monkeypatch.setattr(pho._reference, "BOX_NSIGMA", 40.0)


# ------------------------------------------------------------------------------ the transform
def test_eta_definition_and_round_trip(rng):
    q = rng.uniform(0.02, 1.0, 50)
    pa = rng.uniform(-math.pi / 2, math.pi / 2, 50)
    ep, ec = eta_from_q_pa(q, pa)
    np.testing.assert_allclose(np.hypot(ep, ec), -np.log(q), rtol=1e-13)  # |eta| = -ln(b/a) = ln(a/b)
    np.testing.assert_allclose(np.arctan2(ec, ep), 2 * pa, atol=1e-12)
    q2, pa2 = q_pa_from_eta(ep, ec)
    np.testing.assert_allclose(q2, q, rtol=1e-12)
    np.testing.assert_allclose(pa2, pa, atol=1e-12)
    np.testing.assert_allclose(eta_from_q_pa(q, pa + math.pi), (ep, ec), atol=1e-13)  # pa + pi: same ellipse
    # the seed's q_seed = sqrt(b/a) gives half this |eta|: -ln(q_seed) = -ln(q) / 2
    np.testing.assert_allclose(-np.log(np.sqrt(q)), 0.5 * np.hypot(ep, ec), rtol=1e-13)
    with pytest.raises(PhoRangeError, match=r"axis ratio q=1.5 is outside \(0, 1\]"):
        eta_from_q_pa(1.5, 0.0)


def test_jacobians_to_q_pa_and_back_match_finite_differences_and_are_inverse():
    eta = np.array([0.4, -0.7])
    jac = q_pa_jacobian_from_eta(eta[0], eta[1])
    for k in range(2):
        fd = central_difference(lambda t: np.array(q_pa_from_eta(t[0], t[1])), eta, k, 1e-6)
        np.testing.assert_allclose(jac[:, k], fd, rtol=1e-8)
    q, pa = (float(v) for v in q_pa_from_eta(*eta))
    inv = eta_jacobian_from_q_pa(q, pa)
    qp = np.array([q, pa])
    for k in range(2):
        fd = central_difference(lambda t: np.array(eta_from_q_pa(t[0], t[1])), qp, k, 1e-7)
        np.testing.assert_allclose(inv[:, k], fd, rtol=1e-7)
    np.testing.assert_allclose(jac @ inv, np.eye(2), atol=1e-12)


def test_shape_matrices_equal_the_q_pa_ones_and_their_derivatives_match_finite_differences(rng):
    ep = np.concatenate([rng.normal(0, 1, 20), [3e-5, 0.0, 5.0]])
    ec = np.concatenate([rng.normal(0, 1, 20), [-2e-5, 1e-3, -4.0]])
    out = _shape_matrices(ep, ec, "eta")
    q, pa = q_pa_from_eta(ep, ec)
    np.testing.assert_allclose(out[:, 0], _shape_matrices(q, pa, "q_pa")[:, 0], rtol=1e-13, atol=1e-15)
    e = np.hypot(ep, ec)
    far = e > 0  # at eta = 0 exactly |eta| has its kink (test_round_shape_is_regular)
    # steps well inside |eta|: near 0 the curvature of R grows like 1/|eta|
    h = np.minimum(1e-6, 1e-4 * e[far])
    for j, (dx, dy) in enumerate(((h, 0.0 * h), (0.0 * h, h)), start=1):
        plus = _shape_matrices(ep[far] + dx, ec[far] + dy, "eta")[:, 0]
        minus = _shape_matrices(ep[far] - dx, ec[far] - dy, "eta")[:, 0]
        fd = (plus - minus) / (2 * h[:, None])
        np.testing.assert_allclose(out[far, j], fd, rtol=1e-6, atol=1e-9)


def test_round_shape_is_regular():
    out = _shape_matrices(np.array([0.0]), np.array([0.0]), "eta")[0]
    np.testing.assert_allclose(out[0], [1.0, 0.0, 1.0], atol=0)  # R = I at eta = 0
    # the eta-dependent part of R is linear near 0; the trace has the kink of q = exp(-|eta|), whose
    # mean one-sided derivative (0) is returned, as for g
    np.testing.assert_allclose(out[1], [-1.0, 0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(out[2], [0.0, 1.0, 0.0], atol=1e-15)
    small = _shape_matrices(np.array([1e-9]), np.array([0.0]), "eta")[0]
    assert np.all(np.isfinite(small)) and abs(small[0, 0] - 1.0) < 1e-8


# ------------------------------------------------------------------------------ scene and model
def _exposure(shape=(48, 48), sigma=1.0, data=None, rotation_deg=37.0):
    wcs = tan_wcs(150.0, 2.0, (shape[1] / 2 + 0.5, shape[0] / 2 + 0.5), rotation_deg=rotation_deg, flip=True)
    pixels = np.zeros(shape) if data is None else data
    return pho.Exposure(pixels, np.full(shape, 1.0 / sigma**2), wcs, two_component_psf(), "B", counts_per_flux=2.0)


def _scene(shape_parameters="eta"):
    a = 1.0 / 3600.0
    return pho.Scene(
        [
            pho.Sersic(150.0, 2.0, {"B": 40.0}, 0.55, 0.4, 2.2, 0.25, profile=PROFILE),
            pho.PointSource(150.0 + 0.2 * a, 2.0 + 0.1 * a, {"B": 8.0}),
            pho.Sersic(150.0 - 0.15 * a, 2.0 - 0.2 * a, {"B": 25.0}, 0.8, -1.0, 1.2, 0.15, profile=PROFILE),
        ],
        shape_parameters=shape_parameters,
    )


def test_scene_holds_eta_and_gives_q_pa_back():
    scene = _scene()
    assert scene.parameter_names[1:5] == ("s0.ra", "s0.dec", "s0.eta_plus", "s0.eta_cross")
    assert "eta_plus" in pho.sources.PARAMETER_KINDS and "eta_cross" in pho.sources.PARAMETER_KINDS
    theta = scene.get_vector()
    np.testing.assert_allclose(theta[3:5], eta_from_q_pa(0.55, 0.4), rtol=1e-14)
    theta[3:5] = [0.9, -0.2]
    scene.set_vector(theta)
    q, pa = q_pa_from_eta(0.9, -0.2)
    assert scene.sources[0].q == pytest.approx(float(q), rel=1e-14)
    assert scene.sources[0].pa == pytest.approx(float(pa), rel=1e-14)
    lo, hi = scene.parameter_bounds()
    assert np.all(np.isinf(lo[3:5])) and np.all(np.isinf(hi[3:5]))
    bad = theta.copy()
    bad[3] = 800.0
    with pytest.raises(PhoRangeError, match=r"conformal shear of s0 has \|eta\| = 800"):
        scene.check_vector(bad)
    with pytest.raises(PhoValueError, match="'eta'"):
        pho.Scene([pho.Sersic(150.0, 2.0, {"B": 1.0}, 0.5, 0.0, 2.0, 0.3, profile=PROFILE)], shape_parameters="e1_e2")


def test_eta_scene_renders_the_same_image_as_q_pa():
    exp = _exposure()
    a, b = _scene("q_pa"), _scene("eta")
    np.testing.assert_allclose(pho.render(b, exp), pho.render(a, exp), rtol=1e-12, atol=1e-12)


def test_image_gaussian_jacobian_matches_finite_differences():
    scene, exp = _scene(), _exposure()
    theta = scene.get_vector()
    ig = image_gaussians(scene, exp, theta)
    G = ig.gaussians.shape[0]
    full = np.zeros((G, 6, scene.n_params + 1))
    for k in range(ig.param_index.shape[1]):
        np.add.at(full, (np.arange(G), slice(None), ig.param_index[:, k]), ig.jacobian[:, :, k])
    for i, kind in enumerate(scene.parameter_kinds):
        if kind not in ("eta_plus", "eta_cross"):
            continue
        fd = central_difference(lambda t: image_gaussians(scene, exp, t, jacobian=False).gaussians, theta, i, 1e-6)
        an = full[:, :, i]
        scale = np.maximum(np.abs(an).max(axis=0), np.abs(fd).max(axis=0))
        err = np.abs(fd - an).max(axis=0)
        assert np.all(err <= 1e-6 * scale + 1e-13), (scene.parameter_names[i], err / np.maximum(scale, 1e-300))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_likelihood_gradient_matches_finite_differences_to_1e6(rng, smooth_boxes, backend):
    if backend not in pho._backends.available_backends():
        pytest.skip(f"backend {backend} not built")
    scene = _scene()
    model = pho.render(scene, _exposure())
    exp = _exposure(data=model + 0.1 * rng.normal(size=model.shape), sigma=0.1)
    like = pho.Likelihood(scene, [exp], backend=backend)
    theta = scene.get_vector()
    kinds = scene.parameter_kinds
    eta = [i for i, k in enumerate(kinds) if k.startswith("eta")]
    assert len(eta) == 4
    theta[[0, 6]] *= 1.1  # off the optimum: the gradient is far from zero
    theta[eta] += [0.15, -0.1, -0.12, 0.2]
    value, grad = like.lnlike_and_grad(theta)
    # the eta parameters to 1e-6 relative, one by one; the others to 1e-5, as test_likelihood.py checks them
    for i in range(len(theta)):
        is_eta = i in eta
        step = {"flux": 1e-4 * abs(theta[i]), "ra": 1e-8, "dec": 1e-8}.get(kinds[i], 1e-5)
        fd = central_difference(like.lnlike, theta, i, step)
        rtol = 1e-6 if is_eta else 1e-5
        assert abs(fd - grad[i]) <= rtol * abs(grad[i]) + 1e-13 * abs(value) / step, (scene.parameter_names[i], fd, grad[i])
        if is_eta:
            assert abs(grad[i]) > 1.0  # a derivative that can fail


# ------------------------------------------------------------------------------ priors
def test_truncated_normal_prior_matches_scipy_and_its_own_derivatives():
    from scipy.stats import truncnorm

    d = TruncatedNormal(0.3, 0.8, -1.5, 2.0)
    ref = truncnorm((d.lo - d.mu) / d.sigma, (d.hi - d.mu) / d.sigma, loc=d.mu, scale=d.sigma)
    u = np.linspace(0.01, 0.99, 21)
    np.testing.assert_allclose(d.transform(u), ref.ppf(u), rtol=1e-10, atol=1e-12)
    for x in (-1.2, 0.0, 0.3, 1.9):
        assert d.ln_prob(x) == pytest.approx(ref.logpdf(x), rel=1e-12)
        assert d.grad_ln_prob(x) == pytest.approx((d.ln_prob(x + 1e-6) - d.ln_prob(x - 1e-6)) / 2e-6, rel=1e-6)
        ux = ref.cdf(x)
        assert d.dtheta_du(x) == pytest.approx((d.transform(ux + 1e-7) - d.transform(ux - 1e-7)) / 2e-7, rel=1e-6)
    assert d.ln_prob(2.5) == -math.inf
    with pytest.raises(PhoValueError, match="sigma > 0"):
        TruncatedNormal(0.0, 0.0, -1.0, 1.0)


def test_default_eta_prior_is_an_isotropic_gaussian_bounded_at_q_min():
    scene = _scene()
    like = pho.Likelihood(scene, [_exposure(data=pho.render(scene, _exposure()))])
    priors = default_priors(like)
    for name in ("s0.eta_plus", "s0.eta_cross", "s2.eta_plus", "s2.eta_cross"):
        d = priors[name]
        assert isinstance(d, TruncatedNormal) and (d.mu, d.sigma) == (0.0, ETA_SIGMA)
        assert (d.lo, d.hi) == (-ETA_MAX, ETA_MAX) and math.exp(-ETA_MAX) == pytest.approx(0.1)
    # the density depends on |eta| only (no preferred angle) inside the box
    i, j = like.parameter_names.index("s0.eta_plus"), like.parameter_names.index("s0.eta_cross")
    theta = like.initial
    values = []
    for ang in np.linspace(0, math.pi, 7):
        theta[i], theta[j] = 1.2 * math.cos(ang), 1.2 * math.sin(ang)
        values.append(priors.ln_prob(theta))
    np.testing.assert_allclose(values, values[0], rtol=1e-13)


def test_nuts_target_gradient_with_eta_prior_matches_finite_differences(rng):
    from pho.nuts import _Target

    scene = _scene()
    model = pho.render(scene, _exposure())
    like = pho.Likelihood(scene, [_exposure(data=model + rng.normal(size=model.shape))])
    priors = default_priors(like)
    target = _Target(like, priors)
    assert not target._flat  # the Gaussian eta prior enters the density and its gradient
    u = target.to_unconstrained(like.initial)
    u = u + rng.normal(0, 0.05, u.shape)
    _, grad, _ = target(u)
    for i, name in enumerate(like.parameter_names):
        if "eta" not in name:
            continue
        # step 1e-5: at 1e-6 the rounding of ln L (~1e4 here) alone moves the difference by ~5e-7
        fd = central_difference(lambda v: target(v)[0], u, i, 1e-5)
        assert fd == pytest.approx(grad[i], rel=1e-6, abs=1e-6), name


# ------------------------------------------------------------------------------ fits and outputs
def _one_galaxy(rng, q, pa, flux=400.0, shape=(32, 32)):
    truth = pho.Scene([pho.Sersic(150.0, 2.0, {"B": flux}, q, pa, 1.5, 0.2, profile=PROFILE)], shape_parameters="eta")
    model = pho.render(truth, _exposure(shape))
    data = model + rng.normal(size=model.shape)
    start = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 0.8 * flux}, 0.9, pa + 0.3, 2.0, 0.25, profile=PROFILE)],
                      shape_parameters="eta")
    return truth, pho.Likelihood(start, [_exposure(shape, data=data)], backend="cpu" if "cpu" in pho._backends.available_backends() else "reference")


@pytest.mark.slow
@pytest.mark.parametrize("q, pa", [(0.45, 0.7), (0.7, -1.2)])
def test_fit_in_eta_recovers_the_truth_within_errors(rng, q, pa):
    truth, like = _one_galaxy(rng, q, pa)
    best = pho.optimize(like)
    assert best.success
    t = dict(zip(truth.parameter_names, truth.get_vector()))
    for name in ("s0.eta_plus", "s0.eta_cross", "s0.flux_B", "s0.rh", "s0.n"):
        j = best.names.index(name)
        assert abs(best.theta[j] - t[name]) < 3 * best.sigma[j], (name, best.theta[j], t[name], best.sigma[j])
    # q and pa are reported beside eta, errors propagated through the Jacobian
    (q_fit, q_err), (pa_fit, pa_err) = best.derived["s0.q"], best.derived["s0.pa"]
    assert 0 < q_err < 0.1 and 0 < pa_err < 0.2
    assert abs(q_fit - q) < 3 * q_err
    assert abs((pa_fit - pa + math.pi / 2) % math.pi - math.pi / 2) < 3 * pa_err
    assert "s0.q (derived)" in str(best)


@pytest.mark.slow
def test_sampled_eta_reports_q_and_pa_in_summary_and_catalog(rng, tmp_path):
    from pho.io import read_catalog, write_catalog
    from pho.sample import SampleResult, _summarize

    truth, like = _one_galaxy(rng, 0.5, 0.3)
    best = pho.optimize(like)
    priors = default_priors(like, theta=best.theta)
    # posterior draws from the Fisher Gaussian stand in for a sampler's (the summary is what is tested)
    draws = rng.multivariate_normal(best.theta, best.cov, size=4000)
    weights = np.full(len(draws), 1.0 / len(draws))
    summary = _summarize(draws, weights, best.names, priors)
    q_draws, pa_draws = q_pa_from_eta(draws[:, 3], draws[:, 4])
    assert summary["s0.q"]["median"] == pytest.approx(float(np.median(q_draws)), abs=1e-3)
    assert summary["s0.q"]["std"] == pytest.approx(best.derived["s0.q"][1], rel=0.1)
    assert summary["s0.pa"]["median"] == pytest.approx(best.derived["s0.pa"][0], abs=0.02)
    post = SampleResult(samples=draws, weights=weights, logl=np.zeros(len(draws)), logz=0.0, logz_err=0.0,
                        names=best.names, summary=summary)
    assert "s0.pa (derived)" in str(post)
    path = write_catalog(tmp_path / "cat.fits", best.scene, best, post)
    cat, samples = read_catalog(path)
    assert cat["eta_plus_best"][0] == pytest.approx(best.theta[3])
    assert cat["q_best"][0] == pytest.approx(best.derived["s0.q"][0])
    assert cat["q_err"][0] == pytest.approx(best.derived["s0.q"][1])
    assert cat["pa_median"][0] == pytest.approx(summary["s0.pa"]["median"])
    assert cat["q_best"][0] == pytest.approx(best.scene.sources[0].q, rel=1e-12)
    assert "s0_eta_cross" in samples.colnames
