"""pho.sersic: the shipped Sersic mixture table against exact Sersic profiles, its spline
derivatives against finite differences, range errors, loading, and the builder's reproducibility.

The exact profiles here are written independently of tools/build_sersic_table.py: the Sersic
formula from scipy's incomplete gamma functions, and the Gaussian smoothing by adaptive
quadrature (scipy.integrate.quad), not the builder's fixed-node rule.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import gamma, gammainc, gammaincinv, i0e

from pho.errors import PhoRangeError, PhoValueError
from pho.sersic import AUTO_RH_RANGE_ARCSEC, DEFAULT_SCALE_ARCSEC, MultiScaleSersic, SersicTable, auto_profile, default_profile

REPO = Path(__file__).resolve().parents[1]
N_VALUES = (0.5, 1.0, 2.0, 4.0, 6.0)
#: Half-light radii in table units (off the grid's nodes); x 0.03" in arcsec at the default scale.
RH_UNITS = (0.37, 1.7, 6.1, 23.0)


# ------------------------------------------------------------------------------------------
# independent references
# ------------------------------------------------------------------------------------------
def _b(n):
    return gammaincinv(2 * n, 0.5)


def sersic_sb(r, n, rh):
    b = _b(n)
    return b ** (2 * n) / (2 * np.pi * n * rh**2 * gamma(2 * n)) * np.exp(-b * (np.asarray(r) / rh) ** (1 / n))


def sersic_enclosed(r, n, rh):
    return gammainc(2 * n, _b(n) * (np.asarray(r) / rh) ** (1 / n))


def smoothed_sersic_quad(r, n, rh, sigma):
    """Sersic (unit flux) convolved with a circular Gaussian of sigma, at radius r, by quad."""

    def f(rp):
        return sersic_sb(rp, n, rh) * rp / sigma**2 * np.exp(-((r - rp) ** 2) / (2 * sigma**2)) * i0e(r * rp / sigma**2)

    lo, hi = max(0.0, r - 12 * sigma), r + 12 * sigma
    pts = [p for p in (min(rh, hi) * 1e-3, min(rh, hi) * 1e-2, min(rh, hi) * 0.1, r) if lo < p < hi]
    return quad(f, lo, hi, points=sorted(pts), limit=400, epsabs=0, epsrel=1e-9)[0]


def mixture_sb(r, a, radii, sigma=0.0):
    """Mixture (unit-flux Gaussians of sigma radii, each convolved with sigma) at radii r."""
    v = radii[None, :] ** 2 + sigma**2
    if sigma == 0.0:  # the zero-radius Gaussian is a point: nothing at r > 0
        v, a = v[:, 1:], a[1:]
    return (np.exp(-np.asarray(r)[:, None] ** 2 / (2 * v)) / (2 * np.pi * v)) @ a


def mixture_enclosed(r, a, radii, sigma=0.0):
    r = np.atleast_1d(np.asarray(r, float))[:, None]
    v = radii[None, :] ** 2 + sigma**2
    with np.errstate(divide="ignore"):  # a zero-radius Gaussian is a point: all its flux is inside r > 0
        return (-np.expm1(-(r**2) / (2 * v))) @ a


@pytest.fixture(scope="module")
def unit_table() -> SersicTable:
    """The shipped table with scale 1 (arcsec = table units)."""
    return default_profile().with_scale(1.0)


# ------------------------------------------------------------------------------------------
# interface
# ------------------------------------------------------------------------------------------
def test_default_profile_is_cached_and_follows_the_interface():
    prof = default_profile()
    assert prof is default_profile()
    assert prof.scale_arcsec == DEFAULT_SCALE_ARCSEC
    m = prof.radii_arcsec.size
    assert prof.radii_arcsec[0] == 0.0 and np.all(np.diff(prof.radii_arcsec) > 0)
    lo, hi = prof.n_range
    assert lo <= 0.5 and hi >= 6.0
    rlo, rhi = prof.rh_range_arcsec
    # below a tenth of a 0.03" pixel, beyond 30 such pixels
    assert rlo <= 0.1 * 0.03 and rhi >= 30 * 0.03
    a, da_dn, da_drh = prof.amplitudes(2.0, 0.2)
    assert a.shape == da_dn.shape == da_drh.shape == (m,)
    a, da_dn, da_drh = prof.amplitudes(np.array([1.0, 2.0, 4.5]), np.array([0.01, 0.2, 1.0]))
    assert a.shape == da_dn.shape == da_drh.shape == (3, m)


def test_amplitudes_sum_to_one_and_derivatives_to_zero(rng):
    prof = default_profile()
    lo, hi = prof.rh_range_arcsec
    n = rng.uniform(*prof.n_range, size=200)
    rh = np.exp(rng.uniform(np.log(lo), np.log(hi), size=200))
    a, da_dn, da_drh = prof.amplitudes(n, rh)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(da_dn.sum(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(da_drh.sum(axis=1) * rh, 0.0, atol=1e-10)


def test_scalar_and_vector_paths_agree(rng):
    prof = default_profile()
    n = rng.uniform(0.5, 6.0, size=7)
    rh = rng.uniform(0.002, 1.2, size=7)
    vec = prof.amplitudes(n, rh)
    for k in range(7):
        one = prof.amplitudes(float(n[k]), float(rh[k]))
        for x, y in zip(one, vec):
            np.testing.assert_allclose(x, y[k], rtol=1e-12, atol=1e-14)
    # broadcasting a scalar n against an array of radii
    a, _, _ = prof.amplitudes(3.0, rh)
    np.testing.assert_allclose(a, prof.amplitudes(np.full(7, 3.0), rh)[0], rtol=1e-13, atol=1e-15)


def test_spline_passes_through_the_table_nodes():
    table = default_profile().with_scale(1.0)
    with np.load(REPO / "tables" / "sersic_mixture.npz") as z:
        ng, lg, amps = z["n_grid"], z["ln_rh_grid"], z["amplitudes"]
    for i, j in [(0, 0), (7, 11), (20, 30), (len(ng) - 1, len(lg) - 1)]:
        a, _, _ = table.amplitudes(ng[i], np.exp(lg[j]))
        np.testing.assert_allclose(a, amps[i, j], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# accuracy against the exact Sersic profile
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", N_VALUES)
@pytest.mark.parametrize("rh", RH_UNITS)
def test_flux_against_exact_sersic(unit_table, n, rh):
    """Total flux is exactly one; the flux inside 2, 8 and 40 r_h matches the Sersic to 1e-3."""
    a, _, _ = unit_table.amplitudes(n, rh)
    assert a.sum() == pytest.approx(1.0, abs=1e-12)
    radii = unit_table.radii_arcsec
    for k in (2.0, 8.0, 40.0):
        assert mixture_enclosed(k * rh, a, radii)[0] == pytest.approx(sersic_enclosed(k * rh, n, rh), abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("n", N_VALUES)
@pytest.mark.parametrize("rh", RH_UNITS)
def test_half_light_radius_against_exact_sersic(unit_table, n, rh):
    """Half-light radius to 1%: of the mixture itself where r_h >= 1 table unit; below that (a
    galaxy smaller than ~3 smoothing sigmas, where only the smoothed profile is fitted) of the
    smoothed mixture against the smoothed Sersic."""
    a, _, _ = unit_table.amplitudes(n, rh)
    radii, sigma = unit_table.radii_arcsec, unit_table.smoothing_sigma
    if rh >= 1.0:
        r_half = brentq(lambda r: mixture_enclosed(r, a, radii)[0] - 0.5, 1e-3 * rh, 1e3 * rh)
        assert r_half == pytest.approx(rh, rel=0.01)
    else:
        r = np.concatenate([[0.0], np.geomspace(1e-3, 60 * rh + 10 * sigma, 600)])
        target = np.array([smoothed_sersic_quad(x, n, rh, sigma) for x in r])
        cum = np.concatenate([[0.0], np.cumsum(np.diff(r) * 0.5 * (2 * np.pi * r[1:] * target[1:] + 2 * np.pi * r[:-1] * target[:-1]))])
        r_half_true = np.interp(0.5, cum, r)
        r_half = brentq(lambda x: mixture_enclosed(x, a, radii, sigma)[0] - 0.5, 1e-3, 1e3)
        assert r_half == pytest.approx(r_half_true, rel=0.01)


#: Worst |fractional SB error| allowed, per n, over r in [0.5 table units, R_OUT r_h].
#: n >= 1: 1% out to 4 r_h (the issue's bar). n = 0.5 (a Gaussian) is the table's weak point:
#: fixed radii 1.36x apart cannot follow a Gaussian's tail to 4 r_h, so 1% is asserted only out to 1.5 r_h
#: (docs/sersic_tables.md gives the measured figures).
SB_BOUNDS = {0.5: (1.5, 0.01), 1.0: (4.0, 0.01), 2.0: (4.0, 0.01), 4.0: (4.0, 0.01), 6.0: (4.0, 0.01)}


@pytest.mark.slow
@pytest.mark.parametrize("n", N_VALUES)
@pytest.mark.parametrize("rh", RH_UNITS)
def test_surface_brightness_outside_the_smoothing_core(unit_table, n, rh):
    """Smoothed mixture vs smoothed Sersic (both through the table's smoothing Gaussian, sigma
    0.3 table units), at 12 radii from 0.5 table units (0.015" at 0.03"/unit) to R_OUT r_h."""
    r_out, bound = SB_BOUNDS[n]
    if r_out * rh <= 0.5:
        pytest.skip(f"r_h = {rh} has no radii between 0.5 units and {r_out} r_h")
    a, _, _ = unit_table.amplitudes(n, rh)
    radii, sigma = unit_table.radii_arcsec, unit_table.smoothing_sigma
    r = np.geomspace(0.5, r_out * rh, 12)
    target = np.array([smoothed_sersic_quad(x, n, rh, sigma) for x in r])
    frac = mixture_sb(r, a, radii, sigma) / target - 1
    assert np.abs(frac).max() < bound, f"worst {np.abs(frac).max():.4f} at r = {r[np.argmax(np.abs(frac))]:.3g}"


def test_smoothing_changes_a_large_galaxy_by_little(unit_table):
    """Far outside the smoothing core the mixture itself (unsmoothed) follows the exact profile."""
    n, rh = 4.0, 23.0
    a, _, _ = unit_table.amplitudes(n, rh)
    r = np.geomspace(5.0, 4 * rh, 10)
    frac = mixture_sb(r, a, unit_table.radii_arcsec) / sersic_sb(r, n, rh) - 1
    assert np.abs(frac).max() < 0.01


# ------------------------------------------------------------------------------------------
# derivatives
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, rh_arcsec", [(0.55, 0.002), (1.3, 0.013), (2.0, 0.1), (3.7, 0.25), (5.93, 1.1)])
def test_derivatives_match_finite_differences_of_the_spline(n, rh_arcsec):
    prof = default_profile()
    a, da_dn, da_drh = prof.amplitudes(n, rh_arcsec)
    h_n = 1e-5
    fd_n = (prof.amplitudes(n + h_n, rh_arcsec)[0] - prof.amplitudes(n - h_n, rh_arcsec)[0]) / (2 * h_n)
    h_r = 1e-6 * rh_arcsec
    fd_r = (prof.amplitudes(n, rh_arcsec + h_r)[0] - prof.amplitudes(n, rh_arcsec - h_r)[0]) / (2 * h_r)
    np.testing.assert_allclose(da_dn, fd_n, rtol=0, atol=1e-6 * max(1.0, np.abs(da_dn).max()))
    np.testing.assert_allclose(da_drh, fd_r, rtol=0, atol=1e-6 * np.abs(da_drh).max())
    assert np.abs(da_dn).max() > 0 and np.abs(da_drh).max() > 0


def test_vector_derivatives_match_finite_differences(rng):
    prof = default_profile()
    n = rng.uniform(0.6, 5.9, size=12)
    rh = np.exp(rng.uniform(np.log(0.002), np.log(1.2), size=12))
    _, da_dn, da_drh = prof.amplitudes(n, rh)
    h_n, h_r = 1e-5, 1e-6 * rh
    fd_n = (prof.amplitudes(n + h_n, rh)[0] - prof.amplitudes(n - h_n, rh)[0]) / (2 * h_n)
    fd_r = (prof.amplitudes(n, rh + h_r)[0] - prof.amplitudes(n, rh - h_r)[0]) / (2 * h_r[:, None])
    np.testing.assert_allclose(da_dn, fd_n, rtol=0, atol=1e-6 * np.abs(da_dn).max())
    np.testing.assert_allclose(da_drh * rh[:, None], fd_r * rh[:, None], rtol=0,
                               atol=1e-6 * np.abs(da_drh * rh[:, None]).max())


def test_spline_is_continuous_across_cell_edges():
    """Value and both derivatives agree on the two sides of a node (C1 at least; C2 in fact)."""
    table = default_profile().with_scale(1.0)
    with np.load(REPO / "tables" / "sersic_mixture.npz") as z:
        n_node, lnr_node = float(z["n_grid"][9]), float(z["ln_rh_grid"][17])
    eps = 1e-9
    rh = np.exp(lnr_node + 0.05)
    left, right = table.amplitudes(n_node - eps, rh), table.amplitudes(n_node + eps, rh)
    for x, y in zip(left, right):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6 * max(1.0, np.abs(x).max()))
    left = table.amplitudes(2.3, np.exp(lnr_node) * (1 - eps))
    right = table.amplitudes(2.3, np.exp(lnr_node) * (1 + eps))
    for x, y in zip(left, right):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6 * max(1.0, np.abs(x).max()))


# ------------------------------------------------------------------------------------------
# errors and loading
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0.4, 6.01, np.nan])
def test_n_outside_the_table_is_refused_with_the_range_and_fix(n):
    prof = default_profile()
    with pytest.raises(PhoRangeError, match=r"Sersic index n=.* outside the table range \[0.5, 6\].*--n-range") as info:
        prof.amplitudes(n, 0.2)
    assert (info.value.lo, info.value.hi) == prof.n_range
    with pytest.raises(PhoRangeError, match="Sersic index"):
        prof.amplitudes(np.array([2.0, n]), np.array([0.2, 0.2]))


@pytest.mark.parametrize("rh_arcsec", [0.001, 1.5, -0.1])
def test_rh_outside_the_table_is_refused_with_the_range_and_fix(rh_arcsec):
    prof = default_profile()
    with pytest.raises(PhoRangeError, match=r"rh_arcsec=.* outside the table range .*scale_arcsec.*--rh-range") as info:
        prof.amplitudes(2.0, rh_arcsec)
    assert info.value.value == pytest.approx(rh_arcsec)
    assert (info.value.lo, info.value.hi) == prof.rh_range_arcsec


def test_scale_converts_lengths_and_nothing_else():
    t1 = SersicTable.load()
    t2 = SersicTable.load(scale_arcsec=0.06)
    np.testing.assert_allclose(t2.radii_arcsec, 2 * t1.radii_arcsec)
    np.testing.assert_allclose(t2.rh_range_arcsec, 2 * np.array(t1.rh_range_arcsec))
    a1, dn1, dr1 = t1.amplitudes(2.5, 0.3)
    a2, dn2, dr2 = t2.amplitudes(2.5, 0.6)
    np.testing.assert_allclose(a2, a1, atol=1e-13)
    np.testing.assert_allclose(dn2, dn1, atol=1e-11)
    np.testing.assert_allclose(dr2, dr1 / 2, atol=1e-11)
    assert t2.with_scale(0.03).amplitudes(2.5, 0.3)[0] == pytest.approx(a1, abs=1e-13)


@pytest.mark.parametrize("scale", [0.0, -0.03, np.inf])
def test_bad_scale_is_refused(scale):
    with pytest.raises(PhoValueError, match="scale_arcsec"):
        SersicTable.load(scale_arcsec=scale)


def test_table_is_not_read_at_import():
    code = "import pho, pho.sersic; print(pho.sersic.default_profile.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_shipped_table_records_its_build():
    meta = default_profile().meta
    assert meta["builder"] == "tools/build_sersic_table.py"
    assert meta["smoothing_sigma"] == default_profile().smoothing_sigma
    assert meta["n_gauss"] == default_profile().radii_arcsec.size


# ------------------------------------------------------------------------------------------
# the builder
# ------------------------------------------------------------------------------------------
def _builder():
    spec = importlib.util.spec_from_file_location("build_sersic_table", REPO / "tools" / "build_sersic_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_builder_is_reproducible_and_refuses_to_overwrite(tmp_path, capsys):
    build = _builder()
    args = ["--n-range", "1", "2.5", "--n-step", "0.5", "--rh-range", "1", "4", "--ln-rh-step", "0.5",
            "--n-gauss", "12", "--figure", "none", "--quiet"]
    p1 = tmp_path / "a.npz"
    assert build.main(args + ["--output", str(p1)]) == 0
    assert str(p1) in capsys.readouterr().out
    first = p1.read_bytes()
    assert build.main(args + ["--output", str(p1), "--overwrite"]) == 0
    assert p1.read_bytes() == first
    table = SersicTable.load(p1, scale_arcsec=1.0)
    assert table.n_range == (1.0, 2.5) and table.radii_arcsec.size == 12
    assert table.amplitudes(1.7, 2.0)[0].sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(SystemExit):
        build.main(args + ["--output", str(p1)])
    assert "not overwriting" in capsys.readouterr().err


@pytest.mark.slow
def test_builder_figure_is_written(tmp_path):
    build = _builder()
    path = tmp_path / "fig.png"
    radii = build.mixture_radii(12, 0.08, 1000.0)
    build.make_figure(path, radii, 0.3, 1e-4, 1e-7, cases=((2.0, 3.0),))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# the table's derivatives reach the likelihood
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, rh_arcsec", [(0.8, 0.05), (2.7, 0.12), (5.2, 0.3)])
def test_likelihood_gradient_in_n_and_rh_with_the_shipped_table(rng, n, rh_arcsec):
    """d lnL / d n and d lnL / d rh through pho.Likelihood (shipped table) vs central differences."""
    import pho
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [20.5, 20.5]
    w.wcs.cd = [[-0.03 / 3600, 0.0], [0.0, 0.03 / 3600]]
    psf = pho.PSFMixture([0.7, 0.3], [0.0, 0.0], [0.0, 0.0], [1.0, 6.0], [0.0, 0.0], [1.0, 6.0])
    truth = pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=n, rh=rh_arcsec)
    blank = pho.Exposure(np.zeros((40, 40)), np.ones((40, 40)), w, psf, "B")
    data = pho.render(pho.Scene([truth]), blank) + rng.normal(0.0, 0.05, size=(40, 40))
    exposure = pho.Exposure(data, np.full((40, 40), 400.0), w, psf, "B")
    start = pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=n * 1.03, rh=rh_arcsec * 1.05)
    scene = pho.Scene([start])
    like = pho.Likelihood(scene, [exposure])
    theta = scene.get_vector()
    _, grad = like.lnlike_and_grad(theta)
    names = list(like.parameter_names)
    for name, step in (("s0.n", 1e-4), ("s0.rh", 1e-4 * rh_arcsec)):
        k = names.index(name)
        up, down = theta.copy(), theta.copy()
        up[k] += step
        down[k] -= step
        fd = (like.lnlike(up) - like.lnlike(down)) / (2 * step)
        assert grad[k] == pytest.approx(fd, rel=1e-5, abs=1e-6 * abs(fd) + 1e-8), name
        assert abs(grad[k]) > 0


# ------------------------------------------------------------------------------------------
# any size: the shipped table at several scales, blended per source (MultiScaleSersic)
# ------------------------------------------------------------------------------------------
def _band_points(prof):
    """r_h at both edges and inside every blending band, and between bands."""
    pts = []
    for lo, hi in prof.bands_arcsec:
        pts += [lo, np.sqrt(lo * hi), lo * 1.1, hi / 1.1, hi]
    return np.array(pts)


def test_auto_profile_is_the_default_and_covers_a_thousandth_to_ten_arcsec():
    import pho

    prof = auto_profile()
    assert prof is auto_profile() and prof.rh_range_arcsec == AUTO_RH_RANGE_ARCSEC == (0.001, 10.0)
    assert pho.Sersic(150.0, 2.0, {"B": 1.0}, 1.0, 0.0, 2.0, 3.0).profile is prof
    assert prof.radii_arcsec[0] == 0.0 and np.all(np.diff(prof.radii_arcsec) > 0)
    assert prof.n_range == default_profile().n_range
    # every scale's range contains its share of r_h, and the home scale is the shipped default
    assert DEFAULT_SCALE_ARCSEC in prof.scales_arcsec
    rh = np.geomspace(0.001, 10.0, 400)  # exact end points
    for n in (0.5, 1.0, 4.0, 6.0):
        a, da_dn, da_drh = prof.amplitudes(np.full(rh.size, n), rh)
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(da_dn.sum(axis=1), 0.0, atol=1e-10)
        np.testing.assert_allclose(da_drh.sum(axis=1) * rh, 0.0, atol=1e-10)
        # a source uses one scale's 28 radii, two scales' (at most 36) inside a band
        used = np.count_nonzero(a, axis=1)
        assert used.min() == default_profile().n_gauss and used.max() <= 36


def test_auto_profile_equals_the_shipped_table_at_home():
    """Where the home scale alone serves r_h, the amplitudes are the shipped table's, bit for bit."""
    prof, table = auto_profile(), default_profile()
    home_lo, home_hi = prof.bands_arcsec[0][1], prof.bands_arcsec[1][0]  # between the bands around home
    assert home_lo < 0.005 and home_hi > 0.85
    idx = np.searchsorted(prof.radii_arcsec, table.radii_arcsec)
    assert np.array_equal(prof.radii_arcsec[idx], table.radii_arcsec)  # the same radii, exactly
    for n, rh in ((0.7, 0.003), (2.3, 0.21), (6.0, 0.8)):
        mine, ref = prof.amplitudes(n, rh), table.amplitudes(n, rh)
        for x, y in zip(mine, ref):
            assert np.array_equal(x[idx], y)
            assert not np.delete(x, idx).any()


def test_auto_profile_scalar_and_vector_paths_agree(rng):
    prof = auto_profile()
    rh = np.concatenate([_band_points(prof), np.exp(rng.uniform(np.log(0.0011), np.log(9.9), 20))])
    n = rng.uniform(0.5, 6.0, size=rh.size)
    vec = prof.amplitudes(n, rh)
    for k in range(rh.size):
        for one in (prof.amplitudes(float(n[k]), float(rh[k])), prof.amplitudes(n[k:k + 1], rh[k:k + 1])):
            for x, y in zip(one, vec):
                np.testing.assert_allclose(np.squeeze(x), y[k], rtol=1e-12, atol=1e-14)


def test_auto_profile_value_and_derivatives_are_continuous_across_switches():
    """At both edges of every band the amplitudes and both derivatives agree from either side."""
    prof = auto_profile()
    for n in (0.8, 2.0, 5.5):
        for lo, hi in prof.bands_arcsec:
            for edge in (lo, hi):
                below = prof.amplitudes(n, edge * (1 - 1e-9))
                above = prof.amplitudes(n, edge * (1 + 1e-9))
                for x, y, scale in zip(below, above, (1.0, 1.0, 1.0 / edge)):
                    # |jump| bounded by the next derivative times the 2e-9 relative step
                    assert np.max(np.abs(x - y)) < 1e-6 * scale, (n, edge)


@pytest.mark.parametrize("n", [0.6, 1.0, 3.0, 6.0])
def test_auto_profile_derivatives_match_finite_differences(n):
    prof = auto_profile()
    for rh in np.concatenate([_band_points(prof), [0.0011, 0.05, 0.5, 2.5, 4.5, 9.9]]):
        a, da_dn, da_drh = prof.amplitudes(n, rh)
        h = 1e-6 * rh
        fd_rh = (prof.amplitudes(n, rh + h)[0] - prof.amplitudes(n, rh - h)[0]) / (2 * h)
        np.testing.assert_allclose(fd_rh, da_drh, rtol=0, atol=1e-6 * np.abs(da_drh).max() + 1e-9 / rh)
        hn = 1e-5
        lo, hi = min(n + hn, 6.0), max(n - hn, 0.5)
        fd_n = (prof.amplitudes(lo, rh)[0] - prof.amplitudes(hi, rh)[0]) / (lo - hi)
        np.testing.assert_allclose(fd_n, da_dn, rtol=0, atol=1e-5 * np.abs(da_dn).max() + 1e-9)


@pytest.mark.parametrize("rh_arcsec", [0.0009, 10.5, float("nan")])
def test_auto_profile_refuses_rh_outside_its_range(rh_arcsec):
    with pytest.raises(PhoRangeError, match=r"outside the profile's range \[0.001, 10\] arcsec.*MultiScaleSersic"):
        auto_profile().amplitudes(2.0, rh_arcsec)
    with pytest.raises(PhoRangeError, match="rh_arcsec"):
        auto_profile().amplitudes([2.0, 2.0], [0.1, rh_arcsec])


def test_multiscale_profile_arguments_are_checked_and_ranges_followed():
    wide = MultiScaleSersic(rh_range_arcsec=(1e-4, 40.0))
    assert wide.rh_range_arcsec == (1e-4, 40.0)
    assert len(wide.scales_arcsec) > len(auto_profile().scales_arcsec)
    a, _, _ = wide.amplitudes([3.0, 3.0], [1e-4, 40.0])
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    for kwargs in (dict(rh_range_arcsec=(1.0, 0.5)), dict(step=0), dict(band_ratio=1.0)):
        with pytest.raises(PhoValueError):
            MultiScaleSersic(**kwargs)


def _one_galaxy_problem(rng, n, rh_arcsec, size=40):
    import pho
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [size / 2 + 0.5, size / 2 + 0.5]
    w.wcs.cd = [[-0.03 / 3600, 0.0], [0.0, 0.03 / 3600]]
    psf = pho.PSFMixture([0.7, 0.3], [0.0, 0.0], [0.0, 0.0], [1.0, 6.0], [0.0, 0.0], [1.0, 6.0])
    truth = pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=n, rh=rh_arcsec)
    blank = pho.Exposure(np.zeros((size, size)), np.ones((size, size)), w, psf, "B")
    data = pho.render(pho.Scene([truth]), blank) + rng.normal(0.0, 0.05, size=(size, size))
    exposure = pho.Exposure(data, np.full((size, size), 400.0), w, psf, "B")
    return exposure


#: (n, r_h) inside the bands below home, above home (two of them), and on the top scale alone
AUTO_CASES = [(2.0, 0.0021), (1.5, 1.0), (4.0, 3.4), (2.5, 8.0)]


@pytest.mark.parametrize("n, rh_arcsec", AUTO_CASES)
def test_likelihood_gradient_with_the_auto_profile(rng, monkeypatch, n, rh_arcsec):
    """Every parameter's d lnL through pho.Likelihood (default profile) vs central differences,
    for galaxies inside blending bands and beyond the home scale (reference boxes widened so the
    model is smooth, as in test_likelihood.py)."""
    import pho
    import pho._reference
    from helpers import check_gradient

    monkeypatch.setattr(pho._reference, "BOX_NSIGMA", 40.0)
    exposure = _one_galaxy_problem(rng, n, rh_arcsec)
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=n * 1.03, rh=rh_arcsec * 1.02)])
    like = pho.Likelihood(scene, [exposure], backend="reference")
    theta = scene.get_vector()
    _, grad = like.lnlike_and_grad(theta)
    steps = [pho_step * max(abs(t), 1.0) if k == "flux" else (1e-6 * rh_arcsec if k == "rh" else None)
             for k, t, pho_step in zip(scene.parameter_kinds, theta, [1e-4] * theta.size)]
    from helpers import fd_step

    steps = [s if s is not None else fd_step(k, t) for s, k, t in zip(steps, scene.parameter_kinds, theta)]
    check_gradient(like.lnlike, grad, theta, scene.parameter_kinds, scene.parameter_names, rtol=1e-5, steps=steps)
    assert abs(grad[list(like.parameter_names).index("s0.rh")]) > 0


@pytest.mark.parametrize("n, rh_arcsec", AUTO_CASES)
def test_cpu_backend_matches_reference_with_the_auto_profile(rng, n, rh_arcsec):
    import pho
    from pho._backends import get_backend

    try:
        get_backend("cpu")
    except Exception as err:  # noqa: BLE001 - the compiled backend is optional
        pytest.skip(f"cpu backend unavailable: {err}")
    exposure = _one_galaxy_problem(rng, n, rh_arcsec)
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=n * 1.03, rh=rh_arcsec * 1.02)])
    theta = scene.get_vector()
    vr, gr = pho.Likelihood(scene, [exposure], backend="reference").lnlike_and_grad(theta)
    vf, gf = pho.Likelihood(scene, [exposure], backend="cpu").lnlike_and_grad(theta)
    assert vf == pytest.approx(vr, rel=1e-10)
    assert np.all(np.abs(gf - gr) <= 1e-10 * np.maximum(np.abs(gr), 1e-3 * np.max(np.abs(gr))))


def test_likelihood_gradient_is_continuous_across_a_switch(rng):
    """lnL and its gradient just below and just above the edges of a band agree."""
    import pho

    prof = auto_profile()
    lo, hi = prof.bands_arcsec[1]  # home scale to the next one up
    exposure = _one_galaxy_problem(rng, 2.0, lo)
    for edge in (lo, hi):
        out = []
        for rh in (edge * (1 - 1e-9), edge * (1 + 1e-9)):
            scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, q=0.7, pa=0.4, n=2.0, rh=rh)])
            out.append(pho.Likelihood(scene, [exposure], backend="reference").lnlike_and_grad(scene.get_vector()))
        (v0, g0), (v1, g1) = out
        assert v1 == pytest.approx(v0, rel=1e-8)
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-5 * np.abs(g0).max())
