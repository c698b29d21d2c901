"""Time lnlike_and_grad on pho's backends for the peers' three scenes and a 100-source field (a script).

Run from the repository root; ``tools/device_check.sh`` runs it on a GPU machine::

    python tools/bench_device.py --backends cpu gpu --max-diff 1e-9   # GPU beside (and checked against) cpu
    python tools/bench_device.py --backends cpu --quick  # what runs without a GPU

Scenes (0.03"/pixel, the default Sersic profile; built by ``tools/bench_kernel.make_problem``):

(a) one Sersic in 64x64, 3-Gaussian PSF;
(b) ten Sersics in 128x128, 3-Gaussian PSF;
(c) one Sersic in 256x256, 3-Gaussian PSF;
(d) a field: 100 Sersics in 512x512, 3-Gaussian PSF.

Each figure is wall time per call (median of batches of at least ``--min-time`` s; a GPU call is
synchronous, its results come back to the host). Every backend after the first is checked against
the first on the same input: lnL relative difference and the worst gradient difference relative to
the largest gradient element.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))  # this checkout's pho, built in place, before any installed one

SCENES = {
    "a": ("one Sersic, 64x64", dict(n_src=1, size=64, rh_arcsec=(0.2, 0.2))),
    "b": ("ten Sersics, 128x128", dict(n_src=10, size=128)),
    "c": ("one Sersic, 256x256", dict(n_src=1, size=256, rh_arcsec=(0.2, 0.2))),
    "d": ("field: 100 Sersics, 512x512", dict(n_src=100, size=512)),
}


def _time(fn, min_time, batches):
    fn()  # warm-up (a GPU backend compiles its kernels on first use)
    times = []
    for _ in range(batches):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        times.append(dt / n)
    return statistics.median(times)


def run(backends, scenes, min_time=0.2, batches=5, out=sys.stdout):
    """Time every backend on every scene; print one table; return rows (scene, backend, ms, lnL diff, grad diff)."""
    import bench_kernel as bk

    import pho

    rows = []
    print(f"pho {pho.__version__} from {Path(pho.__file__).parent}", file=out)
    for key in scenes:
        label, kw = SCENES[key]
        scene, exps, theta = bk.make_problem(kw["n_src"], kw["size"], 1, ["F200W"], 3,
                                             rh_arcsec=kw.get("rh_arcsec", (0.15, 0.45)))
        first = None
        for name in backends:
            like = pho.Likelihood(scene, exps, backend=name)
            value, grad = like.lnlike_and_grad(theta)
            ms = 1e3 * _time(lambda: like.lnlike_and_grad(theta), min_time, batches)
            if first is None:
                first = (value, grad)
                dv = dg = float("nan")
            else:
                dv = abs(value - first[0]) / abs(first[0])
                dg = float(np.max(np.abs(grad - first[1])) / np.max(np.abs(first[1])))
            rows.append((label, name, ms, dv, dg))
    print(f"{'scene':30s} {'backend':8s} {'ms/call':>10s} {'lnL vs ' + backends[0]:>14s} {'grad vs ' + backends[0]:>14s}",
          file=out)
    for label, name, ms, dv, dg in rows:
        print(f"{label:30s} {name:8s} {ms:10.3f} {dv:14.1e} {dg:14.1e}", file=out)
    return rows


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=["gpu", "cpu"], help="backends, the first is the one compared "
                   "against (default: %(default)s)")
    p.add_argument("--scenes", nargs="+", choices=sorted(SCENES), default=sorted(SCENES),
                   help="scenes (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one short batch per figure")
    p.add_argument("--max-diff", type=float, default=None,
                   help="exit 1 if any backend's lnL or gradient differs from the first's by more than this "
                        "(relative, as printed)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows = run(args.backends, args.scenes, min_time=0.02 if args.quick else 0.2, batches=1 if args.quick else 5)
    if args.max_diff is not None:
        bad = [r for r in rows if r[3] > args.max_diff or r[4] > args.max_diff]  # nan (the first) compares False
        for label, name, _, dv, dg in bad:
            print(f"bench_device: {name} differs from {args.backends[0]} on {label!r}: lnL {dv:.1e}, gradient "
                  f"{dg:.1e} > {args.max_diff:g}", file=sys.stderr)
        if bad:
            return 1
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
