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


cdef extern from "pho_kernel.h":
    int PHO_SEG
    int PHO_MAX_ORDER
    int PHO_TAB
    int pho_gauss_table(const double *gs, int order, const double *nodes, const double *wts,
                        double *tab) noexcept nogil
    int pho_render_segment(const double *gs, int order, const double *nodes, const double *wts,
                           const double *tab, double dx0, double dy, int n, double *out) noexcept nogil
    int pho_gradient_segment(const double *gs, int order, const double *nodes, const double *wts,
                             const double *tab, double dx0, double dy, int n, const double *w,
                             double *acc) noexcept nogil


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
    cdef Py_ssize_t i, k, js, n, jhi
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
                js = boxes[k, 0]
                jhi = boxes[k, 1]
                while js <= jhi:
                    n = jhi - js + 1
                    if n > PHO_SEG:
                        n = PHO_SEG
                    st = pho_render_segment(&gaussians[k, 0], orders[k], &nodes[0, 0], &wts[0, 0],
                                            &kc[k, 0], <double>js - gaussians[k, 1],
                                            <double>i - gaussians[k, 2], <int>n, &img[i, js])
                    if st != 0:
                        st_row[i] = st
                    js = js + n
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
    cdef Py_ssize_t i, k, js, n, jhi
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
                js = boxes[k, 0]
                jhi = boxes[k, 1]
                while js <= jhi:
                    n = jhi - js + 1
                    if n > PHO_SEG:
                        n = PHO_SEG
                    st = pho_gradient_segment(&gaussians[k, 0], orders[k], &nodes[0, 0], &wts[0, 0],
                                              &kc[k, 0], <double>js - gaussians[k, 1],
                                              <double>i - gaussians[k, 2], <int>n, &weights[i, js],
                                              &scr[tid, 0])
                    if st != 0:
                        st_g[k] = st
                    js = js + n
            for p in range(6):
                out[k, p] = out[k, p] + scr[tid, p]
    for k in range(G):
        if st_g[k] != 0:
            return st_g[k]
    return 0
