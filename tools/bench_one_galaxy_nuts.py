"""Wall time of pho.sample_nuts for 1,000 effective samples of one galaxy: the 7-parameter, S/N ~ 40 galaxy of
tests/test_nuts.py (one 16 x 16 exposure), from the optimum, 2 chains in 2 processes, dense metric. CPU time
includes the worker processes (RUSAGE_CHILDREN), so that the figure can be judged apart from the load of a
shared machine: on an idle 2-core machine the wall time is about half the CPU time.

    python tools/bench_one_galaxy_nuts.py [--draws 500] [--tune 500] [--init-cov {none,fisher}]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pho  # noqa: E402


def main(argv=None) -> int:
    from test_nuts import _one_galaxy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--init-cov", choices=["none", "fisher"], default="none")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    truth, like = _one_galaxy(np.random.default_rng(7))
    best = pho.optimize(like)
    def cpu():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    t, c = time.perf_counter(), cpu()
    res = pho.sample_nuts(like, draws=args.draws, tune=args.tune, chains=2, seed=args.seed, processes=args.processes,
                          progress=False, theta0=best.theta, init_cov=best.cov if args.init_cov == "fisher" else None)
    wall, cpu_s = time.perf_counter() - t, cpu() - c
    ess = min(d["ess_bulk"] for d in res.diagnostics.values())
    print(f"{wall:.1f} s wall, {res.n_calls} likelihood+gradient calls, worst bulk ESS {ess:.0f}, "
          f"max R-hat {max(d['rhat'] for d in res.diagnostics.values()):.3f}, {res.settings['divergences']} divergences; "
          f"{1000 * wall / ess:.1f} s wall, {1000 * cpu_s / ess:.1f} s CPU and {1000 * res.n_calls / ess:.0f} calls "
          f"per 1000 ESS ({cpu_s:.1f} s CPU in all; init_cov {args.init_cov}, tune {args.tune}, draws {args.draws})")
    like1 = like.with_workers(1)
    c = time.process_time()
    for _ in range(200):
        like1.lnlike_and_grad(best.theta)
    print(f"one likelihood+gradient call on one thread: {(time.process_time() - c) / 200 * 1e3:.3f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
