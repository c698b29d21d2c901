"""pho.priors: transforms, densities, overrides and data-driven default bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pho.errors import PhoRangeError, PhoValueError
from pho.priors import LogUniform, Priors, Uniform, aperture_flux, default_priors, parameter_kind


def test_uniform_and_loguniform_transforms_and_densities():
    u = Uniform(2.0, 6.0)
    assert u.transform(0.25) == 3.0 and u.ln_prob(3.0) == pytest.approx(-math.log(4))
    assert u.ln_prob(6.5) == -math.inf
    assert Uniform(0.0, 1.0, periodic=True).ln_prob(7.3) == 0.0  # a periodic parameter wraps
    lu = LogUniform(0.01, 1.0)
    assert lu.transform(0.5) == pytest.approx(0.1)
    # density integrates to one
    x = np.geomspace(0.01, 1.0, 20001)
    assert np.trapezoid(np.exp([lu.ln_prob(v) for v in x]), x) == pytest.approx(1.0, rel=1e-6)
    # d theta/d u matches a finite difference of the transform
    h = 1e-6
    assert lu.dtheta_du(lu.transform(0.3)) == pytest.approx((lu.transform(0.3 + h) - lu.transform(0.3 - h)) / (2 * h), rel=1e-6)
    assert lu.grad_ln_prob(0.2) == pytest.approx((lu.ln_prob(0.2 + h) - lu.ln_prob(0.2 - h)) / (2 * h), rel=1e-6)
    with pytest.raises(PhoValueError, match="lo < hi"):
        Uniform(1.0, 1.0)
    with pytest.raises(PhoValueError, match="0 < lo < hi"):
        LogUniform(0.0, 1.0)


def test_priors_vector_methods_and_overrides():
    names = ["s0.flux_F200W", "s0.pa", "s1.rh", "s0.rh"]
    p = Priors(names, {"s0.flux_F200W": Uniform(0, 10), "s0.pa": Uniform(0, math.pi, periodic=True),
                       "s1.rh": Uniform(0.1, 1), "s0.rh": Uniform(0.1, 1)})
    np.testing.assert_allclose(p.prior_transform([0.5, 0.5, 0.0, 1.0]), [5.0, math.pi / 2, 0.1, 1.0])
    assert p.periodic == [1]
    q = p.replace({"rh": (0.2, 0.4), "s0.flux_F200W": LogUniform(1, 100)})
    assert q["s1.rh"] == Uniform(0.2, 0.4) and q["s0.rh"] == Uniform(0.2, 0.4)
    assert isinstance(q["s0.flux_F200W"], LogUniform) and p["s0.rh"] == Uniform(0.1, 1)  # original untouched
    assert p.replace({"s0.pa": (0.0, 1.0)})["s0.pa"].periodic  # a replaced angle stays periodic
    with pytest.raises(PhoValueError, match="matches no parameter"):
        p.replace({"s7.q": (0, 1)})
    with pytest.raises(PhoRangeError, match=r"s1\.rh=2 is outside its prior \[0\.1, 1\]") as err:
        p.check_inside(np.array([1.0, 0.1, 2.0, 0.5]))
    assert err.value.value == 2.0
    with pytest.raises(PhoValueError, match="no prior given"):
        Priors(names, {"s0.pa": Uniform(0, 1)})
    assert parameter_kind("s3.flux_F444W") == "flux" and parameter_kind("s0.rh") == "rh"


def _one_galaxy(rng, sigma=0.05):
    import pho
    from pho.demo import demo_psf, demo_wcs, RA0_DEG, DEC0_DEG

    shape = (30, 30)
    scene = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 5.0}, q=0.6, pa=0.5, n=1.5, rh=0.2)])
    wcs = demo_wcs(shape, 0.0, 0.0, 0.0)
    pixels = rng.normal(size=shape) * sigma
    pixels[14, 15] += 4.0  # a known amount near the source (0-based centre (14.5, 14.5))
    exp = pho.Exposure(pixels + 1.0, np.full(shape, 1 / sigma**2), wcs, demo_psf(1.8), "F200W",
                       counts_per_flux=2.0, background=1.0)

    class L:
        parameter_names = scene.parameter_names
        exposures = [exp]

    L.scene = scene
    return L, exp, pixels, sigma


def test_the_vector_form_gives_the_per_parameter_numbers(rng):
    """Priors of the three shipped types are evaluated as whole vectors; the numbers are those of
    the distributions' own methods, inside, outside, periodic, NaN; another type takes the loops."""
    from pho.priors import TruncatedNormal

    dists = {"a": Uniform(-1.0, 2.0), "b": LogUniform(0.01, 10.0), "c": Uniform(0.0, math.pi, periodic=True),
             "d": TruncatedNormal(0.3, 0.2, -0.5, 1.5), "e": LogUniform(1.0, 3.0), "f": TruncatedNormal(-2.0, 1.0, -4.0, 0.0)}
    p = Priors(list(dists), dists)
    assert p._vector is not None

    def looped(method, theta):
        return [getattr(d, method)(x) for d, x in zip(p.distributions, theta)]

    for _ in range(50):
        u = rng.uniform(size=6)
        assert np.allclose(p.prior_transform(u), looped("transform", u), rtol=1e-14, atol=0)
        theta = p.prior_transform(u)
        assert math.isclose(p.ln_prob(theta), math.fsum(looped("ln_prob", theta)), rel_tol=1e-13)
        assert np.allclose(p.grad_ln_prob(theta), looped("grad_ln_prob", theta), rtol=1e-14, atol=0)
    inside = p.prior_transform(np.full(6, 0.5))
    for i, bad in [(0, 2.5), (1, 0.001), (3, -0.6), (4, float("nan"))]:
        theta = inside.copy()
        theta[i] = bad
        assert p.ln_prob(theta) == -math.inf == math.fsum(looped("ln_prob", theta))
    theta = inside.copy()
    theta[2] = 4.0  # periodic: never outside
    assert math.isclose(p.ln_prob(theta), math.fsum(looped("ln_prob", theta)), rel_tol=1e-13)

    class Other(Uniform):
        pass

    q = Priors(["a"], {"a": Other(0.0, 2.0)})
    assert q._vector is None and math.isclose(q.ln_prob([1.0]), -math.log(2.0))


def test_default_priors_from_data(rng):
    pytest.importorskip("pho.sersic")
    like, exp, pixels, sigma = _one_galaxy(rng)
    p = default_priors(like)
    scale = exp.pixel_scale_arcsec
    assert p["s0.dec"].hi - p["s0.dec"].lo == pytest.approx(2 * 3 * scale / 3600)
    assert p["s0.q"] == Uniform(0.1, 1.0)
    assert p["s0.pa"].periodic and p["s0.pa"].hi - p["s0.pa"].lo == pytest.approx(math.pi)
    assert (p["s0.n"].lo, p["s0.n"].hi) == tuple(like.scene.sources[0].profile.n_range)
    # the default profile serves any size: r_h from 0.001" to 10" (no longer the one-scale 1.28")
    assert (p["s0.rh"].lo, p["s0.rh"].hi) == (0.001, 10.0)
    # flux bounds from the aperture sum, in flux units (counts / counts_per_flux, background removed)
    radius = max(4 * 0.2 + 3 * scale, 5 * scale)
    s_ap, sig = aperture_flux(exp, like.scene.sources[0].ra, like.scene.sources[0].dec, radius)
    yy, xx = np.mgrid[0:30, 0:30]
    inside = (xx - 14.5) ** 2 + (yy - 14.5) ** 2 <= (radius / scale) ** 2
    assert s_ap == pytest.approx(pixels[inside].sum() / 2.0, rel=1e-9)
    assert sig == pytest.approx(sigma * math.sqrt(inside.sum()) / 2.0)
    assert p["s0.flux_F200W"] == Uniform(-5 * sig, 3 * s_ap + 10 * sig)
    # overrides apply, and an initial guess outside an overridden bound is refused
    assert default_priors(like, overrides={"rh": (0.1, 0.5)})["s0.rh"] == Uniform(0.1, 0.5)
    with pytest.raises(PhoRangeError, match=r"s0\.rh=0\.2 is outside"):
        default_priors(like, overrides={"s0.rh": (0.3, 0.5)})


def test_default_priors_take_each_sources_own_profile(rng):
    """n and rh bounds come from each source's profile (sources may carry different ones)."""
    import pho
    from pho.sersic import MultiScaleSersic

    like, exp, _, _ = _one_galaxy(rng)
    s0 = like.scene.sources[0]
    narrow = MultiScaleSersic(rh_range_arcsec=(0.01, 2.0))
    s1 = pho.Sersic(s0.ra, s0.dec, {"F200W": 3.0}, q=0.5, pa=0.1, n=2.0, rh=0.3, profile=narrow)
    scene = pho.Scene([s0, s1])

    class L:
        parameter_names = scene.parameter_names
        exposures = [exp]

    L.scene = scene
    p = default_priors(L)
    assert (p["s0.rh"].lo, p["s0.rh"].hi) == (0.001, 10.0)
    assert (p["s1.rh"].lo, p["s1.rh"].hi) == (0.01, 2.0)
