"""The NUTS kernel behind :func:`pho.sample_nuts`: phase-space points, the metric, one transition,
and the warm-up (step-size dual averaging, windowed metric estimation) of one chain.

Everything here works on a *target*: a callable ``target(u) -> (ln p, d ln p / d u, lnL)`` with an
``n_calls`` counter and ``periodic``/``width`` arrays (pho.nuts._Target). Algorithms: Hoffman & Gelman
(2014, JMLR 15, 1593) for the doubling, dual averaging and step-size heuristic; Betancourt (2017,
arXiv:1701.02434) for multinomial sampling and the generalized no-U-turn criterion; Stan's manual for
the warm-up windows and the regularization of the metric estimate.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .errors import PhoValueError

#: Energy error (in units of ln density) above which a trajectory counts as divergent.
DIVERGENCE_ENERGY = 1000.0

# Dual averaging constants (Hoffman & Gelman 2014, section 3.2).
_DA_GAMMA, _DA_T0, _DA_KAPPA = 0.05, 10.0, 0.75

# --------------------------------------------------------------------------------------------------
# Metric (mass matrix)
# --------------------------------------------------------------------------------------------------


class _Metric:
    """Gaussian kinetic energy ``K(p) = p . Minv p / 2`` with a diagonal or dense inverse mass ``Minv``."""

    def __init__(self, minv: np.ndarray):
        self.minv = np.array(minv, dtype=float)
        self.dense = self.minv.ndim == 2
        if self.dense:
            self.chol = np.linalg.cholesky(self.minv)  # Minv = L L^T
        else:
            self.sqrt_minv = np.sqrt(self.minv)

    def sample_momentum(self, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal(self.minv.shape[0])
        if self.dense:
            from scipy.linalg import solve_triangular

            return solve_triangular(self.chol.T, z, lower=False)  # cov L^-T L^-1 = Minv^-1
        return z / self.sqrt_minv

    def sharp(self, p: np.ndarray) -> np.ndarray:
        return self.minv @ p if self.dense else self.minv * p

    def kinetic(self, p: np.ndarray) -> float:
        return 0.5 * float(p @ self.sharp(p))


# --------------------------------------------------------------------------------------------------
# One NUTS transition
# --------------------------------------------------------------------------------------------------


class _Point:
    """A phase-space point: position, momentum, ln density, its gradient, lnL, Minv p."""

    __slots__ = ("u", "p", "logp", "grad", "lnl", "sharp")

    def __init__(self, u, p, logp, grad, lnl, sharp):
        self.u, self.p, self.logp, self.grad, self.lnl, self.sharp = u, p, logp, grad, lnl, sharp


class _Tree:
    """A subtree: its two end points (``inner`` next to the existing trajectory, ``outer`` to extend
    from), the point drawn from it, ln of its total weight, the sum of its momenta, bookkeeping."""

    __slots__ = ("inner", "outer", "pick", "log_w", "rho", "n", "sum_accept", "diverging", "turning")

    def __init__(self, inner, outer, pick, log_w, rho, n, sum_accept, diverging=False, turning=False):
        self.inner, self.outer, self.pick, self.log_w, self.rho = inner, outer, pick, log_w, rho
        self.n, self.sum_accept, self.diverging, self.turning = n, sum_accept, diverging, turning


def _logaddexp(a: float, b: float) -> float:
    """ln(e^a + e^b) of two floats (either may be -inf)."""
    hi, lo = (a, b) if a >= b else (b, a)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _no_u_turn(sharp_a, sharp_b, rho) -> bool:
    """Betancourt's generalized criterion: the trajectory still expands at both ends."""
    return float(sharp_a @ rho) > 0.0 and float(sharp_b @ rho) > 0.0


class _Integrator:
    def __init__(self, target, metric: _Metric, step: float, h0: float, rng: np.random.Generator):
        self.target, self.metric, self.step, self.h0, self.rng = target, metric, step, h0, rng

    def leapfrog(self, point: _Point, direction: int) -> _Point:
        eps = direction * self.step
        p = point.p + 0.5 * eps * point.grad
        u = point.u + eps * self.metric.sharp(p)
        logp, grad, lnl = self.target(u)
        p = p + 0.5 * eps * grad
        return _Point(u, p, logp, grad, lnl, self.metric.sharp(p))

    def build(self, edge: _Point, direction: int, depth: int) -> _Tree:
        """The subtree of ``2**depth`` leapfrog steps from ``edge`` in ``direction``."""
        if depth == 0:
            q = self.leapfrog(edge, direction)
            h = -q.logp + 0.5 * float(q.p @ q.sharp) if math.isfinite(q.logp) else math.inf
            delta = h - self.h0 if math.isfinite(h) else math.inf
            accept = math.exp(min(0.0, -delta)) if math.isfinite(delta) else 0.0
            return _Tree(q, q, q, -delta, q.p, 1, accept, diverging=not delta <= DIVERGENCE_ENERGY)
        first = self.build(edge, direction, depth - 1)
        if first.diverging or first.turning:
            return first
        second = self.build(first.outer, direction, depth - 1)
        n, sum_accept = first.n + second.n, first.sum_accept + second.sum_accept
        if second.diverging or second.turning:
            return _Tree(first.inner, second.outer, first.pick, first.log_w, first.rho, n, sum_accept,
                         second.diverging, second.turning)
        log_w = _logaddexp(first.log_w, second.log_w)
        # Inside a subtree: uniform (non-biased) progressive sampling by weight.
        pick = second.pick if math.log(self.rng.random()) < second.log_w - log_w else first.pick
        rho = first.rho + second.rho
        turning = not (
            _no_u_turn(first.inner.sharp, second.outer.sharp, rho)
            and _no_u_turn(first.inner.sharp, second.inner.sharp, first.rho + second.inner.p)
            and _no_u_turn(first.outer.sharp, second.outer.sharp, second.rho + first.outer.p)
        )
        return _Tree(first.inner, second.outer, pick, log_w, rho, n, sum_accept, False, turning)


def _transition(target, metric: _Metric, step: float, start: _Point, rng: np.random.Generator, max_depth: int):
    """One NUTS transition from ``start``; returns the new point and the transition's statistics."""
    p0 = metric.sample_momentum(rng)
    start = _Point(start.u, p0, start.logp, start.grad, start.lnl, metric.sharp(p0))
    h0 = -start.logp + metric.kinetic(p0)
    integ = _Integrator(target, metric, step, h0, rng)
    left = right = pick = start
    rho = p0.copy()
    log_w = 0.0
    depth, n, sum_accept, diverging = 0, 0, 0.0, False
    while depth < max_depth:
        direction = 1 if rng.random() < 0.5 else -1
        near, far = (right, left) if direction > 0 else (left, right)
        tree = integ.build(near, direction, depth)
        n += tree.n
        sum_accept += tree.sum_accept
        depth += 1
        if tree.diverging:
            diverging = True
            break
        if tree.turning:
            break
        # Across the doublings: biased progressive sampling (favours the new half).
        if math.log(rng.random()) < tree.log_w - log_w:
            pick = tree.pick
        log_w = _logaddexp(log_w, tree.log_w)
        total = rho + tree.rho
        turning = not (
            _no_u_turn(far.sharp, tree.outer.sharp, total)
            and _no_u_turn(far.sharp, tree.inner.sharp, rho + tree.inner.p)
            and _no_u_turn(near.sharp, tree.outer.sharp, tree.rho + near.p)
        )
        rho = total
        if direction > 0:
            right = tree.outer
        else:
            left = tree.outer
        if turning:
            break
    stats = {"depth": depth, "n_leapfrog": n, "accept": sum_accept / max(n, 1), "divergent": diverging}
    return pick, stats


# --------------------------------------------------------------------------------------------------
# Warm-up schedule and one chain
# --------------------------------------------------------------------------------------------------


def _windows(tune: int) -> tuple[int, list[int]]:
    """Start of metric adaptation and the ends of its windows (Stan's schedule, scaled if tune < 150).

    Below 50 warm-up iterations only the step size adapts: a metric estimated from a few draws, and a
    step size re-tuned for it in the last few iterations, did worse than no metric update (with
    tune = 20 the final step was 2.5 and every draw diverged). The step size keeps at least 10
    iterations after the last metric update.
    """
    if tune < 50:
        return tune, []
    init, term, base = 75, 50, 25
    if init + term + base > tune:
        init, term = int(0.15 * tune), max(int(0.1 * tune), 10)
        base = tune - init - term
    ends, start, size = [], init, base
    while True:
        end = start + size
        if end + 2 * size > tune - term:
            ends.append(tune - term)
            return init, ends
        ends.append(end)
        start, size = end, 2 * size


def _curvature_minv(target, u: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Inverse of minus the diagonal second derivative of ln p at ``u`` (central differences of the
    analytic gradient; 2 P calls), clipped to [1e-10, 4]: a first guess of the posterior variances."""
    h = 1e-4
    out = np.ones(len(u))
    for i in range(len(u)):
        up, down = u.copy(), u.copy()
        up[i] += h
        down[i] -= h
        gu, gd = target(up)[1], target(down)[1]
        curv = -(gu[i] - gd[i]) / (2 * h)
        out[i] = 1.0 / curv if np.isfinite(curv) and curv > 0 else 1.0
    return np.clip(out, 1e-10, 4.0)


def _initial_step(target, metric: _Metric, point: _Point, rng) -> float:
    """Hoffman & Gelman's heuristic: halve or double the step until one leapfrog step's acceptance
    crosses 1/2."""
    step = 1.0
    p0 = metric.sample_momentum(rng)
    start = _Point(point.u, p0, point.logp, point.grad, point.lnl, metric.sharp(p0))
    h0 = -point.logp + metric.kinetic(p0)

    def log_accept(eps):
        q = _Integrator(target, metric, eps, h0, rng).leapfrog(start, 1)
        h = -q.logp + metric.kinetic(q.p)
        return h0 - h if math.isfinite(h) else -math.inf

    direction = 1 if log_accept(step) > math.log(0.5) else -1
    for _ in range(60):
        new = step * (2.0 if direction > 0 else 0.5)
        if (log_accept(new) > math.log(0.5)) != (direction > 0):
            return new if direction < 0 else step
        step = new
    return step


def _init_chain(target, u0: np.ndarray, seed_seq: np.random.SeedSequence, settings: dict,
                cov_u: np.ndarray | None = None) -> dict:
    """The state of a new chain: a jittered start, a first metric and step size.

    ``cov_u`` (P, P), a covariance of ``u`` (the Fisher matrix's inverse mapped into the sampler's
    coordinates), is the first inverse mass matrix if given (its diagonal for ``metric="diag"``);
    otherwise the inverse curvature along each axis at ``u0`` (2 P gradient calls) is.
    """
    rng = np.random.default_rng(seed_seq)
    logp, grad, lnl = target(u0, strict=True)
    if not math.isfinite(logp):
        raise PhoValueError("the log posterior is not finite at the starting point; check the data and the starting values")
    if cov_u is None:
        minv0 = _curvature_minv(target, u0, grad)
        chol0 = np.diag(np.sqrt(minv0))
    else:
        cov_u = np.asarray(cov_u, dtype=float)
        minv0 = np.diag(cov_u).copy()
        chol0 = np.linalg.cholesky(cov_u) if settings["metric"] == "dense" else np.diag(np.sqrt(minv0))
    for attempt in range(50):
        scale = settings["jitter"] * 0.5**attempt
        u = u0 + scale * chol0 @ rng.standard_normal(len(u0))
        logp, grad, lnl = target(u)
        if math.isfinite(logp):
            break
    else:
        u, (logp, grad, lnl) = u0.copy(), target(u0)
    if settings["metric"] == "dense":
        minv = np.diag(minv0) if cov_u is None else cov_u.copy()
    else:
        minv = minv0
    metric = _Metric(minv)
    point = _Point(u, None, logp, grad, lnl, None)
    step = _initial_step(target, metric, point, rng)
    n = len(u0)
    return {
        "iteration": 0,
        "u": u, "logp": logp, "grad": grad, "lnl": lnl,
        "rng": rng.bit_generator.state,
        "minv": minv,
        "step": step,
        "da": {"mu": math.log(10 * step), "log_step_bar": 0.0, "h_bar": 0.0, "m": 0},
        "welford": {"n": 0, "mean": np.zeros(n), "m2": np.zeros((n, n)) if settings["metric"] == "dense" else np.zeros(n),
                    "ref": None},
        "n_calls": 0,
        "divergent_warmup": 0,
    }


def _welford_add(w: dict, u: np.ndarray, periodic: np.ndarray, width: np.ndarray) -> None:
    x = np.array(u, dtype=float)
    if periodic.any():
        if w["ref"] is None:
            w["ref"] = x.copy()
        ref = w["ref"]
        x[periodic] = ref[periodic] + np.mod(x[periodic] - ref[periodic] + width[periodic] / 2, width[periodic]) - width[periodic] / 2
    w["n"] += 1
    delta = x - w["mean"]
    w["mean"] += delta / w["n"]
    if w["m2"].ndim == 2:
        w["m2"] += np.outer(delta, x - w["mean"])
    else:
        w["m2"] += delta * (x - w["mean"])


def _welford_metric(w: dict, previous: np.ndarray | None = None) -> np.ndarray:
    """The window's (co)variance estimate, regularized.

    Without ``previous``: Stan's rule, the sample (co)variance shrunk towards 1e-3 with weight
    5 / (n + 5). With ``previous`` (the metric in use): shrunk towards it with weight k / (n + k),
    k = max(5, P) for a dense metric (a P x P covariance from n < P draws is singular; the previous
    metric fills the directions the window did not explore) and 5 for a diagonal one.
    """
    n = w["n"]
    cov = w["m2"] / (n - 1)
    if previous is not None:
        k = float(max(5, len(cov))) if cov.ndim == 2 else 5.0
        return (n * cov + k * previous) / (n + k)
    reg = 1e-3 * 5.0 / (n + 5.0)
    if cov.ndim == 2:
        return (n / (n + 5.0)) * cov + reg * np.eye(len(cov))
    return (n / (n + 5.0)) * cov + reg


def _run_slice(target, state: dict, settings: dict, max_seconds: float):
    """Advance one chain by whole iterations until ``max_seconds`` have passed (at least one iteration)
    or the chain is done. Returns the new state and the records of the post-warm-up draws."""
    tune, total = settings["tune"], settings["tune"] + settings["draws"]
    init, ends = _windows(tune)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    metric = _Metric(state["minv"])
    point = _Point(state["u"], None, state["logp"], state["grad"], state["lnl"], None)
    da = state["da"]
    step = state["step"]
    delta = settings["target_accept"]
    rec = {"theta": [], "lnl": [], "depth": [], "n_leapfrog": [], "accept": [], "divergent": []}
    calls0 = target.n_calls
    t0 = time.perf_counter()
    i = state["iteration"]
    while i < total:
        point, st = _transition(target, metric, step, point, rng, settings["max_tree_depth"])
        if i < tune:
            # dual averaging of the step size
            da["m"] += 1
            m = da["m"]
            eta = 1.0 / (m + _DA_T0)
            da["h_bar"] = (1 - eta) * da["h_bar"] + eta * (delta - st["accept"])
            log_step = da["mu"] - math.sqrt(m) / _DA_GAMMA * da["h_bar"]
            w = m ** (-_DA_KAPPA)
            da["log_step_bar"] = w * log_step + (1 - w) * da["log_step_bar"]
            step = math.exp(log_step)
            state["divergent_warmup"] += int(st["divergent"])
            if init <= i < (ends[-1] if ends else 0):
                _welford_add(state["welford"], point.u, target.periodic, target.width)
            if i + 1 in ends:
                previous = metric.minv if settings.get("shrink_to_previous") else None
                metric = _Metric(_welford_metric(state["welford"], previous))
                wf = state["welford"]
                wf.update(n=0, mean=np.zeros_like(wf["mean"]), m2=np.zeros_like(wf["m2"]), ref=None)
                step = _initial_step(target, metric, point, rng)
                da.update(mu=math.log(10 * step), log_step_bar=0.0, h_bar=0.0, m=0)
            if i + 1 == tune:
                step = math.exp(da["log_step_bar"]) if da["m"] > 0 else step
        else:
            theta, _ = target.theta_and_derivative(point.u)
            rec["theta"].append(theta)
            rec["lnl"].append(point.lnl)
            for k in ("depth", "n_leapfrog", "accept", "divergent"):
                rec[k].append(st[k])
        i += 1
        if time.perf_counter() - t0 >= max_seconds:
            break
    state.update(iteration=i, u=point.u, logp=point.logp, grad=point.grad, lnl=point.lnl, rng=rng.bit_generator.state,
                 minv=metric.minv, step=step)
    state["n_calls"] += target.n_calls - calls0
    return state, rec


# The target of the running sampler in each worker process (set once by the pool's initializer), so
# that slices ship only the chain's small state, never the likelihood and its data.
