"""Sources and the scene's parameter vector."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pho
from pho.errors import PhoRangeError, PhoValueError
from pho.profiles import AnalyticStandInProfile
from pho.transforms import shear_from_q_pa

PROFILE = AnalyticStandInProfile()


def _sersic(**kw):
    args = dict(ra=150.0, dec=2.0, flux={"F814W": 1.0}, q=0.5, pa=0.3, n=2.0, rh=0.3, profile=PROFILE)
    args.update(kw)
    return pho.Sersic(**args)


@pytest.mark.parametrize("q", [0.0, -0.2, 1.0000001, 1.5])
def test_q_outside_range_is_refused(q):
    with pytest.raises(PhoRangeError, match=r"axis ratio q=.* is outside \(0, 1\]") as info:
        _sersic(q=q)
    assert info.value.lo == 0.0 and info.value.hi == 1.0 and info.value.value == q


def test_q_of_one_is_allowed():
    assert _sersic(q=1.0).q == 1.0


@pytest.mark.parametrize("field", ["ra", "dec", "q", "pa", "n", "rh"])
def test_non_finite_values_are_refused(field):
    with pytest.raises(PhoValueError, match="not finite"):
        _sersic(**{field: math.nan})


def test_flux_must_be_a_dict_of_finite_numbers():
    with pytest.raises(TypeError, match="flux must be a dict"):
        pho.PointSource(150.0, 2.0, 3.0)
    with pytest.raises(PhoValueError, match=r"flux\['F814W'\]=inf is not finite"):
        pho.PointSource(150.0, 2.0, {"F814W": math.inf})
    with pytest.raises(PhoValueError, match="flux is empty"):
        pho.PointSource(150.0, 2.0, {})


def test_dec_range_and_positive_sizes():
    with pytest.raises(PhoRangeError, match=r"dec=95.0 deg is outside \[-90, 90\]"):
        pho.PointSource(150.0, 95.0, {"B": 1.0})
    with pytest.raises(PhoRangeError, match="rh=-0.1 arcsec must be positive"):
        _sersic(rh=-0.1)


def test_profile_range_is_checked_by_the_scene():
    with pytest.raises(PhoRangeError, match=r"source 0: Sersic index n=7 is outside the profile's range \[0.5, 6\]"):
        pho.Scene([_sersic(n=7.0)])
    with pytest.raises(PhoRangeError, match=r"rh=3 arcsec is outside the profile's range \[0.02, 2\]"):
        pho.Scene([_sersic(rh=3.0)])


def test_parameter_layout():
    scene = pho.Scene(
        [pho.PointSource(150.0, 2.0, {"F814W": 3.0, "F160W": 4.0}), _sersic(flux={"F160W": 6.0, "F814W": 5.0})]
    )
    assert scene.bands == ("F814W", "F160W")
    assert scene.parameter_names == (
        "s0.flux_F814W", "s0.flux_F160W", "s0.ra", "s0.dec",
        "s1.flux_F814W", "s1.flux_F160W", "s1.ra", "s1.dec", "s1.q", "s1.pa", "s1.n", "s1.rh",
    )
    assert scene.parameter_kinds == ("flux", "flux", "ra", "dec", "flux", "flux", "ra", "dec", "q", "pa", "n", "rh")
    assert scene.parameter_bands[:3] == ("F814W", "F160W", None)
    assert list(scene.parameter_sources) == [0] * 4 + [1] * 8
    assert scene.n_params == 12
    np.testing.assert_array_equal(scene.get_vector(), [3, 4, 150, 2, 5, 6, 150, 2, 0.5, 0.3, 2.0, 0.3])


def test_missing_band_is_refused():
    with pytest.raises(PhoValueError, match=r"source 1 \(point\) has no flux for band\(s\) \['F160W'\]"):
        pho.Scene([_sersic(flux={"F814W": 1.0, "F160W": 1.0}), pho.PointSource(150.0, 2.0, {"F814W": 1.0})])


def test_set_vector_updates_sources_and_validates():
    mine = _sersic()
    scene = pho.Scene([mine])
    theta = scene.get_vector()
    theta[0], theta[3], theta[6] = 9.0, 0.8, 0.5
    scene.set_vector(theta)
    s = scene.sources[0]
    assert (s.flux["F814W"], s.q, s.rh) == (9.0, 0.8, 0.5)
    assert mine.q == 0.5  # the scene works on its own copies
    np.testing.assert_array_equal(scene.get_vector(), theta)
    bad = theta.copy()
    bad[3] = 1.5
    with pytest.raises(PhoRangeError, match=r"s0.q = 1.5 is outside \(0, 1\]"):
        scene.set_vector(bad)
    np.testing.assert_array_equal(scene.get_vector(), theta)  # unchanged after a refusal
    with pytest.raises(PhoValueError, match=r"shape \(3,\), expected \(7,\)"):
        scene.set_vector(theta[:3])


def test_shear_parameterization():
    scene = pho.Scene([_sersic(q=0.5, pa=0.3)], shape_parameters="g1_g2")
    assert scene.parameter_names[3:5] == ("s0.g1", "s0.g2")
    assert scene.parameter_kinds[3:5] == ("g1", "g2")
    g1, g2 = shear_from_q_pa(0.5, 0.3)
    np.testing.assert_allclose(scene.get_vector()[3:5], [g1, g2], rtol=1e-15)
    theta = scene.get_vector()
    theta[3:5] = [0.2, -0.1]
    scene.set_vector(theta)
    g = math.hypot(0.2, -0.1)
    assert scene.sources[0].q == pytest.approx((1 - g) / (1 + g), rel=1e-14)
    assert scene.sources[0].pa == pytest.approx(0.5 * math.atan2(-0.1, 0.2), rel=1e-14)
    theta[3:5] = [0.8, 0.7]
    with pytest.raises(PhoRangeError, match=r"\|g\| = 1.06.* >= 1"):
        scene.set_vector(theta)
    with pytest.raises(PhoValueError, match="use 'q_pa' or 'g1_g2'"):
        pho.Scene([_sersic()], shape_parameters="e1_e2")


def test_parameter_bounds():
    scene = pho.Scene([_sersic(), pho.PointSource(150.0, 2.0, {"F814W": 1.0})])
    lo, hi = scene.parameter_bounds()
    kinds = scene.parameter_kinds
    assert (lo[kinds.index("q")], hi[kinds.index("q")]) == (0.0, 1.0)
    assert (lo[kinds.index("n")], hi[kinds.index("n")]) == PROFILE.n_range
    assert (lo[kinds.index("rh")], hi[kinds.index("rh")]) == PROFILE.rh_range_arcsec
    for k in ("flux", "ra", "dec", "pa"):
        i = kinds.index(k)
        assert lo[i] == -np.inf and hi[i] == np.inf
    g = pho.Scene([_sersic()], shape_parameters="g1_g2")
    lo, hi = g.parameter_bounds()
    assert lo[3] == -0.7 and hi[4] == 0.7 and math.hypot(0.7, 0.7) < 1


def test_default_profile_is_loaded_lazily():
    gal = pho.Sersic(150.0, 2.0, {"F814W": 1.0}, 0.5, 0.3, 2.0, 0.3)
    assert gal._profile is None  # nothing loaded at construction
    try:
        from pho import sersic  # noqa: F401
    except ImportError:
        pytest.skip("pho.sersic (the shipped table) is not available yet")
    prof = gal.profile
    assert len(prof.radii_arcsec) > 1 and prof is gal.profile


def test_stand_in_profile_amplitudes_and_derivatives():
    a, da_dn, da_drh = PROFILE.amplitudes(np.array([1.0, 3.0]), np.array([0.1, 0.5]))
    assert a.shape == (2, len(PROFILE.radii_arcsec)) and PROFILE.radii_arcsec[0] == 0.0
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-14)
    h = 1e-6
    fd_n = (PROFILE.amplitudes(3.0 + h, 0.5)[0] - PROFILE.amplitudes(3.0 - h, 0.5)[0]) / (2 * h)
    fd_r = (PROFILE.amplitudes(3.0, 0.5 + h)[0] - PROFILE.amplitudes(3.0, 0.5 - h)[0]) / (2 * h)
    np.testing.assert_allclose(da_dn[1], fd_n, atol=1e-8)
    np.testing.assert_allclose(da_drh[1], fd_r, atol=1e-8)
    # larger rh moves weight to larger radii
    mean_r = lambda rh: float(np.sum(PROFILE.amplitudes(2.0, rh)[0] * PROFILE.radii_arcsec))  # noqa: E731
    assert mean_r(0.5) > mean_r(0.1)
