"""dynesty's random-walk length on the example's galaxy: calls against posterior accuracy, over seeds
(a script, never a test).

    python tools/bench_walks.py [--walks 12 16 25 50] [--seeds 8]

Simulates the galaxy of ``examples/nested_sampling.py`` (imported from it, same data seed), finds
the best fit and its priors as the example does, then runs ``pho.sample`` (static dynesty, rwalk,
nlive 150, one process) with each walk length and each sampler seed. The longest walk length is the
reference: for every other one it prints, per parameter, the mean over seeds of (median - reference
median) in units of the reference's posterior sigma (half the 16-84% width), with its standard
error from the seed-to-seed scatter, and the mean width relative to the reference's; and for all,
ln Z (mean and scatter over seeds), calls and seconds per run. With ``--nuts-draws N`` (default
4000; 0: none) it also runs NUTS (4 chains of N draws after 1000 warm-up steps, from the best fit),
an independent sampler, and prints every walk length's mean median shift and width against it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench_processes import load_example  # tools/ is on the path when this runs as a script


def _sigma(summary: dict) -> float:
    """Half the 16-84% width of one parameter's summary."""
    return (summary["p84"] - summary["p16"]) / 2


def _against(runs, name: str, median: float, sigma: float):
    """Per run, (median - ``median``) / ``sigma`` of parameter ``name``; and the runs' mean width / ``sigma``."""
    shift = np.array([(r.summary[name]["median"] - median) / sigma for r in runs])
    return shift, float(np.mean([_sigma(r.summary[name]) / sigma for r in runs]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walks", type=int, nargs="+", default=[12, 16, 25, 50],
                        help="walk lengths; the largest is the reference (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=8, help="sampler seeds per walk length (default %(default)s)")
    parser.add_argument("--nlive", type=int, default=150, help="live points (default %(default)s, the example's)")
    parser.add_argument("--nuts-draws", type=int, default=4000,
                        help="draws per chain of the NUTS reference (default %(default)s; 0: no NUTS)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: at least 2 are needed for the seed-to-seed scatter")

    import pho
    from pho.nuts import sample_nuts
    from pho.sample import sample

    example = load_example()
    truth, exposures = example.simulate(np.random.default_rng(42))
    like, best, priors = example.best_fit_and_priors(exposures)
    names = like.parameter_names
    walks = sorted(args.walks)
    runs = {}
    for w in walks:
        runs[w] = []
        for seed in range(1, args.seeds + 1):
            res = sample(like, priors, nlive=args.nlive, walks=w, rng=np.random.default_rng(seed), processes=1,
                         progress=False)
            runs[w].append(res)
            print(f"  walks {w:3d} seed {seed}: {res.n_calls} calls, {res.time_s:.1f} s, ln Z {res.logz:.3f}",
                  flush=True)
    ref = runs[walks[-1]]
    ref_median = {n: np.mean([r.summary[n]["median"] for r in ref]) for n in names}
    ref_sigma = {n: np.mean([_sigma(r.summary[n]) for r in ref]) for n in names}
    print(f"\nbench_walks: pho {pho.__version__}, the example's galaxy, nlive {args.nlive}, {args.seeds} seeds per "
          f"walk length, reference walks {walks[-1]} (means over its seeds)")
    for w in walks:
        rs = runs[w]
        logz = np.array([r.logz for r in rs])
        calls = np.mean([r.n_calls for r in rs])
        secs = np.mean([r.time_s for r in rs])
        print(f"walks {w:3d}: {calls:8.0f} calls, {secs:5.1f} s per run, ln Z {logz.mean():.3f} +/- "
              f"{logz.std(ddof=1) / np.sqrt(len(rs)):.3f} (scatter {logz.std(ddof=1):.3f}, dynesty's own error "
              f"{np.mean([r.logz_err for r in rs]):.3f})")
        for n in names:
            shift, width = _against(rs, n, ref_median[n], ref_sigma[n])
            print(f"    {n:16s} median shift {shift.mean():+.3f} +/- {shift.std(ddof=1) / np.sqrt(len(rs)):.3f} "
                  f"sigma (seed scatter {shift.std(ddof=1):.3f}), width {width:.3f}")
    if args.nuts_draws:
        nuts = sample_nuts(like, priors, draws=args.nuts_draws, tune=1000, chains=4, seed=1, theta0=best.theta,
                           processes=1, progress=False)
        ess = min(d["ess_bulk"] for d in nuts.diagnostics.values())
        rhat = max(d["rhat"] for d in nuts.diagnostics.values())
        print(f"NUTS reference: 4 chains x {args.nuts_draws} draws, min bulk ESS {ess:.0f}, max R-hat {rhat:.3f}, "
              f"{nuts.time_s:.1f} s; mean over seeds of (median - NUTS median) / NUTS sigma, and width / NUTS width:")
        for w in walks:
            cells = []
            for n in names:
                shift, width = _against(runs[w], n, nuts.summary[n]["median"], _sigma(nuts.summary[n]))
                cells.append(f"{n.split('.', 1)[1]} {shift.mean():+.3f}/{width:.3f}")
            print(f"  walks {w:3d}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - t0:.0f} s)")
    raise SystemExit(code)
