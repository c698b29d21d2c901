"""pho.optimize: exact answers on a linear-Gaussian stand-in, and truth recovery on the real model."""

from __future__ import annotations

import numpy as np
import pytest

import pho
from pho.errors import PhoRangeError, PhoValueError
from pho.fit import fisher_matrix, optimize
from pho.priors import Priors, Uniform


class _Exposure:
    def __init__(self, ivar, mask=None):
        self.ivar, self.mask = ivar, mask


class LinearGaussian:
    """Stand-in likelihood: image = A theta, Gaussian noise; the posterior is known exactly."""

    def __init__(self, rng, names, truth, units, shape=(6, 5), sigma=0.5):
        self.parameter_names = list(names)
        p = len(names)
        self.shape = shape
        # units: roughly each parameter's uncertainty, so the stand-in is as ill-scaled as real data
        self.design = rng.normal(size=(p,) + shape) / (np.asarray(units)[:, None, None] * np.sqrt(np.prod(shape)))
        ivar = np.full(shape, 1 / sigma**2)
        mask = np.zeros(shape, bool)
        mask[0, 0] = True  # a masked pixel must not count
        self.exposures = [_Exposure(ivar, mask)]
        self.truth = np.asarray(truth, float)
        self.data = np.tensordot(self.truth, self.design, 1) + rng.normal(size=shape) * sigma
        self.data[0, 0] = 1e6  # garbage under the mask
        self.scene = None
        self.kind = "gaussian"
        self.n_lnlike = 0

    def model_images(self, theta):
        return [np.tensordot(theta, self.design, 1)]

    def gradient_images(self, theta, exposure_index):
        return self.design

    def lnlike_and_grad(self, theta):
        self.n_lnlike += 1
        w = np.where(self.exposures[0].mask, 0, self.exposures[0].ivar)
        r = self.data - self.model_images(theta)[0]
        return -0.5 * np.sum(w * r * r), np.tensordot(self.design, w * r, 2)

    def lnlike(self, theta):
        return self.lnlike_and_grad(theta)[0]

    def exact_posterior(self):
        """Mean and covariance of the likelihood (flat prior)."""
        w = np.where(self.exposures[0].mask, 0, self.exposures[0].ivar).ravel()
        a = self.design.reshape(len(self.truth), -1)
        fisher = (a * w) @ a.T
        cov = np.linalg.inv(fisher)
        mean = cov @ (a * w) @ self.data.ravel()
        return mean, cov


NAMES = ["s0.flux_A", "s0.flux_B", "s0.ra", "s0.dec", "s0.q"]
TRUTH = [10.0, 4.0, 150.0, 2.0, 0.5]
UNITS = [0.3, 0.2, 1e-5, 1e-5, 0.02]


def _priors(half=(5, 5, 1e-3, 1e-3, 0.45)):
    return Priors(NAMES, {n: Uniform(t - h, t + h) for n, t, h in zip(NAMES, TRUTH, half)})


def test_optimize_matches_exact_linear_solution(rng):
    like = LinearGaussian(rng, NAMES, TRUTH, UNITS)
    mean, cov = like.exact_posterior()
    start = np.array(TRUTH) + np.array([1.0, -1.0, 2e-4, -2e-4, 0.2])
    res = optimize(like, _priors(), theta0=start)
    assert res.success
    assert res.uncertainty == "fisher"
    scale = np.sqrt(np.diag(cov))
    # the optimum to a small fraction of sigma, the covariance exactly
    assert np.all(np.abs(res.theta - mean) < 1e-3 * scale), (res.theta - mean) / scale
    np.testing.assert_allclose(res.cov, cov, rtol=1e-8, atol=0)
    np.testing.assert_allclose(res.sigma, scale, rtol=1e-8)
    assert np.all(np.abs(res.theta - TRUTH) < 3 * res.sigma)


def test_hessian_uncertainties_equal_fisher_for_linear_model(rng):
    like = LinearGaussian(rng, NAMES, TRUTH, UNITS)
    _, cov = like.exact_posterior()
    res = optimize(like, _priors(), theta0=np.array(TRUTH), uncertainty="hessian")
    assert res.uncertainty == "hessian"
    np.testing.assert_allclose(res.cov, cov, rtol=1e-5)


def test_fisher_ignores_masked_pixels(rng):
    like = LinearGaussian(rng, NAMES, TRUTH, UNITS)
    info = fisher_matrix(like, np.array(TRUTH))
    a = like.design.reshape(5, -1)[:, 1:]
    np.testing.assert_allclose(info, (a * 4.0) @ a.T, rtol=1e-12)


def test_bound_reported_when_optimum_outside_prior(rng):
    like = LinearGaussian(rng, NAMES, TRUTH, UNITS)
    mean, cov = like.exact_posterior()
    # a prior whose upper edge on flux_A sits 5 sigma below the optimum
    edge = mean[0] - 5 * np.sqrt(cov[0, 0])
    pri = _priors().replace({"s0.flux_A": (edge - 10, edge)})
    res = optimize(like, pri, theta0=np.array([edge - 1] + TRUTH[1:]))
    assert res.at_bound == ["s0.flux_A"]
    assert res.theta[0] == pytest.approx(edge)


def test_optimize_refuses_start_outside_prior(rng):
    like = LinearGaussian(rng, NAMES, TRUTH, UNITS)
    with pytest.raises(PhoRangeError, match=r"s0\.q=1\.5 is outside its prior"):
        optimize(like, _priors(), theta0=np.array(TRUTH[:4] + [1.5]))
    with pytest.raises(PhoValueError, match="uncertainty="):
        optimize(like, _priors(), theta0=np.array(TRUTH), uncertainty="bogus")


def _backend():
    from pho import _backends

    return "cpu" if "cpu" in _backends.available_backends() else "reference"


@pytest.mark.slow
def test_optimizer_recovers_truth_within_3_sigma_on_simulated_data():
    """A Sersic galaxy and a star in two dithered exposures drawn by the model with known noise:
    every parameter of the best fit lies within 3 sigma (Fisher) of the truth."""
    from pho.demo import DEC0_DEG, RA0_DEG, demo_psf, demo_wcs

    rng = np.random.default_rng(11)
    shape, sigma = (28, 28), 0.03
    d = 1 / 3600.0
    truth = pho.Scene([
        pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 4.0}, q=0.5, pa=0.8, n=2.0, rh=0.2),
        pho.PointSource(RA0_DEG + 0.45 * d, DEC0_DEG - 0.3 * d, {"F200W": 1.5}),
    ])
    blanks = [
        pho.Exposure(np.zeros(shape), np.full(shape, 1 / sigma**2), demo_wcs(shape, dx, dy, rot), demo_psf(1.7), "F200W")
        for dx, dy, rot in [(0.0, 0.0, 0.0), (1.4, -0.6, 10.0)]
    ]
    models = pho.Likelihood(truth, blanks, backend=_backend()).model_images(truth.get_vector())
    exposures = [pho.Exposure(m + rng.normal(size=shape) * sigma, b.ivar, b.wcs, b.psf, "F200W") for b, m in zip(blanks, models)]
    start = pho.Scene([
        pho.Sersic(RA0_DEG + 0.05 * d, DEC0_DEG + 0.04 * d, {"F200W": 3.0}, q=0.7, pa=0.5, n=3.0, rh=0.3),
        pho.PointSource(RA0_DEG + 0.5 * d, DEC0_DEG - 0.26 * d, {"F200W": 1.0}),
    ])
    like = pho.Likelihood(start, exposures, backend=_backend())
    res = optimize(like)
    assert res.success and res.at_bound == []
    pulls = (res.theta - truth.get_vector()) / res.sigma
    assert np.all(np.abs(pulls) < 3), dict(zip(res.names, np.round(pulls, 2)))
    # the best-fit scene carries the answer
    np.testing.assert_array_equal(res.scene.get_vector(), res.theta)
