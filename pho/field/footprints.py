"""How far each source's light reaches: the radii that decide blends, cutouts and neighbours.

A source's footprint in an exposure is the disk outside which its model (Sersic mixture or
point, convolved with the exposure's PSF mixture, circularized along the major axis so the disk
is never too small) puts fewer than ``threshold_sigma`` times the pixel noise into a pixel:

    counts(r) = |flux| * counts_per_flux * A_pix * sum_{m,l} a_m alpha_l / (2 pi s_ml^2) exp(-r^2 / (2 s_ml^2))

with ``s_ml^2 = r_m^2 + v_l`` (profile radius m, PSF variance l along its major axis, arcsec^2)
and ``A_pix`` the pixel area. The footprint radius of a source is the largest over the
exposures. For an exposure whose PSF is a grid (``pho.psfgrid.PSFGrid``), each source uses the
mixture of the grid point nearest to it (a plan needs the size of the light, not the
interpolated PSF; sources off the grid's hull take the nearest point of the grid). Two
thresholds are used by the field fitter (``pho.field.patches``): a high one for blends (sources
whose footprints touch are fitted together) and a low one for the light of neighbours that must
be subtracted when a patch is fitted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["footprint_radii_arcsec", "MAX_RADIUS_ARCSEC"]

#: No footprint is larger than this (arcsec); a source that bright is its own patch anyway.
MAX_RADIUS_ARCSEC = 30.0
_GRID = np.geomspace(1e-3, MAX_RADIUS_ARCSEC, 400)
_CHUNK = 256


def _profile_components(sources, rows, profile):
    """Radii (M,) and amplitudes (len(rows), M) of the sources' circular mixtures (points: r = 0)."""
    radii = np.asarray(profile.radii_arcsec, dtype=float)
    amps = np.zeros((len(rows), radii.size))
    is_point = sources.is_point[rows]
    gal = ~is_point
    amps[is_point, int(np.argmin(radii))] = 1.0
    if gal.any():
        lo, hi = profile.rh_range_arcsec
        nlo, nhi = profile.n_range
        # the planner needs the shape of the light, not the fit's range checks: clamp into the table
        n = np.clip(sources.n[rows][gal], nlo, nhi)
        rh = np.clip(sources.rh[rows][gal], lo, hi)
        amps[gal] = np.asarray(profile.amplitudes(n, rh)[0], dtype=float).reshape(int(gal.sum()), radii.size)
    return radii, amps


def footprint_radii_arcsec(sources, exposures, threshold_sigma: float, profile=None) -> np.ndarray:
    """Footprint radius of every source (module docstring), arcsec.

    Parameters
    ----------
    sources : pho.field.FieldSources
    exposures : sequence of pho.field.FieldExposure
    threshold_sigma : float
        The footprint's edge, in units of each exposure's typical pixel noise (> 0).
    profile : optional
        Sersic profile (default: ``pho.sersic.auto_profile()``, as for ``pho.Sersic``).

    Returns
    -------
    ndarray of shape (S,)
        Radii in arcsec, at least 3 sigma of the widest PSF core and at most ``MAX_RADIUS_ARCSEC``.
    """
    if profile is None:
        from ..sersic import auto_profile

        profile = auto_profile()
    if not threshold_sigma > 0:
        raise ValueError(f"threshold_sigma must be positive, got {threshold_sigma}")
    S = len(sources)
    radius = np.zeros(S)
    for e in exposures:
        for psf, members in _psf_groups(e, sources):
            _footprints_one_psf(sources, members, e, psf, threshold_sigma, profile, radius)
    return np.minimum(radius, MAX_RADIUS_ARCSEC)


def _psf_groups(e, sources):
    """(mixture, rows) pairs: the exposure's one mixture for every source, or for a PSF grid the
    mixture of the grid point nearest each source, grouped by grid point."""
    from ..psfgrid import PSFGrid

    S = len(sources)
    if not isinstance(e.psf, PSFGrid):
        return [(e.psf, np.arange(S))]
    x, y = e.sky_to_pixel(sources.ra, sources.dec)
    nearest = e.psf.nearest_index(x, y)
    return [(e.psf.mixtures[k], np.flatnonzero(nearest == k)) for k in np.unique(nearest)]


def _footprints_one_psf(sources, members, e, psf, threshold_sigma, profile, radius) -> None:
    """Raise ``radius[members]`` to the footprint radii in exposure ``e`` with PSF mixture ``psf``."""
    S = len(members)
    band = sources.bands.index(e.band)
    pix = e.pixel_scale_arcsec
    cov = psf.covariances
    major_var = np.linalg.eigvalsh(cov)[:, -1] * pix**2  # (L,) arcsec^2
    core = float(np.sqrt(major_var[int(np.argmax(psf.amp))]))
    floor = 3.0 * core
    level = threshold_sigma * e.noise_sigma
    for start in range(0, S, _CHUNK):
        rows = members[start : min(S, start + _CHUNK)]
        radii, amps = _profile_components(sources, rows, profile)
        s2 = radii[:, None] ** 2 + major_var[None, :]  # (M, L)
        weight = amps[:, :, None] * psf.amp[None, None, :] / (2 * np.pi * s2[None])  # (s, M, L)
        scale = np.abs(sources.flux[rows, band]) * e.counts_per_flux * pix**2
        # counts per pixel on the radius grid, (s, R)
        prof = np.einsum("sml,mlr->sr", weight, np.exp(-(_GRID[None, None, :] ** 2) / (2 * s2[:, :, None])))
        counts = np.abs(prof) * scale[:, None]
        above = counts >= level
        last = np.where(above.any(axis=1), _GRID.size - 1 - np.argmax(above[:, ::-1], axis=1), -1)
        r = np.where(last >= 0, _GRID[np.clip(last, 0, None)], 0.0)
        radius[rows] = np.maximum(radius[rows], np.maximum(r, floor))
