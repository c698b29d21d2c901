"""pho.psffit: EM + polish recovers known mixtures, pixel integration, bad input, real PSFs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

import pho
from pho import PhoDataError, PhoDataWarning, PhoRangeError, PhoValueError, PSFMixture
from pho._reference import MIN_FWHM_PIX
from pho.psf import narrowest_fwhm_pix
from pho.psffit import (
    _em,
    _model_and_jac,
    default_pixel_integrated,
    _pack,
    _quadrature,
    find_psf_center,
    fit_psf_mixture,
    plot_psf_fit,
    read_psf_image,
)

TRUE = PSFMixture(
    amp=[0.55, 0.30, 0.15],
    x=[0.0, 0.05, -0.10],
    y=[0.0, -0.04, 0.08],
    cxx=[0.40, 2.0, 12.0],
    cxy=[0.05, -0.3, 1.0],
    cyy=[0.50, 2.6, 9.0],
)


def sampled_image(mix: PSFMixture, shape, center, oversample):
    """Point samples of a mixture (detector pixels) on an oversampled grid, per image pixel."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return mix.evaluate((xx - center[0]) / oversample, (yy - center[1]) / oversample) / oversample**2


def integrated_image(amp, x, y, sx, sy, shape, center):
    """Exact pixel integrals (native sampling) of axis-aligned Gaussians, via erf."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = np.zeros(shape)
    for a, mx, my, sgx, sgy in zip(amp, x, y, sx, sy):
        dx = xx - center[0] - mx
        dy = yy - center[1] - my
        fx = 0.5 * (erf((dx + 0.5) / (np.sqrt(2) * sgx)) - erf((dx - 0.5) / (np.sqrt(2) * sgx)))
        fy = 0.5 * (erf((dy + 0.5) / (np.sqrt(2) * sgy)) - erf((dy - 0.5) / (np.sqrt(2) * sgy)))
        img += a * fx * fy
    return img


def sorted_by_width(mix):
    order = np.argsort(mix.cxx + mix.cyy)
    return {name: getattr(mix, name)[order] for name in ("amp", "x", "y", "cxx", "cxy", "cyy")}


def test_recovers_known_mixture_from_oversampled_image():
    center = (60.3, 57.8)
    image = 3.7 * sampled_image(TRUE, (120, 124), center, oversample=4)  # any normalization
    fit = fit_psf_mixture(image, 3, 4, center_pix=center)
    got, want = sorted_by_width(fit.mixture), sorted_by_width(TRUE)
    np.testing.assert_allclose(got["amp"], want["amp"], atol=2e-3)
    for name in ("x", "y"):
        np.testing.assert_allclose(got[name], want[name], atol=5e-3)
    for name in ("cxx", "cxy", "cyy"):  # to 1% of each Gaussian's width squared
        assert np.all(np.abs(got[name] - want[name]) <= 0.01 * want["cxx"]), (name, got[name], want[name])
    assert fit.max_abs_residual_frac_peak < 1e-3
    assert fit.mixture.amp.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.ee_model, fit.ee_data, atol=2e-3)


def test_more_starts_never_raise_the_polish_merit():
    image = sampled_image(TRUE, (64, 64), (32.2, 31.7), 4)
    image = image + 0.02 * image.max() * np.exp(-0.5 * ((np.arange(64) - 32) / 3.0) ** 2)[None, :]  # a bar
    one = fit_psf_mixture(image, 2, 4, n_starts=1)
    three = fit_psf_mixture(image, 2, 4, n_starts=3)

    def chi2(fit):
        return float(np.nansum((fit.data - fit.model)[fit.fit_mask] ** 2))

    # the selection is by the binned merit; the per-pixel sum agrees to well within the differences
    assert chi2(three) <= chi2(one) * (1 + 1e-3)
    assert three.mixture.meta["START"] in (0, 1, 2)


def test_em_alone_recovers_a_known_mixture_from_its_samples():
    # EM's fixed point on noise-free, well-sampled, untruncated data is the generating mixture;
    # components apart so that EM's linear convergence is quick
    true = PSFMixture([0.5, 0.3, 0.2], [0.0, 6.0, -5.0], [0.0, -4.0, 5.0], [2.2, 4.0, 6.0], [0.3, -1.0, 2.0],
                      [2.5, 3.0, 5.0])  # fmt: skip
    yy, xx = np.mgrid[-40:41, -40:41].astype(float)
    weights = true.evaluate(xx, yy).ravel()
    cov0 = np.array([np.eye(2) * 3.0] * 3)
    amp, mu, mv, cov, n_iter, converged, _ = _em(
        xx.ravel(), yy.ravel(), weights, np.ones(3) / 3, np.array([1.0, 4.0, -3.0]), np.array([1.0, -2.0, 3.0]),
        cov0, 2000, 1e-13, 0.0,
    )  # fmt: skip
    assert converged and n_iter < 2000
    np.testing.assert_allclose(amp, true.amp, atol=1e-5)
    np.testing.assert_allclose(mu, true.x, atol=1e-5)
    np.testing.assert_allclose(mv, true.y, atol=1e-5)
    np.testing.assert_allclose(cov[:, 0, 0], true.cxx, atol=1e-5)
    np.testing.assert_allclose(cov[:, 0, 1], true.cxy, atol=1e-5)
    np.testing.assert_allclose(cov[:, 1, 1], true.cyy, atol=1e-5)


def test_found_centre_matches_the_true_centre_of_a_symmetric_psf():
    center = (31.37, 28.81)
    sym = PSFMixture([0.7, 0.3], [0, 0], [0, 0], [0.5, 3.0], [0.1, -0.4], [0.6, 2.0])
    image = sampled_image(sym, (64, 60), center, oversample=4)
    x, y = find_psf_center(image, oversample=4)
    assert x == pytest.approx(center[0], abs=1e-4)
    assert y == pytest.approx(center[1], abs=1e-4)
    fit = fit_psf_mixture(image, 2, 4)
    assert fit.center_source == "found"
    np.testing.assert_allclose(fit.mixture.x, 0.0, atol=1e-3)
    np.testing.assert_allclose(fit.mixture.y, 0.0, atol=1e-3)


def test_pixel_integrated_fit_removes_the_pixel_not_counts_it_twice():
    # Native sampling, image = exact integrals of two round-ish Gaussians over each pixel.
    amp, x, y = [0.7, 0.3], [0.0, 0.1], [0.0, -0.1]
    sx, sy = [0.8, 2.5], [0.9, 2.2]
    center = (20.2, 19.6)
    image = integrated_image(amp, x, y, sx, sy, (41, 39), center)
    fit = fit_psf_mixture(image, 2, 1, center_pix=center)  # default for oversample 1: integrated
    assert fit.pixel_integrated
    got = sorted_by_width(fit.mixture)
    np.testing.assert_allclose(got["cxx"], np.square(sx), rtol=5e-3)
    np.testing.assert_allclose(got["cyy"], np.square(sy), rtol=5e-3)
    np.testing.assert_allclose(got["amp"], amp, atol=2e-3)
    assert fit.max_abs_residual_frac_peak < 2e-3
    # Taking the same image as point samples puts the pixel into the Gaussians: about +1/12.
    naive = sorted_by_width(fit_psf_mixture(image, 2, 1, center_pix=center, pixel_integrated=False).mixture)
    assert naive["cxx"][0] - got["cxx"][0] == pytest.approx(1 / 12, abs=0.02)
    assert naive["cyy"][0] - got["cyy"][0] == pytest.approx(1 / 12, abs=0.02)


@pytest.mark.parametrize("integrated", [False, True])
def test_model_jacobian_matches_finite_differences(integrated, rng):
    u = rng.uniform(-3, 3, 40)
    v = rng.uniform(-3, 3, 40)
    offsets, qweights = _quadrature(integrated, 1.0)
    p = _pack(np.array([0.6, 0.4]), np.array([0.1, -0.2]), np.array([0.0, 0.3]),
              np.array([0.7, 2.5]), np.array([0.1, -0.4]), np.array([0.9, 1.8]))  # fmt: skip
    area = rng.uniform(0.5, 2.0, 40)
    _, jac = _model_and_jac(p, u, v, offsets, qweights, area)
    for i in range(p.size):
        h = 1e-6 * max(1.0, abs(p[i]))
        pp, pm = p.copy(), p.copy()
        pp[i] += h
        pm[i] -= h
        fd = (_model_and_jac(pp, u, v, offsets, qweights, area, False)[0]
              - _model_and_jac(pm, u, v, offsets, qweights, area, False)[0]) / (2 * h)  # fmt: skip
        np.testing.assert_allclose(jac[:, i], fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max(), err_msg=f"parameter {i}")


def test_non_square_image_with_nan_and_negative_pixels(rng):
    center = (27.4, 20.1)
    image = sampled_image(TRUE, (41, 57), center, oversample=2)
    image += rng.normal(0.0, 1e-4 * image.max(), image.shape)  # leaves negative pixels in the wings
    image[3, 5] = np.nan
    image[40, 50] = np.inf
    with pytest.warns(PhoDataWarning) as record:
        fit = fit_psf_mixture(image, 3, 2)
    text = " ".join(str(w.message) for w in record)
    assert "2 NaN or infinite pixels" in text
    assert "negative pixels" in text
    assert np.isnan(fit.data[3, 5])
    assert np.isfinite(fit.max_abs_residual_frac_peak)
    assert fit.max_abs_residual_frac_peak < 5e-3
    assert fit.mixture.meta["NNONFIN"] == 2
    assert fit.mixture.meta["NNEGPIX"] > 0


def test_radius_limits_the_fitted_pixels():
    image = sampled_image(TRUE, (80, 80), (40.0, 40.0), 4)
    fit = fit_psf_mixture(image, 2, 4, radius_det_pix=3.0)
    yy, xx = np.mgrid[0:80, 0:80]
    r = np.hypot(xx - fit.center_pix[0], yy - fit.center_pix[1]) / 4
    assert fit.fit_mask.sum() == np.count_nonzero(r <= 3.0)
    assert not fit.fit_mask[r > 3.0].any()
    assert fit.mixture.meta["RADIUS"] == 3.0


_YY, _XX = np.mgrid[0:20, 0:20]
#: A PSF-like image (a Gaussian of sigma 2 pixels), for checks that need an image with a PSF in it.
_PEAKED = np.exp(-0.5 * ((_XX - 9.6) ** 2 + (_YY - 9.3) ** 2) / 4.0)


@pytest.mark.parametrize(
    "image, kwargs, error, match",
    [
        (np.ones((3, 8, 8)), {}, PhoValueError, "must be 2-D"),
        (np.ones((4, 30)), {}, PhoValueError, "too small"),
        (np.full((20, 20), np.nan), {}, PhoDataError, "no finite pixels"),
        (np.zeros((20, 20)), {}, PhoDataError, "positive flux"),
        (np.ones((20, 20)), {"ngauss": 0}, PhoValueError, "from 1 to 20"),
        (np.ones((20, 20)), {"n_starts": 5}, PhoValueError, "must be 1, 2 or 3"),
        (np.ones((20, 20)), {"oversample": 0.0}, PhoRangeError, r"outside \[0.5, 50\]"),
        (_PEAKED, {"radius_det_pix": 0.1}, PhoValueError, "larger --radius"),
        (_PEAKED, {"radius_det_pix": -1.0}, PhoValueError, "positive number"),
        (_PEAKED, {"center_pix": (30.0, 5.0)}, PhoValueError, "outside the image"),
    ],
)
def test_bad_input_is_refused_with_a_message(image, kwargs, error, match):
    args = {"ngauss": 2, "oversample": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        fit_psf_mixture(image, **args)


@pytest.mark.parametrize("image", [np.ones((20, 20)), 1.0 + 0.01 * np.random.default_rng(3).normal(size=(21, 21))])
def test_flat_image_is_refused_as_holding_no_psf(image):
    # before the fix: a "fit" with covariances of ~1e6 pixel^2 and exit status 0
    with pytest.raises(PhoDataError, match=r"the PSF image is flat: its median pixel is .* no PSF is present"):
        fit_psf_mixture(image, 2, 1.0)


@pytest.mark.parametrize("ngauss", [1, 2, 3])
def test_one_pixel_psf_is_fitted_at_the_narrowest_drawable_width(ngauss):
    # All the light in one pixel: after integration over the pixel a Gaussian of FWHM 0.35 pixel
    # puts 99.8% of it there, so the polish, whose widths are bounded there, fits it to well
    # under 1e-3 of the peak (0.04% measured) instead of writing components pho cannot draw.
    image = np.zeros((21, 21))
    image[10, 10] = 1.0
    fit = fit_psf_mixture(image, ngauss, 1.0)
    m = fit.mixture
    assert np.all(narrowest_fwhm_pix(m.cxx, m.cxy, m.cyy) >= MIN_FWHM_PIX)
    assert fit.max_abs_residual_frac_peak < 1e-3
    assert fit.model_scale == pytest.approx(1.0, rel=1e-2)


def test_unpolished_fit_narrower_than_drawable_is_refused_not_written():
    image = np.zeros((21, 21))
    image[10, 10] = 1.0
    with pytest.raises(PhoDataError, match=r"FWHM .* below the 0\.35 pixel .* too undersampled.*nothing was written"):
        fit_psf_mixture(image, 2, 1.0, polish=False)


def test_floor_narrowest_axis_widens_only_the_narrow_axis():
    from pho.psffit import _floor_narrowest_axis

    angle = 0.6
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    narrow = rot @ np.diag([0.004, 0.3]) @ rot.T  # tilted, narrow axis below the floor
    wide = np.array([[0.5, 0.1], [0.1, 0.4]])
    cuu, cuv, cvv = (np.array([narrow[0, 0], wide[0, 0]]), np.array([narrow[0, 1], wide[0, 1]]),
                     np.array([narrow[1, 1], wide[1, 1]]))
    floor = 0.02
    cuu2, cuv2, cvv2, n = _floor_narrowest_axis(cuu, cuv, cvv, floor)
    assert n == 1
    widened = np.array([[cuu2[0], cuv2[0]], [cuv2[0], cvv2[0]]])
    np.testing.assert_allclose(rot.T @ widened @ rot, np.diag([floor, 0.3]), atol=1e-12)
    assert (cuu2[1], cuv2[1], cvv2[1]) == (cuu[1], cuv[1], cvv[1])


@pytest.mark.parametrize("long_axis_var", [1e3, 1e6, 1e9, 1e11])
def test_floor_narrowest_axis_holds_for_needles_after_the_round_trip(long_axis_var):
    # A K = 8 grid fit of the ACS PSFs produced a needle (narrow axis 0, long axis huge) whose
    # widened narrow axis lost its last digits in the (xx, xy, yy) form and failed the check.
    from pho.psffit import MIN_DRAWABLE_VARIANCE_DET_PIX2, _floor_narrowest_axis, _pack, _unpack

    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    c = rot @ np.diag([0.0, long_axis_var]) @ rot.T
    cuu, cuv, cvv, n = _floor_narrowest_axis(np.array([c[0, 0]]), np.array([c[0, 1]]), np.array([c[1, 1]]),
                                             MIN_DRAWABLE_VARIANCE_DET_PIX2)
    assert n == 1
    _, _, _, l11, l21, l22 = _unpack(_pack(np.ones(1), np.zeros(1), np.zeros(1), cuu, cuv, cvv))
    fwhm = narrowest_fwhm_pix(l11**2, l11 * l21, l21**2 + l22**2)
    assert MIN_FWHM_PIX <= fwhm[0] < 1.01 * MIN_FWHM_PIX


def test_mostly_nan_image_is_refused():
    image = np.ones((20, 20))
    image[:, :12] = np.nan
    with pytest.raises(PhoDataError, match="too few remain"):
        fit_psf_mixture(image, 1, 1.0)


def _write(path, data, **header):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_read_oversampling_from_header_or_refuse(tmp_path):
    data = sampled_image(TRUE, (40, 40), (20, 20), 2)
    img = read_psf_image(_write(tmp_path / "a.fits", data, DET_SAMP=2), 0)
    assert (img.oversample, img.oversample_source) == (2.0, "header DET_SAMP")
    with pytest.raises(PhoValueError, match="no oversampling keyword.*--oversample"):
        read_psf_image(_write(tmp_path / "b.fits", data), 0)
    assert read_psf_image(tmp_path / "b.fits", 0, oversample=2).oversample == 2.0
    with pytest.warns(PhoDataWarning, match="differs from the header's OVERSAMP=4"):
        assert read_psf_image(_write(tmp_path / "c.fits", data, OVERSAMP=4), 0, oversample=2).oversample == 2.0
    with pytest.raises(PhoValueError, match="3 HDUs|1 HDUs"):
        read_psf_image(tmp_path / "a.fits", 3)
    with pytest.raises(PhoValueError, match=r"holds a cube of 2 PSFs of shape \(9, 9\); fit them as a grid with --planes all"):
        read_psf_image(_write(tmp_path / "d.fits", np.ones((2, 9, 9)), OVERSAMP=1), 0)
    assert read_psf_image(tmp_path / "d.fits", 0, plane=1).data.shape == (9, 9)
    with pytest.raises(PhoValueError, match=r"has 2 planes \(0..1\); plane 2 is out of range"):
        read_psf_image(tmp_path / "d.fits", 0, plane=2)
    with pytest.raises(PhoValueError, match="4-D array"):
        read_psf_image(_write(tmp_path / "e.fits", np.ones((2, 2, 9, 9)), OVERSAMP=1), 0)


def test_plot_draws_four_panels_and_one_ellipse_per_gaussian(tmp_path):
    from matplotlib.patches import Ellipse

    fit = fit_psf_mixture(sampled_image(TRUE, (60, 60), (30, 30), 4), 3, 4)
    fig = plot_psf_fit(fit, tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    assert len(fig.axes) >= 4
    assert sum(isinstance(p, Ellipse) for p in fig.axes[3].patches) == 3


def test_default_pixel_integration_follows_sampling_and_extname():
    assert default_pixel_integrated(1.0) is True
    assert default_pixel_integrated(4.0) is False
    assert default_pixel_integrated(4.0, "DET_SAMP") is True
    assert default_pixel_integrated(4.0, "OVERSAMP") is False


def test_api_is_exported():
    assert pho.fit_psf_mixture is fit_psf_mixture


@pytest.mark.slow
def test_jwst_k4_beats_the_reference_mixture(jwst_psf_path):
    img = read_psf_image(jwst_psf_path, 0)
    assert img.oversample == 4.0
    fit = fit_psf_mixture(img.data, 4, img.oversample)
    assert not fit.pixel_integrated  # WebbPSF's oversampled extension samples the optical PSF
    # a known K = 4 mixture reaches 0.27 and 5.2% (issue 5); ours must beat both
    assert fit.sum_abs_residual_frac < 0.27
    assert fit.max_abs_residual_frac_peak < 0.052
    # WebbPSF puts the centre at (143.5, 143.5); ours is found, within 0.1 PSF pixel of it
    assert fit.center_pix == pytest.approx((143.5, 143.5), abs=0.1)
    np.testing.assert_allclose(fit.ee_model[:2], fit.ee_data[:2], atol=0.01)


def test_hst_native_psf_is_fitted_as_pixel_integrated(hst_psfs_path):
    img = read_psf_image(hst_psfs_path, 1, oversample=1)
    assert img.data.shape == (39, 37)
    fit = fit_psf_mixture(img.data, 3, 1)
    assert fit.pixel_integrated and fit.mixture.meta["PIXINTEG"] is True
    assert fit.sum_abs_residual_frac < 0.1
    assert fit.max_abs_residual_frac_peak < 0.06
    np.testing.assert_allclose(fit.ee_model, fit.ee_data, atol=0.01)
    # The mixture rendered by exact pixel integration reproduces the image's peak pixel.
    assert fit.model[fit.data == np.nanmax(fit.data)][0] == pytest.approx(np.nanmax(fit.data), rel=0.06)


@pytest.mark.parametrize("ngauss", [13, 14])
def test_jwst_star_within_one_percent_at_detector_sampling(jwst_psf_path, ngauss):
    """Issue 14's 1% on the 4x oversampled JWST image: with 13-14 Gaussians pho's star, rendered at
    detector pixels, is within 1% of the peak of the image summed in 4 x 4 blocks (0.71% and 0.97%
    measured). K = 14 used to fail: a Gaussian of no weight drifted to a variance of 1e41 pixel^2,
    whose narrow axis rounded to zero; the polish now bounds widths at 100 times the image."""
    from astropy.wcs import WCS

    img = read_psf_image(jwst_psf_path, 0)
    fit = fit_psf_mixture(img.data, ngauss, img.oversample)
    assert fit.max_abs_residual_frac_peak < 0.01
    S = int(img.oversample)
    n = img.data.shape[0] // S
    binned = img.data.reshape(n, S, n, S).sum(axis=(1, 3))
    cx, cy = fit.center_pix
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = [[-0.031 / 3600, 0], [0, 0.031 / 3600]]
    exp = pho.Exposure(np.zeros((n, n)), np.ones((n, n)), w, fit.mixture, "F200W")
    ra, dec = w.pixel_to_world_values((cx - (S - 1) / 2) / S, (cy - (S - 1) / 2) / S)
    star = pho.render(pho.Scene([pho.PointSource(float(ra), float(dec), {"F200W": 1.0})]), exp)
    flux = float(np.sum(star * binned) / np.sum(star * star))
    assert float(np.max(np.abs(flux * star - binned))) / binned.max() < 0.01
