"""Point-spread functions as mixtures of Gaussians, in detector pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._reference import FWHM_PER_SIGMA, MIN_FWHM_PIX
from .errors import NOT_OVERWRITING_MSG, PhoDataError, PhoDataWarning, PhoValueError, warn

__all__ = ["PSFMixture"]

#: Amplitude sums further than this from one get a warning.
PSF_SUM_WARN_TOLERANCE = 0.01
#: Amplitude sums further than this from one are refused: the fluxes would be wrong by as much.
PSF_SUM_ERROR_TOLERANCE = 0.2

_COLUMNS = ("amp", "x", "y", "cxx", "cxy", "cyy")


def narrowest_variance(cxx, cxy, cyy) -> np.ndarray:
    """Smaller eigenvalue of covariances ``[[cxx, cxy], [cxy, cyy]]`` (pixels squared), in the
    closed form that :func:`narrowest_fwhm_pix` (the drawability check) uses."""
    cxx, cxy, cyy = (np.asarray(c, dtype=np.float64) for c in (cxx, cxy, cyy))
    return 0.5 * (cxx + cyy) - np.hypot(0.5 * (cxx - cyy), cxy)


def narrowest_fwhm_pix(cxx, cxy, cyy) -> np.ndarray:
    """FWHM along the narrowest principal axis of Gaussians of covariance ``[[cxx, cxy], [cxy, cyy]]``.

    Parameters
    ----------
    cxx, cxy, cyy : array_like of shape (L,)
        Covariances, pixels squared.

    Returns
    -------
    ndarray of shape (L,)
        ``2 sqrt(2 ln 2) sqrt(lambda_min)``, pixels.
    """
    return FWHM_PER_SIGMA * np.sqrt(np.maximum(narrowest_variance(cxx, cxy, cyy), 0.0))


@dataclass(frozen=True)
class PSFMixture:
    """A PSF written as a sum of L elliptical Gaussians, in detector pixels.

    The PSF at pixel offset ``d = (dx, dy)`` from the source position is::

        sum_l amp[l] * N(d; mean=(x[l], y[l]), cov=[[cxx[l], cxy[l]], [cxy[l], cyy[l]]])

    Parameters
    ----------
    amp : array_like of shape (L,)
        Fraction of the flux in each Gaussian; the amplitudes should sum to about one.
    x, y : array_like of shape (L,)
        Centre of each Gaussian relative to the source position, detector pixels.
    cxx, cxy, cyy : array_like of shape (L,)
        Covariance of each Gaussian, pixels squared; each must be positive definite.
    meta : dict, optional
        Provenance (input file, fit figures of merit); written to the FITS header.

    Raises
    ------
    PhoValueError
        Arrays of different lengths, non-finite values, a covariance that is not positive
        definite, or a component narrower than ``pho._reference.MIN_FWHM_PIX`` (0.35 pixel FWHM
        along its narrowest axis), which pho's pixel integration cannot draw accurately.
    PhoDataError
        Amplitudes summing to less than 0.8 or more than 1.2: normalize them (``normalized()``)
        or refit the PSF.

    Warns
    -----
    PhoDataWarning
        Amplitudes summing to a value more than 1% from one.

    Examples
    --------
    >>> from pho import PSFMixture
    >>> psf = PSFMixture.gaussian(fwhm_pix=2.0)
    >>> psf.n_gauss, float(psf.amp.sum())
    (1, 1.0)
    """

    amp: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cxx: np.ndarray
    cxy: np.ndarray
    cyy: np.ndarray
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        arrays = {}
        for name in _COLUMNS:
            value = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64)).copy()
            if value.ndim != 1:
                raise PhoValueError(f"PSFMixture.{name} must be one-dimensional, got shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise PhoValueError(f"PSFMixture.{name} has non-finite values: {value}")
            value.flags.writeable = False
            arrays[name] = value
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1 or lengths["amp"] == 0:
            raise PhoValueError(f"PSFMixture arrays must have one common, non-zero length; got {lengths}")
        det = arrays["cxx"] * arrays["cyy"] - arrays["cxy"] ** 2
        if np.any(arrays["cxx"] <= 0) or np.any(det <= 0):
            bad = np.flatnonzero((arrays["cxx"] <= 0) | (det <= 0))
            raise PhoValueError(
                f"PSFMixture components {bad.tolist()} have covariances that are not positive definite "
                "(need cxx > 0 and cxx*cyy - cxy**2 > 0); a PSF Gaussian must have a non-zero width"
            )
        fwhm = narrowest_fwhm_pix(arrays["cxx"], arrays["cxy"], arrays["cyy"])
        if np.any(fwhm < MIN_FWHM_PIX):
            bad = np.flatnonzero(fwhm < MIN_FWHM_PIX)
            raise PhoValueError(
                f"PSFMixture components {bad.tolist()} have FWHM {', '.join(f'{f:.3g}' for f in fwhm[bad])} pixel along "
                f"their narrowest axis, below the {MIN_FWHM_PIX} pixel that pho's pixel integration draws to 1e-3 "
                "(a Gaussian much narrower than a pixel would get the wrong flux). Such a PSF is undersampled: fit "
                "the mixture to an oversampled PSF image (python -m pho.tools.fitpsf --oversample N), or widen "
                f"those components to FWHM >= {MIN_FWHM_PIX} pixel"
            )
        total = float(arrays["amp"].sum())
        if abs(total - 1.0) > PSF_SUM_ERROR_TOLERANCE:
            raise PhoDataError(
                f"PSF mixture amplitudes sum to {total:.4g}, but a PSF must sum to about one "
                f"(allowed {1 - PSF_SUM_ERROR_TOLERANCE:g}..{1 + PSF_SUM_ERROR_TOLERANCE:g}); fluxes would be "
                "off by that factor. Use PSFMixture.normalized() or refit the PSF image."
            )
        if abs(total - 1.0) > PSF_SUM_WARN_TOLERANCE:
            warn(
                f"PSF mixture amplitudes sum to {total:.4g}, not 1; fitted fluxes will be scaled by "
                f"1/{total:.4g} relative to a normalized PSF. Use PSFMixture.normalized() if that is not intended.",
                PhoDataWarning,
            )
        for name, value in arrays.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n_gauss(self) -> int:
        """Number of Gaussians L."""
        return len(self.amp)

    @property
    def covariances(self) -> np.ndarray:
        """Covariance matrices, ndarray of shape (L, 2, 2), pixels squared."""
        cov = np.empty((self.n_gauss, 2, 2))
        cov[:, 0, 0] = self.cxx
        cov[:, 0, 1] = cov[:, 1, 0] = self.cxy
        cov[:, 1, 1] = self.cyy
        return cov

    @classmethod
    def gaussian(cls, fwhm_pix: float, q: float = 1.0, theta_rad: float = 0.0) -> "PSFMixture":
        """A single-Gaussian PSF of the given FWHM (pixels), axis ratio and angle of the major
        axis from the +x pixel axis towards +y (radians)."""
        if not fwhm_pix > 0:
            raise PhoValueError(f"fwhm_pix must be positive, got {fwhm_pix}")
        sigma = fwhm_pix / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        c, s = np.cos(theta_rad), np.sin(theta_rad)
        rot = np.array([[c, -s], [s, c]])
        cov = rot @ np.diag([sigma**2, (q * sigma) ** 2]) @ rot.T
        return cls([1.0], [0.0], [0.0], [cov[0, 0]], [cov[0, 1]], [cov[1, 1]])

    def normalized(self) -> "PSFMixture":
        """This mixture with amplitudes divided by their sum."""
        return PSFMixture(self.amp / self.amp.sum(), self.x, self.y, self.cxx, self.cxy, self.cyy, meta=self.meta)

    def evaluate(self, dx_pix: np.ndarray, dy_pix: np.ndarray) -> np.ndarray:
        """Point values of the PSF (per pixel squared) at offsets ``(dx_pix, dy_pix)``."""
        dx = np.asarray(dx_pix, dtype=float)[..., None] - self.x
        dy = np.asarray(dy_pix, dtype=float)[..., None] - self.y
        det = self.cxx * self.cyy - self.cxy**2
        quad = (self.cyy * dx * dx - 2 * self.cxy * dx * dy + self.cxx * dy * dy) / det
        return np.sum(self.amp / (2 * np.pi * np.sqrt(det)) * np.exp(-0.5 * quad), axis=-1)

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the mixture as a FITS binary table (extension ``PSFMIX``), atomically.

        Parameters
        ----------
        path : str or path-like
            Output file.
        overwrite : bool
            Replace an existing file; without it an existing file raises ``FileExistsError``.

        Returns
        -------
        Path
            The path written.
        """
        from astropy.io import fits

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(NOT_OVERWRITING_MSG.format(path=path))
        columns = [fits.Column(name=name, format="D", array=getattr(self, name)) for name in _COLUMNS]
        table = fits.BinTableHDU.from_columns(columns, name="PSFMIX")
        table.header["NGAUSS"] = (self.n_gauss, "number of Gaussians")
        table.header["UNITS"] = ("pixel", "x, y in pix; cxx, cxy, cyy in pix**2")
        for key, value in self.meta.items():
            key = str(key).upper()
            card_key = key if len(key) <= 8 else f"HIERARCH {key}"
            table.header[card_key] = value
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "PSFMixture":
        """Read a mixture written by :meth:`write` (or ``python -m pho.tools.fitpsf``)."""
        from astropy.io import fits

        with fits.open(path) as hdul:
            if "PSFMIX" not in hdul:
                raise PhoValueError(f"{path} has no PSFMIX extension; is it a pho PSF mixture file?")
            hdu = hdul["PSFMIX"]
            data = hdu.data
            missing = [c for c in _COLUMNS if c not in data.columns.names]
            if missing:
                raise PhoValueError(f"{path}: PSFMIX table lacks columns {missing}")
            skip = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS", "EXTNAME"}
            meta = {k: v for k, v in hdu.header.items() if k not in skip and not k.startswith(("TTYPE", "TFORM"))}
            return cls(*(np.array(data[c], dtype=np.float64) for c in _COLUMNS), meta=meta)
