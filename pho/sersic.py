"""Sersic profiles as Gaussian mixtures: the run-time loader of pho's shipped table.

A Sersic profile of index ``n`` and half-light radius ``rh_arcsec`` is written as M zero-mean
circular Gaussians of fixed radii (sigmas) ``radii_arcsec``, one of them zero (a point), with
amplitudes ``a_m(n, rh_arcsec)`` that sum to one. The amplitudes come from a table fitted
offline by ``tools/build_sersic_table.py`` on a grid in (n, ln r_h) and are interpolated here by
a tensor-product cubic spline (C2), so ``a`` and its derivatives in ``n`` and ``rh_arcsec`` are
smooth and cheap. docs/sersic_tables.md gives the method and the measured accuracy.

The table is dimensionless: its lengths are in *table units*, turned into arcsec by
``scale_arcsec`` (default ``DEFAULT_SCALE_ARCSEC`` = 0.03", one JWST NIRCam short-wave or HST
drizzled pixel). The shipped table covers r_h from 0.05 to ~43 table units (0.0015" to 1.28" at
the default scale); for larger galaxies load it with a larger scale (the smallest radius it
resolves grows in proportion).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from pathlib import Path

import numpy as np

from .errors import PhoDataError, PhoRangeError, PhoValueError

__all__ = ["SersicTable", "MultiScaleSersic", "default_profile", "auto_profile", "DEFAULT_SCALE_ARCSEC",
           "AUTO_RH_RANGE_ARCSEC", "TABLE_RESOURCE"]

#: Arcsec per table unit used by ``default_profile()`` and ``SersicTable.load()``: 0.03",
#: about one JWST NIRCam short-wave pixel (0.031") or an HST drizzled pixel (0.03").
DEFAULT_SCALE_ARCSEC = 0.03
#: File name of the shipped table inside the package ``pho.tables``.
TABLE_RESOURCE = "sersic_mixture.npz"

_REQUIRED = ("n_grid", "ln_rh_grid", "radii", "amplitudes", "smoothing_sigma", "meta_json")


def _local_cubic_coefficients(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    """Not-a-knot cubic spline along ``axis`` of ``y``; coefficients of t^0..t^3 per interval.

    Returns an array of shape (4, len(x) - 1, *other axes of y): the power p of the local
    coordinate t = (x - x_i) / h in [0, 1], the interval, then the remaining axes in order.
    """
    from scipy.interpolate import CubicSpline  # here, not at import: keeps ``import pho`` light

    h = x[1] - x[0]
    c = CubicSpline(x, y, axis=axis).c  # (4, ...) in powers 3, 2, 1, 0 of (x - x_i)
    return np.stack([c[3 - p] * h**p for p in range(4)])


class SersicTable:
    """Sersic amplitude table with spline interpolation; lengths in arcsec via ``scale_arcsec``.

    Use ``SersicTable.load()`` (or ``pho.sersic.default_profile()``) rather than the constructor.

    Parameters
    ----------
    n_grid : ndarray of shape (Nn,)
        Uniformly spaced Sersic indices of the table.
    ln_rh_grid : ndarray of shape (Nr,)
        Uniformly spaced ln(r_h / table unit).
    radii : ndarray of shape (M,)
        Gaussian sigmas in table units; ``radii[0] == 0``.
    amplitude_grid : ndarray of shape (Nn, Nr, M)
        Amplitudes at the grid points; each row sums to one.
    smoothing_sigma : float
        Sigma (table units) of the Gaussian through which the fit compared mixture and profile.
    scale_arcsec : float
        Arcsec per table unit.
    meta : dict
        Build parameters read from the table file.

    Attributes
    ----------
    radii_arcsec : ndarray of shape (M,)
        Gaussian sigmas in arcsec (before the shear by q and pa); the first is 0.
    n_range : tuple of float
        (lo, hi) of the Sersic index.
    rh_range_arcsec : tuple of float
        (lo, hi) of the half-light radius, arcsec.
    smoothing_sigma_arcsec : float
        The smoothing Gaussian of the fit, arcsec (structure finer than this is not constrained).
    """

    def __init__(self, n_grid, ln_rh_grid, radii, amplitude_grid, smoothing_sigma, scale_arcsec, meta=None,
                 _coefficients=None):
        scale_arcsec = float(scale_arcsec)
        if not np.isfinite(scale_arcsec) or scale_arcsec <= 0:
            raise PhoValueError(f"scale_arcsec={scale_arcsec!r} must be a positive number of arcsec per table unit "
                                f"(the default, {DEFAULT_SCALE_ARCSEC}, suits 0.03\"/pixel JWST and HST images)")
        self._n_grid = np.asarray(n_grid, dtype=np.float64)
        self._ln_rh_grid = np.asarray(ln_rh_grid, dtype=np.float64)
        self._radii = np.asarray(radii, dtype=np.float64)
        self._amps = np.asarray(amplitude_grid, dtype=np.float64)
        self.smoothing_sigma = float(smoothing_sigma)
        self.scale_arcsec = scale_arcsec
        self.meta = dict(meta or {})
        nn, nr = self._n_grid.size, self._ln_rh_grid.size
        if nn < 4 or nr < 4 or self._amps.shape != (nn, nr, self._radii.size):
            raise PhoDataError(f"Sersic table arrays are inconsistent: n_grid {nn}, ln_rh_grid {nr}, radii "
                               f"{self._radii.size}, amplitudes {self._amps.shape}; rebuild it with "
                               "tools/build_sersic_table.py")
        for name, g in (("n_grid", self._n_grid), ("ln_rh_grid", self._ln_rh_grid)):
            step = np.diff(g)
            if not np.allclose(step, step[0], rtol=1e-9, atol=1e-12) or step[0] <= 0:
                raise PhoDataError(f"Sersic table {name} is not uniformly increasing; rebuild it with "
                                   "tools/build_sersic_table.py")
        self._n0, self._dn = self._n_grid[0], self._n_grid[1] - self._n_grid[0]
        self._u0, self._du = self._ln_rh_grid[0], self._ln_rh_grid[1] - self._ln_rh_grid[0]
        self._ln_scale = math.log(scale_arcsec)
        # plain Python floats for the per-call scalar path
        self._n0, self._dn = float(self._n0), float(self._dn)
        self._u0, self._du = float(self._u0), float(self._du)
        self._n_lo, self._n_hi = float(self._n_grid[0]), float(self._n_grid[-1])
        self._rh_lo = math.exp(float(self._ln_rh_grid[0])) * scale_arcsec
        self._rh_hi = math.exp(float(self._ln_rh_grid[-1])) * scale_arcsec
        if _coefficients is None:
            cn = _local_cubic_coefficients(self._n_grid, self._amps, axis=0)  # (4p, Nn-1, Nr, M)
            # CubicSpline moves the interpolated axis's intervals to position 1: (4q, Nr-1, 4p, Nn-1, M)
            cnu = _local_cubic_coefficients(self._ln_rh_grid, cn, axis=2)
            _coefficients = np.ascontiguousarray(cnu.transpose(3, 1, 2, 0, 4)).reshape(
                nn - 1, nr - 1, 16, self._radii.size)  # (Nn-1, Nr-1, 4p x 4q, M), p-major
        self._coef = _coefficients
        self._i_max, self._j_max = self._coef.shape[0] - 1, self._coef.shape[1] - 1

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, scale_arcsec: float = DEFAULT_SCALE_ARCSEC) -> "SersicTable":
        """Read a Sersic table.

        Parameters
        ----------
        path : str or Path, optional
            A table written by ``tools/build_sersic_table.py``; default the one shipped in
            ``pho.tables`` (read through ``importlib.resources``).
        scale_arcsec : float, optional
            Arcsec per table unit, default ``DEFAULT_SCALE_ARCSEC`` (0.03"). The shipped table's
            r_h range is [0.05, 42.7] units, i.e. [0.0015", 1.28"] at 0.03"; pass e.g. 0.06 to
            serve galaxies up to 2.6".

        Returns
        -------
        SersicTable

        Raises
        ------
        OSError
            The file cannot be read.
        PhoDataError
            The file lacks a required array or its arrays are inconsistent.

        Examples
        --------
        >>> from pho.sersic import SersicTable
        >>> table = SersicTable.load(scale_arcsec=0.06)
        >>> a, da_dn, da_drh = table.amplitudes(2.0, 0.5)
        >>> round(float(a.sum()), 12)
        1.0
        """
        if path is None:
            resource = importlib.resources.files("pho.tables").joinpath(TABLE_RESOURCE)
            with importlib.resources.as_file(resource) as p:
                return cls._read(p, scale_arcsec)
        return cls._read(Path(path), scale_arcsec)

    @classmethod
    def _read(cls, path: Path, scale_arcsec: float) -> "SersicTable":
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _REQUIRED if k not in z.files]
            if missing:
                raise PhoDataError(f"{path} is not a pho Sersic table: it lacks {missing}; rebuild it with "
                                   "tools/build_sersic_table.py")
            arrays = {k: z[k] for k in _REQUIRED}
        meta = json.loads(str(arrays["meta_json"]))
        return cls(arrays["n_grid"], arrays["ln_rh_grid"], arrays["radii"], arrays["amplitudes"],
                   float(arrays["smoothing_sigma"]), scale_arcsec, meta)

    def with_scale(self, scale_arcsec: float) -> "SersicTable":
        """The same table with another arcsec-per-unit scale (shares the spline coefficients)."""
        return SersicTable(self._n_grid, self._ln_rh_grid, self._radii, self._amps, self.smoothing_sigma,
                           scale_arcsec, self.meta, _coefficients=self._coef)

    # ------------------------------------------------------------------------------------------
    @property
    def n_gauss(self) -> int:
        """Number of Gaussians M."""
        return int(self._radii.size)

    @property
    def radii_arcsec(self) -> np.ndarray:
        """Gaussian sigmas in arcsec, shape (M,); the first is 0 (a point)."""
        return self._radii * self.scale_arcsec

    @property
    def n_range(self) -> tuple[float, float]:
        """(lo, hi) of the Sersic index covered by the table."""
        return self._n_lo, self._n_hi

    @property
    def rh_range_arcsec(self) -> tuple[float, float]:
        """(lo, hi) of the half-light radius covered by the table, arcsec."""
        return self._rh_lo, self._rh_hi

    @property
    def smoothing_sigma_arcsec(self) -> float:
        """Sigma of the fit's smoothing Gaussian, arcsec."""
        return self.smoothing_sigma * self.scale_arcsec

    def __repr__(self) -> str:
        lo, hi = self.rh_range_arcsec
        return (f"SersicTable(M={self.n_gauss}, n in [{self.n_range[0]:g}, {self.n_range[1]:g}], "
                f"rh_arcsec in [{lo:.3g}, {hi:.3g}], scale_arcsec={self.scale_arcsec:g})")

    # ------------------------------------------------------------------------------------------
    def _check_range(self, n: np.ndarray, rh_arcsec: np.ndarray) -> None:
        lo, hi = self.n_range
        bad = ~((n >= lo) & (n <= hi))
        if bad.any():
            v = float(n[np.argmax(bad)])
            raise PhoRangeError(f"Sersic index n={v:.6g} is outside the table range [{lo:g}, {hi:g}]; bound n in "
                                "the prior or rebuild the table with a wider --n-range", v, lo, hi)
        rlo, rhi = self.rh_range_arcsec
        bad = ~((rh_arcsec >= rlo) & (rh_arcsec <= rhi))
        if bad.any():
            v = float(rh_arcsec[np.argmax(bad)])
            raise PhoRangeError(
                f"half-light radius rh_arcsec={v:.6g} is outside the table range [{rlo:.6g}, {rhi:.6g}] arcsec "
                f"(scale_arcsec={self.scale_arcsec:g}); bound rh_arcsec in the prior, load the table with another "
                "scale_arcsec (SersicTable.load(scale_arcsec=...)), or rebuild it with a wider --rh-range",
                v, rlo, rhi)

    def amplitudes(self, n, rh_arcsec):
        """Amplitudes of the M Gaussians and their derivatives in n and rh_arcsec.

        Parameters
        ----------
        n : float or array_like of shape (S,)
            Sersic index, inside ``n_range``.
        rh_arcsec : float or array_like of shape (S,)
            Half-light radius along the major axis, arcsec, inside ``rh_range_arcsec``.
            ``n`` and ``rh_arcsec`` broadcast against each other.

        Returns
        -------
        a : ndarray of shape (M,) or (S, M)
            Amplitudes (fractions of the total flux); each row sums to one.
        da_dn : ndarray of shape (M,) or (S, M)
            d a / d n; each row sums to zero.
        da_drh : ndarray of shape (M,) or (S, M)
            d a / d rh_arcsec, per arcsec; each row sums to zero.

        Raises
        ------
        PhoRangeError
            ``n`` or ``rh_arcsec`` outside the table (NaN included); the message names the range.

        Examples
        --------
        >>> from pho.sersic import default_profile
        >>> prof = default_profile()
        >>> a, da_dn, da_drh = prof.amplitudes([1.0, 4.0], [0.2, 0.3])
        >>> a.shape == (2, prof.radii_arcsec.size)
        True
        """
        if np.ndim(n) == 0 and np.ndim(rh_arcsec) == 0:
            return self._amplitudes_scalar(float(n), float(rh_arcsec))
        n_arr, rh_arr = np.asarray(n, dtype=np.float64), np.asarray(rh_arcsec, dtype=np.float64)
        if n_arr.shape != rh_arr.shape:
            n_arr, rh_arr = np.broadcast_arrays(n_arr, rh_arr)
        n_arr, rh_arr = n_arr.ravel(), rh_arr.ravel()
        if n_arr.size == 1:  # one source: the scalar path is several times faster
            a, da_dn, da_drh = self._amplitudes_scalar(float(n_arr[0]), float(rh_arr[0]))
            return a[None, :], da_dn[None, :], da_drh[None, :]
        if not (n_arr.min() >= self._n_lo and n_arr.max() <= self._n_hi
                and rh_arr.min() >= self._rh_lo and rh_arr.max() <= self._rh_hi):
            self._check_range(n_arr, rh_arr)
        x = (n_arr - self._n0) / self._dn
        y = (np.log(rh_arr) - self._ln_scale - self._u0) / self._du
        i = np.minimum(x.astype(np.intp), self._i_max)
        j = np.minimum(np.maximum(y, 0.0).astype(np.intp), self._j_max)
        t = x - i
        u = y - j
        # v[:, k, d, p]: k = 0 for t (in n), 1 for u (in ln r_h); d = 0 value, 1 derivative of v^p
        v = np.empty((t.size, 2, 2, 4))
        tu = np.stack([t, u], axis=1)
        tu2 = tu * tu
        v[:, :, 0, 0] = 1.0
        v[:, :, 0, 1] = tu
        v[:, :, 0, 2] = tu2
        v[:, :, 0, 3] = tu2 * tu
        v[:, :, 1, 0] = 0.0
        v[:, :, 1, 1] = 1.0
        v[:, :, 1, 2] = 2.0 * tu
        v[:, :, 1, 3] = 3.0 * tu2
        w = np.empty((t.size, 3, 4, 4))
        np.multiply(v[:, 0, :, :, None], v[:, 1, :1, None, :], out=w[:, :2])  # value, d/dt
        np.multiply(v[:, 0, :1, :, None], v[:, 1, 1:, None, :], out=w[:, 2:])  # d/du
        out = np.matmul(w.reshape(-1, 3, 16), self._coef[i, j])  # (S, 3, M)
        out = out.transpose(1, 0, 2).copy()  # (3, S, M): each result C-contiguous
        out[1] /= self._dn
        out[2] /= (self._du * rh_arr)[:, None]
        return out[0], out[1], out[2]

    def _amplitudes_scalar(self, n: float, rh_arcsec: float):
        """``amplitudes`` for one source: the same spline with scalar arithmetic around one matmul."""
        if not (self._n_lo <= n <= self._n_hi and self._rh_lo <= rh_arcsec <= self._rh_hi):
            self._check_range(np.array([n]), np.array([rh_arcsec]))
        out = self._amplitudes_rows(n, rh_arcsec)
        return out[0], out[1], out[2]

    def _amplitudes_rows(self, n: float, rh_arcsec: float) -> np.ndarray:
        """``_amplitudes_scalar`` as one (3, M) array (value, d/dn, d/drh), the range already checked."""
        x = (n - self._n0) / self._dn
        y = (math.log(rh_arcsec) - self._ln_scale - self._u0) / self._du
        i = min(int(x), self._i_max)
        j = min(int(max(y, 0.0)), self._j_max)
        t, u = x - i, y - j
        tp = (1.0, t, t * t, t * t * t)
        dtp = (0.0, 1.0, 2 * t, 3 * t * t)
        uq = (1.0, u, u * u, u * u * u)
        duq = (0.0, 1.0, 2 * u, 3 * u * u)
        cn, cr = 1.0 / self._dn, 1.0 / (self._du * rh_arcsec)
        w = np.array([[a * b for a in tp for b in uq],
                      [a * b * cn for a in dtp for b in uq],
                      [a * b * cr for a in tp for b in duq]])
        return w @ self._coef[i, j]


@functools.lru_cache(maxsize=1)
def default_profile() -> SersicTable:
    """The shipped Sersic table at ``DEFAULT_SCALE_ARCSEC``, read on first call and cached.

    Returns
    -------
    SersicTable
        Shared instance; treat it as read-only.

    Examples
    --------
    >>> from pho.sersic import default_profile
    >>> default_profile() is default_profile()
    True
    """
    return SersicTable.load()


# ----------------------------------------------------------------------------------------------
# Any size without choosing a table: several scales of the shipped table, blended per source
# ----------------------------------------------------------------------------------------------

#: Half-light radii (arcsec) that ``auto_profile()`` covers: from a thirtieth of a 0.03" pixel
#: to large nearby galaxies.
AUTO_RH_RANGE_ARCSEC = (0.001, 10.0)


def _smootherstep(x: float):
    """C2 step from 0 (x <= 0) to 1 (x >= 1) and its derivative: 6x^5 - 15x^4 + 10x^3."""
    if x <= 0.0:
        return 0.0, 0.0
    if x >= 1.0:
        return 1.0, 0.0
    x2 = x * x
    return x2 * x * (x * (6.0 * x - 15.0) + 10.0), 30.0 * x2 * (x - 1.0) ** 2


class MultiScaleSersic:
    """A Sersic profile for any half-light radius: the shipped table at several scales, chosen
    per source and blended smoothly where two meet.

    The table covers r_h from 0.05 to 42.7 table units, i.e. a factor of 854; one scale (arcsec
    per table unit) cannot serve 0.001" to 10". This profile holds the table at the scales
    ``s_k = home_scale_arcsec * ratio**k`` (``ratio`` = ``step`` steps of the table's inner
    radius ladder, so the inner radii of neighbouring scales coincide) for the k that the range
    needs. A source uses the home scale (0.03", the shipped default, unchanged results) wherever
    it can, a smaller one below the home scale's range and the smallest larger one above it (the
    finest smoothing, 0.3 table units, that still fits r_h). Between two neighbouring scales the
    amplitudes are blended over a band of r_h::

        a = (1 - w) a_k + w a_{k+1},   w = smootherstep((ln r_h - ln b_lo) / (ln b_hi - ln b_lo))

    w is C2 and flat at both ends of the band, so the amplitudes and their derivatives in n and
    r_h are continuous everywhere (the image and the gradient too); each scale's amplitudes sum
    to one, so the blend does. ``radii_arcsec`` is the union of every scale's radii; a source
    gives non-zero amplitudes only to its scale's radii (to two scales' inside a band), and the
    zero ones are dropped before rendering (``ExposureModel.significant``).

    Parameters
    ----------
    table : SersicTable, optional
        The table (its scale is ignored); default the shipped one.
    rh_range_arcsec : (float, float)
        Half-light radii to cover, arcsec; default ``AUTO_RH_RANGE_ARCSEC``.
    home_scale_arcsec : float
        The scale used wherever it covers r_h; default ``DEFAULT_SCALE_ARCSEC``.
    step : int
        Neighbouring scales differ by ``step`` steps of the inner radius ladder (ratio 1.355 per
        step in the shipped table; 2 steps = 1.84x). Smaller steps keep the smoothing closer to
        the finest a given r_h allows, at the cost of more scales.
    band_ratio : float
        Ratio hi / lo of each blending band of r_h (default 1.3).
    margin : float
        Fraction of a scale's r_h range kept free at its ends (default 0.1 of ln-range ends:
        bands end at 0.9 of a scale's largest r_h and start at 1.2x its smallest).

    Examples
    --------
    >>> from pho.sersic import auto_profile
    >>> prof = auto_profile()
    >>> a, da_dn, da_drh = prof.amplitudes(4.0, 3.0)     # a 3" galaxy: no table to choose
    >>> round(float(a.sum()), 12), round(float(da_drh.sum()), 12)
    (1.0, 0.0)
    """

    def __init__(self, table: SersicTable | None = None, rh_range_arcsec=AUTO_RH_RANGE_ARCSEC,
                 home_scale_arcsec: float = DEFAULT_SCALE_ARCSEC, step: int = 2, band_ratio: float = 1.3,
                 margin: float = 0.1):
        table = SersicTable.load() if table is None else table
        lo, hi = (float(v) for v in rh_range_arcsec)
        if not (0 < lo < hi and math.isfinite(hi)):
            raise PhoValueError(f"rh_range_arcsec={rh_range_arcsec!r} must be (lo, hi) with 0 < lo < hi arcsec")
        r = np.asarray(table._radii, dtype=np.float64)
        inner = np.flatnonzero(r > 0)
        ln_step = float(np.log(r[inner[1]] / r[inner[0]]))
        n_inner = int(np.sum(np.abs(np.diff(np.log(r[inner]))) - ln_step < 1e-9 * ln_step)) + 1
        if not (isinstance(step, (int, np.integer)) and 1 <= step < n_inner):
            raise PhoValueError(f"step={step!r} must be an integer from 1 to {n_inner - 1}")
        if not (band_ratio > 1 and 0 <= margin < 0.5):
            raise PhoValueError(f"band_ratio={band_ratio!r} must exceed 1 and margin={margin!r} lie in [0, 0.5)")
        ratio = math.exp(step * ln_step)
        t_lo, t_hi = math.exp(table._ln_rh_grid[0]), math.exp(table._ln_rh_grid[-1])
        f_lo, f_hi = (t_hi / t_lo) ** margin, (t_hi / t_lo) ** -margin  # 1.97 and 0.51 for the shipped table
        f_lo, f_hi = min(f_lo, 1.2), max(f_hi, 0.9)
        home = float(home_scale_arcsec)
        # scales below home while the range starts below what they serve, above while it ends above
        k_min = 0
        while lo < f_lo * t_lo * home * ratio**k_min:
            k_min -= 1
        k_max = 0
        while hi > f_hi * t_hi * home * ratio**k_max:
            k_max += 1
        self._ks = list(range(k_min, k_max + 1))
        self._tables = [table.with_scale(home * ratio**k) for k in self._ks]
        # blending band between scale i and i + 1 (in r_h, arcsec)
        self._bands = []
        for i, k in enumerate(self._ks[:-1]):
            if k + 1 <= 0:  # below home: leave scale k for k + 1 just above k + 1's smallest r_h
                b_lo = f_lo * t_lo * home * ratio ** (k + 1)
                b_hi = b_lo * band_ratio
            else:  # above home: leave k for k + 1 just below k's largest r_h
                b_hi = f_hi * t_hi * home * ratio**k
                b_lo = b_hi / band_ratio
            self._bands.append((b_lo, b_hi, math.log(b_lo), math.log(b_hi / b_lo)))
        # union of radii: the point, the inner ladder (shared between scales), each scale's outer radii
        ladder_pos = {}  # (ladder index) -> union column
        radii = [0.0]
        point = int(np.flatnonzero(r == 0)[0])
        cols = [None] * len(self._ks)
        # home first, so that shared radii are exactly the home scale's (its Gaussians are unchanged)
        for ti in sorted(range(len(self._ks)), key=lambda i: abs(self._ks[i])):
            t, k = self._tables[ti], self._ks[ti]
            col = np.empty(r.size, dtype=np.intp)
            col[point] = 0
            for j, m in enumerate(inner):
                if j < n_inner:
                    key = ("ladder", j + step * k)
                else:
                    key = ("outer", k, j)
                if key not in ladder_pos:
                    ladder_pos[key] = len(radii)
                    radii.append(float(r[m]) * t.scale_arcsec)
                col[m] = ladder_pos[key]
            cols[ti] = col
        order = np.argsort(radii, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        self._cols = [rank[c] for c in cols]
        self._radii_arcsec = np.array(radii)[order]
        self._band_lo = np.array([b[0] for b in self._bands])
        self._band_hi = np.array([b[1] for b in self._bands])
        self._band_ln_lo = np.array([b[2] for b in self._bands])
        self._band_ln_width = np.array([b[3] for b in self._bands])
        self._n_range = table.n_range
        self._rh_range = (lo, hi)
        self.table = table
        self.smoothing_sigma = table.smoothing_sigma

    # interface of a profile object (docs/ARCHITECTURE.md)
    @property
    def radii_arcsec(self) -> np.ndarray:
        """Union of the scales' Gaussian sigmas, arcsec, shape (M,); the first is 0 (a point)."""
        return self._radii_arcsec

    @property
    def n_gauss(self) -> int:
        """Number of Gaussians M of the union (a source uses about 28 of them, 35 in a band)."""
        return int(self._radii_arcsec.size)

    @property
    def n_range(self) -> tuple[float, float]:
        """(lo, hi) of the Sersic index."""
        return self._n_range

    @property
    def rh_range_arcsec(self) -> tuple[float, float]:
        """(lo, hi) of the half-light radius, arcsec."""
        return self._rh_range

    @property
    def scales_arcsec(self) -> tuple[float, ...]:
        """Arcsec per table unit of each scale, increasing."""
        return tuple(t.scale_arcsec for t in self._tables)

    @property
    def bands_arcsec(self) -> tuple[tuple[float, float], ...]:
        """(lo, hi) of r_h of each blending band, arcsec, increasing."""
        return tuple((b[0], b[1]) for b in self._bands)

    def smoothing_sigma_arcsec(self, rh_arcsec: float) -> float:
        """Sigma of the fit's smoothing Gaussian for a source of this r_h (the larger scale's in a band)."""
        i, w, _ = self._weight(float(rh_arcsec))
        return self.smoothing_sigma * self._tables[i + (w > 0)].scale_arcsec

    def __repr__(self) -> str:
        return (f"MultiScaleSersic(M={self.n_gauss}, n in [{self._n_range[0]:g}, {self._n_range[1]:g}], "
                f"rh_arcsec in [{self._rh_range[0]:.3g}, {self._rh_range[1]:.3g}], scales_arcsec="
                f"{tuple(round(s, 5) for s in self.scales_arcsec)})")

    def _weights(self, rh: np.ndarray):
        """Arrays (i, w, dw/drh) of :meth:`_weight` for r_h of shape (S,)."""
        b = np.searchsorted(self._band_lo, rh, side="right") - 1  # last band starting at or below r_h
        inside = (b >= 0) & (rh < self._band_hi[np.maximum(b, 0)])
        i = np.where(inside, b, b + 1)
        w = np.zeros(rh.shape)
        dw = np.zeros(rh.shape)
        if inside.any():
            bi = b[inside]
            x = (np.log(rh[inside]) - self._band_ln_lo[bi]) / self._band_ln_width[bi]
            x2 = x * x
            w[inside] = x2 * x * (x * (6.0 * x - 15.0) + 10.0)
            dw[inside] = 30.0 * x2 * (x - 1.0) ** 2 / (self._band_ln_width[bi] * rh[inside])
        return i, w, dw

    def _weight(self, rh: float):
        """(i, w, dw/drh): scale i, and the weight w of scale i + 1 (0 outside a band)."""
        for i, (b_lo, b_hi, ln_lo, ln_width) in enumerate(self._bands):
            if rh < b_lo:
                return i, 0.0, 0.0
            if rh < b_hi:
                w, dw = _smootherstep((math.log(rh) - ln_lo) / ln_width)
                return i, w, dw / (ln_width * rh)
        return len(self._bands), 0.0, 0.0

    def _check_range(self, n: np.ndarray, rh_arcsec: np.ndarray) -> None:
        lo, hi = self._n_range
        bad = ~((n >= lo) & (n <= hi))
        if bad.any():
            v = float(n[np.argmax(bad)])
            raise PhoRangeError(f"Sersic index n={v:.6g} is outside the table range [{lo:g}, {hi:g}]; bound n in "
                                "the prior or rebuild the table with a wider --n-range", v, lo, hi)
        rlo, rhi = self._rh_range
        bad = ~((rh_arcsec >= rlo) & (rh_arcsec <= rhi))
        if bad.any():
            v = float(rh_arcsec[np.argmax(bad)])
            raise PhoRangeError(
                f"half-light radius rh_arcsec={v:.6g} is outside the profile's range [{rlo:.6g}, {rhi:.6g}] arcsec; "
                "bound rh_arcsec in the prior, or build MultiScaleSersic(rh_range_arcsec=...) with a wider range",
                v, rlo, rhi)

    def amplitudes(self, n, rh_arcsec):
        """Amplitudes of the M union Gaussians and their derivatives in n and rh_arcsec.

        Same contract as :meth:`SersicTable.amplitudes`: for scalars three arrays of shape
        (M,), for arrays of S sources three of shape (S, M); ``a`` sums to one per source, the
        derivatives to zero.

        Raises
        ------
        PhoRangeError
            ``n`` or ``rh_arcsec`` outside ``n_range`` / ``rh_range_arcsec`` (NaN included).
        """
        scalar = np.ndim(n) == 0 and np.ndim(rh_arcsec) == 0
        M = self.n_gauss
        one = scalar or (np.size(n) == 1 and np.size(rh_arcsec) == 1)
        if one:  # one source (the common case): scalar arithmetic
            nn = float(n) if np.ndim(n) == 0 else float(np.ravel(n)[0])
            rh = float(rh_arcsec) if np.ndim(rh_arcsec) == 0 else float(np.ravel(rh_arcsec)[0])
            if self._n_range[0] <= nn <= self._n_range[1] and self._rh_range[0] <= rh <= self._rh_range[1]:
                t, w, _ = self._weight(rh)
                if w == 0.0:
                    table = self._tables[t]
                    out = np.zeros((3, M))
                    out[:, self._cols[t]] = table._amplitudes_rows(nn, rh)
                    return (out[0], out[1], out[2]) if scalar else (out[0:1], out[1:2], out[2:3])
        n_arr, rh_arr = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(rh_arcsec, dtype=np.float64))
        n_arr, rh_arr = n_arr.ravel(), rh_arr.ravel()
        S = n_arr.size
        if not (S and n_arr.min() >= self._n_range[0] and n_arr.max() <= self._n_range[1]
                and rh_arr.min() >= self._rh_range[0] and rh_arr.max() <= self._rh_range[1]):
            self._check_range(n_arr, rh_arr)
        i, w, dw = self._weights(rh_arr)
        out = np.zeros((3, S, M))
        for t, table in enumerate(self._tables):
            # sources on scale t alone or as the lower of a band (weight 1 - w), or as the upper (w)
            for sel, fac, dfac in (((i == t), 1.0 - w, -dw), ((i == t - 1) & (w > 0), w, dw)):
                idx = np.flatnonzero(sel)
                if idx.size == 0:
                    continue
                a, da_dn, da_drh = table.amplitudes(n_arr[idx], rh_arr[idx])
                f, df = fac[idx, None], dfac[idx, None]
                rows_cols = np.ix_(idx, self._cols[t])  # no repeated column within one scale
                out[0][rows_cols] += f * a
                out[1][rows_cols] += f * da_dn
                out[2][rows_cols] += f * da_drh + df * a
        if scalar:
            return out[0, 0], out[1, 0], out[2, 0]
        return out[0], out[1], out[2]


@functools.lru_cache(maxsize=1)
def auto_profile() -> MultiScaleSersic:
    """The default Sersic profile of a ``pho.Sersic``: ``MultiScaleSersic()`` over
    ``AUTO_RH_RANGE_ARCSEC``, built on first call and cached (shares the shipped table).

    Returns
    -------
    MultiScaleSersic
        Shared instance; treat it as read-only.

    Examples
    --------
    >>> from pho.sersic import auto_profile
    >>> auto_profile().rh_range_arcsec
    (0.001, 10.0)
    """
    return MultiScaleSersic(default_profile())
