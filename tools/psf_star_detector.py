"""An oversampled PSF image and its K-Gaussian mixtures, seen at detector sampling.

For each K, fits a mixture to the oversampled image (``pho.fit_psf_mixture``, as
``python -m pho.tools.fitpsf`` does), renders a unit star with pho at detector pixels through that
mixture at the image's centre, and compares it with the image summed in S x S blocks (what the
detector records; S the oversampling), the star's flux the least-squares best. Prints per K the
fitter's max|res|/peak on the oversampled samples and the star's max|res|/peak and sum|res|/sum at
detector sampling: issue 14's "a star within 1% of the PSF image".

Run::

    python tools/psf_star_detector.py                 # the JWST NIRCam F200W image, K = 4 8 11 12 13 14 16
    python tools/psf_star_detector.py PSF.fits --ngauss 6 8 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pho, not an installed one

DEFAULT_PSF = Path(__file__).resolve().parents[2] / "shared" / "data" / "jwst_nircam_f200w_psf_os4.fits"


def star_at_detector(mixture, n_pix: int, x_pix: float, y_pix: float, scale_arcsec: float = 0.031) -> np.ndarray:
    """pho's unit-flux star at 0-based detector pixel (x_pix, y_pix) of an n_pix x n_pix image."""
    from astropy.wcs import WCS

    import pho

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(n_pix + 1) / 2, (n_pix + 1) / 2]
    w.wcs.cd = [[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]]
    exp = pho.Exposure(np.zeros((n_pix, n_pix)), np.ones((n_pix, n_pix)), w, mixture, "B")
    ra, dec = w.pixel_to_world_values(x_pix, y_pix)
    return pho.render(pho.Scene([pho.PointSource(float(ra), float(dec), {"B": 1.0})]), exp)


def main(argv=None) -> int:
    from pho.psffit import fit_psf_mixture, read_psf_image

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("psf", type=Path, nargs="?", default=DEFAULT_PSF, help="oversampled PSF image (default: %(default)s)")
    p.add_argument("--hdu", type=int, default=0)
    p.add_argument("--ngauss", type=int, nargs="+", default=[4, 8, 11, 12, 13, 14, 16], help="K values (default: %(default)s)")
    args = p.parse_args(argv)
    img = read_psf_image(args.psf, hdu=args.hdu)
    S = int(round(img.oversample))
    if S < 2 or abs(img.oversample - S) > 1e-9:
        p.error(f"{args.psf}: oversampling {img.oversample:g}; this check needs an integer factor of 2 or more")
    ny, nx = img.data.shape
    n = min(ny, nx) // S
    data = img.data[: n * S, : n * S]
    binned = data.reshape(n, S, n, S).sum(axis=(1, 3))
    print(f"{args.psf} HDU {args.hdu}: {nx} x {ny} samples, oversampling {S} ({img.oversample_source}); detector image {n} x {n}")
    for K in args.ngauss:
        t = time.process_time()
        fit = fit_psf_mixture(data, K, float(S))
        cx, cy = fit.center_pix
        star = star_at_detector(fit.mixture, n, (cx - (S - 1) / 2) / S, (cy - (S - 1) / 2) / S)
        flux = float(np.sum(star * binned) / np.sum(star * star))
        res = flux * star - binned
        print(f"K={K:2d}: oversampled max|res|/peak {fit.max_abs_residual_frac_peak:.4f}; star at detector pixels "
              f"max|res|/peak {np.abs(res).max() / binned.max():.4f}, sum|res|/sum {np.abs(res).sum() / binned.sum():.4f} "
              f"({time.process_time() - t:.1f} s CPU)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
