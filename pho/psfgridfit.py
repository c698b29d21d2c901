"""Fit a grid of PSF images with Gaussian mixtures in one shared component order.

Bilinear interpolation of a :class:`~pho.psfgrid.PSFGrid` blends Gaussian l of four grid
points, so Gaussian l must be "the same" Gaussian everywhere. :func:`fit_psf_grid` gets that
order as follows:

1. The grid points are visited in serpentine order (the row of lowest y from low to high x, the
   next row back from high to low x, ...), so each point after the first is a grid neighbour
   of the point fitted just before it.
2. The first point is fitted from the usual concentric start (``fit_psf_mixture``); its
   Gaussians are sorted by area (``det C``), the core first.
3. Every later point is fitted with EM started from its predecessor's mixture
   (``fit_psf_mixture(init=...)``): EM and the polish move each Gaussian continuously from its
   start, so for a PSF that changes smoothly Gaussian l stays the same Gaussian.
4. As a guard against EM swapping two Gaussians, the fitted Gaussians are then put in the order
   that best matches the predecessor's (``pho.psfgrid.match_components``: the assignment of
   least summed symmetric KL divergence plus amplitude difference). The number of points where
   this changed the order is reported (``NSWAPS`` in the header).
5. A warm start can settle in a worse optimum than its neighbour's (one of the 100 HST ACS PSFs
   at K = 8 ended at sum|res|/sum 0.23 against its neighbours' 0.03; another at max|res|/peak
   0.0144 where a fit from the concentric start reaches 0.0068). Where the warm-started fit's
   sum|res|/sum exceeds ``RESTART_FACTOR`` (1.1) times its predecessor's, or its max|res|/peak
   ``RESTART_FACTOR_PEAK`` (1.25) times its predecessor's, and is above ``RESTART_FLOOR``
   (0.2% of the peak), the point is fitted from the concentric start too and the one of lower
   sum|res|/sum is kept, put in order by the same matching (``NRESTART`` in the header counts
   the points where the concentric fit was kept).

Where a PSF image's header gives its position: keys ``PSFX`` and ``PSFY`` (0-based detector
pixels of the image the grid is for, ``POSITION_KEYS``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import PhoValueError
from .psf import PSFMixture
from .psffit import PSFFitResult, fit_psf_mixture
from .psfgrid import PSFGrid, grid_nodes, match_components

#: A warm-started fit whose sum|res|/sum exceeds ``RESTART_FACTOR`` times its predecessor's, or
#: whose max|res|/peak exceeds ``RESTART_FACTOR_PEAK`` times its predecessor's, is redone from
#: the concentric start and the one of lower sum|res|/sum kept; never when its max|res|/peak is
#: below ``RESTART_FLOOR`` (a fit that good is kept as it is).
RESTART_FACTOR = 1.1
RESTART_FACTOR_PEAK = 1.25
RESTART_FLOOR = 2e-3

__all__ = [
    "CUBE_POSITION_PREFIX",
    "cube_plane_count",
    "cube_positions",
    "parse_planes",
    "POSITION_KEYS",
    "PSFGridFitResult",
    "fit_psf_grid",
    "serpentine_order",
    "parse_hdus",
    "image_hdus",
    "header_positions",
    "read_positions_file",
    "assigned_grid_positions",
]

#: Header keys of a PSF image's position: 0-based detector pixels (x, y) of the image the grid is for.
POSITION_KEYS = ("PSFX", "PSFY")


@dataclass(frozen=True)
class PSFGridFitResult:
    """A fitted PSF grid and the fit of each grid point.

    Attributes
    ----------
    grid : PSFGrid
        The mixtures in a shared component order, with the per-point figures in each mixture's
        ``meta`` (``MAXRES``, ``SUMRES``, ...).
    fits : tuple of PSFFitResult
        One per input image, in input order; each ``mixture`` in the grid's component order.
    order : tuple of int
        The input indices in the order they were fitted (serpentine).
    n_swaps : int
        Points whose fitted Gaussians had to be reordered to match their predecessor's.
    n_restarts : int
        Points where the fit from the usual concentric start replaced the warm-started one (see
        ``RESTART_FACTOR``).
    """

    grid: PSFGrid
    fits: tuple
    order: tuple
    n_swaps: int
    n_restarts: int = 0

    def summary(self) -> str:
        """One line: worst and median figures over the grid points."""
        mx = np.array([f.max_abs_residual_frac_peak for f in self.fits])
        sm = np.array([f.sum_abs_residual_frac for f in self.fits])
        return (
            f"{len(self.fits)} PSFs, K={self.grid.n_gauss}: max|res|/peak median {np.median(mx):.4f}, largest "
            f"{mx.max():.4f}; sum|res|/sum median {np.median(sm):.4f}, largest {sm.max():.4f}; "
            f"{self.n_swaps} point(s) reordered by matching, {self.n_restarts} refitted from the concentric start"
        )


def serpentine_order(x_pix, y_pix) -> list[int]:
    """Indices of grid positions row by row (increasing y), alternating direction along x, so
    each is a grid neighbour of the one before (``grid_nodes`` checks the positions)."""
    xs, ys, ix, iy = grid_nodes(x_pix, y_pix)
    where = {(int(j), int(i)): k for k, (j, i) in enumerate(zip(iy, ix))}
    order = []
    for j in range(len(ys)):
        cols = range(len(xs)) if j % 2 == 0 else range(len(xs) - 1, -1, -1)
        order.extend(where[(j, i)] for i in cols)
    return order


def _sorted_by_area(m: PSFMixture) -> PSFMixture:
    order = np.argsort(m.cxx * m.cyy - m.cxy**2, kind="stable")
    return _permuted(m, order)


def _permuted(m: PSFMixture, perm) -> PSFMixture:
    perm = np.asarray(perm)
    return PSFMixture(m.amp[perm], m.x[perm], m.y[perm], m.cxx[perm], m.cxy[perm], m.cyy[perm], meta=m.meta)


def fit_psf_grid(
    images: Sequence,
    x_pix,
    y_pix,
    ngauss: int,
    oversample: float,
    *,
    pixel_integrated: bool | None = None,
    radius_det_pix: float | None = None,
    polish: bool = True,
    n_starts: int = 1,
    interpolation: str = "bilinear",
    outside: str = "error",
    meta: dict | None = None,
    point_meta: Sequence[dict] | None = None,
    progress: Callable[[int, PSFFitResult], None] | None = None,
) -> PSFGridFitResult:
    """Fit one K-Gaussian mixture per PSF image of a grid, in a shared component order.

    Parameters
    ----------
    images : sequence of array_like, each of shape (ny_k, nx_k)
        The PSF images (shapes may differ), as for :func:`pho.fit_psf_mixture`.
    x_pix, y_pix : array_like of shape (P,)
        Detector position of each image, 0-based pixels; they must form a full rectilinear
        grid (``pho.psfgrid.grid_nodes``).
    ngauss : int
        Number of Gaussians K of every mixture.
    oversample : float
        PSF pixels per detector pixel, shared by all images.
    pixel_integrated, radius_det_pix, polish
        As for :func:`pho.fit_psf_mixture`, for every image.
    n_starts : int
        EM starts of the first point only (the others start from their predecessor).
    interpolation, outside
        Stored in the grid (``PSFGrid``).
    meta : dict, optional
        Header entries of the grid (input, command line, how positions were found).
    point_meta : sequence of dict, optional
        Extra header entries per image (e.g. ``{"HDU": k}``), kept in each mixture's ``meta``.
    progress : callable, optional
        Called as ``progress(k, fit)`` after image k (input index) is fitted.

    Returns
    -------
    PSFGridFitResult

    Raises
    ------
    PhoValueError
        Positions that are not a full rectilinear grid or whose number differs from the images';
        anything :func:`pho.fit_psf_mixture` refuses (naming the image).
    """
    images = list(images)
    x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).ravel()
    y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).ravel()
    if not (len(images) == len(x) == len(y)):
        raise PhoValueError(f"{len(images)} PSF images but {len(x)} x and {len(y)} y positions; give one position per image")
    if point_meta is not None and len(point_meta) != len(images):
        raise PhoValueError(f"point_meta has {len(point_meta)} entries for {len(images)} images")
    order = serpentine_order(x, y)
    fits: list[PSFFitResult | None] = [None] * len(images)
    prev: PSFMixture | None = None
    prev_fit: PSFFitResult | None = None
    n_swaps = n_restarts = 0
    for k in order:
        pm = {"PSFX": float(x[k]), "PSFY": float(y[k])}
        pm.update(point_meta[k] if point_meta is not None else {})
        try:
            fit = fit_psf_mixture(
                images[k], ngauss, oversample, pixel_integrated=pixel_integrated, radius_det_pix=radius_det_pix,
                polish=polish, n_starts=n_starts if prev is None else 1, init=prev, meta=pm,
            )
            restarted = False
            if prev is not None and fit.max_abs_residual_frac_peak > RESTART_FLOOR and (
                fit.sum_abs_residual_frac > RESTART_FACTOR * prev_fit.sum_abs_residual_frac
                or fit.max_abs_residual_frac_peak > RESTART_FACTOR_PEAK * prev_fit.max_abs_residual_frac_peak
            ):
                # The warm start fell into a worse optimum than its neighbour's: fit from the
                # concentric start as well and keep the better (matching below restores the order).
                cold = fit_psf_mixture(
                    images[k], ngauss, oversample, pixel_integrated=pixel_integrated, radius_det_pix=radius_det_pix,
                    polish=polish, n_starts=n_starts, meta=pm,
                )
                if cold.sum_abs_residual_frac < fit.sum_abs_residual_frac:
                    fit, restarted = cold, True
        except PhoValueError as exc:
            raise type(exc)(f"PSF image {k} at ({x[k]:g}, {y[k]:g}): {exc}") from None
        n_restarts += restarted
        if prev is None:
            mixture = _sorted_by_area(fit.mixture)
            swapped = False
        else:
            perm = match_components(prev, fit.mixture)
            swapped = bool(np.any(perm != np.arange(ngauss)))
            mixture = _permuted(fit.mixture, perm)
        n_swaps += swapped
        mixture = PSFMixture(mixture.amp, mixture.x, mixture.y, mixture.cxx, mixture.cxy, mixture.cyy,
                             meta={**mixture.meta, "NSWAPS": int(swapped), "RESTART": restarted})
        fit = dataclasses.replace(fit, mixture=mixture)
        fits[k] = fit
        prev, prev_fit = mixture, fit
        if progress is not None:
            progress(k, fit)
    first = fits[order[0]]
    grid_meta = {
        "NGAUSS": ngauss,
        "OVERSAMP": float(oversample),
        "PIXINTEG": bool(first.pixel_integrated),
        "POLISHED": bool(polish),
        "ORDERING": "serpentine warm start + matching",
        "NSWAPS": n_swaps,
        "NRESTART": n_restarts,
    }
    grid_meta.update(meta or {})
    grid = PSFGrid(x, y, [f.mixture for f in fits], interpolation=interpolation, outside=outside, meta=grid_meta)
    return PSFGridFitResult(grid=grid, fits=tuple(fits), order=tuple(order), n_swaps=n_swaps, n_restarts=n_restarts)


# --------------------------------------------------------------------------------------------
# Which HDUs, and where each PSF is
# --------------------------------------------------------------------------------------------


def image_hdus(path: str | os.PathLike) -> list[int]:
    """Indices of the HDUs of a FITS file that hold a non-empty 2-d image."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        return [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) == 2 and h.data is not None
                and h.data.size > 0]


def _parse_index_spec(spec: str, everything: list[int], option: str, what: str) -> list[int]:
    """Indices from ``"all"`` (``everything``), ``"A:B"`` (inclusive) or ``"a,b,c"``."""
    text = spec.strip().lower()
    try:
        if text == "all":
            return list(everything)
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":", 1))
            return list(range(lo, hi + 1))
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PhoValueError(f"{option} {spec!r}: give 'all', a range A:B (inclusive) or a list a,b,c of {what}") from None


def parse_hdus(spec: str, path: str | os.PathLike) -> list[int]:
    """HDU indices from ``"all"`` (every HDU with a 2-d image), ``"A:B"`` (inclusive) or
    ``"a,b,c"``. Raises ``PhoValueError`` for a bad spec or an HDU that is not an image."""
    available = image_hdus(path)
    hdus = _parse_index_spec(spec, available, "--hdus", "HDU indices")
    missing = [h for h in hdus if h not in available]
    if missing or not hdus:
        raise PhoValueError(
            f"--hdus {spec!r}: HDU(s) {missing or hdus} of {path} hold no 2-d image; the images are in HDUs "
            f"{available[:10]}{' ...' if len(available) > 10 else ''} ({len(available)} in all)"
        )
    if len(set(hdus)) != len(hdus):
        raise PhoValueError(f"--hdus {spec!r} names an HDU twice")
    return hdus


def header_positions(path: str | os.PathLike, hdus: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions from the ``PSFX``/``PSFY`` header keys of each HDU (0-based detector pixels).

    Raises
    ------
    PhoValueError
        HDUs without both keys (named), or values that are not numbers.
    """
    from astropy.io import fits

    xs, ys, lacking = [], [], []
    with fits.open(path) as hdul:
        for h in hdus:
            hdr = hdul[h].header
            if POSITION_KEYS[0] not in hdr or POSITION_KEYS[1] not in hdr:
                lacking.append(h)
                continue
            try:
                xs.append(float(hdr[POSITION_KEYS[0]]))
                ys.append(float(hdr[POSITION_KEYS[1]]))
            except (TypeError, ValueError):
                raise PhoValueError(
                    f"{path} HDU {h}: {POSITION_KEYS[0]}={hdr[POSITION_KEYS[0]]!r}, {POSITION_KEYS[1]}="
                    f"{hdr[POSITION_KEYS[1]]!r} are not numbers"
                ) from None
    if lacking:
        raise PhoValueError(
            f"{path}: HDU(s) {lacking[:10]}{' ...' if len(lacking) > 10 else ''} ({len(lacking)} of {len(hdus)}) have no "
            f"{POSITION_KEYS[0]}/{POSITION_KEYS[1]} header keys (the PSF's 0-based detector position); give the positions "
            "with --positions FILE (lines 'hdu x_pix y_pix') or assign a grid with --grid NX NY --grid-extent X0 X1 Y0 Y1"
        )
    return np.array(xs), np.array(ys)


def read_positions_file(path: str | os.PathLike, hdus: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions from a text file of lines ``hdu x_pix y_pix`` (0-based detector pixels; ``#``
    starts a comment), for the given HDUs in their order.

    Raises
    ------
    PhoValueError
        A malformed line, an HDU listed twice, or an HDU of ``hdus`` not listed.
    """
    table: dict[int, tuple[float, float]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) != 3:
                raise ValueError
            h, xv, yv = int(parts[0]), float(parts[1]), float(parts[2])
        except ValueError:
            raise PhoValueError(f"{path} line {n}: {line!r}; each line must be 'hdu x_pix y_pix'") from None
        if h in table:
            raise PhoValueError(f"{path} line {n}: HDU {h} is listed twice")
        table[h] = (xv, yv)
    missing = [h for h in hdus if h not in table]
    if missing:
        raise PhoValueError(f"{path} gives no position for HDU(s) {missing[:10]}; list every fitted HDU")
    return np.array([table[h][0] for h in hdus]), np.array([table[h][1] for h in hdus])


def assigned_grid_positions(n: int, nx: int, ny: int, extent) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``n = nx * ny`` PSFs assigned to an even grid, in order: x fastest from
    ``x0`` to ``x1``, then y from ``y0`` to ``y1`` (``extent = (x0, x1, y0, y1)``, pixels).
    For files without positions; the positions are an assumption, not a measurement.

    Raises
    ------
    PhoValueError
        ``nx * ny != n``, fewer than 2 points along an axis, or an empty or non-finite extent.
    """
    x0, x1, y0, y1 = (float(v) for v in extent)
    if nx < 2 or ny < 2 or nx * ny != n:
        raise PhoValueError(f"--grid {nx} {ny}: needs nx, ny >= 2 and nx * ny equal to the {n} PSFs fitted")
    if not all(np.isfinite([x0, x1, y0, y1])) or not (x1 > x0 and y1 > y0):
        raise PhoValueError(f"--grid-extent {x0:g} {x1:g} {y0:g} {y1:g}: need finite X0 < X1 and Y0 < Y1 (pixels)")
    gx, gy = np.meshgrid(np.linspace(x0, x1, nx), np.linspace(y0, y1, ny))
    return gx.ravel(), gy.ravel()


# --------------------------------------------------------------------------------------------
# A cube of PSFs in one HDU (WebbPSF/STPSF psf_grid files)
# --------------------------------------------------------------------------------------------

#: Header key prefix of the position of plane i of a PSF cube: ``DET_YX<i> = '(y, x)'``, 0-based
#: detector pixels, y first (WebbPSF/STPSF's ``psf_grid`` and photutils' GriddedPSFModel).
CUBE_POSITION_PREFIX = "DET_YX"


def cube_plane_count(path: str | os.PathLike, hdu: int) -> int:
    """Number of planes of the 3-D HDU ``hdu``; ``PhoValueError`` if it is not a cube."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        if not 0 <= hdu < len(hdul):
            raise PhoValueError(f"{path} has {len(hdul)} HDUs (0..{len(hdul) - 1}); --hdu {hdu} is out of range")
        h = hdul[hdu]
        if not h.is_image or h.header.get("NAXIS", 0) != 3:
            raise PhoValueError(
                f"HDU {hdu} of {path} is not a cube of PSFs (NAXIS = {h.header.get('NAXIS', 0)}); --planes needs a 3-D "
                "image HDU (pick it with --hdu), --hdus fits one PSF per HDU"
            )
        return int(h.header["NAXIS3"])


def parse_planes(spec: str, n_planes: int) -> list[int]:
    """Plane indices from ``"all"``, ``"A:B"`` (inclusive) or ``"a,b,c"``, each in 0..n_planes-1."""
    planes = _parse_index_spec(spec, list(range(n_planes)), "--planes", "planes")
    bad = [p for p in planes if not 0 <= p < n_planes]
    if bad or not planes:
        raise PhoValueError(f"--planes {spec!r}: plane(s) {bad or planes} are not in the cube's 0..{n_planes - 1}")
    if len(set(planes)) != len(planes):
        raise PhoValueError(f"--planes {spec!r} names a plane twice")
    return planes


def cube_positions(path: str | os.PathLike, hdu: int, planes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of cube planes from the ``DET_YX<i> = '(y, x)'`` keys of the HDU (or the primary
    header), 0-based detector pixels.

    Raises
    ------
    PhoValueError
        Planes without a key (named), or a value that is not ``(y, x)``.
    """
    from astropy.io import fits

    xs, ys, lacking = [], [], []
    with fits.open(path) as hdul:
        headers = (hdul[hdu].header, hdul[0].header)
        for p in planes:
            key = f"{CUBE_POSITION_PREFIX}{p}"
            value = next((h[key] for h in headers if key in h), None)
            if value is None:
                lacking.append(p)
                continue
            try:
                yv, xv = (float(v) for v in str(value).strip().strip("()[]").split(","))
            except ValueError:
                raise PhoValueError(f"{path} HDU {hdu}: {key} = {value!r} is not '(y, x)'") from None
            xs.append(xv)
            ys.append(yv)
    if lacking:
        raise PhoValueError(
            f"{path} HDU {hdu}: plane(s) {lacking[:10]}{' ...' if len(lacking) > 10 else ''} have no "
            f"{CUBE_POSITION_PREFIX}<i> = '(y, x)' header key (the PSF's 0-based detector position); give the positions "
            "with --positions FILE (lines 'plane x_pix y_pix') or assign a grid with --grid NX NY --grid-extent X0 X1 Y0 Y1"
        )
    return np.array(xs), np.array(ys)
