"""Priors on scene parameters: per-parameter distributions with data-driven default bounds.

A :class:`Priors` object holds one one-dimensional distribution per scene parameter (in the
order of ``likelihood.parameter_names``). It gives the prior transform from the unit cube that
nested sampling needs, the log prior density and its gradient for optimizers, and the bounds.

Default bounds (:func:`default_priors`), all uniform (the seed's choice):

- ``ra``, ``dec``: a box of half-width ``position_box_arcsec`` around the initial position.
- ``flux_<band>``: ``[-5 sigma_ap, 3 * max(S_ap, 0) + 10 sigma_ap]`` where ``S_ap`` is the sum of
  the background-subtracted pixels (in flux units) in a circular aperture around the source in the
  exposures of that band and ``sigma_ap`` its noise; widened to include the initial flux.
- ``q``: ``[0.1, 1]``; ``pa``: a window of width pi centred on the initial angle, treated as
  periodic by the sampler (a pi rotation is the same ellipse).
- ``n`` and ``rh``: the source's profile's ``n_range`` and ``rh_range_arcsec`` (for the default
  profile, ``pho.sersic.auto_profile()``: n from 0.5 to 6, r_h from 0.001" to 10").
- ``g1``, ``g2`` (if the scene uses reduced shear): ``[-0.82, 0.82]`` (|g| = 0.82 is q = 0.1).
- ``eta_plus``, ``eta_cross`` (conformal shear): each a normal of mean 0 and sigma
  ``ETA_SIGMA`` = 1, truncated to ``[-ETA_MAX, ETA_MAX]`` with ``ETA_MAX = -ln(Q_MIN)`` = 2.30
  (so the axes stop at q = 0.1). The pair is an isotropic 2-d Gaussian (no preferred position
  angle) inside that box; sigma 1 per component is the second moment of a population uniform in
  q on (0, 1] (``|eta| = -ln q`` is then exponential, ``E|eta|^2 = 2``). It is smooth everywhere,
  so NUTS and L-BFGS-B see no wall inside the box (docs/model.md, "Conformal shear").
- ``sky_<k>.level``, ``sky_<k>.slope_x``, ``sky_<k>.slope_y`` (sky background of exposure k,
  ``pho.Likelihood(sky=...)``): uniform, level in ``start +/- W`` with ``W = 10 sigma_pix +
  2 |median(data - background)|`` (``sigma_pix`` the median pixel noise of the exposure), each
  slope in ``start +/- W / (max(nx, ny) / 2)`` (counts per pixel per pixel: the plane moves by at
  most W from the centre to the stamp's edge).

Every default can be replaced per parameter (``"s1.rh"``) or for every source (``"rh"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import PhoRangeError, PhoValueError

__all__ = ["Uniform", "LogUniform", "TruncatedNormal", "Priors", "default_priors", "parameter_kind"]

#: Lower bound of the axis ratio q = b/a in the default prior.
Q_MIN = 0.1
#: Default half-width of the position box, in pixels of the finest exposure (if no arcsec given).
POSITION_BOX_PIX = 3.0
#: Default prior of each conformal shear component: sigma of the normal, and the truncation
#: |eta_i| <= ETA_MAX = -ln(Q_MIN) (the axes of the eta plane end at q = Q_MIN).
ETA_SIGMA = 1.0
ETA_MAX = -math.log(Q_MIN)
#: Default sky prior half-width, in units of the exposure's median pixel noise (plus twice the
#: median of data minus background).
SKY_WIDTH_SIGMA = 10.0


@dataclass(frozen=True)
class Uniform:
    """Uniform density on ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : float
        Bounds, in the parameter's own unit; ``lo < hi``.
    periodic : bool
        The parameter wraps around (a position angle); the sampler is told so.
    """

    lo: float
    hi: float
    periodic: bool = False

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise PhoValueError(f"Uniform prior needs finite lo < hi, got lo={self.lo!r}, hi={self.hi!r}")

    def transform(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube coordinates ``u`` in [0, 1] to the parameter."""
        return self.lo + u * (self.hi - self.lo)

    def ln_prob(self, x: float) -> float:
        """Log density at ``x`` (-inf outside the bounds; a periodic parameter is never outside)."""
        return -math.log(self.hi - self.lo) if (self.periodic or self.lo <= x <= self.hi) else -math.inf

    def grad_ln_prob(self, x: float) -> float:
        """d ln p / d x inside the bounds."""
        return 0.0

    def dtheta_du(self, x: float) -> float:
        """d theta / d u of the transform at the parameter value ``x``."""
        return self.hi - self.lo


@dataclass(frozen=True)
class LogUniform:
    """Density proportional to 1/x on ``[lo, hi]``, ``0 < lo < hi`` (scale parameters)."""

    lo: float
    hi: float
    periodic: bool = False

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and 0 < self.lo < self.hi):
            raise PhoValueError(f"LogUniform prior needs finite 0 < lo < hi, got lo={self.lo!r}, hi={self.hi!r}")

    def transform(self, u: np.ndarray) -> np.ndarray:
        return self.lo * np.exp(u * math.log(self.hi / self.lo))

    def ln_prob(self, x: float) -> float:
        if not self.lo <= x <= self.hi:
            return -math.inf
        return -math.log(x) - math.log(math.log(self.hi / self.lo))

    def grad_ln_prob(self, x: float) -> float:
        return -1.0 / x

    def dtheta_du(self, x: float) -> float:
        return x * math.log(self.hi / self.lo)


@dataclass(frozen=True)
class TruncatedNormal:
    """Normal density of mean ``mu`` and width ``sigma`` truncated to ``[lo, hi]``.

    Parameters
    ----------
    mu, sigma : float
        Mean and standard deviation of the untruncated normal, in the parameter's unit; sigma > 0.
    lo, hi : float
        Bounds, finite, ``lo < hi``.

    Examples
    --------
    >>> from pho.priors import TruncatedNormal
    >>> d = TruncatedNormal(0.0, 1.0, -2.0, 2.0)
    >>> float(d.transform(0.5))
    0.0
    """

    mu: float
    sigma: float
    lo: float
    hi: float
    periodic: bool = False

    def __post_init__(self):
        ok = all(np.isfinite(v) for v in (self.mu, self.sigma, self.lo, self.hi))
        if not (ok and self.sigma > 0 and self.lo < self.hi):
            raise PhoValueError(
                f"TruncatedNormal prior needs finite mu, sigma > 0 and lo < hi, got mu={self.mu!r}, sigma={self.sigma!r}, "
                f"lo={self.lo!r}, hi={self.hi!r}"
            )
        from scipy.special import ndtr

        a, b = ndtr((self.lo - self.mu) / self.sigma), ndtr((self.hi - self.mu) / self.sigma)
        if not b - a > 1e-12:
            raise PhoValueError(
                f"TruncatedNormal prior: [{self.lo}, {self.hi}] holds almost none of N({self.mu}, {self.sigma}); "
                "move the bounds towards mu or widen sigma"
            )
        object.__setattr__(self, "_a", float(a))
        object.__setattr__(self, "_mass", float(b - a))
        object.__setattr__(self, "_log_norm", math.log(self.sigma * math.sqrt(2.0 * math.pi) * float(b - a)))

    def transform(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube coordinates ``u`` in [0, 1] to the parameter (inverse CDF)."""
        from scipy.special import ndtri

        x = self.mu + self.sigma * ndtri(self._a + np.asarray(u, dtype=float) * self._mass)
        return np.clip(x, self.lo, self.hi)  # round-off of ndtri at u = 0 or 1 only

    def ln_prob(self, x: float) -> float:
        """Log density at ``x``; -inf outside the bounds."""
        if not self.lo <= x <= self.hi:
            return -math.inf
        z = (x - self.mu) / self.sigma
        return -0.5 * z * z - self._log_norm

    def grad_ln_prob(self, x: float) -> float:
        """d ln p / d x inside the bounds."""
        return -(x - self.mu) / self.sigma**2

    def dtheta_du(self, x: float) -> float:
        """d theta / d u of the transform at ``x`` (one over the density)."""
        return math.exp(-self.ln_prob(x))


def parameter_kind(name: str) -> str:
    """The kind of a parameter from its name: ``"s3.flux_F200W"`` -> ``"flux"``, ``"s0.rh"`` -> ``"rh"``,
    ``"sky_1.level"`` -> ``"sky_level"``."""
    head, _, kind = name.partition(".")
    if head.startswith("sky_") and kind:
        return "sky_" + kind
    kind = name.split(".", 1)[-1]
    return "flux" if kind.startswith("flux") else kind


def _source_index(name: str) -> int:
    head = name.split(".", 1)[0]
    if not (head.startswith("s") and head[1:].isdigit()):
        raise PhoValueError(f"parameter name {name!r} does not start with a source label like 's0.'")
    return int(head[1:])


class _VectorForm:
    """The same numbers as the per-parameter methods of :class:`Uniform`, :class:`LogUniform` and
    :class:`TruncatedNormal`, for a whole vector at once: the samplers call them once per likelihood
    call, where a Python loop over the parameters cost ~2-4% of a 20-parameter NUTS step."""

    def __init__(self, distributions):
        self.lo = np.array([d.lo for d in distributions], dtype=float)
        self.hi = np.array([d.hi for d in distributions], dtype=float)
        self.periodic = np.array([type(d) is Uniform and bool(d.periodic) for d in distributions])  # as Uniform.ln_prob
        kind = np.array([type(d).__name__ for d in distributions])
        self.uniform = np.flatnonzero(kind == "Uniform")
        self.log = np.flatnonzero(kind == "LogUniform")
        self.normal = np.flatnonzero(kind == "TruncatedNormal")
        self.log_ratio = np.log(self.hi[self.log] / self.lo[self.log])
        normal = [distributions[i] for i in self.normal]
        self.mu = np.array([d.mu for d in normal], dtype=float)
        self.sigma = np.array([d.sigma for d in normal], dtype=float)
        self.normal_a = np.array([d._a for d in normal], dtype=float)
        self.normal_mass = np.array([d._mass for d in normal], dtype=float)
        self.constant = float(-np.sum(np.log(self.hi[self.uniform] - self.lo[self.uniform]))
                              - np.sum(np.log(self.log_ratio)) - sum(d._log_norm for d in normal))

    @classmethod
    def of(cls, distributions):
        """The vector form, or None when a distribution is of another type (then the loops serve)."""
        if all(type(d) in (Uniform, LogUniform, TruncatedNormal) for d in distributions):
            return cls(distributions)
        return None

    def transform(self, u: np.ndarray) -> np.ndarray:
        theta = np.empty_like(u)
        i = self.uniform
        theta[i] = self.lo[i] + u[i] * (self.hi[i] - self.lo[i])
        theta[self.log] = self.lo[self.log] * np.exp(u[self.log] * self.log_ratio)
        if len(self.normal):
            from scipy.special import ndtri

            i = self.normal
            x = self.mu + self.sigma * ndtri(self.normal_a + u[i] * self.normal_mass)
            theta[i] = np.clip(x, self.lo[i], self.hi[i])
        return theta

    def ln_prob(self, theta: np.ndarray) -> float:
        inside = ((theta >= self.lo) & (theta <= self.hi)) | self.periodic  # False for NaN
        if not inside.all():
            return -math.inf
        z = (theta[self.normal] - self.mu) / self.sigma
        return self.constant - float(np.sum(np.log(theta[self.log]))) - 0.5 * float(np.dot(z, z))

    def grad_ln_prob(self, theta: np.ndarray) -> np.ndarray:
        grad = np.zeros_like(theta)
        grad[self.log] = -1.0 / theta[self.log]
        grad[self.normal] = -(theta[self.normal] - self.mu) / self.sigma**2
        return grad


class Priors:
    """One prior distribution per parameter, in the likelihood's parameter order.

    Parameters
    ----------
    names : sequence of str, length P
        Parameter names (``likelihood.parameter_names``).
    distributions : mapping of str to Uniform or LogUniform
        A distribution for every name.

    Examples
    --------
    >>> from pho.priors import Priors, Uniform
    >>> p = Priors(["s0.q"], {"s0.q": Uniform(0.1, 1.0)})
    >>> p.prior_transform([0.5])
    array([0.55])
    """

    def __init__(self, names: Sequence[str], distributions: Mapping[str, object]):
        self.names = list(names)
        missing = [n for n in self.names if n not in distributions]
        if missing:
            raise PhoValueError(f"no prior given for parameters {missing}; give one for every parameter")
        self.distributions = [distributions[n] for n in self.names]
        self._vector = _VectorForm.of(self.distributions)

    @property
    def n_params(self) -> int:
        """Number of parameters P."""
        return len(self.names)

    @property
    def lower(self) -> np.ndarray:
        """Lower bounds, ndarray of shape (P,)."""
        return np.array([d.lo for d in self.distributions])

    @property
    def upper(self) -> np.ndarray:
        """Upper bounds, ndarray of shape (P,)."""
        return np.array([d.hi for d in self.distributions])

    @property
    def periodic(self) -> list[int]:
        """Indices of periodic parameters (position angles)."""
        return [i for i, d in enumerate(self.distributions) if d.periodic]

    def __getitem__(self, name: str):
        return self.distributions[self.names.index(name)]

    def replace(self, overrides: Mapping[str, object]) -> "Priors":
        """A copy with some distributions replaced.

        Parameters
        ----------
        overrides : mapping
            Keys are full names (``"s1.rh"``) or kinds applying to every source (``"rh"``,
            ``"flux"``); values are distributions or ``(lo, hi)`` tuples (uniform).
        """
        dists = dict(zip(self.names, self.distributions))
        for key, value in overrides.items():
            if isinstance(value, tuple):
                periodic = any(parameter_kind(n) == "pa" for n in self._matching(key))
                value = Uniform(float(value[0]), float(value[1]), periodic=periodic)
            for name in self._matching(key):
                dists[name] = value
        return Priors(self.names, dists)

    def _matching(self, key: str) -> list[str]:
        if key in self.names:
            return [key]
        hits = [n for n in self.names if parameter_kind(n) == key or n.split(".", 1)[-1] == key]
        if not hits:
            raise PhoValueError(
                f"prior override {key!r} matches no parameter; use a full name like {self.names[0]!r} "
                f"or a kind like 'rh', 'flux', 'flux_<band>'"
            )
        return hits

    def prior_transform(self, u: np.ndarray) -> np.ndarray:
        """Map a point of the unit cube, shape (P,), to parameters, shape (P,)."""
        u = np.asarray(u, dtype=float)
        if self._vector is not None:
            return self._vector.transform(u)
        return np.array([d.transform(x) for d, x in zip(self.distributions, u)])

    def ln_prob(self, theta: np.ndarray) -> float:
        """Log prior density at ``theta`` (shape (P,)); -inf outside the bounds."""
        if self._vector is not None:
            return self._vector.ln_prob(np.asarray(theta, dtype=float))
        return float(sum(d.ln_prob(x) for d, x in zip(self.distributions, theta)))

    def grad_ln_prob(self, theta: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`ln_prob` inside the bounds, shape (P,)."""
        if self._vector is not None:
            return self._vector.grad_ln_prob(np.asarray(theta, dtype=float))
        return np.array([d.grad_ln_prob(x) for d, x in zip(self.distributions, theta)])

    def dtheta_du(self, theta: np.ndarray) -> np.ndarray:
        """Diagonal Jacobian of the prior transform at ``theta``, shape (P,)."""
        return np.array([d.dtheta_du(x) for d, x in zip(self.distributions, theta)])

    def check_inside(self, theta: np.ndarray, what: str = "initial guess") -> None:
        """Raise :class:`PhoRangeError` naming the first parameter of ``theta`` outside its bounds."""
        for name, d, x in zip(self.names, self.distributions, theta):
            if not (d.periodic or d.lo <= x <= d.hi):
                raise PhoRangeError(
                    f"{what}: {name}={x:.6g} is outside its prior [{d.lo:.6g}, {d.hi:.6g}]; "
                    f"change the value or widen the prior (overrides={{{name!r}: (lo, hi)}})",
                    x,
                    d.lo,
                    d.hi,
                )

    def __repr__(self) -> str:
        rows = [f"  {n}: {d}" for n, d in zip(self.names, self.distributions)]
        return "Priors(\n" + "\n".join(rows) + "\n)"


def _pixel_scale_arcsec(exposure) -> float:
    if hasattr(exposure, "pixel_scale_arcsec"):
        return float(exposure.pixel_scale_arcsec)
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.sqrt(np.prod(proj_plane_pixel_scales(exposure.wcs.celestial))) * 3600.0)


def aperture_flux(exposure, ra_deg: float, dec_deg: float, radius_arcsec: float) -> tuple[float, float]:
    """Background-subtracted sum and its noise in a circular aperture, in flux units.

    Parameters
    ----------
    exposure : pho.Exposure
    ra_deg, dec_deg : float
        Aperture centre.
    radius_arcsec : float
        Aperture radius.

    Returns
    -------
    flux, sigma : float
        Sum of ``(pixels - background) / counts_per_flux`` over unmasked pixels within the radius,
        and its standard deviation from the inverse variance. ``(0, inf)`` if the aperture misses
        the exposure.
    """
    x0, y0 = exposure.sky_to_pixel(ra_deg, dec_deg)
    x0, y0 = float(np.squeeze(x0)), float(np.squeeze(y0))
    radius_pix = radius_arcsec / _pixel_scale_arcsec(exposure)
    ny, nx = exposure.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    inside = (xx - x0) ** 2 + (yy - y0) ** 2 <= radius_pix**2
    ivar = np.asarray(exposure.ivar, dtype=float)
    if getattr(exposure, "mask", None) is not None:
        inside &= ~np.asarray(exposure.mask, dtype=bool)
    inside &= ivar > 0
    if not inside.any():
        return 0.0, math.inf
    cpf = float(getattr(exposure, "counts_per_flux", 1.0))
    background = getattr(exposure, "background", 0.0)
    background = np.broadcast_to(np.asarray(background, dtype=float), (ny, nx))
    counts = np.asarray(exposure.pixels, dtype=float)[inside] - background[inside]
    return float(counts.sum() / cpf), float(np.sqrt(np.sum(1.0 / ivar[inside])) / cpf)


def default_priors(
    likelihood,
    *,
    position_box_arcsec: float | None = None,
    aperture_arcsec: float | None = None,
    overrides: Mapping[str, object] | None = None,
    theta: np.ndarray | None = None,
) -> Priors:
    """Uniform priors with bounds derived from the data and the initial scene.

    Parameters
    ----------
    likelihood : pho.Likelihood
        Supplies ``parameter_names``, the scene (initial guess) and the exposures.
    position_box_arcsec : float, optional
        Half-width of the box around each initial position. Default: 3 pixels of the coarsest
        exposure.
    aperture_arcsec : float, optional
        Radius of the aperture whose sum sets the flux bounds. Default: 4 times the initial
        ``rh`` (galaxies) plus 3 pixels, at least 5 pixels.
    overrides : mapping, optional
        Replacements, see :meth:`Priors.replace`.
    theta : ndarray of shape (P,), optional
        Initial parameters; default ``likelihood.scene.get_vector()``.

    Returns
    -------
    Priors

    Raises
    ------
    PhoRangeError
        The initial guess lies outside an overridden bound.
    """
    names = list(likelihood.parameter_names)
    if theta is None:
        theta = likelihood.initial if hasattr(likelihood, "initial") else likelihood.scene.get_vector()
    theta = np.asarray(theta, dtype=float)
    values = dict(zip(names, theta))
    if hasattr(likelihood, "full"):  # a view with fixed parameters: their values are needed too
        values = dict(zip(likelihood.likelihood.parameter_names, likelihood.full(theta)))
    exposures = list(likelihood.exposures)
    scales = [_pixel_scale_arcsec(e) for e in exposures]
    pix_arcsec = max(scales)
    box_arcsec = POSITION_BOX_PIX * pix_arcsec if position_box_arcsec is None else float(position_box_arcsec)
    if not box_arcsec > 0:
        raise PhoValueError(f"position_box_arcsec must be positive, got {position_box_arcsec}")

    dists: dict[str, object] = {}
    for name in names:
        kind = parameter_kind(name)
        src = name.split(".", 1)[0]
        x = values[name]
        if kind == "ra":
            cosd = math.cos(math.radians(values[f"{src}.dec"]))
            half = box_arcsec / 3600.0 / max(cosd, 1e-6)
            dists[name] = Uniform(x - half, x + half)
        elif kind == "dec":
            half = box_arcsec / 3600.0
            dists[name] = Uniform(x - half, x + half)
        elif kind == "q":
            dists[name] = Uniform(Q_MIN, 1.0)
        elif kind == "pa":
            dists[name] = Uniform(x - math.pi / 2, x + math.pi / 2, periodic=True)
        elif kind in ("g1", "g2"):
            gmax = (1 - Q_MIN) / (1 + Q_MIN)
            dists[name] = Uniform(-gmax, gmax)
        elif kind in ("eta_plus", "eta_cross"):
            dists[name] = TruncatedNormal(0.0, ETA_SIGMA, -ETA_MAX, ETA_MAX)
        elif kind in ("sky_level", "sky_slope_x", "sky_slope_y"):
            e = exposures[int(src[len("sky_"):])]
            width = _sky_width(e)
            if kind != "sky_level":
                width /= max(e.shape) / 2.0
            dists[name] = Uniform(x - width, x + width)
        elif kind in ("n", "rh"):
            profile = _profile_of(likelihood, int(src[1:]))  # per source: profiles may differ
            lo, hi = profile.n_range if kind == "n" else profile.rh_range_arcsec
            dists[name] = Uniform(float(lo), float(hi))
        elif kind == "flux":
            band = name.split(".", 1)[1][len("flux_"):]
            rh = values.get(f"{src}.rh", 0.0)
            radius = aperture_arcsec if aperture_arcsec is not None else max(4 * rh + 3 * pix_arcsec, 5 * pix_arcsec)
            sums, variances = [], []
            for e in exposures:
                if str(e.band) != band:
                    continue
                s, sig = aperture_flux(e, values[f"{src}.ra"], values[f"{src}.dec"], radius)
                if np.isfinite(sig):
                    sums.append(s)
                    variances.append(sig**2)
            if sums:
                w = 1.0 / np.array(variances)
                s_ap = float(np.sum(w * np.array(sums)) / w.sum())
                sigma = float(1.0 / np.sqrt(w.sum()))
            else:
                s_ap, sigma = abs(x), max(abs(x), 1.0)
            lo = -5.0 * sigma
            hi = 3.0 * max(s_ap, 0.0) + 10.0 * sigma
            lo, hi = min(lo, x - 0.1 * abs(x)), max(hi, 1.5 * x)
            dists[name] = Uniform(lo, hi)
        else:
            raise PhoValueError(f"no default prior for parameter {name!r} (kind {kind!r}); pass one in overrides")
    priors = Priors(names, dists)
    if overrides:
        priors = priors.replace(overrides)
    priors.check_inside(theta)
    return priors


def _sky_width(exposure) -> float:
    """Half-width of the default sky-level prior of an exposure, counts (module docstring)."""
    counted = np.asarray(exposure.counted, dtype=bool)
    if not counted.any():
        return 1.0
    ivar = np.asarray(exposure.ivar, dtype=float)[counted]
    sigma = float(np.median(1.0 / np.sqrt(ivar)))
    background = np.broadcast_to(np.asarray(exposure.background, dtype=float), exposure.shape)[counted]
    offset = float(np.median(np.asarray(exposure.pixels, dtype=float)[counted] - background))
    return SKY_WIDTH_SIGMA * sigma + 2.0 * abs(offset)


def _profile_of(likelihood, index: int):
    scene = likelihood.scene if getattr(likelihood, "scene", None) is not None else likelihood.likelihood.scene
    source = scene.sources[index]
    profile = getattr(source, "profile", None)
    if profile is None:
        from .sersic import auto_profile

        profile = auto_profile()
    return profile
