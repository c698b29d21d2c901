"""Memory of the field fit's worker work, outside Dask: one process fits the largest patches of a
simulated field and computes the residual tiles of one exposure, printing its resident memory
(peak, anonymous, file-backed) after each step. Comparing fields of 1x and 4x the sources shows
whether the work per patch depends on the size of the mosaics.

    python tools/bench_field.py --workers 2 --tiles 1 4 --workdir /tmp/bf   # makes /tmp/bf/sim1, /tmp/bf/sim4
    python tools/bench_field_memory.py /tmp/bf/sim1 /tmp/bf/sim4
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def _status() -> dict:
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f if line.startswith(keys)}


def measure(sim_dir: str, n_patches: int) -> None:
    from pho.field.driver import FieldRun, FieldSettings, _as_exposures, _as_sources, _task, plan_field
    from pho.field.output import _tile_residual
    from pho.field.patchfit import fit_patch
    from pho.field.patches import distance_to_box
    from pho.field.simulate import SIM_BANDS, SIM_DITHERS

    bands = list(SIM_BANDS)
    exposures = _as_exposures([(f"{sim_dir}/{b}_e{k}_sci.fits", f"{sim_dir}/{b}_e{k}_err.fits", f"{sim_dir}/psf_{b}.fits", b)
                               for b in bands for k in range(len(SIM_DITHERS))])
    sources = _as_sources(f"{sim_dir}/initial.fits", bands)
    settings = FieldSettings()
    patches, flags, blend, light = plan_field(exposures, sources, settings)
    run = FieldRun(exposures=exposures, initial=sources, current=sources.copy(),
                   sigma=np.full((len(sources), len(bands) + 6), np.nan), patches=patches, patch_of=None, flags=flags,
                   light_radius_arcsec=light, blend_radius_arcsec=blend, settings=settings)
    print(f"{sim_dir}: {len(sources)} sources, {len(patches)} patches")
    print(f"  after planning: {_status()} MiB")
    warnings.simplefilter("ignore")
    for p in sorted(patches, key=lambda p: -p.n_pixels)[:n_patches]:
        fit_patch(_task(p, 1, run, None, {}))
    print(f"  after fitting the {n_patches} largest patches: {_status()} MiB")
    e = exposures[1]
    ny, nx = e.shape
    x, y = e.sky_to_pixel(sources.ra, sources.dec)
    reach = light / e.pixel_scale_arcsec
    for y0 in range(0, ny, 512):
        for x0 in range(0, nx, 512):
            box = (x0, y0, min(nx, x0 + 512), min(ny, y0 + 512))
            near = np.flatnonzero(distance_to_box(x, y, box) < reach)
            _tile_residual(e, box, sources.subset(near) if near.size else None, None)
    print(f"  after the residual tiles of exposure 1 ({nx} x {ny} pixels): {_status()} MiB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sim_dirs", nargs="+", help="folders written by pho.field.simulate_goodss_field")
    p.add_argument("--patches", type=int, default=15, help="largest patches to fit (default %(default)s)")
    args = p.parse_args(argv)
    for d in args.sim_dirs:
        measure(d, args.patches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
