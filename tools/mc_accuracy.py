"""Accuracy and cost of the Monte Carlo renderer (pho.mc), printed as the tables of docs/model.md.

    python tools/mc_accuracy.py [--quick] [--sections galsim,n,mixture,speed]

Sections:

0. ``bound`` (not in the default list): worst error against GalSim divided by the bound
   ``eta = psf_peak / (N c)`` that ``n_draws="auto"`` uses, over a grid of n, rh and N.
1. ``galsim``: at the default (automatic) draws, worst |MC - GalSim| / GalSim's peak and the
   stamp-flux error for n in {0.3, 1, 4, 6.2} and rh in {0.02, 0.3, 1, 3}" under the broad and
   narrow PSFs of tests/test_sersic_galsim.py (65 x 65 stamps at 0.03"/pixel; GalSim's profile is
   untruncated like pho's, and both are compared on the same stamp). n = 0.3 and 6.2 are beyond
   the shipped table's range (0.5-6).
2. ``n``: worst error against GalSim as N grows, per draw scheme (fibonacci, sobol, random:
   mean of 4 seeds), for one case; with the slope of log(error) against log(N).
3. ``mixture``: MC (default draws) against the Gaussian-mixture cpu backend (shipped table, auto
   profile) at n and rh between the table's nodes, worst difference / peak.
4. ``speed``: CPU time per lnlike_and_grad call of the MC renderer per N beside the mixture's on
   the same stamp (one thread, best of 5).

GalSim's FFTs of n >= 4 at rh >= 1" take tens of seconds; --quick leaves out rh = 3" and n = 6.2
at rh = 1".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pho  # noqa: E402


def _galsim_module():
    import test_sersic_galsim as T  # noqa: E402  (needs GalSim)

    return T


def _mc_image(T, psf_name, n, rh, **kw):
    gal = pho.Sersic(150.0, 2.0, {"B": 1.0}, q=1.0, pa=0.0, n=n, rh=rh, profile=pho.ExactSersic())
    mc = pho.MonteCarloRenderer(**kw)
    exp = T._exposure(psf_name)
    scene = pho.Scene([gal])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pho.PhoWarning)
        like = pho.Likelihood(scene, [exp], backend=mc)
    n_draws = int(like._scene_model.draws.counts[0])
    t = time.process_time()
    img = like.model_images(like.scene.get_vector())[0]
    return img, n_draws, time.process_time() - t, bool(caught)


def section_galsim(quick: bool) -> None:
    T = _galsim_module()
    print("== 1. default draws against GalSim (65x65 at 0.03\"/pix) ==")
    print(f"{'psf':7s} {'n':>4s} {'rh_arcsec':>9s} {'draws':>7s} {'resid/peak':>10s} {'flux err':>9s} {'render cpu s':>12s}")
    worst = (0.0, None)
    worst_f = (0.0, None)
    for psf_name in ("broad", "narrow"):
        for n in (0.3, 1.0, 4.0, 6.2):
            for rh in (0.02, 0.3, 1.0, 3.0):
                if n >= 4.0 and rh >= 3.0:
                    continue  # GalSim's FFT: minutes
                if quick and (rh >= 3.0 or (n > 6 and rh >= 1.0)):
                    continue
                ref = T.render_galsim(psf_name, n, rh)
                img, nd, cpu, capped = _mc_image(T, psf_name, n, rh)
                r = float(np.abs(img - ref).max() / ref.max())
                f = float(img.sum() / ref.sum() - 1.0)
                worst = max(worst, (r, (psf_name, n, rh)))
                worst_f = max(worst_f, (abs(f), (psf_name, n, rh)))
                flag = " (capped: warned)" if capped else ""
                print(f"{psf_name:7s} {n:4.1f} {rh:9.2f} {nd:7d} {r:10.3%} {f:+9.3%} {cpu:12.3f}{flag}", flush=True)
    print(f"worst residual {worst[0]:.3%} of the peak at {worst[1]}; worst |flux error| {worst_f[0]:.3%} at {worst_f[1]}")


def section_bound() -> None:
    """Worst error against GalSim over the bound eta = psf_peak / (N c) that n_draws='auto' uses."""
    T = _galsim_module()
    print("== 0. worst error / peak over the bound eta (fibonacci), rh <= 1\" grid, N = 1024, 4096, 16384 ==")
    ratios = []
    for psf_name in ("broad", "narrow"):
        for n in (0.3, 1.0, 4.0, 6.2):
            for rh in (0.02, 0.3, 1.0):
                ref = T.render_galsim(psf_name, n, rh)
                gal = pho.Sersic(150.0, 2.0, {"B": 1.0}, q=1.0, pa=0.0, n=n, rh=rh, profile=pho.ExactSersic())
                mc = pho.MonteCarloRenderer(n_draws=1024)
                eta_n = mc._peak_ratio(gal, T._exposure(psf_name))  # eta times N
                row = []
                for N in (1024, 4096, 16384):
                    img = _mc_image(T, psf_name, n, rh, n_draws=N)[0]
                    r = float(np.abs(img - ref).max() / ref.max()) / (eta_n / N)
                    ratios.append(r)
                    row.append(r)
                print(f"{psf_name:7s} {n:4.1f} {rh:5.2f}  error/eta " + " ".join(f"{r:5.2f}" for r in row), flush=True)
    print(f"{len(ratios)} cases: error/eta from {min(ratios):.2f} to {max(ratios):.2f}")


def section_n() -> None:
    T = _galsim_module()
    case = ("broad", 1.0, 0.3)
    ref = T.render_galsim(*case)
    sizes = [256, 1024, 4096, 16384, 65536]
    print(f"== 2. worst error / peak against GalSim vs N, {case} (psf, n, rh\") ==")
    print(f"{'N':>7s} " + " ".join(f"{s:>12s}" for s in ("fibonacci", "sobol", "random(4)")))
    table = {s: [] for s in ("fibonacci", "sobol", "random")}
    for N in sizes:
        row = []
        for scheme in ("fibonacci", "sobol", "random"):
            seeds = range(4) if scheme == "random" else [0]
            errs = [float(np.abs(_mc_image(T, *case, n_draws=N, scheme=scheme, seed=s)[0] - ref).max() / ref.max()) for s in seeds]
            table[scheme].append(np.mean(errs))
            row.append(np.mean(errs))
        print(f"{N:7d} " + " ".join(f"{e:12.3e}" for e in row), flush=True)
    for scheme, errs in table.items():
        slope = np.polyfit(np.log(sizes), np.log(errs), 1)[0]
        print(f"slope of log error vs log N, {scheme}: {slope:.2f}")


def section_mixture() -> None:
    print("== 3. MC (default draws) against the mixture (cpu, shipped table) between table nodes ==")
    T = _galsim_module()
    print(f"{'psf':7s} {'n':>5s} {'rh_arcsec':>9s} {'q':>4s} {'draws':>7s} {'|mc-mix|/peak':>13s} {'mc-galsim':>10s} {'mix-galsim':>10s}")
    for psf_name in ("broad", "narrow"):
        for n, rh, q in ((0.77, 0.061, 1.0), (1.37, 0.173, 0.6), (2.37, 0.029, 1.0), (3.3, 0.41, 0.7), (5.1, 0.113, 1.0)):
            gal = pho.Sersic(150.0, 2.0, {"B": 1.0}, q=q, pa=0.4, n=n, rh=rh)
            exp = T._exposure(psf_name)
            scene = pho.Scene([gal])
            mix = pho.render(scene, exp, backend="cpu")
            like = pho.Likelihood(scene, [exp], backend="mc")
            mc = like.model_images(like.scene.get_vector())[0]
            ref = T.render_galsim(psf_name, n, rh, q, 0.4)
            peak = ref.max()
            print(f"{psf_name:7s} {n:5.2f} {rh:9.3f} {q:4.1f} {int(like._scene_model.draws.counts[0]):7d} "
                  f"{np.abs(mc - mix).max() / peak:13.3%} {np.abs(mc - ref).max() / peak:10.3%} {np.abs(mix - ref).max() / peak:10.3%}",
                  flush=True)


def section_speed() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    T = _galsim_module()
    print("== 4. CPU time per lnlike_and_grad (one thread), one Sersic n=2 rh=0.3\" q=0.7, 65x65 stamp ==")
    gal = pho.Sersic(150.0, 2.0, {"B": 1.0}, q=0.7, pa=0.4, n=2.0, rh=0.3)
    print(f"{'psf':7s} {'renderer':>22s} {'image Gaussians':>15s} {'cpu ms / call':>13s}")
    for psf_name in ("broad", "narrow"):
        exp0 = T._exposure(psf_name)
        rng = np.random.default_rng(0)
        exp = pho.Exposure(pho.render(pho.Scene([gal]), exp0) + rng.normal(size=exp0.shape) * 1e-3,
                           np.full(exp0.shape, 1e6), exp0.wcs, exp0.psf, "B")
        backends = [("mixture (cpu)", "cpu")] + [(f"mc N={N}", pho.MonteCarloRenderer(n_draws=N, workers=1))
                                                 for N in (1024, 4096, 16384, 65536)]
        auto = pho.MonteCarloRenderer(workers=1)
        backends.append((f"mc auto", auto))
        for label, be in backends:
            like = pho.Likelihood(pho.Scene([gal]), [exp], backend=be, workers=1)
            theta = like.scene.get_vector()
            like.lnlike_and_grad(theta)
            best = np.inf
            for _ in range(5):
                t = time.process_time()
                like.lnlike_and_grad(theta)
                best = min(best, time.process_time() - t)
            if label == "mc auto":
                label = f"mc auto (N={int(like._scene_model.draws.counts[0])})"
            print(f"{psf_name:7s} {label:>22s} {like._models[0].n_gauss:15d} {best * 1e3:13.2f}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="leave out the GalSim cases that take tens of seconds")
    p.add_argument("--sections", default="galsim,n,mixture,speed", help="comma-separated (default %(default)s)")
    args = p.parse_args(argv)
    print(f"pho {pho.__version__} from {Path(pho.__file__).parent}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in args.sections.split(","):
        {"galsim": lambda: section_galsim(args.quick), "bound": section_bound, "n": section_n, "mixture": section_mixture,
         "speed": section_speed}[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
