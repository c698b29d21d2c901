"""GPU backend (CuPy RawModule over pho/include/pho_kernel.h); optional, imported lazily.

Not implemented yet beyond a clear error: the header compiles as CUDA (tests/test_kernel_header.py),
but the CuPy driver kernels are still to be written.
"""

from __future__ import annotations

from .errors import PhoBackendError

__all__ = ["GpuBackend"]


class GpuBackend:
    """Placeholder that explains why the GPU backend is unavailable."""

    name = "gpu"

    def __init__(self, workers: int | None = None):
        try:
            import cupy  # noqa: F401
        except ImportError as exc:
            raise PhoBackendError(
                f"backend='gpu' needs CuPy and a CUDA device ({exc}); install cupy matching your CUDA "
                f"version, or use backend='cpu'"
            ) from exc
        raise PhoBackendError(
            "backend='gpu' is not implemented in this version of pho; use backend='cpu'"
        )
