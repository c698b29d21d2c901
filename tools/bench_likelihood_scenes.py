"""Time pho's ``lnlike_and_grad`` and ``lnlike`` alone on the peers' scenes (a script, never a test).

Run from the repository root, pinned to one core, once per checkout to compare::

    PYTHONPATH=<checkout> taskset -c 0 python tools/bench_likelihood_scenes.py a ten big
    taskset -c 0 python tools/bench_likelihood_scenes.py --levels-off a ten big   # also without levels

Builds each scene of ``tools/bench_peers.py`` (by its key; ``patch`` is the 80-parameter blended patch
of ``tools/bench_samplers.py`` in conformal shear, at its truth), makes ``Likelihood(..., backend="cpu",
workers=1)`` and prints the process CPU time of one ``lnlike_and_grad`` (the call of NUTS and the
optimizer) and of one ``lnlike`` (dynesty's), best of 7 batches of at least 0.3 s each (after 50
warm-up calls). No peers are imported, so it runs in seconds.
``--levels-off`` also times each scene with every Gaussian on the pixels (``pho._levels.MAX_LEVEL = 0``,
the model before wide Gaussians went to coarse grids), alternating with the default, and prints the
image Gaussians per level and the largest difference of the two images relative to the peak.
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


def _levels_line(like, theta) -> str:
    """Image Gaussians per level, summed over the exposures."""
    import numpy as np

    from pho import _levels

    counts = {}
    for em, e in zip(like._models, like.exposures):
        g, _ = em.forward(like._scene_model.prepare(theta))
        keep = em.significant(g)
        g = g if keep is None else g[keep]
        for lv, n in zip(*np.unique(_levels.gaussian_levels(g, len(_levels.grid_levels(e.shape)) - 1),
                                    return_counts=True)):
            counts[int(lv)] = counts.get(int(lv), 0) + int(n)
    return ", ".join(f"level {lv}: {n}" for lv, n in sorted(counts.items()))


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    off = "--levels-off" in args
    keys = [a for a in args if a != "--levels-off"] or ["a", "ten", "big"]
    print(f"pho from {os.path.dirname(pho.__file__)}")
    from pho import _levels

    default = _levels.MAX_LEVEL
    for key in keys:
        if key == "patch":
            import bench_samplers

            truth, like, _, _ = bench_samplers.patch_problem(shape_parameters="eta")
            like, theta = like.with_workers(1), truth.get_vector()
        else:
            scene, exposures, theta = bp.SCENES[key][1]()
            like = pho.Likelihood(scene, exposures, backend="cpu", workers=1)
        if not off:
            print(f"{key}: {best_time(like.lnlike_and_grad, theta) * 1e3:.3f} ms CPU per lnlike_and_grad, "
                  f"{best_time(like.lnlike, theta) * 1e3:.3f} ms per lnlike")
            continue
        times = {"levels": [], "off": []}
        images = {}
        for _ in range(2):
            for label, level in (("off", 0), ("levels", default)):
                _levels.MAX_LEVEL = level
                times[label].append(best_time(like.lnlike_and_grad, theta) * 1e3)
                images[label] = like.model_images(theta)
        _levels.MAX_LEVEL = default
        diff = max(float(abs(a - b).max() / abs(b).max()) for a, b in zip(images["levels"], images["off"]))
        print(f"{key}: {min(times['levels']):.3f} ms with levels ({_levels_line(like, theta)}), "
              f"{min(times['off']):.3f} ms without: {min(times['off']) / min(times['levels']):.2f}x; "
              f"images differ by {diff:.1e} of the peak")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
