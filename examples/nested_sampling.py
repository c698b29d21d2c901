"""Nested sampling of a small scene with pho and dynesty: a script to copy and adapt.

It simulates one Sersic galaxy in two dithered exposures (swap in your own ``pho.Exposure``
objects, e.g. ``pho.Exposure.from_fits(sci, err_path=err, psf=psf, band="F200W")``), finds the
best fit with L-BFGS-B, samples the posterior with dynesty (checkpointing, so Ctrl-C and rerun
resumes), and writes a catalog and figures.

    python examples/nested_sampling.py [--outdir DIR] [--nlive N] [--processes N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import pho
from pho import plots
from pho.demo import DEC0_DEG, RA0_DEG, demo_psf, demo_wcs
from pho.io import write_catalog
from pho.priors import default_priors


def simulate(rng):
    """Two 32x32 exposures of one galaxy, drawn by the model with Gaussian noise."""
    truth = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 5.0}, q=0.6, pa=0.7, n=1.5, rh=0.25)])
    shape, sigma = (32, 32), 0.04
    exposures = []
    for dx, dy, rot in [(0.0, 0.0, 0.0), (1.5, -0.5, 12.0)]:
        blank = pho.Exposure(np.zeros(shape), np.full(shape, 1 / sigma**2), demo_wcs(shape, dx, dy, rot), demo_psf(1.7), "F200W")
        model = pho.Likelihood(truth, [blank]).model_images(truth.get_vector())[0]
        exposures.append(pho.Exposure(model + rng.normal(size=shape) * sigma, blank.ivar, blank.wcs, blank.psf, "F200W"))
    return truth, exposures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default="nested_sampling_example", help="output folder (default %(default)s)")
    parser.add_argument("--nlive", type=int, default=150, help="dynesty live points (default %(default)s)")
    parser.add_argument("--processes", type=int, default=None,
                        help="worker processes for sampling (default: one per core; 1: none)")
    args = parser.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(exist_ok=True)

    rng = np.random.default_rng(42)
    truth, exposures = simulate(rng)

    # 1. The initial guess and the likelihood (the compiled backend if it was built).
    start = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 3.0}, q=0.8, pa=0.3, n=2.5, rh=0.4)])
    backend = "cpu" if "cpu" in pho._backends.available_backends() else "reference"
    like = pho.Likelihood(start, exposures, backend=backend)

    # 2. Best fit. Priors: data-driven defaults, with the size bounded more tightly by hand.
    priors = default_priors(like, overrides={"rh": (0.02, 1.0)})
    best = pho.optimize(like, priors)
    print(best)

    # 3. Posterior: re-centre the priors on the best fit, then sample, with one worker process per
    #    core (they are spawned: keep the `if __name__ == "__main__":` guard below). Rerun to resume.
    priors = default_priors(like, theta=best.theta, overrides={"rh": (0.02, 1.0)})
    checkpoint = outdir / "sampler.pkl"
    post = pho.sample(like, priors, nlive=args.nlive, rng=np.random.default_rng(1),
                      checkpoint_file=checkpoint, resume=checkpoint.exists(), processes=args.processes)
    print(post)
    for name, value in zip(truth.parameter_names, truth.get_vector()):
        s = post.summary[name]
        print(f"{name:16s} truth {value:15.10g}   posterior {s['median']:15.10g} [{s['p16']:.10g}, {s['p84']:.10g}]")

    # 4. Outputs.
    print(write_catalog(outdir / "catalog.fits", best.scene, best, post, overwrite=True))
    print(plots.save_figure(plots.plot_corner(post, truths=dict(zip(truth.parameter_names, truth.get_vector()))),
                            outdir / "corner.png"))
    print(plots.save_figure(plots.plot_exposures(like, best.theta), outdir / "exposures.png"))


if __name__ == "__main__":
    main()
