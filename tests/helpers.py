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


def two_component_psf():
    """An asymmetric two-Gaussian PSF (offsets, correlations), detector pixels."""
    from pho import PSFMixture

    return PSFMixture([0.7, 0.3], [0.1, -0.2], [0.0, 0.3], [1.5, 4.0], [0.2, -0.5], [1.2, 3.5])


def cosmos_stamp_wcs(cosmos_image_path, x0=250, y0=250, size=40):
    """The real rotated TAN WCS of the COSMOS cutout, sliced to a ``size`` x ``size`` stamp."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(fits.getheader(cosmos_image_path))
    return wcs.slice((slice(y0, y0 + size), slice(x0, x0 + size)))


def blended_problem(cosmos_image_path, rng, kind="gaussian", shape_parameters="q_pa", profile=None):
    """Two blended Sersics and a point source, seen in two bands by two exposures whose WCS are
    the real rotated COSMOS WCS (F814W, 0.03"/pix) and a rotated, flipped TAN WCS (F160W,
    0.05"/pix). Data are the model plus noise (Gaussian) or Poisson draws.

    Returns
    -------
    scene, exposures, theta
        ``theta`` is the truth with the fluxes 10% high (a point with a non-zero gradient).
    """
    import pho
    from pho.profiles import AnalyticStandInProfile

    prof = AnalyticStandInProfile() if profile is None else profile
    wc = cosmos_stamp_wcs(cosmos_image_path)
    ra0, dec0 = (float(v) for v in wc.pixel_to_world_values(19.5, 19.5))
    w2 = tan_wcs(ra0, dec0, (14.0, 16.0), scale_arcsec=0.05, rotation_deg=-23.0, flip=True)
    a = 1.0 / 3600.0
    sources = [
        pho.Sersic(ra0, dec0, {"F814W": 30.0, "F160W": 50.0}, q=0.6, pa=0.4, n=2.2, rh=0.12, profile=prof),
        pho.PointSource(ra0 + 0.10 * a, dec0 + 0.05 * a, {"F814W": 10.0, "F160W": 20.0}),
        pho.Sersic(ra0 - 0.08 * a, dec0 - 0.10 * a, {"F814W": 20.0, "F160W": 40.0}, q=0.5, pa=-1.0, n=1.3, rh=0.08, profile=prof),
    ]
    scene = pho.Scene(sources, shape_parameters=shape_parameters)
    psf2 = pho.PSFMixture.gaussian(1.8, q=0.8, theta_rad=0.4)
    blanks = [
        pho.Exposure(np.zeros((40, 40)), np.full((40, 40), 4.0), wc, two_component_psf(), "F814W", counts_per_flux=3.0, background=2.0),
        pho.Exposure(np.zeros((30, 30)), np.full((30, 30), 2.0), w2, psf2, "F160W", counts_per_flux=1.5, background=3.0),
    ]
    models = pho.Likelihood(scene, blanks).model_images(scene.get_vector())
    exposures = []
    for m, b in zip(models, blanks):
        data = rng.poisson(m).astype(float) if kind == "poisson" else m + rng.normal(size=m.shape) / np.sqrt(b.ivar)
        exposures.append(pho.Exposure(data, b.ivar, b.wcs, b.psf, b.band, counts_per_flux=b.counts_per_flux, background=b.background))
    theta = scene.get_vector()
    theta[np.array(scene.parameter_kinds) == "flux"] *= 1.1
    return scene, exposures, theta
