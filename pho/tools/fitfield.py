"""Fit a whole field: ``python -m pho.tools.fitfield``.

Patches of blended sources across mosaics, bands and dithered exposures, fitted on Dask (a local
cluster by default, any cluster with ``--scheduler``); writes ``catalog.fits``, a residual image
per exposure, ``patches.png`` and a log. ``--demo`` simulates a field from the real GOODS-S source
list and fits it. Method: ``docs/fields.md``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser", "flux_recovery"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pho.tools.fitfield",
        description="Fit every source of a field (mosaics or single exposures, several bands) in patches of "
        "blended sources on Dask; writes a FITS catalog, residual images and a patch map.",
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--demo", action="store_true",
                     help="simulate a field from the real GOODS-S source list (403 sources, 2 bands x 2 dithered "
                     "exposures) under OUTDIR/demo_data and fit it (optimize only unless --sampler is given)")
    src.add_argument("--demo-tiles", type=int, default=1, help="copies of the demo's source list (1, 4, 16; default 1)")
    src.add_argument("--exposure", nargs=4, action="append", metavar=("SCI", "NOISE", "PSF", "BAND"),
                     help="science FITS (whole mosaic or single exposure, with its WCS), noise FITS, PSF mixture FITS, "
                     "band; repeat for each exposure")
    src.add_argument("--sources", help="source list, FITS or CSV (id, ra, dec, type, flux_<band>, q, pa, n, rh)")
    src.add_argument("--noise-kind", choices=("err", "ivar"), default="err",
                     help="what the NOISE files hold (default %(default)s)")
    out = p.add_argument_group("outputs")
    out.add_argument("--outdir", default="pho_field_output", help="output folder (default %(default)s)")
    out.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run")
    out.add_argument("--resume", action="store_true", help="continue an interrupted run in OUTDIR")
    out.add_argument("--no-residuals", action="store_true", help="skip the residual images")
    out.add_argument("--no-plots", action="store_true", help="skip patches.png")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    run = p.add_argument_group("computing")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="worker processes of the local Dask cluster (default: one per available core)")
    where.add_argument("--scheduler", default=None,
                       help="address of an existing Dask scheduler (tcp://host:8786); workers must see the input files")
    fit = p.add_argument_group("fitting")
    fit.add_argument("--no-sample", action="store_true", help="optimize only (no posterior sampling)")
    fit.add_argument("--sampler", choices=("auto", "dynesty", "nuts"), default=None,
                     help="posterior sampler per patch (default auto: dynesty for small patches, NUTS for large ones "
                     "where available; the demo samples only when this is given)")
    fit.add_argument("--max-patch-sources", type=int, default=12, help="largest patch (default %(default)s)")
    fit.add_argument("--max-passes", type=int, default=8, help="passes over the field at most (default %(default)s)")
    fit.add_argument("--tol-sigma", type=float, default=0.1,
                     help="converged when no parameter moves by more than this many sigma in a pass (default %(default)s)")
    fit.add_argument("--position-box-arcsec", type=float, default=None,
                     help="half-width of the position prior box (default 3 pixels)")
    fit.add_argument("--nlive", type=int, default=None, help="dynesty live points per patch (default max(50, 10 P))")
    fit.add_argument("--seed", type=int, default=1, help="sampler seed (default %(default)s)")
    fit.add_argument("--fit-sky", choices=("none", "constant", "plane"), default="none",
                     help="fit a sky background per patch and exposure with the sources: a constant level (counts per "
                     "pixel) or a plane (level and x, y slopes); the levels are written per patch to catalog.fits, HDU "
                     "SKY (default %(default)s: the data are taken as sky-subtracted); from the second pass on each "
                     "patch's skies start from its previous fit")
    # choices: pho.field.driver.FIELD_SHAPE_PARAMETERS (not imported here, so that --help stays light)
    fit.add_argument("--shape-parameters", choices=("auto", "q_pa", "eta"), default="auto",
                     help="galaxy shape parameters of the patch fits: q_pa (axis ratio and position angle) or eta "
                     "(conformal shear eta_plus, eta_cross, |eta| = -ln q; smooth through round shapes); the catalog "
                     "always has q and pa, and with eta also eta_plus_*, eta_cross_* (default %(default)s: eta when "
                     "the patches are sampled, q_pa when only optimized)")
    return p


def flux_recovery(catalog, truth_path, bands, snr_min: float = 20.0) -> dict:
    """Flux pulls of a fitted catalog against the truth, per band, for sources with S/N > ``snr_min``.

    Returns
    -------
    dict
        ``band -> {"n", "within_3sigma", "median_abs_rel_error", "median_pull", "std_pull"}`` with
        S/N = flux_best / flux_err.
    """
    from astropy.table import Table

    truth = Table.read(truth_path)
    out = {}
    for b in bands:
        best = np.asarray(catalog[f"flux_{b}_best"], float)
        err = np.asarray(catalog[f"flux_{b}_err"], float)
        true = np.asarray(truth[f"flux_{b}"], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = best / err
            sel = np.isfinite(snr) & (snr > snr_min)
            pull = (best - true) / err
            rel = np.abs(best - true) / np.abs(true)
        out[b] = {"n": int(sel.sum()), "within_3sigma": float(np.mean(np.abs(pull[sel]) < 3)) if sel.any() else np.nan,
                  "median_abs_rel_error": float(np.median(rel[sel])) if sel.any() else np.nan,
                  "median_pull": float(np.median(pull[sel])) if sel.any() else np.nan,
                  "std_pull": float(np.std(pull[sel])) if sel.any() else np.nan}
    return out


def _setup_logging(outdir: Path, quiet: bool) -> Path:
    log_path = outdir / "fitfield.log"
    logger = logging.getLogger("pho.field")
    logger.setLevel(logging.DEBUG)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fh = logging.FileHandler(log_path)
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    sh = logging.StreamHandler(sys.stdout)
    sh.setLevel(logging.WARNING if quiet else logging.INFO)
    sh.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(fh)
    logger.addHandler(sh)
    logger.propagate = False
    return log_path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo and (args.exposure or args.sources):
        parser.error("--demo simulates its own exposures and sources; drop --exposure/--sources")
    if not args.demo and not (args.exposure and args.sources):
        parser.error("give --demo, or at least one --exposure SCI NOISE PSF BAND and --sources FILE")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in OUTDIR and --overwrite replaces it; give one of them")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers {args.workers} must be at least 1")
    if args.max_patch_sources < 1:
        parser.error(f"--max-patch-sources {args.max_patch_sources} must be at least 1")
    for f in [f for e in (args.exposure or []) for f in e[:3]] + ([args.sources] if args.sources else []):
        if not Path(f).exists():
            parser.error(f"input file {f} does not exist")

    from astropy.table import Table

    from pho.errors import PhoError
    from pho.field import FieldExposure, FieldSettings, fit_field
    from pho.runlock import clean_temporary_files, output_lock

    outdir = Path(args.outdir)
    catalog_path = outdir / "catalog.fits"
    if catalog_path.exists() and not (args.overwrite or args.resume):
        parser.error(f"{catalog_path} exists; pass --overwrite to replace it, --resume to finish an interrupted run, "
                     "or choose another --outdir")
    sampler = None if args.no_sample else (args.sampler or (None if args.demo else "auto"))
    settings = FieldSettings(
        max_patch_sources=args.max_patch_sources, max_passes=args.max_passes, tol_sigma=args.tol_sigma,
        sampler=sampler, position_box_arcsec=args.position_box_arcsec, nlive=args.nlive, seed=args.seed,
        fit_sky=args.fit_sky, shape_parameters=args.shape_parameters,
    )
    cmdline = "python -m pho.tools.fitfield " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with output_lock(outdir):
            clean_temporary_files(outdir)
            log_path = _setup_logging(outdir, args.quiet)
            log = logging.getLogger("pho.field")
            log.info("pho fitfield: %s", cmdline)
            truth_path = None
            if args.demo:
                from pho.field.simulate import simulate_goodss_field

                sim = simulate_goodss_field(outdir / "demo_data", tiles=args.demo_tiles, overwrite=True, progress=log.info)
                exposure_args, sources_path, truth_path = sim.exposures, sim.initial_path, sim.truth_path
                noise_kind = "err"
            else:
                exposure_args, sources_path, noise_kind = args.exposure, args.sources, args.noise_kind
            exposures = [FieldExposure.open(sci, noise, psf, band, noise_kind=noise_kind)
                         for sci, noise, psf, band in exposure_args]
            table = fit_field(
                exposures, sources_path, scheduler=args.scheduler, workers=args.workers, outdir=outdir, settings=settings,
                resume=args.resume, overwrite=args.overwrite, residuals=not args.no_residuals, plots=not args.no_plots,
                progress=not args.quiet, run_info={"CMDLINE": cmdline, "SOURCES": str(sources_path)},
            )
            if truth_path is not None:
                bands = list(dict.fromkeys(e.band for e in exposures))
                for band, r in flux_recovery(table, truth_path, bands).items():
                    log.info("demo %s: %d sources with S/N > 20: %.1f%% of flux pulls within 3 sigma, median |flux "
                             "error| %.2f%%, pulls median %+.2f std %.2f", band, r["n"], 100 * r["within_3sigma"],
                             100 * r["median_abs_rel_error"], r["median_pull"], r["std_pull"])
            if args.fit_sky != "none":
                sky = Table.read(catalog_path, hdu="SKY")
                for e in sorted(set(int(k) for k in sky["exposure"])):
                    rows = sky[sky["exposure"] == e]
                    level = np.asarray(rows["level_best"], float)
                    log.info("sky of exposure %d (%s): %d patch cutouts, level median %.4g, range %.4g to %.4g counts "
                             "per pixel (per patch: catalog.fits, HDU SKY)", e, rows["name"][0], len(rows),
                             float(np.median(level)), float(level.min()), float(level.max()))
            log.info("wrote %s (%d sources), %s, residual images and the log %s in %.1f s", catalog_path, len(table),
                     outdir / "patches.png", log_path, time.perf_counter() - t0)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished patches are saved under {outdir / 'work'}; continue with\n    {cmdline}{'' if args.resume else ' --resume'}",
              file=sys.stderr)
        return 130
    except PhoError as exc:
        print(f"fitfield: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
