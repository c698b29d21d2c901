"""Time each figure of the main job on the demo (a script, never a test).

Run from the repository root (or with ``PYTHONPATH=<checkout>`` to time another checkout's
``pho.plots``)::

    python tools/bench_figures.py [--draws 200]

Builds ``pho.demo.build_demo`` (4 exposures of 32 x 32, 3 sources, conformal shear), optimizes,
samples a short NUTS run in this process (2 chains; the figures only need draws), then prints the
wall seconds of each figure ``python -m pho.tools.fit --demo`` writes, each saved once to a
temporary folder: exposures, gradients of source 0, a corner plot per source, chains. matplotlib's
import is timed apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if not os.environ.get("PYTHONPATH"):  # else the checkout named there is timed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pho  # noqa: E402
from pho.demo import build_demo  # noqa: E402
from pho.fit import optimize  # noqa: E402
from pho.nuts import sample_nuts, usable_covariance  # noqa: E402
from pho.priors import default_priors  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="NUTS draws per chain (default %(default)s)")
    args = parser.parse_args(argv)
    problem = build_demo(shape=(32, 32))
    scene = pho.Scene(problem.initial.sources, shape_parameters="eta", bands=problem.initial.bands)
    like = pho.Likelihood(scene, problem.exposures, backend="cpu")
    best = optimize(like, default_priors(like), progress=False)
    post = sample_nuts(like, default_priors(like, theta=best.theta), draws=args.draws, tune=100, chains=2, seed=1,
                       processes=1, progress=False, theta0=best.theta, init_cov=usable_covariance(best.cov))
    t = time.perf_counter()
    import matplotlib.figure  # noqa: F401

    print(f"import matplotlib: {time.perf_counter() - t:.2f} s")
    from pho import plots

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [("exposures", lambda p: plots.plot_exposures(like, best.theta, p)),
                ("gradients_s0", lambda p: plots.plot_gradients(like, best.theta, 0, 0, p))]
        for i in range(len(scene.sources)):
            names = [n for n in post.names if n.startswith(f"s{i}.")]
            jobs.append((f"corner_s{i}", lambda p, names=names: plots.plot_corner(post, p, names=names)))
        jobs.append(("chains", lambda p: plots.plot_chains(post, p)))
        total = 0.0
        for name, job in jobs:
            t = time.perf_counter()
            job(os.path.join(tmp, name + ".png"))
            dt = time.perf_counter() - t
            total += dt
            print(f"{name}: {dt:.2f} s")
    print(f"all figures: {total:.2f} s (pho from {os.path.dirname(pho.__file__)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
