"""Exposures: pixels, noise, mask, PSF, band and astrometry of one image.

The astrometry (docs/model.md) has two parts, both derived once from the astropy WCS:

- **positions**: an exact gnomonic projection of (ra, dec) onto a tangent plane (the WCS's own
  for a plain TAN WCS, else the stamp centre) followed by a polynomial in the tangent-plane
  coordinates fitted to astropy's ``pixel_to_world`` over the stamp (degree 1 for a plain TAN
  WCS, where it is exact; degree 3 or 5 for distorted WCS). The fit is checked against astropy
  on an independent grid and must agree to ``ASTROMETRY_TOLERANCE_PIX``; positions and their
  Jacobian to (ra, dec) are analytic and cost a few NumPy operations per call.
- **shapes**: the matrix ``D`` (pixels per arcsec of sky offset ``(dra cos dec0, ddec)``) at the
  reference point (the stamp centre), which maps sky covariances to pixel covariances.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import PhoDataError, PhoDataWarning, PhoRangeError, PhoValueError, warn
from .psf import PSF_SUM_ERROR_TOLERANCE, PSFMixture
from .psfgrid import PSFGrid, _mixture_parameters, read_psf

__all__ = ["Exposure", "ASTROMETRY_TOLERANCE_PIX", "unit_vectors", "image_hdu"]

#: Largest allowed difference (pixels) between pho's positions and astropy's over the stamp.
ASTROMETRY_TOLERANCE_PIX = 1e-4
_DEG = math.pi / 180.0


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors of sky positions and their derivatives, for :meth:`_Astrometry.project_units`.

    Parameters
    ----------
    ra_deg, dec_deg : ndarray of shape (S,)

    Returns
    -------
    ndarray of shape (3, S, 3)
        ``[p, dp/dra, dp/ddec]`` with ``p = (cos dec cos ra, cos dec sin ra, sin dec)`` and the
        derivatives per degree. Computed once per likelihood call and shared by all exposures.
    """
    a = np.asarray(ra_deg, dtype=float) * _DEG
    d = np.asarray(dec_deg, dtype=float) * _DEG
    ca, sa, cd, sd = np.cos(a), np.sin(a), np.cos(d), np.sin(d)
    out = np.empty((3,) + a.shape + (3,))
    out[0, ..., 0] = cd * ca
    out[0, ..., 1] = cd * sa
    out[0, ..., 2] = sd
    out[1, ..., 0] = -out[0, ..., 1]
    out[1, ..., 1] = out[0, ..., 0]
    out[1, ..., 2] = 0.0
    out[2, ..., 0] = -sd * ca
    out[2, ..., 1] = -sd * sa
    out[2, ..., 2] = cd
    out[1:] *= _DEG
    return out


def _tangent_basis(ra0_deg: float, dec0_deg: float) -> np.ndarray:
    """Columns: the tangent point t, and the east e and north n unit vectors there, (3, 3)."""
    a, d = ra0_deg * _DEG, dec0_deg * _DEG
    return np.array(
        [
            [math.cos(d) * math.cos(a), -math.sin(a), -math.sin(d) * math.cos(a)],
            [math.cos(d) * math.sin(a), math.cos(a), -math.sin(d) * math.sin(a)],
            [math.sin(d), 0.0, math.cos(d)],
        ]
    )


def _monomial_powers(degree: int):
    return [(i, k - i) for k in range(degree + 1) for i in range(k, -1, -1)]


def _check_wcs_matrix(wcs, label: str) -> None:
    """Refuse a WCS whose linear part is non-finite or singular, before astropy sees it.

    wcslib would raise ``SingularMatrixError`` (or, for NaN, give NaN positions that the astrometry
    fit reports as "too distorted"); the checks here name the exposure and the keyword instead.

    Raises
    ------
    PhoDataError
        Non-finite CRVAL/CRPIX/CD/PC/CDELT, or a singular CD (PC times CDELT) matrix.
    """
    w = wcs.wcs
    if w.has_cd():
        matrix, what = np.array(w.cd, dtype=float), "CD"
    else:
        pc = np.array(w.pc, dtype=float)
        cdelt = np.array(w.cdelt, dtype=float)
        matrix, what = np.diag(cdelt) @ pc, "PC and CDELT"
        if not np.all(np.isfinite(cdelt)):
            raise PhoDataError(f"{label}: non-finite WCS: CDELT = {cdelt.tolist()}; fix the CDELT keywords of the header")
    for key, value in (("CRVAL", w.crval), ("CRPIX", w.crpix), (what, matrix)):
        value = np.asarray(value, dtype=float)
        if not np.all(np.isfinite(value)):
            raise PhoDataError(
                f"{label}: non-finite WCS: {key} = {value.tolist()} holds NaN or infinity; fix the {key} keywords of "
                "the header"
            )
    if matrix.shape == (2, 2) and float(np.linalg.det(matrix)) == 0.0:
        raise PhoDataError(
            f"{label}: the WCS is singular ({what} matrix {matrix.tolist()} has determinant 0, e.g. a CDELT of 0 or a "
            f"CD matrix of zeros), so pixels have no size on the sky; fix the {what} keywords of the header"
        )


class _Astrometry:
    """Sky -> pixel map of one exposure: gnomonic projection + fitted polynomial (see module doc).

    The standard coordinates on the tangent plane at ``t`` are ``xi = (e.p)/(t.p)``,
    ``eta = (n.p)/(t.p)`` (radians; stored in degrees) for the unit vector ``p`` of a sky
    position. For degree 1 the polynomial is folded into the basis, so that a projection is one
    (3S, 3) x (3, 3) product and a few divisions.
    """

    def __init__(self, wcs, shape, label: str = "exposure"):
        ny, nx = shape
        self.label = label
        ctype = [str(c).upper() for c in wcs.wcs.ctype]
        plain_tan = (
            ctype[0].endswith("-TAN") and ctype[1].endswith("-TAN") and wcs.sip is None
            and wcs.cpdis1 is None and wcs.cpdis2 is None and wcs.det2im1 is None and wcs.det2im2 is None
        )
        self.reference_pixel = ((nx - 1) / 2.0, (ny - 1) / 2.0)
        lng, lat = wcs.wcs.lng, wcs.wcs.lat  # world axis order of (ra, dec) in this WCS
        ref_world = wcs.all_pix2world([self.reference_pixel], 0)[0]
        ra_ref, dec_ref = float(ref_world[lng]), float(ref_world[lat])
        if not (math.isfinite(ra_ref) and math.isfinite(dec_ref)):
            raise PhoDataError(f"the WCS gives no sky position for the stamp centre pixel {self.reference_pixel}; check the WCS")
        self.reference_radec = (ra_ref, dec_ref)
        ra0, dec0 = (float(wcs.wcs.crval[lng]), float(wcs.wcs.crval[lat])) if plain_tan else (ra_ref, dec_ref)
        self._basis = _tangent_basis(ra0, dec0)

        margin = max(16.0, 0.25 * max(nx, ny))
        fit_x = np.linspace(-margin, nx - 1 + margin, 11)
        fit_y = np.linspace(-margin, ny - 1 + margin, 11)
        chk_x = np.linspace(-0.5, nx - 0.5, 14)
        chk_y = np.linspace(-0.5, ny - 0.5, 14)
        fx, fy = (a.ravel() for a in np.meshgrid(fit_x, fit_y))
        cx, cy = (a.ravel() for a in np.meshgrid(chk_x, chk_y))
        fit_world = wcs.all_pix2world(np.column_stack([fx, fy]), 0)
        chk_world = wcs.all_pix2world(np.column_stack([cx, cy]), 0)
        if not (np.all(np.isfinite(fit_world)) and np.all(np.isfinite(chk_world))):
            raise PhoDataError("the WCS gives non-finite sky positions over the stamp; check the WCS")
        fxi, feta = self._standard(fit_world[:, lng], fit_world[:, lat])
        cxi, ceta = self._standard(chk_world[:, lng], chk_world[:, lat])
        self._xi_c, self._eta_c = float(np.mean(fxi)), float(np.mean(feta))
        self._scale = float(max(np.ptp(fxi), np.ptp(feta))) / 2.0
        if not self._scale > 0:
            raise PhoDataError("the WCS maps the whole stamp to one sky point (singular WCS); check its CD/PC matrix")
        errors = {}
        for degree in (1, 3, 5):
            powers = _monomial_powers(degree)
            V = self._vander(fxi, feta, powers)
            coef, *_ = np.linalg.lstsq(V, np.column_stack([fx, fy]), rcond=None)
            pred = self._vander(cxi, ceta, powers) @ coef
            err = float(np.max(np.hypot(pred[:, 0] - cx, pred[:, 1] - cy)))
            errors[degree] = err
            if err <= ASTROMETRY_TOLERANCE_PIX:
                break
        else:
            raise PhoDataError(
                f"the WCS is too distorted over this stamp for pho's polynomial astrometry: the best fit (degree 5) "
                f"differs from astropy by {errors[5]:.3g} pixel (allowed {ASTROMETRY_TOLERANCE_PIX:g}); use a smaller cutout"
            )
        self.degree = degree
        self.max_error_pix = err
        self._powers = powers
        self._coef = coef  # (n_terms, 2), in the scaled coordinates
        if degree == 1:
            # x = c0 + cs (xi - xi_c) + ct (eta - eta_c), xi = (180/pi) (e.p)/(t.p): fold into the basis
            cs = coef[1] / self._scale
            ct = coef[2] / self._scale
            t, e, n = self._basis[:, 0], self._basis[:, 1], self._basis[:, 2]
            self._folded = np.column_stack([t, (cs[0] * e + ct[0] * n) / _DEG, (cs[1] * e + ct[1] * n) / _DEG])
            self._offset = coef[0] - cs * self._xi_c - ct * self._eta_c
        # the local sky-offset Jacobian D at the reference point, pixels per arcsec
        _, _, J = self.project(np.array([ra_ref]), np.array([dec_ref]))
        D = J[0] / 3600.0
        D[:, 0] /= math.cos(dec_ref * _DEG)
        det = float(np.linalg.det(D))
        if not (math.isfinite(det) and abs(det) > 0):
            raise PhoDataError(f"the WCS is singular at the stamp centre (det D = {det:g} pix^2/arcsec^2); check its CD/PC matrix")
        self.D = D
        self.D.flags.writeable = False

    def _standard(self, ra_deg, dec_deg):
        q = unit_vectors(ra_deg, dec_deg)[0] @ self._basis
        return q[:, 1] / q[:, 0] / _DEG, q[:, 2] / q[:, 0] / _DEG

    def _vander(self, xi, eta, powers):
        s = (xi - self._xi_c) / self._scale
        t = (eta - self._eta_c) / self._scale
        return np.column_stack([s**i * t**j for i, j in powers])

    def project(self, ra_deg, dec_deg, jacobian=True, names=None):
        """Pixel positions (x, y), each shape (S,), and the Jacobian (S, 2, 2), pixels per degree."""
        return self.project_units(unit_vectors(ra_deg, dec_deg), jacobian, names)

    def check_near_side(self, units, names=None, error=PhoValueError, w=None) -> None:
        """Raise ``error`` if a point lies on the far hemisphere of the tangent point (``t . p <= 0``).

        The gnomonic projection maps ``p`` and ``-p`` to the same plane position, so a point on
        the far side would be drawn at the mirror image of its true place.

        Parameters
        ----------
        units : ndarray of shape (3, S, 3)
            From :func:`unit_vectors`.
        names : sequence of str, optional
            Labels of the S points for the message (default ``point k``).
        error : exception class
        w : ndarray of shape (S,), optional
            ``t . p`` if already computed.
        """
        w = units[0] @ self._basis[:, 0] if w is None else w
        far = ~(w > 0)
        if not far.any():
            return
        k = int(np.flatnonzero(far)[0])
        p = units[0, k]
        ra = math.degrees(math.atan2(p[1], p[0])) % 360.0
        dec = math.degrees(math.asin(max(-1.0, min(1.0, p[2]))))
        t = self._basis[:, 0]
        ra0 = math.degrees(math.atan2(t[1], t[0])) % 360.0
        dec0 = math.degrees(math.asin(max(-1.0, min(1.0, t[2]))))
        sep = math.degrees(math.acos(max(-1.0, min(1.0, float(w[k]))))) if math.isfinite(float(w[k])) else float("nan")
        who = names[k] if names is not None else f"point {k}"
        raise error(
            f"{who} at (ra, dec) = ({ra:.6f}, {dec:.6f}) deg is {sep:.1f} deg from the tangent point "
            f"({ra0:.6f}, {dec0:.6f}) of {self.label}: on the far side of the sky, where the gnomonic projection "
            "would draw it at the mirror position. Sources must lie within 90 deg of every exposure: check the "
            "source's position (and its ra/dec prior), or fit it with other exposures"
        )

    def project_units(self, units, jacobian=True, names=None):
        """As :meth:`project`, from ``unit_vectors(ra, dec)`` (shape (3, S, 3)).

        Raises
        ------
        PhoValueError
            A point on the far hemisphere of the tangent point (:meth:`check_near_side`).
        """
        if self.degree == 1:
            # (3, S, 3): w, X, Y and their derivatives. Summed term by term, not by matmul: X and Y
            # are small differences of large terms, whose rounding then depends on the BLAS kernel
            # (up to ~1e-10 px); this order is fixed, and the one pho._stamp repeats.
            f = self._folded
            q = units[..., 0:1] * f[0] + units[..., 1:2] * f[1] + units[..., 2:3] * f[2]
            if not np.all(q[0, :, 0] > 0):
                self.check_near_side(units, names, w=q[0, :, 0])
            inv = 1.0 / q[0, :, :1]
            xy = q[0, :, 1:] * inv
            if not jacobian:
                return xy[:, 0] + self._offset[0], xy[:, 1] + self._offset[1]
            J = np.empty(xy.shape + (2,))
            J[:, :, 0] = (q[1, :, 1:] - xy * q[1, :, :1]) * inv
            J[:, :, 1] = (q[2, :, 1:] - xy * q[2, :, :1]) * inv
            xy += self._offset
            return xy[:, 0], xy[:, 1], J
        q = units @ self._basis
        if not np.all(q[0, :, 0] > 0):
            self.check_near_side(units, names, w=q[0, :, 0])
        inv = 1.0 / q[0, :, :1]
        st = q[0, :, 1:] * inv  # (xi, eta) in radians
        dst_dra = (q[1, :, 1:] - st * q[1, :, :1]) * inv / _DEG  # per degree of ra, in degrees
        dst_ddec = (q[2, :, 1:] - st * q[2, :, :1]) * inv / _DEG
        s = (st[:, 0] / _DEG - self._xi_c) / self._scale
        t = (st[:, 1] / _DEG - self._eta_c) / self._scale
        V = np.stack([s**i * t**j for i, j in self._powers], axis=-1)
        xy = V @ self._coef
        if not jacobian:
            return xy[:, 0], xy[:, 1]
        Vs = np.stack([i * s ** max(i - 1, 0) * t**j for i, j in self._powers], axis=-1) / self._scale
        Vt = np.stack([j * s**i * t ** max(j - 1, 0) for i, j in self._powers], axis=-1) / self._scale
        dxy_dxi = Vs @ self._coef  # (S, 2)
        dxy_deta = Vt @ self._coef
        J = np.empty(xy.shape + (2,))
        J[:, :, 0] = dxy_dxi * dst_dra[:, :1] + dxy_deta * dst_dra[:, 1:]
        J[:, :, 1] = dxy_dxi * dst_ddec[:, :1] + dxy_deta * dst_ddec[:, 1:]
        return xy[:, 0], xy[:, 1], J


def image_hdu(hdul, path, which=None):
    """The HDU of ``hdul`` (an open FITS file read from ``path``) holding a 2-d image: ``which``
    (index or name) or, by default, the first non-empty 2-d image.

    Raises
    ------
    PhoValueError
        No such HDU, or it holds no 2-d image.
    """
    if which is None:
        for h in hdul:
            if h.is_image and h.header.get("NAXIS", 0) == 2 and h.shape and 0 not in h.shape:
                return h
        if hdul and hdul[0].is_image and (hdul[0].data is None or hdul[0].data.size == 0) and len(hdul) == 1:
            shape = (0, 0) if hdul[0].data is None else hdul[0].data.shape
            raise PhoDataError(f"{path}: the image is empty (shape {shape}); give a file with pixel data (or name the "
                               "HDU that holds them)")
        raise PhoValueError(f"{path} has no HDU with 2-d image data")
    h = hdul[which]
    if not h.is_image or h.header.get("NAXIS", 0) != 2:
        raise PhoValueError(f"{path}[{which}] has no 2-d image data")
    if 0 in h.shape:
        raise PhoDataError(f"{path}[{which}]: the image is empty (shape {h.shape}); give a file with pixel data")
    return h


class Exposure:
    """One image: pixels, inverse variance, mask, WCS, PSF, band and flux calibration.

    Exposures are immutable after construction; everything O(pixels) is checked here, once.

    Parameters
    ----------
    pixels : array_like of shape (ny, nx)
        Data, counts (the unit the model predicts: ``flux * counts_per_flux + background``).
        NaN or infinite pixels are masked, with a :class:`~pho.errors.PhoDataWarning` that
        says how many.
    ivar : array_like of shape (ny, nx)
        Inverse variance, 1/counts^2. Zero means "no data" (the pixel does not count); NaN is
        masked with a warning; negative or infinite values raise.
    wcs : astropy.wcs.WCS
        Celestial WCS of exactly this array (0-based pixels, as astropy uses them).
    psf : PSFMixture, PSFGrid or path
        PSF in detector pixels: one mixture for the whole exposure, or a
        :class:`~pho.psfgrid.PSFGrid` of mixtures over the detector, of which each source uses
        the mixture at its pixel position (``psf_at``; docs/model.md, "PSFs that vary over the
        field"). A path is read with ``pho.psfgrid.read_psf`` (either kind).
    band : str
        Band name, matching the keys of the sources' flux dicts.
    mask : array_like of bool, shape (ny, nx), optional
        True marks a bad pixel (it does not count). The final mask (``exposure.mask``) also
        has the NaN pixels and NaN ivar pixels set.
    counts_per_flux : float
        Counts per unit of user flux (> 0), e.g. exposure time times the inverse of the
        photometric calibration.
    background : float or array_like of shape (ny, nx)
        Known background added to the model, counts (default 0).
    name : str, optional
        Label used in messages (default: band and shape; ``from_fits`` uses the file name).
    psf_offset_pix : (float, float)
        Where this exposure's pixel (0, 0) lies in the frame of a PSF grid's positions, pixels:
        ``(x0, y0)`` for a cutout ``[y0:, x0:]`` of the image the grid was made for
        (``from_fits`` adds its ``cutout`` corner itself). Default (0, 0); unused with a
        single PSFMixture.

    Attributes
    ----------
    shape : (int, int)
        (ny, nx).
    pixels, ivar, mask : ndarray of shape (ny, nx)
        Read-only copies (pixels float64 as given, NaNs included; mask bool, True = bad).
    counted : ndarray of bool, shape (ny, nx)
        Pixels that count in the likelihood: not masked and ``ivar > 0``.
    D : ndarray of shape (2, 2)
        Pixels per arcsec of sky offset ``(dra cos dec0, ddec)`` at the reference point.
    reference_radec : (float, float)
        Sky position (deg) of the reference point, the centre of the stamp.
    psf, band, counts_per_flux, background, wcs, name, psf_offset_pix

    Raises
    ------
    PhoValueError
        Arrays that are not 2-d, complex, or whose shapes disagree; an empty band.
    PhoRangeError
        ``counts_per_flux`` not finite and positive.
    PhoDataError
        Negative or infinite ivar, no pixel left to count, a PSF whose amplitudes do not sum to
        about one, a singular (e.g. CD of zeros, CDELT = 0), non-finite or non-celestial WCS, a
        non-finite background.
    TypeError
        ``wcs`` is not an astropy WCS, ``psf`` not a PSFMixture or PSFGrid.

    Examples
    --------
    >>> import numpy as np, pho
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 2.0]
    >>> w.wcs.crpix = [32.5, 32.5]; w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    >>> exp = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, pho.PSFMixture.gaussian(2.0), "F814W")
    >>> [round(float(v), 6) for v in exp.sky_to_pixel(150.0, 2.0)]
    [31.5, 31.5]
    """

    def __init__(self, pixels, ivar, wcs, psf, band: str, mask=None, counts_per_flux: float = 1.0, background=0.0,
                 name: str | None = None, psf_offset_pix=(0.0, 0.0)):
        from astropy.wcs import WCS

        for what, arr in (("pixels", pixels), ("ivar", ivar)):
            if np.iscomplexobj(arr):
                raise PhoValueError(
                    f"{what} are complex (dtype {np.asarray(arr).dtype}); pho needs real numbers: pass the real part "
                    f"(np.real) if that is what you meant, or the modulus (np.abs)"
                )
        pixels = np.array(pixels, dtype=np.float64)
        ivar = np.array(ivar, dtype=np.float64)
        if pixels.ndim != 2 or pixels.size == 0:
            raise PhoValueError(f"pixels must be a non-empty 2-d array (ny, nx), got shape {pixels.shape}")
        shape = pixels.shape
        if ivar.shape != shape:
            raise PhoValueError(f"ivar has shape {ivar.shape} but pixels have shape {shape}; they must agree")
        if mask is None:
            mask = np.zeros(shape, dtype=bool)
        else:
            mask = np.array(mask)
            if mask.shape != shape:
                raise PhoValueError(f"mask has shape {mask.shape} but pixels have shape {shape}; they must agree")
            if mask.dtype != bool:
                raise PhoValueError(f"mask must be boolean (True = bad pixel), got dtype {mask.dtype}")
            mask = mask.copy()
        if not isinstance(band, str) or not band:
            raise PhoValueError(f"band must be a non-empty string, got {band!r}")
        self.band = band
        self.name = name if name is not None else f"exposure(band={band!r}, shape={shape})"
        label = self.name

        bad_pix = ~np.isfinite(pixels)
        if bad_pix.any():
            warn(f"{label}: {int(bad_pix.sum())} of {pixels.size} pixels are NaN or infinite; they are masked", PhoDataWarning)
        if np.any(ivar < 0):
            n_neg = int(np.sum(ivar < 0))
            raise PhoDataError(
                f"{label}: {n_neg} pixels have negative inverse variance (min {float(np.nanmin(ivar)):.3g}); ivar must be "
                ">= 0 (0 marks pixels without data). Fix the weight map or set those pixels to 0 and mask them."
            )
        if np.any(np.isposinf(ivar)):
            raise PhoDataError(
                f"{label}: {int(np.isposinf(ivar).sum())} pixels have infinite inverse variance (zero noise); give a finite "
                "ivar (or 0 and a mask for pixels without data)"
            )
        bad_ivar = np.isnan(ivar)
        if bad_ivar.any():
            warn(f"{label}: {int(bad_ivar.sum())} pixels have NaN inverse variance; they are masked", PhoDataWarning)
        mask |= bad_pix | bad_ivar
        counted = ~mask & (ivar > 0)
        if not counted.any():
            raise PhoDataError(f"{label}: no pixel counts (all are masked or have ivar = 0); check the mask and the weight map")

        if isinstance(psf, (str, os.PathLike)):
            psf = read_psf(psf)
        if not isinstance(psf, (PSFMixture, PSFGrid)):
            raise TypeError(f"psf must be a pho.PSFMixture or pho.psfgrid.PSFGrid (or a path to one), got {type(psf).__name__}")
        # a grid's mixtures were each checked by PSFMixture, and interpolation keeps their sums' range
        total = float(np.sum(psf.amp)) if isinstance(psf, PSFMixture) else 1.0
        if abs(total - 1.0) > PSF_SUM_ERROR_TOLERANCE:
            raise PhoDataError(f"{label}: PSF amplitudes sum to {total:.4g}, not about one; use psf.normalized() or refit the PSF")
        try:
            offset = tuple(float(v) for v in psf_offset_pix)
        except (TypeError, ValueError):
            offset = ()
        if len(offset) != 2 or not all(math.isfinite(v) for v in offset):
            raise PhoValueError(
                f"{label}: psf_offset_pix={psf_offset_pix!r} must be two finite numbers (x0, y0): where this exposure's "
                "pixel (0, 0) lies in the PSF grid's frame"
            )

        cpf = float(counts_per_flux)
        if not (math.isfinite(cpf) and cpf > 0):
            raise PhoRangeError(f"{label}: counts_per_flux={counts_per_flux!r} must be finite and positive", cpf, 0.0, math.inf)
        bg = np.array(background, dtype=np.float64)
        if bg.ndim == 0:
            bg = float(bg)
            if not math.isfinite(bg):
                raise PhoDataError(f"{label}: background={background!r} is not finite")
        else:
            if bg.shape != shape:
                raise PhoValueError(f"{label}: background has shape {bg.shape}; give a scalar or an array of shape {shape}")
            if not np.all(np.isfinite(bg)):
                raise PhoDataError(f"{label}: background has {int((~np.isfinite(bg)).sum())} non-finite values")
            bg.flags.writeable = False

        if not isinstance(wcs, WCS):
            raise TypeError(f"wcs must be an astropy.wcs.WCS, got {type(wcs).__name__}")
        if wcs.naxis == 2:
            _check_wcs_matrix(wcs, label)  # before astropy's own checks, which raise wcslib's errors
        if wcs.pixel_n_dim != 2 or not wcs.has_celestial or wcs.naxis != 2:
            raise PhoDataError(f"{label}: the WCS must be a 2-d celestial WCS (RA/Dec), got ctype {list(wcs.wcs.ctype)}")
        wcs = wcs.deepcopy()
        try:
            psm = wcs.pixel_scale_matrix
        except Exception as exc:  # astropy raises for degenerate matrices in some versions
            raise PhoDataError(f"{label}: the WCS's pixel scale matrix cannot be computed ({exc}); check CD/PC/CDELT") from exc
        det = float(np.linalg.det(psm))
        if not (math.isfinite(det) and det != 0.0):
            raise PhoDataError(
                f"{label}: the WCS is singular (determinant of its CD matrix = {det:g} deg^2 per pixel^2); "
                "check the CD/PC and CDELT keywords"
            )
        self._astrometry = _Astrometry(wcs, shape, label=label if label.startswith("exposure") else f"exposure {label}")

        data = np.where(counted, pixels, 0.0)
        weight = np.where(counted, ivar, 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            chi2_of_zero_model = float(np.einsum("ij,ij->", data * weight, data))
        if not math.isfinite(chi2_of_zero_model):
            raise PhoDataError(
                f"{label}: the pixel values are so large (max |pixel| {float(np.max(np.abs(data))):.3g} counts, ivar up "
                f"to {float(np.max(weight)):.3g}) that the likelihood overflows double precision (sum of "
                "pixel^2 * ivar is infinite); rescale the pixels and the noise (e.g. to counts per second) or check "
                "their units"
            )
        for arr in (pixels, ivar, mask, counted, data, weight):
            arr.flags.writeable = False
        self.pixels, self.ivar, self.mask, self.counted = pixels, ivar, mask, counted
        self._data, self._weight = data, weight
        self._wcs = wcs
        self.psf = psf
        self.psf_offset_pix = offset
        self.counts_per_flux = cpf
        self.background = bg
        self.shape = shape
        self._frozen = True

    def __setattr__(self, key, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"Exposure is immutable; make a new one instead of setting {key!r}")
        object.__setattr__(self, key, value)

    @property
    def wcs(self):
        """The exposure's astropy WCS (a copy of the one given). The likelihood never uses it (it uses the
        fitted astrometry), so a pickled exposure carries it as bytes, unpickled on first access: a
        sampler's worker process does not import astropy (about 1 s of start-up) unless asked for it."""
        wcs = self.__dict__["_wcs"]
        if isinstance(wcs, bytes):
            wcs = pickle.loads(wcs)
            self.__dict__["_wcs"] = wcs
        return wcs

    def __getstate__(self):
        state = dict(self.__dict__)
        if not isinstance(state["_wcs"], bytes):
            state["_wcs"] = pickle.dumps(state["_wcs"], protocol=pickle.HIGHEST_PROTOCOL)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Exposure({self.name}, band={self.band!r}, shape={self.shape}, counts_per_flux={self.counts_per_flux:g})"

    def with_background(self, background) -> "Exposure":
        """This exposure with another known background (counts: a scalar or an (ny, nx) array),
        e.g. the light of sources held fixed; pixels, noise, mask, WCS and PSF are shared."""
        return Exposure(self.pixels, self.ivar, self.wcs, self.psf, self.band, mask=self.mask,
                        counts_per_flux=self.counts_per_flux, background=background, name=self.name,
                        psf_offset_pix=self.psf_offset_pix)

    @property
    def psf_varies(self) -> bool:
        """Whether the PSF depends on the position (a :class:`~pho.psfgrid.PSFGrid`)."""
        return isinstance(self.psf, PSFGrid)

    def psf_parameters_at(self, x_pix, y_pix, labels=None) -> np.ndarray:
        """PSF mixture parameters at pixel positions of this exposure.

        Parameters
        ----------
        x_pix, y_pix : array_like of shape (S,)
            0-based pixels of this exposure (``psf_offset_pix`` is added for a grid).
        labels : sequence of str, optional
            Names of the positions for messages.

        Returns
        -------
        ndarray of shape (S, L, 6)
            ``amp, x, y, cxx, cxy, cyy`` per position (the same mixture for every position
            when the PSF is a single PSFMixture).

        Raises
        ------
        PhoValueError
            A position outside a grid's hull (with the grid's ``outside="error"``), or not finite.
        """
        x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).ravel()
        y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).ravel()
        if not isinstance(self.psf, PSFGrid):
            p = _mixture_parameters(self.psf)
            return np.broadcast_to(p, (len(x),) + p.shape).copy()
        ox, oy = self.psf_offset_pix
        where = f" (exposure {self.name}" + (f", whose pixel (0, 0) is ({ox:g}, {oy:g}) there)" if (ox, oy) != (0.0, 0.0) else ")")
        return self.psf.parameters_at(x + ox, y + oy, labels=labels, where=where)

    def psf_at(self, x_pix: float, y_pix: float) -> PSFMixture:
        """The PSF mixture of a source at pixel ``(x_pix, y_pix)`` of this exposure (0-based).

        The exposure's single mixture, or its grid's mixture at ``(x_pix + x0, y_pix + y0)`` with
        ``(x0, y0) = psf_offset_pix``; errors as for :meth:`psf_parameters_at`.
        """
        if not isinstance(self.psf, PSFGrid):
            return self.psf
        ox, oy = self.psf_offset_pix
        return self.psf.at(float(x_pix) + ox, float(y_pix) + oy)

    @property
    def D(self) -> np.ndarray:
        """Pixels per arcsec of sky offset ``(dra cos dec0, ddec)`` at the reference point, (2, 2)."""
        return self._astrometry.D

    @property
    def reference_radec(self) -> tuple[float, float]:
        """(ra, dec) in degrees of the reference point (the stamp centre)."""
        return self._astrometry.reference_radec

    @property
    def pixel_scale_arcsec(self) -> float:
        """Geometric-mean pixel size, arcsec (``1 / sqrt(|det D|)``)."""
        return float(1.0 / math.sqrt(abs(np.linalg.det(self.D))))

    def sky_to_pixel(self, ra_deg, dec_deg):
        """0-based pixel coordinates of sky positions.

        Parameters
        ----------
        ra_deg, dec_deg : float or array_like
            Sky positions, degrees.

        Returns
        -------
        x, y : float or ndarray
            Pixel coordinates (same shape as the input), agreeing with astropy's
            ``wcs.world_to_pixel_values`` to ``ASTROMETRY_TOLERANCE_PIX`` over the stamp.
        """
        ra, dec = np.broadcast_arrays(np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float))
        x, y = self._astrometry.project(ra.ravel(), dec.ravel(), jacobian=False)
        if ra.ndim == 0:
            return float(x[0]), float(y[0])
        return x.reshape(ra.shape), y.reshape(ra.shape)

    def sky_to_pixel_jacobian(self, ra_deg, dec_deg):
        """Pixel positions and their Jacobian to (ra, dec).

        Returns
        -------
        x, y : ndarray of shape (S,)
        jac : ndarray of shape (S, 2, 2)
            ``[[dx/dra, dx/ddec], [dy/dra, dy/ddec]]``, pixels per degree.
        """
        return self._astrometry.project(np.atleast_1d(np.asarray(ra_deg, float)), np.atleast_1d(np.asarray(dec_deg, float)))

    @classmethod
    def from_fits(
        cls,
        sci_path,
        ivar_path=None,
        err_path=None,
        *,
        psf,
        band: str,
        cutout=None,
        hdu=None,
        noise_hdu=None,
        mask=None,
        counts_per_flux: float = 1.0,
        background=0.0,
        psf_offset_pix=(0.0, 0.0),
    ) -> "Exposure":
        """Read an exposure from FITS files.

        Parameters
        ----------
        sci_path : str or path-like
            Science image (counts) with a celestial WCS in its header.
        ivar_path, err_path : str or path-like
            Exactly one of them: an inverse-variance map (1/counts^2) or an error map
            (sigma, counts; ivar = 1/err^2, and err = 0 or non-finite means no data: those pixels
            get ivar = 0, with a warning saying how many). May be the same file as ``sci_path``
            with ``noise_hdu`` naming the extension.
        psf : PSFMixture, PSFGrid or path
            PSF in detector pixels (as for :class:`Exposure`). A grid's positions are in the
            pixel frame of ``sci_path``'s whole image (shifted by ``psf_offset_pix``).
        band : str
            Band name.
        cutout : (x0, y0, x1, y1), optional
            0-based pixel box, ``x0 <= x < x1``, ``y0 <= y < y1``; the WCS is sliced to match.
        hdu, noise_hdu : int or str, optional
            HDU of the science and noise arrays (default: the first HDU with 2-d data).
        mask : array_like of bool, optional
            Bad-pixel mask of the (cut-out) shape.
        counts_per_flux, background
            As for :class:`Exposure`.
        psf_offset_pix : (float, float)
            Where pixel (0, 0) of the whole image lies in the PSF grid's frame (default (0, 0));
            the exposure gets this plus the ``cutout`` corner ``(x0, y0)``.

        Returns
        -------
        Exposure

        Raises
        ------
        PhoValueError
            Neither or both of ``ivar_path`` and ``err_path``; a cutout outside the image.
        PhoDataError
            Negative error or inverse variance, as for :class:`Exposure`; an empty image; a
            header WCS that wcslib refuses (singular, e.g. CDELT = 0), naming the file.
        PhoValueError
            Complex pixel values.
        OSError
            Unreadable files.
        """
        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning, WcsError
        import warnings

        if (ivar_path is None) == (err_path is None):
            raise PhoValueError("give exactly one of ivar_path (inverse variance) and err_path (sigma) for the noise")

        def read(path, which, box):
            # memory-mapped, and only the cutout's rows and columns are read (hdu.section)
            with fits.open(path, memmap=True) as hdul:
                h = image_hdu(hdul, path, which)
                ny, nx = h.shape
                if np.iscomplexobj(h.data):  # a memory map: nothing is read here
                    raise PhoValueError(f"{path}: the image holds complex values (dtype {h.data.dtype}); pho needs real "
                                        "counts: write the real part (or the modulus) as the image")
                if box is None:
                    return np.array(h.section[:, :], dtype=np.float64), h.header, (ny, nx)
                x0, y0, x1, y1 = box
                if not (0 <= x0 < x1 <= nx and 0 <= y0 < y1 <= ny):
                    raise PhoValueError(
                        f"cutout {tuple(box)} is not inside the image (0, 0, {nx}, {ny}); need 0 <= x0 < x1 <= nx, "
                        "0 <= y0 < y1 <= ny"
                    )
                return np.array(h.section[y0:y1, x0:x1], dtype=np.float64), h.header, (ny, nx)

        box = None if cutout is None else tuple(int(v) for v in cutout)
        sci, header, full_shape = read(sci_path, hdu, box)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            try:
                wcs = WCS(header, naxis=2)
            except WcsError as exc:  # wcslib's SingularMatrixError and friends
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise PhoDataError(
                    f"{sci_path}: the WCS in its header is unusable ({type(exc).__name__}: {reason}); a singular WCS "
                    "(CDELT = 0, a CD matrix of zeros) gives pixels no size on the sky: fix the CD/PC/CDELT keywords"
                ) from None
        noise_path = ivar_path if ivar_path is not None else err_path
        noise, _, noise_shape = read(noise_path, noise_hdu, box)
        if noise_shape != full_shape:
            raise PhoValueError(f"{noise_path} has shape {noise_shape} but {sci_path} has {full_shape}")
        name = Path(sci_path).name
        try:
            offset = tuple(float(v) for v in psf_offset_pix)
        except (TypeError, ValueError):
            raise PhoValueError(f"psf_offset_pix={psf_offset_pix!r} must be two numbers (x0, y0)") from None
        if box is not None:
            x0, y0, x1, y1 = box
            wcs = wcs.slice((slice(y0, y1), slice(x0, x1)))
            name = f"{name}[{y0}:{y1}, {x0}:{x1}]"
            if len(offset) == 2:
                offset = (offset[0] + x0, offset[1] + y0)
        if err_path is not None:
            if np.any(noise < 0):
                raise PhoDataError(f"{err_path}: {int(np.sum(noise < 0))} pixels have negative error; errors must be >= 0")
            nodata = ~np.isfinite(noise) | (noise == 0)
            if nodata.any():
                warn(f"{err_path}: {int(nodata.sum())} pixels have error 0 or non-finite; they get ivar = 0 (not counted)", PhoDataWarning)
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(nodata, 0.0, 1.0 / noise**2)
        else:
            ivar = noise
        return cls(sci, ivar, wcs, psf, band, mask=mask, counts_per_flux=counts_per_flux, background=background, name=name,
                   psf_offset_pix=offset)
