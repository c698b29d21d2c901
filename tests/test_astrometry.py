"""Astrometry: sources land where astropy's WCS puts them (to 1e-3 pixel), the Jacobians of
positions and the local matrix D."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import cosmos_stamp_wcs, tan_wcs

import pho
from pho.gaussians import image_gaussians

TOL_PIX = 1e-3


def _exposure(wcs, shape=(64, 64), psf=None):
    psf = pho.PSFMixture.gaussian(2.0) if psf is None else psf
    return pho.Exposure(np.zeros(shape), np.ones(shape), wcs, psf, "B")


def _sip_wcs():
    """A TAN-SIP WCS with a few 1e-6-level distortion terms (pixel units), like HST's."""
    from astropy.wcs import WCS, Sip

    w = tan_wcs(53.1, -27.8, (40.0, 30.0), rotation_deg=70.0, flip=True)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 0] = 2e-5, -1e-5, 5e-6, 3e-8
    b[2, 0], b[0, 2], b[1, 2] = -1e-5, 2e-5, -2e-8
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


WCS_CASES = {
    "rotated_flipped": lambda: tan_wcs(150.0, 2.0, (20.0, 50.0), rotation_deg=123.0, flip=True),
    "rotated": lambda: tan_wcs(210.0, -45.0, (-300.0, 900.0), scale_arcsec=0.06, rotation_deg=-37.0),
    "high_dec": lambda: tan_wcs(10.0, 84.0, (32.5, 32.5), scale_arcsec=0.1, rotation_deg=15.0, flip=True),
    "sip": _sip_wcs,
}


@pytest.mark.parametrize("case", sorted(WCS_CASES))
def test_positions_match_astropy(case, rng):
    wcs = WCS_CASES[case]()
    exp = _exposure(wcs)
    px = rng.uniform(-0.5, 63.5, 500)
    py = rng.uniform(-0.5, 63.5, 500)
    ra, dec = wcs.pixel_to_world_values(px, py)
    x, y = exp.sky_to_pixel(ra, dec)
    ax, ay = wcs.world_to_pixel_values(ra, dec)
    assert np.max(np.hypot(x - ax, y - ay)) < TOL_PIX
    assert np.max(np.hypot(x - px, y - py)) < TOL_PIX


def test_positions_match_the_real_cosmos_wcs(cosmos_image_path, rng):
    wcs = cosmos_stamp_wcs(cosmos_image_path, 200, 180, 128)
    exp = _exposure(wcs, shape=(128, 128))
    ra, dec = wcs.pixel_to_world_values(rng.uniform(-0.5, 127.5, 500), rng.uniform(-0.5, 127.5, 500))
    x, y = exp.sky_to_pixel(ra, dec)
    ax, ay = wcs.world_to_pixel_values(ra, dec)
    assert np.max(np.hypot(x - ax, y - ay)) < TOL_PIX


@pytest.mark.parametrize("flip", [False, True])
def test_point_source_lands_on_the_astropy_pixel(flip):
    """A rendered star's centroid is astropy's pixel for its sky position (rotated, flipped CD)."""
    wcs = tan_wcs(150.0, 2.0, (41.3, 37.9), rotation_deg=147.0, flip=flip)
    exp = _exposure(wcs, shape=(80, 80), psf=pho.PSFMixture.gaussian(2.5, q=0.7, theta_rad=0.5))
    for px, py in [(40.0, 40.0), (20.37, 61.81), (63.5, 15.25)]:
        ra, dec = (float(v) for v in wcs.pixel_to_world_values(px, py))
        scene = pho.Scene([pho.PointSource(ra, dec, {"B": 100.0})])
        g = image_gaussians(scene, exp).gaussians
        ax, ay = (float(v) for v in wcs.world_to_pixel_values(ra, dec))
        assert abs(g[0, 1] - ax) < TOL_PIX and abs(g[0, 2] - ay) < TOL_PIX
        img = pho.render(scene, exp)
        yy, xx = np.mgrid[0:80, 0:80]
        cx, cy = float(np.sum(img * xx) / img.sum()), float(np.sum(img * yy) / img.sum())
        assert abs(cx - ax) < TOL_PIX and abs(cy - ay) < TOL_PIX


@pytest.mark.parametrize("case", sorted(WCS_CASES))
def test_position_jacobian_matches_finite_differences(case):
    wcs = WCS_CASES[case]()
    exp = _exposure(wcs)
    ra, dec = (np.atleast_1d(v) for v in wcs.pixel_to_world_values(np.array([5.0, 50.0]), np.array([60.0, 7.0])))
    _, _, J = exp.sky_to_pixel_jacobian(ra, dec)
    h = 1e-7
    for k, (dra, ddec) in enumerate([(h, 0.0), (0.0, h)]):
        xp, yp = exp.sky_to_pixel(ra + dra, dec + ddec)
        xm, ym = exp.sky_to_pixel(ra - dra, dec - ddec)
        fd = np.stack([(xp - xm) / (2 * h), (yp - ym) / (2 * h)], axis=1)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-6, atol=1e-6 * np.abs(J).max())


def test_D_is_the_local_pixel_jacobian_per_arcsec(cosmos_image_path):
    wcs = cosmos_stamp_wcs(cosmos_image_path)
    exp = _exposure(wcs, shape=(40, 40))
    ra0, dec0 = exp.reference_radec
    assert (ra0, dec0) == pytest.approx(tuple(float(v) for v in wcs.pixel_to_world_values(19.5, 19.5)), abs=1e-12)
    h = 1e-3  # arcsec of sky offset
    cosd = math.cos(math.radians(dec0))
    cols = []
    for dxi, deta in [(h, 0.0), (0.0, h)]:
        p = np.array(wcs.world_to_pixel_values(ra0 + dxi / 3600 / cosd, dec0 + deta / 3600))
        m = np.array(wcs.world_to_pixel_values(ra0 - dxi / 3600 / cosd, dec0 - deta / 3600))
        cols.append((p - m) / (2 * h))
    np.testing.assert_allclose(exp.D, np.column_stack(cols), rtol=1e-6)
    # 0.03"/pix: |det D| = 1/0.03^2
    assert abs(np.linalg.det(exp.D)) == pytest.approx(1 / 0.03**2, rel=1e-3)


def test_sip_wcs_uses_a_higher_polynomial():
    exp = _exposure(_sip_wcs())
    assert exp._astrometry.degree >= 3
    assert exp._astrometry.max_error_pix < 1e-4
    assert _exposure(WCS_CASES["rotated"]())._astrometry.degree == 1


def test_wcs_with_dec_as_first_axis():
    """A WCS whose first world axis is Dec (CTYPE1 = DEC--TAN) is read by axis type, not order."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["DEC--TAN", "RA---TAN"]
    w.wcs.crval = [-30.0, 45.0]
    w.wcs.crpix = [20.0, 25.0]
    s = 0.05 / 3600
    w.wcs.cd = [[0.3 * s, s], [-s, 0.2 * s]]
    exp = _exposure(w)
    px, py = np.array([3.0, 40.0, 60.0]), np.array([50.0, 10.0, 33.0])
    dec, ra = w.pixel_to_world_values(px, py)
    x, y = exp.sky_to_pixel(ra, dec)
    assert np.max(np.hypot(x - px, y - py)) < TOL_PIX
    assert exp._astrometry.degree == 1
    assert exp.reference_radec == pytest.approx(tuple(float(v) for v in w.pixel_to_world_values(31.5, 31.5)[::-1]), abs=1e-12)
