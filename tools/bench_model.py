"""Benchmark the Python side of the model: scene -> image Gaussians + Jacobian, and the
likelihood glue around the pixel kernels.

Prints, per case, microseconds per call of

- ``prepare``: the exposure-independent part (unit vectors, shape matrices, profile amplitudes);
- ``forward + vjp``: prepare + every exposure's image Gaussians and the vector-Jacobian
  product that chains the kernels' (G, 6) gradient to the parameters (the likelihood's path);
- ``full Jacobian``: prepare + every exposure's (G, 6, 7) Jacobian (``image_gaussians``'s
  path, used for diagnostics only);
- ``lnlike_and_grad (null kernels)``: the whole ``Likelihood.lnlike_and_grad`` with a backend
  whose ``render``/``gradient`` return zeros at once, i.e. everything but the pixel work;
- ``lnlike_and_grad (cpu)``: the same with the compiled backend (if built), for context.

Cases: one Sersic in one 64x64 exposure, and 20 Sersics in four 64x64 exposures (two bands).
The profile is the default of ``pho.Sersic``, ``auto_profile()`` (``--profile table`` for the
shipped table at one scale, ``--profile standin`` for the analytic stand-in). Run ``taskset -c 0 python tools/bench_model.py`` (add ``--repeat N`` for more calls).
Times are CPU time (process time), best of 5, so that time spent descheduled on a busy machine
does not count; with ``taskset -c 0`` no extra threads add to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pho, not an installed one


class NullBackend:
    """A backend that does no pixel work (for timing the Python side alone)."""

    name = "null"

    def render(self, gaussians, shape):
        return np.zeros(shape)

    def gradient(self, gaussians, weights):
        return np.zeros((len(gaussians), 6))


def _wcs(ra, dec, rot_deg, scale_arcsec=0.03):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [32.5, 32.5]
    s = scale_arcsec / 3600
    c, sn = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * sn], [s * sn, s * c]]
    return w


def build(n_sources, n_exposures, profile, rng):
    import pho

    bands = ["F814W", "F160W"]
    psf = pho.PSFMixture([0.6, 0.3, 0.1], [0, 0, 0], [0, 0, 0], [1.0, 3.0, 9.0], [0.0, 0.2, 0.0], [1.1, 2.8, 9.5])
    sources = []
    for i in range(n_sources):
        dra, ddec = (rng.uniform(-0.6, 0.6, 2) / 3600.0) if n_sources > 1 else (0.0, 0.0)
        sources.append(
            pho.Sersic(150.0 + dra, 2.0 + ddec, {b: 10.0 for b in bands}, q=0.6, pa=0.3 + 0.1 * i, n=2.0, rh=0.15, profile=profile)
        )
    scene = pho.Scene(sources, bands=bands[: min(2, n_exposures)])
    exps = []
    for k in range(n_exposures):
        band = scene.bands[k % len(scene.bands)]
        exps.append(pho.Exposure(rng.normal(size=(64, 64)), np.ones((64, 64)), _wcs(150.0, 2.0, 17.0 * k), psf, band))
    return scene, exps


def per_call_us(func, repeat):
    """Best of 5 of the mean CPU time (process time, so time spent descheduled on a busy machine
    does not count) per call, microseconds."""
    func()
    best = np.inf
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(repeat):
            func()
        best = min(best, (time.process_time() - t0) / repeat)
    return best * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="calls per timing (best of 5) [%(default)s]")
    parser.add_argument("--profile", choices=["auto", "table", "standin"], default="auto",
                        help="Sersic profile: auto_profile (the default of pho.Sersic), the shipped table at one "
                        "scale, or the analytic stand-in [%(default)s]")
    args = parser.parse_args(argv)

    import pho
    from pho.likelihood import Likelihood

    if args.profile == "auto":
        from pho.sersic import auto_profile

        profile = auto_profile()
    elif args.profile == "table":
        from pho.sersic import default_profile

        profile = default_profile()
    else:
        from pho.profiles import AnalyticStandInProfile

        profile = AnalyticStandInProfile()
    try:
        from pho._backends import get_backend

        cpu = get_backend("cpu", workers=1)
    except Exception as exc:  # not built
        cpu = None
        print(f"(cpu backend unavailable: {exc})")
    rng = np.random.default_rng(1)
    print(f"profile: {type(profile).__name__} with M = {len(profile.radii_arcsec)} Gaussians; numpy {np.__version__}")
    for n_src, n_exp in [(1, 1), (20, 4)]:
        scene, exps = build(n_src, n_exp, profile, rng)
        theta = scene.get_vector()
        like = Likelihood(scene, exps, backend=NullBackend())
        sm = like._scene_model
        G = sum(m.n_gauss for m in like._models)
        t_prep = per_call_us(lambda: sm.prepare(theta), args.repeat)

        def gauss():
            st = sm.prepare(theta)
            for m in like._models:
                m.compute(st)

        def fwd_vjp():
            st = sm.prepare(theta)
            for m in like._models:
                g, cache = m.forward(st)
                m.vjp(st, cache, g)

        t_gauss = per_call_us(gauss, args.repeat)
        t_fv = per_call_us(fwd_vjp, args.repeat)
        t_null = per_call_us(lambda: like.lnlike_and_grad(theta), args.repeat)
        print(f"{n_src} Sersic(s) x {n_exp} exposure(s) of 64x64, {G} image Gaussians in all:")
        print(f"  prepare                          {t_prep:8.1f} us/call")
        print(f"  prepare + forward + vjp          {t_fv:8.1f} us/call")
        print(f"  prepare + full Jacobian          {t_gauss:8.1f} us/call")
        print(f"  lnlike_and_grad (null kernels)   {t_null:8.1f} us/call  <- Python side")
        if cpu is not None:
            like_cpu = Likelihood(scene, exps, backend=cpu)
            t_cpu = per_call_us(lambda: like_cpu.lnlike_and_grad(theta), max(args.repeat // 4, 10))
            print(f"  lnlike_and_grad (cpu, 1 thread)  {t_cpu:8.1f} us/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
