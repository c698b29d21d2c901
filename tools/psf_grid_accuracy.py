"""Accuracy of PSF grids: nearest grid point vs bilinear interpolation vs a fit at the position.

A PSF that varies smoothly over a 2048 x 2048 detector and whose true image is known everywhere
is built from the JWST NIRCam F200W WebbPSF image (``../shared/data/jwst_nircam_f200w_psf_os4.fits``,
4x oversampled): the image is made point-symmetric about its centre (so every version of it has
its centre exactly there and the fitter's centroid finds it), cropped to 128 x 128 samples
(32 x 32 detector pixels), and at detector position (x, y), with u = x / 2047, v = y / 2047:

- scaled by ``1 + 0.12 ((u - 0.3)^2 + (v - 0.6)^2) + 0.05 u`` (size),
- stretched by ``1 +/- 0.06 (u + v - 1)`` along the angle ``0.8 u - 0.5 v`` rad (shape),
- blurred by a round Gaussian of sigma ``0.4 + 1.2 u v`` samples (0.1 to 0.4 detector pixel),

all about the centre (``scipy.ndimage.affine_transform``, cubic splines, then
``gaussian_filter``): the "jwst" truth, whose K = 4 mixtures leave about 3% of the peak
(docs/fitpsf.md), a floor that hides smaller errors. The "mixture" truth isolates the
interpolation: the K = 4 mixture fitted to the centre image, its covariances transformed the
same way at each position (``A C A^T + blur^2``), sampled on the same 128 x 128 grid
(``PSFMixture.evaluate``); a K = 4 fit reproduces it almost exactly, so what is left between
grid points is the interpolation's own error. Grids of 3 x 3 and 5 x 5 of these images are fitted with K = 4 by
``pho.psfgridfit.fit_psf_grid`` (as ``python -m pho.tools.fitpsf --hdus`` does). At test
positions between grid points (cell centres, edge midpoints and seeded random points) a star is
rendered by pho at a detector pixel corner with three mixtures: the grid's nearest point, the
grid's bilinear interpolation, and a mixture fitted to the true image at that position (the
floor: what a mixture of K Gaussians can do there). Each is compared with the true image binned
to detector pixels (4 x 4 samples), its flux the least-squares best, as

- ``max|res|/peak``: max |model - truth| / max(truth);
- ``sum|res|/sum``: sum |model - truth| / sum(truth).

It also prints the term the likelihood's gradient leaves out (the PSF is fixed per source where
the likelihood is built; docs/model.md): the largest change of a bilinear grid's star image, as
a fraction of its peak, when the PSF is taken one detector pixel away.

Run (CPU time about 3 minutes on one core)::

    python tools/psf_grid_accuracy.py                 # the table in docs/model.md
    python tools/psf_grid_accuracy.py --grids 3 --n-random 4   # quicker

``--cost`` prints instead the CPU time of ``Likelihood.lnlike_and_grad`` (cpu backend, one
thread) for 20 Sersics and a star in one 96 x 96 exposure with one PSF mixture and with a 5 x 5
grid of them (K = 4 each), and of building the likelihood (where the grid's mixtures are taken)::

    OMP_NUM_THREADS=1 taskset -c 0 python tools/psf_grid_accuracy.py --cost

The machine this was measured on was shared; only the accuracy figures are reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pho, not an installed one

DETECTOR_PIX = 2048
OVERSAMPLE = 4
CROP = 128  # samples: 32 detector pixels
K = 4


def load_symmetric_psf(path):
    """The JWST image made point-symmetric about (143.5, 143.5) and cropped to CROP x CROP."""
    from astropy.io import fits

    img = np.array(fits.getdata(path), dtype=np.float64)
    sym = 0.5 * (img + img[::-1, ::-1])
    c0 = (img.shape[0] - CROP) // 2
    return sym, (c0, c0 + CROP)


def distortion(x, y):
    """(A, blur_sigma): the stretch (2 x 2, acting on (row, col) offsets) and the blur (samples) at (x, y)."""
    u, v = x / (DETECTOR_PIX - 1), y / (DETECTOR_PIX - 1)
    size = 1.0 + 0.12 * ((u - 0.3) ** 2 + (v - 0.6) ** 2) + 0.05 * u
    a = 0.06 * (u + v - 1.0)
    phi = 0.8 * u - 0.5 * v
    c, s = np.cos(phi), np.sin(phi)
    R = np.array([[c, -s], [s, c]])
    return size * R @ np.diag([1.0 + a, 1.0 - a]) @ R.T, 0.4 + 1.2 * u * v


def truth_image(sym, crop, x, y, base=None):
    """The true PSF at detector (x, y): oversampled samples, CROP x CROP, centre at (CROP-1)/2.
    With ``base`` (a PSFMixture in detector pixels): the "mixture" truth."""
    from scipy.ndimage import affine_transform, gaussian_filter

    A, blur = distortion(x, y)
    if base is not None:
        # the same map on the mixture: (row, col) -> (y, x) swaps the axes of A
        P = np.array([[0.0, 1.0], [1.0, 0.0]])
        Axy = P @ A @ P
        cov = np.einsum("ij,ljk,mk->lim", Axy, base.covariances, Axy) + (blur / OVERSAMPLE) ** 2 * np.eye(2)
        mu = np.column_stack([base.x, base.y]) @ Axy.T
        from pho import PSFMixture

        m = PSFMixture(base.amp, mu[:, 0], mu[:, 1], cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1])
        t = (np.arange(CROP) - (CROP - 1) / 2.0) / OVERSAMPLE
        return m.evaluate(t[None, :], t[:, None])
    Ainv = np.linalg.inv(A)
    centre = np.array([(sym.shape[0] - 1) / 2.0, (sym.shape[1] - 1) / 2.0])
    out = affine_transform(sym, Ainv, offset=centre - Ainv @ centre, order=3, mode="constant")
    out = gaussian_filter(out, blur, mode="constant")
    lo, hi = crop
    return out[lo:hi, lo:hi]


def binned(img):
    """Oversampled samples -> detector pixels (mean of each 4 x 4 block, about the pixel integral)."""
    n = img.shape[0] // OVERSAMPLE
    return img.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3))


def star_image(mixture, shape):
    """pho's render of a unit-flux star at the centre of the crop (a pixel corner), detector pixels."""
    import pho
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = [[-0.031 / 3600, 0], [0, 0.031 / 3600]]
    exp = pho.Exposure(np.zeros(shape), np.ones(shape), w, mixture, "F200W")
    ra, dec = w.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
    return pho.render(pho.Scene([pho.PointSource(float(ra), float(dec), {"F200W": 1.0})]), exp)


def figures(model, truth):
    f = float(np.sum(model * truth) / np.sum(model * model))
    res = f * model - truth
    return float(np.max(np.abs(res)) / truth.max()), float(np.sum(np.abs(res)) / truth.sum())


def fit_grid(sym, crop, n, base):
    from pho.psfgridfit import fit_psf_grid

    nodes = np.linspace(0.0, DETECTOR_PIX - 1.0, n)
    gx, gy = (a.ravel() for a in np.meshgrid(nodes, nodes))
    images = [truth_image(sym, crop, x, y, base) for x, y in zip(gx, gy)]
    return fit_psf_grid(images, gx, gy, K, OVERSAMPLE, pixel_integrated=False)


def test_positions(n, n_random, rng):
    nodes = np.linspace(0.0, DETECTOR_PIX - 1.0, n)
    mids = 0.5 * (nodes[:-1] + nodes[1:])
    pts = [(x, y) for x in mids for y in mids]  # cell centres
    pts += [(x, nodes[0]) for x in mids] + [(nodes[-1], y) for y in mids]  # edge midpoints
    pts += [tuple(p) for p in rng.uniform(0, DETECTOR_PIX - 1, size=(n_random, 2))]
    return pts


def report(sym, crop, n, base, truth_kind, n_random, rng) -> None:
    """Fit an n x n grid to the truth and print its accuracy table."""
    import pho

    t0 = time.process_time()
    result = fit_grid(sym, crop, n, base)
    t_grid = time.process_time() - t0
    grid = result.grid
    at_nodes = []
    for x, y, m in zip(grid.x_pix, grid.y_pix, grid.mixtures):
        truth = binned(truth_image(sym, crop, x, y, base))
        at_nodes.append(figures(star_image(grid.at(x, y), truth.shape), truth))
    rows, change = [], []
    for x, y in test_positions(n, n_random, rng):
        truth_os = truth_image(sym, crop, x, y, base)
        truth = binned(truth_os)
        here_fit = pho.fit_psf_mixture(truth_os, K, OVERSAMPLE, pixel_integrated=False).mixture
        here = star_image(grid.at(x, y), truth.shape)
        rows.append({
            "fit here": figures(star_image(here_fit, truth.shape), truth),
            "bilinear": figures(here, truth),
            "nearest": figures(star_image(grid.with_options(interpolation="nearest").at(x, y), truth.shape), truth),
        })
        for dx, dy in ((1, 0), (0, 1)):
            xx, yy = min(x + dx, DETECTOR_PIX - 1.0), min(y + dy, DETECTOR_PIX - 1.0)
            change.append(float(np.max(np.abs(star_image(grid.at(xx, yy), truth.shape) - here)) / here.max()))
    spacing = (DETECTOR_PIX - 1) / (n - 1)
    print(f"\ntruth {truth_kind}, {n} x {n} grid (spacing {spacing:.0f} pixels): {len(rows)} test positions; grid fit "
          f"{t_grid:.0f} s CPU, {result.n_swaps} point(s) reordered by matching")
    a = np.array(at_nodes)
    print(f"  at the grid points ({len(a)}): max|res|/peak median {np.median(a[:, 0]):.4f}, largest {a[:, 0].max():.4f}; "
          f"sum|res|/sum median {np.median(a[:, 1]):.4f}")
    print("  | mixture | max\\|res\\|/peak median | largest | sum\\|res\\|/sum median | largest |")
    print("  |---|---|---|---|---|")
    for name in ("fit here", "bilinear", "nearest"):
        v = np.array([r[name] for r in rows])
        print(f"  | {name} | {np.median(v[:, 0]):.4f} | {v[:, 0].max():.4f} | {np.median(v[:, 1]):.4f} | {v[:, 1].max():.4f} |")
    print(f"  PSF change per pixel of source motion (bilinear, max|d image|/peak): median {np.median(change):.2e}, "
          f"largest {max(change):.2e}")


def cost(repeat: int = 50) -> int:
    """CPU time per lnlike_and_grad with one mixture and with a 5 x 5 grid (best of 5 blocks)."""
    import warnings

    import pho
    from astropy.wcs import WCS
    from pho.psfgrid import PSFGrid

    rng = np.random.default_rng(3)
    shape = (96, 96)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [48.5, 48.5]
    w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]

    def mixture(f):
        return pho.PSFMixture([0.4, 0.3, 0.2, 0.1], [0.0, 0.1, -0.1, 0.2], [0.0, -0.1, 0.1, 0.3],
                              [1.2 * f, 3.0 * f, 8.0 * f, 30.0 * f], [0.1, -0.2, 0.3, 1.0], [1.0 * f, 2.8 * f, 9.0 * f, 25.0 * f])

    nodes = np.linspace(0.0, 95.0, 5)
    gx, gy = (a.ravel() for a in np.meshgrid(nodes, nodes))
    grid = PSFGrid(gx, gy, [mixture(1.0 + 0.002 * (x + y)) for x, y in zip(gx, gy)])
    xy = rng.uniform(10, 86, size=(21, 2))
    ra, dec = w.pixel_to_world_values(xy[:, 0], xy[:, 1])
    sources = [pho.Sersic(ra[i], dec[i], {"F": 50.0}, q=0.7, pa=0.3 * i, n=1.0 + 0.1 * i, rh=0.1 + 0.01 * i) for i in range(20)]
    sources.append(pho.PointSource(ra[20], dec[20], {"F": 80.0}))
    scene = pho.Scene(sources)
    theta = scene.get_vector()
    print(f"20 Sersics + 1 star, one {shape[0]}x{shape[1]} exposure, K = 4, cpu backend, 1 thread; CPU ms, best of 5")
    print("| PSF | build Likelihood | lnlike_and_grad |")
    print("|---|---|---|")
    for label, psf in (("one mixture", mixture(1.1)), ("5 x 5 grid, bilinear", grid)):
        exp = pho.Exposure(rng.normal(size=shape), np.ones(shape), w, psf, "F")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            builds, calls = [], []
            for _ in range(5):
                t0 = time.process_time()
                like = pho.Likelihood(scene, [exp], backend="cpu", workers=1)
                builds.append(time.process_time() - t0)
                t0 = time.process_time()
                for _ in range(repeat):
                    like.lnlike_and_grad(theta)
                calls.append((time.process_time() - t0) / repeat)
        print(f"| {label} | {1e3 * min(builds):.2f} | {1e3 * min(calls):.2f} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--psf", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "jwst_nircam_f200w_psf_os4.fits")
    p.add_argument("--grids", type=int, nargs="+", default=[3, 5], help="grid sizes n (n x n points) (default: %(default)s)")
    p.add_argument("--n-random", type=int, default=8, help="random test positions per grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cost", action="store_true", help="time the likelihood with one PSF and with a grid instead")
    p.add_argument("--truths", nargs="+", choices=("jwst", "mixture"), default=["jwst", "mixture"],
                   help="which truths (default: %(default)s)")
    args = p.parse_args(argv)
    import pho

    if args.cost:
        return cost()
    sym, crop = load_symmetric_psf(args.psf)
    lo, hi = crop
    base_mixture = pho.fit_psf_mixture(sym[lo:hi, lo:hi], K, OVERSAMPLE, pixel_integrated=False).mixture
    print(f"{args.psf.name}, symmetrized, {CROP}x{CROP} samples (oversample {OVERSAMPLE}), varied over a "
          f"{DETECTOR_PIX}x{DETECTOR_PIX} detector; K = {K}")
    for truth_kind in args.truths:
        base = base_mixture if truth_kind == "mixture" else None
        rng = np.random.default_rng(args.seed)
        for n in args.grids:
            report(sym, crop, n, base, truth_kind, args.n_random, rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
