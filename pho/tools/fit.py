"""The main job: optimize, then sample, a scene in a set of exposures; write catalog and plots.

Usage::

    python -m pho.tools.fit --demo
    python -m pho.tools.fit --exposure sci.fits err.fits psf_mix.fits F814W \\
                            [--exposure ...] --sources sources.csv --outdir out/

Each ``--exposure`` takes four values: the science image (counts, with a celestial WCS), its
noise map (1-sigma errors in counts; ``--noise-kind ivar`` for inverse variance), the PSF
mixture (a FITS file written by ``python -m pho.tools.fitpsf``; a PSF grid written with
``--hdus`` works too, in the science image's pixel frame) and the band name. The source
list (FITS or CSV) has columns ``ra``, ``dec``, ``type`` (``sersic`` or ``point``),
``flux_<band>`` and, for galaxies, ``q``, ``pa`` (rad), ``n``, ``rh`` (arcsec).

Sampling (``--sampler auto``, the default): dynesty nested sampling (it also gives the evidence)
for problems of up to ``pho.sample.DYNESTY_MAX_PARAMS`` = 10 parameters, NUTS on the analytic
gradient (:func:`pho.sample_nuts`; no evidence, far fewer likelihood calls per effective sample in
many dimensions, R-hat and ESS per parameter) above, as the field fitter does for each patch.
Options of one sampler choose it (``--nlive`` dynesty, ``--draws`` NUTS); ``--sampler dynesty`` or
``--sampler nuts`` forces one. The demo (20 parameters) is sampled with NUTS: 2 chains of 500 draws
after 300 warm-up iterations, whose worst effective sample size (557-950 over seeds 1-5) is in or
above the range of dynesty with nlive 45, the demo's earlier default (432-598 in five runs, with
widths down to 0.72 of a converged reference; docs/fitting.md).

Outputs in ``--outdir``: ``catalog.fits`` (pho.io.write_catalog), ``exposures.png`` (data,
model, residual, chi), ``corner_s<i>.png`` per source, ``trace.png`` (nested sampling) or
``chains.png`` (NUTS: traces and rank plots), ``gradients_s0.png``, and the sampler checkpoint
``sampler.pkl`` (``--resume`` continues from it; a dynesty checkpoint of another problem is
refused, naming what differs).

One run at a time per ``--outdir``: a run holds the lock file ``OUTDIR/.pho.lock`` (pid and host;
``pho.runlock``) and a second run into the same folder exits with status 1 and a message naming
the owner; the lock of a killed run is detected as stale and taken over. Hidden temporary files
left in the folder by a killed run are removed. Ctrl-C during sampling saves a checkpoint, prints
the command that resumes it and exits with status 130.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from pho.sample import DYNESTY_MAX_PARAMS, auto_sampler

__all__ = ["build_parser", "main", "run_job", "choose_backend", "resolve_sampler"]

#: NUTS defaults of the main job: draws per chain (the demo's own is smaller, to stay quick), chains,
#: and warm-up iterations above and up to ``DYNESTY_MAX_PARAMS`` parameters (the metric starts from
#: the optimizer's Fisher matrix; docs/fitting.md measures when 300 suffices).
NUTS_DRAWS, DEMO_NUTS_DRAWS, NUTS_CHAINS = 1000, 500, 2
NUTS_TUNE_MANY, NUTS_TUNE_FEW = 300, 1000

#: (flag, attribute, value when not given) of the options that belong to one sampler.
_DYNESTY_OPTIONS = (("--nlive", "nlive", None), ("--dynamic", "dynamic", False),
                    ("--sample-method", "sample_method", None), ("--dlogz", "dlogz", None), ("--maxcall", "maxcall", None))
_NUTS_OPTIONS = (("--draws", "draws", None), ("--tune", "tune", None), ("--chains", "chains", None))


def resolve_sampler(sampler: str, n_params: int | None, dynesty_options=(), nuts_options=()) -> str:
    """The sampler ``--sampler`` means for a problem of ``n_params`` parameters.

    Parameters
    ----------
    sampler : {"auto", "dynesty", "nuts"}
    n_params : int or None
        Parameters of the likelihood (sources and sky); None while they are not counted yet.
    dynesty_options, nuts_options : sequence of str
        The flags of each sampler the user gave.

    Returns
    -------
    str
        ``"dynesty"`` or ``"nuts"``: the forced one; under ``"auto"`` the sampler whose options were
        given, else :func:`pho.sample.auto_sampler` (``"auto"`` itself while ``n_params`` is None).

    Raises
    ------
    ValueError
        Options of the other sampler than the forced one, or of both under ``"auto"`` (the message
        names them and the fix).
    """
    dyn, nuts = ", ".join(dynesty_options), ", ".join(nuts_options)
    if sampler == "nuts" and dyn:
        raise ValueError(f"{dyn}: dynesty options; with --sampler nuts use --draws, --tune, --chains")
    if sampler == "dynesty" and nuts:
        raise ValueError(f"{nuts}: NUTS options; with --sampler dynesty use --nlive, --dynamic, --sample-method, --dlogz")
    if sampler != "auto":
        return sampler
    if dyn and nuts:
        raise ValueError(f"both dynesty options ({dyn}) and NUTS options ({nuts}) were given; choose one sampler with "
                         "--sampler dynesty or --sampler nuts and drop the other's options")
    if dyn:
        return "dynesty"
    if nuts:
        return "nuts"
    return "auto" if n_params is None else auto_sampler(n_params)


def choose_backend() -> str:
    """``"cpu"`` if the compiled backend is available, else ``"reference"``."""
    from pho import _backends

    return "cpu" if "cpu" in _backends.available_backends() else "reference"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pho.tools.fit",
        description="Fit a scene of galaxies and stars to exposures: L-BFGS-B optimization, then dynesty "
        "nested sampling or NUTS; writes a FITS catalog and figures.",
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--demo", action="store_true", help="run the built-in demo problem (no inputs needed)")
    src.add_argument("--demo-pix", type=int, default=32,
                     help="side of the demo's square exposures, pixels (default %(default)s)")
    src.add_argument(
        "--exposure", nargs=4, action="append", metavar=("SCI", "NOISE", "PSF", "BAND"),
        help="science FITS, noise FITS, PSF mixture FITS, band name; repeat for each exposure",
    )
    src.add_argument("--sources", help="initial source list, FITS or CSV (ra, dec, type, flux_<band>, q, pa, n, rh)")
    src.add_argument("--noise-kind", choices=("err", "ivar"), default="err",
                     help="what the NOISE files hold: 1-sigma errors or inverse variance (default %(default)s)")
    src.add_argument("--cutout", nargs=4, type=int, metavar=("X0", "Y0", "X1", "Y1"),
                     help="0-based pixel box x0 <= x < x1, y0 <= y < y1 applied to every exposure")
    out = p.add_argument_group("outputs")
    out.add_argument("--outdir", default="pho_fit_output", help="output folder (default %(default)s)")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    out.add_argument("--no-plots", action="store_true", help="skip the figures")
    run = p.add_argument_group("fitting")
    run.add_argument("--sampler", choices=("auto", "dynesty", "nuts"), default="auto",
                     help="posterior sampler: dynesty nested sampling (gives ln Z) or NUTS on the analytic gradient "
                     "(no ln Z; fewer likelihood calls in many dimensions); auto: an option of one sampler chooses "
                     f"it, else dynesty up to {DYNESTY_MAX_PARAMS} parameters and NUTS above (default %(default)s)")
    run.add_argument("--draws", type=int, default=None,
                     help=f"NUTS: draws kept per chain (default {NUTS_DRAWS}; {DEMO_NUTS_DRAWS} for --demo)")
    run.add_argument("--tune", type=int, default=None,
                     help=f"NUTS: warm-up iterations per chain (default {NUTS_TUNE_MANY} above {DYNESTY_MAX_PARAMS} "
                     f"parameters, where it sufficed on the 20-parameter demo and an 80-parameter patch, else "
                     f"{NUTS_TUNE_FEW}: 300 did not suffice on one faint galaxy; docs/fitting.md)")
    run.add_argument("--chains", type=int, default=None, help=f"NUTS: independent chains (default {NUTS_CHAINS})")
    run.add_argument("--nlive", type=int, default=None,
                     help="dynesty live points (default 45 for --demo, else 200)")
    run.add_argument("--dynamic", action="store_true", help="dynamic nested sampling instead of static")
    run.add_argument("--sample-method", default=None,
                     help="dynesty sampling method: rwalk, rslice, slice, unif, auto (default rwalk)")
    run.add_argument("--dlogz", type=float, default=None, help="stopping tolerance on ln Z (default: dynesty's)")
    run.add_argument("--maxcall", type=int, default=None,
                     help="stop sampling after this many likelihood calls (a quick look; the posterior is then "
                     "not converged; default: no limit)")
    run.add_argument("--no-sample", action="store_true", help="optimize only")
    run.add_argument("--fit-sky", choices=("none", "constant", "plane"), default="none",
                     help="fit a sky background per exposure with the sources: a constant level (counts per pixel) or "
                     "a plane (level and x, y slopes); written to catalog.fits, HDU SKY (default %(default)s)")
    run.add_argument("--shape-parameters", choices=("auto", "q_pa", "g1_g2", "eta"), default="auto",
                     help="how galaxy shapes are fitted: axis ratio and position angle, reduced shear, or conformal "
                     "shear (eta; q and pa are reported as well) (default %(default)s: eta when NUTS samples, "
                     "which mixes better in it, else q_pa)")
    run.add_argument("--position-box-arcsec", type=float, default=None,
                     help="half-width of the position prior box, arcsec (default 3 pixels)")
    run.add_argument("--backend", choices=("auto", "cpu", "reference"), default="auto",
                     help="likelihood backend (default %(default)s: cpu if compiled, else reference)")
    run.add_argument("--processes", type=int, default=None,
                     help="worker processes for sampling, each with one kernel thread (default: for NUTS one "
                     "per chain up to the available cores; for dynesty one per core if a likelihood call takes "
                     ">= 0.12 ms, else none; 1: sample in this process)")
    run.add_argument("--seed", type=int, default=1, help="random seed of the sampler (default %(default)s)")
    run.add_argument("--checkpoint-every", type=float, default=60.0,
                     help="seconds between sampler checkpoints (default %(default)s)")
    run.add_argument("--resume", action="store_true", help="resume sampling from OUTDIR/sampler.pkl")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def _fmt(value: float, err: float | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if err is None or not np.isfinite(err) or err <= 0:
        return f"{value:.6g}"
    digits = max(0, 1 - int(math.floor(math.log10(err))))
    return f"{value:.{digits}f} +/- {err:.2g}"


def _display(name: str, value: float, ref: dict) -> float:
    """Positions shown as offsets in arcsec from the reference position of the source."""
    kind = name.split(".", 1)[1]
    src = name.split(".", 1)[0]
    if kind == "ra":
        return (value - ref[f"{src}.ra"]) * 3600.0 * math.cos(math.radians(ref[f"{src}.dec"]))
    if kind == "dec":
        return (value - ref[f"{src}.dec"]) * 3600.0
    return value


def results_table(names, best=None, posterior=None, truth=None, reference=None) -> str:
    """A text table: parameter, truth, best fit +/- sigma, posterior median +/- half the 68% width.

    ``ra``/``dec`` are shown as offsets in arcsec (east, north) from ``reference`` (the truth if
    given, else the best fit), labelled ``dra"``/``ddec"``.
    """
    if reference is None:
        reference = truth if truth is not None else (dict(zip(names, best.theta)) if best is not None else None)
    rows = [("parameter", "truth", "best fit", "posterior", "(post-truth)/sig")]
    for j, name in enumerate(names):
        kind = name.split(".", 1)[1]
        label = name.replace(".ra", '.dra"').replace(".dec", '.ddec"') if kind in ("ra", "dec") else name
        scale = 3600.0 * (math.cos(math.radians(reference[name.split(".")[0] + ".dec"])) if kind == "ra" else 1.0) if kind in ("ra", "dec") else 1.0
        t = _display(name, truth[name], reference) if truth is not None and name in truth else None
        b = _fmt(_display(name, best.theta[j], reference), best.sigma[j] * scale) if best is not None else "-"
        if posterior is not None:
            s = posterior.summary[name]
            half = 0.5 * (s["p84"] - s["p16"])
            m = _display(name, s["median"], reference)
            post = _fmt(m, half * scale)
            diff = None if t is None else m - t
            if diff is not None and kind == "pa":
                diff = (diff + math.pi / 2) % math.pi - math.pi / 2  # angles modulo pi
            pull = f"{diff / (half * scale):+.2f}" if diff is not None and half > 0 else "-"
        else:
            post = "-"
            pull = "-"
            if t is not None and best is not None and best.sigma[j] > 0:
                diff = _display(name, best.theta[j], reference) - t
                if kind == "pa":
                    diff = (diff + math.pi / 2) % math.pi - math.pi / 2
                pull = f"{diff / (best.sigma[j] * scale):+.2f}"
        rows.append((label, _fmt(t) if t is not None else "-", b, post, pull))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def run_job(
    likelihood,
    outdir: Path,
    *,
    truth: dict | None = None,
    nlive: int = 200,
    sampler: str = "dynesty",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    dynamic: bool = False,
    sample_method: str = "rwalk",
    dlogz: float | None = None,
    maxcall: int | None = None,
    do_sample: bool = True,
    plots: bool = True,
    position_box_arcsec: float | None = None,
    seed: int = 1,
    checkpoint_every_s: float = 60.0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    processes: int | None = 1,
    settings: dict | None = None,
    timings: dict | None = None,
    out=None,
) -> dict:
    """Optimize, sample, write the catalog and figures; returns ``{"catalog": path, ...}``.

    ``timings`` (a dict, filled in place) gets the seconds of each stage.
    """
    from pho.errors import NOT_OVERWRITING_MSG
    from pho.fit import optimize
    from pho.io import write_catalog
    from pho.priors import default_priors
    from pho.nuts import sample_nuts, usable_covariance
    from pho.sample import sample

    timings = {} if timings is None else timings
    out = sys.stdout if out is None else out
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    catalog_path = outdir / "catalog.fits"
    if catalog_path.exists() and not overwrite:
        raise FileExistsError(NOT_OVERWRITING_MSG.format(path=catalog_path))
    checkpoint = outdir / "sampler.pkl"
    if checkpoint.exists() and not resume and not overwrite:
        raise FileExistsError(NOT_OVERWRITING_MSG.format(path=checkpoint) + " (or --resume to continue it)")

    t = time.perf_counter()
    priors = default_priors(likelihood, position_box_arcsec=position_box_arcsec)
    best = optimize(likelihood, priors, progress=progress)
    timings["optimize"] = time.perf_counter() - t
    print(f"optimize: lnL = {best.lnlike:.2f} after {best.n_calls} likelihood+gradient calls "
          f"({timings['optimize']:.1f} s); converged: {best.success}", file=out)
    if best.at_bound:
        print(f"optimize: on a prior bound: {', '.join(best.at_bound)}", file=out)

    posterior = None
    if do_sample:
        # Re-centre the position and angle priors on the best fit (the data have spoken).
        priors = default_priors(likelihood, position_box_arcsec=position_box_arcsec, theta=best.theta)
        t = time.perf_counter()
        if sampler == "nuts":
            posterior = sample_nuts(
                likelihood, priors, draws=draws, tune=tune, chains=chains, seed=seed, processes=processes,
                checkpoint_file=checkpoint, checkpoint_every_s=checkpoint_every_s, resume=resume, progress=progress,
                theta0=best.theta, init_cov=usable_covariance(best.cov),
            )
            timings["sample"] = time.perf_counter() - t
            diag = posterior.diagnostics
            worst = min(diag, key=lambda n: diag[n]["ess_bulk"])
            print(f"sample: NUTS, {chains} chains x {draws} draws after {tune} warm-up, {posterior.n_calls} "
                  f"likelihood+gradient calls, min ESS {diag[worst]['ess_bulk']:.0f} ({worst}), max R-hat "
                  f"{max(d['rhat'] for d in diag.values()):.3f}, {posterior.settings['divergences']} divergences "
                  f"({timings['sample']:.1f} s)", file=out)
        else:
            posterior = sample(
                likelihood, priors, nlive=nlive, dynamic=dynamic, sample=sample_method, dlogz=dlogz, maxcall=maxcall,
                rng=np.random.default_rng(seed), checkpoint_file=checkpoint, checkpoint_every_s=checkpoint_every_s,
                resume=resume, progress=progress, processes=processes,
            )
            timings["sample"] = time.perf_counter() - t
            print(f"sample: ln Z = {posterior.logz:.2f} +/- {posterior.logz_err:.2f}, {posterior.n_iter} iterations, "
                  f"{posterior.n_calls} likelihood calls, n_eff = {posterior.n_effective:.0f} ({timings['sample']:.1f} s, "
                  f"{posterior.settings.get('processes', 1)} sampling process(es))",
                  file=out)

    scene = best.scene
    print("", file=out)
    print(results_table(list(likelihood.parameter_names), best, posterior, truth), file=out)
    print("", file=out)

    paths = {}
    t = time.perf_counter()
    run_settings = {"BACKEND": getattr(likelihood, "backend_name", getattr(likelihood, "backend", "?")), "SEED": seed}
    run_settings.update(settings or {})
    run_settings = {k: (v if isinstance(v, (int, float, bool, str)) else str(v)) for k, v in run_settings.items()}
    paths["catalog"] = write_catalog(catalog_path, scene, best, posterior, settings=run_settings, overwrite=True,
                                     exposure_names=[getattr(e, "name", f"exposure {k}")
                                                     for k, e in enumerate(getattr(likelihood, "exposures", ()))])
    timings["write catalog"] = time.perf_counter() - t
    if do_sample:
        paths["checkpoint"] = checkpoint

    if plots:
        from pho import plots as P

        t = time.perf_counter()
        theta = posterior and np.array([posterior.summary[n]["median"] for n in posterior.names])
        theta = best.theta if theta is None else theta
        paths["exposures"] = P.plot_exposures(likelihood, best.theta, outdir / "exposures.png") and outdir / "exposures.png"
        paths["gradients"] = P.plot_gradients(likelihood, best.theta, 0, 0, outdir / "gradients_s0.png") and outdir / "gradients_s0.png"
        if posterior is not None:
            for i in range(len(scene.sources)):
                names = [n for n in posterior.names if n.startswith(f"s{i}.")]
                path = outdir / f"corner_s{i}.png"
                P.plot_corner(posterior, path, names=names, truths=truth)
                paths[f"corner_s{i}"] = path
            if sampler == "nuts":
                paths["chains"] = outdir / "chains.png"
                P.plot_chains(posterior, paths["chains"])
            else:
                paths["trace"] = outdir / "trace.png"
                P.plot_trace(posterior, paths["trace"])
        timings["plots"] = time.perf_counter() - t
    for key, path in paths.items():
        print(f"wrote {key}: {path}", file=out)
    return {"paths": paths, "best": best, "posterior": posterior, "timings": timings}


def _processes_text(args) -> str:
    """The sampling processes, for the run's header line."""
    from pho.sample import PROCESSES_MIN_CALL_MS, resolve_processes

    if args.sampler == "dynesty" and args.processes is None:
        return f"sampling processes: one per core if a likelihood call takes >= {PROCESSES_MIN_CALL_MS} ms, else 1"
    n = resolve_processes(args.processes)
    return f"{min(n, args.chains) if args.sampler == 'nuts' else n} sampling process(es)"


def _resolve_sampling(args, n_params: int) -> None:
    """Fill in what ``auto`` and the unset sampler options mean for a problem of ``n_params``
    parameters (in place): the sampler, the shape parameters (eta for NUTS, which mixes better in
    it), the NUTS draws, warm-up and chains, the dynesty method."""
    args.sampler = resolve_sampler(args.sampler, n_params)  # options were checked in main()
    if args.shape_parameters == "auto":
        args.shape_parameters = "eta" if args.sampler == "nuts" else "q_pa"
    if args.draws is None:
        args.draws = DEMO_NUTS_DRAWS if args.demo else NUTS_DRAWS
    if args.tune is None:
        args.tune = NUTS_TUNE_MANY if auto_sampler(n_params) == "nuts" else NUTS_TUNE_FEW
    if args.chains is None:
        args.chains = NUTS_CHAINS
    if args.sample_method is None:
        args.sample_method = "rwalk"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo and (args.exposure or args.sources):
        parser.error("--demo builds its own exposures and sources; drop --exposure/--sources")
    if not args.demo and not (args.exposure and args.sources):
        parser.error("give --demo, or at least one --exposure SCI NOISE PSF BAND and --sources FILE")
    if args.demo_pix < 24:
        parser.error(f"--demo-pix {args.demo_pix} is too small for the demo's sources; use at least 24")
    if args.processes is not None and args.processes < 1:
        parser.error(f"--processes {args.processes} must be at least 1")
    for flag, value, low in (("--draws", args.draws, 4), ("--tune", args.tune, 0), ("--chains", args.chains, 1)):
        if value is not None and value < low:
            parser.error(f"{flag} {value} must be at least {low}")
    dynesty_given = [flag for flag, attr, unset in _DYNESTY_OPTIONS if getattr(args, attr) != unset]
    nuts_given = [flag for flag, attr, unset in _NUTS_OPTIONS if getattr(args, attr) != unset]
    try:  # "auto" stays until the parameters are counted (_run) unless an option decides
        args.sampler = resolve_sampler(args.sampler, None, dynesty_given, nuts_given)
    except ValueError as exc:
        parser.error(str(exc))
    if args.nlive is not None and args.nlive < 5:
        parser.error(f"--nlive {args.nlive} is too small; use at least 5 (ideally 25 per parameter)")
    from pho.errors import PhoError, PhoLockError
    from pho.runlock import clean_temporary_files, output_lock

    outdir = Path(args.outdir)
    words = list(sys.argv[1:] if argv is None else argv)
    resume_cmd = "python -m pho.tools.fit " + " ".join(w for w in words if w != "--overwrite") \
        + ("" if "--resume" in words else " --resume")
    try:
        with output_lock(outdir):
            # Under the lock no other run writes here: what is found was left by earlier runs.
            clean_temporary_files(outdir)
            if (outdir / "catalog.fits").exists() and not args.overwrite:
                parser.error(f"{outdir / 'catalog.fits'} exists; pass --overwrite to replace it or choose another --outdir")
            checkpoint = outdir / "sampler.pkl"
            if args.resume and not args.no_sample and not checkpoint.exists():
                parser.error(f"--resume: there is no checkpoint {checkpoint} to resume; run without --resume")
            if checkpoint.exists() and not args.resume and not args.overwrite and not args.no_sample:
                parser.error(
                    f"{checkpoint} exists: an earlier run into {outdir} was interrupted. Pass --resume to continue it "
                    "(with the same inputs and settings), --overwrite to start afresh, or choose another --outdir"
                )
            return _run(parser, args, argv, outdir)
    except PhoLockError as exc:
        print(f"python -m pho.tools.fit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        saved = getattr(exc, "pho_checkpoint", None)
        where = (f"the sampler's state is saved in {saved}; continue with:\n  {resume_cmd}"
                 if saved is not None else "nothing was saved; run the command again")
        print(f"\ninterrupted; {where}", file=sys.stderr)
        return 130
    except PhoError as exc:
        print(f"python -m pho.tools.fit: error: {exc}", file=sys.stderr)
        return 1


def _run(parser, args, argv, outdir: Path) -> int:
    """The fit itself, under the output folder's lock (see :func:`main`)."""
    import pho
    from pho.likelihood import SKY_PARAMETERS, Likelihood

    backend = choose_backend() if args.backend == "auto" else args.backend
    timings: dict = {}
    t0 = time.perf_counter()
    truth = None
    settings = {"CMDLINE": " ".join(["python -m pho.tools.fit"] + list(sys.argv[1:] if argv is None else argv))}
    if args.demo:
        from pho.demo import build_demo

        problem = build_demo(shape=(args.demo_pix, args.demo_pix))
        exposures, sources, bands = problem.exposures, problem.initial.sources, problem.initial.bands
        nlive = args.nlive or 45
        settings["INPUT"] = "built-in demo (pho.demo)"
    else:
        from pho.io import read_source_list
        from pho.psfgrid import read_psf

        exposures = []
        for sci, noise, psf_path, band in args.exposure:
            for f in (sci, noise, psf_path):
                if not Path(f).exists():
                    parser.error(f"input file {f} does not exist")
            psf = read_psf(psf_path)
            kw = {"ivar_path" if args.noise_kind == "ivar" else "err_path": noise}
            exposures.append(pho.Exposure.from_fits(sci, psf=psf, band=band, cutout=args.cutout, **kw))
        bands = list(dict.fromkeys(e.band for e in exposures))
        sources = read_source_list(args.sources, bands=bands)
        nlive = args.nlive or 200
        settings["SOURCES"] = str(args.sources)
        for k, e in enumerate(args.exposure):
            settings[f"EXP{k}"] = " ".join(e)
    _resolve_sampling(args, pho.Scene(sources, bands=bands).n_params + len(exposures) * len(SKY_PARAMETERS[args.fit_sky]))
    scene = pho.Scene(sources, bands=bands, shape_parameters=args.shape_parameters)
    if args.demo:
        truth_scene = pho.Scene(problem.truth.sources, shape_parameters=args.shape_parameters, bands=bands)
        truth = dict(zip(truth_scene.parameter_names, truth_scene.get_vector()))
    likelihood = (Likelihood(scene, exposures, backend=backend) if args.fit_sky == "none"
                  else Likelihood(scene, exposures, backend=backend, sky=args.fit_sky))
    timings["build"] = time.perf_counter() - t0
    print(f"pho {pho.__version__}: {len(scene.sources)} sources, {scene.n_params} parameters, "
          f"{len(exposures)} exposures, backend {backend}, "
          + (f"dynesty nlive {nlive}" if args.sampler == "dynesty"
             else f"NUTS {args.chains} chains x {args.draws} draws after {args.tune} warm-up")
          + ("" if args.no_sample else f", {_processes_text(args)}"))
    run_job(
        likelihood, outdir, truth=truth, nlive=nlive, sampler=args.sampler, draws=args.draws, tune=args.tune,
        chains=args.chains, dynamic=args.dynamic, sample_method=args.sample_method,
        dlogz=args.dlogz, maxcall=args.maxcall, do_sample=not args.no_sample, plots=not args.no_plots,
        position_box_arcsec=args.position_box_arcsec, seed=args.seed, checkpoint_every_s=args.checkpoint_every,
        resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, processes=args.processes,
        settings=settings, timings=timings,
    )
    total = time.perf_counter() - t0
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f", total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
