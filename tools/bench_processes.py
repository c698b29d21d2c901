"""Time dynesty on one galaxy with and without worker processes, over stamp sizes (a script, never a test).

    python tools/bench_processes.py [--sizes 32 64 96 128] [--processes 1 2]

For each stamp size, simulates the galaxy of ``examples/nested_sampling.py`` (imported from it) in
two size x size exposures, times one likelihood call on one thread (as ``pho.sample`` does for
``processes=None``), then runs the example's sampling (static dynesty, rwalk, nlive 150, priors
around the truth, seed 1) to the end with each process count, and prints the wall time, the calls
and the ratio to one process. The wall time includes starting the workers. This is what
``pho.sample.PROCESSES_MIN_CALL_MS`` is chosen from.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nested_sampling.py"


def load_example():
    """examples/nested_sampling.py as a module (its simulate and best_fit_and_priors)."""
    spec = importlib.util.spec_from_file_location("nested_sampling_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128],
                        help="stamp sizes, pixels (default %(default)s)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts to time (default %(default)s)")
    args = parser.parse_args(argv)

    import pho
    from pho._backends import available_backends, available_cores
    from pho.priors import default_priors
    from pho.sample import PROCESSES_MIN_CALL_MS, _call_ms, _LogLike, sample

    example = load_example()
    backend = "cpu" if "cpu" in available_backends() else "reference"
    print(f"bench_processes: pho {pho.__version__}, backend {backend}, {available_cores()} available core(s), "
          f"the example's galaxy in two exposures, dynesty nlive 150 rwalk; pho.sample(processes=None) starts "
          f"workers from {PROCESSES_MIN_CALL_MS} ms per call")
    for size in args.sizes:
        truth, exposures = example.simulate(np.random.default_rng(42), size)
        like = pho.Likelihood(truth, exposures, backend=backend)
        theta = truth.get_vector()
        call_ms = _call_ms(_LogLike(like.with_workers(1)), theta, max_calls=300, budget_s=1.0)
        priors = default_priors(like, theta=theta, overrides={"rh": (0.02, 1.0)})
        first = None
        for n in args.processes:
            t0 = time.perf_counter()
            res = sample(like, priors, nlive=150, processes=n, rng=np.random.default_rng(1), progress=False)
            wall = time.perf_counter() - t0
            first = first or wall
            print(f"  {size:4d} x {size:<4d} one call {call_ms:.3f} ms, processes {n}: {wall:6.2f} s, "
                  f"{res.n_calls} calls, ln Z {res.logz:.2f}, time / time with {args.processes[0]} process(es) "
                  f"{wall / first:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
