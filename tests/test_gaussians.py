"""Scene -> image Gaussians: values against an independent construction, Jacobian against
finite differences, shape conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import central_difference, fd_step, tan_wcs, two_component_psf

import pho
from pho.gaussians import LOCAL_PARAMETERS, ExposureModel, SceneModel, image_gaussians
from pho.profiles import AnalyticStandInProfile

PROFILE = AnalyticStandInProfile()


def _exposure(rotation_deg=37.0, flip=True, cpf=2.5):
    wcs = tan_wcs(150.0, 2.0, (30.0, 34.0), rotation_deg=rotation_deg, flip=flip)
    return pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), wcs, two_component_psf(), "B", counts_per_flux=cpf)


def _scene(shape_parameters="q_pa"):
    return pho.Scene(
        [
            pho.Sersic(150.0, 2.0, {"A": 3.0, "B": 5.0}, 0.6, 0.4, 2.2, 0.3, profile=PROFILE),
            pho.PointSource(150.0001, 2.0001, {"A": 1.0, "B": 2.0}),
            pho.Sersic(150.0002, 1.9999, {"A": 3.0, "B": 7.0}, 0.4, -1.0, 1.2, 0.2, profile=PROFILE),
        ],
        shape_parameters=shape_parameters,
    )


def _full_jacobian(ig, n_params):
    """Scatter the (G, 6, 7) local Jacobian into (G, 6, P)."""
    G = ig.gaussians.shape[0]
    full = np.zeros((G, 6, n_params + 1))
    for k in range(len(LOCAL_PARAMETERS)):
        np.add.at(full, (np.arange(G), slice(None), ig.param_index[:, k]), ig.jacobian[:, :, k])
    return full[:, :, :n_params]


@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2"])
def test_jacobian_matches_finite_differences(shape_parameters):
    scene, exp = _scene(shape_parameters), _exposure()
    theta = scene.get_vector()
    ig = image_gaussians(scene, exp, theta)
    assert ig.gaussians.shape == (2 * 9 * 2 + 2, 6) and ig.jacobian.shape == (38, 6, 7)
    full = _full_jacobian(ig, scene.n_params)

    def f(t):
        return image_gaussians(scene, exp, t, jacobian=False).gaussians

    for i, kind in enumerate(scene.parameter_kinds):
        fd = central_difference(f, theta, i, fd_step(kind, theta[i]))
        an = full[:, :, i]
        # per column: the columns have different units (counts, pixels, pixels^-2)
        scale = np.maximum(np.abs(an).max(axis=0), np.abs(fd).max(axis=0))
        err = np.abs(fd - an).max(axis=0)
        assert np.all(err <= 2e-6 * scale + 1e-300), f"{scene.parameter_names[i]}: column errors {err} vs scale {scale}"
    # the exposure is in band B: the band-A fluxes must not enter
    for i, name in enumerate(scene.parameter_names):
        if name.endswith("flux_A"):
            assert np.all(full[:, :, i] == 0.0)


def test_values_match_independent_construction():
    """Covariance D Sigma D^T + Sigma_psf with Sigma = r^2 (u u^T + q^2 v v^T), u = (sin pa, cos pa)."""
    exp = _exposure()
    q, pa, n, rh, flux = 0.55, 0.7, 2.5, 0.25, 4.0
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": flux}, q, pa, n, rh, profile=PROFILE)])
    ig = image_gaussians(scene, exp)
    a, _, _ = PROFILE.amplitudes(n, rh)
    psf = exp.psf
    u = np.array([math.sin(pa), math.cos(pa)])
    v = np.array([math.cos(pa), -math.sin(pa)])
    D = exp.D
    x, y = exp.sky_to_pixel(150.0, 2.0)
    rows = []
    for m, r in enumerate(PROFILE.radii_arcsec):
        sigma_sky = r**2 * (np.outer(u, u) + q**2 * np.outer(v, v))
        for l in range(psf.n_gauss):
            C = D @ sigma_sky @ D.T + psf.covariances[l]
            F = np.linalg.inv(C)
            A = flux * exp.counts_per_flux * a[m] * psf.amp[l] / (2 * math.pi * math.sqrt(np.linalg.det(C)))
            rows.append([A, x + psf.x[l], y + psf.y[l], F[0, 0], F[0, 1], F[1, 1]])
    np.testing.assert_allclose(ig.gaussians, np.array(rows), rtol=1e-12, atol=1e-12)
    # total counts of the mixture = flux * counts_per_flux (amplitudes and PSF sum to one)
    g = ig.gaussians
    total = np.sum(g[:, 0] * 2 * math.pi / np.sqrt(g[:, 3] * g[:, 5] - g[:, 4] ** 2))
    assert total == pytest.approx(flux * exp.counts_per_flux, rel=1e-12)


@pytest.mark.parametrize("pa, axis", [(0.0, "y"), (math.pi / 2, "x")])
def test_position_angle_convention(pa, axis):
    """North up, east left (CD = diag(-s, s)): pa = 0 puts the major axis along +y (north), pa = 90
    degrees along x (east)."""
    wcs = tan_wcs(150.0, 2.0, (30.0, 30.0))
    exp = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), wcs, pho.PSFMixture.gaussian(0.5), "B")
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 1.0}, 0.3, pa, 1.0, 0.3, profile=PROFILE)])
    g = image_gaussians(scene, exp).gaussians[-1]  # the widest component
    fxx, fyy = g[3], g[5]
    # F is the inverse covariance: the long axis has the smaller F entry
    assert (fyy < fxx) if axis == "y" else (fxx < fyy)


def test_shear_and_q_pa_give_the_same_gaussians():
    exp = _exposure()
    a, b = _scene("q_pa"), _scene("g1_g2")
    np.testing.assert_allclose(image_gaussians(a, exp).gaussians, image_gaussians(b, exp).gaussians, rtol=1e-12)


def test_round_source_in_shear_mode_has_finite_jacobian():
    exp = _exposure()
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 1.0}, 1.0, 0.0, 2.0, 0.3, profile=PROFILE)], shape_parameters="g1_g2")
    ig = image_gaussians(scene, exp)
    assert np.all(np.isfinite(ig.jacobian))


def test_point_source_is_the_psf():
    exp = _exposure()
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"B": 2.0})])
    g = image_gaussians(scene, exp).gaussians
    psf = exp.psf
    det = psf.cxx * psf.cyy - psf.cxy**2
    np.testing.assert_allclose(g[:, 0], 2.0 * 2.5 * psf.amp / (2 * np.pi * np.sqrt(det)), rtol=1e-14)
    np.testing.assert_allclose(g[:, 3], psf.cyy / det, rtol=1e-14)


def test_param_index_points_at_the_right_parameters():
    scene, exp = _scene(), _exposure()
    sm = SceneModel(scene)
    em = ExposureModel(sm, exp)
    names = np.array(scene.parameter_names + ("<unused>",))
    first = names[em.param_index[em.source_index == 0][0]]
    assert list(first) == ["s0.flux_B", "s0.ra", "s0.dec", "s0.q", "s0.pa", "s0.n", "s0.rh"]
    point_rows = em.source_index == 1
    assert list(names[em.param_index[point_rows][0]]) == ["s1.flux_B", "s1.ra", "s1.dec"] + ["<unused>"] * 4


@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2"])
@pytest.mark.parametrize("compiled", [False, True])
def test_fast_path_matches_full_jacobian(shape_parameters, compiled, rng):
    """The likelihood's forward + vector-Jacobian product equals the full Jacobian contracted."""
    scene, exp = _scene(shape_parameters), _exposure()
    sm = SceneModel(scene)
    em = ExposureModel(sm, exp)
    if compiled:
        pytest.importorskip("pho._render", reason="the compiled extension is not built here")
        em.compiled = True
    state = sm.prepare(scene.get_vector())
    g_full, jac = em.compute(state)
    g_fast, cache = em.forward(state)
    np.testing.assert_allclose(g_fast, g_full, rtol=1e-13, atol=0)
    weights = rng.normal(size=g_full.shape)
    P = scene.n_params
    expected = np.bincount(em.param_index.ravel(), (weights[:, None, :] @ jac).ravel(), minlength=P + 1)[:P]
    got = np.bincount(em.vjp_index, em.vjp(state, cache, weights).ravel(), minlength=P + 1)[:P]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
