"""Errors and warnings raised by pho.

Which class to raise when:

- ``PhoValueError``: a value or array given by the user is wrong (shape, sign, NaN where none
  is allowed). It is a ``ValueError``, so ``except ValueError`` keeps working.
- ``PhoRangeError``: a scalar is outside its allowed interval; carries ``value``, ``lo``, ``hi``.
- ``PhoDataError``: the data themselves are unusable as given (NaN pixels, bad inverse
  variance, a PSF that does not sum to about one, a singular WCS, no overlap with any source).
- ``PhoBackendError``: a compiled kernel returned a failure status, or a backend was asked for
  that is not available (no CuPy, no GPU, extension not built).
- ``PhoLockError``: an output folder is locked by another live run (``pho.runlock``).
- ``PhoWarning`` and subclasses: the answer is still right but the user should know.

Wrong types stay ``TypeError``; trouble with files stays ``OSError``.
"""

from __future__ import annotations

import warnings

__all__ = [
    "PhoError",
    "PhoValueError",
    "PhoRangeError",
    "PhoDataError",
    "PhoBackendError",
    "PhoLockError",
    "PhoWarning",
    "PhoDataWarning",
    "PhoPerformanceWarning",
    "PhoConvergenceWarning",
    "NOT_OVERWRITING_MSG",
    "warn",
]

#: The one message used whenever pho refuses to replace an existing file.
NOT_OVERWRITING_MSG = "{path} exists; not overwriting it. Pass overwrite=True (or --overwrite) to replace it."


class PhoError(Exception):
    """Base class of all pho errors."""


class PhoValueError(PhoError, ValueError):
    """A bad value or array from the user."""


class PhoRangeError(PhoValueError):
    """A scalar outside its allowed interval ``[lo, hi]``.

    Parameters
    ----------
    message : str
        What was wrong and how to fix it.
    value, lo, hi : float
        The offending value and the allowed interval.
    """

    def __init__(self, message: str, value: float, lo: float, hi: float):
        super().__init__(message)
        self.value = value
        self.lo = lo
        self.hi = hi

    def __reduce__(self):
        return (type(self), (self.args[0], self.value, self.lo, self.hi))


class PhoDataError(PhoValueError):
    """Unusable data: NaN pixels, bad inverse variance, bad PSF sum, singular WCS, no overlap."""


class PhoBackendError(PhoError, RuntimeError):
    """A kernel reported failure, or a backend is not available."""


class PhoLockError(PhoError, RuntimeError):
    """An output folder is in use by another live run (its lock file names the owner)."""


class PhoWarning(UserWarning):
    """Base class of all pho warnings."""


class PhoDataWarning(PhoWarning):
    """The data were handled in a stated way the user should know about (e.g. NaN pixels masked)."""


class PhoPerformanceWarning(PhoWarning):
    """The result is right but slower than it could be (e.g. no OpenMP)."""


class PhoConvergenceWarning(PhoWarning):
    """A sampler's chains show signs of not having converged (R-hat above 1.01, divergences)."""


def warn(message: str, category: type[Warning] = PhoWarning, stacklevel: int = 2) -> None:
    """Issue a pho warning, pointing at the caller of the function that calls this."""
    warnings.warn(message, category, stacklevel=stacklevel + 1)
