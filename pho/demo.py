"""The built-in demo problem: two blended Sersic galaxies and a star, two bands, two dithers each.

Everything is made here, without downloads: four exposures (32 x 32 pixels by default) at 0.06"/pixel (a
JWST/NIRCam long-wave-like scale), two per band, the second of each pair shifted by a
non-integer number of pixels and rotated by 7 degrees, each with a TAN WCS; an undersampled
3-Gaussian PSF per band (FWHM 1.6 and 2.0 pixels: core plus two wider wings, slightly
elliptical); Gaussian noise of known sigma. The truth is drawn with pho's own model (so the
fit can recover it exactly up to noise); the initial guesses are deliberately off by about a
pixel in position, 30-40% in flux and size, and more in shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DemoProblem", "build_demo", "DEMO_BANDS", "PIXEL_SCALE_ARCSEC"]

#: Bands of the demo, with the PSF core FWHM in pixels.
DEMO_BANDS = {"F277W": 1.6, "F444W": 2.0}
#: Pixel scale of every demo exposure, arcsec.
PIXEL_SCALE_ARCSEC = 0.06
#: Field centre (a GOODS-S position), degrees.
RA0_DEG, DEC0_DEG = 53.1620, -27.7810
#: Noise sigma per pixel, in flux units (counts_per_flux = 1).
NOISE_SIGMA = 0.04


@dataclass
class DemoProblem:
    """The demo's inputs and truth.

    Attributes
    ----------
    exposures : list of pho.Exposure
        Four noisy exposures (two per band).
    truth : pho.Scene
        The scene the data were drawn from.
    initial : pho.Scene
        The deliberately wrong starting scene.
    """

    exposures: list
    truth: object
    initial: object


def demo_psf(fwhm_pix: float):
    """A 3-Gaussian, slightly elliptical PSF with a core of the given FWHM (pixels), summing to one."""
    from .psf import PSFMixture

    sigma = fwhm_pix / (2 * math.sqrt(2 * math.log(2)))
    amps = np.array([0.72, 0.20, 0.08])
    widths = sigma * np.array([1.0, 1.9, 4.0])
    e = 0.06
    return PSFMixture(
        amps,
        np.zeros(3),
        np.zeros(3),
        widths**2 * (1 + e),
        np.array([0.02, 0.05, 0.0]) * widths**2,
        widths**2 * (1 - e),
        meta={"ORIGIN": "pho.demo"},
    )


def demo_wcs(shape, dx_pix: float, dy_pix: float, rot_deg: float):
    """A TAN WCS with 0.06"/pixel, north up east left rotated by ``rot_deg``, the field centre
    at 0-based pixel ``((nx - 1)/2 + dx_pix, (ny - 1)/2 + dy_pix)``."""
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0_DEG, DEC0_DEG]
    w.wcs.crpix = [(nx - 1) / 2 + dx_pix + 1, (ny - 1) / 2 + dy_pix + 1]
    s = PIXEL_SCALE_ARCSEC / 3600.0
    t = math.radians(rot_deg)
    w.wcs.cd = s * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    return w


def _sky(dx_arcsec, dy_arcsec):
    """Offsets east/north in arcsec -> (ra, dec) in degrees."""
    return (
        RA0_DEG + dx_arcsec / 3600.0 / math.cos(math.radians(DEC0_DEG)),
        DEC0_DEG + dy_arcsec / 3600.0,
    )


def demo_sources(profile=None, initial: bool = False) -> list:
    """The demo's three sources (truth, or the perturbed initial guesses)."""
    from .sources import PointSource, Sersic

    b1, b2 = DEMO_BANDS
    if not initial:
        ra_a, dec_a = _sky(-0.18, -0.06)
        ra_b, dec_b = _sky(0.24, 0.10)
        ra_s, dec_s = _sky(0.15, -0.62)
        return [
            Sersic(ra_a, dec_a, {b1: 6.0, b2: 9.0}, q=0.55, pa=0.6, n=1.2, rh=0.25, profile=profile),
            Sersic(ra_b, dec_b, {b1: 4.0, b2: 4.5}, q=0.8, pa=2.2, n=3.0, rh=0.12, profile=profile),
            PointSource(ra_s, dec_s, {b1: 2.0, b2: 1.4}),
        ]
    ra_a, dec_a = _sky(-0.12, -0.02)
    ra_b, dec_b = _sky(0.29, 0.05)
    ra_s, dec_s = _sky(0.19, -0.57)
    return [
        Sersic(ra_a, dec_a, {b1: 4.0, b2: 6.0}, q=0.75, pa=0.3, n=2.0, rh=0.35, profile=profile),
        Sersic(ra_b, dec_b, {b1: 3.0, b2: 3.0}, q=0.7, pa=2.6, n=2.0, rh=0.18, profile=profile),
        PointSource(ra_s, dec_s, {b1: 1.5, b2: 1.0}),
    ]


def build_demo(rng: np.random.Generator | None = None, shape: tuple[int, int] = (32, 32), profile=None) -> DemoProblem:
    """Build the demo problem.

    Parameters
    ----------
    rng : numpy.random.Generator, optional
        Noise generator; default seeded with 2026 so the demo is repeatable.
    shape : (ny, nx)
        Exposure size in pixels.
    profile : optional
        Sersic profile (default: ``pho.sersic.auto_profile()``, any r_h from 0.001" to 10").

    Returns
    -------
    DemoProblem
    """
    from .exposure import Exposure
    from .likelihood import Likelihood
    from .sources import Scene

    rng = np.random.default_rng(2026) if rng is None else rng
    truth = Scene(demo_sources(profile), bands=list(DEMO_BANDS))
    initial = Scene(demo_sources(profile, initial=True), bands=list(DEMO_BANDS))
    dithers = [(0.0, 0.0, 0.0), (2.37, -1.61, 7.0)]
    ivar = np.full(shape, 1.0 / NOISE_SIGMA**2)
    blanks = []
    for band, fwhm in DEMO_BANDS.items():
        psf = demo_psf(fwhm)
        for k, (dx, dy, rot) in enumerate(dithers):
            blanks.append(
                Exposure(np.zeros(shape), ivar, demo_wcs(shape, dx, dy, rot), psf, band, name=f"{band}_dither{k + 1}")
            )
    models = Likelihood(truth, blanks, backend="reference").model_images(truth.get_vector())
    exposures = []
    for blank, model in zip(blanks, models):
        noisy = np.asarray(model) + rng.normal(size=shape) * NOISE_SIGMA
        exposures.append(Exposure(noisy, ivar, blank.wcs, blank.psf, blank.band, name=blank.name))
    return DemoProblem(exposures=exposures, truth=truth, initial=initial)
