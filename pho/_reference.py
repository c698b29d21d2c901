"""The pixel integration rule of pho in plain NumPy: the executable specification.

Every backend (``cpu``, ``gpu``) must reproduce what this module computes, to ~1e-12 relative.
It is slow and obvious on purpose. See ``docs/pixel_integration.md`` for the derivation and the
measured errors of the rule.

Image Gaussians are packed in a ``(G, 6)`` float64 array with columns
``A, x0, y0, Fxx, Fxy, Fyy`` (see docs/ARCHITECTURE.md): the point value is
``A exp(-Q/2)``, ``Q = Fxx dx^2 + 2 Fxy dx dy + Fyy dy^2``, ``dx = x - x0``, ``dy = y - y0``,
in pixels, with the centre of pixel ``[0, 0]`` at ``(0, 0)``.

The rule, per Gaussian (a function of ``F`` only, see :func:`integration_orders`):

- order 0, wide Gaussians: the second-order (midpoint plus curvature) correction
  ``I = A e (1 + (Vx^2 + Vy^2 - Fxx - Fyy) / 24)``, ``e = exp(-Q/2)`` at the pixel centre,
  ``V = F d``;
- order n >= 2, narrower Gaussians: the n x n Gauss-Legendre product rule over the unit pixel,
  ``I = A sum_ab w_a w_b exp(-Q(x + u_a, y + u_b) / 2)`` with nodes ``u`` in ``[-1/2, 1/2]``
  and weights ``w`` summing to one (:func:`gauss_legendre_table`).

Each Gaussian touches only the pixels of its bounding box (:func:`pixel_boxes`). The partial
derivatives are the exact derivatives of the rule's own value, treating ``A`` as independent
of ``F``.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PhoValueError

__all__ = [
    "BOX_NSIGMA",
    "MAX_ORDER",
    "ORDER_FOURTH",
    "MIN_FWHM_PIX",
    "FMAX_LIMIT",
    "ORDER_FWHM_THRESHOLDS_PIX",
    "FWHM_PER_SIGMA",
    "gauss_legendre_table",
    "integration_orders",
    "pixel_boxes",
    "box_pixel_count",
    "packed_gaussian",
    "check_gaussians",
    "render",
    "gradient",
    "render_derivatives",
]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Half-width of a Gaussian's bounding box in units of its marginal sigma along x (or y).
#: The flux outside ``|dx| <= k sigma_x`` or ``|dy| <= k sigma_y`` is at most
#: ``2 * 2 Phi(-k)`` (union bound over the two axes) = 1e-5 of the Gaussian's flux for
#: ``k = Phi^-1(1 - 2.5e-6)`` = 4.5648.
BOX_NSIGMA = 4.564787

#: Largest Gauss-Legendre order used by the rule.
MAX_ORDER = 8

#: Integration order code of the fourth-order correction (``ORDER_FOURTH``): one point per pixel, like
#: the second-order correction (order 0), with the fourth-derivative terms of the pixel average
#: added. It takes the code 1 because a 1 x 1 Gauss-Legendre rule (the pixel centre alone) is
#: never useful.
ORDER_FOURTH = 1

#: ``(fwhm_min_pix, order)``: a Gaussian whose effective FWHM (see :func:`integration_orders`)
#: is at least ``fwhm_min_pix`` uses ``order`` (0 = second-order correction, 1 = fourth-order
#: correction, n >= 2 = n x n Gauss-Legendre); the first matching row wins; narrower than all rows
#: gives ``MAX_ORDER``. Chosen so that the worst relative error of each rule is at most ~1e-4 of
#: the pixel value on every pixel above 1% of the peak (measured; docs/pixel_integration.md).
ORDER_FWHM_THRESHOLDS_PIX = (
    (8.5, 0),
    (3.2, ORDER_FOURTH),
    (2.0, 3),
    (1.2, 4),
    (0.7, 5),
    (0.55, 6),
    (0.42, 7),
)


#: Narrowest effective FWHM (pixels, see :func:`integration_orders`) the rule integrates to 1e-3:
#: the 8 x 8 Gauss-Legendre rule's worst relative error (pixels above 1% of the peak, sub-pixel
#: shifts 0..0.5) is 2.8e-4 at FWHM 0.35, 1.7e-3 at 0.3, 1.1e-2 at 0.25 and 7e-2 at 0.2 (a Gaussian
#: much narrower than a pixel falls between the nodes). Narrower Gaussians are refused
#: (:func:`check_gaussians`, and ``pho.PSFMixture`` for PSF components), never drawn wrong.
MIN_FWHM_PIX = 0.35


def gauss_legendre_table(max_order: int = MAX_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on the unit pixel, for every order up to ``max_order``.

    Returns
    -------
    nodes_pix : ndarray of shape (max_order + 1, max_order), float64
        Row ``n`` holds the ``n`` nodes of the n-point rule in ``[-1/2, 1/2]`` (pixels, from
        the pixel centre), zero-padded; rows 0 and 1 are unused by the rule except row 0,
        whose single node 0 is the pixel centre.
    weights : ndarray of shape (max_order + 1, max_order), float64
        The matching weights, summing to one in each row (row 0: one weight of 1).
    """
    nodes = np.zeros((max_order + 1, max_order))
    weights = np.zeros((max_order + 1, max_order))
    weights[0, 0] = 1.0
    for n in range(1, max_order + 1):
        u, w = np.polynomial.legendre.leggauss(n)
        nodes[n, :n] = 0.5 * u
        weights[n, :n] = 0.5 * w
    return nodes, weights


_NODES, _WEIGHTS = gauss_legendre_table()
_NODES.setflags(write=False)
_WEIGHTS.setflags(write=False)


def check_gaussians(gaussians) -> np.ndarray:
    """Validate packed image Gaussians and return them as a C-contiguous float64 array.

    Raises
    ------
    PhoValueError
        If the array is not of shape (G, 6), holds a non-finite value, a row's ``F`` is not
        positive definite (``Fxx > 0``, ``Fyy > 0``, ``Fxx Fyy - Fxy^2 > 0``), or a row is
        narrower than ``MIN_FWHM_PIX`` (``max(Fxx, Fyy) > FMAX_LIMIT``).
    """
    arr = np.ascontiguousarray(gaussians, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise PhoValueError(
            f"image Gaussians must have shape (G, 6) with columns A, x0, y0, Fxx, Fxy, Fyy; got shape "
            f"{arr.shape}; pack them with pho.gaussians"
        )
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise PhoValueError(
            f"image Gaussian {bad} has a non-finite value {arr[bad].tolist()}; check the source parameters "
            f"that produced it"
        )
    if arr.size:
        fxx, fxy, fyy = arr[:, 3], arr[:, 4], arr[:, 5]
        det = fxx * fyy - fxy * fxy
        bad_rows = np.flatnonzero(~((fxx > 0) & (fyy > 0) & (det > 0)))
        if bad_rows.size:
            b = int(bad_rows[0])
            raise PhoValueError(
                f"image Gaussian {b} has an inverse covariance (Fxx, Fxy, Fyy) = "
                f"({fxx[b]:.6g}, {fxy[b]:.6g}, {fyy[b]:.6g}) that is not positive definite; "
                f"every Gaussian needs Fxx > 0, Fyy > 0 and Fxx Fyy - Fxy^2 > 0"
            )
        too_narrow = np.flatnonzero(np.maximum(fxx, fyy) > FMAX_LIMIT)
        if too_narrow.size:
            b = int(too_narrow[0])
            fwhm = FWHM_PER_SIGMA / math.sqrt(max(fxx[b], fyy[b]))
            raise PhoValueError(
                f"image Gaussian {b} is too narrow for pho's pixel integration: effective FWHM {fwhm:.3g} pixel < "
                f"{MIN_FWHM_PIX} pixel (the 8 x 8 Gauss-Legendre rule would be off by more than 1e-3). Its PSF "
                f"component is narrower than pho can draw: refit the PSF from an oversampled image, or widen the "
                f"component to FWHM >= {MIN_FWHM_PIX} pixel"
            )
    return arr


def check_shape(shape) -> tuple[int, int]:
    """Validate an image shape ``(ny, nx)`` of non-negative integers."""
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise PhoValueError(f"image shape must be two integers (ny, nx); got {shape!r}") from None
    if ny < 0 or nx < 0 or (ny, nx) != tuple(shape):
        raise PhoValueError(f"image shape must be two non-negative integers (ny, nx); got {shape!r}")
    return ny, nx


def integration_orders(gaussians: np.ndarray) -> np.ndarray:
    """The integration rule chosen for each Gaussian, a function of ``F`` only.

    The effective FWHM is ``FWHM_PER_SIGMA / sqrt(max(Fxx, Fyy))`` pixels: the width along x (or
    y) of the Gaussian's cross-section through any point, which is what the product rule
    resolves, and never less than the FWHM along the narrowest principal axis.

    Parameters
    ----------
    gaussians : ndarray of shape (G, 6), float64
        Packed image Gaussians (already validated).

    Returns
    -------
    orders : ndarray of shape (G,), int32
        0 for the second-order correction, 1 (``ORDER_FOURTH``) for the fourth-order correction,
        n >= 2 for the n x n Gauss-Legendre rule.
    """
    fmax = np.maximum(gaussians[:, 3], gaussians[:, 5])
    # FWHM_eff >= fwhm_min  <=>  fmax <= (FWHM_PER_SIGMA / fwhm_min)^2; one search over the thresholds
    return _ORDER_TABLE[np.searchsorted(_FMAX_EDGES, fmax, side="left")]


#: ``max(Fxx, Fyy)`` (pixel^-2) of a Gaussian of effective FWHM ``MIN_FWHM_PIX``: the largest allowed.
FMAX_LIMIT = (FWHM_PER_SIGMA / MIN_FWHM_PIX) ** 2
_FMAX_EDGES = np.array([(FWHM_PER_SIGMA / f) ** 2 for f, _ in ORDER_FWHM_THRESHOLDS_PIX])
_ORDER_TABLE = np.array([o for _, o in ORDER_FWHM_THRESHOLDS_PIX] + [MAX_ORDER], dtype=np.int32)


def pixel_boxes(gaussians: np.ndarray, shape: tuple[int, int], nsigma: float | None = None) -> np.ndarray:
    """Inclusive pixel bounding boxes of the Gaussians, clipped to the image.

    A Gaussian touches pixel ``[i, j]`` when the pixel's area overlaps
    ``|x - x0| <= BOX_NSIGMA sigma_x``, ``|y - y0| <= BOX_NSIGMA sigma_y`` (marginal sigmas
    ``sigma_x = sqrt(Fyy / det F)``, ``sigma_y = sqrt(Fxx / det F)``), i.e.
    ``ceil(x0 - rx - 1/2) <= j <= floor(x0 + rx + 1/2)``. All backends use these integers.
    ``nsigma`` replaces BOX_NSIGMA (read at each call when None; pho._levels's coarse grids widen it).

    Returns
    -------
    boxes : ndarray of shape (G, 4), int64
        ``j_lo, j_hi, i_lo, i_hi`` (inclusive); empty when ``j_lo > j_hi`` or ``i_lo > i_hi``.
    """
    ny, nx = shape
    g = gaussians
    det = g[:, 3] * g[:, 5] - g[:, 4] * g[:, 4]
    # half-widths (G, 2): [rx, ry] = BOX_NSIGMA * sqrt([Fyy, Fxx] / det)
    r = (BOX_NSIGMA if nsigma is None else nsigma) * np.sqrt(g[:, 5:2:-2] / det[:, None])
    centre = g[:, 1:3]
    top = np.array([nx, ny], dtype=np.float64)
    # Clip in floating point first so that far-away or huge boxes convert safely to integers.
    lo = np.maximum(np.ceil(np.clip(centre - r - 0.5, -1.0, top + 1.0)), 0.0)
    hi = np.minimum(np.floor(np.clip(centre + r + 0.5, -2.0, top + 1.0)), top - 1.0)
    boxes = np.empty((len(g), 4), dtype=np.int64)
    boxes[:, 0::2] = lo
    boxes[:, 1::2] = hi
    return boxes


def box_pixel_count(boxes: np.ndarray) -> int:
    """Number of Gaussian-pixels in boxes from :func:`pixel_boxes` (empty boxes count 0): the work
    of one render or gradient pass."""
    b = np.asarray(boxes)
    return int(np.sum(np.maximum(b[:, 1] - b[:, 0] + 1, 0) * np.maximum(b[:, 3] - b[:, 2] + 1, 0)))


def packed_gaussian(flux: float, x0: float, y0: float, fwhm_minor_pix: float, q: float, theta_rad: float) -> np.ndarray:
    """One packed image Gaussian ``(A, x0, y0, Fxx, Fxy, Fyy)`` of total ``flux``, minor-axis FWHM
    ``fwhm_minor_pix`` (pixels), axis ratio ``q`` and major axis at ``theta_rad`` from +x towards +y."""
    s_minor = fwhm_minor_pix / FWHM_PER_SIGMA
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    rot = np.array([[c, -s], [s, c]])
    f = np.linalg.inv(rot @ np.diag([(s_minor / q) ** 2, s_minor**2]) @ rot.T)
    return np.array([flux * math.sqrt(np.linalg.det(f)) / (2 * math.pi), x0, y0, f[0, 0], f[0, 1], f[1, 1]])


def _point_terms(fxx, fxy, fyy, dx, dy):
    """exp(-Q/2), Vx, Vy at offsets (dx, dy) from the centre."""
    vx = fxx * dx + fxy * dy
    vy = fxy * dx + fyy * dy
    e = np.exp(-0.5 * (dx * vx + dy * vy))
    return e, vx, vy


def _pixel_rule(row: np.ndarray, order: int, dx: np.ndarray, dy: np.ndarray, derivs: bool):
    """Value (and the six partials) of one Gaussian integrated over pixels at centre offsets.

    Returns ``value`` or ``(value, d)`` with ``d`` of shape ``(6,) + dx.shape`` holding
    dI/dA, dI/dx0, dI/dy0, dI/dFxx, dI/dFxy, dI/dFyy.
    """
    a, _, _, fxx, fxy, fyy = row
    if order == 0:
        e, vx, vy = _point_terms(fxx, fxy, fyy, dx, dy)
        h = 1.0 + (vx * vx + vy * vy - fxx - fyy) / 24.0
        val = a * e * h
        if not derivs:
            return val
        ae = a * e
        d = np.empty((6,) + dx.shape)
        d[0] = e * h
        d[1] = val * vx - ae * (fxx * vx + fxy * vy) / 12.0
        d[2] = val * vy - ae * (fxy * vx + fyy * vy) / 12.0
        d[3] = -0.5 * val * dx * dx + ae * (2.0 * vx * dx - 1.0) / 24.0
        d[4] = -val * dx * dy + ae * (vx * dy + vy * dx) / 12.0
        d[5] = -0.5 * val * dy * dy + ae * (2.0 * vy * dy - 1.0) / 24.0
        return val, d
    if order == ORDER_FOURTH:
        return _fourth_order_rule(row, dx, dy, derivs)
    u, w = _NODES[order, :order], _WEIGHTS[order, :order]
    esum = np.zeros(dx.shape)
    if derivs:
        d = np.zeros((6,) + dx.shape)
    for b in range(order):
        ddy = dy + u[b]
        for c in range(order):
            ddx = dx + u[c]
            e, vx, vy = _point_terms(fxx, fxy, fyy, ddx, ddy)
            we = (w[b] * w[c]) * e
            esum += we
            if derivs:
                d[1] += we * vx
                d[2] += we * vy
                d[3] += we * ddx * ddx
                d[4] += we * ddx * ddy
                d[5] += we * ddy * ddy
    val = a * esum
    if not derivs:
        return val
    d[0] = esum
    d[1] *= a
    d[2] *= a
    d[3] *= -0.5 * a
    d[4] *= -a
    d[5] *= -0.5 * a
    return val, d


def _fourth_order_rule(row: np.ndarray, dx: np.ndarray, dy: np.ndarray, derivs: bool):
    """The fourth-order correction at pixel-centre offsets (``ORDER_FOURTH``; see _pixel_rule).

    The average of f over the unit pixel is, by Taylor expansion with E[u^2] = 1/12,
    E[u^4] = 1/80, E[u^2 v^2] = 1/144 for u, v uniform on [-1/2, 1/2],
    ``f + (f_xx + f_yy)/24 + (f_xxxx + f_yyyy)/1920 + f_xxyy/576`` + sixth-order terms. For
    ``f = A e``, ``e = exp(-Q/2)``, ``V = F d``: ``e_xx = Px e`` with ``Px = Vx^2 - Fxx``,
    ``e_xxxx = Rx e`` with ``Rx = Vx^4 - 6 Fxx Vx^2 + 3 Fxx^2``, and
    ``e_xxyy = (Px Py - 4 Fxy Vx Vy + 2 Fxy^2) e``, so ``I = A e B`` with B a polynomial in
    (Vx, Vy, F). The six partials follow from ``de/dx0 = Vx e``, ``dV/dx0 = -(Fxx, Fxy)``,
    ``de/dFxx = -dx^2/2 e``, ``dVx/dFxx = dx`` (and likewise), plus B's explicit F terms.
    """
    a, _, _, fxx, fxy, fyy = row
    e, vx, vy = _point_terms(fxx, fxy, fyy, dx, dy)
    px = vx * vx - fxx
    py = vy * vy - fyy
    rx = px * px - 4.0 * fxx * vx * vx + 2.0 * fxx * fxx  # = Vx^4 - 6 Fxx Vx^2 + 3 Fxx^2
    ry = py * py - 4.0 * fyy * vy * vy + 2.0 * fyy * fyy
    cxy = px * py - 4.0 * fxy * vx * vy + 2.0 * fxy * fxy
    b = 1.0 + (px + py) / 24.0 + (rx + ry) / 1920.0 + cxy / 576.0
    val = a * e * b
    if not derivs:
        return val
    # partials of B in Vx, Vy and its explicit F dependence
    b_vx = vx / 12.0 + (4.0 * vx * px - 8.0 * fxx * vx) / 1920.0 + (2.0 * vx * py - 4.0 * fxy * vy) / 576.0
    b_vy = vy / 12.0 + (4.0 * vy * py - 8.0 * fyy * vy) / 1920.0 + (2.0 * vy * px - 4.0 * fxy * vx) / 576.0
    b_fxx = -1.0 / 24.0 + (6.0 * fxx - 6.0 * vx * vx) / 1920.0 - py / 576.0
    b_fyy = -1.0 / 24.0 + (6.0 * fyy - 6.0 * vy * vy) / 1920.0 - px / 576.0
    b_fxy = (4.0 * fxy - 4.0 * vx * vy) / 576.0
    ae = a * e
    d = np.empty((6,) + dx.shape)
    d[0] = e * b
    d[1] = ae * (b * vx - (b_vx * fxx + b_vy * fxy))
    d[2] = ae * (b * vy - (b_vx * fxy + b_vy * fyy))
    d[3] = ae * (-0.5 * dx * dx * b + b_vx * dx + b_fxx)
    d[4] = ae * (-dx * dy * b + b_vx * dy + b_vy * dx + b_fxy)
    d[5] = ae * (-0.5 * dy * dy * b + b_vy * dy + b_fyy)
    return val, d


def _box_offsets(row, box):
    jlo, jhi, ilo, ihi = (int(b) for b in box)
    xs = np.arange(jlo, jhi + 1, dtype=np.float64)
    ys = np.arange(ilo, ihi + 1, dtype=np.float64)
    dx = xs[None, :] - row[1]
    dy = ys[:, None] - row[2]
    dx, dy = np.broadcast_arrays(dx, dy)
    return (slice(ilo, ihi + 1), slice(jlo, jhi + 1)), dx, dy


def render(gaussians, shape, nsigma: float | None = None) -> np.ndarray:
    """Model image: the sum of the Gaussians, each integrated over every pixel by pho's rule.

    Parameters
    ----------
    gaussians : array_like of shape (G, 6), float64
        Packed image Gaussians ``A, x0, y0, Fxx, Fxy, Fyy`` (pixels, pixels^-2).
    shape : tuple of int
        ``(ny, nx)`` of the image.
    nsigma : float, optional
        Box half-width in standard deviations (:func:`pixel_boxes`; default BOX_NSIGMA).

    Returns
    -------
    image : ndarray of shape (ny, nx), float64
        Counts per pixel.
    """
    g = check_gaussians(gaussians)
    shape = check_shape(shape)
    img = np.zeros(shape)
    boxes = pixel_boxes(g, shape, nsigma)
    orders = integration_orders(g)
    for k in range(len(g)):
        if boxes[k, 0] > boxes[k, 1] or boxes[k, 2] > boxes[k, 3]:
            continue
        sl, dx, dy = _box_offsets(g[k], boxes[k])
        img[sl] += _pixel_rule(g[k], int(orders[k]), dx, dy, derivs=False)
    return img


def gradient(gaussians, weights, nsigma: float | None = None) -> np.ndarray:
    """Sum over pixels of ``weights * dI/d(column)`` for every Gaussian (boxes of ``nsigma``).

    Parameters
    ----------
    gaussians : array_like of shape (G, 6), float64
        Packed image Gaussians.
    weights : array_like of shape (ny, nx), float64
        Per-pixel weights, usually ``d lnL / d model`` (zero where masked).

    Returns
    -------
    grad : ndarray of shape (G, 6), float64
        Partials with respect to ``A, x0, y0, Fxx, Fxy, Fyy``, ``A`` treated as independent of F.
    """
    g = check_gaussians(gaussians)
    wts = np.asarray(weights, dtype=np.float64)
    if wts.ndim != 2:
        raise PhoValueError(f"weights must be a 2-d image (ny, nx); got shape {wts.shape}")
    out = np.zeros((len(g), 6))
    boxes = pixel_boxes(g, wts.shape, nsigma)
    orders = integration_orders(g)
    for k in range(len(g)):
        if boxes[k, 0] > boxes[k, 1] or boxes[k, 2] > boxes[k, 3]:
            continue
        sl, dx, dy = _box_offsets(g[k], boxes[k])
        _, d = _pixel_rule(g[k], int(orders[k]), dx, dy, derivs=True)
        out[k] = np.sum(d * wts[sl], axis=(1, 2))
    return out


def render_derivatives(gaussians, shape) -> np.ndarray:
    """Images of every Gaussian's six partial derivatives (for diagnostics and plots).

    Returns
    -------
    derivs : ndarray of shape (G, 6, ny, nx), float64
        ``dI[i, j] / d column`` for columns ``A, x0, y0, Fxx, Fxy, Fyy``; zero outside each
        Gaussian's bounding box. Memory is ``48 G ny nx`` bytes: use on small stamps.
    """
    g = check_gaussians(gaussians)
    shape = check_shape(shape)
    out = np.zeros((len(g), 6) + shape)
    boxes = pixel_boxes(g, shape)
    orders = integration_orders(g)
    for k in range(len(g)):
        if boxes[k, 0] > boxes[k, 1] or boxes[k, 2] > boxes[k, 3]:
            continue
        sl, dx, dy = _box_offsets(g[k], boxes[k])
        _, d = _pixel_rule(g[k], int(orders[k]), dx, dy, derivs=True)
        out[(k, slice(None)) + sl] = d
    return out
