"""What folding the narrow profile components costs in accuracy and saves in time (a script).

Run from the repository root, one pinned core::

    taskset -c 0 python tools/bench_fold.py                  # the defaults against no folding
    taskset -c 0 python tools/bench_fold.py 1,5 0.5,4 2,6    # other (NARROW_RATIO, NARROW_NODES)

For each setting it prints (1) the worst difference between the folded and the unfolded image of one
Sersic, relative to the unfolded peak, over n in {0.5, 1, 2, 4, 6}, r_h in {0.002, 0.01, 0.03, 0.1,
0.3, 1}", q in {1, 0.15} and 3-Gaussian PSFs with cores of 0.6-4 px (``pho.demo.demo_psf``) on a
64 x 64 stamp at 0.03"/px, reference renderer; and (2) for the demo and for the galaxy of
``examples/nested_sampling.py``, the image Gaussians per call and the CPU time of ``lnlike`` and
``lnlike_and_grad`` on the cpu backend at the truth, one thread, best of 5 batches of 200,
alternating with no folding (``NARROW_NODES = 0``) twice.
"""

from __future__ import annotations

import itertools
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

import pho  # noqa: E402
from pho import _reference as ref  # noqa: E402
from pho import gaussians  # noqa: E402
from pho.demo import build_demo, demo_psf  # noqa: E402

from bench_demo_likelihood import cpu_ms_per_call  # noqa: E402


def _set(setting) -> None:
    gaussians.NARROW_RATIO, gaussians.NARROW_NODES = setting


def worst_image_error(setting) -> tuple[float, tuple]:
    """Largest |folded - unfolded| / unfolded peak over the grid, and where."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [32.5, 32.5]
    w.wcs.cd = [[-0.03 / 3600, 0], [0, 0.03 / 3600]]
    worst, where = 0.0, ()
    for fwhm, n, rh, q in itertools.product([0.6, 0.8, 1.2, 2.0, 4.0], [0.5, 1, 2, 4, 6],
                                            [0.002, 0.01, 0.03, 0.1, 0.3, 1.0], [1.0, 0.15]):
        exposure = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, demo_psf(fwhm), "B")
        scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, n=n, rh=rh, q=q, pa=0.4)])
        _set((1.0, 0))
        unfolded = ref.render(gaussians.image_gaussians(scene, exposure, jacobian=False).gaussians, exposure.shape)
        _set(setting)
        folded = ref.render(gaussians.image_gaussians(scene, exposure, jacobian=False).gaussians, exposure.shape)
        err = float(np.abs(folded - unfolded).max() / unfolded.max())
        if err > worst:
            worst, where = err, (fwhm, n, rh, q)
    return worst, where


def demo_times(setting, demo) -> tuple[int, float, float]:
    """Image Gaussians per call (after the negligible test) and ms per lnlike, lnlike_and_grad, at the
    truth of ``demo`` (anything with ``truth`` and ``exposures``)."""
    _set(setting)
    like = pho.Likelihood(demo.truth, demo.exposures, backend="cpu", workers=1)
    theta = demo.truth.get_vector()
    state = like._scene_model.prepare(theta)
    count = 0
    for model in like._models:
        g, _ = model.forward(state)
        keep = model.significant(g)
        count += len(g) if keep is None else int(keep.sum())
    return count, cpu_ms_per_call(like.lnlike, theta), cpu_ms_per_call(like.lnlike_and_grad, theta)


def main(argv: list[str]) -> int:
    settings = [tuple(float(v) if i == 0 else int(v) for i, v in enumerate(a.split(","))) for a in argv]
    if not settings:
        settings = [(gaussians.NARROW_RATIO, gaussians.NARROW_NODES)]
    print(f"pho from {os.path.dirname(pho.__file__)}")
    for setting in settings:
        err, where = worst_image_error(setting)
        print(f"ratio {setting[0]:g}, nodes {setting[1]}: worst image difference {err:.2e} of the peak "
              f"(PSF core FWHM, n, r_h, q = {where})")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    from nested_sampling import simulate

    truth, exposures = simulate(np.random.default_rng(42))
    problems = {"demo": build_demo(np.random.default_rng(1)),
                "example": SimpleNamespace(truth=truth, exposures=exposures)}  # examples/nested_sampling.py
    for _ in range(2):
        for name, problem in problems.items():
            for setting in [(1.0, 0)] + settings:
                count, t_lnl, t_grad = demo_times(setting, problem)
                label = "no folding" if setting[1] == 0 else f"ratio {setting[0]:g}, nodes {setting[1]}"
                print(f"{name}, {label}: {count} image Gaussians per call, lnlike {t_lnl:.3f} ms, "
                      f"lnlike_and_grad {t_grad:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
