"""PSFs that vary over the detector: a rectilinear grid of PSF mixtures and their interpolation.

A :class:`PSFGrid` holds one :class:`~pho.psf.PSFMixture` per grid point ``(x_pix, y_pix)``
(0-based detector pixels), all with the same number L of Gaussians. ``at(x_pix, y_pix)`` gives
the mixture for a source at that position:

- ``"nearest"``: the mixture of the nearest grid point (ties: the lower x, then the lower y);
- ``"bilinear"``: each Gaussian's amplitude, centre and covariance interpolated bilinearly
  between the four grid points around the position. The weights are non-negative and sum to
  one, so every interpolated covariance is a convex combination of positive-definite matrices:
  positive definite, with its smallest eigenvalue at least the smallest of the four (so no
  component gets narrower than the narrowest it is interpolated from, and
  ``pho._reference.MIN_FWHM_PIX`` holds), and the amplitudes sum to the same weighted mean of
  the four sums (one, for fitted mixtures). This needs Gaussian l to be "the same" Gaussian at
  every grid point: a shared component order, which ``pho.psfgridfit.fit_psf_grid`` (and
  ``python -m pho.tools.fitpsf --hdus``) produces; :func:`match_components` finds the best
  order, and a grid whose neighbours are not in their best order warns at construction.

Positions outside the grid's hull (the rectangle spanned by its grid points) are refused by
default (``outside="error"``): pho does not extrapolate a PSF. ``outside="clamp"`` uses the
position's nearest point on the hull instead, with a :class:`~pho.errors.PhoDataWarning` each
time it happens.

File format (``write``/``read``): FITS, extension ``PSFGRID``, one row per grid point and
component, columns ``x_pix, y_pix`` (the grid point, detector pixels), ``comp`` (component
index l, 0-based), ``amp, x, y, cxx, cxy, cyy`` (as ``PSFMIX``: offsets in pixels, covariances
in pixels^2), and per grid point figures of the fit where known (``maxres``, ``sumres``,
``hdu``, ...). Header: ``NGAUSS``, ``NPOINTS``, ``NXGRID``, ``NYGRID``, ``INTERP``, ``OUTSIDE``,
``UNITS`` and the provenance in ``meta`` (input file, command line, how the positions were
found). Written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
from itertools import permutations
from pathlib import Path

import numpy as np

from .errors import NOT_OVERWRITING_MSG, PhoDataWarning, PhoValueError, warn
from .psf import PSFMixture

__all__ = [
    "PSFGrid", "grid_nodes", "INTERPOLATIONS", "OUTSIDE_POLICIES", "match_components", "component_distance", "read_psf",
    "psf_parameter_arrays",
]

#: Interpolation schemes of :class:`PSFGrid`.
INTERPOLATIONS = ("bilinear", "nearest")
#: What :class:`PSFGrid` does with a position outside its hull.
OUTSIDE_POLICIES = ("error", "clamp")
#: Positions this far outside the hull (a fraction of the hull's larger side, at least 1e-9
#: pixel) still count as inside: rounding in pixel positions must not trip the outside policy.
EDGE_TOLERANCE = 1e-9

_COLUMNS = ("amp", "x", "y", "cxx", "cxy", "cyy")
#: Per-point meta keys that become table columns when every mixture of the grid has them.
_POINT_KEYS = ("HDU", "PLANE", "MAXRES", "SUMRES", "MODSCALE", "CENTERX", "CENTERY", "EMITER", "NSWAPS", "NWIDENED")


def _mixture_parameters(m: PSFMixture) -> np.ndarray:
    """(L, 6) array amp, x, y, cxx, cxy, cyy of a mixture."""
    return np.column_stack([m.amp, m.x, m.y, m.cxx, m.cxy, m.cyy])


def component_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Dissimilarity of every Gaussian of one mixture to every Gaussian of another.

    Parameters
    ----------
    p, q : ndarray of shape (L, 6) and (K, 6)
        Columns ``amp, x, y, cxx, cxy, cyy`` (pixels, pixels^2).

    Returns
    -------
    ndarray of shape (L, K)
        The symmetric Kullback-Leibler divergence of the two normalized Gaussians (shape, size
        and centre; zero for equal Gaussians, scale-free) plus ``((a_p - a_q) / (a_p + a_q))^2``
        for the amplitudes.
    """
    C1 = np.empty((len(p), 2, 2))
    C1[:, 0, 0], C1[:, 0, 1], C1[:, 1, 0], C1[:, 1, 1] = p[:, 3], p[:, 4], p[:, 4], p[:, 5]
    C2 = np.empty((len(q), 2, 2))
    C2[:, 0, 0], C2[:, 0, 1], C2[:, 1, 0], C2[:, 1, 1] = q[:, 3], q[:, 4], q[:, 4], q[:, 5]
    I1, I2 = np.linalg.inv(C1), np.linalg.inv(C2)
    tr12 = np.einsum("kij,lji->lk", I2, C1)  # tr(C2_k^-1 C1_l), (L, K)
    tr21 = np.einsum("lij,kji->lk", I1, C2)  # tr(C1_l^-1 C2_k)
    dmu = p[:, None, 1:3] - q[None, :, 1:3]  # (L, K, 2)
    Isum = I1[:, None] + I2[None, :]  # (L, K, 2, 2)
    maha = np.einsum("lki,lkij,lkj->lk", dmu, Isum, dmu)
    kl = 0.5 * (tr12 + tr21 - 4.0 + maha)
    a1, a2 = p[:, 0][:, None], q[:, 0][None, :]
    return kl + ((a1 - a2) / (a1 + a2)) ** 2


def match_components(reference, mixture) -> np.ndarray:
    """The order of ``mixture``'s Gaussians that best matches ``reference``'s, one to one.

    Parameters
    ----------
    reference, mixture : PSFMixture or ndarray of shape (L, 6)
        Two mixtures with the same number L of Gaussians.

    Returns
    -------
    perm : ndarray of int, shape (L,)
        ``mixture``'s Gaussian ``perm[l]`` corresponds to ``reference``'s Gaussian l: the
        assignment that minimizes the summed :func:`component_distance` (exhaustive for
        L <= 6, else scipy's ``linear_sum_assignment``).

    Raises
    ------
    PhoValueError
        Different numbers of Gaussians.
    """
    p = _mixture_parameters(reference) if isinstance(reference, PSFMixture) else np.asarray(reference, float)
    q = _mixture_parameters(mixture) if isinstance(mixture, PSFMixture) else np.asarray(mixture, float)
    if p.shape != q.shape:
        raise PhoValueError(
            f"cannot match mixtures of {len(p)} and {len(q)} Gaussians one to one; fit every grid PSF with the same "
            "number of Gaussians (--ngauss K)"
        )
    cost = component_distance(p, q)
    L = len(p)
    if L <= 6:
        best, best_cost = None, math.inf
        rows = np.arange(L)
        for perm in permutations(range(L)):
            c = float(cost[rows, perm].sum())
            if c < best_cost - 1e-12 * max(1.0, abs(best_cost)) or best is None:
                best, best_cost = perm, c
        return np.array(best, dtype=np.intp)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return np.asarray(cols[np.argsort(rows)], dtype=np.intp)


def grid_nodes(x_pix, y_pix):
    """Check that positions form a full rectilinear grid and index them.

    Parameters
    ----------
    x_pix, y_pix : array_like of shape (P,)
        Positions, pixels.

    Returns
    -------
    xs, ys : ndarray of shape (nx,), (ny,)
        The distinct x and y values, increasing.
    ix, iy : ndarray of int, shape (P,)
        Column and row of each position in the (ny, nx) grid.

    Raises
    ------
    PhoValueError
        Lengths that differ, non-finite values, a repeated position, or positions that are not
        every (x, y) pair of the distinct values (with at least 2 of each).
    """
    x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).ravel()
    y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).ravel()
    if len(x) != len(y):
        raise PhoValueError(f"grid positions: {len(x)} x values but {len(y)} y values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        bad = np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))
        raise PhoValueError(
            f"grid points {bad.tolist()} have non-finite positions ({x[bad].tolist()}, {y[bad].tolist()}); give every "
            "PSF its detector position (header keys PSFX/PSFY, --positions or --grid in fitpsf)"
        )
    xs, ix = np.unique(x, return_inverse=True)
    ys, iy = np.unique(y, return_inverse=True)
    nx, ny = len(xs), len(ys)
    flat = iy * nx + ix
    if nx < 2 or ny < 2 or len(x) != nx * ny or len(np.unique(flat)) != len(flat):
        seen = np.bincount(flat, minlength=nx * ny)
        dup = np.flatnonzero(seen > 1)
        what = (
            f"position ({xs[dup[0] % nx]:g}, {ys[dup[0] // nx]:g}) appears {int(seen[dup[0]])} times" if dup.size
            else f"{nx} distinct x and {ny} distinct y values need {nx * ny} points, got {len(x)}"
        )
        raise PhoValueError(
            f"PSF grid positions do not form a full rectilinear grid with at least 2 x 2 points ({what}); give one "
            "PSF per (x, y) pair of a grid (uneven spacing is fine)"
        )
    return xs, ys, ix, iy


class PSFGrid:
    """PSF mixtures on a rectilinear grid of detector positions, interpolated in between.

    Parameters
    ----------
    x_pix, y_pix : array_like of shape (P,)
        Grid point positions, 0-based detector pixels (the frame of the image the grid was made
        for). They must form a full rectilinear grid: every pair of ``nx`` distinct x values and
        ``ny`` distinct y values exactly once (``P = nx * ny``, ``nx, ny >= 2``), spacing
        uneven allowed, any order.
    mixtures : sequence of PSFMixture, length P
        The PSF at each grid point, in detector pixels, all with the same number L of
        Gaussians; for ``"bilinear"`` in a shared component order (module docstring).
    interpolation : {"bilinear", "nearest"}
        How ``at`` combines grid points (module docstring). Default "bilinear".
    outside : {"error", "clamp"}
        What ``at`` does with a position outside the hull (module docstring). Default "error".
    meta : dict, optional
        Provenance (input file, command line, how positions were found); written to the header.

    Raises
    ------
    PhoValueError
        Lengths that disagree, non-finite or repeated positions, positions that are not a full
        rectilinear grid, mixtures with different numbers of Gaussians, an unknown
        ``interpolation`` or ``outside``.
    TypeError
        An element of ``mixtures`` that is not a PSFMixture.

    Warns
    -----
    PhoDataWarning
        With ``"bilinear"``: neighbouring grid points whose Gaussians are not in their best
        one-to-one order (:func:`match_components`), so interpolation would blend unlike
        Gaussians.

    Examples
    --------
    >>> from pho import PSFMixture
    >>> from pho.psfgrid import PSFGrid
    >>> mix = [PSFMixture.gaussian(fwhm_pix=f) for f in (2.0, 2.2, 2.4, 2.6)]
    >>> grid = PSFGrid([0, 100, 0, 100], [0, 0, 100, 100], mix)
    >>> round(float(grid.at(50.0, 50.0).cxx[0] / mix[0].cxx[0]), 4)  # mean of the four variances
    1.335
    """

    def __init__(self, x_pix, y_pix, mixtures, *, interpolation: str = "bilinear", outside: str = "error", meta=None):
        x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).copy()
        y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).copy()
        mixtures = tuple(mixtures)
        if x.ndim != 1 or y.ndim != 1 or not (len(x) == len(y) == len(mixtures)):
            raise PhoValueError(
                f"PSFGrid needs one x_pix, one y_pix and one mixture per grid point; got {x.shape}, {y.shape} and "
                f"{len(mixtures)} mixtures"
            )
        for i, m in enumerate(mixtures):
            if not isinstance(m, PSFMixture):
                raise TypeError(f"PSFGrid mixture {i} is a {type(m).__name__}, not a pho.PSFMixture")
        counts = sorted({m.n_gauss for m in mixtures})
        if len(counts) != 1:
            per = {m.n_gauss: i for i, m in enumerate(mixtures)}
            raise PhoValueError(
                f"PSFGrid mixtures have different numbers of Gaussians {counts} (e.g. grid point {per[counts[0]]} has "
                f"{counts[0]}, grid point {per[counts[-1]]} has {counts[-1]}); every grid point needs the same L, in a "
                "shared order: refit them together with one --ngauss K (python -m pho.tools.fitpsf --hdus ...)"
            )
        if interpolation not in INTERPOLATIONS:
            raise PhoValueError(f"interpolation={interpolation!r}; use one of {INTERPOLATIONS}")
        if outside not in OUTSIDE_POLICIES:
            raise PhoValueError(f"outside={outside!r}; use one of {OUTSIDE_POLICIES}")
        xs, ys, ix, iy = grid_nodes(x, y)
        nx, ny = len(xs), len(ys)
        params = np.empty((ny, nx, counts[0], 6))
        for k, m in enumerate(mixtures):
            params[iy[k], ix[k]] = _mixture_parameters(m)
        for a in (x, y, xs, ys, params):
            a.flags.writeable = False
        self._set(
            x_pix=x, y_pix=y, mixtures=mixtures, interpolation=interpolation, outside=outside,
            meta=dict(meta or {}), _xs=xs, _ys=ys, _params=params, _node=np.column_stack([iy, ix]),
        )
        if interpolation == "bilinear":
            self._check_component_order()

    # ------------------------------------------------------------------ immutability
    def _set(self, **kw):
        for k, v in kw.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, key, value):
        raise AttributeError(f"PSFGrid is immutable; make a new one (e.g. with_options) instead of setting {key!r}")

    def __repr__(self) -> str:
        ny, nx = self.shape
        return (
            f"PSFGrid({nx} x {ny} points, x {self._xs[0]:g}..{self._xs[-1]:g}, y {self._ys[0]:g}..{self._ys[-1]:g} pix, "
            f"{self.n_gauss} Gaussians, interpolation={self.interpolation!r}, outside={self.outside!r})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_points(self) -> int:
        """Number of grid points P."""
        return len(self.mixtures)

    @property
    def n_gauss(self) -> int:
        """Number of Gaussians L of every mixture."""
        return self._params.shape[2]

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx): grid points along y and x."""
        return self._params.shape[:2]

    @property
    def x_nodes(self) -> np.ndarray:
        """The distinct x positions of the grid points, increasing, shape (nx,), pixels."""
        return self._xs

    @property
    def y_nodes(self) -> np.ndarray:
        """The distinct y positions of the grid points, increasing, shape (ny,), pixels."""
        return self._ys

    @property
    def hull(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max): the rectangle the grid points span, pixels."""
        return float(self._xs[0]), float(self._xs[-1]), float(self._ys[0]), float(self._ys[-1])

    def with_options(self, interpolation: str | None = None, outside: str | None = None) -> "PSFGrid":
        """This grid with another interpolation scheme and/or outside policy (mixtures shared)."""
        return PSFGrid(
            self.x_pix, self.y_pix, self.mixtures, meta=self.meta,
            interpolation=self.interpolation if interpolation is None else interpolation,
            outside=self.outside if outside is None else outside,
        )

    def parameter_arrays(self) -> tuple[np.ndarray, ...]:
        """Positions and parameters, for digests: ``x_pix, y_pix`` (P,) and the six (P, L)
        columns ``amp, x, y, cxx, cxy, cyy`` in grid point order."""
        p = np.stack([_mixture_parameters(m) for m in self.mixtures])
        return (self.x_pix, self.y_pix) + tuple(np.ascontiguousarray(p[:, :, c]) for c in range(6))

    # ------------------------------------------------------------------ interpolation
    def contains(self, x_pix, y_pix) -> np.ndarray:
        """Whether positions lie in the hull (within ``EDGE_TOLERANCE``), bool array."""
        x, y = np.broadcast_arrays(np.asarray(x_pix, float), np.asarray(y_pix, float))
        x0, x1, y0, y1 = self.hull
        tol = EDGE_TOLERANCE * max(1.0, x1 - x0, y1 - y0)
        return (x >= x0 - tol) & (x <= x1 + tol) & (y >= y0 - tol) & (y <= y1 + tol)

    def _resolve_outside(self, x, y, labels, where):
        """Apply the outside policy: returns positions clipped into the hull (or raises)."""
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            k = int(np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))[0])
            who = labels[k] if labels is not None else f"position {k}"
            raise PhoValueError(
                f"{who}: the PSF is asked for at a non-finite pixel position ({x[k]}, {y[k]}){where}; check the source's "
                "position and the exposure's WCS"
            )
        inside = self.contains(x, y)
        if inside.all():
            return x, y
        x0, x1, y0, y1 = self.hull
        out = np.flatnonzero(~inside)
        dist = np.hypot(np.maximum(0, np.maximum(x0 - x[out], x[out] - x1)), np.maximum(0, np.maximum(y0 - y[out], y[out] - y1)))
        k = int(out[np.argmax(dist)])
        who = labels[k] if labels is not None else f"position {k}"
        if self.outside == "error":
            raise PhoValueError(
                f"{who} at pixel ({x[k]:.2f}, {y[k]:.2f}) of the PSF grid's frame{where} is {float(dist.max()):.3g} pixels "
                f"outside the grid's hull x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}] ({len(out)} position(s) outside); "
                "pho does not extrapolate PSFs. Give a grid that covers every source (PSFs out to the detector's edges), "
                "check the grid's frame (Exposure psf_offset_pix for cutouts), or use grid.with_options(outside='clamp') "
                "to take the PSF at the nearest point of the hull (with a warning)"
            )
        warn(
            f"{len(out)} position(s) outside the PSF grid's hull x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}]{where}, up "
            f"to {float(dist.max()):.3g} pixels ({who} at ({x[k]:.2f}, {y[k]:.2f})): using the PSF at the nearest point "
            "of the hull (outside='clamp')",
            PhoDataWarning,
            stacklevel=4,
        )
        return np.clip(x, x0, x1), np.clip(y, y0, y1)

    def weights(self, x_pix, y_pix, labels=None, where: str = ""):
        """Grid points and weights that make the PSF at each position.

        Parameters
        ----------
        x_pix, y_pix : array_like of shape (S,)
            Positions, pixels of the grid's frame.
        labels : sequence of str, optional
            Names of the positions for messages (default ``position k``).
        where : str
            Appended to messages (e.g. which exposure).

        Returns
        -------
        nodes : ndarray of int, shape (S, 4)
            Flat grid point indices ``iy * nx + ix`` into the (ny, nx) grid.
        w : ndarray of shape (S, 4)
            Weights (bilinear: non-negative, summing to one; nearest: one 1 and three 0).

        Raises
        ------
        PhoValueError
            A non-finite position; a position outside the hull with ``outside="error"``.
        """
        x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).ravel()
        y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).ravel()
        x, y = self._resolve_outside(x, y, labels, where)
        xs, ys = self._xs, self._ys
        nx = len(xs)
        i = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, nx - 2)
        j = np.clip(np.searchsorted(ys, y, side="right") - 1, 0, len(ys) - 2)
        tx = np.clip((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0)
        ty = np.clip((y - ys[j]) / (ys[j + 1] - ys[j]), 0.0, 1.0)
        nodes = np.column_stack([j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1])
        if self.interpolation == "bilinear":
            w = np.column_stack([(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty])
        else:
            # nearest in x and in y separately is nearest in the plane for a rectilinear grid; ties go low
            w = np.zeros((len(x), 4))
            w[np.arange(len(x)), (tx > 0.5).astype(int) + 2 * (ty > 0.5).astype(int)] = 1.0
        return nodes, w

    def nearest_index(self, x_pix, y_pix) -> np.ndarray:
        """Index (into ``mixtures``) of the grid point nearest each position, inside the hull or
        not (no outside policy: for planning, e.g. footprints), ndarray of int of the input's size."""
        x = np.atleast_1d(np.asarray(x_pix, dtype=np.float64)).ravel()
        y = np.atleast_1d(np.asarray(y_pix, dtype=np.float64)).ravel()
        ix = np.argmin(np.abs(x[:, None] - self._xs[None, :]), axis=1)
        iy = np.argmin(np.abs(y[:, None] - self._ys[None, :]), axis=1)
        point = np.empty(self.shape, dtype=np.intp)
        point[self._node[:, 0], self._node[:, 1]] = np.arange(self.n_points)
        return point[iy, ix]

    def parameters_at(self, x_pix, y_pix, labels=None, where: str = "") -> np.ndarray:
        """Mixture parameters at each position, vectorized (the model's path).

        Parameters
        ----------
        x_pix, y_pix : array_like of shape (S,)
            Positions, pixels of the grid's frame.
        labels, where
            As for :meth:`weights`.

        Returns
        -------
        ndarray of shape (S, L, 6)
            ``amp, x, y, cxx, cxy, cyy`` of each position's mixture (pixels, pixels^2).
        """
        nodes, w = self.weights(x_pix, y_pix, labels, where)
        flat = self._params.reshape(-1, self.n_gauss, 6)
        return np.einsum("sk,skld->sld", w, flat[nodes])

    def at(self, x_pix: float, y_pix: float) -> PSFMixture:
        """The PSF mixture at one position.

        Parameters
        ----------
        x_pix, y_pix : float
            Position, 0-based pixels of the grid's frame.

        Returns
        -------
        PSFMixture
            The grid point's mixture (``"nearest"``, or any scheme at a grid point) or the
            interpolated one; ``meta`` records the position and the scheme.

        Raises
        ------
        PhoValueError
            A non-finite position; a position outside the hull with ``outside="error"``.

        Warns
        -----
        PhoDataWarning
            A position outside the hull with ``outside="clamp"``.
        """
        p = self.parameters_at([x_pix], [y_pix])[0]
        return PSFMixture(*p.T, meta={"PSFGRIDX": float(x_pix), "PSFGRIDY": float(y_pix), "INTERP": self.interpolation})

    def _check_component_order(self) -> None:
        ny, nx = self.shape
        bad = []
        for j in range(ny):
            for i in range(nx):
                for jj, ii in ((j, i + 1), (j + 1, i)):
                    if jj < ny and ii < nx:
                        perm = match_components(self._params[j, i], self._params[jj, ii])
                        if np.any(perm != np.arange(self.n_gauss)):
                            bad.append(((self._xs[i], self._ys[j]), (self._xs[ii], self._ys[jj]), perm))
        if bad:
            (xa, ya), (xb, yb), perm = bad[0]
            warn(
                f"{len(bad)} pair(s) of neighbouring PSF grid points have their Gaussians in different orders (e.g. "
                f"({xa:g}, {ya:g}) and ({xb:g}, {yb:g}): best match {perm.tolist()}), so bilinear interpolation blends "
                "unlike Gaussians there. Refit the grid with python -m pho.tools.fitpsf --hdus (which orders them), or "
                "use interpolation='nearest'",
                PhoDataWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ files
    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the grid as a FITS table (extension ``PSFGRID``, module docstring), atomically.

        Parameters
        ----------
        path : str or path-like
        overwrite : bool
            Replace an existing file; without it an existing file raises ``FileExistsError``.

        Returns
        -------
        Path
        """
        import warnings

        from astropy.io import fits

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(NOT_OVERWRITING_MSG.format(path=path))
        L, P = self.n_gauss, self.n_points
        params = np.stack([_mixture_parameters(m) for m in self.mixtures]).reshape(P * L, 6)
        cols = [
            fits.Column(name="x_pix", format="D", array=np.repeat(self.x_pix, L)),
            fits.Column(name="y_pix", format="D", array=np.repeat(self.y_pix, L)),
            fits.Column(name="comp", format="J", array=np.tile(np.arange(L), P)),
        ]
        cols += [fits.Column(name=name, format="D", array=params[:, c]) for c, name in enumerate(_COLUMNS)]
        for key in _POINT_KEYS:
            values = [m.meta.get(key) for m in self.mixtures]
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
                cols.append(fits.Column(name=key.lower(), format="K", array=np.repeat(np.asarray(values, np.int64), L)))
            elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
                cols.append(fits.Column(name=key.lower(), format="D", array=np.repeat(np.asarray(values, float), L)))
        table = fits.BinTableHDU.from_columns(cols, name="PSFGRID")
        h = table.header
        h["NGAUSS"] = (L, "Gaussians per grid point")
        h["NPOINTS"] = (P, "grid points")
        h["NXGRID"] = (self.shape[1], "distinct x positions")
        h["NYGRID"] = (self.shape[0], "distinct y positions")
        h["INTERP"] = (self.interpolation, "interpolation: bilinear or nearest")
        h["OUTSIDE"] = (self.outside, "outside the hull: error or clamp")
        h["UNITS"] = ("pixel", "x_pix,y_pix,x,y pix; cxx,cxy,cyy pix2")
        for key, value in self.meta.items():
            key = str(key).upper()
            h[key if len(key) <= 8 else f"HIERARCH {key}"] = value
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Card is too long, comment will be truncated")
            fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, interpolation: str | None = None, outside: str | None = None) -> "PSFGrid":
        """Read a grid written by :meth:`write` (or ``python -m pho.tools.fitpsf --hdus``).

        Parameters
        ----------
        path : str or path-like
        interpolation, outside : str, optional
            Override the file's ``INTERP`` and ``OUTSIDE``.

        Raises
        ------
        PhoValueError
            No ``PSFGRID`` extension, missing columns, or a table that is not one row per grid
            point and component.
        """
        from astropy.io import fits

        with fits.open(path) as hdul:
            if "PSFGRID" not in hdul:
                raise PhoValueError(f"{path} has no PSFGRID extension; is it a pho PSF grid file?")
            hdu = hdul["PSFGRID"]
            data = hdu.data
            names = [n.lower() for n in data.columns.names]
            missing = [c for c in ("x_pix", "y_pix", "comp") + _COLUMNS if c not in names]
            if missing:
                raise PhoValueError(f"{path}: PSFGRID table lacks columns {missing}")
            header = hdu.header
            L = int(header.get("NGAUSS", 0))
            cols = {c: np.array(data[c], dtype=np.float64) for c in ("x_pix", "y_pix") + _COLUMNS}
            comp = np.array(data["comp"], dtype=np.int64)
            extra = {k: np.array(data[k.lower()]) for k in _POINT_KEYS if k.lower() in names}
            skip = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS", "EXTNAME",
                    "NGAUSS", "NPOINTS", "NXGRID", "NYGRID", "INTERP", "OUTSIDE", "UNITS"}
            meta = {k: v for k, v in header.items() if k not in skip and not k.startswith(("TTYPE", "TFORM"))}
            interp = interpolation or str(header.get("INTERP", "bilinear"))
            out = outside or str(header.get("OUTSIDE", "error"))
        n = len(comp)
        if L < 1 or n % L or not np.array_equal(comp, np.tile(np.arange(L), n // L)):
            raise PhoValueError(
                f"{path}: the PSFGRID table must hold NGAUSS={L} rows per grid point with comp = 0..{L - 1} in order; "
                "it was not written by pho.PSFGrid.write"
            )
        mixtures, xs, ys = [], [], []
        for p in range(n // L):
            rows = slice(p * L, (p + 1) * L)
            pm = {k: (int(v[p * L]) if v.dtype.kind in "iu" else float(v[p * L])) for k, v in extra.items()}
            mixtures.append(PSFMixture(*(cols[c][rows] for c in _COLUMNS), meta=pm))
            xs.append(cols["x_pix"][p * L])
            ys.append(cols["y_pix"][p * L])
        return cls(xs, ys, mixtures, interpolation=interp, outside=out, meta=meta)


def read_psf(path: str | os.PathLike):
    """Read a PSF file: a :class:`PSFGrid` (extension ``PSFGRID``) or a
    :class:`~pho.psf.PSFMixture` (extension ``PSFMIX``).

    Raises
    ------
    PhoValueError
        A file with neither extension.
    """
    from astropy.io import fits

    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
    if "PSFGRID" in names:
        return PSFGrid.read(path)
    if "PSFMIX" in names:
        return PSFMixture.read(path)
    raise PhoValueError(
        f"{path} has neither a PSFMIX (one PSF mixture) nor a PSFGRID (a grid of them) extension; make one with "
        "python -m pho.tools.fitpsf"
    )


def psf_parameter_arrays(psf) -> tuple[np.ndarray, ...]:
    """The arrays that identify a PSF (for digests): a mixture's six columns, or a grid's
    positions and columns (:meth:`PSFGrid.parameter_arrays`)."""
    if isinstance(psf, PSFGrid):
        return psf.parameter_arrays()
    return (psf.amp, psf.x, psf.y, psf.cxx, psf.cxy, psf.cyy)
