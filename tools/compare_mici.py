"""Own NUTS (pho.sample_nuts) vs mici's DynamicMultinomialHMC on one target: the 7-parameter galaxy of
tests/test_nuts.py in pho's unconstrained coordinates, diagonal and dense metrics; prints wall time, gradient
calls, min bulk ESS and calls per 1000 ESS. mici is not a pho dependency: `pip install mici` to run this.

    python tools/compare_mici.py DRAWS TUNE
"""
import sys, time; sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'tests'))
import numpy as np, pho, mici
from test_nuts import _one_galaxy
from pho.priors import default_priors
from pho.nuts import _Target
from pho.diagnostics import summarize_chains
rng = np.random.default_rng(7)
truth, like = _one_galaxy(rng)
best = pho.optimize(like); like.scene.set_vector(best.theta)
like = like.with_workers(1)
pri = default_priors(like)
draws, tune = int(sys.argv[1]), int(sys.argv[2])
T = _Target(like, pri)
u0 = T.to_unconstrained(best.theta)
def nld(u): return -T(u)[0]
def gnld(u):
    lp, g, _ = T(u)
    return -g, -lp
system = mici.systems.EuclideanMetricSystem(nld, grad_neg_log_dens=gnld)
integ = mici.integrators.LeapfrogIntegrator(system)
res = {}
for metric in ["diag", "dense"]:
    sampler = mici.samplers.DynamicMultinomialHMC(system, integ, np.random.default_rng(1))
    ad = [mici.adapters.DualAveragingStepSizeAdapter(0.8),
          mici.adapters.OnlineVarianceMetricAdapter() if metric == "diag" else mici.adapters.OnlineCovarianceMetricAdapter()]
    T.n_calls = 0; t = time.perf_counter()
    inits = [u0 + 0.01 * np.random.default_rng(c).standard_normal(7) for c in range(2)]
    out = sampler.sample_chains(tune, draws, inits, adapters=ad, n_process=1, display_progress=False,
                                trace_funcs=[lambda state: {"u": state.pos}])
    wall = time.perf_counter() - t
    u = np.array(out.traces["u"])  # (C, D, P)
    th = np.array([[T.theta_and_derivative(x)[0] for x in c] for c in u])
    d = summarize_chains(th, like.parameter_names)
    ess = min(v["ess_bulk"] for v in d.values())
    print(f"mici {metric}: {wall:.1f} s, {T.n_calls} calls, min ESS {ess:.0f}, calls per 1000 ESS {1000*T.n_calls/ess:.0f}, max rhat {max(v['rhat'] for v in d.values()):.3f}")
    T.n_calls = 0; t = time.perf_counter()
    r = pho.sample_nuts(like, pri, draws=draws, tune=tune, chains=2, seed=1, processes=1, progress=False, metric=metric, theta0=best.theta)
    wall = time.perf_counter() - t
    ess = min(v["ess_bulk"] for v in r.diagnostics.values())
    print(f"pho  {metric}: {wall:.1f} s, {r.n_calls} calls, min ESS {ess:.0f}, calls per 1000 ESS {1000*r.n_calls/ess:.0f}, max rhat {max(v['rhat'] for v in r.diagnostics.values()):.3f}")
