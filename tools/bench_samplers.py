"""NUTS (pho.sample_nuts) against dynesty (pho.sample) on the same problems: posterior means and
standard deviations side by side, wall time, likelihood calls, and likelihood calls per 1,000 effective
samples of the worst parameter (NUTS: the smallest bulk ESS; dynesty: Kish's n_eff of its weights, the
same for every parameter).

Problems: ``galaxy``, the one Sersic galaxy of examples/nested_sampling.py (2 dithered 32 x 32 exposures,
7 parameters, nlive 150 as there); ``demo``, the 20-parameter scene of ``python -m pho.tools.fit --demo``
(nlive 45 as there); ``patch``, 10 blended GOODS-S-like galaxies in 2 bands (80 parameters; see
:func:`patch_problem`), where dynesty (nlive 10 P, as pho.field's patches) only runs ``--dynesty-maxcall``
calls to measure its cost per iteration. Both samplers start from the L-BFGS-B optimum with the priors
re-centred on it, as the main job does; ``--init-cov fisher`` gives NUTS the optimizer's inverse Fisher
matrix as its first metric. CPU times include the worker processes (``RUSAGE_CHILDREN``).

    python tools/bench_samplers.py [--problems galaxy demo patch] [--draws 1000] [--tune 1000]
                                   [--processes 2] [--init-cov {none,fisher}] [--target-accept 0.8]
                                   [--samplers dynesty nuts] [--dynesty-maxcall 5000]
                                   [--shape-parameters {q_pa,g1_g2,eta}] [--nlive N]

``--nlive N`` gives dynesty N live points on every problem instead of the problem's own (150, 45, 10 P);
the patch still stops at ``--dynesty-maxcall``.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import pho  # noqa: E402
from pho.priors import default_priors  # noqa: E402


def galaxy_problem():
    from nested_sampling import simulate

    from pho.demo import DEC0_DEG, RA0_DEG

    truth, exposures = simulate(np.random.default_rng(42))
    start = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": 3.0}, q=0.8, pa=0.3, n=2.5, rh=0.4)])
    return truth, pho.Likelihood(start, exposures, backend="cpu"), 150, {"rh": (0.02, 1.0)}


def demo_problem(shape_parameters: str = "q_pa"):
    from pho.demo import build_demo

    prob = build_demo()
    truth, start = prob.truth, prob.initial
    if shape_parameters != "q_pa":
        truth = pho.Scene(truth.sources, shape_parameters=shape_parameters, bands=truth.bands)
        start = pho.Scene(start.sources, shape_parameters=shape_parameters, bands=start.bands)
    return truth, pho.Likelihood(start, prob.exposures, backend="cpu"), 45, None


def patch_problem(n_sources: int = 10, box_arcsec: float = 2.2, seed: int = 13, dithers_per_band: int = 1,
                  shape_parameters: str = "q_pa"):
    """A blended patch of ``n_sources`` GOODS-S-like galaxies in 2 bands (8 parameters each: 2 fluxes, ra,
    dec, q, pa, n, rh; 80 for 10 galaxies).

    Sizes, axis ratios and F125W/F160W fluxes are those of ``n_sources`` galaxies drawn at random from the
    brighter half (by F160W) of the shipped 3D-HST GOODS-S list (``pho.field.simulate.goodss_table``;
    q = b/a is the list's q squared); their Sersic indices are drawn from U(1, 4) and their position angles
    from U(0, pi); their centres are drawn uniformly in a ``box_arcsec`` square, at least 0.25" apart, so
    that their light overlaps. Exposures, PSFs and noise are those of ``pho.field.simulate``:
    ``dithers_per_band`` exposures per band (default 1: F125W unrotated, F160W shifted by (3.37, -2.61)
    pixels and rotated 23 degrees; with 2, both of these in each band), 0.06"/pixel, 48 x 48 pixels, 3-Gaussian PSFs of core FWHM 2.2 and 2.5 pixels, and the noise at which the median
    source of the whole list has S/N 30 per band. The truth is drawn with pho's model; the starting scene
    is the truth perturbed as a detection catalog would be (positions by 0.3 pixel, fluxes and sizes by
    15%, q by 0.1, pa by 0.2, n set to 2), which the optimizer then refines. ``shape_parameters`` is the
    starting scene's (and so the likelihood's) shape parameterization.
    """
    from pho.demo import demo_psf, demo_wcs
    from pho.field.simulate import SIM_BANDS, SIM_DITHERS, SIM_PIXEL_SCALE_ARCSEC, _optimal_snr, goodss_table
    from pho.likelihood import render

    rng = np.random.default_rng(seed)
    table = goodss_table()
    cols = {"q": np.array(table["q"], float) ** 2, "n": np.array(table["sersic"], float),
            "rh": np.array(table["rhalf"], float), **{f"flux_{b}": np.array(table[b], float) for b in SIM_BANDS}}
    bright = np.flatnonzero(cols["flux_F160W"] >= np.median(cols["flux_F160W"]))
    pick = rng.choice(bright, n_sources, replace=False)
    offsets = []
    while len(offsets) < n_sources:
        xy = rng.uniform(-box_arcsec / 2, box_arcsec / 2, 2)
        if all(np.hypot(*(xy - o)) >= 0.25 for o in offsets):
            offsets.append(xy)
    cosd = math.cos(math.radians(pho.demo.DEC0_DEG))
    bands = list(SIM_BANDS)

    def scene(perturb):
        sources = []
        for k, i in enumerate(pick):
            dx, dy = offsets[k]
            flux = {b: cols[f"flux_{b}"][i] for b in bands}
            q, pa, n, rh = cols["q"][i], float(pa_true[k]), float(n_true[k]), cols["rh"][i]
            if perturb:
                dx, dy = dx + 0.3 * SIM_PIXEL_SCALE_ARCSEC * rng.normal(), dy + 0.3 * SIM_PIXEL_SCALE_ARCSEC * rng.normal()
                flux = {b: f * math.exp(0.15 * rng.normal()) for b, f in flux.items()}
                q, pa, n = float(np.clip(q + 0.1 * rng.normal(), 0.2, 0.95)), pa + 0.2 * rng.normal(), 2.0
                rh = rh * math.exp(0.15 * rng.normal())
            sources.append(pho.Sersic(pho.demo.RA0_DEG + dx / 3600 / cosd, pho.demo.DEC0_DEG + dy / 3600, flux,
                                      q=q, pa=pa, n=n, rh=rh))
        return pho.Scene(sources, bands=bands, shape_parameters=shape_parameters)

    pa_true = rng.uniform(0, math.pi, n_sources)
    n_true = rng.uniform(1.0, 4.0, n_sources)
    truth = scene(False)
    shape = (48, 48)
    exposures = []
    for band, fwhm in SIM_BANDS.items():
        psf = demo_psf(fwhm)
        unit = _optimal_snr(cols, band, psf, SIM_PIXEL_SCALE_ARCSEC, 1.0, len(SIM_DITHERS))
        sigma = float(np.median(unit) / 30.0)
        dithers = SIM_DITHERS if dithers_per_band == 2 else SIM_DITHERS[len(exposures):len(exposures) + 1]
        for dx, dy, rot in dithers:
            blank = pho.Exposure(np.zeros(shape), np.full(shape, sigma**-2), demo_wcs(shape, dx, dy, rot), psf, band)
            model = render(truth, blank, backend="cpu")
            exposures.append(pho.Exposure(model + rng.normal(size=shape) * sigma, blank.ivar, blank.wcs, psf, band))
    return truth, pho.Likelihood(scene(True), exposures, backend="cpu"), None, None


PROBLEMS = {"galaxy": galaxy_problem, "demo": demo_problem, "patch": patch_problem}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the samplers' worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run(name, args):
    kw = {"shape_parameters": args.shape_parameters} if name in ("patch", "demo") else {}
    truth, like, nlive, overrides = PROBLEMS[name](**kw)
    priors = default_priors(like, overrides=overrides)
    t, c = time.perf_counter(), _cpu()
    best = pho.optimize(like, priors)
    print(f"\n## {name}: {len(like.parameter_names)} parameters; optimize: {time.perf_counter() - t:.1f} s wall, "
          f"{_cpu() - c:.1f} s CPU, converged {best.success}")
    priors = default_priors(like, theta=best.theta, overrides=overrides)
    names = list(like.parameter_names)
    theta = best.theta
    t_call = like.with_workers(1)
    t_call.lnlike_and_grad(theta)
    c = time.process_time()
    for _ in range(20):
        t_call.lnlike_and_grad(theta)
    ms_grad = (time.process_time() - c) / 20 * 1e3
    c = time.process_time()
    for _ in range(20):
        t_call.lnlike(theta)
    ms_like = (time.process_time() - c) / 20 * 1e3
    print(f"one call on one thread: lnlike {ms_like:.2f} ms CPU, lnlike and gradient {ms_grad:.2f} ms CPU")

    rows, dyn, nuts = [], None, None
    if "dynesty" in args.samplers:
        maxcall = args.dynesty_maxcall if nlive is None else None
        nlive = args.nlive if args.nlive is not None else 10 * len(names) if nlive is None else nlive
        t, c = time.perf_counter(), _cpu()
        dyn = pho.sample(like, priors, nlive=nlive, rng=np.random.default_rng(args.seed), processes=args.processes,
                         progress=False, maxcall=maxcall)
        wall, cpu = time.perf_counter() - t, _cpu() - c
        if maxcall is not None:
            res = dyn.results
            dlogz = float(res.logz[-1] - res.logz[-2]) if len(res.logz) > 1 else math.nan
            print(f"dynesty (nlive {nlive}, stopped at maxcall {maxcall}): {dyn.n_iter} iterations, {dyn.n_calls} calls, "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU; {dyn.n_calls / max(dyn.n_iter, 1):.1f} calls and "
                  f"{1e3 * wall / max(dyn.n_iter, 1):.1f} ms wall per iteration; ln Z so far {dyn.logz:.1f}, "
                  f"last ln Z step {dlogz:.3g}; ln L of the live points up to {float(np.max(res.logl)):.1f} "
                  f"(optimum {best.lnlike:.1f})")
            dyn = None
        else:
            rows.append(("dynesty", wall, cpu, dyn.n_calls, dyn.n_effective, dyn.n_effective))
    if "nuts" in args.samplers:
        t, c = time.perf_counter(), _cpu()
        nuts = pho.sample_nuts(like, priors, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed,
                               processes=args.processes, progress=False, theta0=theta,
                               target_accept=args.target_accept,
                               init_cov=best.cov if args.init_cov == "fisher" else None)
        wall, cpu = time.perf_counter() - t, _cpu() - c
        d = nuts.diagnostics
        rows.append(("NUTS", wall, cpu, nuts.n_calls, min(v["ess_bulk"] for v in d.values()),
                     min(v["ess_tail"] for v in d.values())))

    if dyn is not None and nuts is not None:
        print(f"{'parameter':16s} {'dynesty mean':>14s} {'std':>10s} {'NUTS mean':>14s} {'std':>10s} "
              f"{'dmean/std':>9s} {'std ratio':>9s} {'R-hat':>6s} {'ESS bulk':>8s}")
        worst_shift, worst_ratio = 0.0, 1.0
        for n in names:
            a, b = dyn.summary[n], nuts.summary[n]
            shift = b["mean"] - a["mean"]
            if n.endswith(".pa"):
                shift = (shift + math.pi / 2) % math.pi - math.pi / 2
            shift /= a["std"]
            ratio = b["std"] / a["std"]
            worst_shift = max(worst_shift, abs(shift))
            worst_ratio = ratio if abs(ratio - 1) > abs(worst_ratio - 1) else worst_ratio
            d = nuts.diagnostics[n]
            print(f"{n:16s} {a['mean']:14.8g} {a['std']:10.3g} {b['mean']:14.8g} {b['std']:10.3g} "
                  f"{shift:+9.2f} {ratio:9.3f} {d['rhat']:6.3f} {d['ess_bulk']:8.0f}")
        print(f"largest |dmean|/std {worst_shift:.2f}; std ratio furthest from 1: {worst_ratio:.3f}")
    elif nuts is not None:
        d = nuts.diagnostics
        order = sorted(names, key=lambda n: d[n]["ess_bulk"])
        print("NUTS, the five parameters of smallest bulk ESS, and (posterior mean - truth) / posterior std:")
        tv = dict(zip(truth.parameter_names, truth.get_vector()))
        for n in order[:5]:
            s = nuts.summary[n]
            pull = (s["mean"] - tv[n]) / s["std"] if n in tv else math.nan
            print(f"  {n:16s} mean {s['mean']:.6g} std {s['std']:.3g} R-hat {d[n]['rhat']:.4f} "
                  f"ESS bulk {d[n]['ess_bulk']:.0f} tail {d[n]['ess_tail']:.0f} pull {pull:+.2f}")
        pulls = np.array([(nuts.summary[n]["mean"] - tv[n]) / nuts.summary[n]["std"] for n in names if not n.endswith(".pa")])
        print(f"  pulls of all {len(pulls)} parameters but pa: mean {pulls.mean():+.2f}, std {pulls.std(ddof=1):.2f}, "
              f"max |pull| {np.max(np.abs(pulls)):.2f}")
    print(f"{'sampler':8s} {'wall s':>8s} {'CPU s':>8s} {'lnL calls':>10s} {'worst ESS':>10s} {'(tail)':>7s} "
          f"{'calls/1000 ESS':>15s} {'wall s/1000 ESS':>16s} {'CPU s/1000 ESS':>15s}")
    for label, wall, cpu, calls, ess, tail in rows:
        print(f"{label:8s} {wall:8.1f} {cpu:8.1f} {calls:10d} {ess:10.0f} {tail:7.0f} {1000 * calls / ess:15.0f} "
              f"{1000 * wall / ess:16.1f} {1000 * cpu / ess:15.1f}")
    if nuts is not None:
        st = nuts.settings
        print(f"NUTS: {args.chains} chains x {args.draws} draws after {args.tune} warm-up, init_cov {args.init_cov}, "
              f"shape parameters {args.shape_parameters if name in ('patch', 'demo') else 'q_pa'}, "
              f"target_accept {args.target_accept}; {st['divergences']} divergences, mean tree depth "
              f"{st['mean_tree_depth']:.2f} ({st['max_tree_depth_hits']} at the maximum), max R-hat "
              f"{max(v['rhat'] for v in nuts.diagnostics.values()):.4f}, step sizes "
              f"{[round(x, 3) for x in st['step_size']]}, calls in warm-up "
              f"{nuts.n_calls - int(nuts.results['n_leapfrog'].sum())}")
    if len(rows) == 2:
        print(f"dynesty/NUTS calls per 1000 ESS: {(rows[0][3] / rows[0][4]) / (rows[1][3] / rows[1][4]):.2f}")
    if dyn is not None:
        print(f"dynesty: nlive {nlive}, ln Z {dyn.logz:.2f} +/- {dyn.logz_err:.2f}")
    sys.stdout.flush()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=["galaxy", "demo"])
    p.add_argument("--samplers", nargs="+", choices=["dynesty", "nuts"], default=["dynesty", "nuts"])
    p.add_argument("--draws", type=int, default=1000, help="NUTS draws per chain (default %(default)s)")
    p.add_argument("--tune", type=int, default=1000, help="NUTS warm-up per chain (default %(default)s)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--init-cov", choices=["none", "fisher"], default="none",
                   help="NUTS's first metric: the curvature at the start (none) or the optimizer's inverse Fisher matrix")
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--shape-parameters", choices=["q_pa", "g1_g2", "eta"], default="q_pa",
                   help="patch and demo: the shape parameterization sampled (default %(default)s)")
    p.add_argument("--dynesty-maxcall", type=int, default=5000,
                   help="patch only: dynesty's calls before it is stopped (default %(default)s)")
    p.add_argument("--nlive", type=int, default=None,
                   help="dynesty's live points on every problem (default: the problem's own, 150 galaxy, 45 demo, "
                        "10 per parameter patch)")
    p.add_argument("--processes", type=int, default=2, help="processes for both samplers (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for name in args.problems:
        run(name, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
