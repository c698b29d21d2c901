"""Calibration of pho.sample_nuts: 68% and 95% interval coverage over simulated noise realizations.

One Sersic galaxy (flux 40, q 0.6, pa 0.7, n 1.5, rh 0.2") in one 16 x 16 exposure with Gaussian noise
(the 7-parameter problem of tests/test_nuts.py), all 7 parameters free with the default priors. For each
realization: optimize, sample with NUTS, and record whether the central 68% (16-84%) and 95% (2.5-97.5%)
intervals of each parameter hold the truth. A correct sampler gives k ~ Binomial(R, 0.68) and
Binomial(R, 0.95) hits per parameter; the script prints k, the fraction, and the central 95% range of k
that a correct sampler produces.

    python tools/coverage_nuts.py [--realizations 20] [--draws 300] [--tune 300]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pho  # noqa: E402
from pho.sample import weighted_quantiles  # noqa: E402


def main(argv=None) -> int:
    from scipy.stats import binom
    from test_nuts import _one_galaxy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--realizations", type=int, default=20)
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--tune", type=int, default=300)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--seed", type=int, default=100)
    args = p.parse_args(argv)
    hits68, hits95, rhats, divergences = {}, {}, [], 0
    t0 = time.perf_counter()
    for r in range(args.realizations):
        truth, like = _one_galaxy(np.random.default_rng(args.seed + r))
        best = pho.optimize(like)
        like.scene.set_vector(best.theta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pho.PhoConvergenceWarning)
            res = pho.sample_nuts(like, draws=args.draws, tune=args.tune, chains=args.chains, seed=r,
                                  processes=args.processes, progress=False)
        divergences += res.settings["divergences"]
        rhats.append(max(d["rhat"] for d in res.diagnostics.values()))
        for i, name in enumerate(like.parameter_names):
            t = truth.get_vector()[i]
            x = res.samples[:, i]
            if name.endswith(".pa"):  # compare on the branch of the posterior's circular mean
                centre = 0.5 * math.atan2(np.mean(np.sin(2 * x)), np.mean(np.cos(2 * x)))
                x = centre + (x - centre + math.pi / 2) % math.pi - math.pi / 2
                t = centre + (t - centre + math.pi / 2) % math.pi - math.pi / 2
            w = np.full(len(x), 1.0 / len(x))
            q = weighted_quantiles(x, w, [0.025, 0.16, 0.84, 0.975])
            hits68[name] = hits68.get(name, 0) + int(q[1] <= t <= q[2])
            hits95[name] = hits95.get(name, 0) + int(q[0] <= t <= q[3])
        print(f"realization {r + 1}/{args.realizations}: max R-hat {rhats[-1]:.3f}, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    n = args.realizations
    lo68, hi68 = binom.ppf(0.025, n, 0.68), binom.ppf(0.975, n, 0.68)
    lo95, hi95 = binom.ppf(0.025, n, 0.95), binom.ppf(0.975, n, 0.95)
    print(f"{n} realizations, NUTS {args.chains} chains x {args.draws} draws after {args.tune} warm-up; "
          f"{time.perf_counter() - t0:.0f} s; max R-hat over all runs {max(rhats):.3f}; {divergences} divergences")
    print(f"{'parameter':16s} {'68% hits':>9s} {'fraction':>8s} {'95% hits':>9s} {'fraction':>8s}")
    for name in hits68:
        print(f"{name:16s} {hits68[name]:9d} {hits68[name] / n:8.2f} {hits95[name]:9d} {hits95[name] / n:8.2f}")
    tot68, tot95 = sum(hits68.values()), sum(hits95.values())
    m = n * len(hits68)
    print(f"{'all':16s} {tot68:9d} {tot68 / m:8.3f} {tot95:9d} {tot95 / m:8.3f}")
    print(f"a correct sampler gives 68% hits in [{lo68:.0f}, {hi68:.0f}] and 95% hits in [{lo95:.0f}, {hi95:.0f}] "
          f"per parameter 95% of the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
