"""Time nested sampling of the demo problem with 1 and with several worker processes.

    python tools/bench_sampling.py [--maxcall 10000] [--processes 1 2]

Builds ``pho.demo``'s problem (20 parameters, four 32 x 32 exposures), starts dynesty (static,
rwalk, nlive 45, the main job's settings) from priors centred on the truth, stops after
``--maxcall`` likelihood calls, and prints wall time and milliseconds per likelihood call for each
process count, with the likelihood's own single-call cost (1 thread, and all threads) beside it
and the render time of one exposure split by integration order.
The same seed is used for every count; the runs differ only in how calls are spread over cores.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def _per_call_ms(like, theta, repeat: int = 200) -> float:
    like.lnlike(theta)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            like.lnlike(theta)
        best = min(best, (time.perf_counter() - t) / repeat)
    return 1e3 * best


def render_by_order(like, theta) -> None:
    """Print the render time of the first exposure's image Gaussians, split by integration order."""
    from pho import _reference as ref

    one = like.with_workers(1)
    em, shape = one._models[0], one.exposures[0].shape
    g, _ = em.forward(one._scene_model.prepare(theta))
    keep = em.significant(g)
    g = np.ascontiguousarray(g if keep is None else g[keep])
    be = one._backend
    boxes = np.ascontiguousarray(ref.pixel_boxes(g, shape), dtype=np.intp)
    orders = np.ascontiguousarray(ref.integration_orders(g), dtype=np.int32)
    img = np.zeros(shape)
    print(f"  render of exposure 0 ({len(g)} image Gaussians), 1 thread, by integration order "
          "(0 = second-order correction, n = n x n Gauss-Legendre):")
    for order in np.unique(orders):
        sel = orders == order
        gs, bs, os_ = (np.ascontiguousarray(a[sel]) for a in (g, boxes, orders))
        npix = ref.box_pixel_count(bs)
        ms = min(_time_ms(lambda: be._k.render_image(gs, bs, os_, be._nodes, be._wts, img, 1)) for _ in range(3))
        print(f"    order {order}: {int(sel.sum()):4d} Gaussians, {npix:6d} Gaussian-pixels, {ms * 1e3:7.1f} us "
              f"({ms * 1e6 / max(npix, 1):.2f} ns per Gaussian-pixel)")


def _time_ms(func, repeat: int = 200) -> float:
    func()
    t = time.perf_counter()
    for _ in range(repeat):
        func()
    return 1e3 * (time.perf_counter() - t) / repeat


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maxcall", type=int, default=10000, help="likelihood calls per run (default %(default)s)")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="process counts to time (default: 1 and the number of available cores)")
    args = parser.parse_args(argv)

    import pho
    from pho._backends import available_backends, resolve_workers
    from pho.demo import build_demo
    from pho.priors import default_priors
    from pho.sample import resolve_processes, sample

    cores = resolve_processes(None)
    counts = args.processes or sorted({1, cores})
    backend = "cpu" if "cpu" in available_backends() else "reference"
    problem = build_demo()
    like = pho.Likelihood(problem.truth, problem.exposures, backend=backend)
    theta = problem.truth.get_vector()
    priors = default_priors(like, theta=theta)
    print(f"bench_sampling: pho {pho.__version__}, backend {backend}, {cores} available core(s), "
          f"demo problem ({like.n_params} parameters, {len(like.exposures)} exposures of "
          f"{like.exposures[0].shape[0]}x{like.exposures[0].shape[1]}), nlive 45, rwalk, maxcall {args.maxcall}")
    print(f"  one lnlike call: {_per_call_ms(like.with_workers(1), theta):.3f} ms on 1 thread, "
          f"{_per_call_ms(like, theta):.3f} ms on {resolve_workers(None)} thread(s)")
    if backend == "cpu":
        render_by_order(like, theta)
    for n in counts:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The sampling was stopped short")
            res = sample(like, priors, nlive=45, maxcall=args.maxcall, processes=n,
                         rng=np.random.default_rng(1), progress=False)
        threads = resolve_workers(None) if n == 1 else 1
        print(f"  processes {n} (kernel threads each: {threads}): {res.time_s:6.1f} s for {res.n_calls} calls = "
              f"{1e3 * res.time_s / res.n_calls:.3f} ms per call (wall), {res.n_iter} iterations")
    print(f"  (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; the wall time includes starting the workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
