"""CPU time per ``lnlike_and_grad``: (q, pa) against conformal-shear shapes, and no sky against a
fitted constant or plane (one Sersic with the shipped table, 64x64 stamp, 2-Gaussian PSF, cpu
backend, one thread; best of 5 x 200 calls).

Run from the repository root::

    OMP_NUM_THREADS=1 taskset -c 0 python tools/bench_sky_eta.py
"""

from __future__ import annotations

import time

import numpy as np
from astropy.wcs import WCS

import pho


def _likelihood(shape_parameters, sky):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [32.5, 32.5]
    w.wcs.cd = [[-0.03 / 3600, 0.0], [0.0, 0.03 / 3600]]
    psf = pho.PSFMixture([0.7, 0.3], [0.1, -0.2], [0.0, 0.3], [1.5, 4.0], [0.2, -0.5], [1.2, 3.5])
    scene = pho.Scene([pho.Sersic(150.0, 2.0, {"B": 100.0}, 0.6, 0.4, 2.0, 0.2)], shape_parameters=shape_parameters)
    blank = pho.Exposure(np.zeros((64, 64)), np.ones((64, 64)), w, psf, "B")
    model = pho.render(scene, blank)
    data = model + np.random.default_rng(1).normal(size=model.shape)
    exposure = pho.Exposure(data, blank.ivar, w, psf, "B")
    like = pho.Likelihood(scene, [exposure], backend="cpu", workers=1, sky=sky)
    return like, like.initial


def main() -> None:
    for shape_parameters in ("q_pa", "eta"):
        for sky in (None, "constant", "plane"):
            like, theta = _likelihood(shape_parameters, sky)
            best = []
            for _ in range(5):
                t = time.process_time()
                for _ in range(200):
                    like.lnlike_and_grad(theta)
                best.append((time.process_time() - t) / 200)
            print(f"{shape_parameters:5s} sky={str(sky):9s} {1e6 * min(best):7.1f} us CPU per lnlike_and_grad")


if __name__ == "__main__":
    main()
