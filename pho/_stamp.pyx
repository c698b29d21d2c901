# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One compiled call per likelihood evaluation on the cpu backend (private; pho.Likelihood uses it).

A :class:`StampPlan` is built once per ``pho.Likelihood`` (``Likelihood._build_plan``) from its scene
model and exposure models; it holds their static arrays and every buffer a call needs. One call of
:meth:`StampPlan.run` then does, with no Python in between and no allocation (except that the buffer of
kept exponentials grows, by ``realloc``, when a call needs more than any call before):

unit vectors and shape matrices of the sources; per exposure, the linear (degree-1) projection and its
Jacobian, the image Gaussians (points and Sersics), the negligible-Gaussian test, boxes and integration
orders, render, model + background + fitted sky, ln L and d lnL / d m (Gaussian or Poisson), the
gradient pass, the vector-Jacobian product of every source and the scatter into the gradient. The
render keeps each Gaussian's exponentials for the gradient pass; on one thread it takes each box
whole (pho_render_box_keep, pho_gradient_box_kept in pho_kernel.h).

Every step repeats, operation for operation, the NumPy / per-step expressions of pho.gaussians,
pho.exposure, pho.likelihood and pho._backends (tests/test_stamp.py holds them equal to 1e-12).
The per-pixel arithmetic is pho/include/pho_kernel.h, as for pho._render.

The profile amplitudes are computed here for pho's spline tables (pho.sersic.SersicTable and
MultiScaleSersic, the same arithmetic); any other profile's are computed by the caller and handed in.
Nothing here raises on bad values: :meth:`StampPlan.run` returns a nonzero status and the caller
re-runs the per-step path, which raises pho's error for it.
"""

import numpy as np

from cython.parallel cimport prange, threadid
from libc.math cimport cos, sin, exp, expm1, hypot, log, sqrt, isfinite
from libc.stdlib cimport free, realloc

from pho._kernel cimport (PHO_MAX_ORDER, PHO_TAB, pho_box_order, pho_gauss_table, pho_gradient_box_kept,
                          pho_gradient_span, pho_render_box_keep, pho_render_span_keep, pho_vjp_add, pho_vjp_finish)

# Everything below the pixel kernels (pho_kernel.h, included above with the compiler's defaults) is
# compiled without contracting a*b + c into fused multiply-adds, so that the model's arithmetic
# (projection, shape matrices, image Gaussians, vector-Jacobian products) rounds as NumPy's does.
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("fp-contract=off")
    #elif defined(__clang__)
    #pragma clang fp contract(off)
    #endif
    """

cdef enum:
    # status of StampPlan.run (0 = success); on any other the caller re-runs the per-step path
    ST_FAR_SIDE = 1  # a source on the far side of an exposure's tangent point
    ST_BAD_GAUSSIAN = 2  # an image Gaussian not finite, not positive definite, or too narrow
    ST_KERNEL = 3  # a pixel kernel's status
    ST_LNL = 4  # ln L not finite, or a Poisson model <= 0 on a counted pixel
    ST_GRADIENT = 5  # the gradient not finite

#: Status codes of :meth:`StampPlan.run`, by name.
STATUS = {"far_side": ST_FAR_SIDE, "bad_gaussian": ST_BAD_GAUSSIAN, "kernel": ST_KERNEL, "lnl": ST_LNL,
          "gradient": ST_GRADIENT}

cdef enum:
    MAX_LEVELS = 8  # levels 0..7 at most (pho._levels.MAX_LEVEL is 4)

# The most Gaussian-pixels (doubles) an exposure keeps between its render and gradient passes (32 MiB):
# the render's exponentials are kept for the gradient pass up to this many, else computed again there.
cdef Py_ssize_t _keep_max = 1 << 22


def keep_max(limit=None) -> int:
    """The most Gaussian-pixels whose exponentials an exposure keeps from its render for its gradient
    pass (beyond it they are computed again); with ``limit``, set it (0 keeps none; for tests) and
    return the previous value."""
    global _keep_max
    previous = _keep_max
    if limit is not None:
        if int(limit) < 0:
            raise ValueError(f"keep_max: limit must be >= 0, got {limit}")
        _keep_max = int(limit)
    return previous

cdef enum:
    SHAPE_Q_PA = 0
    SHAPE_G = 1
    SHAPE_ETA = 2


cdef class _Exposure:
    """Static arrays and buffers of one exposure (built by :class:`StampPlan`)."""
    cdef Py_ssize_t ny, nx, G
    cdef const double[:, ::1] folded, MT
    cdef double off0, off1
    cdef const Py_ssize_t[::1] flux_idx, goff, gsrc, source_index, aptr, acol, vjp_index
    cdef const double[::1] aw
    cdef const double[::1] r2, pcxx, pcxy, pcyy, pamp, px, py
    cdef const double[:, ::1] pF
    cdef const double[:, ::1] data, weight, bg
    cdef const unsigned char[:, ::1] counted
    cdef bint poisson
    cdef double lgamma
    cdef Py_ssize_t sky_n, sky_start
    # buffers
    cdef double[:, ::1] gauss, gk, ggk, gg, kc, img, w
    cdef double[::1] base, abase, totals, colsum, rowsum, part
    cdef double skyg[3]
    cdef Py_ssize_t[::1] kidx
    cdef Py_ssize_t[:, ::1] boxes
    cdef int[::1] orders, st_g, st_row
    cdef double[::1] xs, ys
    cdef double[:, :, ::1] J, T
    cdef double[:, ::1] local
    # coarse levels (pho._levels): level 0 is the pixels; level l's grid is lny[l] x lnx[l] nodes with
    # margins lmy[l], lmx[l], its image and weights at lbuf[loff[l]:], wbuf[loff[l]:]
    cdef int nlev
    cdef Py_ssize_t lmy[MAX_LEVELS]
    cdef Py_ssize_t lny[MAX_LEVELS]
    cdef Py_ssize_t lmx[MAX_LEVELS]
    cdef Py_ssize_t lnx[MAX_LEVELS]
    cdef Py_ssize_t loff[MAX_LEVELS]
    cdef Py_ssize_t lcount[MAX_LEVELS]
    cdef Py_ssize_t lstart[MAX_LEVELS]
    cdef double[::1] lbuf, wbuf, tbuf
    cdef int[::1] lvl
    cdef Py_ssize_t[::1] lidx
    # the render's exponentials exp(-Q/2) of every kept Gaussian's box (row-major, from eoff[kk]), read
    # again by the gradient pass; grown (realloc) when a call needs more, never beyond _keep_max
    cdef double *keep
    cdef Py_ssize_t keep_cap
    cdef Py_ssize_t[::1] eoff

    def __dealloc__(self):
        free(self.keep)


cdef class _Scale:
    """One spline table of a profile (pho.sersic.SersicTable): bicubic coefficients per cell and the
    union columns its components go to."""
    cdef const double[:, :, :, ::1] coef  # (I, J, 16, Mt), p-major
    cdef double n0, dn, u0, du, ln_scale
    cdef Py_ssize_t i_max, j_max, Mt
    cdef const Py_ssize_t[::1] cols


cdef class _Profile:
    """A Sersic profile whose amplitudes are computed here: one table, or several blended over r_h
    bands (pho.sersic.MultiScaleSersic)."""
    cdef list scales
    cdef const double[:, ::1] bands  # (n_bands, 4): r_h low, r_h high, ln(low), ln(high / low)
    cdef Py_ssize_t M


cdef _Profile _make_profile(dict spec):
    cdef _Profile pr = _Profile()
    cdef _Scale sc
    pr.scales = []
    pr.M = int(spec["M"])
    for coef, n0, dn, u0, du, ln_scale, cols in spec["scales"]:
        sc = _Scale()
        sc.coef = np.ascontiguousarray(coef, dtype=np.float64)
        sc.n0, sc.dn, sc.u0, sc.du, sc.ln_scale = float(n0), float(dn), float(u0), float(du), float(ln_scale)
        sc.i_max = sc.coef.shape[0] - 1
        sc.j_max = sc.coef.shape[1] - 1
        sc.Mt = sc.coef.shape[3]
        sc.cols = np.ascontiguousarray(cols, dtype=np.intp)
        if sc.coef.shape[2] != 16 or sc.cols.shape[0] != sc.Mt or (sc.Mt and (np.min(cols) < 0 or np.max(cols) >= pr.M)):
            raise ValueError("StampPlan: inconsistent profile table")
        pr.scales.append(sc)
    pr.bands = np.ascontiguousarray(np.asarray(spec["bands"], dtype=np.float64).reshape(-1, 4))
    if pr.bands.shape[0] != len(pr.scales) - 1:
        raise ValueError("StampPlan: a profile needs one blending band between consecutive scales")
    return pr


cdef void _scale_add(_Scale sc, double n, double rh, double f, double df, double *a, double *da_dn,
                     double *da_drh) noexcept:
    """Add f x (the scale's amplitudes) to a, f x d/dn to da_dn and f x d/drh + df x a to da_drh, in
    the union columns (SersicTable._amplitudes_rows, MultiScaleSersic.amplitudes)."""
    cdef double x = (n - sc.n0) / sc.dn
    cdef double y = (log(rh) - sc.ln_scale - sc.u0) / sc.du
    cdef Py_ssize_t i = <Py_ssize_t>x, j = <Py_ssize_t>(y if y > 0.0 else 0.0), k, m, c
    cdef double t, u, cn, cr, v0, v1, v2
    cdef double tp[4]
    cdef double dtp[4]
    cdef double uq[4]
    cdef double duq[4]
    cdef double w[3][16]
    if i > sc.i_max:
        i = sc.i_max
    if j > sc.j_max:
        j = sc.j_max
    t = x - i
    u = y - j
    tp[0] = 1.0; tp[1] = t; tp[2] = t * t; tp[3] = t * t * t
    dtp[0] = 0.0; dtp[1] = 1.0; dtp[2] = 2 * t; dtp[3] = 3 * t * t
    uq[0] = 1.0; uq[1] = u; uq[2] = u * u; uq[3] = u * u * u
    duq[0] = 0.0; duq[1] = 1.0; duq[2] = 2 * u; duq[3] = 3 * u * u
    cn = 1.0 / sc.dn
    cr = 1.0 / (sc.du * rh)
    for k in range(16):
        w[0][k] = tp[k // 4] * uq[k % 4]
        w[1][k] = dtp[k // 4] * uq[k % 4] * cn
        w[2][k] = tp[k // 4] * duq[k % 4] * cr
    for m in range(sc.Mt):
        v0 = 0.0
        v1 = 0.0
        v2 = 0.0
        for k in range(16):
            v0 += w[0][k] * sc.coef[i, j, k, m]
            v1 += w[1][k] * sc.coef[i, j, k, m]
            v2 += w[2][k] * sc.coef[i, j, k, m]
        c = sc.cols[m]
        a[c] += f * v0
        da_dn[c] += f * v1
        da_drh[c] += f * v2 + df * v0


cdef void _profile_amplitudes(_Profile pr, double n, double rh, double *a, double *da_dn, double *da_drh) noexcept:
    """The profile's (a, da/dn, da/drh) at (n, rh), written to a[0:M] etc. (MultiScaleSersic._weight)."""
    cdef Py_ssize_t b, i = len(pr.scales) - 1, m
    cdef double w = 0.0, dw = 0.0, x, x2
    for m in range(pr.M):
        a[m] = 0.0
        da_dn[m] = 0.0
        da_drh[m] = 0.0
    for b in range(pr.bands.shape[0]):
        if rh < pr.bands[b, 0]:
            i = b
            break
        if rh < pr.bands[b, 1]:
            i = b
            x = (log(rh) - pr.bands[b, 2]) / pr.bands[b, 3]
            if x <= 0.0:
                w, dw = 0.0, 0.0
            elif x >= 1.0:
                w, dw = 1.0, 0.0
            else:
                x2 = x * x
                w = x2 * x * (x * (6.0 * x - 15.0) + 10.0)
                dw = 30.0 * x2 * ((x - 1.0) * (x - 1.0))
            dw = dw / (pr.bands[b, 3] * rh)
            break
    _scale_add(<_Scale>pr.scales[i], n, rh, 1.0 - w, -dw, a, da_dn, da_drh)
    if w > 0:
        _scale_add(<_Scale>pr.scales[i + 1], n, rh, w, dw, a, da_dn, da_drh)


cdef class StampPlan:
    """Everything one likelihood call needs on the cpu backend, allocated once.

    Parameters
    ----------
    sources : dict
        ``sidx`` (S, 6) int: scene indices of ra, dec, shape1, shape2, n, rh per source, in the
        scene model's group order (-1 where unused); ``is_sersic`` (S,) uint8; ``aoff`` (S,) int
        offset of each Sersic's amplitudes in the flat amplitude buffers; ``n_amp`` their length;
        ``groups`` list of (first source, S_g, M_g) of each Sersic group, in order; ``profiles``
        per Sersic group None or its tables (``pho.likelihood._profile_spec``); ``shape_kind``
        0 (q, pa), 1 (g1, g2), 2 (eta); ``deg`` (pi / 180, as pho.exposure); ``n_scene_params``;
        ``n_scene_sources``.
    exposures : list of dict
        Per exposure the arrays of :class:`_Exposure` (see ``pho.likelihood._plan_exposure``).
    nodes, wts : ndarray (PHO_MAX_ORDER + 1, PHO_MAX_ORDER)
        The pixel rule's nodes and weights (pho._reference).
    nsigma, fmax_edges, order_table, fmax_limit
        Box half-width in sigma and integration-order table (pho._reference).
    max_threads : int
        The most threads a call may use (scratch is sized for it).
    """
    cdef Py_ssize_t S, PS, n_scene_sources, max_threads, n_groups
    cdef int shape_kind
    cdef double deg, nsigma, fmax_limit
    cdef const Py_ssize_t[:, ::1] sidx
    cdef const unsigned char[::1] is_sersic
    cdef const Py_ssize_t[::1] aoff
    cdef const Py_ssize_t[:, ::1] groups
    cdef double[::1] amp, dadn, dadrh
    cdef double[:, :, ::1] units, shape
    cdef const double[:, ::1] nodes, wts
    cdef double[:, ::1] scr
    cdef const double[::1] fmax_edges
    cdef const int[::1] order_table
    cdef list exps, profiles
    cdef double sigma_per_node, level_nsigma
    cdef double hw[6]

    def __init__(self, dict sources, list exposures, nodes, wts, double nsigma, fmax_edges, order_table,
                 double fmax_limit, Py_ssize_t max_threads, double sigma_per_node, double level_nsigma,
                 half_weights):
        cdef _Exposure ex
        cdef Py_ssize_t lv, size, tmax, rows
        half = np.ascontiguousarray(half_weights, dtype=np.float64)
        if half.shape[0] != 6:
            raise ValueError("StampPlan: six interpolation weights")
        for lv in range(6):
            self.hw[lv] = half[lv]
        self.sigma_per_node = sigma_per_node
        self.level_nsigma = level_nsigma
        self.sidx = np.ascontiguousarray(sources["sidx"], dtype=np.intp)
        self.S = self.sidx.shape[0]
        self.is_sersic = np.ascontiguousarray(sources["is_sersic"], dtype=np.uint8)
        self.aoff = np.ascontiguousarray(sources["aoff"], dtype=np.intp)
        self.groups = np.ascontiguousarray(np.asarray(sources["groups"], dtype=np.intp).reshape(-1, 3))
        self.n_groups = self.groups.shape[0]
        # per Sersic group, a profile computed here, or None (its amplitudes come from the caller)
        self.profiles = [None if spec is None else _make_profile(spec) for spec in sources["profiles"]]
        if len(self.profiles) != self.n_groups:
            raise ValueError("StampPlan: one profile entry per Sersic group")
        for gi in range(self.n_groups):
            if self.profiles[gi] is not None and (<_Profile>self.profiles[gi]).M != self.groups[gi, 2]:
                raise ValueError("StampPlan: a profile's M does not match its group")
        n_amp = int(sources["n_amp"])
        self.amp = np.zeros(n_amp)
        self.dadn = np.zeros(n_amp)
        self.dadrh = np.zeros(n_amp)
        self.shape_kind = int(sources["shape_kind"])
        self.deg = float(sources["deg"])
        self.PS = int(sources["n_scene_params"])
        self.n_scene_sources = int(sources["n_scene_sources"])
        self.units = np.zeros((self.S, 3, 3))
        self.shape = np.zeros((self.S, 3, 3))
        self.nodes = np.ascontiguousarray(nodes, dtype=np.float64)
        self.wts = np.ascontiguousarray(wts, dtype=np.float64)
        if self.nodes.shape[1] != PHO_MAX_ORDER or self.wts.shape[1] != PHO_MAX_ORDER:
            raise ValueError("StampPlan: the pixel rule's nodes do not match pho_kernel.h")
        self.nsigma = nsigma
        self.fmax_edges = np.ascontiguousarray(fmax_edges, dtype=np.float64)
        self.order_table = np.ascontiguousarray(order_table, dtype=np.intc)
        if self.order_table.shape[0] != self.fmax_edges.shape[0] + 1:
            raise ValueError("StampPlan: inconsistent integration-order table")
        self.fmax_limit = fmax_limit
        self.max_threads = max(1, max_threads)
        self.scr = np.zeros((self.max_threads, 16))
        self.exps = []
        for d in exposures:
            ex = _Exposure()
            ex.ny, ex.nx = int(d["shape"][0]), int(d["shape"][1])
            ex.folded = np.ascontiguousarray(d["folded"], dtype=np.float64)
            ex.off0, ex.off1 = float(d["offset"][0]), float(d["offset"][1])
            ex.MT = np.ascontiguousarray(d["MT"], dtype=np.float64)
            ex.flux_idx = np.ascontiguousarray(d["flux_idx"], dtype=np.intp)
            ex.goff = np.ascontiguousarray(d["goff"], dtype=np.intp)
            ex.gsrc = np.ascontiguousarray(d["gsrc"], dtype=np.intp)
            ex.G = ex.gsrc.shape[0]
            ex.source_index = np.ascontiguousarray(d["source_index"], dtype=np.intp)
            # Gaussian k's profile amplitude is sum_j aw[j] amp[acol[j]], j in aptr[k]:aptr[k + 1]
            # (one term of weight 1, or the fold of narrow components: pho.gaussians.narrow_fold)
            ex.aptr = np.ascontiguousarray(d["aptr"], dtype=np.intp)
            ex.acol = np.ascontiguousarray(d["acol"], dtype=np.intp)
            ex.aw = np.ascontiguousarray(d["aw"], dtype=np.float64)
            ex.vjp_index = np.ascontiguousarray(d["vjp_index"], dtype=np.intp)
            ex.r2 = np.ascontiguousarray(d["r2"], dtype=np.float64)
            ex.pcxx = np.ascontiguousarray(d["pcxx"], dtype=np.float64)
            ex.pcxy = np.ascontiguousarray(d["pcxy"], dtype=np.float64)
            ex.pcyy = np.ascontiguousarray(d["pcyy"], dtype=np.float64)
            ex.pamp = np.ascontiguousarray(d["pamp"], dtype=np.float64)
            ex.px = np.ascontiguousarray(d["px"], dtype=np.float64)
            ex.py = np.ascontiguousarray(d["py"], dtype=np.float64)
            if not (ex.pcxx.shape[0] == ex.pcxy.shape[0] == ex.pcyy.shape[0] == ex.pamp.shape[0] == ex.px.shape[0]
                    == ex.py.shape[0] == ex.G):
                raise ValueError("StampPlan: inconsistent per-Gaussian arrays")
            ex.pF = np.ascontiguousarray(d["pF"], dtype=np.float64)
            ex.data = np.ascontiguousarray(d["data"], dtype=np.float64)
            ex.weight = np.ascontiguousarray(d["weight"], dtype=np.float64)
            ex.bg = np.ascontiguousarray(np.broadcast_to(np.asarray(d["background"], dtype=np.float64),
                                                         (ex.ny, ex.nx)))
            ex.counted = np.ascontiguousarray(d["counted"], dtype=np.uint8)
            ex.poisson = bool(d["poisson"])
            ex.lgamma = float(d["lgamma"])
            ex.sky_n, ex.sky_start = int(d["sky_n"]), int(d["sky_start"])
            if (ex.goff.shape[0] != self.S + 1 or ex.goff[self.S] != ex.G or ex.flux_idx.shape[0] != self.S
                    or ex.vjp_index.shape[0] != 7 * self.S or ex.source_index.shape[0] != ex.G
                    or ex.aptr.shape[0] != ex.G + 1 or ex.aptr[0] != 0 or ex.aptr[ex.G] != ex.acol.shape[0]
                    or ex.aw.shape[0] != ex.acol.shape[0]
                    or (ex.acol.shape[0] > 0 and (np.min(ex.acol) < 0 or np.max(ex.acol) >= max(n_amp, 1)))
                    or np.any(np.diff(ex.aptr) < 0)
                    or ex.pF.shape[0] != ex.G or ex.r2.shape[0] != ex.G
                    or ex.data.shape[0] != ex.ny or ex.data.shape[1] != ex.nx
                    or ex.weight.shape[0] != ex.ny or ex.weight.shape[1] != ex.nx
                    or ex.counted.shape[0] != ex.ny or ex.counted.shape[1] != ex.nx
                    or ex.sky_n not in (0, 1, 3)):
                raise ValueError("StampPlan: inconsistent exposure arrays")
            ex.gauss = np.zeros((ex.G, 6))
            ex.gk = np.zeros((ex.G, 6))
            ex.ggk = np.zeros((ex.G, 6))
            ex.gg = np.zeros((ex.G, 6))
            ex.kc = np.zeros((ex.G, PHO_TAB))
            ex.img = np.zeros((ex.ny, ex.nx))
            ex.w = np.zeros((ex.ny, ex.nx))
            ex.base = np.zeros(ex.G)
            ex.abase = np.zeros(ex.G)
            ex.totals = np.zeros(self.n_scene_sources)
            ex.colsum = np.zeros(ex.nx)
            ex.rowsum = np.zeros(ex.ny)
            ex.part = np.zeros(self.PS + 1)
            ex.kidx = np.zeros(ex.G, dtype=np.intp)
            ex.boxes = np.zeros((ex.G, 4), dtype=np.intp)
            ex.orders = np.zeros(ex.G, dtype=np.intc)
            ex.st_g = np.zeros(ex.G, dtype=np.intc)
            ex.st_row = np.zeros(ex.ny, dtype=np.intc)
            ex.xs = np.zeros(self.S)
            ex.ys = np.zeros(self.S)
            ex.J = np.zeros((self.S, 2, 2))
            ex.T = np.zeros((self.S, 3, 3))
            ex.local = np.zeros((self.S, 7))
            levels = list(d["levels"])  # pho._levels.grid_levels(shape): (m_y, n_y, m_x, n_x) per level
            if not 1 <= len(levels) <= MAX_LEVELS or tuple(levels[0]) != (0, ex.ny, 0, ex.nx):
                raise ValueError("StampPlan: levels must start with the pixels (0, ny, 0, nx)")
            ex.nlev = len(levels)
            size = 0
            tmax = 0
            rows = ex.ny
            for lv in range(ex.nlev):
                ex.lmy[lv], ex.lny[lv], ex.lmx[lv], ex.lnx[lv] = [int(v) for v in levels[lv]]
                ex.loff[lv] = size
                if lv > 0:
                    size += ex.lny[lv] * ex.lnx[lv]
                    tmax = max(tmax, ex.lny[lv] * ex.lnx[lv - 1])
                    rows = max(rows, ex.lny[lv])
            ex.lbuf = np.zeros(max(size, 1))
            ex.wbuf = np.zeros(max(size, 1))
            ex.tbuf = np.zeros(max(tmax, 1))
            ex.st_row = np.zeros(rows, dtype=np.intc)
            ex.lvl = np.zeros(ex.G, dtype=np.intc)
            ex.lidx = np.zeros(ex.G, dtype=np.intp)
            ex.eoff = np.zeros(ex.G, dtype=np.intp)
            self.exps.append(ex)

    def model_image(self, Py_ssize_t i):
        """A copy of the model image (counts) of exposure ``i`` from the last :meth:`run` (for tests)."""
        return np.array((<_Exposure>self.exps[i]).img)

    def run(self, const double[::1] theta not None, list amplitudes not None, double fraction, int workers,
            Py_ssize_t min_work, double[::1] grad, bint want_grad):
        """ln L at ``theta`` and, if ``want_grad``, its gradient written to ``grad`` (P,).

        ``amplitudes`` holds per Sersic group (``sources["groups"]`` order) None where the plan
        computes the profile itself (``sources["profiles"]``), else the profile's
        ``(a, da_dn, da_drh)`` at the group's (n, rh), each (S_g, M_g) or (M_g,) for S_g = 1.
        ``fraction``: ``pho.gaussians.NEGLIGIBLE_FRACTION``; ``workers`` and ``min_work``: the cpu
        backend's ``workers`` and ``min_work_per_thread``.

        Returns
        -------
        (status, lnl) : (int, float)
            status 0 on success, else one of the codes in ``STATUS`` (lnl is then meaningless).
        """
        cdef Py_ssize_t gi, s, m, first, Sg, Mg, i, j, k
        cdef double[:, :] a2, d2, r2
        cdef _Exposure ex
        cdef int status
        cdef double total = 0.0, value = 0.0
        if len(amplitudes) != self.n_groups:
            raise ValueError("StampPlan.run: one amplitude triple per Sersic group")
        if want_grad and grad.shape[0] < self.PS:
            raise ValueError("StampPlan.run: gradient buffer too short")
        for gi in range(self.n_groups):
            first, Sg, Mg = self.groups[gi, 0], self.groups[gi, 1], self.groups[gi, 2]
            if self.profiles[gi] is not None:
                for s in range(Sg):
                    k = self.aoff[first + s]
                    _profile_amplitudes(<_Profile>self.profiles[gi], theta[self.sidx[first + s, 4]],
                                        theta[self.sidx[first + s, 5]], &self.amp[k], &self.dadn[k], &self.dadrh[k])
                continue
            t = amplitudes[gi]
            a2 = _two_d(t[0])
            d2 = _two_d(t[1])
            r2 = _two_d(t[2])
            if a2.shape[0] != Sg or a2.shape[1] != Mg or d2.shape[0] != Sg or d2.shape[1] != Mg \
                    or r2.shape[0] != Sg or r2.shape[1] != Mg:
                raise ValueError("StampPlan.run: amplitude arrays of the wrong shape")
            for s in range(Sg):
                k = self.aoff[first + s]
                for m in range(Mg):
                    self.amp[k + m] = a2[s, m]
                    self.dadn[k + m] = d2[s, m]
                    self.dadrh[k + m] = r2[s, m]
        if workers < 1:
            workers = 1
        if workers > self.max_threads:
            workers = <int>self.max_threads
        if want_grad:
            for k in range(grad.shape[0]):
                grad[k] = 0.0
        with nogil:
            self._sources(theta)
        for i in range(len(self.exps)):
            ex = <_Exposure>self.exps[i]
            with nogil:
                status = self._exposure(ex, theta, fraction, workers, min_work, want_grad, &value)
                if status == 0:
                    total += value
                    if want_grad:
                        for k in range(self.PS):
                            grad[k] += ex.part[k]
                        for k in range(ex.sky_n):
                            grad[ex.sky_start + k] += ex.skyg[k]
            if status != 0:
                return status, 0.0
        if want_grad:
            for k in range(grad.shape[0]):
                if not isfinite(grad[k]):
                    return ST_GRADIENT, total
        return 0, total

    cdef void _sources(self, const double[::1] theta) noexcept nogil:
        """Unit vectors (pho.exposure.unit_vectors) and shape matrices (pho.gaussians._shape_matrices)."""
        cdef Py_ssize_t s
        cdef double a, d, ca, sa, cd, sd, deg = self.deg
        for s in range(self.S):
            a = theta[self.sidx[s, 0]] * deg
            d = theta[self.sidx[s, 1]] * deg
            ca = cos(a)
            sa = sin(a)
            cd = cos(d)
            sd = sin(d)
            self.units[s, 0, 0] = cd * ca
            self.units[s, 0, 1] = cd * sa
            self.units[s, 0, 2] = sd
            self.units[s, 1, 0] = -(cd * sa) * deg
            self.units[s, 1, 1] = (cd * ca) * deg
            self.units[s, 1, 2] = 0.0 * deg
            self.units[s, 2, 0] = (-sd * ca) * deg
            self.units[s, 2, 1] = (-sd * sa) * deg
            self.units[s, 2, 2] = cd * deg
            if self.is_sersic[s]:
                _shape_matrix(theta[self.sidx[s, 2]], theta[self.sidx[s, 3]], self.shape_kind, &self.shape[s, 0, 0])

    cdef int _exposure(self, _Exposure ex, const double[::1] theta, double fraction, int workers,
                       Py_ssize_t min_work, bint want_grad, double *value) noexcept nogil:
        cdef Py_ssize_t s, k, kk, c, d, i, j, G = ex.G, nk, work
        cdef Py_ssize_t ny = ex.ny, nx = ex.nx
        cdef double q[3][3]
        cdef double inv, xy0, xy1, flux, x, y, t0, t1, t2, aa, bb_, cc, iv, bs, fmax, area, amp
        cdef double stamp_pixels = <double>(ny * nx), tot, r, wr, mm, dd, s1, s2, sx, sy
        cdef double p0 = 0.0, p1 = 0.0, p2 = 0.0, xc, yc
        cdef int threads, st, tid, pp, lv, top
        cdef Py_ssize_t stride
        cdef double *wrow
        cdef double *grown
        cdef bint all_kept, use_keep
        # ---- projection (pho.exposure._Astrometry.project_units, degree 1) and T = shape @ MT
        for s in range(self.S):
            for d in range(3):
                for c in range(3):
                    q[d][c] = (self.units[s, d, 0] * ex.folded[0, c] + self.units[s, d, 1] * ex.folded[1, c]
                               + self.units[s, d, 2] * ex.folded[2, c])
            if not (q[0][0] > 0):
                return ST_FAR_SIDE
            inv = 1.0 / q[0][0]
            xy0 = q[0][1] * inv
            xy1 = q[0][2] * inv
            ex.J[s, 0, 0] = (q[1][1] - xy0 * q[1][0]) * inv
            ex.J[s, 1, 0] = (q[1][2] - xy1 * q[1][0]) * inv
            ex.J[s, 0, 1] = (q[2][1] - xy0 * q[2][0]) * inv
            ex.J[s, 1, 1] = (q[2][2] - xy1 * q[2][0]) * inv
            ex.xs[s] = xy0 + ex.off0
            ex.ys[s] = xy1 + ex.off1
            if self.is_sersic[s]:
                for d in range(3):
                    for c in range(3):
                        ex.T[s, d, c] = (self.shape[s, d, 0] * ex.MT[0, c] + self.shape[s, d, 1] * ex.MT[1, c]
                                         + self.shape[s, d, 2] * ex.MT[2, c])
        # ---- image Gaussians (ExposureModel.forward: _point, and pho._render.sersic_gaussians)
        for s in range(self.S):
            flux = theta[ex.flux_idx[s]]
            x = ex.xs[s]
            y = ex.ys[s]
            if self.is_sersic[s]:
                t0 = ex.T[s, 0, 0]
                t1 = ex.T[s, 0, 1]
                t2 = ex.T[s, 0, 2]
                for k in range(ex.goff[s], ex.goff[s + 1]):
                    aa = ex.r2[k] * t0 + ex.pcxx[k]
                    bb_ = ex.r2[k] * t1 + ex.pcxy[k]
                    cc = ex.r2[k] * t2 + ex.pcyy[k]
                    iv = 1.0 / (aa * cc - bb_ * bb_)
                    bs = ex.pamp[k] * sqrt(iv)
                    ex.base[k] = bs
                    amp = 0.0
                    for j in range(ex.aptr[k], ex.aptr[k + 1]):
                        amp = amp + ex.aw[j] * self.amp[ex.acol[j]]
                    ex.abase[k] = amp * bs
                    ex.gauss[k, 0] = flux * ex.abase[k]
                    ex.gauss[k, 1] = x + ex.px[k]
                    ex.gauss[k, 2] = y + ex.py[k]
                    ex.gauss[k, 3] = cc * iv
                    ex.gauss[k, 4] = bb_ * -iv
                    ex.gauss[k, 5] = aa * iv
            else:
                for k in range(ex.goff[s], ex.goff[s + 1]):
                    ex.gauss[k, 0] = flux * ex.pamp[k]
                    ex.gauss[k, 1] = x + ex.px[k]
                    ex.gauss[k, 2] = y + ex.py[k]
                    ex.gauss[k, 3] = ex.pF[k, 0]
                    ex.gauss[k, 4] = ex.pF[k, 1]
                    ex.gauss[k, 5] = ex.pF[k, 2]
        # ---- negligible Gaussians (pho._render.significant_mask) and the kept ones, compacted
        nk = 0
        if fraction > 0:
            for s in range(self.n_scene_sources):
                ex.totals[s] = 0.0
            for k in range(G):
                amp = ex.gauss[k, 0] if ex.gauss[k, 0] >= 0 else -ex.gauss[k, 0]
                area = 6.283185307179586 / sqrt(ex.gauss[k, 3] * ex.gauss[k, 5] - ex.gauss[k, 4] * ex.gauss[k, 4])
                ex.totals[ex.source_index[k]] += amp * area
            for k in range(G):
                amp = ex.gauss[k, 0] if ex.gauss[k, 0] >= 0 else -ex.gauss[k, 0]
                area = 6.283185307179586 / sqrt(ex.gauss[k, 3] * ex.gauss[k, 5] - ex.gauss[k, 4] * ex.gauss[k, 4])
                if amp * (area if area < stamp_pixels else stamp_pixels) >= fraction * ex.totals[ex.source_index[k]]:
                    ex.kidx[nk] = k
                    nk += 1
        else:
            for k in range(G):
                ex.kidx[k] = k
            nk = G
        all_kept = nk == G
        for kk in range(nk):
            k = ex.kidx[kk]
            for c in range(6):
                ex.gk[kk, c] = ex.gauss[k, c]
        # ---- levels (pho._levels): the wide Gaussians go to coarser node grids, in their level's units
        top = 0
        for lv in range(ex.nlev):
            ex.lcount[lv] = 0
        for kk in range(nk):
            lv = _gauss_level(&ex.gk[kk, 0], ex.nlev - 1, self.sigma_per_node)
            ex.lvl[kk] = lv
            ex.lcount[lv] += 1
            if lv > top:
                top = lv
        ex.lstart[0] = 0
        for lv in range(1, ex.nlev):
            ex.lstart[lv] = ex.lstart[lv - 1] + ex.lcount[lv - 1]
        for lv in range(ex.nlev):
            ex.lcount[lv] = 0  # refilled as the cursor of each level's list
        for kk in range(nk):
            lv = ex.lvl[kk]
            ex.lidx[ex.lstart[lv] + ex.lcount[lv]] = kk
            ex.lcount[lv] += 1
            if lv > 0:
                _to_level(&ex.gauss[ex.kidx[kk], 0], lv, <double>ex.lmy[lv], <double>ex.lmx[lv], &ex.gk[kk, 0])
        # ---- boxes, orders (pho._render.boxes_and_orders) on each Gaussian's grid, the narrowness check, threads
        work = 0
        fmax = 0.0
        for kk in range(nk):
            lv = ex.lvl[kk]
            if pho_box_order(&ex.gk[kk, 0], <double>ex.lnx[lv], <double>ex.lny[lv],
                             self.nsigma if lv == 0 else self.level_nsigma, &self.fmax_edges[0],
                             <int>self.fmax_edges.shape[0], &self.order_table[0], &ex.boxes[kk, 0],
                             &ex.orders[kk]) != 0:
                return ST_BAD_GAUSSIAN
            if ex.gk[kk, 3] > fmax:
                fmax = ex.gk[kk, 3]
            if ex.gk[kk, 5] > fmax:
                fmax = ex.gk[kk, 5]
            ex.eoff[kk] = work
            if ex.boxes[kk, 1] >= ex.boxes[kk, 0] and ex.boxes[kk, 3] >= ex.boxes[kk, 2]:
                work += (ex.boxes[kk, 1] - ex.boxes[kk, 0] + 1) * (ex.boxes[kk, 3] - ex.boxes[kk, 2] + 1)
        if fmax > self.fmax_limit:
            return ST_BAD_GAUSSIAN
        # keep the render's exponentials where they fit: the one-thread render takes each box's rows from
        # the previous rows' (pho_render_box_keep), and the gradient pass reads them
        use_keep = work <= _keep_max
        if use_keep and work > ex.keep_cap:
            grown = <double *>realloc(ex.keep, (work + work // 4 + 1024) * sizeof(double))
            if grown == NULL:
                use_keep = False
            else:
                ex.keep = grown
                ex.keep_cap = work + work // 4 + 1024
        if min_work <= 0:
            threads = workers
        else:
            threads = <int>(work // min_work)
            if threads > workers:
                threads = workers
            if threads < 1:
                threads = 1
        # ---- render (pho._render.render_image) on each level, then the levels interpolated, coarsest first
        for i in range(ny):
            for j in range(nx):
                ex.img[i, j] = 0.0
        for i in range(ex.st_row.shape[0]):
            ex.st_row[i] = 0
        if top > 0:
            for k in range(ex.loff[top] + ex.lny[top] * ex.lnx[top]):
                ex.lbuf[k] = 0.0
        for kk in range(nk):
            ex.st_g[kk] = pho_gauss_table(&ex.gk[kk, 0], ex.orders[kk], &self.nodes[0, 0], &self.wts[0, 0],
                                          &ex.kc[kk, 0])
        for lv in range(top + 1):
            if ex.lcount[lv] > 0:
                _render_level(ex, lv, &self.nodes[0, 0], &self.wts[0, 0], threads, use_keep)
        for kk in range(nk):
            if ex.st_g[kk] != 0:
                return ST_KERNEL
        for i in range(ex.st_row.shape[0]):
            if ex.st_row[i] != 0:
                return ST_KERNEL
        for lv in range(top, 0, -1):
            _prolong_add(&ex.lbuf[ex.loff[lv]], ex.lny[lv], ex.lnx[lv], ex.lmy[lv], ex.lmx[lv],
                         _level_image(ex, lv - 1), ex.lny[lv - 1], ex.lnx[lv - 1], ex.lmy[lv - 1], ex.lmx[lv - 1],
                         &ex.tbuf[0], self.hw)
        # ---- model = render + background (+ sky), ln L and d lnL / d m (Likelihood._dlnl_dm)
        if ex.sky_n >= 1:
            p0 = theta[ex.sky_start]
        if ex.sky_n == 3:
            p1 = theta[ex.sky_start + 1]
            p2 = theta[ex.sky_start + 2]
        xc = 0.5 * (nx - 1)
        yc = 0.5 * (ny - 1)
        s1 = 0.0
        s2 = 0.0
        for i in range(ny):
            for j in range(nx):
                mm = ex.img[i, j] + ex.bg[i, j]
                if ex.sky_n == 1:
                    mm = mm + p0
                elif ex.sky_n == 3:
                    mm = mm + ((p0 + p1 * (j - xc)) + p2 * (i - yc))
                ex.img[i, j] = mm
                if not ex.poisson:
                    r = ex.data[i, j] - mm
                    wr = ex.weight[i, j] * r
                    s1 += r * wr
                    ex.w[i, j] = wr
                elif ex.counted[i, j]:
                    if not (mm > 0):
                        return ST_LNL
                    dd = ex.data[i, j]
                    s1 += dd * log(mm)
                    s2 += mm
                    ex.w[i, j] = dd / mm - 1.0
                else:
                    ex.w[i, j] = 0.0
        if ex.poisson:
            value[0] = (s1 - s2) - ex.lgamma
        else:
            value[0] = -0.5 * s1
        if not isfinite(value[0]):
            return ST_LNL
        if not want_grad:
            return 0
        # ---- the levels' weights (the transpose of the interpolation, finest first), then the gradient
        # pass (pho._render.gradient_sums) over the kept Gaussians, each on its level's grid
        for lv in range(1, top + 1):
            _restrict(_level_weights(ex, lv - 1), ex.lny[lv - 1], ex.lnx[lv - 1], ex.lmy[lv - 1], ex.lmx[lv - 1],
                      &ex.wbuf[ex.loff[lv]], ex.lny[lv], ex.lnx[lv], ex.lmy[lv], ex.lmx[lv], &ex.tbuf[0], self.hw)
        for kk in range(nk):
            for c in range(6):
                ex.ggk[kk, c] = 0.0
        if nk > 0:
            for kk in prange(nk, num_threads=threads, schedule="dynamic"):
                if ex.boxes[kk, 0] > ex.boxes[kk, 1]:
                    continue
                tid = threadid()
                for pp in range(6):
                    self.scr[tid, pp] = 0.0
                wrow = _level_weights(ex, ex.lvl[kk])
                stride = ex.lnx[ex.lvl[kk]]
                if use_keep:
                    # the render kept this box's exponentials (pho_render_box_keep on one thread,
                    # pho_render_span_keep row by row on several): the gradient by the box's moments
                    st = pho_gradient_box_kept(&ex.gk[kk, 0], ex.orders[kk], &self.nodes[0, 0], &self.wts[0, 0],
                                               &ex.kc[kk, 0], ex.boxes[kk, 0], ex.boxes[kk, 1], ex.boxes[kk, 2],
                                               ex.boxes[kk, 3], wrow, stride, ex.keep + ex.eoff[kk],
                                               &self.scr[tid, 0])
                    if st != 0:
                        ex.st_g[kk] = st
                else:
                    for i in range(ex.boxes[kk, 2], ex.boxes[kk, 3] + 1):
                        st = pho_gradient_span(&ex.gk[kk, 0], ex.orders[kk], &self.nodes[0, 0], &self.wts[0, 0],
                                               &ex.kc[kk, 0], ex.boxes[kk, 0], ex.boxes[kk, 1],
                                               <double>i - ex.gk[kk, 2], wrow + i * stride, &self.scr[tid, 0])
                        if st != 0:
                            ex.st_g[kk] = st
                for pp in range(6):
                    ex.ggk[kk, pp] = ex.ggk[kk, pp] + self.scr[tid, pp]
        for kk in range(nk):
            if ex.st_g[kk] != 0:
                return ST_KERNEL
        for kk in range(nk):
            if ex.lvl[kk] > 0:
                _chain_from_level(&ex.gauss[ex.kidx[kk], 0], ex.lvl[kk], &ex.ggk[kk, 0])
        for k in range(G):
            for c in range(6):
                ex.gg[k, c] = 0.0
        for kk in range(nk):
            k = ex.kidx[kk]
            for c in range(6):
                ex.gg[k, c] = ex.ggk[kk, c]
        # ---- vector-Jacobian product per source (ExposureModel.vjp / pho._render.sersic_vjp)
        for s in range(self.S):
            _source_vjp(ex, s, self.is_sersic[s], theta[ex.flux_idx[s]], self.dadn, self.dadrh)
        # ---- scatter (np.bincount over vjp_index), then the sky's gradient (Likelihood._sky_gradient)
        for k in range(self.PS + 1):
            ex.part[k] = 0.0
        for s in range(self.S):
            for c in range(7):
                k = ex.vjp_index[7 * s + c]
                if k <= self.PS:
                    ex.part[k] += ex.local[s, c]
        if ex.sky_n:
            sx = 0.0
            for i in range(ny):
                for j in range(nx):
                    sx += ex.w[i, j]
            ex.skyg[0] = sx
        if ex.sky_n == 3:
            for j in range(nx):
                ex.colsum[j] = 0.0
            for i in range(ny):
                ex.rowsum[i] = 0.0
                for j in range(nx):
                    ex.colsum[j] += ex.w[i, j]
                    ex.rowsum[i] += ex.w[i, j]
            sx = 0.0
            for j in range(nx):
                sx += ex.colsum[j] * (j - xc)
            sy = 0.0
            for i in range(ny):
                sy += ex.rowsum[i] * (i - yc)
            ex.skyg[1] = sx
            ex.skyg[2] = sy
        return 0


cdef inline double *_level_image(_Exposure ex, int lv) noexcept nogil:
    """Level ``lv``'s image: the exposure's own for the pixels (level 0), else its slice of lbuf."""
    return &ex.img[0, 0] if lv == 0 else &ex.lbuf[ex.loff[lv]]


cdef inline double *_level_weights(_Exposure ex, int lv) noexcept nogil:
    """Level ``lv``'s weights d lnL / d (node value): the pixels' for level 0, else a slice of wbuf."""
    return &ex.w[0, 0] if lv == 0 else &ex.wbuf[ex.loff[lv]]


cdef int _gauss_level(const double *g, int max_level, double sigma_per_node) noexcept nogil:
    """pho._levels.gaussian_levels for one Gaussian (0 for one that is not positive definite)."""
    cdef double fxx = g[3], fxy = g[4], fyy = g[5], d, lam, s
    cdef int lv, out = 0
    if not (fxx > 0 and fyy > 0 and fxx * fyy - fxy * fxy > 0):
        return 0
    d = fxx - fyy
    lam = 0.5 * (fxx + fyy) + sqrt(0.25 * (d * d) + fxy * fxy)
    for lv in range(1, max_level + 1):
        s = sigma_per_node * <double>(1 << lv)
        if lam * (s * s) <= 1.0:
            out = lv
    return out


cdef void _reduced(const double *g, int lv, double *q) noexcept nogil:
    """pho._levels._reduced for one Gaussian: q = (h, sxx, sxy, syy, axx, ayy, det_in, r)."""
    cdef double h = <double>(1 << lv)
    cdef double delta = (h * h - 1.0) / 12.0
    cdef double fxx = g[3], fxy = g[4], fyy = g[5]
    cdef double det = fxx * fyy - fxy * fxy
    cdef double sxx = fyy / det, sxy = -fxy / det, syy = fxx / det
    cdef double axx = sxx - delta, ayy = syy - delta
    cdef double det_in = axx * ayy - sxy * sxy
    q[0] = h
    q[1] = sxx
    q[2] = sxy
    q[3] = syy
    q[4] = axx
    q[5] = ayy
    q[6] = det_in
    q[7] = sqrt(1.0 / (det * det_in))


cdef void _to_level(const double *g, int lv, double my, double mx, double *out) noexcept nogil:
    """pho._levels.to_level for one Gaussian, written to out[0:6]."""
    cdef double q[8]
    _reduced(g, lv, q)
    cdef double h = q[0], sxy = q[2], axx = q[4], ayy = q[5], det_in = q[6], r = q[7]
    cdef double h2 = h * h
    out[0] = g[0] * r
    out[1] = g[1] / h + mx
    out[2] = g[2] / h + my
    out[3] = h2 * (ayy / det_in)
    out[4] = h2 * (-sxy / det_in)
    out[5] = h2 * (axx / det_in)


cdef void _chain_from_level(const double *g, int lv, double *gc) noexcept nogil:
    """pho._levels.chain_from_level for one Gaussian, in place on its level-unit derivatives gc[0:6]."""
    cdef double q[8]
    _reduced(g, lv, q)
    cdef double h = q[0], sxx = q[1], sxy = q[2], syy = q[3], axx = q[4], ayy = q[5], det_in = q[6], r = q[7]
    cdef double ixx = ayy / det_in, ixy = -sxy / det_in, iyy = axx / det_in
    cdef double mxx = sxx * ixx + sxy * ixy
    cdef double mxy = sxx * ixy + sxy * iyy
    cdef double myy = sxy * ixy + syy * iyy
    cdef double h2 = h * h
    cdef double cxx = h2 * gc[3], cxy = h2 * (0.5 * gc[4]), cyy = h2 * gc[5]
    cdef double pxx = mxx * cxx + mxy * cxy
    cdef double pxy = mxx * cxy + mxy * cyy
    cdef double pyx = mxy * cxx + myy * cxy
    cdef double pyy = mxy * cxy + myy * cyy
    cdef double gxx = pxx * mxx + pxy * mxy
    cdef double gxy = pxx * mxy + pxy * myy
    cdef double gyy = pyx * mxy + pyy * myy
    cdef double k = 0.5 * (gc[0] * (g[0] * r))
    gxx = gxx + k * ((mxx * sxx + mxy * sxy) - sxx)
    gxy = gxy + k * ((mxx * sxy + mxy * syy) - sxy)
    gyy = gyy + k * ((mxy * sxy + myy * syy) - syy)
    gc[0] = gc[0] * r
    gc[1] = gc[1] / h
    gc[2] = gc[2] / h
    gc[3] = gxx
    gc[4] = 2.0 * gxy
    gc[5] = gyy


cdef void _render_level(_Exposure ex, int lv, const double *nodes, const double *wts, int threads,
                        bint use_keep) noexcept nogil:
    """Render level ``lv``'s Gaussians (ex.lidx[lstart:lstart + lcount]) into its image, parallel over rows;
    with ``use_keep``, each Gaussian's exponentials go to ex.keep from ex.eoff[kk] for the gradient pass."""
    cdef Py_ssize_t i, c, kk
    cdef Py_ssize_t rows = ex.lny[lv], stride = ex.lnx[lv], first = ex.lstart[lv], count = ex.lcount[lv]
    cdef double *img = _level_image(ex, lv)
    cdef double *keep
    cdef int st
    if threads == 1 and use_keep:
        # one thread: Gaussian by Gaussian, each box's rows by the recurrence of pho_render_box_keep, its
        # exponentials written in order
        for c in range(first, first + count):
            kk = ex.lidx[c]
            if ex.boxes[kk, 0] > ex.boxes[kk, 1] or ex.boxes[kk, 2] > ex.boxes[kk, 3]:
                continue
            st = pho_render_box_keep(&ex.gk[kk, 0], ex.orders[kk], nodes, wts, &ex.kc[kk, 0], ex.boxes[kk, 0],
                                     ex.boxes[kk, 1], ex.boxes[kk, 2], ex.boxes[kk, 3], img, stride,
                                     ex.keep + ex.eoff[kk])
            if st != 0:
                ex.st_row[ex.boxes[kk, 2]] = st
        return
    for i in prange(rows, num_threads=threads, schedule="dynamic"):
        for c in range(first, first + count):
            kk = ex.lidx[c]
            if ex.boxes[kk, 2] > i or ex.boxes[kk, 3] < i or ex.boxes[kk, 0] > ex.boxes[kk, 1]:
                continue
            keep = NULL
            if use_keep:
                keep = ex.keep + ex.eoff[kk] + (i - ex.boxes[kk, 2]) * (ex.boxes[kk, 1] - ex.boxes[kk, 0] + 1)
            st = pho_render_span_keep(&ex.gk[kk, 0], ex.orders[kk], nodes, wts, &ex.kc[kk, 0], ex.boxes[kk, 0],
                                      ex.boxes[kk, 1], <double>i - ex.gk[kk, 2], img + i * stride, keep)
            if st != 0:
                ex.st_row[i] = st


cdef void _prolong_add(const double *C, Py_ssize_t ny_c, Py_ssize_t nx_c, Py_ssize_t my_c, Py_ssize_t mx_c,
                       double *out, Py_ssize_t ny_o, Py_ssize_t nx_o, Py_ssize_t my_o, Py_ssize_t mx_o,
                       double *tmp, const double *hw) noexcept nogil:
    """out += pho._levels.prolong(C): a level's nodes interpolated to the next finer grid, x then y."""
    cdef Py_ssize_t yc, jo, io, d, j0
    cdef const double *c
    cdef const double *t0
    cdef const double *t1
    cdef const double *t2
    cdef const double *t3
    cdef const double *t4
    cdef const double *t5
    cdef double *o
    for yc in range(ny_c):
        c = C + yc * nx_c
        o = tmp + yc * nx_o
        for jo in range(nx_o):
            d = jo - mx_o + 2 * mx_c
            j0 = d >> 1
            if d & 1:
                o[jo] = (hw[0] * c[j0 - 2] + hw[1] * c[j0 - 1] + hw[2] * c[j0] + hw[3] * c[j0 + 1]
                         + hw[4] * c[j0 + 2] + hw[5] * c[j0 + 3])
            else:
                o[jo] = c[j0]
    for io in range(ny_o):
        d = io - my_o + 2 * my_c
        j0 = d >> 1
        o = out + io * nx_o
        if d & 1:
            t0 = tmp + (j0 - 2) * nx_o
            t1 = t0 + nx_o
            t2 = t1 + nx_o
            t3 = t2 + nx_o
            t4 = t3 + nx_o
            t5 = t4 + nx_o
            for jo in range(nx_o):
                o[jo] = o[jo] + (hw[0] * t0[jo] + hw[1] * t1[jo] + hw[2] * t2[jo] + hw[3] * t3[jo]
                                 + hw[4] * t4[jo] + hw[5] * t5[jo])
        else:
            t0 = tmp + j0 * nx_o
            for jo in range(nx_o):
                o[jo] = o[jo] + t0[jo]


cdef void _restrict(const double *W, Py_ssize_t ny_o, Py_ssize_t nx_o, Py_ssize_t my_o, Py_ssize_t mx_o,
                    double *Wc, Py_ssize_t ny_c, Py_ssize_t nx_c, Py_ssize_t my_c, Py_ssize_t mx_c,
                    double *tmp, const double *hw) noexcept nogil:
    """Wc = pho._levels.restrict(W): the transpose of :func:`_prolong_add` (y, then x)."""
    cdef Py_ssize_t yc, jo, io, d, j0, a, k
    cdef const double *w
    cdef double *t
    cdef double *o
    cdef double v
    for k in range(ny_c * nx_o):
        tmp[k] = 0.0
    for io in range(ny_o):
        d = io - my_o + 2 * my_c
        j0 = d >> 1
        w = W + io * nx_o
        if d & 1:
            for a in range(6):
                t = tmp + (j0 - 2 + a) * nx_o
                for jo in range(nx_o):
                    t[jo] = t[jo] + hw[a] * w[jo]
        else:
            t = tmp + j0 * nx_o
            for jo in range(nx_o):
                t[jo] = t[jo] + w[jo]
    for k in range(ny_c * nx_c):
        Wc[k] = 0.0
    for yc in range(ny_c):
        t = tmp + yc * nx_o
        o = Wc + yc * nx_c
        for jo in range(nx_o):
            d = jo - mx_o + 2 * mx_c
            j0 = d >> 1
            v = t[jo]
            if d & 1:
                for a in range(6):
                    o[j0 - 2 + a] = o[j0 - 2 + a] + hw[a] * v
            else:
                o[j0] = o[j0] + v


cdef inline double[:, :] _two_d(object a):
    """A (S, M) view of an amplitude array given as (S, M) or (M,)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return a[None, :]
    return a


cdef void _source_vjp(_Exposure ex, Py_ssize_t s, bint sersic, double flux, double[::1] dadn,
                      double[::1] dadrh) noexcept nogil:
    cdef Py_ssize_t n, k, j
    cdef double gx = 0.0, gy = 0.0, l0 = 0.0, dn, drh
    cdef double acc[8]
    if not sersic:
        for n in range(ex.goff[s], ex.goff[s + 1]):
            l0 += ex.gg[n, 0] * ex.pamp[n]
            gx += ex.gg[n, 1]
            gy += ex.gg[n, 2]
        ex.local[s, 0] = l0
        ex.local[s, 1] = gx * ex.J[s, 0, 0] + gy * ex.J[s, 1, 0]
        ex.local[s, 2] = gx * ex.J[s, 0, 1] + gy * ex.J[s, 1, 1]
        for n in range(3, 7):
            ex.local[s, n] = 0.0
        return
    for k in range(8):
        acc[k] = 0.0
    for n in range(ex.goff[s], ex.goff[s + 1]):
        dn = 0.0
        drh = 0.0
        for j in range(ex.aptr[n], ex.aptr[n + 1]):
            dn = dn + ex.aw[j] * dadn[ex.acol[j]]
            drh = drh + ex.aw[j] * dadrh[ex.acol[j]]
        pho_vjp_add(&ex.gg[n, 0], &ex.gauss[n, 0], ex.abase[n], ex.base[n], dn, drh, ex.r2[n], acc)
    pho_vjp_finish(acc, &ex.J[s, 0, 0], &ex.T[s, 0, 0], flux, &ex.local[s, 0])


cdef void _shape_matrix(double s1, double s2, int kind, double *out) noexcept nogil:
    """One source's [R, dR/ds1, dR/ds2] x (xx, xy, yy) (pho.gaussians._shape_matrices), row-major (3, 3)."""
    cdef double c2, sn2, q2, p, m, g, u1, u2, k, P, dP, dk, dPj, dkj, e, small, dp
    cdef int j
    cdef double u, one1, one2
    if kind == SHAPE_Q_PA:
        c2 = cos(2.0 * s2)
        sn2 = sin(2.0 * s2)
        q2 = s1 * s1
        p = 0.5 * (1.0 + q2)
        m = 0.5 * (1.0 - q2)
        out[0] = p - m * c2
        out[1] = m * sn2
        out[2] = p + m * c2
        out[3] = s1 * (1.0 + c2)
        out[4] = -s1 * sn2
        out[5] = s1 * (1.0 - c2)
        out[6] = 2.0 * m * sn2
        out[7] = 2.0 * m * c2
        out[8] = -2.0 * m * sn2
        return
    if kind == SHAPE_G:
        g = hypot(s1, s2)
        u1 = s1 / g if g > 0 else 0.0
        u2 = s2 / g if g > 0 else 0.0
        k = 1.0 / ((1.0 + g) * (1.0 + g))
        P = (1.0 + g * g) * k
        dP = 2.0 * k * (g - 1.0) / (1.0 + g)
        dk = -2.0 * k / (1.0 + g)
        out[0] = P - 2.0 * k * s1
        out[1] = 2.0 * k * s2
        out[2] = P + 2.0 * k * s1
        for j in range(1, 3):
            u = u1 if j == 1 else u2
            one1 = 1.0 if j == 1 else 0.0
            one2 = 0.0 if j == 1 else 1.0
            dPj = dP * u
            dkj = dk * u
            out[3 * j + 0] = dPj - 2.0 * dkj * s1 - 2.0 * k * one1
            out[3 * j + 1] = 2.0 * dkj * s2 + 2.0 * k * one2
            out[3 * j + 2] = dPj + 2.0 * dkj * s1 + 2.0 * k * one1
        return
    # conformal shear (pho.gaussians._eta_shape_matrices)
    e = hypot(s1, s2)
    q2 = exp(-2.0 * e)
    p = 0.5 * (1.0 + q2)
    if e < 1e-4:
        k = 1.0 - e + (2.0 / 3.0) * e * e - e * e * e / 3.0
        dk = -1.0 + (4.0 / 3.0) * e - e * e + (8.0 / 15.0) * (e * e * e)
    else:
        k = -expm1(-2.0 * e) / (2.0 * e)
        dk = (q2 - k) / e
    u1 = s1 / e if e > 0 else 0.0
    u2 = s2 / e if e > 0 else 0.0
    out[0] = p - k * s1
    out[1] = k * s2
    out[2] = p + k * s1
    for j in range(1, 3):
        u = u1 if j == 1 else u2
        one1 = 1.0 if j == 1 else 0.0
        one2 = 0.0 if j == 1 else 1.0
        dp = -q2 * u
        dkj = dk * u
        out[3 * j + 0] = dp - dkj * s1 - k * one1
        out[3 * j + 1] = dkj * s2 + k * one2
        out[3 * j + 2] = dp + dkj * s1 + k * one1


def profile_amplitudes(dict spec, double n, double rh_arcsec):
    """(3, M) array: a, da/dn, da/drh of the profile described by ``spec``
    (``pho.likelihood._profile_spec``) at one (n, rh), as a plan computes them (for tests)."""
    cdef _Profile pr = _make_profile(spec)
    cdef double[:, ::1] out = np.zeros((3, pr.M))
    _profile_amplitudes(pr, n, rh_arcsec, &out[0, 0], &out[1, 0], &out[2, 0])
    return np.asarray(out)
