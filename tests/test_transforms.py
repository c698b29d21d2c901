"""Reduced shear and the unconstrained (logistic) sampling transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import central_difference

from pho.errors import PhoRangeError, PhoValueError
from pho.transforms import (
    LogisticTransform,
    TransformedLikelihood,
    q_pa_from_shear,
    q_pa_jacobian_from_shear,
    shear_from_q_pa,
)


def test_shear_definition_and_round_trip(rng):
    q = rng.uniform(0.05, 1.0, 50)
    pa = rng.uniform(-math.pi / 2, math.pi / 2, 50)
    g1, g2 = shear_from_q_pa(q, pa)
    np.testing.assert_allclose(np.hypot(g1, g2), (1 - q) / (1 + q), rtol=1e-14)
    q2, pa2 = q_pa_from_shear(g1, g2)
    np.testing.assert_allclose(q2, q, rtol=1e-12)
    np.testing.assert_allclose(pa2, pa, atol=1e-12)
    # pa and pa + pi are the same ellipse
    np.testing.assert_allclose(shear_from_q_pa(q, pa + math.pi), (g1, g2), atol=1e-14)


def test_shear_jacobian_matches_finite_differences():
    g = np.array([0.3, -0.2])
    jac = q_pa_jacobian_from_shear(g[0], g[1])
    for k in range(2):
        fd = central_difference(lambda t: np.array(q_pa_from_shear(t[0], t[1])), g, k, 1e-6)
        np.testing.assert_allclose(jac[:, k], fd, rtol=1e-8)


def test_shear_of_one_or_more_is_refused():
    with pytest.raises(PhoRangeError, match=r"\|g\|=1 must be < 1"):
        q_pa_from_shear(0.6, 0.8)


def _transform():
    return LogisticTransform([0.0, 0.5, -np.inf, -np.inf, 2.0], [1.0, 6.0, np.inf, 3.0, np.inf])


def test_round_trip_and_bounds():
    t = _transform()
    theta = np.array([0.3, 5.9, -7.0, 2.5, 2.001])
    u = t.to_unconstrained(theta)
    np.testing.assert_allclose(t.from_unconstrained(u), theta, rtol=1e-12)
    # any u maps inside the bounds, even far out
    far = t.from_unconstrained(np.array([-40.0, 40.0, 1e3, 30.0, -30.0]))
    assert 0.0 <= far[0] < 1.0 and 0.5 < far[1] <= 6.0 and far[3] < 3.0 and far[4] > 2.0
    with pytest.raises(PhoRangeError, match=r"parameter 0 = 1.0 is not strictly inside its bounds \(0.0, 1.0\)"):
        t.to_unconstrained(np.array([1.0, 1.0, 0.0, 0.0, 3.0]))
    with pytest.raises(PhoValueError, match="need lower < upper"):
        LogisticTransform([1.0], [0.0])
    with pytest.raises(PhoValueError, match="must have shape"):
        t.from_unconstrained(np.zeros(3))


def test_derivatives_match_finite_differences():
    t = _transform()
    u = np.array([0.4, -1.3, 2.0, 0.7, -0.2])
    _, dtheta = t.from_unconstrained_and_derivative(u)
    log_jac, grad = t.log_jacobian_and_grad(u)
    for i in range(len(u)):
        fd = central_difference(t.from_unconstrained, u, i, 1e-6)
        assert fd[i] == pytest.approx(dtheta[i], rel=1e-8)
        fd_lj = central_difference(lambda v: t.log_jacobian_and_grad(v)[0], u, i, 1e-6)
        assert fd_lj == pytest.approx(grad[i], rel=1e-7, abs=1e-9)
    assert log_jac == pytest.approx(float(np.sum(np.log(np.abs(dtheta)))), rel=1e-13)


class _QuadraticLikelihood:
    """lnL = -sum (theta - c)^2 / 2 with a scene-like bounds provider."""

    parameter_names = ("s0.q", "s0.flux_B", "s0.n")
    center = np.array([0.4, 3.0, 2.0])

    def lnlike(self, theta):
        return -0.5 * float(np.sum((theta - self.center) ** 2))

    def lnlike_and_grad(self, theta):
        return self.lnlike(theta), -(theta - self.center)


def test_transformed_likelihood_includes_log_jacobian():
    t = LogisticTransform([0.0, -np.inf, 0.5], [1.0, np.inf, 6.0])
    tl = TransformedLikelihood(_QuadraticLikelihood(), t)
    u = tl.to_unconstrained(np.array([0.7, 1.0, 4.0]))
    value, grad = tl.lnlike_and_grad(u)
    theta, dtheta = t.from_unconstrained_and_derivative(u)
    assert value == pytest.approx(_QuadraticLikelihood().lnlike(theta) + np.sum(np.log(np.abs(dtheta))), rel=1e-13)
    assert tl.lnlike(u) == pytest.approx(value, rel=1e-14)
    for i in range(3):
        assert central_difference(tl.lnlike, u, i, 1e-6) == pytest.approx(grad[i], rel=1e-7)
    assert tl.parameter_names == _QuadraticLikelihood.parameter_names
