"""Sky background as parameters (pho.Likelihood(sky=...)): default off and unchanged, exact
gradient (finite differences to 1e-6), derivative images, priors, a fit that recovers an injected
level and plane with the sources, catalog output, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from helpers import central_difference, tan_wcs, two_component_psf

import pho
import pho._reference
from pho.errors import PhoValueError, PhoWarning
from pho.priors import default_priors
from pho.profiles import AnalyticStandInProfile

PROFILE = AnalyticStandInProfile()
A = 1.0 / 3600.0


@pytest.fixture
def smooth_boxes(monkeypatch):
    """Reference-backend boxes of 40 sigma, so finite differences see a smooth model (test_likelihood.py)."""
    monkeypatch.setattr(pho._reference, "BOX_NSIGMA", 40.0)


def _scene():
    return pho.Scene([
        pho.Sersic(150.0, 2.0, {"B": 600.0}, 0.6, 0.4, 2.0, 0.2, profile=PROFILE),
        pho.PointSource(150.0 + 0.25 * A, 2.0 - 0.15 * A, {"B": 150.0}),
    ])


def _blank(shape, rotation_deg=0.0, background=1.5, sigma=1.0):
    wcs = tan_wcs(150.0, 2.0, (shape[1] / 2 + 0.5, shape[0] / 2 + 0.5), rotation_deg=rotation_deg)
    return pho.Exposure(np.zeros(shape), np.full(shape, 1.0 / sigma**2), wcs, two_component_psf(), "B",
                        counts_per_flux=2.0, background=background)


def _sky(shape, level, sx=0.0, sy=0.0):
    ny, nx = shape
    xs, ys = np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2
    return level + sx * xs[None, :] + sy * ys[:, None]


def _problem(rng, skies, shapes=((40, 36), (30, 30)), sigma=1.0, kind="gaussian"):
    """Data = sources + the given sky (level, sx, sy) per exposure + noise."""
    scene = _scene()
    blanks = [_blank(s, rotation_deg=20.0 * k, sigma=sigma) for k, s in enumerate(shapes)]
    exposures = []
    for b, m, sky in zip(blanks, pho.Likelihood(scene, blanks).model_images(scene.get_vector()), skies):
        mean = m + _sky(b.shape, *sky)
        data = rng.poisson(mean).astype(float) if kind == "poisson" else mean + sigma * rng.normal(size=mean.shape)
        exposures.append(pho.Exposure(data, b.ivar, b.wcs, b.psf, "B", counts_per_flux=2.0, background=b.background,
                                      name=f"exp{len(exposures)}"))
    return scene, exposures


# ------------------------------------------------------------------------------ layout, default off
def test_sky_parameters_follow_the_sources_in_the_vector(rng):
    scene, exposures = _problem(rng, [(0, 0, 0), (0, 0, 0)])
    like = pho.Likelihood(scene, exposures, sky=["plane", "constant"])
    assert like.parameter_names == scene.parameter_names + ("sky_0.level", "sky_0.slope_x", "sky_0.slope_y",
                                                            "sky_1.level")
    assert like.n_params == scene.n_params + 4 and like.n_source_params == scene.n_params
    assert like.sky_models == ("plane", "constant")
    np.testing.assert_array_equal(like.initial, np.concatenate([scene.get_vector(), np.zeros(4)]))
    lo, hi = like.parameter_bounds()
    assert lo.shape == (like.n_params,) and np.all(np.isinf(lo[-4:])) and np.all(np.isinf(hi[-4:]))
    theta = like.initial
    theta[-4:] = [0.5, 0.01, -0.02, 0.3]
    ny, nx = exposures[0].shape
    np.testing.assert_allclose(like.sky_image(theta, 0), _sky((ny, nx), 0.5, 0.01, -0.02), rtol=1e-14)
    assert like.sky_image(theta, 1) == 0.3
    # the mean of the plane over the stamp is its level (the slopes are about the stamp centre)
    assert float(np.mean(like.sky_image(theta, 0))) == pytest.approx(0.5, rel=1e-13)


def test_default_off_is_unchanged(rng):
    scene, exposures = _problem(rng, [(0.3, 0, 0), (0, 0, 0)])
    theta = scene.get_vector() * 1.0
    theta[0] *= 1.1
    base = pho.Likelihood(scene, exposures)
    assert base.parameter_names == scene.parameter_names and base.sky_names == ()
    v0, g0 = base.lnlike_and_grad(theta)
    for sky in (None, "none", ["none", "none"]):
        v, g = pho.Likelihood(scene, exposures, sky=sky).lnlike_and_grad(theta)
        assert v == v0 and np.array_equal(g, g0)
    # a sky at zero adds exactly nothing: the scene's part of the gradient is bit-identical
    with_sky = pho.Likelihood(scene, exposures, sky="plane")
    v, g = with_sky.lnlike_and_grad(np.concatenate([theta, np.zeros(6)]))
    assert v == v0 and np.array_equal(g[: scene.n_params], g0)
    # and the model is the one of the known background only: data - background has its own mean
    images = base.model_images(theta)
    for m, m2 in zip(images, with_sky.model_images(np.concatenate([theta, np.zeros(6)]))):
        assert np.array_equal(m, m2)


# ------------------------------------------------------------------------------ exact gradient
@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_sky_gradient_matches_finite_differences_to_1e6(rng, smooth_boxes, kind, backend):
    if backend not in pho._backends.available_backends():
        pytest.skip(f"backend {backend} not built")
    scene, exposures = _problem(rng, [(4.0, 0.05, -0.03), (3.0, 0, 0)], kind=kind)
    like = pho.Likelihood(scene, exposures, sky=["plane", "constant"], kind=kind, backend=backend)
    theta = like.initial
    theta[0] *= 1.1
    theta[-4:] = [3.0, 0.02, -0.01, 3.6]  # off the truth: every derivative is far from zero
    value, grad = like.lnlike_and_grad(theta)
    assert value == pytest.approx(like.lnlike(theta), rel=1e-14)
    for i, name in enumerate(like.parameter_names):
        if name.startswith("sky_"):
            fd = central_difference(like.lnlike, theta, i, 1e-4 if name.endswith("level") else 1e-6)
            assert abs(fd - grad[i]) <= 1e-6 * abs(grad[i]), (name, fd, grad[i])
            assert abs(grad[i]) > 1.0, name  # a derivative that can fail
        else:
            kind_i = pho.priors.parameter_kind(name)
            step = {"flux": 1e-4 * abs(theta[i]), "ra": 1e-8, "dec": 1e-8}.get(kind_i, 1e-5)
            fd = central_difference(like.lnlike, theta, i, step)
            assert abs(fd - grad[i]) <= 1e-5 * abs(grad[i]) + 1e-13 * abs(value) / step, (name, fd, grad[i])


def test_derivative_images_and_fisher_matrix_include_the_sky(rng):
    from pho.fit import fisher_matrix

    scene, exposures = _problem(rng, [(1.0, 0.02, 0.01), (0.5, 0, 0)])
    like = pho.Likelihood(scene, exposures, sky=["plane", "constant"])
    theta = like.initial
    theta[-4:] = [1.0, 0.02, 0.01, 0.5]
    P = like.n_params
    for e in range(2):
        d = like.gradient_images(theta, e)
        assert d.shape == (P,) + exposures[e].shape
        for i, name in enumerate(like.sky_names, start=scene.n_params):
            fd = central_difference(lambda t: like.model_images(t)[e], theta, i, 1e-3)
            np.testing.assert_allclose(d[i], fd, rtol=1e-9, atol=1e-9)
        assert np.any(d[-1] != 0) == (e == 1) and np.any(d[-4] != 0) == (e == 0)
    exact = fisher_matrix(like, theta, method="exact")
    fd = fisher_matrix(like, theta, method="fd")
    np.testing.assert_allclose(fd, exact, rtol=1e-5, atol=1e-6 * np.abs(exact).max())
    # the level's information is the number of counted pixels over the variance
    assert exact[-1, -1] == pytest.approx(exposures[1].counted.sum() * 1.0, rel=1e-12)


# ------------------------------------------------------------------------------ priors and fit
def test_default_sky_priors_hold_the_start_and_scale_with_the_noise(rng):
    scene, exposures = _problem(rng, [(0, 0, 0), (0, 0, 0)], sigma=2.0)
    like = pho.Likelihood(scene, exposures, sky=["plane", "constant"], sky_start=[0.5, 0.0, 0.0, -0.2])
    priors = default_priors(like)
    level = priors["sky_0.level"]
    assert level.lo < 0.5 < level.hi and level.hi - 0.5 == pytest.approx(0.5 - level.lo)
    assert 20.0 <= level.hi - level.lo <= 60.0  # 2 x (10 sigma + twice the small median offset), sigma = 2
    slope = priors["sky_0.slope_x"]
    assert slope.hi == pytest.approx((level.hi - 0.5) / 20.0)  # the plane moves by at most W to the edge
    assert priors["sky_1.level"].lo < -0.2 < priors["sky_1.level"].hi


@pytest.mark.slow
@pytest.mark.parametrize("skies", [[(6.0, 0.0, 0.0), (-3.0, 0.0, 0.0)], [(5.0, 0.08, -0.05), (2.0, 0.0, 0.0)]])
def test_fit_recovers_injected_sky_and_sources_within_errors(rng, skies):
    planes = [("plane" if s[1] or s[2] else "constant") for s in skies]
    truth_scene, exposures = _problem(rng, skies)
    truth = dict(zip(truth_scene.parameter_names, truth_scene.get_vector()))
    start = truth_scene.get_vector()
    start[0] *= 0.8
    start[4] = 0.7  # q
    scene = pho.Scene(truth_scene.sources)
    scene.set_vector(start)
    backend = "cpu" if "cpu" in pho._backends.available_backends() else "reference"
    like = pho.Likelihood(scene, exposures, sky=planes, backend=backend)
    best = pho.optimize(like)
    assert best.success
    expected = {}
    for k, (sky, model) in enumerate(zip(skies, planes)):
        expected[f"sky_{k}.level"] = sky[0]
        if model == "plane":
            expected[f"sky_{k}.slope_x"], expected[f"sky_{k}.slope_y"] = sky[1], sky[2]
    assert set(expected) == set(like.sky_names)
    for name, value in list(expected.items()) + [(n, truth[n]) for n in ("s0.flux_B", "s1.flux_B", "s0.rh", "s0.q")]:
        j = best.names.index(name)
        assert best.sigma[j] > 0
        assert abs(best.theta[j] - value) < 3 * best.sigma[j], (name, best.theta[j], value, best.sigma[j])
    # without the sky parameters the fluxes absorb the sky and land far off
    if skies[0][0] > 0:
        with warnings.catch_warnings():  # the sky-free fit may run n or rh into a bound (a singular matrix)
            warnings.simplefilter("ignore", PhoWarning)
            plain = pho.optimize(pho.Likelihood(scene, exposures, backend=backend))
        j = plain.names.index("s0.flux_B")
        assert abs(plain.theta[j] - truth["s0.flux_B"]) > 5 * plain.sigma[j]


def test_fixed_parameters_view_keeps_the_sky(rng):
    scene, exposures = _problem(rng, [(2.0, 0, 0), (0, 0, 0)])
    like = pho.Likelihood(scene, exposures, sky="constant", sky_start=[1.0, 0.0])
    view = pho.FixedParameters(like, {"s0.n": 2.0})
    assert view.parameter_names[-2:] == ["sky_0.level", "sky_1.level"]
    assert view.initial[-2] == 1.0
    value, grad = view.lnlike_and_grad(view.initial)
    assert grad.shape == (like.n_params - 1,) and value == pytest.approx(like.lnlike(like.initial))


# ------------------------------------------------------------------------------ outputs, bad input
@pytest.mark.slow
def test_catalog_has_the_sky_table_and_header_cards(rng, tmp_path):
    from pho.io import read_catalog, write_catalog

    scene, exposures = _problem(rng, [(3.0, 0.05, 0.0), (1.0, 0, 0)])
    backend = "cpu" if "cpu" in pho._backends.available_backends() else "reference"
    like = pho.Likelihood(scene, exposures, sky=["plane", "constant"], backend=backend)
    best = pho.optimize(like)
    path = write_catalog(tmp_path / "cat.fits", best.scene, best, exposure_names=[e.name for e in exposures])
    cat, _ = read_catalog(path)
    assert len(cat) == 2 and "level_best" not in cat.colnames
    sky = Table.read(path, hdu="SKY")
    assert sky["exposure"].tolist() == [0, 1] and sky["name"].tolist() == ["exp0", "exp1"]
    j = best.names.index("sky_0.level")
    assert sky["level_best"][0] == best.theta[j] and sky["level_err"][0] == best.sigma[j]
    raw = fits.getdata(path, "SKY")
    assert raw["slope_x_best"][0] == best.theta[j + 1] and math.isnan(raw["slope_x_best"][1])
    header = fits.getheader(path, "CATALOG")
    assert header["SKY0_LEVEL"] == pytest.approx(best.theta[j])
    assert header["SKY1_LEVEL_ERR"] == pytest.approx(best.sigma[best.names.index("sky_1.level")])
    assert sky["level_best"].unit == u.count and sky["slope_x_best"].unit == u.count / u.pix


def test_bad_sky_settings_are_named(rng):
    scene, exposures = _problem(rng, [(0, 0, 0), (0, 0, 0)])
    with pytest.raises(PhoValueError, match="sky='gradient' is not a sky model; use None, 'none', 'constant' or 'plane'"):
        pho.Likelihood(scene, exposures, sky="gradient")
    with pytest.raises(PhoValueError, match="sky has 1 entries for 2 exposures"):
        pho.Likelihood(scene, exposures, sky=["plane"])
    with pytest.raises(PhoValueError, match=r"sky_start must be 2 finite numbers"):
        pho.Likelihood(scene, exposures, sky="constant", sky_start=[0.0, np.nan])
    like = pho.Likelihood(scene, exposures, sky="constant")
    theta = like.initial
    theta[-1] = np.inf
    with pytest.raises(PhoValueError, match="parameter sky_1.level = inf is not finite"):
        like.lnlike(theta)
    with pytest.raises(PhoValueError, match=r"shape \(11,\), expected \(12,\)"):
        like.lnlike(theta[:-1])
