"""Sources on the sky and the scene's parameter vector.

A scene is an ordered list of sources; its parameter vector ``theta`` is the concatenation of
each source's parameters in scene order. Per source, in this order (docs/ARCHITECTURE.md):

- one flux per band of the scene (``scene.bands`` order), user units: ``s{i}.flux_{band}``;
- ``s{i}.ra``, ``s{i}.dec``: degrees;
- Sersic only: the shape, ``s{i}.q`` (b/a) and ``s{i}.pa`` (radians, north through east), or
  with ``shape_parameters="g1_g2"`` the reduced shear ``s{i}.g1``, ``s{i}.g2``, or with
  ``shape_parameters="eta"`` the conformal shear ``s{i}.eta_plus``, ``s{i}.eta_cross``
  (docs/model.md); then ``s{i}.n`` and ``s{i}.rh`` (half-light radius along the major axis,
  arcsec).
"""

from __future__ import annotations

import copy
import math
from numbers import Real
from typing import Mapping, Sequence

import numpy as np

from .errors import PhoRangeError, PhoValueError

__all__ = ["PointSource", "Sersic", "Scene", "PARAMETER_KINDS", "SHEAR_BOUND", "SHAPE_PARAMETERS", "ETA_LIMIT"]

#: Every parameter kind a scene can hold, with its unit.
PARAMETER_KINDS = {
    "flux": "user flux units (per band)",
    "ra": "deg",
    "dec": "deg",
    "q": "dimensionless, b/a in (0, 1]",
    "pa": "rad, north through east, periodic with period pi",
    "g1": "dimensionless reduced shear",
    "g2": "dimensionless reduced shear",
    "eta_plus": "dimensionless conformal shear, -ln(q) cos(2 pa)",
    "eta_cross": "dimensionless conformal shear, -ln(q) sin(2 pa)",
    "n": "dimensionless Sersic index",
    "rh": "arcsec, half-light radius along the major axis",
}

#: Box bound on each of g1, g2 given by ``Scene.parameter_bounds`` (|g| <= 0.99 at the corners,
#: q >= 0.005); the model itself only needs |g| < 1.
SHEAR_BOUND = 0.7

#: Largest conformal shear |eta| a vector may hold: q = exp(-|eta|) is then 1e-300, still a
#: positive double (the model needs q > 0, nothing more).
ETA_LIMIT = 690.0

#: The shape parameterizations of a Scene and the two parameter kinds each puts in the vector.
SHAPE_PARAMETERS = {"q_pa": ("q", "pa"), "g1_g2": ("g1", "g2"), "eta": ("eta_plus", "eta_cross")}


def _finite_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating, np.integer)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real number, got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise PhoValueError(f"{name}={value!r} is not finite; give a finite number")
    return value


def _check_flux(flux) -> dict[str, float]:
    if not isinstance(flux, Mapping):
        raise TypeError(f"flux must be a dict band -> flux (user units), got {type(flux).__name__}: {flux!r}")
    if len(flux) == 0:
        raise PhoValueError("flux is empty; give at least one band, e.g. flux={'F200W': 1.0}")
    out = {}
    for band, value in flux.items():
        if not isinstance(band, str) or not band:
            raise PhoValueError(f"flux band names must be non-empty strings, got {band!r}")
        out[band] = _finite_float(value, f"flux[{band!r}]")
    return out


def _check_position(ra, dec) -> tuple[float, float]:
    ra = _finite_float(ra, "ra (deg)")
    dec = _finite_float(dec, "dec (deg)")
    if not -90.0 <= dec <= 90.0:
        raise PhoRangeError(f"dec={dec!r} deg is outside [-90, 90]; ra and dec are in degrees", dec, -90.0, 90.0)
    return ra, dec


def _check_q(q: float) -> float:
    q = _finite_float(q, "q")
    if not 0.0 < q <= 1.0:
        raise PhoRangeError(
            f"axis ratio q={q!r} is outside (0, 1]; q = b/a of minor to major axis (swap the axes and add pi/2 "
            "to pa if q > 1)",
            q, 0.0, 1.0,
        )
    return q


class PointSource:
    """An unresolved source: all flux at one sky position (convolved with each exposure's PSF).

    Parameters
    ----------
    ra, dec : float
        Position, degrees.
    flux : dict of str to float
        Flux per band, user units (each exposure's ``counts_per_flux`` turns it into counts).
        Negative fluxes are allowed (noise can make the best fit negative).

    Raises
    ------
    PhoValueError
        Non-finite values, an empty flux dict.
    PhoRangeError
        ``dec`` outside [-90, 90].

    Examples
    --------
    >>> import pho
    >>> star = pho.PointSource(150.1, 2.2, {"F814W": 10.0})
    >>> star.parameter_names(("F814W",))
    ['flux_F814W', 'ra', 'dec']
    """

    #: Name of the source type.
    kind = "point"
    #: Parameter kinds after the fluxes.
    _extra_kinds: tuple[str, ...] = ("ra", "dec")

    def __init__(self, ra: float, dec: float, flux: Mapping[str, float]):
        self.ra, self.dec = _check_position(ra, dec)
        self.flux = _check_flux(flux)

    def __repr__(self) -> str:
        return f"PointSource(ra={self.ra!r}, dec={self.dec!r}, flux={self.flux!r})"

    def _kinds(self, shape_parameters: str) -> tuple[str, ...]:
        return self._extra_kinds

    def parameter_names(self, bands: Sequence[str], shape_parameters: str = "q_pa") -> list[str]:
        """Names of this source's parameters (without the ``s{i}.`` prefix)."""
        return [f"flux_{b}" for b in bands] + list(self._kinds(shape_parameters))

    def _values(self, shape_parameters: str) -> list[float]:
        return [self.ra, self.dec]

    def _set_values(self, values, shape_parameters: str) -> None:
        self.ra, self.dec = float(values[0]), float(values[1])


class Sersic(PointSource):
    """A Sersic galaxy, sheared to axis ratio ``q`` and position angle ``pa``.

    Parameters
    ----------
    ra, dec : float
        Centre, degrees.
    flux : dict of str to float
        Total flux per band, user units.
    q : float
        Axis ratio b/a in (0, 1].
    pa : float
        Position angle of the major axis, radians from north through east (any real value;
        period pi).
    n : float
        Sersic index, inside the profile's ``n_range``.
    rh : float
        Half-light radius along the major axis, arcsec, inside the profile's
        ``rh_range_arcsec`` (0.001" to 10" for the default profile).
    profile : profile object, optional
        Gaussian-mixture approximation of the Sersic family (``radii_arcsec``,
        ``amplitudes(n, rh_arcsec)``, ``n_range``, ``rh_range_arcsec``). Default:
        ``pho.sersic.auto_profile()``, the shipped table at the scales that r_h from 0.001" to
        10" needs, chosen per source and blended smoothly (loaded at first use).

    Raises
    ------
    PhoRangeError
        ``q`` outside (0, 1]; ``n`` or ``rh`` not positive; ``n`` or ``rh`` outside the profile's
        range (checked when the profile is first needed, e.g. by :class:`Scene`).
    PhoValueError
        Non-finite values.

    Examples
    --------
    >>> import pho
    >>> from pho.profiles import AnalyticStandInProfile
    >>> gal = pho.Sersic(150.1, 2.2, {"F814W": 10.0}, q=0.6, pa=0.3, n=2.0, rh=0.4,
    ...                  profile=AnalyticStandInProfile())
    >>> gal.parameter_names(("F814W",))
    ['flux_F814W', 'ra', 'dec', 'q', 'pa', 'n', 'rh']
    """

    kind = "sersic"
    _extra_kinds = ("ra", "dec", "q", "pa", "n", "rh")

    def __init__(self, ra: float, dec: float, flux: Mapping[str, float], q: float, pa: float, n: float, rh: float, profile=None):
        super().__init__(ra, dec, flux)
        self.q = _check_q(q)
        self.pa = _finite_float(pa, "pa (rad)")
        self.n = _finite_float(n, "n")
        self.rh = _finite_float(rh, "rh (arcsec)")
        if self.n <= 0:
            raise PhoRangeError(f"Sersic index n={self.n!r} must be positive", self.n, 0.0, math.inf)
        if self.rh <= 0:
            raise PhoRangeError(f"half-light radius rh={self.rh!r} arcsec must be positive", self.rh, 0.0, math.inf)
        self._profile = profile

    def __repr__(self) -> str:
        return (
            f"Sersic(ra={self.ra!r}, dec={self.dec!r}, flux={self.flux!r}, q={self.q!r}, pa={self.pa!r}, "
            f"n={self.n!r}, rh={self.rh!r})"
        )

    @property
    def profile(self):
        """The profile object (the shipped Sersic table unless one was given)."""
        if self._profile is None:
            from .sersic import auto_profile

            self._profile = auto_profile()
        return self._profile

    def check_profile_range(self) -> None:
        """Raise ``PhoRangeError`` if ``n`` or ``rh`` is outside the profile's range."""
        _check_profile_range(self.profile, self.n, self.rh, "")

    def _kinds(self, shape_parameters: str) -> tuple[str, ...]:
        if shape_parameters in ("g1_g2", "eta"):
            return ("ra", "dec") + SHAPE_PARAMETERS[shape_parameters] + ("n", "rh")
        return self._extra_kinds

    def _values(self, shape_parameters: str) -> list[float]:
        if shape_parameters == "g1_g2":
            from .transforms import shear_from_q_pa

            g1, g2 = shear_from_q_pa(self.q, self.pa)
            return [self.ra, self.dec, float(g1), float(g2), self.n, self.rh]
        if shape_parameters == "eta":
            from .transforms import eta_from_q_pa

            ep, ec = eta_from_q_pa(self.q, self.pa)
            return [self.ra, self.dec, float(ep), float(ec), self.n, self.rh]
        return [self.ra, self.dec, self.q, self.pa, self.n, self.rh]

    def _set_values(self, values, shape_parameters: str) -> None:
        self.ra, self.dec = float(values[0]), float(values[1])
        if shape_parameters == "g1_g2":
            from .transforms import q_pa_from_shear

            q, pa = q_pa_from_shear(values[2], values[3])
            self.q, self.pa = float(q), float(pa)
        elif shape_parameters == "eta":
            from .transforms import q_pa_from_eta

            q, pa = q_pa_from_eta(values[2], values[3])
            self.q, self.pa = float(q), float(pa)
        else:
            self.q, self.pa = float(values[2]), float(values[3])
        self.n, self.rh = float(values[4]), float(values[5])


def _check_profile_range(profile, n, rh, label: str) -> None:
    lo, hi = profile.n_range
    if not lo <= n <= hi:
        raise PhoRangeError(
            f"{label}Sersic index n={n:.6g} is outside the profile's range [{lo:g}, {hi:g}]; bound n in the prior "
            "or rebuild the table with a wider n range",
            float(n), float(lo), float(hi),
        )
    lo, hi = profile.rh_range_arcsec
    if not lo <= rh <= hi:
        raise PhoRangeError(
            f"{label}half-light radius rh={rh:.6g} arcsec is outside the profile's range [{lo:g}, {hi:g}] arcsec; "
            "bound rh in the prior or rebuild the table with a wider rh range",
            float(rh), float(lo), float(hi),
        )


class Scene:
    """An ordered set of sources and their joint parameter vector.

    Parameters
    ----------
    sources : sequence of PointSource or Sersic
        The sources; the scene keeps its own copies (``scene.sources``), so later changes to
        the objects passed in do not affect it.
    shape_parameters : {"q_pa", "g1_g2", "eta"}
        How Sersic shapes appear in the vector: axis ratio and position angle, reduced shear
        (g1, g2), or conformal shear (eta_plus, eta_cross) with ``|eta| = -ln q``
        (docs/model.md).
    bands : sequence of str, optional
        The scene's bands, in vector order. Default: every band named in the sources' flux
        dicts, in order of first appearance. When given, fluxes of the sources in other bands
        are not parameters of the scene (``scene.sources`` keep them unchanged).

    Attributes
    ----------
    bands : tuple of str
        Band names, the order of the flux parameters of every source.
    sources : tuple
        Copies of the sources, updated by :meth:`set_vector`.
    parameter_names : tuple of str
        ``"s{i}.{name}"`` per parameter, e.g. ``"s0.flux_F814W"``, ``"s0.ra"``, ``"s1.rh"``.
    parameter_kinds : tuple of str
        The kind of each parameter, one of ``PARAMETER_KINDS`` (``"flux"``, ``"ra"``, ``"dec"``,
        ``"q"``, ``"pa"``, ``"g1"``, ``"g2"``, ``"eta_plus"``, ``"eta_cross"``, ``"n"``, ``"rh"``).
    parameter_sources : ndarray of int, shape (P,)
        Index of the source each parameter belongs to.
    parameter_bands : tuple of str or None
        The band of each flux parameter, None for the others.
    n_params : int
        P.

    Raises
    ------
    PhoValueError
        No sources, a source without a flux in one of the bands, an unknown
        ``shape_parameters``.
    PhoRangeError
        A Sersic's ``n`` or ``rh`` outside its profile's range.

    Examples
    --------
    >>> import pho
    >>> from pho.profiles import AnalyticStandInProfile
    >>> prof = AnalyticStandInProfile()
    >>> scene = pho.Scene([pho.PointSource(150.0, 2.0, {"F814W": 3.0}),
    ...                    pho.Sersic(150.0001, 2.0, {"F814W": 9.0}, 0.5, 0.0, 2.0, 0.3, profile=prof)])
    >>> scene.parameter_names[:4]
    ('s0.flux_F814W', 's0.ra', 's0.dec', 's1.flux_F814W')
    >>> scene.n_params
    10
    """

    def __init__(self, sources: Sequence[PointSource], shape_parameters: str = "q_pa", bands: Sequence[str] | None = None):
        if isinstance(sources, PointSource):
            sources = [sources]
        sources = list(sources)
        if not sources:
            raise PhoValueError("a Scene needs at least one source")
        for i, s in enumerate(sources):
            if not isinstance(s, PointSource):
                raise TypeError(f"source {i} is a {type(s).__name__}, not a pho.PointSource or pho.Sersic")
        if shape_parameters not in SHAPE_PARAMETERS:
            raise PhoValueError(f"shape_parameters={shape_parameters!r}; use 'q_pa' or 'g1_g2' or 'eta'")
        self.shape_parameters = shape_parameters
        if bands is None:
            seen: dict[str, None] = {}
            for s in sources:
                for b in s.flux:
                    seen.setdefault(b, None)
            bands = tuple(seen)
        else:
            bands = tuple(str(b) for b in bands)
            if len(set(bands)) != len(bands) or not bands:
                raise PhoValueError(f"bands must be distinct and non-empty, got {bands}")
        self.bands = bands
        self.sources = tuple(copy.copy(s) for s in sources)
        for s in self.sources:
            s.flux = dict(s.flux)  # the copies share nothing mutable with the caller's sources

        names, kinds, owners, pbands, theta = [], [], [], [], []
        self._offsets = []
        for i, s in enumerate(self.sources):
            missing = [b for b in bands if b not in s.flux]
            if missing:
                raise PhoValueError(
                    f"source {i} ({s.kind}) has no flux for band(s) {missing}; every source needs a flux in every "
                    f"scene band {list(bands)} (give 0.0 for an undetected source)"
                )
            if isinstance(s, Sersic):
                _check_profile_range(s.profile, s.n, s.rh, f"source {i}: ")
            self._offsets.append(len(names))
            for b in bands:
                names.append(f"s{i}.flux_{b}")
                kinds.append("flux")
                pbands.append(b)
                theta.append(s.flux[b])
            for k, v in zip(s._kinds(shape_parameters), s._values(shape_parameters)):
                names.append(f"s{i}.{k}")
                kinds.append(k)
                pbands.append(None)
                theta.append(v)
            owners.append([i] * (len(names) - self._offsets[-1]))
        self.parameter_names = tuple(names)
        self.parameter_kinds = tuple(kinds)
        self.parameter_bands = tuple(pbands)
        self.parameter_sources = np.array([i for o in owners for i in o], dtype=np.intp)
        self.parameter_sources.flags.writeable = False
        self.n_params = len(names)
        self._theta = np.array(theta, dtype=float)
        self._build_checks()

    # ----------------------------------------------------------------- layout for the model
    def source_parameter_indices(self, i: int) -> np.ndarray:
        """Indices into the vector of source ``i``'s parameters (in the source's order)."""
        stop = self._offsets[i + 1] if i + 1 < len(self.sources) else self.n_params
        return np.arange(self._offsets[i], stop)

    def _build_checks(self) -> None:
        """Precompute the O(P) range checks a likelihood call does."""
        kinds = np.array(self.parameter_kinds)
        lo = np.full(self.n_params, -np.inf)
        hi = np.full(self.n_params, np.inf)
        lo[kinds == "dec"], hi[kinds == "dec"] = -90.0, 90.0
        lo[kinds == "q"], hi[kinds == "q"] = np.nextafter(0.0, 1.0), 1.0
        for i, s in enumerate(self.sources):
            if isinstance(s, Sersic):
                idx = self.source_parameter_indices(i)
                sk = kinds[idx]
                p = s.profile
                lo[idx[sk == "n"]], hi[idx[sk == "n"]] = p.n_range
                lo[idx[sk == "rh"]], hi[idx[sk == "rh"]] = p.rh_range_arcsec
        self._check_lo, self._check_hi = lo, hi
        self._g1_index = np.flatnonzero(kinds == "g1")
        self._g2_index = np.flatnonzero(kinds == "g2")
        self._eta_index = np.flatnonzero(kinds == "eta_plus")

    def check_vector(self, theta) -> np.ndarray:
        """Validate a parameter vector: length, finiteness, ranges (O(P)).

        Parameters
        ----------
        theta : array_like of shape (P,)

        Returns
        -------
        ndarray of shape (P,), float64
            ``theta`` as a float array (not a copy when it already is one).

        Raises
        ------
        PhoValueError
            Wrong length or non-finite values (naming the parameter).
        PhoRangeError
            ``q`` outside (0, 1], ``|g| >= 1``, ``|eta| > ETA_LIMIT``, ``n`` or ``rh`` outside the profile's range,
            ``dec`` outside [-90, 90] (naming the parameter and its range).
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise PhoValueError(
                f"parameter vector has shape {theta.shape}, expected ({self.n_params},) for {self.parameter_names}"
            )
        ok = (theta >= self._check_lo) & (theta <= self._check_hi)  # False for NaN too
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            name, value = self.parameter_names[i], float(theta[i])
            if not math.isfinite(value):
                raise PhoValueError(f"parameter {name} = {value!r} is not finite")
            kind = self.parameter_kinds[i]
            lo, hi = float(self._check_lo[i]), float(self._check_hi[i])
            if kind == "q":
                raise PhoRangeError(f"parameter {name} = {value!r} is outside (0, 1] (q = b/a)", value, 0.0, 1.0)
            hint = "; bound it in the prior or rebuild the Sersic table with a wider range" if kind in ("n", "rh") else ""
            raise PhoRangeError(f"parameter {name} = {value!r} is outside its range [{lo:g}, {hi:g}]{hint}", value, lo, hi)
        if self._g1_index.size:
            g = np.hypot(theta[self._g1_index], theta[self._g2_index])
            if np.any(g >= 1.0):
                j = int(np.argmax(g))
                raise PhoRangeError(
                    f"reduced shear of {self.parameter_names[self._g1_index[j]].split('.')[0]} has |g| = {g[j]:.6g} >= 1 "
                    "(q = (1-|g|)/(1+|g|) would be <= 0); keep |g| < 1",
                    float(g[j]), 0.0, 1.0,
                )
        if self._eta_index.size:
            e = np.hypot(theta[self._eta_index], theta[self._eta_index + 1])
            if np.any(e > ETA_LIMIT):
                j = int(np.argmax(e))
                raise PhoRangeError(
                    f"conformal shear of {self.parameter_names[self._eta_index[j]].split('.')[0]} has |eta| = {e[j]:.6g} "
                    f"> {ETA_LIMIT:g} (q = exp(-|eta|) would underflow to 0); bound eta in the prior (the default keeps "
                    "|eta| below 2.3, q >= 0.1)",
                    float(e[j]), 0.0, ETA_LIMIT,
                )
        if not np.isfinite(theta).all():
            i = int(np.flatnonzero(~np.isfinite(theta))[0])
            raise PhoValueError(f"parameter {self.parameter_names[i]} = {theta[i]!r} is not finite")
        return theta

    # ----------------------------------------------------------------- vector access
    def get_vector(self) -> np.ndarray:
        """The current parameter vector, ndarray of shape (P,) (a copy)."""
        return self._theta.copy()

    def set_vector(self, theta) -> None:
        """Set every source's parameters from ``theta`` (validated by :meth:`check_vector`)."""
        theta = self.check_vector(theta).copy()
        nb = len(self.bands)
        for i, s in enumerate(self.sources):
            idx = self.source_parameter_indices(i)
            values = theta[idx]
            s.flux = dict(s.flux)
            s.flux.update({b: float(v) for b, v in zip(self.bands, values[:nb])})
            s._set_values(values[nb:], self.shape_parameters)
        self._theta = theta

    def parameter_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Hard bounds of each parameter, for :class:`pho.transforms.LogisticTransform`.

        Returns
        -------
        lower, upper : ndarray of shape (P,)
            flux, ra, dec, pa: unbounded (-inf, inf) (pa is periodic); q: (0, 1); n and rh: the
            profile's range; g1 and g2: (-SHEAR_BOUND, SHEAR_BOUND) = (-0.7, 0.7), a box inside
            the unit disk |g| < 1; eta_plus and eta_cross: unbounded (every finite eta is a
            valid shape).
        """
        kinds = np.array(self.parameter_kinds)
        lo = np.where(np.isin(kinds, ("n", "rh")), self._check_lo, -np.inf)
        hi = np.where(np.isin(kinds, ("n", "rh")), self._check_hi, np.inf)
        lo[kinds == "q"], hi[kinds == "q"] = 0.0, 1.0
        shear = np.isin(kinds, ("g1", "g2"))
        lo[shear], hi[shear] = -SHEAR_BOUND, SHEAR_BOUND
        return lo, hi

    def __repr__(self) -> str:
        return f"Scene({len(self.sources)} sources, bands={self.bands}, shape_parameters={self.shape_parameters!r})"
