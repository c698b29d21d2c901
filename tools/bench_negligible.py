"""What leaving negligible image Gaussians out of a stamp costs in accuracy and saves in work (a script).

Run from the repository root::

    python tools/bench_negligible.py

For one Sersic (scenes of tools/bench_kernel.py: 3-Gaussian PSF, 0.03"/pix) at several r_h and
stamp sizes, and for ``pho.gaussians.NEGLIGIBLE_FRACTION`` in 1e-7, 1e-6, 1e-5, it prints the
number of image Gaussians rendered, their Gaussian-pixels (the kernels' work), and the change of
the model image against the 1e-7 image: the largest pixel change over the peak, and the change of
the stamp's total counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import bench_kernel as bk  # noqa: E402  (the scenes)

import pho  # noqa: E402
import pho.gaussians as gaussians  # noqa: E402
from pho import _reference as ref  # noqa: E402

FRACTIONS = (1e-7, 1e-6, 1e-5)


def main() -> int:
    saved = gaussians.NEGLIGIBLE_FRACTION
    print(f"{'stamp':>7s} {'rh':>5s} {'fraction':>9s} {'Gaussians':>9s} {'Gauss-pix':>10s} "
          f"{'max |dI|/peak':>14s} {'|d total|/total':>16s}")
    try:
        for size, rh in [(64, 0.05), (64, 0.2), (64, 0.45), (256, 0.2), (64, 3.0)]:
            scene, exps, theta = bk.make_problem(1, size, 1, ["F200W"], 3, rh_arcsec=(rh, rh))
            base = None
            for fraction in FRACTIONS:
                gaussians.NEGLIGIBLE_FRACTION = fraction
                like = pho.Likelihood(scene, exps, backend="cpu", workers=1)
                model = like._models[0]
                g, _ = model.forward(like._scene_model.prepare(theta))
                keep = model.significant(g)
                kept = g if keep is None else g[keep]
                work = ref.box_pixel_count(ref.pixel_boxes(kept, exps[0].shape))
                img = like.model_images(theta)[0]
                base = img if base is None else base
                print(f"{size:4d}px2 {rh:5.2f} {fraction:9.0e} {len(kept):9d} {work:10d} "
                      f"{np.abs(img - base).max() / base.max():14.1e} {abs(img.sum() - base.sum()) / base.sum():16.1e}")
    finally:
        gaussians.NEGLIGIBLE_FRACTION = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
