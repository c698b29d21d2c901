"""Fit a Gaussian mixture to a PSF image and write it as pho's PSF mixture file.

Examples
--------
Fit 4 Gaussians to the 4x oversampled JWST PSF (oversampling read from the header)::

    python -m pho.tools.fitpsf jwst_nircam_f200w_psf_os4.fits --ngauss 4 -o f200w_psf.fits --plot f200w_fit.png

Scan K = 2..8 and keep the smallest K with sum|res|/sum below 0.22::

    python -m pho.tools.fitpsf jwst_nircam_f200w_psf_os4.fits --ngauss 2:8 --target 0.22 -o f200w_psf.fits

An HST PSF at native sampling (HDU 3), taken as already integrated over the detector pixel::

    python -m pho.tools.fitpsf hst_acs_f814w_psfs.fits --hdu 3 --oversample 1 --ngauss 3 -o acs_psf.fits

A grid of PSFs, one per HDU, positions from each HDU's PSFX/PSFY keys, written as a PSF grid
(pho.psfgrid.PSFGrid) whose mixtures share one component order::

    python -m pho.tools.fitpsf psf_grid.fits --hdus all --ngauss 3 -o psf_grid_mix.fits

A cube of PSFs in one HDU, as WebbPSF/STPSF's psf_grid writes it (positions from DET_YX<i>)::

    python -m pho.tools.fitpsf nrca1_f200w_grid.fits --planes all --ngauss 4 -o grid_mix.fits

The 100 HST PSFs have no positions: assign them to a 10 x 10 grid over a 4096 x 4096 detector
(an assumption for a demonstration, not their real positions)::

    python -m pho.tools.fitpsf hst_acs_f814w_psfs.fits --hdus all --oversample 1 --ngauss 3 \
        --grid 10 10 --grid-extent 0 4095 0 4095 -o acs_grid.fits
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..errors import NOT_OVERWRITING_MSG, PhoError
from ..psfgrid import INTERPOLATIONS, OUTSIDE_POLICIES
from ..psfgridfit import (
    CUBE_POSITION_PREFIX,
    POSITION_KEYS,
    assigned_grid_positions,
    cube_plane_count,
    cube_positions,
    parse_planes,
    fit_psf_grid,
    header_positions,
    parse_hdus,
    read_positions_file,
)
from ..psffit import (
    EE_RADII_DET_PIX,
    OVERSAMPLE_KEYS,
    default_pixel_integrated,
    fit_psf_mixture,
    plot_psf_fit,
    read_psf_image,
)

__all__ = ["build_parser", "main", "parse_ngauss"]

MAX_NGAUSS = 20


def parse_ngauss(text: str) -> list[int]:
    """``"4"`` -> [4]; ``"2:8"`` -> [2, 3, ..., 8] (inclusive). Raises ValueError with a message."""
    try:
        if ":" in text:
            lo_text, hi_text = text.split(":", 1)
            lo, hi = int(lo_text), int(hi_text)
        else:
            lo = hi = int(text)
    except ValueError:
        raise ValueError(f"--ngauss {text!r}: give an integer K or a range K1:K2, e.g. 4 or 2:8") from None
    if not (1 <= lo <= hi <= MAX_NGAUSS):
        raise ValueError(f"--ngauss {text!r}: need 1 <= K1 <= K2 <= {MAX_NGAUSS}")
    return list(range(lo, hi + 1))


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m pho.tools.fitpsf``."""
    p = argparse.ArgumentParser(
        prog="python -m pho.tools.fitpsf",
        description=(
            "Fit a mixture of K elliptical Gaussians to a PSF image (EM, then a least-squares polish) and "
            "write it in detector pixels as the FITS table pho.PSFMixture.read loads. Prints the figures of "
            "merit: max|residual|/peak, sum|residual|/sum, encircled energies of data and model at "
            + ", ".join(f"{r:g}" for r in EE_RADII_DET_PIX)
            + " detector pixels."
        ),
        epilog="See docs/fitpsf.md for the method and measured figures.",
    )
    p.add_argument("psf", type=Path, help="FITS file holding the PSF image")
    p.add_argument("--hdu", type=int, default=0, help="HDU index of the image, 0-based (default: %(default)s)")
    p.add_argument(
        "--ngauss",
        default="4",
        help="number of Gaussians K, or a range K1:K2 (inclusive) to scan (default: %(default)s)",
    )
    p.add_argument(
        "--oversample",
        type=float,
        default=None,
        help="PSF pixels per detector pixel (default: read from the header keys " + ", ".join(OVERSAMPLE_KEYS) + ")",
    )
    p.add_argument(
        "--center",
        type=float,
        nargs=2,
        metavar=("X", "Y"),
        default=None,
        help="PSF centre in 0-based image pixels (default: found by a windowed centroid)",
    )
    p.add_argument(
        "--radius",
        type=float,
        default=None,
        help="fit only pixels within this radius of the centre, detector pixels (default: the whole image)",
    )
    p.add_argument(
        "--pixel-integrated",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "the image is already integrated over the detector pixel (an effective PSF: HST PSFs at native "
            "sampling, WebbPSF DET_SAMP); fit the mixture's pixel integrals to it. --no-pixel-integrated: the "
            "image samples the optical PSF (WebbPSF's oversampled first extension). Default: integrated when "
            "the oversampling is 1 or the EXTNAME is DET_SAMP/DET_DIST, otherwise not"
        ),
    )
    p.add_argument("--no-polish", action="store_true", help="skip the least-squares polish after EM")
    p.add_argument(
        "--starts",
        type=int,
        choices=(1, 2, 3),
        default=1,
        help="EM starts per K (initial widths spread differently); the lowest chi-square is kept (default: %(default)s)",
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="with a K range: keep the smallest K with sum|res|/sum at most this (default: none, keep the largest K)",
    )
    p.add_argument(
        "--target-peak",
        type=float,
        default=None,
        help="with a K range: also require max|res|/peak at most this (default: none)",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="output mixture file, FITS (default: write nothing)")
    p.add_argument("--plot", type=Path, default=None, help="figure of data, model, residual and Gaussians (e.g. .png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    g = p.add_argument_group(
        "grid of PSFs (a PSF that varies over the detector)",
        "Fit one mixture per HDU, all with one K in one shared component order, and write a PSF grid "
        "(pho.psfgrid.PSFGrid, extension PSFGRID) instead of one mixture. Positions (0-based detector pixels) come "
        f"from each HDU's {POSITION_KEYS[0]}/{POSITION_KEYS[1]} header keys, or --positions, or --grid.",
    )
    g.add_argument("--hdus", default=None, metavar="SPEC",
                   help="fit these HDUs as a grid: 'all' (every HDU with a 2-d image), A:B (inclusive) or a,b,c; "
                        "replaces --hdu")
    g.add_argument("--planes", default=None, metavar="SPEC",
                   help="fit these planes of the cube of PSFs in HDU --hdu as a grid (WebbPSF/STPSF psf_grid files): "
                        f"'all', A:B (inclusive) or a,b,c; positions from the {CUBE_POSITION_PREFIX}<i> = '(y, x)' keys. "
                        "One plane alone is fitted as one image")
    g.add_argument("--positions", type=Path, default=None, metavar="FILE",
                   help="text file of lines 'hdu x_pix y_pix' (with --planes: 'plane x_pix y_pix'; 0-based detector "
                        f"pixels) for files without {POSITION_KEYS[0]}/{POSITION_KEYS[1]} keys")
    g.add_argument("--grid", type=int, nargs=2, default=None, metavar=("NX", "NY"),
                   help="assign the HDUs, in order, to an even NX x NY grid (x fastest) spanning --grid-extent: "
                        "for files without positions; the positions are then an assumption")
    g.add_argument("--grid-extent", type=float, nargs=4, default=None, metavar=("X0", "X1", "Y0", "Y1"),
                   help="detector pixels spanned by --grid, 0-based (required with --grid)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default="bilinear",
                   help="interpolation stored in the grid file (default: %(default)s)")
    g.add_argument("--outside", choices=OUTSIDE_POLICIES, default="error",
                   help="what the grid does with a position outside its hull, stored in the file (default: %(default)s)")
    return p


def _main_grid(args, parser, argv_used, planes=None) -> int:
    """``--hdus`` or ``--planes``: fit a grid of PSFs and write a PSF grid."""
    flag = "--hdus" if planes is None else "--planes"
    if ":" in args.ngauss or "," in args.ngauss:
        parser.error(f"--ngauss {args.ngauss!r}: a grid needs one K for every PSF (a range is for one image)")
    for name in ("target", "target_peak", "plot", "center"):
        if getattr(args, name) is not None:
            parser.error(f"--{name.replace('_', '-')} is for one image; it cannot be used with {flag}")
    if args.positions is not None and args.grid is not None:
        parser.error("give the positions one way: --positions FILE or --grid NX NY, not both")
    if (args.grid is None) != (args.grid_extent is None):
        parser.error("--grid NX NY needs --grid-extent X0 X1 Y0 Y1 (the detector pixels the grid spans), and vice versa")
    if args.positions is not None and not args.positions.exists():
        parser.error(f"{args.positions}: no such file")
    try:
        K = parse_ngauss(args.ngauss)[0]
        if planes is None:
            hdus = ids = parse_hdus(args.hdus, args.psf)
        else:
            ids = planes
        if args.positions is not None:
            x, y = read_positions_file(args.positions, ids)
            how = f"file {args.positions}"
        elif args.grid is not None:
            x, y = assigned_grid_positions(len(ids), args.grid[0], args.grid[1], args.grid_extent)
            how = "assigned: --grid {} {} --grid-extent {:g} {:g} {:g} {:g} (not measured)".format(*args.grid, *args.grid_extent)
        elif planes is None:
            x, y = header_positions(args.psf, hdus)
            how = f"header {POSITION_KEYS[0]}/{POSITION_KEYS[1]}"
        else:
            x, y = cube_positions(args.psf, args.hdu, planes)
            how = f"header {CUBE_POSITION_PREFIX}<i>"
        if planes is None:
            images = [read_psf_image(args.psf, hdu=h, oversample=args.oversample) for h in hdus]
        else:
            images = [read_psf_image(args.psf, hdu=args.hdu, oversample=args.oversample, plane=q) for q in planes]
    except FileNotFoundError:
        parser.error(f"{args.psf}: no such file")
    except (ValueError, PhoError, OSError) as exc:
        parser.error(str(exc))
    samplings = sorted({im.oversample for im in images})
    if len(samplings) > 1:
        parser.error(f"the HDUs have different oversampling factors {samplings}; a grid needs one (give --oversample)")
    S = samplings[0]
    pixel_integrated = args.pixel_integrated
    if pixel_integrated is None:
        pixel_integrated = default_pixel_integrated(S, images[0].extname)
    meta = {
        "INPUT": str(args.psf),
        **({"HDUS": args.hdus} if planes is None else {"HDU": args.hdu, "PLANES": args.planes}),
        "POSSRC": how,
        "OSSOURCE": images[0].oversample_source,
        "PHOVERS": __version__,
        "CMDLINE": "python -m pho.tools.fitpsf " + shlex.join(argv_used),
    }
    what = f"HDUs {ids[0]}..{ids[-1]}" if planes is None else f"planes {ids[0]}..{ids[-1]} of HDU {args.hdu}"
    print(
        f"{args.psf}: {len(ids)} PSFs ({what}), oversample {S:g} ({images[0].oversample_source}), "
        f"{'pixel-integrated' if pixel_integrated else 'not pixel-integrated'}, positions from {how}"
    )
    label = "HDU" if planes is None else "plane"

    def progress(k, fit):
        print(f"{label} {ids[k]} at ({x[k]:.1f}, {y[k]:.1f}): {fit.summary()}", flush=True)

    try:
        result = fit_psf_grid(
            [im.data for im in images], x, y, K, S, pixel_integrated=pixel_integrated, radius_det_pix=args.radius,
            polish=not args.no_polish, n_starts=args.starts, interpolation=args.interpolation, outside=args.outside,
            meta=meta, point_meta=[{"HDU": h} if planes is None else {"HDU": args.hdu, "PLANE": h} for h in ids],
            progress=progress,
        )
    except PhoError as exc:
        parser.error(str(exc))
    print(result.summary())
    if args.output is None:
        print("no -o given: nothing written")
    else:
        result.grid.write(args.output, overwrite=args.overwrite)
        print(args.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns 0, or 1 when no K in the range meets the targets (the best is written)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ks = parse_ngauss(args.ngauss)
    except ValueError as exc:
        parser.error(str(exc))
    for out in (args.output, args.plot):
        if out is not None and out.exists() and not args.overwrite:
            parser.error(NOT_OVERWRITING_MSG.format(path=out))
        if out is not None and not out.resolve().parent.is_dir():
            parser.error(f"{out}: folder {out.resolve().parent} does not exist; create it first")
    if args.output is not None and args.plot is not None and args.output.resolve() == args.plot.resolve():
        parser.error(f"--output and --plot are the same file {args.output}; give two names")
    for name in ("target", "target_peak"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} {value}: must be a positive fraction")

    if args.hdus is not None and args.planes is not None:
        parser.error("give --hdus (one PSF per HDU) or --planes (the planes of a cube in HDU --hdu), not both")
    planes = None
    if args.planes is not None:
        try:
            planes = parse_planes(args.planes, cube_plane_count(args.psf, args.hdu))
        except FileNotFoundError:
            parser.error(f"{args.psf}: no such file")
        except (PhoError, OSError) as exc:
            parser.error(str(exc))
    if args.hdus is None and (planes is None or len(planes) == 1):
        for name in ("positions", "grid", "grid_extent"):
            if getattr(args, name) is not None:
                parser.error(f"--{name.replace('_', '-')} places the PSFs of a grid; it needs --hdus or --planes with 2 or more planes")
    else:
        return _main_grid(args, parser, sys.argv[1:] if argv is None else list(argv), planes)
    plane = None if planes is None else planes[0]
    try:
        image = read_psf_image(args.psf, hdu=args.hdu, oversample=args.oversample, plane=plane)
    except FileNotFoundError:
        parser.error(f"{args.psf}: no such file")
    except (PhoError, OSError) as exc:
        parser.error(str(exc))
    pixel_integrated = args.pixel_integrated
    if pixel_integrated is None:
        pixel_integrated = default_pixel_integrated(image.oversample, image.extname)
    argv_used = sys.argv[1:] if argv is None else list(argv)
    meta = {
        "INPUT": str(args.psf),
        "HDU": args.hdu,
        **({} if plane is None else {"PLANE": plane}),
        "OSSOURCE": image.oversample_source,
        "PHOVERS": __version__,
        "CMDLINE": "python -m pho.tools.fitpsf " + shlex.join(argv_used),
    }
    print(
        f"{args.psf} HDU {args.hdu}: {image.data.shape[1]} x {image.data.shape[0]} pixels, oversample "
        f"{image.oversample:g} ({image.oversample_source}), "
        f"{'pixel-integrated' if pixel_integrated else 'not pixel-integrated'}"
    )
    results = []
    for k in ks:
        try:
            fit = fit_psf_mixture(
                image.data,
                k,
                image.oversample,
                center_pix=None if args.center is None else tuple(args.center),
                radius_det_pix=args.radius,
                pixel_integrated=pixel_integrated,
                polish=not args.no_polish,
                n_starts=args.starts,
                meta=meta,
            )
        except PhoError as exc:
            parser.error(str(exc))
        if k == ks[0]:
            cx, cy = fit.center_pix
            print(f"centre ({fit.center_source}): x = {cx:.4f}, y = {cy:.4f} (0-based image pixels)")
        print(fit.summary(), flush=True)
        results.append(fit)

    status = 0
    chosen = results[-1]
    if args.target is not None or args.target_peak is not None:
        meeting = [
            f
            for f in results
            if (args.target is None or f.sum_abs_residual_frac <= args.target)
            and (args.target_peak is None or f.max_abs_residual_frac_peak <= args.target_peak)
        ]
        if meeting:
            chosen = meeting[0]
            print(f"smallest K meeting the target: K={chosen.ngauss}")
        else:
            chosen = min(results, key=lambda f: f.sum_abs_residual_frac)
            print(
                f"no K in {ks[0]}..{ks[-1]} meets the target; keeping the lowest sum|res|/sum, K={chosen.ngauss}",
                file=sys.stderr,
            )
            status = 1
    elif len(results) > 1:
        print(f"keeping the largest K={chosen.ngauss} (give --target to pick the smallest K meeting it)")

    if args.output is None and args.plot is None:
        print("no -o/--plot given: nothing written")
    if args.output is not None:
        with warnings.catch_warnings():
            # PSFMixture.write's UNITS card has a comment longer than a card; astropy trims it.
            warnings.filterwarnings("ignore", message="Card is too long, comment will be truncated")
            chosen.mixture.write(args.output, overwrite=args.overwrite)
        print(args.output)
    if args.plot is not None:
        plot_psf_fit(chosen, args.plot)
        print(args.plot)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
