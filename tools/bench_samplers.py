"""NUTS (pho.sample_nuts) against dynesty (pho.sample) on the same problems: posterior means and
standard deviations side by side, wall time, likelihood calls, and likelihood calls per 1,000 effective
samples of the worst parameter (NUTS: the smallest bulk ESS; dynesty: Kish's n_eff of its weights, the
same for every parameter).

Problems: ``galaxy``, the one Sersic galaxy of examples/nested_sampling.py (2 dithered 32 x 32 exposures,
7 parameters, nlive 150 as there); ``demo``, the 20-parameter scene of ``python -m pho.tools.fit --demo``
(nlive 45 as there). Both samplers start from the L-BFGS-B optimum with the priors re-centred on it, as the
main job does.

    python tools/bench_samplers.py [--problems galaxy demo] [--draws 1000] [--tune 1000] [--processes 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import pho  # noqa: E402
from pho.priors import default_priors  # noqa: E402


def galaxy_problem():
    from nested_sampling import simulate

    from pho.demo import DEC0_DEG, RA0_DEG

    truth, exposures = simulate(np.random.default_rng(42))
    start = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 3.0}, q=0.8, pa=0.3, n=2.5, rh=0.4)])
    return truth, pho.Likelihood(start, exposures, backend="cpu"), 150, {"rh": (0.02, 1.0)}


def demo_problem():
    from pho.demo import build_demo

    prob = build_demo()
    return prob.truth, pho.Likelihood(prob.initial, prob.exposures, backend="cpu"), 45, None


PROBLEMS = {"galaxy": galaxy_problem, "demo": demo_problem}


def run(name, draws, tune, chains, processes, seed):
    truth, like, nlive, overrides = PROBLEMS[name]()
    priors = default_priors(like, overrides=overrides)
    best = pho.optimize(like, priors)
    priors = default_priors(like, theta=best.theta, overrides=overrides)
    names = list(like.parameter_names)

    t = time.perf_counter()
    dyn = pho.sample(like, priors, nlive=nlive, rng=np.random.default_rng(seed), processes=processes, progress=False)
    t_dyn = time.perf_counter() - t
    t = time.perf_counter()
    nuts = pho.sample_nuts(like, priors, draws=draws, tune=tune, chains=chains, seed=seed, processes=processes,
                           progress=False, theta0=best.theta)
    t_nuts = time.perf_counter() - t

    print(f"\n## {name}: {len(names)} parameters")
    print(f"{'parameter':16s} {'dynesty mean':>14s} {'std':>10s} {'NUTS mean':>14s} {'std':>10s} "
          f"{'dmean/std':>9s} {'std ratio':>9s} {'R-hat':>6s} {'ESS bulk':>8s}")
    worst_shift, worst_ratio = 0.0, 1.0
    for n in names:
        a, b = dyn.summary[n], nuts.summary[n]
        shift = b["mean"] - a["mean"]
        if n.endswith(".pa"):
            shift = (shift + math.pi / 2) % math.pi - math.pi / 2
        shift /= a["std"]
        ratio = b["std"] / a["std"]
        worst_shift = max(worst_shift, abs(shift))
        worst_ratio = ratio if abs(ratio - 1) > abs(worst_ratio - 1) else worst_ratio
        d = nuts.diagnostics[n]
        print(f"{n:16s} {a['mean']:14.8g} {a['std']:10.3g} {b['mean']:14.8g} {b['std']:10.3g} "
              f"{shift:+9.2f} {ratio:9.3f} {d['rhat']:6.3f} {d['ess_bulk']:8.0f}")
    ess_nuts = min(d["ess_bulk"] for d in nuts.diagnostics.values())
    ess_dyn = dyn.n_effective
    print(f"largest |dmean|/std {worst_shift:.2f}; std ratio furthest from 1: {worst_ratio:.3f}")
    print(f"{'sampler':8s} {'wall s':>8s} {'lnL calls':>10s} {'worst ESS':>10s} {'calls/1000 ESS':>15s} {'wall s/1000 ESS':>16s}")
    for label, wall, calls, ess in (("dynesty", t_dyn, dyn.n_calls, ess_dyn), ("NUTS", t_nuts, nuts.n_calls, ess_nuts)):
        print(f"{label:8s} {wall:8.1f} {calls:10d} {ess:10.0f} {1000 * calls / ess:15.0f} {1000 * wall / ess:16.1f}")
    print(f"NUTS: {nuts.settings['divergences']} divergences, mean tree depth {nuts.settings['mean_tree_depth']:.2f}, "
          f"max R-hat {max(d['rhat'] for d in nuts.diagnostics.values()):.3f}, step sizes {nuts.settings['step_size']}")
    print(f"dynesty: nlive {nlive}, ln Z {dyn.logz:.2f} +/- {dyn.logz_err:.2f}")
    sys.stdout.flush()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=["galaxy", "demo"])
    p.add_argument("--draws", type=int, default=1000, help="NUTS draws per chain (default %(default)s)")
    p.add_argument("--tune", type=int, default=1000, help="NUTS warm-up per chain (default %(default)s)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--processes", type=int, default=2, help="processes for both samplers (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for name in args.problems:
        run(name, args.draws, args.tune, args.chains, args.processes, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
