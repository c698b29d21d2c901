"""GPU backend: CuPy ``RawModule`` kernels over the same header as the cpu backend.

``pho/include/pho_kernel.h`` holds all per-pixel arithmetic; the CUDA source below holds only the
loops: one thread per pixel row for ``render`` (each thread owns its row), one thread per Gaussian
for ``gradient`` (each thread owns its six sums), so, as on the CPU, there are no atomics and the
result does not depend on scheduling. Integer boxes and integration orders come from
:mod:`pho._reference`, exactly as for the cpu backend.

CuPy is optional and imported only when the backend is created. This module can be imported
without CuPy (the tests compile :data:`CUDA_SOURCE` with ``nvcc -ptx`` where nvcc exists).

Status: written against the CuPy ``RawModule`` API and compile-checked with nvcc; it has not run
on a GPU in this project's CI (no GPU there). ``tests/test_backends.py`` runs it against the
reference wherever CuPy and a device are present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _levels
from . import _reference as ref
from .errors import PhoBackendError

__all__ = ["GpuBackend", "CUDA_SOURCE", "INCLUDE_DIR"]

#: Folder holding pho_kernel.h (shipped as package data).
INCLUDE_DIR = Path(__file__).resolve().parent / "include"

#: The CUDA driver: loops, threads and memory only.
CUDA_SOURCE = r"""
#include "pho_kernel.h"

extern "C" __global__ void pho_tables(const double *g, const int *orders, const double *nodes,
                                      const double *wts, double *tab, int *status, int G)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= G) return;
    status[k] = pho_gauss_table(g + 6 * (long)k, orders[k], nodes, wts, tab + (long)k * PHO_TAB);
}

extern "C" __global__ void pho_render_rows(const double *g, const long long *boxes, const int *orders,
                                           const double *nodes, const double *wts, const double *tab,
                                           double *img, int *status, int G, int ny, int nx)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ny) return;
    int st = 0;
    for (int k = 0; k < G; k++) {
        const long long *b = boxes + 4 * (long)k;
        if (b[2] > i || b[3] < i || b[0] > b[1]) continue;
        int s = pho_render_span(g + 6 * (long)k, orders[k], nodes, wts, tab + (long)k * PHO_TAB, b[0], b[1],
                                (double)i - g[6 * (long)k + 2], img + (long)i * nx);
        if (s) st = s;
    }
    status[i] = st;
}

extern "C" __global__ void pho_gradient_gaussians(const double *g, const long long *boxes, const int *orders,
                                                  const double *nodes, const double *wts, const double *tab,
                                                  const double *w, double *out, int *status, int G, int nx)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= G) return;
    const long long *b = boxes + 4 * (long)k;
    double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int st = 0;
    if (b[0] <= b[1]) {
        for (long long i = b[2]; i <= b[3]; i++) {
            int s = pho_gradient_span(g + 6 * (long)k, orders[k], nodes, wts, tab + (long)k * PHO_TAB, b[0], b[1],
                                      (double)i - g[6 * (long)k + 2], w + i * nx, acc);
            if (s) st = s;
        }
    }
    for (int p = 0; p < 6; p++) out[6 * (long)k + p] = acc[p];
    status[k] = st;
}
"""

_THREADS = 128
_MODULE = None


def _module(cp):
    global _MODULE
    if _MODULE is None:
        _MODULE = cp.RawModule(code=CUDA_SOURCE, options=(f"-I{INCLUDE_DIR}",))
    return _MODULE


class GpuBackend:
    """CuPy kernels (one CUDA device). ``workers`` is accepted and ignored."""

    name = "gpu"

    def __init__(self, workers: int | None = None):
        try:
            import cupy as cp
        except ImportError as exc:
            raise PhoBackendError(
                f"backend='gpu' needs CuPy and a CUDA device ({exc}); install cupy matching your CUDA "
                f"version, or use backend='cpu'"
            ) from exc
        try:
            n_dev = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - CuPy raises its own runtime errors here
            raise PhoBackendError(f"backend='gpu': CuPy found no usable CUDA device ({exc}); use backend='cpu'") from exc
        if n_dev < 1:
            raise PhoBackendError("backend='gpu': no CUDA device is visible; use backend='cpu'")
        self._cp = cp
        self.workers = 1
        mod = _module(cp)
        self._k_tab = mod.get_function("pho_tables")
        self._k_render = mod.get_function("pho_render_rows")
        self._k_grad = mod.get_function("pho_gradient_gaussians")
        self._nodes = cp.asarray(np.ascontiguousarray(ref._NODES))
        self._wts = cp.asarray(np.ascontiguousarray(ref._WEIGHTS))

    def _device_inputs(self, gaussians, shape, nsigma=None):
        cp = self._cp
        g = ref.check_gaussians(gaussians)
        boxes = np.ascontiguousarray(ref.pixel_boxes(g, shape, nsigma), dtype=np.int64)
        orders = np.ascontiguousarray(ref.integration_orders(g), dtype=np.int32)
        G = len(g)
        dg, db, do = cp.asarray(g), cp.asarray(boxes), cp.asarray(orders)
        tab = cp.zeros((max(G, 1), _tab_len()), dtype=cp.float64)
        st = cp.zeros(max(G, 1), dtype=cp.int32)
        if G:
            self._k_tab(((G + _THREADS - 1) // _THREADS,), (_THREADS,),
                        (dg, do, self._nodes, self._wts, tab, st, np.int32(G)))
        return G, dg, db, do, tab, st

    def render(self, gaussians, shape) -> np.ndarray:
        """Model image ``(ny, nx)`` float64, wide Gaussians on coarse grids (:func:`pho._levels.render`;
        the kernels on the device, the interpolation between levels on the host)."""
        g = ref.check_gaussians(gaussians)
        return _levels.render(self._render_pixels, g, ref.check_shape(shape), _levels.MAX_LEVEL)

    def gradient(self, gaussians, weights) -> np.ndarray:
        """``(G, 6)`` sums over pixels of ``weights * dI/d column`` of :meth:`render`'s model."""
        from ._backends import _check_weights

        g = ref.check_gaussians(gaussians)
        return _levels.gradient(self._gradient_pixels, g, _check_weights(weights), _levels.MAX_LEVEL)

    def _render_pixels(self, gaussians, shape, nsigma=None) -> np.ndarray:
        """Every Gaussian on every pixel of its box (computed on the device, returned on the host)."""
        cp = self._cp
        ny, nx = ref.check_shape(shape)
        G, dg, db, do, tab, st = self._device_inputs(gaussians, (ny, nx), nsigma)
        img = cp.zeros((ny, nx), dtype=cp.float64)
        if G and ny and nx:
            st_rows = cp.zeros(ny, dtype=cp.int32)
            self._k_render(((ny + _THREADS - 1) // _THREADS,), (_THREADS,),
                           (dg, db, do, self._nodes, self._wts, tab, img, st_rows, np.int32(G), np.int32(ny), np.int32(nx)))
            _raise_status(max(int(st.max()), int(st_rows.max())), "render")
        return cp.asnumpy(img)

    def _gradient_pixels(self, gaussians, weights, nsigma=None) -> np.ndarray:
        """The gradient kernel alone: ``(G, 6)`` sums over pixels of ``weights * dI/d column``."""
        cp = self._cp
        from ._backends import _check_weights

        w = _check_weights(weights)
        G, dg, db, do, tab, st = self._device_inputs(gaussians, w.shape, nsigma)
        out = cp.zeros((G, 6), dtype=cp.float64)
        if G and w.size:
            st_g = cp.zeros(G, dtype=cp.int32)
            self._k_grad(((G + _THREADS - 1) // _THREADS,), (_THREADS,),
                         (dg, db, do, self._nodes, self._wts, tab, cp.asarray(w), out, st_g, np.int32(G),
                          np.int32(w.shape[1])))
            _raise_status(max(int(st.max()), int(st_g.max())), "gradient")
        return cp.asnumpy(out)


def _tab_len() -> int:
    """PHO_TAB of pho_kernel.h: 4 + MAX_ORDER^2 + 2 MAX_ORDER doubles per Gaussian."""
    return 4 + ref.MAX_ORDER * ref.MAX_ORDER + 2 * ref.MAX_ORDER


def _raise_status(status: int, what: str) -> None:
    if status != 0:
        raise PhoBackendError(
            f"the gpu {what} kernel returned status {status} (an integration order outside 0..{ref.MAX_ORDER}); "
            f"this is a bug in pho, please report it with the Gaussians that caused it"
        )
