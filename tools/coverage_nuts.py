"""Calibration of pho.sample_nuts: 68% and 95% interval coverage over simulated noise realizations,
beside two controls on the same data sets.

One Sersic galaxy (flux 40, q 0.6, pa 0.7, n 1.5, rh 0.2") in one 16 x 16 exposure with Gaussian noise
(the 7-parameter problem of tests/test_nuts.py), all 7 parameters free with the default priors. For each
realization: optimize, then for every method asked for record whether the central 68% (16-84%) and 95%
(2.5-97.5%) intervals of each parameter hold the truth, and the pull (estimate - truth) / width:

- ``nuts``: pho.sample_nuts, the quantiles of its draws;
- ``dynesty``: pho.sample (nested sampling, nlive 150, rwalk), the weighted quantiles of its samples;
- ``fisher``: the optimum +- 1 (1.96) Fisher sigma (the Gaussian approximation at the best fit).

A correct method gives k ~ Binomial(R, 0.68) hits per parameter. The seven parameters of one realization
share its noise, so they are not independent trials: the error bar of the pooled fraction is computed
from the scatter of the per-realization fractions (a cluster standard error), and the binomial error of
R * 7 independent trials is printed beside it. The pulls' standard deviation (1 for a calibrated method)
is the more sensitive check.

    python tools/coverage_nuts.py [--realizations 20] [--draws 300] [--tune 300] [--methods nuts fisher]
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

QUANTILES = [0.025, 0.16, 0.5, 0.84, 0.975]


def _intervals(method, like, best, args, r):
    """(P, 5) quantiles of each parameter for one method (pa on the branch of its circular mean)."""
    if method == "fisher":
        z = np.array([-1.959964, -1.0, 0.0, 1.0, 1.959964])
        return best.theta[:, None] + best.sigma[:, None] * z[None, :], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pho.PhoConvergenceWarning)
        if method == "nuts":
            res = pho.sample_nuts(like, draws=args.draws, tune=args.tune, chains=args.chains, seed=r,
                                  processes=args.processes, progress=False, theta0=best.theta)
        else:
            from pho.priors import default_priors

            res = pho.sample(like, default_priors(like, theta=best.theta), nlive=args.nlive,
                             rng=np.random.default_rng(r), processes=args.processes, progress=False)
    out = np.empty((len(res.names), len(QUANTILES)))
    for i, name in enumerate(res.names):
        x = res.samples[:, i]
        if name.endswith(".pa"):
            centre = 0.5 * math.atan2(np.sum(res.weights * np.sin(2 * x)), np.sum(res.weights * np.cos(2 * x)))
            x = centre + (x - centre + math.pi / 2) % math.pi - math.pi / 2
        out[i] = weighted_quantiles(x, res.weights, QUANTILES)
    return out, res


def main(argv=None) -> int:
    from scipy.stats import binom
    from test_nuts import _one_galaxy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--realizations", type=int, default=20)
    p.add_argument("--methods", nargs="+", choices=["nuts", "dynesty", "fisher"], default=["nuts", "fisher"])
    p.add_argument("--draws", type=int, default=300, help="NUTS draws per chain (default %(default)s)")
    p.add_argument("--tune", type=int, default=300, help="NUTS warm-up per chain (default %(default)s)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--nlive", type=int, default=150, help="dynesty live points (default %(default)s)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--seed", type=int, default=100, help="noise of realization r: default_rng(seed + r)")
    p.add_argument("--save", help="write the per-realization quantiles to this .npz")
    args = p.parse_args(argv)
    R = args.realizations
    truths, names, stats = [], None, {m: {"q": [], "calls": 0, "cpu": 0.0, "rhat": []} for m in args.methods}
    t0, c0 = time.perf_counter(), time.process_time()
    for r in range(R):
        truth, like = _one_galaxy(np.random.default_rng(args.seed + r))
        best = pho.optimize(like)
        like.scene.set_vector(best.theta)
        names = list(like.parameter_names)
        t = truth.get_vector().copy()
        for method in args.methods:
            c = time.process_time()
            q, res = _intervals(method, like, best, args, r)
            st = stats[method]
            st["cpu"] += time.process_time() - c
            if res is not None:
                st["calls"] += res.n_calls
                if res.diagnostics:
                    st["rhat"].append(max(d["rhat"] for d in res.diagnostics.values()))
            st["q"].append(q)
        truths.append(t)
        print(f"realization {r + 1}/{R}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.save:  # after every realization, so that an interrupted run keeps what it measured
            _save(args.save, {"truth": np.array(truths), "names": np.array(names),
                              **{f"{m}_quantiles": np.array(stats[m]["q"]) for m in args.methods}})
    R = len(truths)
    truths = np.array(truths)  # (R, P)
    P = len(names)
    i_pa = [i for i, n in enumerate(names) if n.endswith(".pa")]
    lo68, hi68 = binom.ppf(0.025, R, 0.68), binom.ppf(0.975, R, 0.68)
    lo95, hi95 = binom.ppf(0.025, R, 0.95), binom.ppf(0.975, R, 0.95)
    print(f"{R} realizations (noise seeds {args.seed}..{args.seed + R - 1}); {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU of this process")
    arrays = {"truth": truths, "names": np.array(names)}
    for method in args.methods:
        st = stats[method]
        q = np.array(st["q"])  # (R, P, 5)
        t = truths.copy()
        for i in i_pa:  # the truth on the branch of the method's median
            t[:, i] = q[:, i, 2] + (t[:, i] - q[:, i, 2] + math.pi / 2) % math.pi - math.pi / 2
        in68 = (q[:, :, 1] <= t) & (t <= q[:, :, 3])
        in95 = (q[:, :, 0] <= t) & (t <= q[:, :, 4])
        pull = (q[:, :, 2] - t) / (0.5 * (q[:, :, 3] - q[:, :, 1]))
        arrays[f"{method}_quantiles"] = q
        extra = f", {st['calls']} likelihood calls, {st['cpu']:.0f} s CPU in this process" if st["calls"] else ""
        if st["rhat"]:
            extra += f", max R-hat {max(st['rhat']):.3f}"
        print(f"\n## {method}{extra}")
        print(f"{'parameter':16s} {'68% hits':>9s} {'fraction':>8s} {'95% hits':>9s} {'fraction':>8s} "
              f"{'mean pull':>9s} {'std pull':>8s}")
        for i, name in enumerate(names):
            print(f"{name:16s} {in68[:, i].sum():9d} {in68[:, i].mean():8.2f} {in95[:, i].sum():9d} "
                  f"{in95[:, i].mean():8.2f} {pull[:, i].mean():+9.2f} {pull[:, i].std(ddof=1):8.2f}")
        for label, hits, target in (("68%", in68, 0.68), ("95%", in95, 0.95)):
            frac = hits.mean()
            cluster = hits.mean(axis=1).std(ddof=1) / math.sqrt(R)  # realizations as clusters
            independent = math.sqrt(target * (1 - target) / (R * P))
            print(f"all {label}: {hits.sum()}/{R * P} = {frac:.3f} +- {cluster:.3f} (cluster s.e.; "
                  f"{independent:.3f} if the {R * P} trials were independent); "
                  f"{(frac - target) / cluster:+.1f} cluster s.e. from {target}")
        allpull = pull.ravel()
        print(f"all pulls: mean {allpull.mean():+.3f}, std {allpull.std(ddof=1):.3f} (a calibrated method: 0, 1; "
              f"s.e. of the std ~{1 / math.sqrt(2 * R * P):.3f} for independent pulls)")
    print(f"\na correct method gives 68% hits in [{lo68:.0f}, {hi68:.0f}] and 95% hits in [{lo95:.0f}, {hi95:.0f}] "
          f"per parameter 95% of the time")
    if args.save:
        _save(args.save, arrays)
        print(args.save)
    return 0


def _save(path: str, arrays: dict) -> None:
    """np.savez to a temporary name, then os.replace (atomic)."""
    import os

    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
