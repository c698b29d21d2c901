# cython: language_level=3
"""Compiled kernels of pho (private; use pho.render and pho.Likelihood)."""

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


def openmp_info():
    """Return (built_with_openmp, max_threads) of the compiled extension."""
    return bool(PHO_HAVE_OPENMP), int(pho_max_threads())
