"""A real galaxy: COSMOS 147246 (HST ACS F814W) fitted with one Sersic through its real, rotated WCS.

The PSF image becomes a 3-Gaussian mixture with pho.fit_psf_mixture; the noise is the sky noise
measured from the image (median absolute deviation over the whole 543 x 543 cutout, which is
mostly sky). Set PHO_FIGURE_DIR to keep the residual figure (cosmos_147246_fit.png).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import pho
from pho.fit import optimize

#: 0-based pixel of the galaxy in the full image (shared/data/README.md).
GALAXY_XY = (271.1, 271.0)
HALF = 80  # the cutout is 160 x 160 pixels (4.8"), enough for the galaxy's disk


def _backend():
    from pho import _backends

    return "cpu" if "cpu" in _backends.available_backends() else "reference"


@pytest.fixture
def cosmos(cosmos_image_path, cosmos_psf_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    image_path, psf_path = cosmos_image_path, cosmos_psf_path
    image = fits.getdata(image_path).astype(float)
    with _quiet():  # astropy's FITSFixedWarning about MJD-OBS
        wcs = WCS(fits.getheader(image_path)).celestial
    psf = pho.fit_psf_mixture(fits.getdata(psf_path).astype(float), 3, 1.0).mixture
    sigma = 1.4826 * np.median(np.abs(image - np.median(image)))
    x0, y0 = 271, 271
    sl = (slice(y0 - HALF, y0 + HALF), slice(x0 - HALF, x0 + HALF))
    cut = image[sl]
    exposure = pho.Exposure(cut, np.full(cut.shape, 1 / sigma**2), wcs[sl], psf, "F814W", name="COSMOS 147246")
    ra, dec = wcs.pixel_to_world_values(*GALAXY_XY)
    aperture = float(cut[HALF - 20:HALF + 20, HALF - 20:HALF + 20].sum())
    return exposure, float(ra), float(dec), aperture, wcs


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


@pytest.mark.slow
def test_cosmos_single_sersic_fit(cosmos, tmp_path, capsys):
    exposure, ra, dec, aperture, wcs = cosmos
    starts = [dict(q=0.7, pa=0.3, n=1.5, rh=0.3), dict(q=0.6, pa=2.0, n=3.0, rh=0.6)]
    fits_ = []
    for s in starts:
        scene = pho.Scene([pho.Sersic(ra, dec, {"F814W": aperture}, **s)])
        like = pho.Likelihood(scene, [exposure], backend=_backend())
        fits_.append((like, optimize(like)))
    (like, best), (_, other) = fits_
    assert best.success and other.success
    values = best.as_dict()
    # Both starts reach the same optimum (angles modulo pi).
    assert other.lnlike == pytest.approx(best.lnlike, abs=0.05)
    for name in ("s0.flux_F814W", "s0.n", "s0.rh", "s0.q"):
        assert abs(other.as_dict()[name][0] - values[name][0]) < 0.1 * values[name][1] + 1e-9, name
    # The fitted centre, through the real WCS, is the catalogued one to 2 pixels: the galaxy is a
    # clumpy spiral whose light centroid itself moves by +-1 pixel between radii of 5 and 60 pixels.
    x, y = wcs.world_to_pixel_values(values["s0.ra"][0], values["s0.dec"][0])
    assert np.hypot(x - GALAXY_XY[0], y - GALAXY_XY[1]) < 2.0
    # The model's counts in the cutout match the data's (sky noise is white: flux is unbiased).
    model = like.model_images(best.theta)[0]
    data_sum, model_sum = float(exposure.pixels.sum()), float(model.sum())
    noise_sum = np.sqrt(exposure.pixels.size) / np.sqrt(exposure.ivar[0, 0])
    assert abs(data_sum - model_sum) < 0.03 * data_sum + 5 * noise_sum
    # No parameter stuck on its prior bound (e.g. rh at the table's upper end).
    assert best.at_bound == []
    chi2_per_pixel = float(np.sum((exposure.pixels - model) ** 2 * exposure.ivar) / model.size)
    # A clumpy spiral is not a Sersic: the fit is good but not perfect; a broken fit (wrong WCS
    # orientation, wrong PSF) gives several times this.
    assert chi2_per_pixel < 2.5
    from pho import plots

    out_dir = Path(os.environ.get("PHO_FIGURE_DIR", tmp_path))
    path = out_dir / "cosmos_147246_fit.png"
    plots.plot_exposures(like, best.theta, path)
    assert path.stat().st_size > 10000
    with capsys.disabled():
        print(f"\nCOSMOS 147246 single-Sersic fit ({like.exposures[0].shape} px, chi2/pixel {chi2_per_pixel:.2f}):")
        print(best)
        print(f"residual figure: {path}")
