"""Wide image Gaussians rendered on coarser node grids and interpolated (the NumPy specification).

A Gaussian much wider than a pixel is smooth on the pixel scale, so its pixel values can be
computed on a grid of nodes every ``h = 2**L`` pixels ("level L") and interpolated to the pixels,
with a fraction ``1 / h**2`` of the work. pho does this for every image Gaussian whose smaller
standard deviation is at least ``SIGMA_PER_NODE * h`` pixels (docs/pixel_integration.md, "Wide
Gaussians on coarse grids"):

- **What is interpolated** is the pixel rule's own value (second order, the rule of every Gaussian
  this wide): the Gaussian is rendered on the level's grid by the same kernel, in node units, with
  its covariance reduced by ``(h**2 - 1) / 12`` pixels^2 and its amplitude raised to keep its flux
  (the kernel's correction for a node cell of ``h x h`` pixels then adds back ``h**2 / 12``: both
  rules approximate the pixel average to second order and differ at fourth, ``O((h / sigma)**4)``).
- **Boxes** on a coarse grid are ``level_box_nsigma()`` standard deviations wide, 0.75 more than on
  the pixels, so that interpolation near the pixels' box edge does not mix in zeros.
- **Interpolation** is by 6-point Lagrange polynomials, level to level by factors of two (a node
  of the finer grid is either a node of the coarser one, copied, or a midpoint, weights
  (3, -25, 150, 150, -25, 3) / 256), coarsest level first, so every level costs one pass. Its error
  on a Gaussian is 4.3e-6 of the peak per axis at ``sigma = 5 h`` and falls as ``(h / sigma)**6``.
- **Accuracy**: at the switching point ``sigma_min = SIGMA_PER_NODE h`` a Gaussian's image is within
  2.0e-5 of its peak of the pixel kernel's (both errors together, every level and axis ratio;
  ``tests/test_levels.py`` holds it under 5e-5, half of the 1e-4 by which the pixel rule itself
  changes where it switches integration order), and closer for wider Gaussians.
- **The gradient** is exact for this model: the pixel weights are carried to each level by the
  transpose of the interpolation, the kernel's gradient pass runs there, and the chain rule maps
  node-unit derivatives back to the Gaussian's (A, x0, y0, Fxx, Fxy, Fyy).

Level ``L``'s node ``j`` (along either axis) sits at pixel coordinate ``h * (j - m_L)``: the margin
``m_L`` of nodes before pixel 0 and the count ``n_L`` are :func:`axis_grids`'s, chosen so that every
finer node's interpolation stencil exists. A level is used only where its grid has at most
``MAX_NODE_RATIO`` times the nodes of the next finer one (small stamps stop early).

The cpu backend's one-call likelihood (``pho._stamp``) does the same arithmetic in C;
``tests/test_levels.py`` and ``tests/test_stamp.py`` hold them equal.
"""

from __future__ import annotations

import numpy as np

from . import _reference

__all__ = ["SIGMA_PER_NODE", "MAX_LEVEL", "MAX_NODE_RATIO", "LEVEL_BOX_EXTRA_NSIGMA", "level_box_nsigma", "HALF_WEIGHTS", "axis_grids", "grid_levels",
           "gaussian_levels", "to_level", "chain_from_level", "prolong", "restrict", "render", "gradient"]

#: A Gaussian goes to level L (nodes every 2**L pixels) when its smaller standard deviation is at
#: least SIGMA_PER_NODE * 2**L pixels (there its image is within 2e-5 of its peak of the pixels' one;
#: with 4, 5.8e-5: the second-order rule on nodes 4 sigma wide differs from the pixels' by ~3e-5).
SIGMA_PER_NODE = 5.0
#: The coarsest level (nodes every 16 pixels). 0 renders every Gaussian on the pixels.
MAX_LEVEL = 4
#: A level is used only if its grid has at most this fraction of the next finer grid's nodes.
MAX_NODE_RATIO = 0.75
#: Box half-width of a Gaussian on a coarse grid, in standard deviations beyond the pixels' BOX_NSIGMA:
#: 0.75 sigma (at least 3 nodes there), so that the interpolation stencil of every pixel inside the
#: pixels' box sees the Gaussian's values, not the zeros beyond a box edge.
LEVEL_BOX_EXTRA_NSIGMA = 0.75


def level_box_nsigma() -> float:
    """Box half-width on the coarse grids: ``pho._reference.BOX_NSIGMA + LEVEL_BOX_EXTRA_NSIGMA``
    (read at each call, as the pixels' boxes are)."""
    return _reference.BOX_NSIGMA + LEVEL_BOX_EXTRA_NSIGMA
#: 6-point Lagrange weights at the midpoint of nodes J0 and J0 + 1, on nodes J0 - 2 ... J0 + 3.
HALF_WEIGHTS = np.array([3.0, -25.0, 150.0, 150.0, -25.0, 3.0]) / 256.0


def axis_grids(n: int, max_level: int = MAX_LEVEL) -> list[tuple[int, int]]:
    """Margin and node count ``(m_L, n_L)`` of levels 0..max_level along an axis of ``n`` pixels.

    Level 0 is the pixels, ``(0, n)``. Level L's node j is at pixel coordinate ``2**L (j - m_L)``;
    the finer level's nodes need the coarser nodes two below and three above their position:
    ``m_L = ceil(m_{L-1} / 2) + 2``, ``n_L = floor((n_{L-1} - 1 - m_{L-1}) / 2) + m_L + 4``.
    """
    out = [(0, int(n))]
    for _ in range(max_level):
        m_prev, n_prev = out[-1]
        m = (m_prev + 1) // 2 + 2
        out.append((m, (n_prev - 1 - m_prev) // 2 + m + 4))
    return out


def grid_levels(shape, max_level: int = MAX_LEVEL) -> list[tuple[int, int, int, int]]:
    """Levels usable on an image of ``shape``: ``(m_y, n_y, m_x, n_x)`` for levels 0..L.

    Level L is kept while its grid has at most ``MAX_NODE_RATIO`` times the nodes of level L - 1.
    """
    ys, xs = axis_grids(shape[0], max_level), axis_grids(shape[1], max_level)
    out = [(ys[0][0], ys[0][1], xs[0][0], xs[0][1])]
    for level in range(1, max_level + 1):
        if ys[level][1] * xs[level][1] > MAX_NODE_RATIO * (ys[level - 1][1] * xs[level - 1][1]):
            break
        out.append((ys[level][0], ys[level][1], xs[level][0], xs[level][1]))
    return out


def gaussian_levels(gaussians: np.ndarray, max_level: int) -> np.ndarray:
    """Level of each image Gaussian: the largest L <= max_level with sigma_min >= SIGMA_PER_NODE 2**L
    (0 for one that is not positive definite: the pixel kernel's check then names it).

    sigma_min**2 is 1 / (the largest eigenvalue of F); the test is ``lambda_max * (SIGMA_PER_NODE
    2**L)**2 <= 1``, written as pho._stamp writes it.
    """
    g = np.asarray(gaussians, dtype=np.float64)
    level = np.zeros(len(g), dtype=np.int32)
    if max_level <= 0 or len(g) == 0:
        return level
    fxx, fxy, fyy = g[:, 3], g[:, 4], g[:, 5]
    d = fxx - fyy
    with np.errstate(invalid="ignore"):
        lam = 0.5 * (fxx + fyy) + np.sqrt(0.25 * (d * d) + fxy * fxy)
        definite = (fxx > 0) & (fyy > 0) & (fxx * fyy - fxy * fxy > 0)
    for lv in range(1, max_level + 1):
        s = SIGMA_PER_NODE * float(2 ** lv)
        level[definite & (lam * (s * s) <= 1.0)] = lv
    return level


def _reduced(g: np.ndarray, level: int):
    """(h, Sigma's xx, xy, yy, Sigma_in's xx, yy (its xy is Sigma's), det Sigma_in, amplitude factor r)
    of the Gaussians on ``level``: Sigma = F^-1, Sigma_in = Sigma - (h**2 - 1) / 12 I,
    r = sqrt(det Sigma / det Sigma_in)."""
    h = float(2 ** level)
    delta = (h * h - 1.0) / 12.0
    fxx, fxy, fyy = g[:, 3], g[:, 4], g[:, 5]
    det = fxx * fyy - fxy * fxy
    sxx, sxy, syy = fyy / det, -fxy / det, fxx / det
    axx, ayy = sxx - delta, syy - delta
    det_in = axx * ayy - sxy * sxy
    return h, sxx, sxy, syy, axx, ayy, det_in, np.sqrt(1.0 / (det * det_in))


def to_level(gaussians: np.ndarray, level: int, m_y: int, m_x: int) -> np.ndarray:
    """The Gaussians in level ``level``'s node units, as the pixel kernel renders them there.

    Covariance Sigma - delta I with delta = (h**2 - 1) / 12, scaled by 1 / h**2; amplitude times
    sqrt(det Sigma / det(Sigma - delta I)); centre x / h + m_x, y / h + m_y.
    """
    g = np.asarray(gaussians, dtype=np.float64)
    h, sxx, sxy, syy, axx, ayy, det_in, r = _reduced(g, level)
    h2 = h * h
    out = np.empty_like(g)
    out[:, 0] = g[:, 0] * r
    out[:, 1] = g[:, 1] / h + m_x
    out[:, 2] = g[:, 2] / h + m_y
    out[:, 3] = h2 * (ayy / det_in)
    out[:, 4] = h2 * (-sxy / det_in)
    out[:, 5] = h2 * (axx / det_in)
    return out


def chain_from_level(gaussians: np.ndarray, level: int, node_grad: np.ndarray) -> np.ndarray:
    """d/d(A, x0, y0, Fxx, Fxy, Fyy) of the Gaussians from d/d of their level-unit parameters.

    With Sigma_in = Sigma - delta I, F_in = Sigma_in^-1, M = Sigma F_in (symmetric) and the level's
    derivative matrix G_c = [[g_xx, g_xy / 2], [g_xy / 2, g_yy]]: dF_in = M dF M, so the F part is
    M (h**2 G_c) M, plus the amplitude factor's d ln r / dF = (Sigma F_in Sigma - Sigma) / 2.
    """
    g = np.asarray(gaussians, dtype=np.float64)
    gc = np.asarray(node_grad, dtype=np.float64)
    h, sxx, sxy, syy, axx, ayy, det_in, r = _reduced(g, level)
    ixx, ixy, iyy = ayy / det_in, -sxy / det_in, axx / det_in  # F_in
    # M = Sigma F_in
    mxx = sxx * ixx + sxy * ixy
    mxy = sxx * ixy + sxy * iyy
    myy = sxy * ixy + syy * iyy
    h2 = h * h
    cxx, cxy, cyy = h2 * gc[:, 3], h2 * (0.5 * gc[:, 4]), h2 * gc[:, 5]  # G_in
    # P = M G_in; then M G_in M
    pxx = mxx * cxx + mxy * cxy
    pxy = mxx * cxy + mxy * cyy
    pyx = mxy * cxx + myy * cxy
    pyy = mxy * cxy + myy * cyy
    gxx = pxx * mxx + pxy * mxy
    gxy = pxx * mxy + pxy * myy
    gyy = pyx * mxy + pyy * myy
    # amplitude: (gA_c A_c / 2) (M Sigma - Sigma)
    k = 0.5 * (gc[:, 0] * (g[:, 0] * r))
    gxx = gxx + k * ((mxx * sxx + mxy * sxy) - sxx)
    gxy = gxy + k * ((mxx * sxy + mxy * syy) - sxy)
    gyy = gyy + k * ((mxy * sxy + myy * syy) - syy)
    out = np.empty_like(gc)
    out[:, 0] = gc[:, 0] * r
    out[:, 1] = gc[:, 1] / h
    out[:, 2] = gc[:, 2] / h
    out[:, 3] = gxx
    out[:, 4] = 2.0 * gxy
    out[:, 5] = gyy
    return out


def _axis_matrix(m_fine: int, n_fine: int, m_coarse: int, n_coarse: int) -> np.ndarray:
    """(n_fine, n_coarse) interpolation from a level's nodes to the next finer level's along one axis."""
    p = np.zeros((n_fine, n_coarse))
    for j in range(n_fine):
        d = j - m_fine + 2 * m_coarse
        j0 = d // 2
        if d % 2 == 0:
            p[j, j0] = 1.0
        else:
            p[j, j0 - 2:j0 + 4] = HALF_WEIGHTS
    return p


def _matrices(grids, level):
    my_f, ny_f, mx_f, nx_f = grids[level - 1]
    my_c, ny_c, mx_c, nx_c = grids[level]
    return _axis_matrix(my_f, ny_f, my_c, ny_c), _axis_matrix(mx_f, nx_f, mx_c, nx_c)


def prolong(coarse: np.ndarray, grids, level: int) -> np.ndarray:
    """Level ``level``'s node values interpolated to level ``level - 1``'s grid (x first, then y)."""
    py, px = _matrices(grids, level)
    return py @ (coarse @ px.T)


def restrict(weights: np.ndarray, grids, level: int) -> np.ndarray:
    """The transpose of :func:`prolong`: level ``level - 1`` weights carried to level ``level``."""
    py, px = _matrices(grids, level)
    return (py.T @ weights) @ px


def render(raw_render, gaussians: np.ndarray, shape, max_level: int = MAX_LEVEL) -> np.ndarray:
    """Model image with the wide Gaussians on their levels.

    ``raw_render(gaussians, shape, nsigma) -> image`` is a backend's pixel kernel (every Gaussian on
    every pixel of its box of half-width ``nsigma``); ``max_level`` 0 calls it once on all the Gaussians.
    """
    g = np.asarray(gaussians, dtype=np.float64)
    grids = grid_levels(shape, max_level)
    level = gaussian_levels(g, len(grids) - 1)
    top = int(level.max()) if len(level) else 0
    if top == 0:
        return raw_render(g, shape)
    img = raw_render(np.ascontiguousarray(g[level == 0]), shape)
    acc = None
    for lv in range(top, 0, -1):
        my, ny, mx, nx = grids[lv]
        sel = level == lv
        c = raw_render(np.ascontiguousarray(to_level(g[sel], lv, my, mx)), (ny, nx), level_box_nsigma()) \
            if sel.any() else np.zeros((ny, nx))
        if acc is not None:
            c = c + prolong(acc, grids, lv + 1)
        acc = c
    return img + prolong(acc, grids, 1)


def gradient(raw_gradient, gaussians: np.ndarray, weights: np.ndarray, max_level: int = MAX_LEVEL) -> np.ndarray:
    """(G, 6) sums over pixels of ``weights * dI / d column`` for the model of :func:`render`.

    ``raw_gradient(gaussians, weights, nsigma) -> (G, 6)`` is a backend's gradient kernel.
    """
    g = np.asarray(gaussians, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    grids = grid_levels(w.shape, max_level)
    level = gaussian_levels(g, len(grids) - 1)
    top = int(level.max()) if len(level) else 0
    if top == 0:
        return raw_gradient(g, w)
    out = np.zeros((len(g), 6))
    sel = level == 0
    if sel.any():
        out[sel] = raw_gradient(np.ascontiguousarray(g[sel]), w)
    for lv in range(1, top + 1):
        w = restrict(w, grids, lv)
        sel = level == lv
        if sel.any():
            my, ny, mx, nx = grids[lv]
            gl = np.ascontiguousarray(to_level(g[sel], lv, my, mx))
            out[sel] = chain_from_level(g[sel], lv, raw_gradient(gl, np.ascontiguousarray(w), level_box_nsigma()))
    return out
