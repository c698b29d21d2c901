"""Exposures: validation of bad input, immutability, FITS reading."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from helpers import tan_wcs, two_component_psf

import pho
from pho.errors import PhoDataError, PhoDataWarning, PhoRangeError, PhoValueError

SHAPE = (32, 40)


def _wcs():
    return tan_wcs(150.0, 2.0, (20.5, 16.5), rotation_deg=20.0)


def _make(pixels=None, ivar=None, wcs=None, psf=None, **kw):
    pixels = np.zeros(SHAPE) if pixels is None else pixels
    ivar = np.ones(SHAPE) if ivar is None else ivar
    return pho.Exposure(pixels, ivar, _wcs() if wcs is None else wcs, two_component_psf() if psf is None else psf, "F814W", **kw)


def test_nan_pixels_are_masked_with_a_warning():
    pixels = np.zeros(SHAPE)
    pixels[3, 4] = np.nan
    pixels[5, 6] = np.inf
    with pytest.warns(PhoDataWarning, match=r"2 of 1280 pixels are NaN or infinite; they are masked"):
        exp = _make(pixels)
    assert exp.mask[3, 4] and exp.mask[5, 6] and exp.mask.sum() == 2
    assert not exp.counted[3, 4] and exp.counted.sum() == 1278
    assert np.isnan(exp.pixels[3, 4])  # the data are kept as given
    # the masked pixels do not enter the likelihood
    scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 5.0})])
    clean = _make(np.where(np.isfinite(pixels), pixels, 0.0), mask=exp.mask)
    assert pho.Likelihood(scene, [exp]).lnlike(scene.get_vector()) == pho.Likelihood(scene, [clean]).lnlike(scene.get_vector())


def test_negative_ivar_is_refused():
    ivar = np.ones(SHAPE)
    ivar[0, :3] = -1.0
    with pytest.raises(PhoDataError, match="3 pixels have negative inverse variance"):
        _make(ivar=ivar)


def test_infinite_ivar_is_refused_and_nan_ivar_masked():
    ivar = np.ones(SHAPE)
    ivar[1, 1] = np.inf
    with pytest.raises(PhoDataError, match="infinite inverse variance"):
        _make(ivar=ivar)
    ivar[1, 1] = np.nan
    with pytest.warns(PhoDataWarning, match="1 pixels have NaN inverse variance"):
        exp = _make(ivar=ivar)
    assert exp.mask[1, 1]


def test_zero_ivar_pixels_do_not_count():
    ivar = np.ones(SHAPE)
    ivar[2, :] = 0.0
    exp = _make(ivar=ivar)
    assert not exp.counted[2].any() and not exp.mask[2].any()
    with pytest.raises(PhoDataError, match="no pixel counts"):
        _make(ivar=np.zeros(SHAPE))


def test_psf_summing_to_half_is_refused_through_exposure(tmp_path):
    with pytest.raises(PhoDataError, match="sum to 0.5"):
        _make(psf=pho.PSFMixture([0.25, 0.25], [0, 0], [0, 0], [1, 2], [0, 0], [1, 2]))
    # a file whose amplitudes sum to 0.5, written without PSFMixture (which would refuse it)
    cols = [fits.Column(name=n, format="D", array=np.array(v, float)) for n, v in
            zip(("amp", "x", "y", "cxx", "cxy", "cyy"), ([0.5], [0], [0], [1.5], [0], [1.5]))]
    path = tmp_path / "half_psf.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="PSFMIX")]).writeto(path)
    with pytest.raises(PhoDataError, match="sum to 0.5"):
        _make(psf=path)


def test_singular_wcs_is_refused():
    wcs = _wcs()
    s = 0.03 / 3600
    wcs.wcs.cd = [[s, 2 * s], [0.5 * s, s]]  # rank 1
    with pytest.raises(PhoDataError, match="the WCS is singular"):
        _make(wcs=wcs)


def test_non_celestial_wcs_is_refused():
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["LINEAR", "LINEAR"]
    with pytest.raises(PhoDataError, match="must be a 2-d celestial WCS"):
        _make(wcs=w)
    with pytest.raises(TypeError, match="astropy.wcs.WCS"):
        _make(wcs="RA---TAN")


def test_shape_disagreements_are_refused():
    with pytest.raises(PhoValueError, match=r"ivar has shape \(32, 39\) but pixels have shape \(32, 40\)"):
        _make(ivar=np.ones((32, 39)))
    with pytest.raises(PhoValueError, match="mask has shape"):
        _make(mask=np.zeros((3, 3), dtype=bool))
    with pytest.raises(PhoValueError, match="mask must be boolean"):
        _make(mask=np.zeros(SHAPE))
    with pytest.raises(PhoValueError, match="non-empty 2-d array"):
        pho.Exposure(np.zeros(5), np.ones(5), _wcs(), two_component_psf(), "F814W")
    with pytest.raises(PhoValueError, match="background has shape"):
        _make(background=np.zeros((2, 2)))


def test_scalar_options_are_checked():
    with pytest.raises(PhoRangeError, match="counts_per_flux=0 must be finite and positive"):
        _make(counts_per_flux=0)
    with pytest.raises(PhoDataError, match="background=nan is not finite"):
        _make(background=np.nan)
    with pytest.raises(PhoValueError, match="band must be a non-empty string"):
        pho.Exposure(np.zeros(SHAPE), np.ones(SHAPE), _wcs(), two_component_psf(), "")
    with pytest.raises(TypeError, match="psf must be a pho.PSFMixture"):
        _make(psf=[1.0])


def test_exposure_is_immutable():
    exp = _make()
    with pytest.raises(AttributeError, match="immutable"):
        exp.band = "F160W"
    with pytest.raises(ValueError):
        exp.pixels[0, 0] = 1.0
    with pytest.raises(ValueError):
        exp.ivar[0, 0] = 1.0


def test_user_arrays_are_not_modified():
    pixels = np.zeros(SHAPE)
    pixels[0, 0] = np.nan
    ivar = np.ones(SHAPE)
    with pytest.warns(PhoDataWarning):
        exp = _make(pixels, ivar)
    assert np.isnan(pixels[0, 0]) and pixels.flags.writeable and ivar.flags.writeable
    assert exp.pixels is not pixels


def _write_image(path, data, wcs):
    fits.PrimaryHDU(data.astype(np.float32), header=wcs.to_header()).writeto(path)


def test_from_fits_with_error_map_and_cutout(tmp_path):
    big = tan_wcs(150.0, 2.0, (50.0, 40.0), rotation_deg=-15.0, flip=True)
    data = np.arange(80 * 100, dtype=float).reshape(80, 100)
    err = np.full((80, 100), 0.5)
    err[30, 20] = 0.0  # no data
    _write_image(tmp_path / "sci.fits", data, big)
    _write_image(tmp_path / "err.fits", err, big)
    cut = (10, 20, 60, 70)  # x0, y0, x1, y1
    with pytest.warns(PhoDataWarning, match="1 pixels have error 0 or non-finite"):
        exp = pho.Exposure.from_fits(tmp_path / "sci.fits", err_path=tmp_path / "err.fits", psf=two_component_psf(),
                                     band="F814W", cutout=cut, counts_per_flux=2.0)
    assert exp.shape == (50, 50)
    np.testing.assert_array_equal(exp.pixels, data[20:70, 10:60])
    assert exp.ivar[10, 10] == 0.0 and exp.ivar[0, 0] == pytest.approx(4.0)
    assert exp.counts_per_flux == 2.0 and "sci.fits" in exp.name
    # the cut-out's pixel (x, y) is the full image's (x + x0, y + y0)
    ra, dec = big.pixel_to_world_values(33.3, 41.7)
    x, y = exp.sky_to_pixel(ra, dec)
    assert (x, y) == pytest.approx((33.3 - 10, 41.7 - 20), abs=1e-6)


def test_from_fits_with_ivar_and_errors(tmp_path):
    wcs = _wcs()
    _write_image(tmp_path / "sci.fits", np.zeros(SHAPE), wcs)
    _write_image(tmp_path / "ivar.fits", np.full(SHAPE, 3.0), wcs)
    _write_image(tmp_path / "err.fits", np.full(SHAPE, -1.0), wcs)
    exp = pho.Exposure.from_fits(tmp_path / "sci.fits", tmp_path / "ivar.fits", psf=two_component_psf(), band="B")
    assert np.all(exp.ivar == 3.0)
    with pytest.raises(PhoValueError, match="exactly one of ivar_path"):
        pho.Exposure.from_fits(tmp_path / "sci.fits", psf=two_component_psf(), band="B")
    with pytest.raises(PhoDataError, match="negative error"):
        pho.Exposure.from_fits(tmp_path / "sci.fits", err_path=tmp_path / "err.fits", psf=two_component_psf(), band="B")
    with pytest.raises(PhoValueError, match="cutout .* is not inside the image"):
        pho.Exposure.from_fits(tmp_path / "sci.fits", tmp_path / "ivar.fits", psf=two_component_psf(), band="B", cutout=(0, 0, 50, 10))


def test_from_fits_reads_the_real_cosmos_image(cosmos_image_path, tmp_path):
    fits.PrimaryHDU(np.ones((543, 543), dtype=np.float32)).writeto(tmp_path / "ivar.fits")
    exp = pho.Exposure.from_fits(cosmos_image_path, ivar_path=tmp_path / "ivar.fits", psf=two_component_psf(),
                                 band="F814W", cutout=(240, 240, 304, 304))
    # the galaxy is at 0-based pixel (271.1, 271.0) of the full image (data README)
    x, y = exp.sky_to_pixel(150.416558, 1.998697)
    assert (x, y) == pytest.approx((271.1 - 240, 271.0 - 240), abs=0.1)
    assert exp.pixel_scale_arcsec == pytest.approx(0.03, rel=1e-3)


@pytest.mark.parametrize("how", ["cd zeros", "cdelt zero", "one cdelt zero"])
def test_singular_wcs_names_the_exposure_not_wcslib(how):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [20.5, 16.5]
    if how == "cd zeros":
        w.wcs.cd = [[0.0, 0.0], [0.0, 0.0]]
    else:
        w.wcs.cdelt = [0.0, 0.0] if how == "cdelt zero" else [-1e-5, 0.0]
    with pytest.raises(PhoDataError, match=r"exposure\(band='F814W'.*the WCS is singular .*determinant 0.*fix the"):
        _make(wcs=w)


def test_nan_in_cd_is_reported_as_non_finite_not_distorted():
    wcs = _wcs()
    cd = np.array(wcs.wcs.cd)
    cd[0, 1] = np.nan
    wcs.wcs.cd = cd
    with pytest.raises(PhoDataError, match=r"non-finite WCS: CD = .*nan.*fix the CD keywords") as e:
        _make(wcs=wcs)
    assert "distorted" not in str(e.value)


def test_singular_wcs_in_a_fits_header_names_the_file(tmp_path):
    header = _wcs().to_header()
    header["PC1_1"], header["PC1_2"], header["PC2_1"], header["PC2_2"] = 1.0, 0.0, 0.0, 1.0
    header["CDELT1"] = 0.0
    fits.writeto(tmp_path / "sci.fits", np.zeros(SHAPE), header)
    fits.writeto(tmp_path / "err.fits", np.ones(SHAPE))
    with pytest.raises(PhoDataError, match=r"sci\.fits: the WCS .*(singular|unusable)"):
        pho.Exposure.from_fits(tmp_path / "sci.fits", err_path=tmp_path / "err.fits", psf=two_component_psf(), band="F")


def test_complex_pixels_are_refused(tmp_path):
    with pytest.raises(PhoValueError, match=r"pixels are complex \(dtype complex128\).*np.real"):
        _make(pixels=np.zeros(SHAPE) + 1j)
    with pytest.raises(PhoValueError, match=r"ivar are complex"):
        _make(ivar=np.ones(SHAPE, dtype=np.complex64))


def test_empty_fits_image_is_reported_as_empty(tmp_path):
    fits.writeto(tmp_path / "empty.fits", np.zeros((0, 0)), _wcs().to_header())
    fits.writeto(tmp_path / "err.fits", np.ones(SHAPE))
    with pytest.raises(PhoDataError, match=r"empty\.fits: the image is empty \(shape \(0, 0\)\)"):
        pho.Exposure.from_fits(tmp_path / "empty.fits", err_path=tmp_path / "err.fits", psf=two_component_psf(), band="F")


def test_sky_to_pixel_refuses_the_far_hemisphere():
    exp = _make()
    assert np.isfinite(exp.sky_to_pixel(150.0, 2.0)[0])
    with pytest.raises(PhoValueError, match=r"point 0 at \(ra, dec\) = \(330\.000000, -2\.000000\) deg is 180\.0 deg .*far side"):
        exp.sky_to_pixel(330.0, -2.0)
    with pytest.raises(PhoValueError, match="far side"):  # 95 deg away: t . p < 0
        exp.sky_to_pixel([150.0, 55.0], [2.0, 0.0])


def test_pickled_exposure_unpickles_its_wcs_only_when_asked():
    """A worker process gets the exposure without importing astropy (its WCS travels as bytes); the WCS
    comes back equal on first access, and the likelihood's numbers are unchanged."""
    import pickle

    e = _make()
    clone = pickle.loads(pickle.dumps(e))
    assert isinstance(clone.__dict__["_wcs"], bytes)
    assert clone.wcs.to_header_string() == e.wcs.to_header_string()
    assert not isinstance(clone.__dict__["_wcs"], bytes)
    assert pickle.loads(pickle.dumps(clone)).wcs.to_header_string() == e.wcs.to_header_string()
    np.testing.assert_array_equal(clone.sky_to_pixel(150.0001, 2.0001), e.sky_to_pixel(150.0001, 2.0001))
    with pytest.raises(AttributeError, match="immutable"):
        clone.band = "x"


def test_a_worker_needs_neither_astropy_nor_scipy_special_to_evaluate_the_likelihood(tmp_path):
    """``import pho`` and unpickling a likelihood (what a sampler's spawned worker does) import neither
    astropy nor scipy.special (~1.5 s of start-up per worker), and the unpickled likelihood gives the same lnL."""
    import pickle
    import subprocess
    import sys

    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"F814W": 10.0}, q=0.7, pa=0.3, n=1.5, rh=0.1)])
    like = pho.Likelihood(scene, [_make(pixels=np.ones(SHAPE))], backend="cpu")
    theta = scene.get_vector()
    path = tmp_path / "like.pkl"
    path.write_bytes(pickle.dumps(like))
    code = ("import pickle, sys, numpy as np, pho\n"
            f"like = pickle.loads(open({str(path)!r}, 'rb').read())\n"
            f"print(repr(like.lnlike(np.array({list(map(float, theta))!r}))))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'astropy' or m.startswith('scipy.special'))[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert float(out[0]) == like.lnlike(theta)
    assert out[1] == "[]"
