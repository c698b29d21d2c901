"""Nested sampling of the scene posterior with dynesty.

The prior transform maps dynesty's unit cube to the parameters through the :class:`Priors`;
position angles are declared periodic. Static nested sampling is the default; ``dynamic=True``
runs dynesty's dynamic sampler (more samples where the posterior mass is). dynesty >= 3 has no
sampler that uses gradients; with an older dynesty, ``sample="hslice"`` gets the analytic
gradient (with respect to the unit cube, through the prior transform's diagonal Jacobian).

Checkpoints: with ``checkpoint_file`` the sampler's state is pickled there every
``checkpoint_every_s`` seconds and at the end (dynesty writes a temporary file and renames it);
``resume=True`` restores it and carries on. The checkpoint also holds a fingerprint of the problem
(data, noise, PSF, astrometry, sources, priors, sampler settings; :mod:`pho.checkpoint`): a resume
of another problem is refused with a message naming what differs. Ctrl-C during a static run
saves a last checkpoint before the KeyboardInterrupt propagates (its ``pho_checkpoint`` attribute
names the file).

Processes: ``processes=N > 1`` evaluates the likelihood in N worker processes (started with
``spawn``, never ``fork``: a forked child of a process whose OpenMP threads have started can hang),
each holding its own copy of the likelihood with one kernel thread; dynesty then proposes N new
points at a time. The sampler only ever holds module-level functions that look the likelihood up in
a per-process cache, so checkpoints do not contain the data and resume with any number of processes.
Scripts that use ``processes > 1`` need the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PhoValueError
from .priors import Priors, default_priors

__all__ = ["sample", "SampleResult", "weighted_quantiles", "DYNESTY_MAX_PARAMS", "PROCESSES_MIN_CALL_MS",
           "auto_sampler", "auto_processes"]

log = logging.getLogger(__name__)

#: Problems with more parameters than this are sampled with NUTS under ``sampler="auto"`` (the main
#: job, ``python -m pho.tools.fit``, and each patch of a field fit), dynesty otherwise. Measured by
#: tools/bench_samplers.py (docs/fitting.md, "Which sampler when"): per 1,000 effective samples
#: dynesty needed 0.6x the calls of NUTS on a 7-parameter galaxy and 2.8x on the demo's 20
#: parameters, where dynesty with the main job's nlive 45 also gave widths down to 0.72 of a converged reference. One
#: galaxy in two bands (9 parameters) stays with dynesty (which also gives ln Z); two sources go to NUTS.
DYNESTY_MAX_PARAMS = 10

#: With ``processes=None``, :func:`sample` starts worker processes only when one likelihood call (one
#: thread) takes at least this many milliseconds; cheaper calls run faster in this process, since
#: dynesty's own work and the hand-over to workers are then as large as the calls. Measured with
#: tools/bench_processes.py on 2 cores (docs/performance.md, "Worker processes for dynesty"): 2
#: processes took 1.07-1.08x as long as 1 at 0.08 ms per call, 0.86-0.96x at 0.14-0.15 ms, 0.92x
#: at 0.22 ms, 0.74x at 0.29 ms; 0.70x on the demo's 0.31 ms calls (tools/bench_sampling.py).
PROCESSES_MIN_CALL_MS = 0.12


def auto_sampler(n_params: int) -> str:
    """``"nuts"`` for more than :data:`DYNESTY_MAX_PARAMS` parameters, else ``"dynesty"``."""
    return "nuts" if n_params > DYNESTY_MAX_PARAMS else "dynesty"


def weighted_quantiles(x: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """Quantiles ``q`` (in [0, 1]) of samples ``x`` (N,) with weights (N,): the smallest sample
    whose cumulative normalized weight reaches ``q`` (the inverse of the weighted empirical CDF)."""
    x = np.asarray(x, dtype=float)
    w = np.asarray(weights, dtype=float)
    order = np.argsort(x)
    x, w = x[order], w[order]
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, np.asarray(q, dtype=float) * (1 - 1e-12), side="left")
    return x[np.clip(idx, 0, len(x) - 1)]


@dataclass
class SampleResult:
    """What :func:`sample` returns.

    Attributes
    ----------
    samples : ndarray of shape (N, P)
        All dead (and final live) points, natural units.
    weights : ndarray of shape (N,)
        Posterior weights, summing to one.
    logl : ndarray of shape (N,)
        Log-likelihood of each sample.
    logz, logz_err : float
        ln evidence (with the priors' normalization) and its error estimate.
    names : list of str
    summary : dict
        ``name -> {"median", "p16", "p84", "mean", "std"}`` (position angles summarised in a
        window of width pi around their circular mean); for sources with conformal shear also
        ``"s{i}.q"`` and ``"s{i}.pa"``, derived from every sample's eta.
    settings : dict
        The run's settings (sampler, nlive, bound, dlogz, seed, ...), written to file headers.
    n_calls, n_iter : int
    time_s : float
    results : dynesty Results or dict
        dynesty's own object, for dynesty.plotting; for :func:`pho.sample_nuts` a dict of per-chain
        arrays (``chains`` of shape (C, D, P), ``lnl``, ``tree_depth``, ``divergent``, ...).
    diagnostics : dict
        MCMC only (:func:`pho.sample_nuts`): ``name -> {"rhat", "ess_bulk", "ess_tail"}``.
    """

    samples: np.ndarray
    weights: np.ndarray
    logl: np.ndarray
    logz: float
    logz_err: float
    names: list
    summary: dict
    settings: dict = field(default_factory=dict)
    n_calls: int = 0
    n_iter: int = 0
    time_s: float = 0.0
    results: object = None
    diagnostics: dict = field(default_factory=dict)

    @property
    def n_effective(self) -> float:
        """Kish effective sample size ``1 / sum(w^2)``."""
        return float(1.0 / np.sum(self.weights**2))

    def equal_weight_samples(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Resample to equal weights (dynesty's systematic resampling), shape (N, P)."""
        from dynesty.utils import resample_equal

        return resample_equal(self.samples, self.weights, rstate=rng or np.random.default_rng())

    def __str__(self) -> str:
        if self.diagnostics:
            ess = min(d["ess_bulk"] for d in self.diagnostics.values())
            rhat = max(d["rhat"] for d in self.diagnostics.values())
            lines = [
                f"NUTS: {len(self.weights)} draws, {self.n_calls} gradient calls, {self.time_s:.1f} s, "
                f"min ESS (bulk) {ess:.0f}, max R-hat {rhat:.3f}, {self.settings.get('divergences', 0)} divergences"
            ]
        else:
            processes = self.settings.get("processes", 1)
            lines = [
                f"ln Z = {self.logz:.3f} +/- {self.logz_err:.3f}  ({self.n_iter} iterations, {self.n_calls} calls, "
                f"{self.time_s:.1f} s, {processes} process{'es' if processes > 1 else ''}, "
                f"n_eff = {self.n_effective:.0f})"
            ]
        for n in self.names:
            s = self.summary[n]
            lines.append(f"  {n:<22s} {s['median']:>16.8g} +{s['p84'] - s['median']:.3g} -{s['median'] - s['p16']:.3g}")
        for n in (k for k in self.summary if k not in self.names):
            s = self.summary[n]
            label = n + " (derived)"
            lines.append(f"  {label:<22s} {s['median']:>16.8g} +{s['p84'] - s['median']:.3g} -{s['median'] - s['p16']:.3g}")
        return "\n".join(lines)


class _LogLike:
    """Log-likelihood for dynesty (non-finite values become a very low number)."""

    def __init__(self, likelihood):
        self.likelihood = likelihood

    def __call__(self, theta):
        value = float(self.likelihood.lnlike(np.asarray(theta, dtype=float)))
        return value if math.isfinite(value) else -1e300


class _PriorTransform:
    def __init__(self, priors):
        self.priors = priors

    def __call__(self, u):
        return self.priors.prior_transform(u)


class _UnitCubeGradient:
    """d lnL / d u = d lnL / d theta * d theta / d u (diagonal prior transforms)."""

    def __init__(self, likelihood, priors):
        self.likelihood, self.priors = likelihood, priors

    def __call__(self, u):
        theta = self.priors.prior_transform(u)
        return np.asarray(self.likelihood.lnlike_and_grad(theta)[1]) * self.priors.dtheta_du(theta)


# The functions of the running sampler, per process: the main process sets them for the duration of
# a run, worker processes once at start-up (``_install``). dynesty holds ``_cached_loglike`` and
# ``_cached_prior_transform``, which pickle by name, never the likelihood and its data.
_CACHE: dict = {}


def _install(loglike, prior_transform, worker: bool = False) -> None:
    if worker:  # Ctrl-C is the main process's to handle (it stops the run and saves a checkpoint)
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CACHE["loglike"] = loglike
    _CACHE["prior_transform"] = prior_transform


def _cached_loglike(theta):
    return _CACHE["loglike"](theta)


def _cached_prior_transform(u):
    return _CACHE["prior_transform"](u)


class _DynestyProgress:
    """dynesty's ``print_func``: its status through :class:`pho._progress.Progress` (a live line on a
    terminal, a line every few seconds in a log, instead of one fragment per iteration)."""

    def __init__(self, progress):
        self.progress = progress

    def __call__(self, itresult, niter, ncall, add_live_it=None, dlogz=None, stop_val=None, nbatch=None, **_):
        delta = float(getattr(itresult, "delta_logz", math.nan))
        logz = float(getattr(itresult, "logz", math.nan))
        text = f"iter {niter}, {ncall} calls, ln Z {logz:.2f}, dlogz {delta:.3g}"
        if dlogz is not None:
            text += f" > {dlogz:.3g}"
        if nbatch is not None:
            text += f", batch {nbatch}"
        if add_live_it is not None:
            text += f", adding live point {add_live_it}"
        self.progress.update(text)


class _SpawnPool:
    """``processes`` spawned workers, each with its own single-threaded copy of the likelihood."""

    def __init__(self, processes: int, loglike, prior_transform):
        import multiprocessing

        self.size = int(processes)
        ctx = multiprocessing.get_context("spawn")
        self._pool = ctx.Pool(self.size, initializer=_install, initargs=(loglike, prior_transform, True))

    def map(self, function, items):
        return self._pool.map(function, items, chunksize=1)

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def _single_threaded(likelihood):
    """The likelihood a worker process uses: one kernel thread (the processes share the cores)."""
    with_workers = getattr(likelihood, "with_workers", None)
    return with_workers(1) if with_workers is not None else likelihood


def resolve_processes(processes: int | None) -> int:
    """``processes`` checked, or, if None, the cores this process may use (at least 1).

    Raises
    ------
    PhoValueError
        If ``processes`` is not a positive integer.
    """
    if processes is None:
        from ._backends import available_cores

        return available_cores()
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or processes < 1:
        raise PhoValueError(f"processes={processes!r} must be a positive integer (1: no worker processes) or None for all cores")
    return int(processes)


def _call_ms(loglike, theta, max_calls: int = 10, budget_s: float = 2e-3) -> float:
    """Milliseconds per ``loglike(theta)`` call: the fastest of up to ``max_calls`` timed calls, which
    stop once they have taken ``budget_s`` seconds (so a slow likelihood is timed once), after one
    untimed call that builds whatever the likelihood builds on first use."""
    loglike(theta)
    best, spent = math.inf, 0.0
    for _ in range(max_calls):
        t0 = time.perf_counter()
        loglike(theta)
        elapsed = time.perf_counter() - t0
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget_s:
            break
    return 1e3 * best


def auto_processes(likelihood, priors: Priors) -> tuple[int, float]:
    """The worker processes :func:`sample` uses for ``processes=None``, and why.

    One likelihood call on one thread is timed at the centre of the prior (``u = 0.5``); worker
    processes, one per available core, are used if it takes at least
    :data:`PROCESSES_MIN_CALL_MS`, else none.

    Returns
    -------
    processes : int
        The available cores, or 1.
    call_ms : float
        The timed call, milliseconds (NaN where there is a single core and nothing was timed).
    """
    from ._backends import available_cores

    cores = available_cores()
    if cores == 1:
        return 1, math.nan
    theta = priors.prior_transform(np.full(len(priors.names), 0.5))
    call_ms = _call_ms(_LogLike(_single_threaded(likelihood)), theta)
    return (cores if call_ms >= PROCESSES_MIN_CALL_MS else 1), call_ms


def _summarize(samples, weights, names, priors):
    periodic = set(priors.periodic)
    summary = {}
    for i, name in enumerate(names):
        x = samples[:, i]
        if i in periodic:
            width = priors.upper[i] - priors.lower[i]
            ang = 2 * np.pi * x / width
            centre = width / (2 * np.pi) * math.atan2(np.sum(weights * np.sin(ang)), np.sum(weights * np.cos(ang)))
            lo = priors.lower[i]
            centre = lo + (centre - lo) % width  # the branch inside the prior window
            x = centre + (x - centre + width / 2) % width - width / 2
        p16, p50, p84 = weighted_quantiles(x, weights, [0.16, 0.5, 0.84])
        mean = float(np.sum(weights * x))
        std = float(np.sqrt(np.sum(weights * (x - mean) ** 2)))
        summary[name] = {"median": float(p50), "p16": float(p16), "p84": float(p84), "mean": mean, "std": std}
    summary.update(_derived_summary(samples, weights, names))
    return summary


def _derived_summary(samples, weights, names) -> dict:
    """Summaries of q and pa (radians) of the sources with conformal shear (from every sample's
    eta); pa in a window of width pi around its circular mean."""
    from .transforms import eta_pairs, q_pa_from_eta

    out = {}
    for i, j, prefix in eta_pairs(names):
        q, pa = q_pa_from_eta(samples[:, i], samples[:, j])
        centre = 0.5 * math.atan2(np.sum(weights * np.sin(2 * pa)), np.sum(weights * np.cos(2 * pa)))
        pa = centre + (pa - centre + math.pi / 2) % math.pi - math.pi / 2
        for key, x in ((f"{prefix}.q", q), (f"{prefix}.pa", pa)):
            p16, p50, p84 = weighted_quantiles(x, weights, [0.16, 0.5, 0.84])
            mean = float(np.sum(weights * x))
            std = float(np.sqrt(np.sum(weights * (x - mean) ** 2)))
            out[key] = {"median": float(p50), "p16": float(p16), "p84": float(p84), "mean": mean, "std": std}
    return out


def sample(
    likelihood,
    priors: Priors | None = None,
    *,
    nlive: int = 200,
    dynamic: bool = False,
    sample: str = "rwalk",
    bound: str = "multi",
    walks: int | None = None,
    dlogz: float | None = None,
    maxiter: int | None = None,
    maxcall: int | None = None,
    rng: np.random.Generator | None = None,
    checkpoint_file: str | os.PathLike | None = None,
    checkpoint_every_s: float = 60.0,
    resume: bool = False,
    progress: bool = True,
    processes: int | None = 1,
) -> SampleResult:
    """Sample the posterior with dynesty nested sampling.

    Parameters
    ----------
    likelihood : pho.Likelihood
        Anything with ``lnlike(theta)``, ``lnlike_and_grad(theta)`` and ``parameter_names``.
    priors : Priors, optional
        Default :func:`pho.priors.default_priors` around the scene's current vector (run
        :func:`pho.optimize` first and pass its scene for a good centre).
    nlive : int
        Live points (static), or initial live points (dynamic). More: more accurate evidence
        and tails, proportionally slower. Default 200.
    dynamic : bool
        Use ``dynesty.DynamicNestedSampler`` (posterior-weighted batches) instead of the static one.
    sample : str
        dynesty's sampling method: ``"rwalk"`` (default: robust on these posteriors; dynesty's
        ``"auto"`` picks uniform sampling below 10 dimensions, which stalled at 1-2% efficiency
        on a 7-parameter galaxy), ``"auto"``, ``"unif"``, ``"slice"``, ``"rslice"`` (and
        ``"hslice"`` with dynesty < 3, which receives the analytic gradient).
    bound : str
        dynesty's bounding: ``"multi"`` (default), ``"single"``, ``"balls"``, ``"cubes"``, ``"none"``.
    walks : int, optional
        Steps of each random walk (``sample="rwalk"``); dynesty's default if None. Fewer steps
        cost fewer calls but leave new points more correlated with the live point they started from.
    dlogz : float, optional
        Stopping tolerance on the remaining evidence (static); dynesty's default if None.
    maxiter, maxcall : int, optional
        Hard limits on iterations and likelihood calls.
    rng : numpy.random.Generator, optional
        Random state; default a fresh unseeded generator.
    checkpoint_file : path, optional
        Where to pickle the sampler's state periodically and at the end.
    checkpoint_every_s : float
        Seconds between checkpoints.
    resume : bool
        Restore the sampler from ``checkpoint_file`` (which must exist) and continue it.
    progress : bool
        Show the progress (iteration, calls, ln Z, remaining dlogz) on stderr: a live line on a
        terminal, one line every 10 s when stderr is redirected to a file (``pho._progress``).
    processes : int or None
        Worker processes evaluating the likelihood in parallel, each with one kernel thread
        (default 1: none, the likelihood's own threads only). None: one per available core if a
        likelihood call takes at least :data:`PROCESSES_MIN_CALL_MS` on one thread, else none
        (:func:`auto_processes`; the choice is logged and kept in ``settings["processes"]``). On
        the demo (0.31 ms per call), 2 processes on 2 cores sample 1.43x faster than 1 process
        (``python tools/bench_sampling.py --maxcall 30000``); on one galaxy in two 32 x 32
        exposures (0.08 ms) they are slower (``python tools/bench_processes.py``). The
        likelihood must be picklable, and a script calling this needs an
        ``if __name__ == "__main__":`` guard (workers are spawned).

    Returns
    -------
    SampleResult

    Raises
    ------
    PhoValueError
        Bad settings (``resume`` without an existing checkpoint, nlive too small, unknown sampler);
        ``resume`` of a checkpoint written for another problem (the message names what differs).
    KeyboardInterrupt
        Ctrl-C; a static run first saves a checkpoint (named by the exception's ``pho_checkpoint``).

    Examples
    --------
    >>> best = pho.optimize(likelihood)                          # doctest: +SKIP
    >>> post = pho.sample(likelihood, nlive=200, rng=np.random.default_rng(1))  # doctest: +SKIP
    >>> print(post)                                              # doctest: +SKIP
    """
    import dynesty

    names = list(likelihood.parameter_names)
    ndim = len(names)
    if priors is None:
        priors = default_priors(likelihood)
    if list(priors.names) != names:
        raise PhoValueError("priors.names differ from likelihood.parameter_names; build the priors from this likelihood")
    if nlive < ndim + 2:
        raise PhoValueError(f"nlive={nlive} is too small for {ndim} parameters; use at least {ndim + 2} (ideally 25 * ndim)")
    if processes is None:
        processes, call_ms = auto_processes(likelihood, priors)
        log.info("processes=None: %d sampling process(es); one likelihood call takes %.3f ms on one thread "
                 "(worker processes pay from %.2f ms)", processes, call_ms, PROCESSES_MIN_CALL_MS)
    processes = resolve_processes(processes)
    rng = np.random.default_rng() if rng is None else rng
    checkpoint_file = None if checkpoint_file is None else str(Path(checkpoint_file))
    if resume and (checkpoint_file is None or not Path(checkpoint_file).exists()):
        raise PhoValueError(f"resume=True but the checkpoint file {checkpoint_file!r} does not exist; run without resume")

    settings = {
        "sampler": "dynamic" if dynamic else "static",
        "nlive": int(nlive),
        "sample": sample,
        "bound": bound,
        "walks": walks,
        "dlogz": dlogz,
        "maxiter": maxiter,
        "maxcall": maxcall,
        "dynesty": dynesty.__version__,
        "resumed": bool(resume),
        "processes": processes,
    }
    from ._progress import Progress
    from .checkpoint import fingerprint_differences, problem_fingerprint, run_saving_on_interrupt

    display = Progress("dynesty", enabled=progress)
    fingerprint = problem_fingerprint(likelihood, priors, {
        "sampler": settings["sampler"], "nlive": settings["nlive"], "sample": sample, "bound": bound,
        "walks": walks, "ndim": ndim, "periodic": list(priors.periodic)})
    run_kwargs = dict(print_progress=progress, checkpoint_every=checkpoint_every_s)
    if progress:
        run_kwargs["print_func"] = _DynestyProgress(display)
    if checkpoint_file is not None:
        run_kwargs["checkpoint_file"] = checkpoint_file
    if dynamic:
        run_kwargs.update(maxiter=maxiter, maxcall=maxcall)
        if dlogz is not None:
            run_kwargs["dlogz_init"] = dlogz
    else:
        run_kwargs.update(maxiter=maxiter, maxcall=maxcall, dlogz=dlogz)

    t0 = time.perf_counter()
    loglike, prior_transform = _LogLike(likelihood), _PriorTransform(priors)
    previous = dict(_CACHE)
    _install(loglike, prior_transform)
    pool = None
    try:
        if processes > 1:
            pool = _SpawnPool(processes, _LogLike(_single_threaded(likelihood)), prior_transform)
        cls = dynesty.DynamicNestedSampler if dynamic else dynesty.NestedSampler
        if resume:
            sampler = cls.restore(checkpoint_file, pool=pool)
            differences = fingerprint_differences(getattr(sampler, "pho_fingerprint", None), fingerprint)
            if differences:
                raise PhoValueError(
                    f"the checkpoint {checkpoint_file} belongs to another problem: {'; '.join(differences)}. Resuming "
                    "it would continue the old run with the new likelihood; start afresh without resume (delete the "
                    "checkpoint, or choose another checkpoint file / --outdir)"
                )
            log.info("resumed sampler from %s at iteration %d", checkpoint_file, getattr(sampler, "it", -1))
            run_saving_on_interrupt(sampler, checkpoint_file, not dynamic, resume=True, **run_kwargs)
        else:
            kwargs = dict(
                nlive=nlive,
                bound=bound,
                sample=sample,
                periodic=priors.periodic or None,
                rstate=rng,
            )
            if pool is not None:
                kwargs.update(pool=pool, queue_size=pool.size)
            if walks is not None:
                kwargs["walks"] = int(walks)
            if sample == "hslice":
                if "gradient" not in inspect.signature(dynesty.NestedSampler).parameters:
                    raise PhoValueError(
                        f"sample='hslice' needs dynesty < 3 (installed: {dynesty.__version__}); use 'rslice' or 'rwalk'"
                    )
                kwargs.update(gradient=_UnitCubeGradient(likelihood, priors), compute_jac=False)
            sampler = cls(_cached_loglike, _cached_prior_transform, ndim, **kwargs)
            sampler.pho_fingerprint = fingerprint  # pickled with the sampler into every checkpoint
            run_saving_on_interrupt(sampler, checkpoint_file, not dynamic, **run_kwargs)
    finally:
        display.close()
        if pool is not None:
            pool.close()
        _CACHE.clear()
        _CACHE.update(previous)
    elapsed = time.perf_counter() - t0

    res = sampler.results
    samples = np.asarray(res.samples, dtype=float)
    logwt = np.asarray(res.logwt, dtype=float)
    weights = np.exp(logwt - logwt.max())
    weights /= weights.sum()
    summary = _summarize(samples, weights, names, priors)
    return SampleResult(
        samples=samples,
        weights=weights,
        logl=np.asarray(res.logl, dtype=float),
        logz=float(res.logz[-1]),
        logz_err=float(res.logzerr[-1]),
        names=names,
        summary=summary,
        settings=settings,
        n_calls=int(np.sum(res.ncall)),
        n_iter=int(res.niter),
        time_s=elapsed,
        results=res,
    )
