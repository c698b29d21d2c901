# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels of pho (private; use pho.render, pho.Likelihood or pho._backends.get_backend("cpu")).

Loops, threads and memory only: the per-pixel arithmetic is in pho/include/pho_kernel.h, shared with
the GPU backend. The wrappers in pho._backends validate the inputs and compute the integer pixel
boxes and integration orders (pho._reference) that these kernels are given; the kernels check
nothing and return an int status (0 = success).

Render runs in parallel over pixel rows, the gradient in parallel over Gaussians; each thread owns
what it writes and sums in a fixed order, so results are bit-identical for any thread count.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport fabs, sqrt

cdef extern from *:
    """
    #if PHO_HAVE_OPENMP
    #include <omp.h>
    static int pho_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int pho_max_threads(void) { return 1; }
    #endif
    """
    int pho_max_threads() nogil
    int PHO_HAVE_OPENMP


from pho._kernel cimport (PHO_MAX_ORDER, PHO_TAB, pho_box_order, pho_gauss_table, pho_gradient_span,
                          pho_render_span, pho_vjp_add, pho_vjp_finish)


def openmp_info():
    """Return (built_with_openmp, max_threads) of the compiled extension."""
    return bool(PHO_HAVE_OPENMP), int(pho_max_threads())


if not PHO_HAVE_OPENMP:
    from .errors import PhoPerformanceWarning, warn as _warn

    _warn(
        "pho's compiled kernels were built without OpenMP and will run on one thread; rebuild with a "
        "compiler that supports -fopenmp (e.g. gcc) for multi-core speed",
        PhoPerformanceWarning,
    )


cdef int _tables(const double[:, ::1] g, const int[::1] orders, const double[:, ::1] nodes,
                 const double[:, ::1] wts, double[:, ::1] tab, int[::1] st) noexcept nogil:
    """Per-Gaussian constants (pho_gauss_table), serially (a few exp per Gaussian; one parallel
    region fewer per call)."""
    cdef Py_ssize_t k
    for k in range(g.shape[0]):
        st[k] = pho_gauss_table(&g[k, 0], orders[k], &nodes[0, 0], &wts[0, 0], &tab[k, 0])
    return 0


def render_image(const double[:, ::1] gaussians not None, const Py_ssize_t[:, ::1] boxes not None,
                 const int[::1] orders not None, const double[:, ::1] nodes not None,
                 const double[:, ::1] wts not None, double[:, ::1] img not None, int nthreads):
    """Add every Gaussian, integrated over the pixels of its box, into ``img`` (ny, nx).

    The caller guarantees: gaussians (G, 6) finite with positive-definite F; boxes (G, 4) int64
    ``j_lo, j_hi, i_lo, i_hi`` clipped to the image (empty when lo > hi); orders (G,) in
    {0, 1..PHO_MAX_ORDER}; nodes and wts (PHO_MAX_ORDER + 1, PHO_MAX_ORDER); nthreads >= 1.

    Returns
    -------
    status : int
        0 on success, else the first nonzero status of the per-segment kernel.
    """
    cdef Py_ssize_t G = gaussians.shape[0]
    cdef Py_ssize_t ny = img.shape[0]
    cdef Py_ssize_t i, k
    cdef int status = 0, st
    cdef double[:, ::1] kc
    cdef int[::1] st_row, st_g
    import numpy as np
    if G == 0 or ny == 0 or img.shape[1] == 0:
        return 0
    if nodes.shape[1] != PHO_MAX_ORDER or wts.shape[1] != PHO_MAX_ORDER:
        return 2
    kc = np.zeros((G, PHO_TAB))
    st_row = np.zeros(ny, dtype=np.intc)
    st_g = np.zeros(G, dtype=np.intc)
    with nogil:
        _tables(gaussians, orders, nodes, wts, kc, st_g)
        for i in prange(ny, num_threads=nthreads, schedule="dynamic"):
            for k in range(G):
                if boxes[k, 2] > i or boxes[k, 3] < i or boxes[k, 0] > boxes[k, 1]:
                    continue
                st = pho_render_span(&gaussians[k, 0], orders[k], &nodes[0, 0], &wts[0, 0], &kc[k, 0],
                                     boxes[k, 0], boxes[k, 1], <double>i - gaussians[k, 2], &img[i, 0])
                if st != 0:
                    st_row[i] = st
    for k in range(G):
        if st_g[k] != 0:
            return st_g[k]
    for i in range(ny):
        if st_row[i] != 0:
            return st_row[i]
    return status


def gradient_sums(const double[:, ::1] gaussians not None, const Py_ssize_t[:, ::1] boxes not None,
                  const int[::1] orders not None, const double[:, ::1] nodes not None,
                  const double[:, ::1] wts not None, const double[:, ::1] weights not None,
                  double[:, ::1] out not None, int nthreads):
    """Add to ``out[g, :]`` (G, 6) the sums over pixels of ``weights * dI/d(A, x0, y0, Fxx, Fxy, Fyy)``.

    Same guarantees as :func:`render_image`; ``weights`` (ny, nx) finite; ``out`` zeroed by the caller.

    Returns
    -------
    status : int
        0 on success, else the first nonzero status of the per-segment kernel.
    """
    cdef Py_ssize_t G = gaussians.shape[0]
    cdef Py_ssize_t i, k
    cdef int st
    cdef double[:, ::1] kc, scr
    cdef int[::1] st_g
    cdef int tid, p
    import numpy as np
    if G == 0 or weights.shape[0] == 0 or weights.shape[1] == 0:
        return 0
    if nodes.shape[1] != PHO_MAX_ORDER or wts.shape[1] != PHO_MAX_ORDER:
        return 2
    kc = np.zeros((G, PHO_TAB))
    st_g = np.zeros(G, dtype=np.intc)
    # per-thread accumulators, 16 doubles (two cache lines) apart, so that threads working on
    # neighbouring Gaussians never write to the same cache line while they sum
    scr = np.zeros((nthreads, 16))
    with nogil:
        for k in prange(G, num_threads=nthreads, schedule="dynamic"):
            if boxes[k, 0] > boxes[k, 1]:
                continue
            st_g[k] = pho_gauss_table(&gaussians[k, 0], orders[k], &nodes[0, 0], &wts[0, 0], &kc[k, 0])
            tid = threadid()
            for p in range(6):
                scr[tid, p] = 0.0
            for i in range(boxes[k, 2], boxes[k, 3] + 1):
                st = pho_gradient_span(&gaussians[k, 0], orders[k], &nodes[0, 0], &wts[0, 0], &kc[k, 0],
                                       boxes[k, 0], boxes[k, 1], <double>i - gaussians[k, 2], &weights[i, 0],
                                       &scr[tid, 0])
                if st != 0:
                    st_g[k] = st
            for p in range(6):
                out[k, p] = out[k, p] + scr[tid, p]
    for k in range(G):
        if st_g[k] != 0:
            return st_g[k]
    return 0




def boxes_and_orders(const double[:, ::1] gaussians not None, Py_ssize_t ny, Py_ssize_t nx,
                     double nsigma, const double[::1] fmax_edges not None,
                     const int[::1] order_table not None, Py_ssize_t[:, ::1] boxes not None,
                     int[::1] orders not None):
    """Check the Gaussians and fill their pixel boxes and integration orders, in one pass.

    The compiled equivalent of ``pho._reference.check_gaussians``, ``pixel_boxes`` and
    ``integration_orders`` (same integers; ``order_table`` has ``len(fmax_edges) + 1`` entries).

    Returns
    -------
    bad : int
        -1 if every Gaussian is finite with a positive-definite F, else the index of the first
        that is not (the caller raises the reference check's error for it).
    """
    cdef Py_ssize_t G = gaussians.shape[0], k, bad = -1
    cdef int n_edges = <int>fmax_edges.shape[0]
    if order_table.shape[0] != n_edges + 1 or boxes.shape[0] != G or boxes.shape[1] != 4 \
            or orders.shape[0] != G or (G and gaussians.shape[1] != 6):
        raise ValueError("boxes_and_orders: inconsistent array shapes")
    with nogil:
        for k in range(G):
            if pho_box_order(&gaussians[k, 0], <double>nx, <double>ny, nsigma, &fmax_edges[0], n_edges,
                             &order_table[0], &boxes[k, 0], &orders[k]) != 0:
                bad = k
                break
    return bad


def sersic_gaussians(const double[::1] flux not None, const double[::1] x not None,
                     const double[::1] y not None, const double[:, ::1] t0 not None,
                     const double[:, ::1] amps not None, const double[::1] r2 not None,
                     const double[::1] cxx not None, const double[::1] cxy not None,
                     const double[::1] cyy not None, const double[::1] amp not None,
                     const double[::1] px not None, const double[::1] py not None,
                     const Py_ssize_t[::1] m_index not None, double[:, :, ::1] out not None,
                     double[:, ::1] base not None, double[:, ::1] abase not None):
    """Image Gaussians of S Sersic sources in one exposure: the loop of ``ExposureModel.forward``.

    For source s and component n (profile radius ``m_index[n]`` convolved with a PSF Gaussian),
    the covariance is ``r2[n] * T(s) + C_psf[n]`` with ``T(s) = t0[s] = (Txx, Txy, Tyy)``;
    ``base = amp / sqrt(det C)``, ``abase = amps[s, m_index[n]] * base``, and ``out[s, n]`` =
    (flux abase, x + px, y + py, Cyy/det, -Cxy/det, Cxx/det).
    """
    cdef Py_ssize_t S = out.shape[0], N = out.shape[1], s, n
    cdef double a, b, c, inv, bs
    if (flux.shape[0] != S or x.shape[0] != S or y.shape[0] != S or t0.shape[0] != S or t0.shape[1] < 3
            or amps.shape[0] != S or out.shape[2] != 6 or base.shape[0] != S or base.shape[1] != N
            or abase.shape[0] != S or abase.shape[1] != N):
        raise ValueError("sersic_gaussians: inconsistent source array shapes")
    if (r2.shape[0] != N or cxx.shape[0] != N or cxy.shape[0] != N or cyy.shape[0] != N
            or amp.shape[0] != N or px.shape[0] != N or py.shape[0] != N or m_index.shape[0] != N):
        raise ValueError("sersic_gaussians: inconsistent component array shapes")
    for n in range(N):
        if m_index[n] < 0 or m_index[n] >= amps.shape[1]:
            raise ValueError("sersic_gaussians: m_index out of range")
    with nogil:
        for s in range(S):
            for n in range(N):
                a = r2[n] * t0[s, 0] + cxx[n]
                b = r2[n] * t0[s, 1] + cxy[n]
                c = r2[n] * t0[s, 2] + cyy[n]
                inv = 1.0 / (a * c - b * b)
                bs = amp[n] * sqrt(inv)
                base[s, n] = bs
                abase[s, n] = amps[s, m_index[n]] * bs
                out[s, n, 0] = flux[s] * abase[s, n]
                out[s, n, 1] = x[s] + px[n]
                out[s, n, 2] = y[s] + py[n]
                out[s, n, 3] = c * inv
                out[s, n, 4] = b * -inv
                out[s, n, 5] = a * inv


def sersic_vjp(const double[:, :, ::1] gg not None, const double[::1] flux not None,
               const double[:, :, ::1] T not None, const double[:, ::1] base not None,
               const double[:, ::1] abase not None, const double[:, :, ::1] gauss not None,
               const double[:, :, ::1] J not None, const double[:, :, ::1] damps not None,
               const double[::1] r2 not None, const Py_ssize_t[::1] m_index not None,
               double[:, ::1] local not None):
    """d lnL / d (local parameters) of S Sersic sources from their image Gaussians' gradient
    (the NumPy expressions of ``ExposureModel.vjp`` in one loop; equal to rounding).

    gg (S, N, 6): d lnL / d column of each image Gaussian; flux (S,); T (S, 3, 3) the exposure's
    shape matrices and their derivatives; base, abase (S, N) from :func:`sersic_gaussians`; gauss
    (S, N, 6) the image Gaussians; J (S, 2, 2) d(x, y)/d(ra, dec); damps (S, M, 2) d amplitude /
    d(n, rh); r2 (N,) squared profile radii; m_index (N,) profile component of each Gaussian.
    Writes local (S, 7): flux, ra, dec, shape 1, shape 2, n, rh.
    """
    cdef Py_ssize_t S = gg.shape[0], N = gg.shape[1], M = damps.shape[1], s, n, m, k
    cdef double acc[8]
    if (gg.shape[2] != 6 or flux.shape[0] != S or T.shape[0] != S or T.shape[1] != 3 or T.shape[2] != 3
            or base.shape[0] != S or base.shape[1] != N or abase.shape[0] != S or abase.shape[1] != N
            or gauss.shape[0] != S or gauss.shape[1] != N or gauss.shape[2] != 6 or J.shape[0] != S
            or J.shape[1] != 2 or J.shape[2] != 2 or damps.shape[0] != S or damps.shape[2] != 2
            or r2.shape[0] != N or m_index.shape[0] != N or local.shape[0] != S or local.shape[1] != 7):
        raise ValueError("sersic_vjp: inconsistent array shapes")
    for n in range(N):
        if m_index[n] < 0 or m_index[n] >= M:
            raise ValueError("sersic_vjp: m_index out of range")
    with nogil:
        for s in range(S):
            for k in range(8):
                acc[k] = 0.0
            for n in range(N):
                m = m_index[n]
                pho_vjp_add(&gg[s, n, 0], &gauss[s, n, 0], abase[s, n], base[s, n], damps[s, m, 0], damps[s, m, 1],
                            r2[n], acc)
            pho_vjp_finish(acc, &J[s, 0, 0], &T[s, 0, 0], flux[s], &local[s, 0])
    return 0


def significant_mask(const double[:, ::1] gaussians not None, const Py_ssize_t[::1] source_index not None,
                     double[::1] totals not None, double stamp_pixels, double fraction,
                     unsigned char[::1] keep not None):
    """The test of ``ExposureModel.significant`` in one loop: keep[k] = 1 when
    ``|A| min(stamp_pixels, 2 pi / sqrt(det F)) >= fraction * total of its source``, the total being
    ``sum |A| 2 pi / sqrt(det F)`` over the source's Gaussians (``totals`` (S,) is scratch,
    overwritten). Returns the number kept."""
    cdef Py_ssize_t G = gaussians.shape[0], S = totals.shape[0], k, s, n_keep = 0
    cdef double amp, area, bound
    if gaussians.shape[1] != 6 or source_index.shape[0] != G or keep.shape[0] != G:
        raise ValueError("significant_mask: inconsistent array shapes")
    for k in range(G):
        if source_index[k] < 0 or source_index[k] >= S:
            raise ValueError("significant_mask: source_index out of range")
    with nogil:
        for s in range(S):
            totals[s] = 0.0
        for k in range(G):
            amp = fabs(gaussians[k, 0])
            area = 6.283185307179586 / sqrt(gaussians[k, 3] * gaussians[k, 5] - gaussians[k, 4] * gaussians[k, 4])
            totals[source_index[k]] += amp * area
        for k in range(G):
            amp = fabs(gaussians[k, 0])
            area = 6.283185307179586 / sqrt(gaussians[k, 3] * gaussians[k, 5] - gaussians[k, 4] * gaussians[k, 4])
            bound = amp * (area if area < stamp_pixels else stamp_pixels)
            keep[k] = bound >= fraction * totals[source_index[k]]
            n_keep += keep[k]
    return n_keep
