"""Fit a small simulated field in q_pa and in eta and compare the catalogs (a script).

Run from the repository root::

    PYTHONPATH=. python tools/field_eta_vs_q_pa.py [OUTDIR] [N_SOURCES] [SEED]

Simulates ``pho.field.simulate_goodss_field(OUTDIR/sim<N>, max_sources=N, seed=SEED)`` (default
24 sources, seed 7: the field of tests/test_field.py and tests/test_field_eta.py), fits it with
``FieldSettings(shape_parameters="q_pa")`` and ``"eta"`` on a local cluster of 2 workers, and
prints per fit its time and the fraction of pulls against the truth within 3 sigma, then per
parameter the largest and median |eta fit - q_pa fit| / q_pa error and the median error ratio.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
from astropy.table import Table

from pho.field import FieldSettings, connect, fit_field, simulate_goodss_field

KINDS = ("q", "pa", "n", "rh", "flux_F160W", "flux_F125W", "ra", "dec")


def _diff(a, b, kind):
    d = np.asarray(a, float) - np.asarray(b, float)
    return (d + math.pi / 2) % math.pi - math.pi / 2 if kind == "pa" else d


def main() -> None:
    outdir = sys.argv[1] if len(sys.argv) > 1 else "field_eta_vs_q_pa"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    sim = simulate_goodss_field(f"{outdir}/sim{n}", max_sources=n, seed=seed, overwrite=True)
    truth = Table.read(sim.truth_path)
    tables = {}
    with connect(workers=2) as client:
        for shape in ("q_pa", "eta"):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tables[shape] = table = fit_field(sim.exposures, sim.initial_path, client=client, progress=False,
                                                  settings=FieldSettings(shape_parameters=shape))
            print(f"{shape}: {time.perf_counter() - t0:.1f} s, {sum(bool(f) for f in table['flag'])} flagged")
            for kind in KINDS:
                pull = _diff(table[f"{kind}_best"], truth[kind], kind) / np.asarray(table[f"{kind}_err"], float)
                print(f"  {kind:<11s} pulls within 3 sigma {np.mean(np.abs(pull) < 3):.2f}, largest {np.nanmax(np.abs(pull)):.2f}")
    a, b = tables["q_pa"], tables["eta"]
    print("eta fit - q_pa fit, in q_pa errors:")
    for kind in KINDS:
        err = np.asarray(a[f"{kind}_err"], float)
        r = np.abs(_diff(b[f"{kind}_best"], a[f"{kind}_best"], kind)) / err
        ratio = np.median(np.asarray(b[f"{kind}_err"], float) / err)
        print(f"  {kind:<11s} largest {r.max():.3f} (source {r.argmax()}), median {np.median(r):.3f}; "
              f"median error ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
