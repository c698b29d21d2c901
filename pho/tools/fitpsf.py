"""Fit a Gaussian mixture to a PSF image and write it as pho's PSF mixture file.

Examples
--------
Fit 4 Gaussians to the 4x oversampled JWST PSF (oversampling read from the header)::

    python -m pho.tools.fitpsf jwst_nircam_f200w_psf_os4.fits --ngauss 4 -o f200w_psf.fits --plot f200w_fit.png

Scan K = 2..8 and keep the smallest K with sum|res|/sum below 0.22::

    python -m pho.tools.fitpsf jwst_nircam_f200w_psf_os4.fits --ngauss 2:8 --target 0.22 -o f200w_psf.fits

An HST PSF at native sampling (HDU 3), taken as already integrated over the detector pixel::

    python -m pho.tools.fitpsf hst_acs_f814w_psfs.fits --hdu 3 --oversample 1 --ngauss 3 -o acs_psf.fits
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..errors import NOT_OVERWRITING_MSG, PhoError
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
    return p


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

    try:
        image = read_psf_image(args.psf, hdu=args.hdu, oversample=args.oversample)
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
