"""Hamiltonian Monte Carlo with the No-U-Turn rule (NUTS) on pho's exact likelihood gradient.

The sampler follows Hoffman & Gelman (2014, JMLR 15, 1593) with Betancourt's multinomial choice of
the next state along the trajectory and his generalized no-U-turn criterion (Betancourt 2017,
arXiv:1701.02434), including the extra checks across the two halves of every merged subtree.

Coordinates: the sampler moves in unconstrained coordinates ``u``. A parameter with a bounded prior
maps through the logistic ``theta = lo + (hi - lo) sigmoid(u)`` of :class:`pho.LogisticTransform`,
whose log-Jacobian (and its gradient) is added to the log density. A *periodic* parameter (a
position angle, ``Uniform(..., periodic=True)``) is not transformed: its density repeats with the
period of its prior window, so the chain moves on the whole real line without a wall and every
recorded value is wrapped back into the window. Scenes with ``shape_parameters="g1_g2"`` have no
angle at all (the reduced shear has no wall and no polar singularity at q = 1); there the region
``|g| >= 1`` has zero density.

Warm-up (``tune`` iterations) adapts the step size by dual averaging towards a mean acceptance
statistic ``target_accept`` and a diagonal (or dense) inverse mass matrix from the draws of windows
of doubling length (75 iterations of step-size-only start, windows of 25, 50, 100, ..., 50 final
iterations of step size only), as Stan does. The inverse mass matrix starts from the inverse
curvature of the log density along each axis at the starting point.

Chains run in ``spawn``-ed worker processes, each with its own copy of the likelihood on one kernel
thread, in time slices; between slices the main process shows progress and writes the checkpoint.
The random numbers of chain ``c`` come from ``SeedSequence(seed).spawn(chains)[c]`` and nothing
else, so a seed gives the same draws whatever the number of processes, the slicing, or a resume.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np

from ._hmc import _init_chain, _run_slice, _windows  # noqa: F401  (_windows: tests)
from ._progress import Progress
from .diagnostics import summarize_chains
from .errors import PhoConvergenceWarning, PhoValueError, warn
from .priors import Priors, Uniform, default_priors
from .sample import SampleResult, _summarize, resolve_processes
from .transforms import LogisticTransform

__all__ = ["sample_nuts", "to_inference_data", "RHAT_WARN", "CHECKPOINT_FORMAT"]

log = logging.getLogger(__name__)

#: R-hat above which :func:`sample_nuts` warns (Vehtari et al. 2021).
RHAT_WARN = 1.01
#: Tag of the checkpoint files written by :func:`sample_nuts`.
CHECKPOINT_FORMAT = "pho-nuts-1"
#: Seconds of sampling per chain between returns to the main process (progress, checkpoints).
_SLICE_S = 2.0
#: Shrink each warm-up window's metric estimate towards the metric in use (True) or towards 1e-3 (Stan).
_SHRINK_TO_PREVIOUS = True


# --------------------------------------------------------------------------------------------------
# The target density in unconstrained coordinates
# --------------------------------------------------------------------------------------------------


class _Target:
    """ln posterior of ``u`` (log-likelihood + log-prior + log-Jacobian) and its gradient.

    Parameters
    ----------
    likelihood : object with ``lnlike_and_grad(theta) -> (float, (P,))``
    priors : Priors
    """

    def __init__(self, likelihood, priors: Priors):
        # imported here, once, not at pho's import (which stays light for workers that only
        # evaluate likelihoods) nor in _map (a lookup per leapfrog step)
        from scipy.special import expit

        self._expit = expit
        self.likelihood = likelihood
        self.priors = priors
        n = priors.n_params
        self.periodic = np.zeros(n, bool)
        self.periodic[priors.periodic] = True
        self.bounded = ~self.periodic
        self.lower, self.upper = priors.lower, priors.upper
        self.width = self.upper - self.lower
        self.transform = LogisticTransform(self.lower[self.bounded], self.upper[self.bounded]) if self.bounded.any() else None
        # Fast path of the logistic map (every prior bound is finite): theta = lo + span sigmoid(u).
        self._lo_b = self.lower[self.bounded]
        self._span_b = self.width[self.bounded]
        self._log_span = float(np.sum(np.log(self._span_b)))
        self._all_bounded = bool(self.bounded.all())
        # Uniform priors have a constant density inside their bounds (where the logistic map keeps theta).
        self._flat = all(type(d) is Uniform for d in priors.distributions)
        self._flat_lnprior = -float(np.sum(np.log(self.width))) if self._flat else 0.0
        names = list(priors.names)
        self.shear_pairs = [
            (i, names.index(name[:-1] + "2")) for i, name in enumerate(names)
            if name.endswith(".g1") and name[:-1] + "2" in names
        ]
        self.n_calls = 0

    def with_workers(self, workers):
        inner = getattr(self.likelihood, "with_workers", None)
        if inner is None:
            return self
        return _Target(inner(workers), self.priors)

    def wrap(self, theta: np.ndarray) -> np.ndarray:
        """Periodic parameters wrapped into their prior window ``[lo, hi)``."""
        theta = np.array(theta, dtype=float)
        p = self.periodic
        theta[p] = self.lower[p] + np.mod(theta[p] - self.lower[p], self.width[p])
        return theta

    def theta_and_derivative(self, u: np.ndarray):
        """Natural parameters of ``u`` (periodic ones wrapped) and the diagonal ``d theta / d u``."""
        theta, dtheta, _ = self._map(u)
        return theta, dtheta

    def _map(self, u: np.ndarray):
        """theta(u), d theta/d u and sigmoid(u) of the bounded parameters (the same numbers as
        :class:`pho.LogisticTransform`, computed once for the value and the log-Jacobian)."""
        expit = self._expit
        u = np.asarray(u, dtype=float)
        if self._all_bounded:  # no periodic parameter: one vector operation each, no fancy indexing
            sig = expit(u)
            return self._lo_b + self._span_b * sig, self._span_b * sig * (1.0 - sig), sig
        theta = self.wrap(u) if self.periodic.any() else u.copy()
        dtheta = np.ones_like(theta)
        sig = expit(u[self.bounded])
        theta[self.bounded] = self._lo_b + self._span_b * sig
        dtheta[self.bounded] = self._span_b * sig * (1.0 - sig)
        return theta, dtheta, sig

    def to_unconstrained(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        u = theta.copy()
        if self.transform is not None:
            u[self.bounded] = self.transform.to_unconstrained(theta[self.bounded])
        return u

    def __call__(self, u: np.ndarray, strict: bool = False):
        """``(ln p(u), d ln p / d u (P,), lnL)``; ``(-inf, nan, -inf)`` where the density is zero.

        With ``strict`` a likelihood that raises re-raises (at the starting point); otherwise a
        :class:`PhoValueError` from the likelihood (a value outside a table's range) counts as zero
        density, which the sampler treats as a divergence.
        """
        self.n_calls += 1
        theta, dtheta, sig = self._map(u)
        for i, j in self.shear_pairs:
            if math.hypot(theta[i], theta[j]) >= 1.0:
                return -math.inf, np.full_like(u, np.nan), -math.inf
        try:
            lnl, grad = self.likelihood.lnlike_and_grad(theta)
        except PhoValueError:
            if strict:
                raise
            return -math.inf, np.full_like(u, np.nan), -math.inf
        lnl = float(lnl)
        if self._flat:
            lnprior, g = self._flat_lnprior, np.asarray(grad, dtype=float) * dtheta
        else:
            lnprior = self.priors.ln_prob(theta)
            g = (np.asarray(grad, dtype=float) + self.priors.grad_ln_prob(theta)) * dtheta
        if not (math.isfinite(lnl) and math.isfinite(lnprior)):
            return -math.inf, np.full_like(u, np.nan), -math.inf
        # ln |d theta/d u| = ln span + ln sigmoid(u) + ln(1 - sigmoid(u)) = ln span - |u| - 2 ln(1 + e^-|u|);
        # its derivative 1 - 2 sigmoid(u)
        a = np.abs(u if self._all_bounded else u[self.bounded])
        log_jac = self._log_span - float(np.sum(a + 2.0 * np.log1p(np.exp(-a))))
        if self._all_bounded:
            g += 1.0 - 2.0 * sig
        else:
            g[self.bounded] += 1.0 - 2.0 * sig
        return lnl + lnprior + log_jac, g, lnl


_WORKER: dict = {}


def _install(target) -> None:
    _WORKER["target"] = target


def _slice_in_worker(args):
    state, settings, max_seconds = args
    return _run_slice(_WORKER["target"], state, settings, max_seconds)


def _init_in_worker(args):
    u0, seed_seq, settings, cov_u = args
    target = _WORKER["target"]
    calls0 = target.n_calls
    state = _init_chain(target, u0, seed_seq, settings, cov_u)
    state["n_calls"] = target.n_calls - calls0
    return state


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _write_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _fingerprint(likelihood, priors: Priors) -> dict:
    """The problem's fingerprint (:func:`pho.checkpoint.problem_fingerprint`: data, noise, PSF, astrometry,
    sources and wrappers, starting vector, priors). Settings that fix the draws are compared separately
    (:func:`_read_checkpoint`), with messages naming the value."""
    from .checkpoint import problem_fingerprint

    return problem_fingerprint(likelihood, priors, {"sampler": "nuts", "periodic": list(priors.periodic)})


def _read_checkpoint(path: Path, names, settings: dict, fingerprint: dict) -> dict:
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise PhoValueError(f"cannot read the NUTS checkpoint {path}: {exc}; delete it and run without resume") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PhoValueError(
            f"{path} is not a pho NUTS checkpoint (format {CHECKPOINT_FORMAT!r}); was it written by pho.sample "
            "(dynesty)? Resume it with the sampler that wrote it, or run without resume"
        )
    if list(payload["names"]) != list(names):
        raise PhoValueError(f"the checkpoint {path} is for parameters {payload['names']}, not {list(names)}; run without resume")
    for key in ("draws", "tune", "chains", "metric", "target_accept", "max_tree_depth"):
        if payload["settings"][key] != settings[key]:
            raise PhoValueError(
                f"the checkpoint {path} has {key}={payload['settings'][key]!r}, this call {key}={settings[key]!r}; "
                "resume with the same settings, or start afresh without resume (delete the checkpoint)"
            )
    from .checkpoint import fingerprint_differences

    differences = fingerprint_differences(payload.get("fingerprint"), fingerprint)
    if differences:
        raise PhoValueError(
            f"the checkpoint {path} belongs to another problem: {'; '.join(differences)}. Resuming it would continue "
            "chains adapted to the old posterior with the new likelihood; start afresh without resume (delete the "
            "checkpoint, or choose another checkpoint file / --outdir)"
        )
    return payload


# --------------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------------


def _cov_in_u(cov, target: _Target, u0: np.ndarray, names) -> np.ndarray:
    """A covariance of theta mapped to the sampler's coordinates at ``u0`` (d theta / d u diagonal), each
    variance capped at 4 (a logistic coordinate's posterior wider than that is prior-dominated and far
    from Gaussian; the correlations are kept)."""
    cov = np.array(cov, dtype=float)
    n = len(u0)
    if cov.shape != (n, n) or not np.all(np.isfinite(cov)):
        raise PhoValueError(f"init_cov must be a finite ({n}, {n}) covariance matrix of {names}, got shape {cov.shape}; "
                            "pass best.cov of pho.optimize")
    _, dtheta = target.theta_and_derivative(u0)
    cov_u = 0.5 * (cov + cov.T) / np.outer(dtheta, dtheta)
    scale = np.sqrt(np.minimum(1.0, 4.0 / np.maximum(np.diag(cov_u), 1e-300)))
    cov_u *= np.outer(scale, scale)
    try:
        np.linalg.cholesky(cov_u)
    except np.linalg.LinAlgError:
        raise PhoValueError("init_cov is not positive definite; pass best.cov of pho.optimize (check best.at_bound for "
                            "parameters on a prior bound) or leave init_cov None") from None
    return cov_u


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PhoValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def usable_covariance(cov) -> np.ndarray | None:
    """``cov`` if it is finite and positive definite (a starting metric for NUTS), else None."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or not np.all(np.isfinite(cov)):
        return None
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    return cov


def sample_nuts(
    likelihood,
    priors: Priors | None = None,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    seed: int | None = None,
    processes: int | None = None,
    checkpoint_file: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    metric: str = "dense",
    theta0: np.ndarray | None = None,
    jitter: float = 1.0,
    checkpoint_every_s: float = 60.0,
    init_cov: np.ndarray | None = None,
) -> SampleResult:
    """Sample the posterior with NUTS (dynamic Hamiltonian Monte Carlo) on the analytic gradient.

    Parameters
    ----------
    likelihood : pho.Likelihood or pho.FixedParameters
        Anything with ``lnlike_and_grad(theta) -> (float, ndarray (P,))`` and ``parameter_names``;
        its ``initial`` (a :class:`pho.FixedParameters` view) or ``scene.get_vector()`` is the
        starting point unless ``theta0`` is given.
    priors : Priors, optional
        Default :func:`pho.priors.default_priors` (bounded uniform priors; position angles periodic).
    draws : int
        Draws kept per chain after warm-up (>= 4). Default 1000.
    tune : int
        Warm-up iterations per chain (step size and mass matrix adaptation), discarded. Default 1000;
        below 150 the adaptation windows are scaled down, below 50 only the step size adapts.
    chains : int
        Independent chains (>= 1; 2 or more for a meaningful R-hat). Default 2.
    seed : int, optional
        Seed of all random numbers; the same seed gives the same draws whatever ``processes``.
        None: fresh entropy (recorded in ``result.settings["seed"]``).
    processes : int or None
        Worker processes running chains in parallel, each with one kernel thread; 1 runs the chains
        in this process one after another (on the likelihood's own threads). Default None: one per
        chain, at most one per available core. Workers are spawned: scripts need the
        ``if __name__ == "__main__":`` guard.
    checkpoint_file : path, optional
        Where to write the chains' state every ``checkpoint_every_s`` seconds and at the end.
    resume : bool
        Continue from ``checkpoint_file`` (which must exist and come from a call with the same
        draws, tune, chains and settings); the draws are then identical to an uninterrupted run.
        The checkpoint holds a fingerprint of the problem (:mod:`pho.checkpoint`: pixels, noise,
        PSF, astrometry, sources, starting vector, priors): a checkpoint of another problem is refused.
    progress : bool
        A live line on a terminal, a line every 10 s when stderr is redirected; False: silent.
    target_accept : float
        Mean acceptance statistic aimed at by the step-size adaptation, in (0, 1). Default 0.8;
        raise it (0.9-0.99) when there are divergences.
    max_tree_depth : int
        At most ``2**max_tree_depth`` leapfrog steps per draw. Default 10.
    metric : {"dense", "diag"}
        Inverse mass matrix adapted in warm-up: the full posterior covariance (default) or only the
        variances. Galaxy posteriors have strongly correlated flux, n and rh: on the 7-parameter
        galaxy of ``tests/test_nuts.py`` the dense metric needed 6.7x fewer likelihood calls per
        effective sample than the diagonal one (docs/fitting.md). Its extra cost, P^2 per leapfrog
        step, is negligible beside a likelihood call.
    theta0 : ndarray of shape (P,), optional
        Starting point (natural units), inside the priors.
    jitter : float
        Chains start at ``theta0`` moved by ``jitter`` times a curvature-based standard deviation
        in the unconstrained coordinates (independently per chain). Default 1.
    checkpoint_every_s : float
        Seconds between checkpoints.
    init_cov : ndarray of shape (P, P), optional
        A covariance of the natural parameters near ``theta0``, typically ``best.cov`` of
        :func:`pho.optimize` (the inverse Fisher matrix at the optimum). Mapped into the sampler's
        coordinates it is the first inverse mass matrix and the shape of the starting jitter, instead
        of the curvature along each axis; later metric estimates are shrunk towards it. Worth it for
        many correlated parameters (blends), where the first windows of warm-up hold fewer draws
        than there are parameters (docs/fitting.md has the measurements).

    Returns
    -------
    SampleResult
        ``samples`` (chains * draws, P) equal-weight draws in natural units (position angles
        wrapped into their prior window), ``weights`` all equal, ``logl`` their log-likelihoods,
        ``logz`` and ``logz_err`` NaN, ``summary``, ``diagnostics`` (``name -> {"rhat",
        "ess_bulk", "ess_tail"}``), ``settings`` (including ``divergences``, ``max_tree_depth_hits``,
        ``mean_tree_depth``, ``step_size`` per chain), ``n_calls`` (likelihood-and-gradient
        evaluations, warm-up included), ``results`` (a dict of per-chain arrays: ``chains``
        (C, D, P), ``lnl``, ``tree_depth``, ``n_leapfrog``, ``accept``, ``divergent`` (C, D)).

    Raises
    ------
    PhoValueError
        Bad settings, priors that do not match the likelihood, a starting point outside the
        priors, a non-finite log posterior at the start, ``resume`` without a usable checkpoint, or
        of a checkpoint written for another problem or other settings (the message names what differs).

    Warns
    -----
    PhoConvergenceWarning
        R-hat above 1.01 (naming the parameters) or divergent transitions after warm-up.

    Examples
    --------
    >>> post = pho.sample_nuts(likelihood, draws=500, tune=500, seed=1)   # doctest: +SKIP
    >>> post.diagnostics["s0.rh"]["ess_bulk"]                             # doctest: +SKIP
    """
    names = list(likelihood.parameter_names)
    draws = _check_int("draws", draws, 4)
    tune = _check_int("tune", tune, 0)
    chains = _check_int("chains", chains, 1)
    max_tree_depth = _check_int("max_tree_depth", max_tree_depth, 1)
    if not 0.0 < float(target_accept) < 1.0:
        raise PhoValueError(f"target_accept={target_accept!r} must be in (0, 1); 0.8 is usual, 0.95 against divergences")
    if metric not in ("diag", "dense"):
        raise PhoValueError(f"metric={metric!r}; use 'diag' or 'dense'")
    if not jitter >= 0:
        raise PhoValueError(f"jitter={jitter!r} must be >= 0")
    if theta0 is None:
        theta0 = likelihood.initial if hasattr(likelihood, "initial") else likelihood.scene.get_vector()
    theta0 = np.array(theta0, dtype=float)
    if theta0.shape != (len(names),):
        raise PhoValueError(f"theta0 has shape {theta0.shape}, expected ({len(names)},) for parameters {names}")
    if priors is None:
        priors = default_priors(likelihood, theta=theta0)
    if list(priors.names) != names:
        raise PhoValueError("priors.names differ from likelihood.parameter_names; build the priors from this likelihood")
    priors.check_inside(theta0, what="starting point")
    processes = min(chains, resolve_processes(processes))
    checkpoint_path = None if checkpoint_file is None else Path(checkpoint_file)
    if resume and (checkpoint_path is None or not checkpoint_path.exists()):
        raise PhoValueError(f"resume=True but the checkpoint file {checkpoint_file!r} does not exist; run without resume")

    seed_seq = np.random.SeedSequence(seed)
    settings = {
        "sampler": "nuts", "draws": draws, "tune": tune, "chains": chains, "metric": metric,
        "target_accept": float(target_accept), "max_tree_depth": max_tree_depth, "jitter": float(jitter),
        "seed": seed if seed is not None else str(seed_seq.entropy),
        "init_cov": init_cov is not None, "shrink_to_previous": _SHRINK_TO_PREVIOUS,
    }
    target = _Target(likelihood, priors)
    # Start strictly inside the bounds (a value on a bound has no finite u): nudge by 1e-6 of the width.
    lo, hi = priors.lower, priors.upper
    nudge = 1e-6 * (hi - lo)
    inside = np.where(target.bounded, np.clip(theta0, lo + nudge, hi - nudge), theta0)
    u0 = target.to_unconstrained(inside)
    cov_u = None if init_cov is None else _cov_in_u(init_cov, target, u0, names)

    display = Progress("nuts", enabled=progress)
    t_start = time.perf_counter()
    records = [{k: [] for k in ("theta", "lnl", "depth", "n_leapfrog", "accept", "divergent")} for _ in range(chains)]
    states = None
    resumed = False
    fingerprint = None if checkpoint_path is None else _fingerprint(likelihood, priors)
    if resume:
        payload = _read_checkpoint(checkpoint_path, names, settings, fingerprint)
        states, records = payload["states"], payload["records"]
        settings["seed"] = payload["settings"]["seed"]
        resumed = True
        log.info("resumed NUTS from %s at iterations %s", checkpoint_path, [s["iteration"] for s in states])
    else:
        seed_seq = np.random.SeedSequence(seed)
    chain_seeds = seed_seq.spawn(chains) if not resumed else None
    total = tune + draws

    def save():
        if checkpoint_path is not None:
            _write_checkpoint(checkpoint_path, {"format": CHECKPOINT_FORMAT, "names": names, "settings": settings,
                                                "fingerprint": fingerprint, "states": states, "records": records})

    def show(force=False):
        done = sum(s["iteration"] for s in states)
        div = sum(int(np.sum(r["divergent"])) for r in records)
        phase = "warm-up" if any(s["iteration"] < tune for s in states) else "sampling"
        calls = sum(s["n_calls"] for s in states)
        display.update(f"{done}/{chains * total} iterations ({phase}), {calls} gradient calls, {div} divergences, "
                       f"{time.perf_counter() - t_start:.0f} s", force=force)

    pool = None
    try:
        if processes > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(processes, initializer=_install, initargs=(target.with_workers(1),))
            if states is None:
                states = pool.map(_init_in_worker, [(u0, s, settings, cov_u) for s in chain_seeds], chunksize=1)
        elif states is None:
            states = []
            for s in chain_seeds:
                calls0 = target.n_calls
                st = _init_chain(target, u0, s, settings, cov_u)
                st["n_calls"] = target.n_calls - calls0
                states.append(st)
        last_save = time.perf_counter()
        save()
        while any(s["iteration"] < total for s in states):
            todo = [c for c in range(chains) if states[c]["iteration"] < total]
            if pool is not None:
                jobs = {c: pool.apply_async(_slice_in_worker, ((states[c], settings, _SLICE_S),)) for c in todo}
                results = {c: job.get() for c, job in jobs.items()}
            else:
                results = {c: _run_slice(target, states[c], settings, _SLICE_S / max(len(todo), 1)) for c in todo}
            for c, (state, rec) in results.items():
                states[c] = state
                for k, v in rec.items():
                    records[c][k].extend(v)
            show()
            if checkpoint_path is not None and time.perf_counter() - last_save >= checkpoint_every_s:
                save()
                last_save = time.perf_counter()
        save()
    except KeyboardInterrupt as exc:
        # Ctrl-C: keep every finished slice (the one in flight is lost) and say where it is, as pho.sample does.
        exc.pho_checkpoint = None
        if checkpoint_path is not None and states is not None:
            save()
            exc.pho_checkpoint = checkpoint_path
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    elapsed = time.perf_counter() - t_start
    show(force=True)
    display.close()
    return _result(names, priors, target, settings, states, records, processes, resumed, elapsed)


def _unwrap_periodic(chains: np.ndarray, target: _Target) -> np.ndarray:
    """Periodic parameters moved to the branch around their circular mean (for diagnostics)."""
    out = chains.copy()
    for i in np.flatnonzero(target.periodic):
        w = target.width[i]
        ang = 2 * np.pi * out[..., i] / w
        centre = w / (2 * np.pi) * math.atan2(np.mean(np.sin(ang)), np.mean(np.cos(ang)))
        out[..., i] = centre + np.mod(out[..., i] - centre + w / 2, w) - w / 2
    return out


def _result(names, priors, target, settings, states, records, processes, resumed, elapsed) -> SampleResult:
    theta = np.array([np.asarray(r["theta"], dtype=float) for r in records])  # (C, D, P)
    lnl = np.array([np.asarray(r["lnl"], dtype=float) for r in records])
    stats = {k: np.array([np.asarray(r[k]) for r in records]) for k in ("depth", "n_leapfrog", "accept", "divergent")}
    n_chains, n_draws, n_par = theta.shape
    samples = theta.reshape(n_chains * n_draws, n_par)
    weights = np.full(len(samples), 1.0 / len(samples))
    diagnostics = summarize_chains(_unwrap_periodic(theta, target), names)
    divergences = int(stats["divergent"].sum())
    depth_hits = int(np.sum(stats["depth"] >= settings["max_tree_depth"]))
    n_calls = int(sum(s["n_calls"] for s in states))
    settings = dict(settings)
    settings.update(
        divergences=divergences,
        divergences_warmup=int(sum(s["divergent_warmup"] for s in states)),
        max_tree_depth_hits=depth_hits,
        mean_tree_depth=float(stats["depth"].mean()),
        mean_accept=float(stats["accept"].mean()),
        step_size=[float(s["step"]) for s in states],
        processes=processes,
        resumed=bool(resumed),
    )
    bad = [n for n in names if not diagnostics[n]["rhat"] <= RHAT_WARN]
    if bad:
        worst = max(diagnostics[n]["rhat"] for n in bad)
        warn(
            f"NUTS chains have not converged: R-hat > {RHAT_WARN} (max {worst:.3g}) for {', '.join(bad)}; "
            "run more warm-up and draws (tune, draws), start nearer the optimum (pho.optimize) or check for "
            "several modes",
            PhoConvergenceWarning,
            stacklevel=3,
        )
    if divergences:
        warn(
            f"{divergences} divergent NUTS transitions after warm-up (of {n_chains * n_draws}): the draws may be "
            "biased near strongly curved regions; raise target_accept (e.g. 0.95) or reparameterize "
            "(shape_parameters='g1_g2' for nearly round galaxies)",
            PhoConvergenceWarning,
            stacklevel=3,
        )
    return SampleResult(
        samples=samples,
        weights=weights,
        logl=lnl.reshape(-1),
        logz=math.nan,
        logz_err=math.nan,
        names=list(names),
        summary=_summarize(samples, weights, names, priors),
        settings=settings,
        n_calls=n_calls,
        n_iter=n_chains * (settings["tune"] + n_draws),
        time_s=elapsed,
        results={"chains": theta, "lnl": lnl, "tree_depth": stats["depth"], "n_leapfrog": stats["n_leapfrog"],
                 "accept": stats["accept"], "divergent": stats["divergent"]},
        diagnostics=diagnostics,
    )


def to_inference_data(result: SampleResult):
    """The chains of a :func:`sample_nuts` result as an ArviZ ``InferenceData`` (ArviZ is optional).

    Parameters
    ----------
    result : SampleResult
        From :func:`sample_nuts`.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` with one variable per parameter (dots in names become underscores), shape
        (chain, draw); ``sample_stats`` with ``lp`` (the log-likelihood), ``tree_depth``,
        ``n_steps``, ``acceptance_rate`` and ``diverging``.

    Raises
    ------
    ImportError
        ArviZ is not installed (``pip install arviz``).
    PhoValueError
        ``result`` has no chains (a nested-sampling result).
    """
    res = result.results
    if not isinstance(res, dict) or "chains" not in res:
        raise PhoValueError("to_inference_data needs a result of pho.sample_nuts (with chains), not of pho.sample")
    try:
        import arviz
    except ImportError as exc:
        raise ImportError("to_inference_data needs ArviZ: pip install arviz") from exc
    chains = np.asarray(res["chains"])
    posterior = {name.replace(".", "_"): chains[:, :, i] for i, name in enumerate(result.names)}
    stats = {"lp": res["lnl"], "tree_depth": res["tree_depth"], "n_steps": res["n_leapfrog"],
             "acceptance_rate": res["accept"], "diverging": res["divergent"]}
    return arviz.from_dict(posterior=posterior, sample_stats=stats)
