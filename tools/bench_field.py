"""Benchmark of the field fit on the simulated GOODS-S field (issue: whole fields).

Simulates the field (``pho.field.simulate``: 403 real GOODS-S sources, F125W and F160W at
0.06"/pix, two dithered and rotated exposures per band, 3-Gaussian PSFs, median S/N 30), fits it
optimize-only with a local Dask cluster of each requested size, and prints per run: wall time,
passes, patches fitted per pass, time per source, peak memory of a worker, flux pulls for
S/N > 20 and chi^2 per pixel of the residual of each exposure. ``--tiles 4 16`` repeats the
field side by side for the scaling measurement.

    python tools/bench_field.py                         # 1 and 2 workers on the 403-source field
    python tools/bench_field.py --workers 2 --tiles 1 4 # scaling with the number of sources
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_once(sim, workers: int, outdir: Path) -> dict:
    from astropy.io import fits

    from pho.errors import PhoWarning
    from pho.field import FieldSettings, connect, fit_field
    from pho.tools.fitfield import flux_recovery

    t0 = time.perf_counter()
    with connect(workers=workers) as client:
        t_start = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PhoWarning)
            t1 = time.perf_counter()
            table = fit_field(sim.exposures, sim.initial_path, client=client, outdir=outdir, overwrite=True,
                              settings=FieldSettings(), plots=False, progress=False)
            wall = time.perf_counter() - t1
        peaks = client.run(_peak_rss_mib)
    header = fits.getheader(outdir / "catalog.fits", "CATALOG")
    passes = [(header[f"PASS{p}_PATCHES"], header[f"PASS{p}_CHANGE"]) for p in range(1, header["NPASSES"] + 1)]
    chi2 = [(header[f"RES{k}_CHI2"], header[f"RES{k}_CHI2SRC"]) for k in range(len(sim.exposures))]
    return {"workers": workers, "sources": len(table), "wall_s": wall, "cluster_start_s": t_start,
            "per_source_ms": 1e3 * wall / len(table), "peak_worker_mib": max(peaks.values()), "passes": passes,
            "converged": header["CONVERGED"], "recovery": flux_recovery(table, sim.truth_path, ["F125W", "F160W"]),
            "chi2": chi2, "failed": int(sum(bool(f) for f in table["flag"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local cluster sizes (default 1 2)")
    p.add_argument("--tiles", type=int, nargs="+", default=[1], help="field copies (1, 4, 16; default 1)")
    p.add_argument("--workdir", default=None, help="folder for the simulated data and outputs (default: a temp dir)")
    args = p.parse_args(argv)
    logging.getLogger("pho.field").setLevel(logging.WARNING)
    from pho.field import simulate_goodss_field

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pho_bench_field_"))
    print(f"bench_field: data and outputs under {work}")
    rows = []
    for tiles in args.tiles:
        t = time.perf_counter()
        sim = simulate_goodss_field(work / f"sim{tiles}", tiles=tiles, overwrite=True)
        print(f"simulated {sim.n_sources} sources in {time.perf_counter() - t:.1f} s; noise per pixel {sim.noise_sigma}")
        for workers in args.workers:
            r = run_once(sim, workers, work / f"out{tiles}_w{workers}")
            rows.append(r)
            rec = r["recovery"]
            print(f"\n{r['sources']} sources, {workers} worker(s): {r['wall_s']:.1f} s wall ({r['per_source_ms']:.0f} ms per "
                  f"source; cluster start {r['cluster_start_s']:.1f} s not counted), peak worker memory "
                  f"{r['peak_worker_mib']:.0f} MiB, {r['failed']} failed")
            print("  passes (patches fitted, largest change in sigma): "
                  + ", ".join(f"{n} / {c:.3g}" for n, c in r["passes"]) + f"; converged {r['converged']}")
            for band, v in rec.items():
                print(f"  {band}: {v['n']} sources with S/N > 20: {100 * v['within_3sigma']:.1f}% of pulls within 3 sigma, "
                      f"median |flux error| {100 * v['median_abs_rel_error']:.2f}%, pull median {v['median_pull']:+.2f} "
                      f"std {v['std_pull']:.2f}")
            print("  chi2/pixel of the residual per exposure (all pixels / pixels where the model > noise): "
                  + ", ".join(f"{a:.3f} / {b:.3f}" for a, b in r["chi2"]))
    if len(args.workers) > 1:
        by = {(r["sources"], r["workers"]): r["wall_s"] for r in rows}
        for n in sorted({r["sources"] for r in rows}):
            w = sorted(args.workers)
            if (n, w[0]) in by and (n, w[-1]) in by:
                print(f"\nspeed-up {w[0]} -> {w[-1]} workers at {n} sources: {by[(n, w[0])] / by[(n, w[-1])]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
