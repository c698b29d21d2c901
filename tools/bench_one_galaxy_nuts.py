"""Wall time of pho.sample_nuts for 1,000 effective samples of one galaxy: the 7-parameter, S/N ~ 40 galaxy of
tests/test_nuts.py (one 16 x 16 exposure), from the optimum, 2 chains in 2 processes, dense metric.

    python tools/bench_one_galaxy_nuts.py [--draws 500] [--tune 500]
"""

from __future__ import annotations

import argparse
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
    args = p.parse_args(argv)
    truth, like = _one_galaxy(np.random.default_rng(7))
    best = pho.optimize(like)
    t = time.perf_counter()
    res = pho.sample_nuts(like, draws=args.draws, tune=args.tune, chains=2, seed=1, processes=args.processes,
                          progress=False, theta0=best.theta)
    wall = time.perf_counter() - t
    ess = min(d["ess_bulk"] for d in res.diagnostics.values())
    print(f"{wall:.1f} s wall, {res.n_calls} likelihood+gradient calls, worst bulk ESS {ess:.0f}, "
          f"max R-hat {max(d['rhat'] for d in res.diagnostics.values()):.3f}, {res.settings['divergences']} divergences; "
          f"{1000 * wall / ess:.1f} s and {1000 * res.n_calls / ess:.0f} calls per 1000 ESS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
