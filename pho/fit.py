"""Maximum a posteriori fits with scipy's L-BFGS-B and the analytic gradient.

The optimizer works in scaled parameters, ``z = (theta - theta0) / scale``, so that every
coordinate moves by O(1) per unit of natural change: positions as offsets in arcsec, fluxes
relative to their initial size (or to their prior width when that is near zero), ``rh``
relative to its initial value, ``q``, ``pa`` (radians) and ``n`` as they are. The bounds are the
priors' bounds, except the position angle, which runs free and is wrapped back into its prior
window afterwards (an ellipse turned by pi is the same ellipse).

Uncertainties come from the inverse of the Fisher matrix at the best fit,
``F_ij = sum over pixels of w * dm/dtheta_i * dm/dtheta_j`` with ``w = ivar`` (Gaussian
likelihood: the expected Hessian of -lnL, exact for a model linear in theta, and always positive
semi-definite) or ``w = 1/m`` (Poisson), or, with ``uncertainty="hessian"``, from central
finite differences of the analytic gradient (the observed Hessian).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import PhoValueError, PhoWarning, warn
from .priors import Priors, default_priors, parameter_kind

__all__ = ["optimize", "OptimizeResult", "FixedParameters", "parameter_scales", "fisher_matrix", "derived_quantities"]

log = logging.getLogger(__name__)

#: The fit counts as converged when the Newton step still to go is below this many sigma.
CONVERGED_STEP_SIGMA = 0.01


@dataclass
class OptimizeResult:
    """What :func:`optimize` found.

    Attributes
    ----------
    theta : ndarray of shape (P,)
        Best-fit parameters (natural units: flux, degrees, radians, arcsec).
    sigma : ndarray of shape (P,)
        1-sigma uncertainties, ``sqrt(diag(cov))``.
    cov : ndarray of shape (P, P)
        Covariance, the inverse of the Fisher (or Hessian) matrix.
    names : list of str
        Parameter names.
    lnlike, lnpost : float
        Log-likelihood and log-likelihood plus log-prior at ``theta``.
    uncertainty : str
        ``"fisher"`` or ``"hessian"``: how ``cov`` was computed.
    at_bound : list of str
        Parameters that ended on a prior bound (their Gaussian sigma is only indicative).
    scene : object or None
        A copy of the likelihood's scene set to ``theta``.
    success : bool
    message : str
    n_calls : int
        Likelihood-and-gradient evaluations.
    time_s : float
    derived : dict
        Quantities that are not parameters, ``name -> (value, sigma)``: for a source with
        conformal shear (``shape_parameters="eta"``), ``"s{i}.q"`` and ``"s{i}.pa"`` (radians)
        with errors propagated from ``cov`` through the Jacobian.
    """

    theta: np.ndarray
    sigma: np.ndarray
    cov: np.ndarray
    names: list
    lnlike: float
    lnpost: float
    uncertainty: str
    at_bound: list = field(default_factory=list)
    scene: object = None
    success: bool = True
    message: str = ""
    n_calls: int = 0
    time_s: float = 0.0
    derived: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """``{name: (value, sigma)}`` of the parameters and of the ``derived`` quantities."""
        out = {n: (float(v), float(s)) for n, v, s in zip(self.names, self.theta, self.sigma)}
        out.update({n: (float(v), float(s)) for n, (v, s) in self.derived.items()})
        return out

    def __str__(self) -> str:
        lines = [f"lnL = {self.lnlike:.3f} ({self.n_calls} calls, {self.time_s:.2f} s, {self.uncertainty} errors)"]
        for n, v, s in zip(self.names, self.theta, self.sigma):
            lines.append(f"  {n:<22s} {v:>16.8g} +/- {s:.3g}")
        for n, (v, s) in self.derived.items():
            lines.append(f"  {n + ' (derived)':<22s} {v:>16.8g} +/- {s:.3g}")
        return "\n".join(lines)


def derived_quantities(names, theta, cov=None) -> dict:
    """``name -> (value, sigma)`` of the q and pa of every source with conformal shear among
    ``names`` (see ``OptimizeResult.derived``)."""
    from .transforms import eta_pairs, q_pa_from_eta_with_errors

    out = {}
    for i, j, prefix in eta_pairs(names):
        sub = None if cov is None else np.asarray(cov)[np.ix_([i, j], [i, j])]
        q, q_err, pa, pa_err = q_pa_from_eta_with_errors(float(theta[i]), float(theta[j]), sub)
        out[f"{prefix}.q"] = (q, q_err)
        out[f"{prefix}.pa"] = (pa, pa_err)
    return out


def parameter_scales(names, theta: np.ndarray, priors: Priors | None = None) -> np.ndarray:
    """The scale of each parameter used by the optimizer (see the module docstring), shape (P,)."""
    theta = np.asarray(theta, dtype=float)
    values = dict(zip(names, theta))
    scales = np.ones(len(names))
    for i, name in enumerate(names):
        kind = parameter_kind(name)
        src = name.split(".", 1)[0]
        if kind == "ra":
            scales[i] = 1.0 / 3600.0 / max(math.cos(math.radians(values.get(f"{src}.dec", 0.0))), 1e-6)
        elif kind == "dec":
            scales[i] = 1.0 / 3600.0
        elif kind == "flux":
            width = (priors[name].hi - priors[name].lo) / 30.0 if priors is not None else 0.0
            scales[i] = max(abs(theta[i]), width, 1e-30)
        elif kind == "rh":
            scales[i] = max(abs(theta[i]), 1e-3)
        elif kind.startswith("sky_") and priors is not None:
            scales[i] = (priors[name].hi - priors[name].lo) / 30.0
    return scales


class _Objective:
    """-(lnL + ln prior) and its gradient in scaled coordinates, counting calls."""

    def __init__(self, likelihood, priors, theta0, scales, progress):
        self.likelihood, self.priors = likelihood, priors
        self.theta0, self.scales = theta0, scales
        self.bounded = np.ones(len(theta0), bool)
        self.bounded[priors.periodic] = False
        self.n_calls = 0
        self.best = -math.inf
        from ._progress import Progress

        self.progress = Progress("optimize", enabled=progress)
        self.t0 = time.perf_counter()

    def theta(self, z):
        theta = self.theta0 + z * self.scales
        # z is inside the scaled bounds; undo the round-off of the unscaling (not a clip of the answer)
        return np.where(self.bounded, np.clip(theta, self.priors.lower, self.priors.upper), theta)

    def __call__(self, z):
        theta = self.theta(z)
        self.n_calls += 1
        lnl, grad = self.likelihood.lnlike_and_grad(theta)
        lnp = lnl + self.priors.ln_prob(theta)
        if not np.isfinite(lnp):
            # L-BFGS-B keeps inside the bounds, so this is a non-finite likelihood.
            raise PhoValueError(
                f"log-likelihood is {lnl} at theta={dict(zip(self.priors.names, theta))}; "
                "check the data (NaN pixels, zero ivar everywhere) and the initial guess"
            )
        g = np.asarray(grad, dtype=float) + self.priors.grad_ln_prob(theta)
        if lnp > self.best:
            self.best = lnp
        self.progress.update(f"{self.n_calls:5d} calls, best ln posterior {self.best:.3f}, "
                             f"{time.perf_counter() - self.t0:.1f} s")
        return -lnp, -g * self.scales


def optimize(
    likelihood,
    priors: Priors | None = None,
    *,
    theta0: np.ndarray | None = None,
    uncertainty: str = "auto",
    maxiter: int = 2000,
    ftol: float = 1e-12,
    gtol: float = 1e-6,
    progress: bool = False,
    scales: np.ndarray | None = None,
    fisher_method: str = "exact",
) -> OptimizeResult:
    """Find the maximum of the posterior with L-BFGS-B and the analytic gradient.

    Parameters
    ----------
    likelihood : pho.Likelihood
        Anything with ``lnlike_and_grad(theta) -> (float, (P,))`` and ``parameter_names``;
        ``scene`` and ``exposures`` are used for default priors and the Fisher matrix.
    priors : Priors, optional
        Bounds (and any non-uniform prior density). Default :func:`pho.priors.default_priors`.
    theta0 : ndarray of shape (P,), optional
        Starting point; default the scene's current vector.
    uncertainty : {"auto", "fisher", "hessian"}
        How the covariance is computed (module docstring). ``"auto"`` is ``"fisher"`` when the
        likelihood has ``gradient_images``, else ``"hessian"``.
    maxiter : int
        Maximum L-BFGS-B iterations.
    ftol, gtol : float
        scipy's L-BFGS-B tolerances (relative change of the objective; projected gradient in
        scaled units).
    progress : bool
        Print a running line to stderr.
    scales : ndarray of shape (P,), optional
        The optimizer's unit of each parameter (module docstring); default
        :func:`parameter_scales`. Scales near the parameters' errors (e.g. ``1 / sqrt(diag F)``
        of the Fisher matrix at ``theta0``) precondition L-BFGS-B: many-source fits then
        converge in far fewer iterations.
    fisher_method : {"exact", "fd"}
        How :func:`fisher_matrix` gets the model's derivative images (``uncertainty="fisher"``).

    Returns
    -------
    OptimizeResult

    Raises
    ------
    PhoRangeError
        The starting point is outside the priors.
    PhoValueError
        An unknown ``uncertainty`` or a non-finite likelihood.

    Examples
    --------
    >>> result = pho.optimize(likelihood)            # doctest: +SKIP
    >>> print(result)                                # doctest: +SKIP
    """
    from scipy.optimize import minimize

    names = list(likelihood.parameter_names)
    if theta0 is None:
        theta0 = likelihood.initial if hasattr(likelihood, "initial") else likelihood.scene.get_vector()
    theta0 = np.array(theta0, dtype=float)
    if priors is None:
        priors = default_priors(likelihood, theta=theta0)
    if list(priors.names) != names:
        raise PhoValueError("priors.names differ from likelihood.parameter_names; build the priors from this likelihood")
    if theta0.shape != (len(names),):
        raise PhoValueError(f"theta0 has shape {theta0.shape}, expected ({len(names)},)")
    priors.check_inside(theta0)
    if uncertainty == "auto":
        uncertainty = "fisher" if hasattr(likelihood, "gradient_images") else "hessian"
    if uncertainty not in ("fisher", "hessian"):
        raise PhoValueError(f"uncertainty={uncertainty!r}; use 'auto', 'fisher' or 'hessian'")

    if scales is None:
        scales = parameter_scales(names, theta0, priors)
    scales = np.asarray(scales, dtype=float)
    if scales.shape != (len(names),) or not np.all(np.isfinite(scales) & (scales > 0)):
        raise PhoValueError(f"scales must be {len(names)} finite positive numbers, got {scales}")
    periodic = set(priors.periodic)
    bounds = []
    for i in range(len(names)):
        if i in periodic:
            bounds.append((None, None))
        else:
            bounds.append(((priors.lower[i] - theta0[i]) / scales[i], (priors.upper[i] - theta0[i]) / scales[i]))
    objective = _Objective(likelihood, priors, theta0, scales, progress)
    t0 = time.perf_counter()
    options = {"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxcor": 30}
    res = minimize(objective, np.zeros(len(names)), jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    # q = 1 is a trap of the (q, pa) parameterization: there d lnL/d pa = 0, so an ellipse that
    # needs turning by 90 degrees cannot get there. Restart such sources from q = 0.9 at pa + pi/2
    # and keep the better optimum.
    for i_q in _round_sources_at_q1(names, objective.theta(res.x), priors):
        z = res.x.copy()
        i_pa = names.index(names[i_q].replace(".q", ".pa"))
        z[i_q] = (0.9 - theta0[i_q]) / scales[i_q]
        z[i_pa] += (math.pi / 2) / scales[i_pa]
        retry = minimize(objective, z, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        if retry.fun < res.fun - 1e-9:
            log.info("restart from q=0.9, pa+pi/2 for %s improved ln posterior by %.3g", names[i_q], res.fun - retry.fun)
            res = retry
    objective.progress.close()
    theta = objective.theta(res.x)
    for i in periodic:
        lo = priors.lower[i]
        theta[i] = lo + (theta[i] - lo) % (priors.upper[i] - lo)
    lnl = float(likelihood.lnlike(theta)) if hasattr(likelihood, "lnlike") else float(likelihood.lnlike_and_grad(theta)[0])
    lnpost = lnl + priors.ln_prob(theta)

    if uncertainty == "fisher":
        info = fisher_matrix(likelihood, theta, method=fisher_method)
    else:
        info = hessian_matrix(lambda t: likelihood.lnlike_and_grad(t)[1] + priors.grad_ln_prob(t), theta, scales)
    cov = _invert(info, names, scales)
    sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    tol = 1e-6 * (priors.upper - priors.lower)
    at_bound = [
        n for i, n in enumerate(names)
        if i not in periodic and (theta[i] - priors.lower[i] < tol[i] or priors.upper[i] - theta[i] < tol[i])
    ]
    # Convergence in the statistician's sense: the Newton step left to the optimum, in sigmas.
    free = np.array([n not in at_bound for n in names]) & (sigma > 0)
    grad = np.asarray(likelihood.lnlike_and_grad(theta)[1], dtype=float) + priors.grad_ln_prob(theta)
    step = np.zeros(len(names))
    if free.any():
        step[free] = cov[np.ix_(free, free)] @ grad[free]
    with np.errstate(divide="ignore", invalid="ignore"):
        step_sigma = float(np.nanmax(np.abs(step[free]) / sigma[free])) if free.any() else 0.0
    success = bool(res.success) or step_sigma < CONVERGED_STEP_SIGMA
    message = f"{res.message}; remaining Newton step {step_sigma:.2g} sigma"
    if not success:
        warn(
            f"L-BFGS-B stopped ({res.message}) {step_sigma:.2g} sigma from the optimum after {res.nit} iterations; "
            "the best point found is returned: raise maxiter or start closer",
            PhoWarning,
        )
    scene = None
    if getattr(likelihood, "scene", None) is not None and hasattr(likelihood.scene, "set_vector"):
        scene = copy.deepcopy(likelihood.scene)
        scene.set_vector(theta[: scene.n_params])  # the sky parameters, if any, follow the scene's
    return OptimizeResult(
        theta=theta,
        sigma=sigma,
        cov=cov,
        names=names,
        lnlike=lnl,
        lnpost=lnpost,
        uncertainty=uncertainty,
        at_bound=at_bound,
        scene=scene,
        success=success,
        message=message,
        n_calls=objective.n_calls,
        time_s=time.perf_counter() - t0,
        derived=derived_quantities(names, theta, cov),
    )


def _round_sources_at_q1(names, theta, priors) -> list[int]:
    """Indices of ``q`` parameters sitting at q = 1 whose source also has a ``pa``."""
    out = []
    for i, n in enumerate(names):
        if n.endswith(".q") and n.replace(".q", ".pa") in names and theta[i] >= min(1.0, priors.upper[i]) - 1e-9:
            out.append(i)
    return out


def fisher_matrix(likelihood, theta: np.ndarray, method: str = "exact") -> np.ndarray:
    """Fisher information ``sum_pixels w dm/dtheta_i dm/dtheta_j`` over all exposures, shape (P, P).

    ``w`` is the inverse variance for a Gaussian likelihood and ``1 / model`` for a Poisson one;
    masked pixels and pixels with zero inverse variance contribute nothing.

    ``method="exact"`` takes ``dm/dtheta`` from ``likelihood.gradient_images`` (the reference
    backend's exact derivative images: exact, slow for many sources); ``method="fd"`` from
    central differences of ``likelihood.model_images`` (the likelihood's own backend, 2P
    renders; steps of ``FD_STEP`` parameter scales, one-sided at a hard bound such as q = 1;
    agrees with the exact matrix to ~1e-6, tested).
    """
    theta = np.asarray(theta, dtype=float)
    if method not in ("exact", "fd"):
        raise PhoValueError(f"method={method!r}; use 'exact' or 'fd'")
    kind = getattr(likelihood, "kind", "gaussian")
    models = likelihood.model_images(theta) if (kind == "poisson" or method == "fd") else None
    weights = []
    for e, exposure in enumerate(likelihood.exposures):
        ivar = np.asarray(exposure.ivar, dtype=float)
        good = ivar > 0
        if getattr(exposure, "mask", None) is not None:
            good &= ~np.asarray(exposure.mask, dtype=bool)
        if kind == "poisson":
            m = np.asarray(models[e], dtype=float)
            good &= m > 0
            weights.append(np.where(good, 1.0 / np.where(good, m, 1.0), 0.0))
        else:
            weights.append(np.where(good, ivar, 0.0))
    P = len(theta)
    if method == "fd":
        derivs = _model_derivatives_fd(likelihood, theta, models)
    info = np.zeros((P, P))
    for e in range(len(likelihood.exposures)):
        if method == "fd":
            flat = derivs[e].reshape(P, -1)
        else:
            flat = np.asarray(likelihood.gradient_images(theta, e), dtype=float).reshape(P, -1)
        info += (flat * weights[e].ravel()) @ flat.T
    return info


#: Step of the finite-difference Fisher matrix, in units of :func:`parameter_scales`.
FD_STEP = 1e-5


def _model_derivatives_fd(likelihood, theta, models) -> list[np.ndarray]:
    """d model / d theta per exposure, (P, ny, nx) each, by central (or one-sided) differences."""
    names = list(likelihood.parameter_names)
    scene = getattr(likelihood, "scene", None)
    if hasattr(likelihood, "parameter_bounds"):  # pho.Likelihood: the scene's bounds and the sky's
        lo, hi = likelihood.parameter_bounds()
    else:
        lo, hi = scene.parameter_bounds() if scene is not None and hasattr(scene, "parameter_bounds") else (None, None)
    steps = FD_STEP * parameter_scales(names, theta)
    if hasattr(likelihood, "model_derivatives_fd"):  # pho.Likelihood: one source rendered per difference
        return likelihood.model_derivatives_fd(theta, steps, lo, hi)
    out = [np.empty((len(theta),) + np.shape(m)) for m in models]
    for i, h in enumerate(steps):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        if hi is not None and up[i] > hi[i]:
            up[i], span = theta[i], h  # at an upper bound (q = 1): backward difference
            plus, minus = models, likelihood.model_images(down)
        elif lo is not None and down[i] < lo[i]:
            down[i], span = theta[i], h
            plus, minus = likelihood.model_images(up), models
        else:
            span = 2 * h
            plus, minus = likelihood.model_images(up), likelihood.model_images(down)
        for e in range(len(models)):
            out[e][i] = (np.asarray(plus[e]) - np.asarray(minus[e])) / span
    return out


def hessian_matrix(grad_lnp, theta: np.ndarray, scales: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Minus the Hessian of the log posterior by central differences of its gradient, shape (P, P).

    Each parameter is stepped by ``step * scales[i]``; the result is symmetrized.
    """
    theta = np.asarray(theta, dtype=float)
    p = len(theta)
    hess = np.empty((p, p))
    for j in range(p):
        h = step * scales[j]
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        hess[:, j] = -(np.asarray(grad_lnp(up)) - np.asarray(grad_lnp(down))) / (2 * h)
    return 0.5 * (hess + hess.T)


def _invert(info: np.ndarray, names, scales: np.ndarray) -> np.ndarray:
    """Invert an information matrix, conditioning it with the parameter scales first."""
    scaled = info * np.outer(scales, scales)
    try:
        eig = np.linalg.eigvalsh(scaled)
        if eig.min() <= 1e-12 * max(eig.max(), 1e-300):
            raise np.linalg.LinAlgError
        cov_scaled = np.linalg.inv(scaled)
    except np.linalg.LinAlgError:
        diag = np.diag(info)
        flat = [n for n, d in zip(names, diag) if d <= 0]
        warn(
            "the information matrix is singular or not positive definite"
            + (f" (no information on {flat})" if flat else "")
            + "; covariance from its pseudo-inverse, uncertainties of degenerate parameters are unreliable",
            PhoWarning,
        )
        cov_scaled = np.linalg.pinv(scaled)
    return cov_scaled * np.outer(scales, scales)


class FixedParameters:
    """A likelihood with some parameters held at fixed values (a view on a full likelihood).

    Parameters
    ----------
    likelihood : pho.Likelihood
        The full likelihood (P parameters).
    fixed : mapping of str to float
        ``name -> value`` for the parameters to hold fixed.
    theta : ndarray of shape (P,), optional
        Full vector supplying the free parameters' starting values (default the scene's).

    The view has ``parameter_names`` (the F free ones), ``lnlike``, ``lnlike_and_grad`` (the
    gradient restricted to the free parameters), ``model_images``, ``gradient_images``
    (F, ny, nx), ``exposures``, ``kind``, and ``initial`` (the free starting values, shape
    (F,)); ``full(theta_free)`` gives the full vector. Use it with :func:`optimize` and
    :func:`pho.sample` to fit, e.g., a galaxy's flux and size at a fixed Sersic index.

    Raises
    ------
    PhoValueError
        A fixed name that is not a parameter of the likelihood.
    """

    def __init__(self, likelihood, fixed, theta=None):
        names = list(likelihood.parameter_names)
        unknown = [n for n in fixed if n not in names]
        if unknown:
            raise PhoValueError(f"cannot fix {unknown}: not parameters of this likelihood ({names})")
        self.likelihood = likelihood
        if theta is None:
            theta = likelihood.initial if hasattr(likelihood, "initial") else likelihood.scene.get_vector()
        full = np.array(theta, dtype=float)
        for n, v in fixed.items():
            full[names.index(n)] = float(v)
        self._full = full
        self.free_index = np.array([i for i, n in enumerate(names) if n not in fixed], dtype=int)
        self.parameter_names = [names[i] for i in self.free_index]
        self.initial = full[self.free_index].copy()
        self.exposures = likelihood.exposures
        self.kind = getattr(likelihood, "kind", "gaussian")
        self.scene = None

    def with_workers(self, workers: int | None) -> "FixedParameters":
        """The same view on a copy of the likelihood whose backend uses ``workers`` threads."""
        clone = copy.copy(self)
        inner = getattr(self.likelihood, "with_workers", None)
        clone.likelihood = inner(workers) if inner is not None else self.likelihood
        return clone

    def full(self, theta_free) -> np.ndarray:
        """The full parameter vector, shape (P,), for free values ``theta_free`` (F,)."""
        out = self._full.copy()
        out[self.free_index] = theta_free
        return out

    def lnlike(self, theta_free) -> float:
        return self.likelihood.lnlike(self.full(theta_free))

    def lnlike_and_grad(self, theta_free):
        value, grad = self.likelihood.lnlike_and_grad(self.full(theta_free))
        return value, np.asarray(grad)[self.free_index]

    def model_images(self, theta_free):
        return self.likelihood.model_images(self.full(theta_free))

    def gradient_images(self, theta_free, exposure_index: int):
        return np.asarray(self.likelihood.gradient_images(self.full(theta_free), exposure_index))[self.free_index]
