"""Sersic galaxies rendered through pho (pho.render with the default profile) against GalSim.

Each case draws one Sersic galaxy (unit flux) convolved with a Gaussian-mixture PSF into a
65 x 65 stamp at 0.03"/pixel, through ``pho.render`` (reference backend) and through GalSim's
``drawImage`` (pixel integration included), and compares:

* the worst pixel residual relative to GalSim's peak pixel;
* the flux error: sum of pho's stamp over sum of GalSim's stamp, minus one.

Bounds (docs/sersic_tables.md), for every case including n = 0.5: residual < 1% of the peak
and flux error < 0.5% (the issue's aim). Measured worst: 0.09% of the peak, 0.007% in flux.

Print the figures for every case with ``python tests/test_sersic_galsim.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

import pho  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

PIXEL_SCALE_ARCSEC = 0.03
STAMP = 65
#: Gaussian-mixture PSFs: (amplitude, sigma in pixels). "broad": a JWST/NIRCam F200W-like core
#: at 0.03"/pix (FWHM ~2.1 pix); "narrow": an undersampled short-wave-like core (FWHM 1.2 pix).
PSFS = {
    "broad": ((0.7, 0.9), (0.3, 2.5)),
    "narrow": ((0.6, 0.5), (0.3, 1.5), (0.1, 5.0)),
}
N_VALUES = (0.5, 1.0, 2.0, 4.0, 6.0)
RH_ARCSEC = (0.005, 0.03, 0.12, 0.36)
#: (residual / peak, |flux error|) bounds.
BOUNDS = (0.01, 0.005)

_GSPARAMS = galsim.GSParams(folding_threshold=2e-3, maxk_threshold=2e-4, kvalue_accuracy=1e-6,
                            xvalue_accuracy=1e-6, maximum_fft_size=16384)


def _exposure(psf_name: str) -> pho.Exposure:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [STAMP // 2 + 1, STAMP // 2 + 1]  # the galaxy sits on the centre of the middle pixel
    w.wcs.cd = [[-PIXEL_SCALE_ARCSEC / 3600, 0.0], [0.0, PIXEL_SCALE_ARCSEC / 3600]]
    comps = PSFS[psf_name]
    amp = [a for a, _ in comps]
    var = [s * s for _, s in comps]
    zero = [0.0] * len(comps)
    psf = pho.PSFMixture(amp, zero, zero, var, zero, var)
    return pho.Exposure(np.zeros((STAMP, STAMP)), np.ones((STAMP, STAMP)), w, psf, "B")


def render_pho(psf_name, n, rh_arcsec, q=1.0, pa_rad=0.0):
    gal = pho.Sersic(150.0, 2.0, {"B": 1.0}, q=q, pa=pa_rad, n=n, rh=rh_arcsec)
    return pho.render(pho.Scene([gal]), _exposure(psf_name))


def render_galsim(psf_name, n, rh_arcsec, q=1.0, pa_rad=0.0):
    # pho's r_h is along the major axis; GalSim's shear keeps the area, so its circular r_h is rh sqrt(q).
    # pa is from north (+y) through east (-x here), so the major axis is at pa + 90 deg from +x.
    gal = galsim.Sersic(n=n, half_light_radius=rh_arcsec * np.sqrt(q), flux=1.0, gsparams=_GSPARAMS)
    if q != 1.0:
        gal = gal.shear(q=q, beta=(pa_rad + np.pi / 2) * galsim.radians)
    psf = galsim.Sum([galsim.Gaussian(sigma=s * PIXEL_SCALE_ARCSEC, flux=a, gsparams=_GSPARAMS) for a, s in PSFS[psf_name]])
    final = galsim.Convolve(gal, psf, gsparams=_GSPARAMS)
    return final.drawImage(nx=STAMP, ny=STAMP, scale=PIXEL_SCALE_ARCSEC).array


def compare(psf_name, n, rh_arcsec, q=1.0, pa_rad=0.0):
    """(worst |pho - GalSim| / GalSim peak, stamp flux ratio - 1)."""
    mine = render_pho(psf_name, n, rh_arcsec, q, pa_rad)
    ref = render_galsim(psf_name, n, rh_arcsec, q, pa_rad)
    return float(np.abs(mine - ref).max() / ref.max()), float(mine.sum() / ref.sum() - 1.0)


def _cases():
    for psf_name in PSFS:
        for n in N_VALUES:
            for rh in RH_ARCSEC:
                # GalSim's FFT for n = 6 at the largest radius under the narrow PSF takes ~15 s: skipped
                if psf_name == "narrow" and n == 6.0 and rh == RH_ARCSEC[-1]:
                    continue
                yield psf_name, n, rh


@pytest.mark.slow
@pytest.mark.parametrize("psf_name, n, rh_arcsec", list(_cases()))
def test_round_sersic_matches_galsim(psf_name, n, rh_arcsec):
    resid, flux_err = compare(psf_name, n, rh_arcsec)
    max_resid, max_flux = BOUNDS
    assert resid < max_resid, f"worst residual {resid:.4%} of the peak"
    assert abs(flux_err) < max_flux, f"flux error {flux_err:.4%}"


@pytest.mark.parametrize("n, rh_arcsec, q, pa_rad", [(2.0, 0.15, 0.5, 0.6), (1.0, 0.3, 0.3, -1.0), (4.0, 0.08, 0.7, 2.0)])
def test_sheared_sersic_matches_galsim(n, rh_arcsec, q, pa_rad):
    """Axis ratio and position angle follow the same conventions as GalSim's shear."""
    resid, flux_err = compare("broad", n, rh_arcsec, q, pa_rad)
    assert resid < BOUNDS[0], f"worst residual {resid:.4%} of the peak"
    assert abs(flux_err) < BOUNDS[1], f"flux error {flux_err:.4%}"


#: Any size through the default profile (pho.sersic.auto_profile): (psf, n, r_h) below, inside and
#: above the home scale's range, inside blending bands (0.0021", 1.0", 2.0"), and a 3" galaxy.
ANY_SIZE_CASES = [("broad", 1.0, 0.001), ("narrow", 4.0, 0.001), ("broad", 2.0, 0.0021), ("narrow", 2.0, 0.002),
                  ("broad", 1.0, 1.0), ("broad", 4.0, 1.0), ("broad", 2.0, 2.0), ("broad", 1.0, 3.0),
                  ("narrow", 1.0, 3.0)]
#: The issue's accuracy target for these: 1e-3 of the peak, 1e-4 in flux (measured worst 4.9e-4, 4.4e-6).
ANY_SIZE_BOUNDS = (1e-3, 1e-4)
#: Galaxies much larger than the 2" stamp: the stamp shows only r < 0.4 r_h, where the table's own
#: surface-brightness error (< 0.6%, docs/sersic_tables.md) and its smoothing (0.3 table units, 0.056"
#: at the 0.19" scale that serves 5") show; measured 3.4e-3 and 4.3e-3 of the peak.
LARGE_CASES = [("broad", 2.0, 5.0), ("broad", 1.0, 8.0)]


@pytest.mark.parametrize("psf_name, n, rh_arcsec", ANY_SIZE_CASES)
def test_any_size_matches_galsim(psf_name, n, rh_arcsec):
    """The default profile serves 0.001" to 3" with the table chosen per source, within 1e-3 of the peak."""
    resid, flux_err = compare(psf_name, n, rh_arcsec)
    assert resid < ANY_SIZE_BOUNDS[0], f"worst residual {resid:.4%} of the peak"
    assert abs(flux_err) < ANY_SIZE_BOUNDS[1], f"flux error {flux_err:.4%}"


@pytest.mark.slow
@pytest.mark.parametrize("psf_name, n, rh_arcsec", LARGE_CASES + [("broad", 4.0, 3.0)])
def test_large_galaxies_match_galsim(psf_name, n, rh_arcsec):
    """Up to 8" (GalSim's FFT of n = 4 at 3" takes ~40 s): within the suite's bounds."""
    resid, flux_err = compare(psf_name, n, rh_arcsec)
    bound = ANY_SIZE_BOUNDS if (psf_name, n, rh_arcsec) not in LARGE_CASES else BOUNDS
    assert resid < bound[0], f"worst residual {resid:.4%} of the peak"
    assert abs(flux_err) < bound[1], f"flux error {flux_err:.4%}"


if __name__ == "__main__":
    rows = []
    print(f"{'psf':7s} {'n':>4s} {'rh_arcsec':>9s}  {'resid/peak':>10s}  {'flux err':>9s}")
    for psf_name, n, rh in _cases():
        resid, flux_err = compare(psf_name, n, rh)
        rows.append((psf_name, n, rh, resid, flux_err))
        print(f"{psf_name:7s} {n:4.1f} {rh:9.3f}  {resid:10.4%}  {flux_err:+9.4%}", flush=True)
    for label, sel in (("n >= 1", lambda r: r[1] >= 1.0), ("n = 0.5", lambda r: r[1] == 0.5)):
        sub = [r for r in rows if sel(r)]
        worst = max(sub, key=lambda r: r[3])
        worst_f = max(sub, key=lambda r: abs(r[4]))
        print(f"{label}: worst residual {worst[3]:.4%} of the peak ({worst[0]}, n={worst[1]}, rh={worst[2]}\"); "
              f"worst flux error {worst_f[4]:+.4%} ({worst_f[0]}, n={worst_f[1]}, rh={worst_f[2]}\")")
    print("any size (default profile, auto_profile):")
    for psf_name, n, rh in ANY_SIZE_CASES + LARGE_CASES:
        resid, flux_err = compare(psf_name, n, rh)
        print(f"{psf_name:7s} {n:4.1f} {rh:9.4f}  {resid:10.4%}  {flux_err:+9.4%}", flush=True)
