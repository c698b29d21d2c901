"""Where does a second thread start to pay? Render + gradient with 1 and with all threads, by work size.

    python tools/bench_threads.py

Random image Gaussians (FWHM 1.5-30 pixels, axis ratios 0.3-1) on stamps of 32-128 pixels, from a
few thousand to ten million Gaussian-pixels (pixels inside the Gaussians' boxes, summed). Each line
times the cpu backend's render + gradient forced onto 1 thread and onto all threads
(``min_work_per_thread = 0``), best wall time of 5 batches of >= 0.2 s, and prints the speed-up.
``pho._backends.MIN_WORK_PER_THREAD`` (the work per thread below which the backend uses fewer
threads) is chosen from this table.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from pho import _reference as ref
from pho._backends import MIN_WORK_PER_THREAD, get_backend, resolve_workers


def best_ms(func, batches: int = 5, min_time: float = 0.2) -> float:
    func()
    best = float("inf")
    for _ in range(batches):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < min_time:
            func()
            n += 1
        best = min(best, (time.perf_counter() - t) / n)
    return 1e3 * best


def main() -> int:
    nall = resolve_workers(None)
    rng = np.random.default_rng(0)
    one = get_backend("cpu", workers=1)
    many = get_backend("cpu", workers=nall)
    many.min_work_per_thread = 0
    print(f"bench_threads: cpu backend, 1 vs {nall} threads (forced), OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, MIN_WORK_PER_THREAD = {MIN_WORK_PER_THREAD}")
    if nall < 2:
        print("only one core available here: nothing to compare")
        return 0
    for n_gauss, size in [(20, 32), (50, 32), (150, 32), (100, 64), (300, 64), (300, 128), (1000, 128), (3000, 128)]:
        g = np.array([ref.packed_gaussian(1.0, rng.uniform(0, size), rng.uniform(0, size), rng.choice([1.5, 3, 6, 12, 30]),
                                   rng.uniform(0.3, 1.0), rng.uniform(0, math.pi)) for _ in range(n_gauss)])
        shape = (size, size)
        work = ref.box_pixel_count(ref.pixel_boxes(g, shape))
        w = rng.normal(size=shape)
        t1 = best_ms(lambda: (one.render(g, shape), one.gradient(g, w)))
        tn = best_ms(lambda: (many.render(g, shape), many.gradient(g, w)))
        print(f"  {n_gauss:5d} Gaussians on {size:3d}x{size:<3d} {work:9d} Gaussian-pixels: 1 thread {t1:8.3f} ms, "
              f"{nall} threads {tn:8.3f} ms, speed-up {t1 / tn:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
