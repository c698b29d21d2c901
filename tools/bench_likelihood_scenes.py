"""Time pho's ``lnlike_and_grad`` alone on the peers' scenes (a script, never a test).

Run from the repository root, pinned to one core, once per checkout to compare::

    PYTHONPATH=<checkout> taskset -c 0 python tools/bench_likelihood_scenes.py a ten big

Builds each scene of ``tools/bench_peers.py`` (by its key), makes ``Likelihood(..., backend="cpu",
workers=1)`` and prints the process CPU time of one ``lnlike_and_grad``, best of 7 batches of at
least 0.3 s each (after 50 warm-up calls). No peers are imported, so it runs in seconds.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_peers as bp  # noqa: E402

import pho  # noqa: E402


def best_time(f, theta, repeat: int = 7, min_time: float = 0.3) -> float:
    """Best CPU seconds per call of ``f(theta)`` over ``repeat`` batches of >= ``min_time`` s."""
    for _ in range(50):
        f(theta)
    best = float("inf")
    for _ in range(repeat):
        t0, n = time.process_time(), 0
        while time.process_time() - t0 < min_time:
            f(theta)
            n += 1
        best = min(best, (time.process_time() - t0) / n)
    return best


def main(argv=None) -> int:
    keys = (argv if argv is not None else sys.argv[1:]) or ["a", "ten", "big"]
    print(f"pho from {os.path.dirname(pho.__file__)}")
    for key in keys:
        scene, exposures, theta = bp.SCENES[key][1]()
        like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
        print(f"{key}: {best_time(like.lnlike_and_grad, theta) * 1e3:.3f} ms CPU per lnlike_and_grad")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
