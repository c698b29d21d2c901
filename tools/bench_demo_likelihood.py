"""Time the demo's likelihood and count its image Gaussians by integration order (a script).

Run from the repository root, one pinned core::

    taskset -c 0 python tools/bench_demo_likelihood.py

Builds ``pho.demo.build_demo`` (4 exposures of 32x32, 3 sources; seed 1), prints the CPU time of
``lnlike`` (what dynesty calls) and ``lnlike_and_grad`` (what NUTS and the optimizer call) on the
cpu backend with one thread, best of 5 batches of 200 calls, and per exposure the image Gaussians
and Gaussian-pixels of each integration order (0 second order, 1 fourth order, n >= 2 Gauss-Legendre).
To compare two checkouts, run it with ``PYTHONPATH=<checkout>`` from each.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import pho  # noqa: E402
from pho import _reference as ref  # noqa: E402
from pho.demo import build_demo  # noqa: E402


def cpu_ms_per_call(f, theta) -> float:
    """CPU milliseconds of one ``f(theta)``: best of 5 batches of 200, after 30 warm-up calls."""
    for _ in range(30):
        f(theta)
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(200):
            f(theta)
        best = min(best, (time.process_time() - t0) / 200)
    return best * 1e3


def main() -> int:
    demo = build_demo(np.random.default_rng(1))
    like = pho.Likelihood(demo.truth, demo.exposures, backend="cpu", workers=1)
    theta = demo.truth.get_vector()
    print(f"pho from {os.path.dirname(pho.__file__)}")
    for f in (like.lnlike, like.lnlike_and_grad):
        print(f"{f.__name__}: {cpu_ms_per_call(f, theta):.3f} ms CPU per call (best of 5 x 200)")
    state = like._scene_model.prepare(theta)
    for model, exposure in zip(like._models, like.exposures):
        g, _ = model.forward(state)
        keep = model.significant(g)
        g = g if keep is None else g[keep]
        orders = ref.integration_orders(g)
        boxes = ref.pixel_boxes(g, exposure.shape)
        by_order = ", ".join(f"order {int(o)}: {int((orders == o).sum())} ({ref.box_pixel_count(boxes[orders == o])} px)"
                             for o in np.unique(orders))
        print(f"{exposure.name} {exposure.shape}: {len(g)} Gaussians, {ref.box_pixel_count(boxes)} Gaussian-pixels; {by_order}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
