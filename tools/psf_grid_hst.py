"""A grid of the 100 real HST ACS PSFs: pho's star at each grid point against that point's image.

Issue 14's target for PSF grids: a star rendered by pho at a grid position is within 1% of the
peak of that position's PSF image. This script measures it on the real ACS/WFC F814W PSFs of
``../shared/data/hst_acs_f814w_psfs.fits`` (native sampling, taken as integrated over the pixel),
fitted as a grid by the command line tool first::

    python -m pho.tools.fitpsf ../shared/data/hst_acs_f814w_psfs.fits --hdus all --oversample 1 \\
        --ngauss 8 --grid 10 10 --grid-extent 0 4095 0 4095 -o acs_grid_k8.fits
    python tools/psf_grid_hst.py acs_grid_k8.fits

For every grid point k (HDU k) a unit-flux point source is rendered by ``pho.render`` (cpu
backend) through an ``Exposure`` that carries the grid, placed so that it sits on grid point k
(``psf_offset_pix``) and at the image's centre as the fitter found it (``CENTERX``/``CENTERY``
of the point's mixture). The image is normalized to sum one; the star's flux is the
least-squares best. Printed: max |star - image| / max(image) per point, summarized (median,
90th percentile, worst, number above 1%).

Between grid points there is no truth: the 100 PSFs belong to 100 COSMOS galaxies and the grid
positions are assigned (``--grid``), so neighbours are not related by position. ``--held-out``
nevertheless measures what interpolation from unrelated neighbours gives: a 5 x 5 grid of the
points with even (column, row) is interpolated (bilinear and nearest) at the held-out points
inside it and compared with their images, beside their own mixtures. It is the scatter between
different HST PSFs, not an interpolation error; the interpolation error on smoothly varying PSFs
is measured by ``tools/psf_grid_accuracy.py`` (docs/model.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pho, not an installed one

DEFAULT_PSFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hst_acs_f814w_psfs.fits"


def star_on_image(psf, image_shape, center_pix, node_xy):
    """pho's unit-flux star at ``center_pix`` (x, y, 0-based pixels of the PSF image) whose PSF
    is ``psf`` (a mixture, or a grid taken at ``node_xy``)."""
    from astropy.wcs import WCS

    import pho
    from pho.psfgrid import PSFGrid

    ny, nx = image_shape
    wcs = WCS(naxis=2)  # 0.03"/pixel, north up, east left: the ACS images' scale
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cd = np.diag([-0.03 / 3600.0, 0.03 / 3600.0])
    kw = {}
    if isinstance(psf, PSFGrid):
        kw["psf_offset_pix"] = (node_xy[0] - center_pix[0], node_xy[1] - center_pix[1])
    exp = pho.Exposure(np.zeros((ny, nx)), np.ones((ny, nx)), wcs, psf, "F814W", **kw)
    ra, dec = exp.wcs.pixel_to_world_values(*center_pix)
    return pho.render(pho.Scene([pho.PointSource(float(ra), float(dec), {"F814W": 1.0})]), exp)


def residual(star, image) -> float:
    """max |F star - image| / max(image), F the least-squares best flux; NaN pixels left out."""
    ok = np.isfinite(image)
    flux = float(np.sum(star[ok] * image[ok]) / np.sum(star[ok] ** 2))
    return float(np.max(np.abs(flux * star[ok] - image[ok])) / np.max(image[ok]))


def summarize(label, values, limit=0.01):
    v = np.asarray(values)
    print(f"{label:<34} median {np.median(v):.4f}  90% {np.percentile(v, 90):.4f}  worst {v.max():.4f}  "
          f"above {limit:g}: {int(np.sum(v > limit))} of {v.size}")


def main(argv=None) -> int:
    from pho.psffit import find_psf_center, read_psf_image
    from pho.psfgrid import PSFGrid

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="PSF grid written by python -m pho.tools.fitpsf --hdus all ... -o GRID")
    p.add_argument("--psfs", type=Path, default=DEFAULT_PSFS, help="the PSF images (default: %(default)s)")
    p.add_argument("--held-out", action="store_true", help="also interpolate a 5x5 sub-grid at the held-out points")
    args = p.parse_args(argv)

    grid = PSFGrid.read(args.grid)
    images, centers, nodes, at_node = {}, {}, {}, []
    for m, x, y in zip(grid.mixtures, grid.x_pix, grid.y_pix):
        hdu = int(m.meta["HDU"])
        img = read_psf_image(args.psfs, hdu=hdu, oversample=1).data.astype(np.float64)
        img = img / np.nansum(img)
        center = (float(m.meta["CENTERX"]), float(m.meta["CENTERY"])) if "CENTERX" in m.meta else find_psf_center(img)
        images[hdu], centers[hdu], nodes[hdu] = img, center, (float(x), float(y))
        at_node.append(residual(star_on_image(grid, img.shape, center, (x, y)), img))
    print(f"{args.grid}: {grid.n_points} grid points, K = {grid.n_gauss}; "
          "max|star - image|/peak, star rendered by pho through the grid at each point")
    summarize("at grid points (grid's own mixture)", at_node)
    if args.held_out:
        xs, ys = np.unique(grid.x_pix), np.unique(grid.y_pix)
        keep_x, keep_y = xs[::2], ys[::2]
        sub = [(m, x, y) for m, x, y in zip(grid.mixtures, grid.x_pix, grid.y_pix) if x in keep_x and y in keep_y]
        sub_grid = PSFGrid([s[1] for s in sub], [s[2] for s in sub], [s[0] for s in sub], outside="error")
        held = [(int(m.meta["HDU"]), x, y) for m, x, y in zip(grid.mixtures, grid.x_pix, grid.y_pix)
                if not (x in keep_x and y in keep_y) and sub_grid.contains(x, y)]
        bil, near, own = [], [], []
        for hdu, x, y in held:
            img, c = images[hdu], centers[hdu]
            bil.append(residual(star_on_image(sub_grid.at(x, y), img.shape, c, None), img))
            near.append(residual(star_on_image(sub_grid.with_options(interpolation="nearest").at(x, y), img.shape, c, None), img))
            own.append(residual(star_on_image(grid, img.shape, c, (x, y)), img))
        print(f"held out: {len(held)} points inside a {len(keep_x)} x {len(keep_y)} sub-grid (unrelated PSFs: scatter, not interpolation error)")
        summarize("  bilinear from the sub-grid", bil)
        summarize("  nearest sub-grid point", near)
        summarize("  the point's own mixture", own)
    return 0


if __name__ == "__main__":
    sys.exit(main())
