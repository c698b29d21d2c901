"""Benchmark pho's pixel kernels and likelihood (a script that prints figures; never a test).

Run from the repository root (after ``pip install -e . --no-build-isolation``)::

    python tools/bench_kernel.py            # everything, a few minutes on 2 cores
    python tools/bench_kernel.py --quick    # fewer repeats, no 512x512 stamp

It prints, for stated scenes:

1. the machine's arithmetic bound from ``../shared/bench/gauss_limit.c`` (compiled with gcc and run
   pinned to one core, if gcc and the file are present);
2. Gaussian-pixel evaluations per second for render and for render + gradient, cpu backend on 1
   thread (pinned to one core) and on all threads, the speed-up, the NumPy reference backend's
   rate and the ratio; per integration order as well;
3. ``lnlike_and_grad`` times for (a) one Sersic in a 64x64 stamp, one band, 3-Gaussian PSF and
   (b) 20 blended Sersics seen by 4 exposures of 128x128 in 2 bands, 4-Gaussian PSFs, with a
   breakdown of where the time goes;
4. how the time grows with the number of sources (1, 10, 100) and the stamp size (32..512).

A "Gaussian-pixel evaluation" is one image Gaussian integrated over one pixel of its bounding box
(whatever the integration order); gauss_limit counts every Gaussian on every pixel of its stamp
(no boxes), so both counts are printed for its scene.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pho  # noqa: E402
from pho import _reference as ref  # noqa: E402
from pho._backends import get_backend  # noqa: E402
from pho._exact import exact_pixels  # noqa: E402

ALL_CPUS = sorted(os.sched_getaffinity(0))


def pin(cpus):
    """Pin this process (the calling thread) to ``cpus``."""
    os.sched_setaffinity(0, set(cpus))


def timeit(fn, repeat, min_time=0.2, clock=None):
    """Median seconds per call of ``fn`` over ``repeat`` batches of at least ``min_time`` s.

    ``clock`` defaults to wall time; single-thread figures pass ``time.thread_time`` (CPU time of
    this thread), which stays a per-core figure when other jobs share the machine."""
    clock = clock or time.perf_counter
    fn()
    t0 = clock()
    fn()
    one = max(clock() - t0, 1e-7)
    n = max(1, int(min_time / one))
    times = []
    for _ in range(repeat):
        t0 = clock()
        for _ in range(n):
            fn()
        times.append((clock() - t0) / n)
    return float(np.median(times))


CPU = time.thread_time  # clock for the pinned single-thread figures


# ------------------------------------------------------------------------------------------ bound
def gauss_limit(path: Path):
    """Compile and run gauss_limit.c pinned to the first core; return its printed line or a reason."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, "gcc not found: bound not measured"
    if not path.exists():
        return None, f"{path} not found: bound not measured (pass --gauss-limit PATH)"
    tmp = tempfile.mkdtemp()
    try:
        exe = os.path.join(tmp, "gl")
        cmd = [gcc, "-O3", "-march=native", "-ffast-math", "-fopenmp-simd", str(path), "-o", exe, "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            return None, f"gauss_limit did not compile: {r.stderr.strip()[:200]}"
        run = [exe]
        if shutil.which("taskset"):
            run = ["taskset", "-c", str(ALL_CPUS[0])] + run
        import resource

        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        out = subprocess.run(run, capture_output=True, text=True).stdout.strip()
        wall = time.perf_counter() - w0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        nums = [float(x) for x in out.replace(",", " ").split() if _isfloat(x)][:3]
        if cpu > 0 and len(nums) == 3:
            f = wall / cpu
            out += (f"\n  per core of CPU time (wall {wall:.2f} s, CPU {cpu:.2f} s): render {nums[0] * f:.3g} /s, "
                    f"gradient pass {nums[1] * f:.3g} /s, render+gradient {nums[2] * f:.3g} Gaussian-pixel/s")
            nums = [x * f for x in nums]
        return nums, out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _isfloat(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------ rule
def _row(fwhm_minor, q, theta, x0, y0):
    return ref.packed_gaussian(1.0, x0, y0, fwhm_minor, q, theta)


def rule_errors(fwhm, q, order=None):
    """Worst |rule/exact - 1| over pixels above 1% of the peak, over angles and sub-pixel shifts."""
    worst = 0.0
    for theta in ([0.0] if q == 1 else [0.0, 0.3, math.pi / 4, 1.2, 2.0]):
        for sx, sy in [(0.0, 0.0), (0.25, 0.25), (0.5, 0.1), (0.37, -0.41), (0.13, 0.5)]:
            size = int(2 * ref.BOX_NSIGMA * fwhm / q / ref.FWHM_PER_SIGMA) + 8
            row = _row(fwhm, q, theta, size // 2 + sx, size // 2 + sy)
            box = ref.pixel_boxes(row[None], (size, size))[0]
            o = int(ref.integration_orders(row[None])[0]) if order is None else order
            sl, dx, dy = ref._box_offsets(row, box)
            val = ref._pixel_rule(row, o, dx, dy, derivs=False)
            ii, jj = np.mgrid[sl]
            ex = exact_pixels(row, jj.astype(float), ii.astype(float))
            sel = ex > 0.01 * ex.max()
            worst = max(worst, float(np.max(np.abs(val[sel] / ex[sel] - 1))))
    return worst


def bench_rule(args):
    print("\n== 0. integration rule: worst relative error over pixels above 1% of the peak ==")
    print("(5 angles x 5 sub-pixel shifts per axis ratio; FWHM along the narrowest axis; independent integral: erf x 64-pt GL)")
    print(" FWHM px | order | q=1 rule  | q=0.3 rule | q=1 second order alone")
    for fwhm in [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 3.2, 4.0, 6.0, 8.0, 8.5, 12.0, 16.0]:
        o = int(ref.integration_orders(_row(fwhm, 1.0, 0.0, 0, 0)[None])[0])
        print(f" {fwhm:7.1f} | {o:5d} | {rule_errors(fwhm, 1.0):9.2e} | {rule_errors(fwhm, 0.3):10.2e} | "
              f"{rule_errors(fwhm, 1.0, order=0):9.2e}")


HEADER_DRIVER = r"""
#include "pho_kernel.h"
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static void run(double fwhm, int order, const double *nodes, const double *wts, int reps) {
    /* one Gaussian of this FWHM at the centre of a stamp 4 FWHM wide (whole rows, all inside its box) */
    static double img[256 * 256], w[256 * 256];
    double s = fwhm / 2.3548200450309493, g[6], tab[PHO_TAB], acc[6] = {0, 0, 0, 0, 0, 0};
    int N = (int)(4 * fwhm) + 8, i, r;
    if (N > 256) N = 256;
    g[0] = 1.0; g[1] = N / 2 + 0.3; g[2] = N / 2 + 0.2; g[3] = 1 / (s * s); g[4] = 0.1 / (s * s); g[5] = 0.8 / (s * s);
    for (i = 0; i < N * N; i++) w[i] = 0.001 * ((i * 7) % 13 - 6);
    pho_gauss_table(g, order, nodes, wts, tab);
    double t0 = now();
    for (r = 0; r < reps; r++) for (i = 0; i < N; i++) pho_render_segment(g, order, nodes, wts, tab, -g[1], i - g[2], N < PHO_SEG ? N : PHO_SEG, img + i * N);
    double t1 = now();
    for (r = 0; r < reps; r++) for (i = 0; i < N; i++) pho_gradient_segment(g, order, nodes, wts, tab, -g[1], i - g[2], N < PHO_SEG ? N : PHO_SEG, w + i * N, acc);
    double t2 = now(), n = (double)reps * N * (N < PHO_SEG ? N : PHO_SEG);
    printf("  FWHM %5.1f px, order %d, rows of %3d px: render %.2f ns/pixel, gradient %.2f ns/pixel, render+gradient %.3g Gaussian-pixel/s (check %g)\n",
           fwhm, order, N < PHO_SEG ? N : PHO_SEG, (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9, n / (t2 - t0), img[N * N / 2] + acc[0]);
}
int main(int argc, char **argv) {
    /* argv: nodes and weights of orders 3 and 5 (from numpy), so the driver needs no table of its own */
    double nodes[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0}, wts[(PHO_MAX_ORDER + 1) * PHO_MAX_ORDER] = {0};
    int k, a = 1;
    wts[0] = 1.0;
    for (k = 0; k < 3; k++) { nodes[3 * PHO_MAX_ORDER + k] = atof(argv[a++]); wts[3 * PHO_MAX_ORDER + k] = atof(argv[a++]); }
    for (k = 0; k < 5; k++) { nodes[5 * PHO_MAX_ORDER + k] = atof(argv[a++]); wts[5 * PHO_MAX_ORDER + k] = atof(argv[a++]); }
    (void)argc;
    run(32.0, 0, nodes, wts, 400);
    run(12.0, 0, nodes, wts, 2000);
    run(4.0, 3, nodes, wts, 4000);
    run(1.0, 5, nodes, wts, 20000);
    return 0;
}
"""


def header_alone():
    """Compile a C driver of pho_kernel.h with the extension's flags and run it pinned to one core."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc not found: header-alone rates not measured"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "drv.c")
        with open(src, "w") as f:
            f.write("#include <stdlib.h>\n" + HEADER_DRIVER)
        exe = os.path.join(tmp, "drv")
        flags = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
        r = subprocess.run([gcc, *flags, f"-I{REPO / 'pho' / 'include'}", src, "-o", exe, "-lm"], capture_output=True, text=True)
        if r.returncode:
            return f"driver did not compile: {r.stderr.strip()[:300]}"
        args = []
        for n in (3, 5):
            for u, w in zip(ref._NODES[n, :n], ref._WEIGHTS[n, :n]):
                args += [repr(float(u)), repr(float(w))]
        run = [exe, *args]
        if shutil.which("taskset"):
            run = ["taskset", "-c", str(ALL_CPUS[0])] + run
        return subprocess.run(run, capture_output=True, text=True).stdout.rstrip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ kernel
def limit_scene():
    """gauss_limit.c's scene: 48 Gaussians, sigma 0.8 + 0.3 g pixels, correlated, near the centre of 64x64."""
    rows = []
    for g in range(48):
        s = 0.8 + 0.3 * g
        rows.append([1.0 + g, 31.5 + 0.01 * g, 31.2 - 0.01 * g, 1 / s**2, 0.1 / s**2, 0.8 / s**2])
    return np.array(rows), (64, 64)


def order_scene(fwhm_pix, n=20, size=96):
    """``n`` round-ish Gaussians of one FWHM scattered over a ``size`` x ``size`` stamp."""
    rng = np.random.default_rng(1)
    s = fwhm_pix / ref.FWHM_PER_SIGMA
    rows = []
    for _ in range(n):
        f = np.linalg.inv(np.array([[s * s, 0.2 * s * s], [0.2 * s * s, 1.2 * s * s]]))
        rows.append([1.0, rng.uniform(10, size - 10), rng.uniform(10, size - 10), f[0, 0], f[0, 1], f[1, 1]])
    return np.array(rows), (size, size)


def box_pixels(g, shape):
    return ref.box_pixel_count(ref.pixel_boxes(ref.check_gaussians(g), shape))


def kernel_rates(backend, g, shape, repeat, clock=None):
    """(render, render + gradient) Gaussian-pixel evaluations per second."""
    w = np.random.default_rng(0).normal(size=shape)
    npix = box_pixels(g, shape)
    t_r = timeit(lambda: backend.render(g, shape), repeat, clock=clock)
    t_g = timeit(lambda: backend.gradient(g, w), repeat, clock=clock)
    return npix / t_r, npix / (t_r + t_g), t_r, t_g


def bench_kernel(args):
    print("\n== 2. pixel kernels ==")
    g, shape = limit_scene()
    npix = box_pixels(g, shape)
    orders = ref.integration_orders(g)
    print(f"scene K (gauss_limit's): {len(g)} Gaussians, sigma 0.8..14.9 px, on {shape[0]}x{shape[1]}; "
          f"orders {dict(zip(*np.unique(orders, return_counts=True)))} (0 = second order, n = n x n Gauss-Legendre); "
          f"{npix} Gaussian-pixels in boxes, {len(g) * shape[0] * shape[1]} without boxes")
    # all threads first, before this process is ever pinned: the OpenMP runtime reads the CPU mask
    # when it starts, and a team started under a one-core mask would share that core
    pin(ALL_CPUS)
    nall = len(ALL_CPUS)
    ca = get_backend("cpu", workers=nall)
    ca.min_work_per_thread = 0  # the kernels' own scaling: every call on all threads
    ra, rga, tra, tga = kernel_rates(ca, g, shape, args.repeat)
    pin(ALL_CPUS[:1])
    c1 = get_backend("cpu", workers=1)
    r1, rg1, tr1, tg1 = kernel_rates(c1, g, shape, args.repeat, clock=CPU)
    rr, rgr, _, _ = kernel_rates(get_backend("reference"), g, shape, max(1, args.repeat // 3), clock=CPU)
    pin(ALL_CPUS)
    print("(1-thread figures: CPU time of the pinned thread; all-thread figures: wall time)")
    print(f"cpu, 1 thread (pinned): render {r1:.3g} /s ({tr1 * 1e3:.3f} ms), render+gradient {rg1:.3g} /s "
          f"({(tr1 + tg1) * 1e3:.3f} ms); per core")
    print(f"cpu, {nall} threads:          render {ra:.3g} /s ({tra * 1e3:.3f} ms), render+gradient {rga:.3g} /s "
          f"({(tra + tga) * 1e3:.3f} ms); speed-up {r1 and ra / r1:.2f}x render, {rga / rg1:.2f}x render+gradient")
    # speed-up from wall times, best of many short batches for both thread counts: other jobs on a
    # shared machine only ever slow a batch down, so the minimum is the figure least disturbed by them
    w = np.random.default_rng(0).normal(size=shape)
    best = {}
    pin(ALL_CPUS)
    for nt, be in ((1, c1), (nall, ca)):
        best[nt] = min(timeit(lambda: (be.render(g, shape), be.gradient(g, w)), 1, min_time=0.05)
                       for _ in range(max(10, 4 * args.repeat)))
    print(f"speed-up 1 -> {nall} threads, render+gradient, best-of-batches wall time: {best[1] * 1e3:.3f} ms -> "
          f"{best[nall] * 1e3:.3f} ms = {best[1] / best[nall]:.2f}x")
    print(f"     as gauss_limit counts (every Gaussian on every pixel): 1 thread render "
          f"{r1 * len(g) * 4096 / npix:.3g} /s, render+gradient {rg1 * len(g) * 4096 / npix:.3g} /s")
    print(f"reference (NumPy), 1 thread: render {rr:.3g} /s, render+gradient {rgr:.3g} /s; "
          f"cpu/reference {r1 / rr:.0f}x render, {rg1 / rgr:.0f}x render+gradient")
    print("per integration order, cpu 1 thread (pinned), 20 Gaussians on 96x96:")
    pin(ALL_CPUS[:1])
    for fwhm in [0.5, 0.8, 1.5, 3.0, 6.0, 12.0]:
        go, so = order_scene(fwhm)
        r, rg, tr, tg = kernel_rates(c1, go, so, args.repeat, clock=CPU)
        o = int(ref.integration_orders(go)[0])
        print(f"  FWHM {fwhm:4.1f} px (order {o}, {o * o if o else 1} points/pixel): render {r:.3g} /s, "
              f"render+gradient {rg:.3g} /s  ({box_pixels(go, so)} Gaussian-pixels, {(tr + tg) * 1e3:.3f} ms)")
    pin(ALL_CPUS)
    return r1, rg1


# ------------------------------------------------------------------------------------------ likelihood
def _profile():
    """The default Sersic profile (``auto_profile()``, what ``pho.Sersic`` uses); with
    ``PHO_BENCH_PROFILE=table`` the shipped table at one scale (the profile before any-size)."""
    try:
        from pho.sersic import auto_profile, default_profile

        if os.environ.get("PHO_BENCH_PROFILE", "auto") == "table":
            return default_profile(), "shipped Sersic table, one scale (PHO_BENCH_PROFILE=table)"
        return auto_profile(), "default profile (auto_profile: shipped table, scale chosen per source)"
    except Exception as exc:  # noqa: BLE001 - the table may not exist yet; the stand-in is a fair workload
        from pho.profiles import AnalyticStandInProfile

        return AnalyticStandInProfile(), f"AnalyticStandInProfile (no Sersic table: {type(exc).__name__})"


def _wcs(ra, dec, size, scale_arcsec, rot_deg):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    s = scale_arcsec / 3600
    c, sn = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * sn], [s * sn, s * c]]
    return w


def make_problem(n_src, size, n_exp, bands, n_psf, seed=3, rh_arcsec=(0.15, 0.45)):
    """Sersics scattered over the central part of ``n_exp`` exposures of ``size`` x ``size`` (0.03"/pix)."""
    rng = np.random.default_rng(seed)
    prof, _ = _profile()
    ra0, dec0 = 150.1, 2.2
    half = 0.3 * size * 0.03 / 3600
    lo_n, hi_n = prof.n_range
    srcs = []
    for _ in range(n_src):
        flux = {b: float(rng.uniform(50, 200)) for b in bands}
        n = float(np.clip(rng.uniform(1.0, 4.0), lo_n + 0.01, hi_n - 0.01))
        rh = float(np.clip(rng.uniform(*rh_arcsec), prof.rh_range_arcsec[0] * 1.01, prof.rh_range_arcsec[1] * 0.99))
        srcs.append(pho.Sersic(ra0 + rng.uniform(-half, half) / math.cos(math.radians(dec0)),
                               dec0 + rng.uniform(-half, half), flux, q=float(rng.uniform(0.4, 0.9)),
                               pa=float(rng.uniform(0, math.pi)), n=n, rh=rh, profile=prof))
    scene = pho.Scene(srcs)
    fwhms = [1.4, 3.0, 6.0, 12.0][:n_psf]
    amps = np.array([0.6, 0.25, 0.1, 0.05][:n_psf])
    amps /= amps.sum()
    var = [(f / ref.FWHM_PER_SIGMA) ** 2 for f in fwhms]
    psf = pho.PSFMixture(amps, [0.0] * n_psf, [0.0] * n_psf, var, [0.0] * n_psf, [v * 0.9 for v in var])
    blanks = []
    for k in range(n_exp):
        band = bands[k % len(bands)]
        blanks.append(pho.Exposure(np.zeros((size, size)), np.full((size, size), 1.0),
                                   _wcs(ra0, dec0, size, 0.03, 17.0 * k), psf, band))
    truth = scene.get_vector()
    models = pho.Likelihood(scene, blanks, backend="cpu").model_images(truth)
    exps = [pho.Exposure(m + rng.normal(size=m.shape), b.ivar, b.wcs, b.psf, b.band) for m, b in zip(models, blanks)]
    theta = truth.copy()
    is_flux = np.array(scene.parameter_kinds) == "flux"
    theta[is_flux] *= 1.05  # off the optimum, so the gradient is not ~0
    return scene, exps, theta


def breakdown(like, theta, repeat):
    """Seconds per lnlike_and_grad spent in each step (replays its loop with timers)."""
    parts = dict.fromkeys(["check+prepare", "gaussians+jacobian", "render", "lnL+weights", "gradient kernel",
                           "chain rule"], 0.0)
    n = max(3, repeat)
    clock = CPU
    for _ in range(n):
        t0 = clock()
        th = like.scene.check_vector(theta)
        state = like._scene_model.prepare(th)
        parts["check+prepare"] += clock() - t0
        acc = np.zeros(like.n_params + 1)
        for i, (em, e) in enumerate(zip(like._models, like.exposures)):
            t0 = clock()
            g, jac = em.compute(state)
            t1 = clock()
            m = like._backend.render(g, e.shape) + e.background
            t2 = clock()
            _, w = like._dlnl_dm(i, m)
            t3 = clock()
            gg = like._backend.gradient(g, w)
            t4 = clock()
            local = np.matmul(gg[:, None, :], jac)
            acc += np.bincount(em.param_index.ravel(), weights=local.ravel(), minlength=like.n_params + 1)
            t5 = clock()
            parts["gaussians+jacobian"] += t1 - t0
            parts["render"] += t2 - t1
            parts["lnL+weights"] += t3 - t2
            parts["gradient kernel"] += t4 - t3
            parts["chain rule"] += t5 - t4
    return {k: v / n for k, v in parts.items()}


def bench_scene(label, scene, exps, theta, repeat, reference=True):
    res = {}
    pin(ALL_CPUS)
    la = pho.Likelihood(scene, exps, backend="cpu", workers=len(ALL_CPUS))
    ta = timeit(lambda: la.lnlike_and_grad(theta), repeat)
    pin(ALL_CPUS[:1])
    l1 = pho.Likelihood(scene, exps, backend="cpu", workers=1)
    t1 = timeit(lambda: l1.lnlike_and_grad(theta), repeat, clock=CPU)
    parts = breakdown(l1, theta, repeat)
    tref = None
    if reference:
        lr = pho.Likelihood(scene, exps, backend="reference")
        tref = timeit(lambda: lr.lnlike_and_grad(theta), max(1, repeat // 3), min_time=0.05, clock=CPU)
        v1, g1 = l1.lnlike_and_grad(theta)
        vr, gr = lr.lnlike_and_grad(theta)
        res["agree"] = (abs(v1 - vr) / abs(vr), float(np.max(np.abs(g1 - gr)) / np.max(np.abs(gr))))
    pin(ALL_CPUS)
    state = l1._scene_model.prepare(scene.check_vector(theta))
    G = sum(len(em.compute(state, jacobian=False)[0]) for em in l1._models)
    npix = sum(box_pixels(em.compute(state, jacobian=False)[0], e.shape) for em, e in zip(l1._models, exps))
    print(f"{label}: {len(scene.sources)} sources, {len(exps)} exposures, {G} image Gaussians, {npix} Gaussian-pixels")
    line = f"  lnlike_and_grad: cpu 1 thread (pinned) {t1 * 1e3:.3f} ms, up to {len(ALL_CPUS)} threads (fewer below MIN_WORK_PER_THREAD) {ta * 1e3:.3f} ms"
    if tref is not None:
        line += f"; reference {tref * 1e3:.1f} ms (ratio {tref / t1:.0f}x); cpu vs reference: lnL rel {res['agree'][0]:.1e}, grad {res['agree'][1]:.1e}"
    print(line)
    tot = sum(parts.values())
    print("  where the time goes (cpu, 1 thread): " + ", ".join(f"{k} {v * 1e3:.3f} ms ({100 * v / tot:.0f}%)"
                                                              for k, v in parts.items()))
    return t1, ta


def bench_likelihood(args):
    print("\n== 3. lnlike_and_grad ==")
    print(f"profile: {_profile()[1]}; pixels 0.03\"; PSF FWHMs 1.4, 3, 6 (, 12) px")
    sa = make_problem(1, 64, 1, ["F200W"], 3, rh_arcsec=(0.2, 0.2))
    bench_scene("(a) one Sersic, 64x64, one band, 3-Gaussian PSF", *sa, args.repeat)
    sb = make_problem(20, 128, 4, ["F150W", "F200W"], 4)
    bench_scene("(b) 20 blended Sersics, 4 x 128x128, 2 bands, 4-Gaussian PSF", *sb, args.repeat,
                reference=not args.quick)


def bench_scaling(args):
    print("\n== 4. scaling (cpu, lnlike_and_grad, 1 thread pinned [CPU time] / up to all threads [wall time]) ==")
    for n_src in [1, 10, 100]:
        s = make_problem(n_src, 128, 1, ["F200W"], 3)
        like1 = pho.Likelihood(s[0], s[1], backend="cpu", workers=1)
        pin(ALL_CPUS[:1])
        t1 = timeit(lambda: like1.lnlike_and_grad(s[2]), args.repeat, clock=CPU)
        pin(ALL_CPUS)
        likea = pho.Likelihood(s[0], s[1], backend="cpu")
        ta = timeit(lambda: likea.lnlike_and_grad(s[2]), args.repeat)
        print(f"  sources {n_src:3d} on 128x128: {t1 * 1e3:8.3f} ms / {ta * 1e3:8.3f} ms")
    sizes = [32, 64, 128, 256] + ([] if args.quick else [512])
    for size in sizes:
        s = make_problem(1, size, 1, ["F200W"], 3, rh_arcsec=(0.2, 0.2))
        like1 = pho.Likelihood(s[0], s[1], backend="cpu", workers=1)
        pin(ALL_CPUS[:1])
        t1 = timeit(lambda: like1.lnlike_and_grad(s[2]), args.repeat, clock=CPU)
        pin(ALL_CPUS)
        likea = pho.Likelihood(s[0], s[1], backend="cpu")
        ta = timeit(lambda: likea.lnlike_and_grad(s[2]), args.repeat)
        print(f"  1 source on {size:3d}x{size:<3d}: {t1 * 1e3:8.3f} ms / {ta * 1e3:8.3f} ms")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="timing batches per figure (median reported; default %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer repeats, skip the 512x512 stamp and scene (b)'s reference")
    p.add_argument("--gauss-limit", type=Path, default=REPO.parent / "shared" / "bench" / "gauss_limit.c",
                   help="path to gauss_limit.c (default %(default)s)")
    p.add_argument("--only", choices=["rule", "bound", "kernel", "likelihood", "scaling"], action="append",
                   help="run only these sections (repeatable)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeat = min(args.repeat, 3)
    from pho import _render

    omp, nmax = _render.openmp_info()
    print(f"pho {pho.__version__}; cpu extension built with OpenMP: {omp}; cores available: {len(ALL_CPUS)}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    only = set(args.only or ["rule", "bound", "kernel", "likelihood", "scaling"])
    if "rule" in only:
        bench_rule(args)
    if "bound" in only:
        print("\n== 1. bound: gauss_limit.c (gcc -O3 -march=native -ffast-math, one pinned core) ==")
        nums, text = gauss_limit(args.gauss_limit)
        print(text)
    if "kernel" in only:
        print("\n== 2a. the header alone: a C driver of pho_kernel.h (extension's flags, one pinned core) ==")
        print(header_alone())
        bench_kernel(args)
    if "likelihood" in only:
        bench_likelihood(args)
    if "scaling" in only:
        bench_scaling(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
