"""Parameter transforms: reduced and conformal shear for shapes, and the unconstrained sampling map.

Reduced shear (docs/ARCHITECTURE.md, docs/model.md)::

    |g| = (1 - q) / (1 + q),   g1 = |g| cos(2 pa),   g2 = |g| sin(2 pa)
    q = (1 - |g|) / (1 + |g|),  pa = atan2(g2, g1) / 2        (pa in (-pi/2, pi/2])

Conformal shear (docs/model.md, "Conformal shear"), with pho's q = b/a::

    |eta| = -ln q,   eta_plus = |eta| cos(2 pa),   eta_cross = |eta| sin(2 pa)
    q = exp(-|eta|),  pa = atan2(eta_cross, eta_plus) / 2     (pa in (-pi/2, pi/2])

Unconstrained map (per parameter, elementwise), for samplers and optimizers that want to move
freely on the real line::

    both bounds finite:  theta = lo + (hi - lo) * sigmoid(u)        (logistic)
    only lo finite:      theta = lo + exp(u)
    only hi finite:      theta = hi - exp(u)
    no bound:            theta = u

with the log-Jacobian ``sum ln |d theta / d u|`` that a density in ``theta`` needs when it is
explored in ``u``.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PhoRangeError, PhoValueError

__all__ = [
    "shear_from_q_pa",
    "q_pa_from_shear",
    "q_pa_jacobian_from_shear",
    "eta_from_q_pa",
    "q_pa_from_eta",
    "q_pa_jacobian_from_eta",
    "eta_jacobian_from_q_pa",
    "eta_pairs",
    "q_pa_from_eta_with_errors",
    "LogisticTransform",
    "TransformedLikelihood",
]


def shear_from_q_pa(q, pa_rad):
    """Reduced shear (g1, g2) of an ellipse of axis ratio ``q`` and position angle ``pa_rad``.

    Parameters
    ----------
    q : float or ndarray
        Axis ratio b/a in (0, 1].
    pa_rad : float or ndarray
        Position angle of the major axis, radians from north through east.

    Returns
    -------
    g1, g2 : float or ndarray
        ``|g| cos(2 pa)``, ``|g| sin(2 pa)`` with ``|g| = (1 - q) / (1 + q)``.

    Examples
    --------
    >>> from pho.transforms import shear_from_q_pa
    >>> [round(float(v), 12) for v in shear_from_q_pa(0.5, 0.0)]
    [0.333333333333, 0.0]
    """
    q = np.asarray(q, dtype=float)
    pa = np.asarray(pa_rad, dtype=float)
    g = (1.0 - q) / (1.0 + q)
    return g * np.cos(2.0 * pa), g * np.sin(2.0 * pa)


def q_pa_from_shear(g1, g2):
    """Axis ratio and position angle from reduced shear (inverse of :func:`shear_from_q_pa`).

    Parameters
    ----------
    g1, g2 : float or ndarray
        Reduced shear, ``|g| < 1``.

    Returns
    -------
    q : float or ndarray
        Axis ratio in (0, 1].
    pa_rad : float or ndarray
        Position angle in (-pi/2, pi/2], radians (0 where ``|g| = 0``).

    Raises
    ------
    PhoRangeError
        ``|g| >= 1`` (a line, q <= 0).
    """
    g1 = np.asarray(g1, dtype=float)
    g2 = np.asarray(g2, dtype=float)
    g = np.hypot(g1, g2)
    if np.any(g >= 1.0):
        bad = float(np.max(g))
        raise PhoRangeError(f"reduced shear |g|={bad:.6g} must be < 1 (q = (1-|g|)/(1+|g|) > 0)", bad, 0.0, 1.0)
    return (1.0 - g) / (1.0 + g), 0.5 * np.arctan2(g2, g1)


def q_pa_jacobian_from_shear(g1, g2):
    """Jacobian d(q, pa)/d(g1, g2) of :func:`q_pa_from_shear`.

    Parameters
    ----------
    g1, g2 : float or ndarray of shape (S,)
        Reduced shear with ``0 < |g| < 1`` (pa is undefined at ``|g| = 0``).

    Returns
    -------
    jac : ndarray of shape (..., 2, 2)
        ``[[dq/dg1, dq/dg2], [dpa/dg1, dpa/dg2]]``.
    """
    g1 = np.asarray(g1, dtype=float)
    g2 = np.asarray(g2, dtype=float)
    g = np.hypot(g1, g2)
    dq_dg = -2.0 / (1.0 + g) ** 2
    jac = np.empty(g.shape + (2, 2))
    jac[..., 0, 0] = dq_dg * g1 / g
    jac[..., 0, 1] = dq_dg * g2 / g
    jac[..., 1, 0] = -0.5 * g2 / g**2
    jac[..., 1, 1] = 0.5 * g1 / g**2
    return jac


def eta_from_q_pa(q, pa_rad):
    """Conformal shear (eta_plus, eta_cross) of an ellipse of axis ratio ``q`` and angle ``pa_rad``.

    Parameters
    ----------
    q : float or ndarray
        Axis ratio b/a in (0, 1].
    pa_rad : float or ndarray
        Position angle of the major axis, radians from north through east.

    Returns
    -------
    eta_plus, eta_cross : float or ndarray
        ``|eta| cos(2 pa)``, ``|eta| sin(2 pa)`` with ``|eta| = -ln q = ln(a/b)``.

    Raises
    ------
    PhoRangeError
        ``q`` outside (0, 1].

    Examples
    --------
    >>> import math
    >>> from pho.transforms import eta_from_q_pa
    >>> [round(float(v), 12) for v in eta_from_q_pa(math.exp(-0.5), 0.0)]
    [0.5, 0.0]
    """
    q = np.asarray(q, dtype=float)
    pa = np.asarray(pa_rad, dtype=float)
    if np.any(~((q > 0.0) & (q <= 1.0))):
        bad = float(q.ravel()[np.flatnonzero(~((q > 0.0) & (q <= 1.0)))[0]])
        raise PhoRangeError(f"axis ratio q={bad!r} is outside (0, 1]; q = b/a of minor to major axis", bad, 0.0, 1.0)
    e = -np.log(q)
    return e * np.cos(2.0 * pa), e * np.sin(2.0 * pa)


def q_pa_from_eta(eta_plus, eta_cross):
    """Axis ratio and position angle from conformal shear (inverse of :func:`eta_from_q_pa`).

    Parameters
    ----------
    eta_plus, eta_cross : float or ndarray
        Conformal shear; any finite values (the whole plane maps onto q in (0, 1]).

    Returns
    -------
    q : float or ndarray
        ``exp(-|eta|)``, in (0, 1] (it underflows to 0 beyond ``|eta|`` of about 745).
    pa_rad : float or ndarray
        Position angle in (-pi/2, pi/2], radians (0 where ``|eta| = 0``).
    """
    ep = np.asarray(eta_plus, dtype=float)
    ec = np.asarray(eta_cross, dtype=float)
    return np.exp(-np.hypot(ep, ec)), 0.5 * np.arctan2(ec, ep)


def q_pa_jacobian_from_eta(eta_plus, eta_cross):
    """Jacobian d(q, pa)/d(eta_plus, eta_cross) of :func:`q_pa_from_eta`.

    Parameters
    ----------
    eta_plus, eta_cross : float or ndarray of shape (S,)
        Conformal shear with ``|eta| > 0`` (pa is undefined at ``|eta| = 0``).

    Returns
    -------
    jac : ndarray of shape (..., 2, 2)
        ``[[dq/deta_plus, dq/deta_cross], [dpa/deta_plus, dpa/deta_cross]]``:
        ``dq/deta_i = -q eta_i/|eta|``, ``dpa/deta_plus = -eta_cross/(2 |eta|^2)``,
        ``dpa/deta_cross = eta_plus/(2 |eta|^2)``.
    """
    ep = np.asarray(eta_plus, dtype=float)
    ec = np.asarray(eta_cross, dtype=float)
    e = np.hypot(ep, ec)
    q = np.exp(-e)
    jac = np.empty(e.shape + (2, 2))
    jac[..., 0, 0] = -q * ep / e
    jac[..., 0, 1] = -q * ec / e
    jac[..., 1, 0] = -0.5 * ec / e**2
    jac[..., 1, 1] = 0.5 * ep / e**2
    return jac


def eta_jacobian_from_q_pa(q, pa_rad):
    """Jacobian d(eta_plus, eta_cross)/d(q, pa) of :func:`eta_from_q_pa` (the inverse of
    :func:`q_pa_jacobian_from_eta` where ``q < 1``).

    Parameters
    ----------
    q : float or ndarray of shape (S,)
        Axis ratio in (0, 1].
    pa_rad : float or ndarray of shape (S,)
        Position angle, radians.

    Returns
    -------
    jac : ndarray of shape (..., 2, 2)
        ``[[deta_plus/dq, deta_plus/dpa], [deta_cross/dq, deta_cross/dpa]]`` =
        ``[[-cos(2 pa)/q, -2 |eta| sin(2 pa)], [-sin(2 pa)/q, 2 |eta| cos(2 pa)]]``.
    """
    q = np.asarray(q, dtype=float)
    pa = np.asarray(pa_rad, dtype=float)
    e = -np.log(q)
    c2, s2 = np.cos(2.0 * pa), np.sin(2.0 * pa)
    jac = np.empty(np.broadcast(q, pa).shape + (2, 2))
    jac[..., 0, 0] = -c2 / q
    jac[..., 0, 1] = -2.0 * e * s2
    jac[..., 1, 0] = -s2 / q
    jac[..., 1, 1] = 2.0 * e * c2
    return jac


def eta_pairs(names) -> list[tuple[int, int, str]]:
    """``(index of eta_plus, index of eta_cross, source prefix)`` of every source with conformal
    shear among parameter ``names`` (``"s3.eta_plus"``, ``"s3.eta_cross"`` -> ``(i, j, "s3")``)."""
    names = list(names)
    out = []
    for i, name in enumerate(names):
        if name.endswith(".eta_plus"):
            prefix = name[: -len(".eta_plus")]
            if prefix + ".eta_cross" in names:
                out.append((i, names.index(prefix + ".eta_cross"), prefix))
    return out


def q_pa_from_eta_with_errors(eta_plus, eta_cross, cov=None):
    """q and pa of a conformal shear, with 1-sigma errors propagated from its 2x2 covariance.

    Parameters
    ----------
    eta_plus, eta_cross : float
    cov : ndarray of shape (2, 2), optional
        Covariance of (eta_plus, eta_cross).

    Returns
    -------
    q, q_err, pa_rad, pa_err : float
        Errors by linear propagation through :func:`q_pa_jacobian_from_eta`; NaN without ``cov``,
        and the pa error is NaN at ``|eta| = 0`` (pa undefined; q's error is then 0 to first order).
    """
    q, pa = (float(v) for v in q_pa_from_eta(eta_plus, eta_cross))
    if cov is None:
        return q, float("nan"), pa, float("nan")
    cov = np.asarray(cov, dtype=float)
    if math.hypot(eta_plus, eta_cross) == 0.0:
        return q, 0.0, pa, float("nan")
    jac = q_pa_jacobian_from_eta(eta_plus, eta_cross)
    c = jac @ cov @ jac.T
    return q, math.sqrt(max(c[0, 0], 0.0)), pa, math.sqrt(max(c[1, 1], 0.0))


def _softplus(x):
    """ln(1 + exp(x)) without overflow."""
    return np.logaddexp(0.0, x)


class LogisticTransform:
    """Elementwise map between bounded parameters ``theta`` and unconstrained ``u``.

    Parameters
    ----------
    lower, upper : array_like of shape (P,)
        Bounds per parameter; ``-inf``/``+inf`` for an open side (see the module docstring for
        the map used in each case). A bound itself maps to ``u = -inf`` or ``+inf``, so a
        parameter may approach but not sit on it (q = 1 exactly is not reachable).

    Raises
    ------
    PhoValueError
        Bounds of different lengths, NaN bounds, or ``lower >= upper``.

    Examples
    --------
    >>> import numpy as np
    >>> from pho.transforms import LogisticTransform
    >>> t = LogisticTransform([0.0, -np.inf], [1.0, np.inf])
    >>> u = t.to_unconstrained([0.25, 3.0])
    >>> [round(float(v), 12) for v in t.from_unconstrained(u)]
    [0.25, 3.0]
    """

    def __init__(self, lower, upper):
        lo = np.atleast_1d(np.asarray(lower, dtype=float)).copy()
        hi = np.atleast_1d(np.asarray(upper, dtype=float)).copy()
        if lo.shape != hi.shape or lo.ndim != 1:
            raise PhoValueError(f"lower and upper must be 1-d of one length, got shapes {lo.shape} and {hi.shape}")
        if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
            raise PhoValueError("bounds must not be NaN; use -inf/inf for an open side")
        if np.any(lo >= hi):
            bad = np.flatnonzero(lo >= hi)
            raise PhoValueError(f"need lower < upper; parameters {bad.tolist()} have lower {lo[bad]} >= upper {hi[bad]}")
        self.lower, self.upper = lo, hi
        self.lower.flags.writeable = False
        self.upper.flags.writeable = False
        flo, fhi = np.isfinite(lo), np.isfinite(hi)
        self._both = flo & fhi
        self._lo_only = flo & ~fhi
        self._hi_only = ~flo & fhi
        self._span = np.where(self._both, hi - lo, 1.0)
        self._log_span_total = float(np.sum(np.log(self._span[self._both])))

    @classmethod
    def from_scene(cls, scene) -> "LogisticTransform":
        """The transform for ``scene``'s hard parameter bounds (``scene.parameter_bounds()``)."""
        lo, hi = scene.parameter_bounds()
        return cls(lo, hi)

    @property
    def n_params(self) -> int:
        """Number of parameters P."""
        return len(self.lower)

    def _check(self, x, name):
        x = np.asarray(x, dtype=float)
        if x.shape != self.lower.shape:
            raise PhoValueError(f"{name} must have shape {self.lower.shape}, got {x.shape}")
        return x

    def to_unconstrained(self, theta) -> np.ndarray:
        """``u`` of ``theta``; ndarray of shape (P,).

        Raises
        ------
        PhoRangeError
            A parameter on or outside its bounds (it has no finite ``u``).
        """
        theta = self._check(theta, "theta")
        inside = (theta > self.lower) & (theta < self.upper)
        if not np.all(inside):
            i = int(np.flatnonzero(~inside)[0])
            raise PhoRangeError(
                f"parameter {i} = {float(theta[i])!r} is not strictly inside its bounds ({self.lower[i]}, {self.upper[i]}); "
                "move the starting point inside or widen the bounds",
                float(theta[i]), float(self.lower[i]), float(self.upper[i]),
            )
        u = theta.copy()
        b = self._both
        p = (theta[b] - self.lower[b]) / self._span[b]
        u[b] = np.log(p) - np.log1p(-p)
        u[self._lo_only] = np.log(theta[self._lo_only] - self.lower[self._lo_only])
        u[self._hi_only] = np.log(self.upper[self._hi_only] - theta[self._hi_only])
        return u

    def from_unconstrained(self, u) -> np.ndarray:
        """``theta`` of ``u``; ndarray of shape (P,)."""
        theta, _ = self.from_unconstrained_and_derivative(u)
        return theta

    def from_unconstrained_and_derivative(self, u):
        """``theta`` and the diagonal Jacobian ``d theta / d u``, both ndarray of shape (P,)."""
        u = self._check(u, "u")
        theta = u.copy()
        dtheta = np.ones_like(u)
        b = self._both
        s = 0.5 * (1.0 + np.tanh(0.5 * u[b]))  # sigmoid, stable for large |u|
        theta[b] = self.lower[b] + self._span[b] * s
        dtheta[b] = self._span[b] * s * (1.0 - s)
        e = np.exp(u[self._lo_only])
        theta[self._lo_only] = self.lower[self._lo_only] + e
        dtheta[self._lo_only] = e
        e = np.exp(u[self._hi_only])
        theta[self._hi_only] = self.upper[self._hi_only] - e
        dtheta[self._hi_only] = -e
        return theta, dtheta

    def log_jacobian_and_grad(self, u):
        """``sum ln |d theta/d u|`` and its gradient with respect to ``u``.

        Returns
        -------
        log_jac : float
        grad : ndarray of shape (P,)
        """
        u = self._check(u, "u")
        b = self._both
        ub = u[b]
        # ln sigmoid(u) + ln(1 - sigmoid(u)) = -softplus(-u) - softplus(u)
        log_jac = self._log_span_total - float(np.sum(_softplus(-ub) + _softplus(ub)))
        grad = np.zeros_like(u)
        grad[b] = -np.tanh(0.5 * ub)  # 1 - 2 sigmoid(u)
        one_sided = self._lo_only | self._hi_only
        log_jac += float(np.sum(u[one_sided]))
        grad[one_sided] = 1.0
        return log_jac, grad


class TransformedLikelihood:
    """A likelihood explored in unconstrained coordinates ``u``, including the log-Jacobian.

    ``lnlike(u) = likelihood.lnlike(theta(u)) + sum ln |d theta / d u|``: the log of the density
    of ``u`` when ``theta`` has density ``exp(lnlike)`` (a flat prior in ``theta`` inside its
    bounds).

    Parameters
    ----------
    likelihood : pho.Likelihood
        Anything with ``lnlike_and_grad(theta)`` and ``parameter_names``.
    transform : LogisticTransform, optional
        Default ``LogisticTransform.from_scene(likelihood.scene)``.

    Examples
    --------
    ``tl = TransformedLikelihood(like); u0 = tl.to_unconstrained(like.scene.get_vector());
    value, grad_u = tl.lnlike_and_grad(u0)``.
    """

    def __init__(self, likelihood, transform: LogisticTransform | None = None):
        self.likelihood = likelihood
        self.transform = transform if transform is not None else LogisticTransform.from_scene(likelihood.scene)
        n = len(likelihood.parameter_names)
        if self.transform.n_params != n:
            raise PhoValueError(f"transform has {self.transform.n_params} parameters, the likelihood {n}")

    def with_workers(self, workers: int | None) -> "TransformedLikelihood":
        """The same transform on a copy of the likelihood whose backend uses ``workers`` threads."""
        inner = getattr(self.likelihood, "with_workers", None)
        return TransformedLikelihood(inner(workers) if inner is not None else self.likelihood, self.transform)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the underlying parameters (``u[i]`` maps to ``parameter_names[i]``)."""
        return tuple(self.likelihood.parameter_names)

    def to_unconstrained(self, theta) -> np.ndarray:
        """``u`` for parameters ``theta``."""
        return self.transform.to_unconstrained(theta)

    def from_unconstrained(self, u) -> np.ndarray:
        """Parameters ``theta`` for ``u``."""
        return self.transform.from_unconstrained(u)

    def lnlike(self, u) -> float:
        """Log-likelihood plus log-Jacobian at ``u``."""
        theta = self.transform.from_unconstrained(u)
        log_jac, _ = self.transform.log_jacobian_and_grad(u)
        return float(self.likelihood.lnlike(theta)) + log_jac

    def lnlike_and_grad(self, u):
        """Log-likelihood plus log-Jacobian at ``u``, and its gradient with respect to ``u``.

        Returns
        -------
        value : float
        grad : ndarray of shape (P,)
        """
        theta, dtheta = self.transform.from_unconstrained_and_derivative(u)
        value, grad = self.likelihood.lnlike_and_grad(theta)
        log_jac, grad_jac = self.transform.log_jacobian_and_grad(u)
        return float(value) + log_jac, grad * dtheta + grad_jac
