"""An analytic stand-in for the Sersic lookup table, for tests only.

The real profile (``pho.sersic.default_profile()``) is a spline table of Gaussian amplitudes
fitted to Sersic profiles. Tests of the model and its gradients need a profile object with the
same interface whose amplitudes are smooth, cheap and have exact derivatives, and that does not
depend on the table: :class:`AnalyticStandInProfile`. **It is not a Sersic profile**: it is a
softmax over log-radius that moves weight outwards as ``rh`` grows and towards the centre as
``n`` grows, which is all a gradient test needs.

A profile object (docs/ARCHITECTURE.md) has

- ``radii_arcsec`` : ndarray of shape (M,), the fixed Gaussian sigmas (one of them zero);
- ``n_range``, ``rh_range_arcsec`` : (lo, hi) tuples of the valid Sersic index and radius;
- ``amplitudes(n, rh_arcsec) -> (a, da_dn, da_drh)``, each (M,) for scalars or (S, M) for
  arrays of S sources, ``a`` summing to one over M.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AnalyticStandInProfile"]


class AnalyticStandInProfile:
    """Test stand-in for a Sersic profile: smooth analytic amplitudes with exact derivatives.

    The amplitudes are a softmax of scores over the M fixed radii::

        s_m = -((rho_m - ln rh - c(n)) / w)**2 / 2 + kappa * (n - 1) * [m == 0]
        a_m = exp(s_m) / sum_k exp(s_k)

    where ``rho_m = ln r_m`` for the non-zero radii (``rho_0`` of the r = 0 Gaussian is placed one
    log step below the smallest non-zero radius), ``c(n) = -0.3 (n - 1)`` moves weight to smaller
    radii as ``n`` grows, ``w`` is the log-spacing-based width, and the ``kappa`` term feeds the
    central (r = 0) Gaussian as ``n`` grows, like a cuspy Sersic profile.

    Parameters
    ----------
    n_radii : int
        Number of Gaussians M including the one of zero radius (default 9).
    r_min_arcsec, r_max_arcsec : float
        Smallest and largest non-zero radius (sigma), arcsec; log-spaced in between.
    n_range : (float, float)
        Valid Sersic index range (default (0.5, 6.0)).
    rh_range_arcsec : (float, float)
        Valid half-light radius range, arcsec (default (0.02, 2.0)).

    Examples
    --------
    >>> from pho.profiles import AnalyticStandInProfile
    >>> prof = AnalyticStandInProfile()
    >>> a, da_dn, da_drh = prof.amplitudes(2.0, 0.3)
    >>> a.shape, round(float(a.sum()), 12), round(float(da_dn.sum()), 12)
    ((9,), 1.0, 0.0)
    """

    #: Weight fed to the central Gaussian per unit of n.
    kappa = 0.4

    def __init__(
        self,
        n_radii: int = 9,
        r_min_arcsec: float = 0.01,
        r_max_arcsec: float = 2.0,
        n_range: tuple[float, float] = (0.5, 6.0),
        rh_range_arcsec: tuple[float, float] = (0.02, 2.0),
    ):
        radii = np.geomspace(r_min_arcsec, r_max_arcsec, n_radii - 1)
        self.radii_arcsec = np.concatenate([[0.0], radii])
        self.radii_arcsec.flags.writeable = False
        step = np.log(radii[1] / radii[0])
        self._rho = np.concatenate([[np.log(radii[0]) - step], np.log(radii)])
        self._width = 1.5 * step
        self._is_center = np.zeros(n_radii)
        self._is_center[0] = 1.0
        self.n_range = (float(n_range[0]), float(n_range[1]))
        self.rh_range_arcsec = (float(rh_range_arcsec[0]), float(rh_range_arcsec[1]))

    def __repr__(self) -> str:
        return f"AnalyticStandInProfile(M={len(self.radii_arcsec)}, n_range={self.n_range}, rh_range_arcsec={self.rh_range_arcsec})"

    def amplitudes(self, n, rh_arcsec):
        """Amplitudes and their derivatives.

        Parameters
        ----------
        n : float or ndarray of shape (S,)
            Sersic index.
        rh_arcsec : float or ndarray of shape (S,)
            Half-light radius, arcsec (must be positive).

        Returns
        -------
        a, da_dn, da_drh : ndarray of shape (M,) or (S, M)
            Amplitudes (summing to one over M) and their partial derivatives (per unit n and
            per arcsec).
        """
        n_arr = np.asarray(n, dtype=float)
        rh_arr = np.asarray(rh_arcsec, dtype=float)
        scalar = n_arr.ndim == 0 and rh_arr.ndim == 0
        n_arr, rh_arr = np.broadcast_arrays(np.atleast_1d(n_arr), np.atleast_1d(rh_arr))
        n2 = n_arr[:, None]
        center = -0.3 * (n2 - 1.0)
        z = (self._rho - np.log(rh_arr)[:, None] - center) / self._width
        score = -0.5 * z * z + self.kappa * (n2 - 1.0) * self._is_center
        score -= score.max(axis=1, keepdims=True)
        e = np.exp(score)
        a = e / e.sum(axis=1, keepdims=True)
        # dz/drh = -1 / (w rh) and dz/dn = 0.3 / w, and d(-z^2/2) = -z dz
        ds_drh = z / self._width / rh_arr[:, None]
        ds_dn = z / self._width * (-0.3) + self.kappa * self._is_center
        da_drh = a * (ds_drh - np.sum(a * ds_drh, axis=1, keepdims=True))
        da_dn = a * (ds_dn - np.sum(a * ds_dn, axis=1, keepdims=True))
        if scalar:
            return a[0], da_dn[0], da_drh[0]
        return a, da_dn, da_drh
