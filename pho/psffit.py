"""Fit a Gaussian mixture to a PSF image: expectation-maximization, then a least-squares polish.

The mixture describes the PSF *before* integration over the detector pixel, in detector pixels,
relative to the PSF centre, because pho integrates every image Gaussian over the detector pixel
when it renders. See docs/fitpsf.md for the method, the merit functions and measured figures.

Coordinates: the image is ``[y, x]``, 0-based, the centre of pixel ``[0, 0]`` at ``(0, 0)``
(image pixels, which are detector pixels divided by the oversampling factor S). The fit works in
detector pixels relative to the found centre: ``u = (x - x_c) / S``, ``v = (y - y_c) / S``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PhoDataError, PhoDataWarning, PhoRangeError, PhoValueError, warn
from ._reference import FWHM_PER_SIGMA, MIN_FWHM_PIX
from .psf import PSFMixture, narrowest_fwhm_pix, narrowest_variance

__all__ = [
    "PSFFitResult",
    "PSFImage",
    "fit_psf_mixture",
    "read_psf_image",
    "find_psf_center",
    "plot_psf_fit",
    "default_pixel_integrated",
    "OVERSAMPLE_KEYS",
    "EE_RADII_DET_PIX",
]

log = logging.getLogger(__name__)

#: Header keywords searched, in this order, for the oversampling factor (PSF pixels per
#: detector pixel). WebbPSF/STPSF write OVERSAMP and DET_SAMP.
OVERSAMPLE_KEYS = ("OVERSAMP", "DET_SAMP", "OVERSAMPLE", "OVERSMPL", "OSAMP", "OVERSAMPLING", "SAMPLING")
#: Radii (detector pixels) at which encircled energies are reported.
EE_RADII_DET_PIX = (1.0, 2.0, 5.0)
#: Extension names that WebbPSF/STPSF use for PSFs already integrated over the detector pixel.
_INTEGRATED_EXTNAMES = ("DET_SAMP", "DET_DIST")
#: Smallest Gaussian variance allowed during the fit, detector pixels squared. A PSF Gaussian
#: narrower than 0.05 pixel (sigma) cannot be told from a delta function by any detector.
MIN_VARIANCE_DET_PIX2 = 0.05**2
#: Smallest variance the polish lets a Gaussian's Cholesky factors reach, detector pixels
#: squared: that of a Gaussian of FWHM ``MIN_FWHM_PIX``, the narrowest pho draws to 1e-3 (a hair
#: above it, so a component on the bound passes the drawability check).
MIN_DRAWABLE_VARIANCE_DET_PIX2 = (MIN_FWHM_PIX / FWHM_PER_SIGMA) ** 2 * (1.0 + 1e-6)
#: Gauss-Legendre points per axis for the integral over one detector pixel: 8 integrate a
#: Gaussian of the narrowest drawable width (FWHM ``MIN_FWHM_PIX``) to 1.4e-4 per axis (6: 4.3e-3).
N_QUAD_PER_AXIS = 8
#: Beyond this radius (detector pixels) from the centre the fit compares the image with the
#: model in bins of one detector pixel (S x S image pixels): the model there is smooth on that
#: scale, and the fit becomes ~S^2 times cheaper. Figures of merit always use every pixel.
FINE_RADIUS_DET_PIX = 4.0


# --------------------------------------------------------------------------------------------
# Reading and checking the image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSFImage:
    """A PSF image read from a FITS file, with what the header said about it.

    Attributes
    ----------
    data : ndarray of shape (ny, nx), float64
        The pixel values as stored (not normalized).
    oversample : float
        PSF pixels per detector pixel.
    oversample_source : str
        Where ``oversample`` came from: ``"argument"`` or ``"header OVERSAMP"`` etc.
    path : str
        The file read.
    hdu : int
        Index of the HDU read.
    extname : str
        The HDU's EXTNAME ('' if none).
    header_center_pix : tuple of float or None
        ``(x, y)`` 0-based from CENTERX/CENTERY keywords when present (reported, never used).
    """

    data: np.ndarray
    oversample: float
    oversample_source: str
    path: str
    hdu: int
    extname: str = ""
    header_center_pix: tuple | None = None


def read_psf_image(
    path: str | os.PathLike, hdu: int = 0, oversample: float | None = None, plane: int | None = None
) -> PSFImage:
    """Read a PSF image from one HDU of a FITS file and find its oversampling factor.

    Parameters
    ----------
    path : str or path-like
        FITS file.
    hdu : int
        HDU index (0 is the primary HDU).
    oversample : float, optional
        PSF pixels per detector pixel. If None, read from the first of ``OVERSAMPLE_KEYS``
        present in the HDU's header (then the primary header); if none is present a
        ``PhoValueError`` asks for it. If given and the header disagrees, the given value is
        used and a ``PhoDataWarning`` says so.
    plane : int, optional
        For an HDU holding a cube of PSFs (``(n, ny, nx)``, as WebbPSF/STPSF's ``psf_grid`` writes),
        the 0-based plane to read; must be None for a 2-D image.

    Returns
    -------
    PSFImage

    Raises
    ------
    OSError
        The file cannot be read.
    PhoValueError
        HDU out of range, no image in the HDU, not two-dimensional, or no oversampling known.
    """
    from astropy.io import fits

    path = str(path)
    with fits.open(path) as hdul:
        if not 0 <= hdu < len(hdul):
            raise PhoValueError(f"{path} has {len(hdul)} HDUs (0..{len(hdul) - 1}); --hdu {hdu} is out of range")
        h = hdul[hdu]
        if h.data is None:
            images = [i for i, x in enumerate(hdul) if x.is_image and x.data is not None]
            raise PhoValueError(
                f"HDU {hdu} of {path} holds no data; HDUs with images: {images[:20]}; pick one with --hdu"
            )
        if not h.is_image:
            raise PhoValueError(f"HDU {hdu} of {path} is a table, not an image; pick an image HDU with --hdu")
        data = np.array(h.data, dtype=np.float64)
        if plane is not None:
            if data.ndim != 3:
                raise PhoValueError(
                    f"HDU {hdu} of {path} holds a {data.ndim}-D array, not a cube of PSFs; planes (--planes) are "
                    "for a 3-D HDU, use --hdu/--hdus for images"
                )
            if not 0 <= plane < data.shape[0]:
                raise PhoValueError(f"HDU {hdu} of {path} has {data.shape[0]} planes (0..{data.shape[0] - 1}); plane {plane} is out of range")
            data = data[plane]
        elif data.ndim == 3:
            raise PhoValueError(
                f"HDU {hdu} of {path} holds a cube of {data.shape[0]} PSFs of shape {data.shape[1:]}; fit them as a "
                "grid with --planes all (positions from the DET_YX<i> keys WebbPSF writes), or pick one with --planes i"
            )
        if data.ndim != 2:
            raise PhoValueError(
                f"HDU {hdu} of {path} holds a {data.ndim}-D array of shape {data.shape}; a PSF image must be "
                "2-D. Extract one plane (e.g. with astropy) and write it to its own file"
            )
        header = h.header
        primary = hdul[0].header
        extname = str(header.get("EXTNAME", ""))
        found = None
        for hdr in (header, primary):
            for key in OVERSAMPLE_KEYS:
                if key in hdr:
                    try:
                        found = (float(hdr[key]), key)
                    except (TypeError, ValueError):
                        continue
                    break
            if found:
                break
        center = None
        if "CENTERX" in header and "CENTERY" in header:
            center = (float(header["CENTERX"]), float(header["CENTERY"]))
    if oversample is None:
        if found is None:
            raise PhoValueError(
                f"no oversampling keyword ({', '.join(OVERSAMPLE_KEYS)}) in HDU {hdu} of {path} or its primary "
                "header; give the number of PSF pixels per detector pixel with --oversample S "
                "(oversample=S), e.g. 1 for a PSF sampled at the detector's pixels"
            )
        oversample, source = found[0], f"header {found[1]}"
    else:
        source = "argument"
        if found is not None and not np.isclose(found[0], oversample):
            warn(
                f"--oversample {oversample:g} differs from the header's {found[1]}={found[0]:g} in HDU {hdu} of "
                f"{path}; using {oversample:g} as given",
                PhoDataWarning,
            )
    _check_oversample(oversample)
    return PSFImage(data, float(oversample), source, path, hdu, extname, center)


def default_pixel_integrated(oversample: float, extname: str = "") -> bool:
    """Whether to take a PSF image as already integrated over the detector pixel, by default.

    True for detector sampling (``oversample == 1``: HST, TinyTim and empirical PSFs are effective
    PSFs) and for WebbPSF/STPSF's detector-sampled extensions (EXTNAME ``DET_SAMP``,
    ``DET_DIST``); False otherwise (WebbPSF's oversampled ``OVERSAMP`` extension samples the
    optical PSF).
    """
    return bool(np.isclose(float(oversample), 1.0)) or extname.strip().upper() in _INTEGRATED_EXTNAMES


def _check_oversample(oversample: float) -> None:
    if not (np.isfinite(oversample) and 0.5 <= oversample <= 50):
        raise PhoRangeError(
            f"oversampling factor {oversample!r} is outside [0.5, 50] PSF pixels per detector pixel; "
            "give the right value with --oversample (1 for a PSF at detector sampling)",
            oversample,
            0.5,
            50,
        )


#: A PSF image whose median pixel is above ``1 - FLAT_CONTRAST`` of its peak holds no PSF (flat).
FLAT_CONTRAST = 0.5


def _check_image(image) -> tuple[np.ndarray, np.ndarray, dict]:
    """Validate a PSF image; return (normalized image with NaN kept, finite mask, notes)."""
    image = np.array(image, dtype=np.float64)
    if image.ndim != 2:
        raise PhoValueError(f"a PSF image must be 2-D (ny, nx), got shape {image.shape}")
    if min(image.shape) < 5:
        raise PhoValueError(f"PSF image of shape {image.shape} is too small; need at least 5 x 5 pixels")
    finite = np.isfinite(image)
    n_bad = int((~finite).sum())
    notes = {"n_nonfinite": n_bad}
    if n_bad == image.size:
        raise PhoDataError(f"PSF image of shape {image.shape} has no finite pixels")
    if n_bad:
        frac = n_bad / image.size
        if frac > 0.5:
            raise PhoDataError(
                f"PSF image has {n_bad} NaN or infinite pixels of {image.size} ({frac:.0%}); too few remain to fit. "
                "Replace them (e.g. with a model PSF) or crop the image to its valid part"
            )
        warn(
            f"PSF image has {n_bad} NaN or infinite pixels ({frac:.2%}); they are left out of the fit and of the "
            "figures of merit",
            PhoDataWarning,
        )
    vals = image[finite]
    total = float(vals.sum())
    peak = float(vals.max())
    if not (total > 0 and peak > 0):
        raise PhoDataError(
            f"PSF image sums to {total:.4g} with maximum {peak:.4g}; a PSF must have positive flux. "
            "Is this the right HDU, or is the image background-subtracted to zero?"
        )
    median = float(np.median(vals))
    if peak - median <= FLAT_CONTRAST * peak:
        raise PhoDataError(
            f"the PSF image is flat: its median pixel is {median / peak:.3g} of its peak (a PSF stands out: the median "
            f"of a PSF image is below {1 - FLAT_CONTRAST:g} of the peak), so no PSF is present to fit. Is this the right "
            "file and HDU (--hdu), or a cutout smaller than the PSF's core?"
        )
    neg = vals < 0
    notes["n_negative"] = int(neg.sum())
    if neg.any():
        neg_frac = float(-vals[neg].sum() / total)
        notes["negative_flux_frac"] = neg_frac
        warn(
            f"PSF image has {int(neg.sum())} negative pixels (lowest {vals.min() / peak:.3g} of the peak, "
            f"together {neg_frac:.3g} of the total flux); the EM start gives them zero weight, the "
            "least-squares polish and the figures of merit use them as they are",
            PhoDataWarning,
        )
    normalized = image / total
    return normalized, finite, notes


def find_psf_center(image: np.ndarray, oversample: float = 1.0, n_iter: int = 50) -> tuple[float, float]:
    """Centre of a PSF image by an iterated Gaussian-windowed centroid.

    Starting at the brightest pixel (the mean position of pixels within 10% of the maximum of a
    lightly smoothed image), the centre moves to the centroid of the image weighted by a round
    Gaussian window of sigma 1 detector pixel until it moves less than 1e-6 pixel. For a PSF
    symmetric under a half turn this is its centre of symmetry; it is not biased by far wings
    truncated by the box.

    Parameters
    ----------
    image : ndarray of shape (ny, nx)
        PSF image; NaN pixels are ignored, negative ones used as they are.
    oversample : float
        PSF pixels per detector pixel (sets the window size).
    n_iter : int
        Most iterations.

    Returns
    -------
    (x, y) : tuple of float
        0-based image-pixel coordinates of the centre.
    """
    img = np.where(np.isfinite(image), image, 0.0)
    ny, nx = img.shape
    # start: brightest region of a 3x3 box-smoothed image (robust to one hot pixel)
    pad = np.pad(img, 1, mode="constant")
    smooth = sum(pad[dy : dy + ny, dx : dx + nx] for dy in range(3) for dx in range(3)) / 9.0
    iy, ix = np.unravel_index(np.argmax(smooth), smooth.shape)
    x0, y0 = float(ix), float(iy)
    sigma = max(1.0, float(oversample))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    for _ in range(n_iter):
        w = img * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2)
        s = w.sum()
        if not s > 0:
            break
        x1, y1 = float((w * xx).sum() / s), float((w * yy).sum() / s)
        moved = np.hypot(x1 - x0, y1 - y0)
        x0, y0 = x1, y1
        if moved < 1e-6:
            break
    # The windowed centroid of a Gaussian-windowed symmetric PSF sits at its centre; for an
    # asymmetric core it is a fixed, documented point. Clamp nothing: report what was found.
    if not (0 <= x0 <= nx - 1 and 0 <= y0 <= ny - 1):
        raise PhoDataError(f"PSF centre found at ({x0:.2f}, {y0:.2f}), outside the image {nx} x {ny}; give --center")
    return x0, y0


# --------------------------------------------------------------------------------------------
# The mixture model on sample points, with derivatives
# --------------------------------------------------------------------------------------------


def _quadrature(pixel_integrated: bool, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (Q, 2) and weights (Q,) of the rule integrating over a square of side ``width``
    (detector pixels) centred on a sample, averaged (weights sum to one). One point if not
    integrated."""
    if not pixel_integrated:
        return np.zeros((1, 2)), np.ones(1)
    t, w = np.polynomial.legendre.leggauss(N_QUAD_PER_AXIS)
    t = 0.5 * width * t
    w = 0.5 * w
    du, dv = np.meshgrid(t, t)
    ww = np.outer(w, w)
    return np.stack([du.ravel(), dv.ravel()], axis=1), ww.ravel()


def _fit_samples(img, u, v, xx, yy, oversample, fine_radius_det_pix=FINE_RADIUS_DET_PIX):
    """Samples the fit uses: every pixel within the fine radius, bins of ~one detector pixel
    beyond it.

    Parameters are the fitted pixels' values, detector-pixel offsets (u, v) and integer image
    coordinates (xx, yy), all of shape (N,). Returns (values, u, v, counts, spread): summed
    values, member-mean offsets and member counts of each of M samples, each of shape (M,), and
    the covariance of each sample's members about its centre, ``(s_uu, s_uv, s_vv)``.
    """
    b = int(round(oversample))
    fine = np.hypot(u, v) <= fine_radius_det_pix
    zero = np.zeros_like(img)
    if b <= 1 or fine.all():
        return img, u, v, np.ones_like(img), (zero, zero, zero)
    outer = ~fine
    key = (yy[outer] // b) * (xx.max() // b + 2) + (xx[outer] // b)
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=img[outer])
    uo, vo = u[outer], v[outer]
    ub = np.bincount(inv, weights=uo) / counts
    vb = np.bincount(inv, weights=vo) / counts
    suu = np.maximum(np.bincount(inv, weights=uo * uo) / counts - ub**2, 0.0)
    suv = np.bincount(inv, weights=uo * vo) / counts - ub * vb
    svv = np.maximum(np.bincount(inv, weights=vo * vo) / counts - vb**2, 0.0)
    nf = int(fine.sum())
    z = np.zeros(nf)
    return (
        np.concatenate([img[fine], sums]),
        np.concatenate([u[fine], ub]),
        np.concatenate([v[fine], vb]),
        np.concatenate([np.ones(nf), counts.astype(float)]),
        (np.concatenate([z, suu]), np.concatenate([z, suv]), np.concatenate([z, svv])),
    )


def _unpack(p: np.ndarray):
    """Parameters (K, 6): a, mu_u, mu_v, log l11, l21, log l22, with amp = softmax(a) (so the
    amplitudes are positive and sum to one) and covariance C = L L^T, L = [[l11, 0], [l21, l22]]."""
    p = p.reshape(-1, 6)
    a = np.exp(p[:, 0] - p[:, 0].max())
    return a / a.sum(), p[:, 1], p[:, 2], np.exp(p[:, 3]), p[:, 4], np.exp(p[:, 5])


def _floor_narrowest_axis(cuu, cuv, cvv, min_var=MIN_DRAWABLE_VARIANCE_DET_PIX2):
    """Raise each covariance's smaller eigenvalue to ``min_var`` (detector pixels^2) where it is
    below, keeping the eigenvectors and the larger eigenvalue. Returns (cuu, cuv, cvv, number
    of components changed)."""
    cov = np.stack([np.stack([cuu, cuv], -1), np.stack([cuv, cvv], -1)], -2)
    lam, vec = np.linalg.eigh(cov)
    low = lam[:, 0] < min_var
    if not np.any(low):
        return cuu, cuv, cvv, 0
    target = min_var
    for _ in range(20):
        lam[:, 0] = np.maximum(lam[:, 0], target)
        lam[:, 1] = np.maximum(lam[:, 1], lam[:, 0])
        out = np.einsum("kij,kj,klj->kil", vec, lam, vec)
        # a needle-like component (one axis ~1e5 times the other) loses the narrow axis's last
        # digits in the (xx, xy, yy) form: aim higher until the form itself clears the floor
        if np.all(narrowest_variance(out[:, 0, 0], out[:, 0, 1], out[:, 1, 1]) >= min_var * (1.0 - 1e-9)):  # (min_var sits 1e-6 above the drawable floor)
            break
        target *= 1.001
    return out[:, 0, 0].copy(), out[:, 0, 1].copy(), out[:, 1, 1].copy(), int(low.sum())


def _pack(amp, mu_u, mu_v, cuu, cuv, cvv) -> np.ndarray:
    l11 = np.sqrt(cuu)
    l21 = cuv / l11
    l22 = np.sqrt(np.maximum(cvv - l21**2, 1e-300))
    # an amplitude EM drove to zero becomes a finite, negligible weight (log 0 would stall the polish)
    log_amp = np.log(np.maximum(amp, 1e-30))
    return np.stack([log_amp, mu_u, mu_v, np.log(l11), l21, np.log(l22)], axis=1).ravel()


def _model_and_jac(p, u, v, offsets, qweights, area, want_jac=True, spread=None):
    """Model values at N samples and their Jacobian to the packed parameters.

    Model_n = area_n * sum_q w_q * sum_k amp_k N(u_n + du_q, v_n + dv_q; mu_k, C_k + S_n), with
    N the normalized Gaussian density and ``S_n`` the covariance of the sample's member points
    about its centre (zero for a single pixel; for a bin of pixels, replacing the sum over its
    members by one Gaussian of covariance C + S is exact to second order in the bin size).

    Parameters
    ----------
    p : ndarray of shape (6K,)
        Packed parameters (see ``_unpack``).
    u, v : ndarray of shape (N,)
        Sample centres, detector pixels from the PSF centre.
    offsets, qweights : ndarray of shape (Q, 2) and (Q,)
        Quadrature over the detector pixel (one point at zero when not integrating).
    area : float or ndarray of shape (N,)
        Detector pixels^2 per sample.
    want_jac : bool
        Also return the Jacobian.
    spread : tuple of three ndarrays of shape (N,), optional
        ``(s_uu, s_uv, s_vv)`` per sample, detector pixels^2.

    Returns
    -------
    model : ndarray of shape (N,)
    jac : ndarray of shape (N, 6K) or None
    """
    area = np.broadcast_to(np.asarray(area, dtype=float), u.shape)[:, None]
    amp, mu, mv, l11, l21, l22 = _unpack(p)
    c11, c12, c22 = l11**2, l11 * l21, l21**2 + l22**2
    if spread is None:
        a, b, c = c11[None, :], c12[None, :], c22[None, :]
    else:
        a = c11 + spread[0][:, None]
        b = c12 + spread[1][:, None]
        c = c22 + spread[2][:, None]
    det = a * c - b * b
    i11, i12, i22 = c / det, -b / det, a / det
    norm = area * amp / (2 * np.pi * np.sqrt(det))
    N = u.size
    K = amp.size
    model = np.zeros(N)
    jac = np.zeros((N, 6 * K)) if want_jac else None
    for q in range(len(qweights)):
        du = (u + offsets[q, 0])[:, None] - mu  # (N, K)
        dv = (v + offsets[q, 1])[:, None] - mv
        w1 = i11 * du + i12 * dv  # C^-1 d
        w2 = i12 * du + i22 * dv
        g = (qweights[q] * norm) * np.exp(-0.5 * (du * w1 + dv * w2))
        model += g.sum(axis=1)
        if want_jac:
            # d log G / d C = M = (C^-1 d d^T C^-1 - C^-1) / 2; d log G = M11 dC11 + 2 M12 dC12 + M22 dC22
            m11 = 0.5 * (w1 * w1 - i11)
            m12 = 0.5 * (w1 * w2 - i12)
            m22 = 0.5 * (w2 * w2 - i22)
            jac[:, 0::6] += g - amp * g.sum(axis=1, keepdims=True)
            jac[:, 1::6] += g * w1
            jac[:, 2::6] += g * w2
            jac[:, 3::6] += g * (2 * m11 * c11 + 2 * m12 * c12)
            jac[:, 4::6] += g * (2 * m12 * l11 + 2 * m22 * l21)
            jac[:, 5::6] += g * (2 * m22 * l22**2)
    return model, jac


# --------------------------------------------------------------------------------------------
# Expectation-maximization
# --------------------------------------------------------------------------------------------


def _em(u, v, weights, amp, mu_u, mu_v, cov, max_iter, tol, min_var):
    """Weighted EM for a K-Gaussian mixture on points (u, v) with weights >= 0.

    Maximizes sum_n w_n log p(x_n), p the normalized mixture density (the Poisson log-likelihood
    of the image with the total flux free). Returns (amp, mu_u, mu_v, cov (K, 2, 2), n_iter,
    converged, objective).
    """
    X = np.stack([u, v], axis=1)
    wsum = weights.sum()
    wn = weights / wsum
    amp = amp / amp.sum()
    mu = np.stack([mu_u, mu_v], axis=1).astype(float)
    cov = cov.astype(float).copy()
    prev = -np.inf
    converged = False
    obj = -np.inf
    for it in range(1, max_iter + 1):
        # E step, in logs
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
        dx = X[:, 0:1] - mu[:, 0]
        dy = X[:, 1:2] - mu[:, 1]
        quad = (cov[:, 1, 1] * dx * dx - 2 * cov[:, 0, 1] * dx * dy + cov[:, 0, 0] * dy * dy) / det
        logp = np.log(amp) - np.log(2 * np.pi) - 0.5 * np.log(det) - 0.5 * quad  # (N, K)
        m = logp.max(axis=1, keepdims=True)
        ex = np.exp(logp - m)
        s = ex.sum(axis=1, keepdims=True)
        obj = float(np.sum(wn * (np.log(s[:, 0]) + m[:, 0])))
        r = ex * (wn[:, None] / s)  # w_n r_nk
        # M step
        Wk = r.sum(axis=0)
        Wk = np.maximum(Wk, 1e-300)
        amp = Wk / Wk.sum()
        mu = (r.T @ X) / Wk[:, None]
        dx = X[:, 0:1] - mu[:, 0]
        dy = X[:, 1:2] - mu[:, 1]
        cov[:, 0, 0] = np.einsum("nk,nk->k", r, dx * dx) / Wk + min_var
        cov[:, 0, 1] = cov[:, 1, 0] = np.einsum("nk,nk->k", r, dx * dy) / Wk
        cov[:, 1, 1] = np.einsum("nk,nk->k", r, dy * dy) / Wk + min_var
        amp = np.maximum(amp, 1e-12)
        if abs(obj - prev) < tol:
            converged = True
            break
        prev = obj
    return amp, mu[:, 0], mu[:, 1], cov, it, converged, obj


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PSFFitResult:
    """A fitted PSF mixture with its figures of merit.

    Attributes
    ----------
    mixture : PSFMixture
        The mixture in detector pixels relative to ``center_pix`` (amplitudes sum to one), with
        the fit's provenance and figures in ``mixture.meta``.
    ngauss : int
        Number of Gaussians K.
    oversample : float
        PSF pixels per detector pixel.
    pixel_integrated : bool
        Whether the image was taken as already integrated over the detector pixel (the mixture's
        pixel integrals were fitted to it) or as samples of the PSF itself.
    center_pix : tuple of float
        ``(x, y)``, 0-based image pixels, of the point the mixture is relative to.
    center_source : str
        ``"found"`` or ``"given"``.
    radius_det_pix : float or None
        Radius of the fitted region around the centre, detector pixels (None: whole image).
    max_abs_residual_frac_peak : float
        max |data - model| / max(data) over the image's finite pixels.
    sum_abs_residual_frac : float
        sum |data - model| / sum(data) over the image's finite pixels.
    ee_radii_det_pix : tuple of float
        Radii of the encircled energies, detector pixels.
    ee_data, ee_model : ndarray of shape (R,)
        Sum of the data (model) over pixels whose centres lie within each radius of the centre,
        as a fraction of the image's total flux (the data sum to one).
    polished : bool
        Whether the least-squares polish was kept (it is kept when it lowers both figures).
    em_iterations : int
        EM iterations run.
    model_scale : float
        F in model = F * mixture, fitted: the normalized image sums to one over its pixels while
        the mixture sums to one over the whole plane, so F is about 1 / (fraction of the
        mixture's flux that falls on the image).
    data, model : ndarray of shape (ny, nx)
        Normalized image (sum one over finite pixels; NaN kept) and ``model_scale`` times the
        mixture rendered on its pixels (integrated over the detector pixel if
        ``pixel_integrated``).
    fit_mask : ndarray of shape (ny, nx), bool
        Pixels used in the fit.
    """

    mixture: PSFMixture
    ngauss: int
    oversample: float
    pixel_integrated: bool
    center_pix: tuple
    center_source: str
    radius_det_pix: float | None
    max_abs_residual_frac_peak: float
    sum_abs_residual_frac: float
    ee_radii_det_pix: tuple
    ee_data: np.ndarray
    ee_model: np.ndarray
    polished: bool
    em_iterations: int
    model_scale: float
    data: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    fit_mask: np.ndarray = field(repr=False)

    @property
    def residual(self) -> np.ndarray:
        """data - model, ndarray of shape (ny, nx), in units of the normalized image."""
        return self.data - self.model

    def summary(self) -> str:
        """One line of figures: K, worst residual, summed residual, encircled energies."""
        ee = " ".join(
            f"EE({r:g})={d:.4f}/{m:.4f}" for r, d, m in zip(self.ee_radii_det_pix, self.ee_data, self.ee_model)
        )
        return (
            f"K={self.ngauss}  max|res|/peak={self.max_abs_residual_frac_peak:.4f}  "
            f"sum|res|/sum={self.sum_abs_residual_frac:.4f}  {ee} (data/model)"
        )


def _gram(J: np.ndarray, rows: int = 256) -> np.ndarray:
    """J^T J for a tall J (N, P), summed over blocks of rows: small products stay on one BLAS
    thread, which on a busy machine is 10-50x faster than one threaded product (measured)."""
    A = np.zeros((J.shape[1], J.shape[1]))
    for i in range(0, J.shape[0], rows):
        block = J[i : i + rows]
        A += block.T @ block
    return A


def _levenberg_marquardt(model_jac, data, p0, lo, sigma, max_iter=100, rtol=1e-10, hi=None):
    """Minimize sum ((model(p) - data) / sigma)^2 by Levenberg-Marquardt on the normal equations.

    ``model_jac(p, want_jac)`` returns (model (N,), jac (N, P) or None). Parameters are kept in
    ``[lo, hi]`` (P,) by projection (``hi`` default: no upper bound). Returns (p, iterations, note).
    """
    hi = np.full(len(p0), np.inf) if hi is None else hi
    p = p0.copy()
    wt = 1.0 / sigma
    data = data * wt

    def model_jac_w(p, want_jac):
        m, J = model_jac(p, want_jac)
        return m * wt, (J * wt[:, None] if want_jac else None)

    m, J = model_jac_w(p, True)
    r = m - data
    cost = float(r @ r)
    lam = 1e-3
    note = "reached the iteration limit"
    it = 0
    for it in range(1, max_iter + 1):
        A = _gram(J)
        g = J.T @ r
        diag = np.diag(A).copy()
        diag[diag <= 0] = 1e-30
        improved = False
        for _ in range(30):
            try:
                step = np.linalg.solve(A + lam * np.diag(diag), -g)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            p_new = np.minimum(np.maximum(p + step, lo), hi)
            with np.errstate(all="ignore"):  # a wild trial step may overflow; it is rejected below
                m_new = model_jac_w(p_new, False)[0]
            r_new = m_new - data
            cost_new = float(r_new @ r_new)
            if np.isfinite(cost_new) and cost_new < cost:
                improved = True
                break
            lam *= 4.0
        if not improved:
            note = "no step lowers the cost"
            break
        rel = (cost - cost_new) / cost
        p, cost = p_new, cost_new
        lam = max(lam / 3.0, 1e-12)
        m, J = model_jac_w(p, True)
        r = m - data
        if rel < rtol:
            note = "converged"
            break
    return p, it, note


#: EM starts: factors on the core's and the widest initial width (see ``_initial_mixture``).
_START_WIDTH_FACTORS = ((1.0, 1.0), (1.0, 0.5), (1.0, 2.0))


def _initial_mixture(img, u, v, area, ngauss, core_factor=1.0, wide_factor=1.0):
    """EM start: K concentric round Gaussians with log-spaced widths from the core's (sigma of
    the half-maximum area, times ``core_factor``) to the region's rms radius (times
    ``wide_factor``), equal amplitudes. Lengths in detector pixels."""
    w = np.maximum(img, 0.0)
    peak = img.max()
    n_half = np.count_nonzero(img > 0.5 * peak)
    fwhm = 2.0 * np.sqrt(max(n_half, 1) * area / np.pi)
    sigma_core = max(fwhm / 2.3548, 0.1)
    r2 = float(np.sum(w * (u * u + v * v)) / w.sum())
    sigma_wide = max(np.sqrt(r2 / 2.0), 2.0 * sigma_core)
    sigma_core *= core_factor
    sigma_wide = max(sigma_wide * wide_factor, 1.5 * sigma_core)
    sigmas = np.geomspace(sigma_core, sigma_wide, ngauss) if ngauss > 1 else np.array([max(np.sqrt(r2 / 2.0), 0.1)])
    cov = np.zeros((ngauss, 2, 2))
    cov[:, 0, 0] = cov[:, 1, 1] = sigmas**2
    return np.full(ngauss, 1.0 / ngauss), np.zeros(ngauss), np.zeros(ngauss), cov


def _figures(data, model, finite, center_pix, oversample):
    d = data[finite]
    m = model[finite]
    res = d - m
    max_frac = float(np.max(np.abs(res)) / np.max(d))
    sum_frac = float(np.sum(np.abs(res)) / np.sum(d))
    ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r_det = np.hypot(xx - center_pix[0], yy - center_pix[1])[finite] / oversample
    ee_d = np.array([d[r_det <= r].sum() / d.sum() for r in EE_RADII_DET_PIX])
    ee_m = np.array([m[r_det <= r].sum() for r in EE_RADII_DET_PIX])
    return max_frac, sum_frac, ee_d, ee_m


def fit_psf_mixture(
    image,
    ngauss: int,
    oversample: float,
    *,
    center_pix: tuple[float, float] | None = None,
    radius_det_pix: float | None = None,
    pixel_integrated: bool | None = None,
    polish: bool = True,
    max_em_iter: int = 300,
    em_tol: float = 1e-7,
    max_lm_iter: int = 100,
    n_starts: int = 1,
    meta: dict | None = None,
    init: PSFMixture | None = None,
) -> PSFFitResult:
    """Fit a K-Gaussian mixture to a PSF image.

    The image is normalized to sum to one over its finite pixels. A weighted EM fits K
    Gaussians with free centres, covariances and amplitudes to the samples (taken as points),
    maximizing ``sum_n I_n log M_n - sum_n M_n`` (the Poisson log-likelihood of the image; to
    second order the chi-square with per-pixel variance equal to the pixel value). For a
    pixel-integrated image the box's variance 1/12 pixel^2 is then taken off each Gaussian
    (Sheppard's correction). A least-squares polish (Levenberg-Marquardt, analytic Jacobian,
    amplitudes constrained positive and summing to one) then minimizes ``sum_n (I_n - M_n)^2``
    with the model integrated exactly over the detector pixel where the image is, and is kept
    if it lowers both the worst and the summed absolute residual (always, for a
    pixel-integrated image, where only it fits the pixel integrals exactly).

    Parameters
    ----------
    image : array_like of shape (ny, nx)
        PSF image, any normalization, any shape (square or not). NaN/inf pixels are left out
        (with a warning); negative pixels are kept (with a warning).
    ngauss : int
        Number of Gaussians K, 1..20.
    oversample : float
        PSF pixels per detector pixel S (1 for a PSF at detector sampling).
    center_pix : (float, float), optional
        ``(x, y)`` 0-based image pixels of the PSF centre; found by :func:`find_psf_center`
        if not given.
    radius_det_pix : float, optional
        Fit only pixels whose centres are within this radius of the centre, detector pixels.
        Default: the whole image.
    pixel_integrated : bool, optional
        True if each image value is the PSF integrated over a detector pixel centred on it
        (an effective PSF: HST PSFs at native sampling, WebbPSF's DET_SAMP extension); the
        mixture is then fitted so that its integrals over the detector pixel match the image.
        False if the image samples the PSF itself (WebbPSF's oversampled first extension).
        Default: True when ``oversample == 1``, else False.
    polish : bool
        Run the least-squares polish after EM.
    n_starts : int
        Number of EM starts, 1..3 (initial widths spread as by default, with the widest halved,
        with the widest doubled). Each is polished; the one with the lowest polish merit (sum
        of squared residuals) is kept. More starts cost proportionally more time and help
        little on the JWST PSF (docs/fitpsf.md).
    max_em_iter : int
        Most EM iterations.
    em_tol : float
        EM stops when its objective (mean log density per unit flux) changes by less.
    meta : dict, optional
        Extra header entries for the mixture (input file, HDU, ...).
    init : PSFMixture, optional
        Start EM from this mixture (detector pixels, relative to the centre; for a
        pixel-integrated image, the PSF before the pixel, as this function returns it) instead
        of the concentric start. EM and the polish move each Gaussian continuously from its
        start, so a start taken from a neighbouring PSF's fit keeps Gaussian l "the same"
        Gaussian: how ``pho.psfgridfit.fit_psf_grid`` fits a grid in a shared component order.
        Needs ``n_starts=1`` and ``init.n_gauss == ngauss``.

    Returns
    -------
    PSFFitResult

    Raises
    ------
    PhoValueError
        Bad shape, K out of range, radius containing too few pixels.
    PhoRangeError
        Oversampling factor outside [0.5, 50].
    PhoDataError
        No finite pixels, more than half non-finite, non-positive total flux; a flat image (median
        above half the peak: no PSF present); a fitted component narrower than
        ``pho._reference.MIN_FWHM_PIX`` (0.35 detector pixel FWHM: the image is too undersampled).

    Examples
    --------
    >>> import numpy as np, pho
    >>> y, x = np.mgrid[0:64, 0:64]
    >>> img = np.exp(-0.5 * ((x - 31.7) ** 2 + (y - 32.2) ** 2) / 3.0**2)
    >>> fit = pho.fit_psf_mixture(img, ngauss=1, oversample=4)
    >>> round(float(fit.mixture.cxx[0]), 4)  # (3 / 4) ** 2 detector pixels squared
    0.5625
    """

    if not (isinstance(ngauss, (int, np.integer)) and 1 <= ngauss <= 20):
        raise PhoValueError(f"ngauss={ngauss!r}: the number of Gaussians must be an integer from 1 to 20")
    _check_oversample(float(oversample))
    if n_starts not in (1, 2, 3):
        raise PhoValueError(f"n_starts={n_starts!r}: the number of EM starts must be 1, 2 or 3")
    if init is not None:
        if not isinstance(init, PSFMixture):
            raise TypeError(f"init must be a pho.PSFMixture, got {type(init).__name__}")
        if init.n_gauss != ngauss or n_starts != 1:
            raise PhoValueError(
                f"init has {init.n_gauss} Gaussians and n_starts={n_starts}; a start mixture needs ngauss={init.n_gauss} "
                "and n_starts=1"
            )
    S = float(oversample)
    data, finite, notes = _check_image(image)
    if pixel_integrated is None:
        pixel_integrated = default_pixel_integrated(S)
    ny, nx = data.shape
    if center_pix is None:
        cx, cy = find_psf_center(data, S)
        center_source = "found"
    else:
        cx, cy = (float(c) for c in center_pix)
        if not (np.isfinite(cx) and np.isfinite(cy) and 0 <= cx <= nx - 1 and 0 <= cy <= ny - 1):
            raise PhoValueError(
                f"centre ({cx}, {cy}) is outside the image (x in 0..{nx - 1}, y in 0..{ny - 1}, 0-based pixels)"
            )
        center_source = "given"
    yy, xx = np.mgrid[0:ny, 0:nx]
    u_all = (xx - cx) / S
    v_all = (yy - cy) / S
    mask = finite.copy()
    if radius_det_pix is not None:
        if not (np.isfinite(radius_det_pix) and radius_det_pix > 0):
            raise PhoValueError(f"radius {radius_det_pix!r} must be a positive number of detector pixels")
        mask &= np.hypot(u_all, v_all) <= radius_det_pix
    n_fit = int(mask.sum())
    if n_fit < 6 * ngauss:
        raise PhoValueError(
            f"only {n_fit} finite pixels lie within radius {radius_det_pix} detector pixels of the centre; "
            f"fitting {ngauss} Gaussians needs at least {6 * ngauss}. Give a larger --radius"
        )
    img, u, v, counts, spread = _fit_samples(data[mask], u_all[mask], v_all[mask], xx[mask], yy[mask], S)
    area = counts / S**2  # detector pixels^2 per sample

    offsets, qweights = _quadrature(pixel_integrated, 1.0)
    weights = np.maximum(img, 0.0)

    def scaled_model(q, want_jac):
        """Model F * mixture on the fit samples; q = (packed mixture, log F)."""
        m, J = _model_and_jac(q[:-1], u, v, offsets, qweights, area, want_jac, spread)
        F = np.exp(q[-1])
        if want_jac:
            J = np.hstack([J * F, (m * F)[:, None]])
        return m * F, J

    def figures_of(q):
        model = np.zeros_like(data)
        model[finite] = np.exp(q[-1]) * _model_and_jac(
            q[:-1], u_all[finite], v_all[finite], offsets, qweights, 1.0 / S**2, want_jac=False
        )[0]
        return model, _figures(data, model, finite, (cx, cy), S)

    candidates = []
    for start, (core_factor, wide_factor) in enumerate(_START_WIDTH_FACTORS[:n_starts]):
        # EM on the (non-negative part of the) image, the samples taken as points
        if init is None:
            amp0, mu0, mv0, cov0 = _initial_mixture(
                data[mask], u_all[mask], v_all[mask], 1.0 / S**2, ngauss, core_factor, wide_factor
            )
        else:
            # EM sees a pixel-integrated image as points: its Gaussians are wider by the box (1/12)
            box = 1.0 / 12.0 if pixel_integrated else 0.0
            amp0, mu0, mv0 = init.amp.copy(), init.x.copy(), init.y.copy()
            cov0 = init.covariances + box * np.eye(2)
        amp, mu, mv, cov, n_iter, converged, _ = _em(
            u, v, weights, amp0, mu0, mv0, cov0, max_em_iter, em_tol, MIN_VARIANCE_DET_PIX2
        )
        if not converged:
            log.info("EM did not converge in %d iterations (K=%d, start %d); the polish goes on", n_iter, ngauss, start)
        if pixel_integrated:
            # Sheppard's correction: sampling the pixel-integrated PSF adds the box's variance 1/12.
            cov[:, 0, 0] = np.maximum(cov[:, 0, 0] - 1.0 / 12.0, MIN_VARIANCE_DET_PIX2)
            cov[:, 1, 1] = np.maximum(cov[:, 1, 1] - 1.0 / 12.0, MIN_VARIANCE_DET_PIX2)
            det_min = cov[:, 0, 0] * cov[:, 1, 1] * 0.99
            cov[:, 0, 1] = np.sign(cov[:, 0, 1]) * np.minimum(np.abs(cov[:, 0, 1]), np.sqrt(det_min))
            cov[:, 1, 0] = cov[:, 0, 1]
        # The image covers only part of the PSF; its normalization is not the mixture's. A free
        # scale F (model = F * mixture, amplitudes summing to one) absorbs the flux outside it.
        p_em = _pack(amp, mu, mv, cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1])
        m_em = scaled_model(np.append(p_em, 0.0), False)[0]
        q_em = np.append(p_em, np.log(np.sum(img * m_em / counts) / np.sum(m_em * m_em / counts)))
        q_best = q_em
        model_best, fig_best = figures_of(q_em)
        polished = False
        if polish:
            # Widths at least the narrowest pho draws; no wider than 100 times the image, nor
            # sheared past that: a Gaussian of (almost) no weight otherwise drifts off to infinite
            # variance (K = 14 on the JWST image reached 1e41 pixel^2, whose narrow axis then
            # rounded to zero).
            extent = 100.0 * max(data.shape) / S  # detector pixels
            lo = np.full(q_em.size, -np.inf)
            hi = np.full(q_em.size, np.inf)
            lo[3:-1:6] = lo[5:-1:6] = 0.5 * np.log(MIN_DRAWABLE_VARIANCE_DET_PIX2)
            hi[3:-1:6] = hi[5:-1:6] = np.log(extent)
            lo[4:-1:6], hi[4:-1:6] = -extent, extent
            q0 = np.minimum(np.maximum(q_em, lo), hi)
            if np.any(q0 != q_em):  # widths moved to the bounds: the scale F that best fits them
                m0 = scaled_model(np.append(q0[:-1], 0.0), False)[0]
                q0[-1] = np.log(np.sum(img * m0 / counts) / np.sum(m0 * m0 / counts))
            q_fit, n_lm, lm_note = _levenberg_marquardt(scaled_model, img, q0, lo, np.sqrt(counts), max_iter=max_lm_iter,
                                                        hi=hi)
            model_pol, fig_pol = figures_of(q_fit)
            log.info("start %d polish: %s after %d iterations; figures %s -> %s", start, lm_note, n_lm,
                     fig_best[:2], fig_pol[:2])  # fmt: skip
            if pixel_integrated or (fig_pol[0] <= fig_best[0] and fig_pol[1] <= fig_best[1]):
                q_best, model_best, fig_best = q_fit, model_pol, fig_pol
                polished = True
        resid = scaled_model(q_best, False)[0] - img
        chi2 = float(np.sum(resid * resid / counts))
        candidates.append((chi2, start, q_best, model_best, fig_best, polished, n_iter))
    chi2, start, q_best, model_best, fig_best, polished, n_iter = min(candidates, key=lambda c: c[0])
    n_widened = 0
    if polish:
        # The polish bounds the Cholesky factors, not the narrowest axis of a tilted component;
        # one that ends a little narrower than pho draws is widened along that axis alone, and
        # the figures below are those of the widened mixture.
        a, m1, m2, l11, l21, l22 = _unpack(q_best[:-1])
        cuu, cuv, cvv, n_widened = _floor_narrowest_axis(l11**2, l11 * l21, l21**2 + l22**2)
        if n_widened:
            rows = q_best[:-1].reshape(-1, 6).copy()
            rows[:, 3:] = _pack(a, m1, m2, cuu, cuv, cvv).reshape(-1, 6)[:, 3:]  # amplitudes as they were
            q_best = np.append(rows.ravel(), q_best[-1])
            model_best, fig_best = figures_of(q_best)
            log.info("widened %d component(s) to FWHM %.3g detector pixel along their narrowest axis", n_widened, MIN_FWHM_PIX)
    p_best = q_best[:-1]
    model_scale = float(np.exp(q_best[-1]))

    a, m1, m2, l11, l21, l22 = _unpack(p_best)
    cuu, cuv, cvv = l11**2, l11 * l21, l21**2 + l22**2
    max_frac, sum_frac, ee_d, ee_m = fig_best
    header = {
        "NGAUSS": ngauss,
        "OVERSAMP": S,
        "PIXINTEG": bool(pixel_integrated),
        "CENTERX": cx,
        "CENTERY": cy,
        "CENTSRC": center_source,
        "RADIUS": -1.0 if radius_det_pix is None else float(radius_det_pix),
        "POLISHED": polished,
        "NWIDENED": n_widened,
        "MODSCALE": model_scale,
        "EMITER": n_iter,
        "START": start,
        "MAXRES": max_frac,
        "SUMRES": sum_frac,
        "NNONFIN": notes["n_nonfinite"],
        "NNEGPIX": notes["n_negative"],
    }
    for r, d, m in zip(EE_RADII_DET_PIX, ee_d, ee_m):
        header[f"EEDAT{r:g}"] = float(d)
        header[f"EEMOD{r:g}"] = float(m)
    header.update(meta or {})
    fwhm = narrowest_fwhm_pix(cuu, cuv, cvv)
    if np.any(fwhm < MIN_FWHM_PIX):
        bad = np.flatnonzero(fwhm < MIN_FWHM_PIX)
        raise PhoDataError(
            f"the fitted mixture's components {bad.tolist()} have FWHM {', '.join(f'{f:.3g}' for f in fwhm[bad])} "
            f"detector pixel along their narrowest axis, below the {MIN_FWHM_PIX} pixel that pho can draw accurately "
            f"(pho._reference.MIN_FWHM_PIX): the PSF image (oversample {S:g}) is too undersampled to describe the "
            "PSF's core. Fit an image oversampled by 2 or more (--oversample, or the header's oversampling key), or "
            "fewer Gaussians (--ngauss); nothing was written"
        )
    mixture = PSFMixture(a, m1, m2, cuu, cuv, cvv, meta=header)
    return PSFFitResult(
        mixture=mixture,
        ngauss=ngauss,
        oversample=S,
        pixel_integrated=bool(pixel_integrated),
        center_pix=(cx, cy),
        center_source=center_source,
        radius_det_pix=radius_det_pix,
        max_abs_residual_frac_peak=max_frac,
        sum_abs_residual_frac=sum_frac,
        ee_radii_det_pix=EE_RADII_DET_PIX,
        ee_data=ee_d,
        ee_model=ee_m,
        polished=polished,
        em_iterations=n_iter,
        model_scale=model_scale,
        data=data,
        model=model_best,
        fit_mask=mask,
    )


# --------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------


def plot_psf_fit(result: PSFFitResult, path: str | os.PathLike | None = None, zoom_det_pix: float | None = None):
    """Plot data, model, residual and the Gaussians as ellipses coloured by flux.

    Imports matplotlib only when called, and builds a bare ``matplotlib.figure.Figure`` (no
    pyplot, no backend change). Axes are detector pixels from the PSF centre.

    Parameters
    ----------
    result : PSFFitResult
        A fit from :func:`fit_psf_mixture`.
    path : str or path-like, optional
        Write the figure there (format from the suffix; written to a temporary name, then
        moved into place). An existing file is replaced: callers check first.
    zoom_det_pix : float, optional
        Half-width of the panels, detector pixels. Default: the smaller of 10 and the image's
        half-width.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    data, model = result.data, result.model
    S = result.oversample
    cx, cy = result.center_pix
    ny, nx = data.shape
    extent = [(-0.5 - cx) / S, (nx - 0.5 - cx) / S, (-0.5 - cy) / S, (ny - 0.5 - cy) / S]
    half = min(10.0, max(abs(e) for e in extent)) if zoom_det_pix is None else float(zoom_det_pix)
    peak = np.nanmax(data)
    floor = peak * 1e-5
    lognorm = LogNorm(vmin=floor, vmax=peak)
    resid = (data - model) / peak
    rmax = np.nanmax(np.abs(resid))

    # A bare Figure (not pyplot): no backend is switched or needed, nothing stays open.
    fig = Figure(figsize=(17, 4.4), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [
        (np.clip(data, floor, None), "data (normalized)", lognorm, "magma"),
        (np.clip(model, floor, None), f"model, K={result.ngauss}", lognorm, "magma"),
        (resid, "residual / peak", Normalize(-rmax, rmax), "RdBu_r"),
    ]
    for ax, (img, title, norm, cmap) in zip(axes[:3], panels):
        im = ax.imshow(img, origin="lower", extent=extent, norm=norm, cmap=cmap, interpolation="nearest")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.85)
    ax = axes[3]
    ax.imshow(np.clip(data, floor, None), origin="lower", extent=extent, norm=lognorm, cmap="Greys", interpolation="nearest")
    mix = result.mixture
    cmap = matplotlib.colormaps["viridis"]
    fnorm = Normalize(0.0, float(mix.amp.max()))
    for k in range(mix.n_gauss):
        cov = mix.covariances[k]
        evals, evecs = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1]))
        color = cmap(fnorm(mix.amp[k]))
        ax.add_patch(
            Ellipse(
                (mix.x[k], mix.y[k]),
                2 * np.sqrt(evals[1]),
                2 * np.sqrt(evals[0]),
                angle=angle,
                fill=False,
                lw=2,
                color=color,
            )
        )
        ax.plot(mix.x[k], mix.y[k], "+", color=color)
    sm = ScalarMappable(norm=fnorm, cmap=cmap)
    fig.colorbar(sm, ax=ax, shrink=0.85, label="flux fraction")
    ax.set_title("Gaussians (1-sigma ellipses)")
    for ax in axes:
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_xlabel("x - x_c [detector pix]")
    axes[0].set_ylabel("y - y_c [detector pix]")
    fig.suptitle(
        f"max|res|/peak = {result.max_abs_residual_frac_peak:.4f},  sum|res|/sum = {result.sum_abs_residual_frac:.4f},"
        f"  oversample {S:g}, {'pixel-integrated' if result.pixel_integrated else 'not pixel-integrated'}"
    )
    if path is not None:
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    return fig
