"""Pixel backends: one interface, three implementations of the same integration rule.

``get_backend(name, workers=None)`` returns an object with

- ``render(gaussians (G, 6), shape (ny, nx)) -> image (ny, nx)``
- ``gradient(gaussians (G, 6), weights (ny, nx)) -> (G, 6)``: sum over pixels of
  ``weights * dI / d column``, columns ``A, x0, y0, Fxx, Fxy, Fyy``, ``A`` independent of F.

Names: ``"reference"`` (NumPy, :mod:`pho._reference`, the specification), ``"cpu"`` (Cython +
OpenMP, :mod:`pho._render`), ``"gpu"`` (CuPy, :mod:`pho._cuda`). The per-Gaussian integration
order and the integer pixel boxes are computed here once, by :mod:`pho._reference`, and handed
to every kernel, so all backends make the same decisions bit for bit.
"""

from __future__ import annotations

import os

import numpy as np

from . import _levels
from . import _reference as ref
from .errors import PhoBackendError, PhoValueError

__all__ = ["BACKEND_NAMES", "get_backend", "available_backends", "available_cores", "resolve_workers"]

# OpenMP threads that wait actively (spin) at the end of each parallel region steal the core that a
# preempted team-mate needs whenever other processes share the machine (a dynesty pool, a second
# fit, a busy CI box): measured on 2 shared cores, 2 threads took 20-30 ms per render + gradient
# instead of 0.6 ms. pho runs many short regions, so waiting threads sleep instead unless the user
# chose otherwise. This must be set before the OpenMP runtime starts (the first import of pho._render).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: All backend names pho knows, in order of preference for speed (fastest last).
BACKEND_NAMES = ("reference", "cpu", "gpu")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """The number of threads to use: ``workers`` if given, else ``OMP_NUM_THREADS``, else all cores.

    Raises
    ------
    PhoValueError
        If ``workers`` (or ``OMP_NUM_THREADS``) is not a positive integer.
    """
    if workers is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if env:
            try:
                workers = int(env)
            except ValueError:
                raise PhoValueError(
                    f"OMP_NUM_THREADS={env!r} is not a positive integer; set it to e.g. 2 or unset it"
                ) from None
        else:
            workers = available_cores()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise PhoValueError(f"workers={workers!r} must be a positive integer (number of threads) or None for all cores")
    return int(workers)


def _check_weights(weights) -> np.ndarray:
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise PhoValueError(f"weights must be a 2-d image of shape (ny, nx); got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise PhoValueError(
            "weights hold NaN or infinite values; set masked pixels to 0 (their weight) rather than NaN"
        )
    return w


class ReferenceBackend:
    """The NumPy specification (slow). ``workers`` is accepted and ignored."""

    name = "reference"

    def __init__(self, workers: int | None = None):
        self.workers = 1

    def render(self, gaussians, shape) -> np.ndarray:
        """Model image ``(ny, nx)``: :func:`pho._reference.render`, wide Gaussians on coarse grids
        (:func:`pho._levels.render`)."""
        g = ref.check_gaussians(gaussians)
        return _levels.render(ref.render, g, ref.check_shape(shape), _levels.MAX_LEVEL)

    def gradient(self, gaussians, weights) -> np.ndarray:
        """``(G, 6)`` weighted derivative sums of :meth:`render`'s model (:func:`pho._levels.gradient`)."""
        g = ref.check_gaussians(gaussians)
        return _levels.gradient(ref.gradient, g, _check_weights(weights), _levels.MAX_LEVEL)


#: Gaussian-pixels (pixels inside the Gaussians' boxes, summed) per thread below which the cpu
#: backend runs a call on fewer threads than it may use: waking a second thread costs about as
#: much as 0.1-0.2 million Gaussian-pixels of work (measured with ``tools/bench_threads.py``: on
#: 2 cores, 2 threads were 0.3-0.95x as fast as 1 below 150,000 Gaussian-pixels and 1.3-1.8x
#: above 450,000). Results do not depend on the thread count, so this changes only the speed.
MIN_WORK_PER_THREAD = 150_000


class CpuBackend:
    """Cython + OpenMP kernels (:mod:`pho._render`), results independent of the thread count.

    ``workers`` is the most threads a call uses; a call with less than ``min_work_per_thread``
    (default ``MIN_WORK_PER_THREAD``) Gaussian-pixels per thread uses fewer (one for small
    stamps). Set ``min_work_per_thread = 0`` to always use ``workers`` threads.
    """

    name = "cpu"
    min_work_per_thread = MIN_WORK_PER_THREAD

    def __init__(self, workers: int | None = None):
        try:
            from . import _render
        except ImportError as exc:
            raise PhoBackendError(
                f"the compiled extension pho._render is not built ({exc}); run "
                f"`pip install -e . --no-build-isolation` in the pho checkout, or use backend='reference'"
            ) from exc
        self._k = _render
        self.workers = resolve_workers(workers)
        self._nodes = np.ascontiguousarray(ref._NODES)
        self._wts = np.ascontiguousarray(ref._WEIGHTS)
        self._last = None

    def _prepare(self, gaussians, shape, nsigma=None):
        """Validated Gaussians, integer boxes (half-width ``nsigma``) and orders; reused when called
        again with the same Gaussians, shape and nsigma (a likelihood calls render, then gradient,
        with the same array)."""
        last = self._last
        if last is not None and last[0] == (tuple(shape), nsigma) and isinstance(gaussians, np.ndarray) \
                and gaussians.shape == last[1].shape and np.array_equal(gaussians, last[1]):
            return last[1], last[2], last[3], last[4]
        g = np.ascontiguousarray(gaussians, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != 6:
            ref.check_gaussians(g)  # raises the reference's error for the shape
        boxes = np.empty((len(g), 4), dtype=np.intp)
        orders = np.empty(len(g), dtype=np.int32)
        # the reference's check_gaussians + pixel_boxes + integration_orders, in one compiled pass
        if self._k.boxes_and_orders(g, shape[0], shape[1], ref.BOX_NSIGMA if nsigma is None else nsigma,
                                    ref._FMAX_EDGES, ref._ORDER_TABLE,
                                    boxes, orders) >= 0:
            ref.check_gaussians(g)  # raises the reference's error naming the bad Gaussian
            raise PhoValueError("image Gaussians failed the compiled check but not the reference one; please report")
        if len(g) and float(np.max(np.maximum(g[:, 3], g[:, 5]))) > ref.FMAX_LIMIT:
            ref.check_gaussians(g)  # raises: a Gaussian narrower than the rule integrates (MIN_FWHM_PIX)
        g = g.copy() if g is gaussians else g  # keep our own copy: the caller may modify theirs
        work = ref.box_pixel_count(boxes)
        threads = self.workers if self.min_work_per_thread <= 0 else \
            max(1, min(self.workers, work // self.min_work_per_thread))
        self._last = ((tuple(shape), nsigma), g, boxes, orders, threads)
        return g, boxes, orders, threads

    def render(self, gaussians, shape) -> np.ndarray:
        """Model image ``(ny, nx)`` float64, wide Gaussians on coarse grids (:func:`pho._levels.render`)."""
        shape = ref.check_shape(shape)
        g = self._prepare(gaussians, shape)[0]  # checks every Gaussian before any is split off
        return _levels.render(self._render_pixels, g, shape, _levels.MAX_LEVEL)

    def gradient(self, gaussians, weights) -> np.ndarray:
        """``(G, 6)`` sums over pixels of ``weights * dI/d column`` of :meth:`render`'s model."""
        w = _check_weights(weights)
        g = self._prepare(gaussians, w.shape)[0]
        return _levels.gradient(self._gradient_pixels, g, w, _levels.MAX_LEVEL)

    def _render_pixels(self, gaussians, shape, nsigma=None) -> np.ndarray:
        """Every Gaussian on every pixel of its box (the kernel alone)."""
        g, boxes, orders, threads = self._prepare(gaussians, shape, nsigma)
        img = np.zeros(shape)
        status = self._k.render_image(g, boxes, orders, self._nodes, self._wts, img, threads)
        _raise_status(status, "render")
        return img

    def _gradient_pixels(self, gaussians, weights, nsigma=None) -> np.ndarray:
        """The gradient kernel alone (the transpose of :meth:`_render_pixels`)."""
        w = _check_weights(weights)
        g, boxes, orders, threads = self._prepare(gaussians, w.shape, nsigma)
        out = np.zeros((len(g), 6))
        status = self._k.gradient_sums(g, boxes, orders, self._nodes, self._wts, w, out, threads)
        _raise_status(status, "gradient")
        return out


def _raise_status(status: int, what: str) -> None:
    if status != 0:
        raise PhoBackendError(
            f"the cpu {what} kernel returned status {status} (an integration order outside 0..{ref.MAX_ORDER}); "
            f"this is a bug in pho, please report it with the Gaussians that caused it"
        )


def _gpu_backend(workers):
    from ._cuda import GpuBackend  # imported lazily: CuPy is optional

    return GpuBackend(workers)


_FACTORIES = {"reference": ReferenceBackend, "cpu": CpuBackend, "gpu": _gpu_backend}


def get_backend(name: str = "cpu", workers: int | None = None):
    """Return a pixel backend by name.

    Parameters
    ----------
    name : {"reference", "cpu", "gpu"}
        ``"reference"`` is the NumPy specification, ``"cpu"`` the Cython + OpenMP kernels,
        ``"gpu"`` the CuPy kernels (needs CuPy and a CUDA device).
    workers : int or None
        Threads for ``"cpu"``; None uses ``OMP_NUM_THREADS`` if set, else all cores.

    Returns
    -------
    backend
        Object with ``render(gaussians, shape)`` and ``gradient(gaussians, weights)``.

    Raises
    ------
    PhoValueError
        Unknown name or bad ``workers``.
    PhoBackendError
        The backend is not available here (extension not built, no CuPy or GPU).

    Examples
    --------
    >>> import numpy as np
    >>> from pho._backends import get_backend
    >>> g = np.array([[100.0, 10.0, 10.0, 0.5, 0.0, 0.5]])
    >>> img = get_backend("reference").render(g, (21, 21))
    >>> round(float(img.sum()) / (100.0 * 2 * np.pi / 0.5), 4)
    1.0
    """
    if name not in _FACTORIES:
        raise PhoValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return _FACTORIES[name](workers)


def available_backends() -> list[str]:
    """Names of the backends that work on this machine (``"reference"`` always does)."""
    names = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name, workers=1)
        except (PhoBackendError, ImportError):
            continue
        names.append(name)
    return names
