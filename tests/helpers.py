"""Shared test helpers: finite-difference checks, WCS and scene builders."""

from __future__ import annotations

import math

import numpy as np

#: Finite-difference step per parameter kind (central differences): small against each
#: parameter's scale, large against its round-off (ra/dec are ~100 deg, so 1e-8 deg = 0.036 mas = 1e-3 of a 0.03" pixel).
FD_STEPS = {
    "flux": 1e-4,  # relative (times max(|flux|, 1))
    "ra": 1e-8,  # deg
    "dec": 1e-8,  # deg
    "q": 1e-5,
    "pa": 1e-5,  # rad
    "g1": 1e-5,
    "g2": 1e-5,
    "n": 1e-5,
    "rh": 1e-6,  # arcsec
}


def fd_step(kind: str, value: float) -> float:
    """The central-difference step for a parameter of ``kind`` at ``value``."""
    if kind == "flux":
        return FD_STEPS["flux"] * max(abs(value), 1.0)
    return FD_STEPS[kind]


def central_difference(func, theta, i, step):
    """(func(theta + step e_i) - func(theta - step e_i)) / (2 step); func may return arrays."""
    tp = np.array(theta, dtype=float)
    tm = tp.copy()
    tp[i] += step
    tm[i] -= step
    return (np.asarray(func(tp)) - np.asarray(func(tm))) / (2.0 * step)


def check_gradient(func, grad, theta, kinds, names=None, rtol=1e-5, atol=0.0, steps=None, f_roundoff=1e-12):
    """Compare an analytic gradient with central differences, parameter by parameter.

    Parameters
    ----------
    func : callable
        theta -> scalar or array.
    grad : ndarray of shape (P,) or (P, ...) / (..., P)
        Analytic derivative; ``grad[i]`` is d func / d theta_i (parameter axis first).
    theta : ndarray of shape (P,)
    kinds : sequence of str
        Parameter kinds (for the step sizes).
    rtol, atol : float
        Allowed |fd - analytic| <= atol + rtol * max(|analytic|, |fd|) + noise per parameter.
    f_roundoff : float
        Relative round-off of ``func``'s value; the finite difference's own noise,
        ``f_roundoff * max|func(theta)| / step``, is added to the allowance (it matters only for
        derivatives near zero, e.g. a flux at its best-fit value).

    Returns
    -------
    worst : float
        The largest ratio of error to allowance (<= 1 passes). Raises AssertionError naming the
        parameter on failure.
    """
    theta = np.asarray(theta, dtype=float)
    f0 = float(np.max(np.abs(np.asarray(func(theta)))))
    worst = 0.0
    for i, kind in enumerate(kinds):
        step = steps[i] if steps is not None else fd_step(kind, theta[i])
        fd = central_difference(func, theta, i, step)
        an = np.asarray(grad[i])
        scale = float(np.max(np.abs(an))) if np.size(an) else 0.0
        allow = atol + rtol * max(scale, float(np.max(np.abs(fd)))) + f_roundoff * f0 / step
        err = float(np.max(np.abs(fd - an)))
        label = names[i] if names is not None else f"parameter {i} ({kind})"
        assert err <= allow, f"{label}: finite difference {fd!r} vs analytic {an!r} (error {err:.3g} > allowed {allow:.3g})"
        if allow > 0:
            worst = max(worst, err / allow)
    return worst


def tan_wcs(ra_deg, dec_deg, crpix, scale_arcsec=0.03, rotation_deg=0.0, flip=False):
    """A TAN WCS with a rotated (and optionally flipped) CD matrix.

    Parameters
    ----------
    crpix : (float, float)
        FITS 1-based reference pixel (x, y).
    rotation_deg : float
        Rotation of the pixel grid on the sky.
    flip : bool
        If True, mirror the x axis (RA increases with x, a parity flip).
    """
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = list(crpix)
    s = scale_arcsec / 3600.0
    c, sn = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    cd = np.array([[-s * c, s * sn], [s * sn, s * c]])
    if flip:
        cd[:, 0] *= -1.0
    w.wcs.cd = cd
    return w
