"""A realistic simulated field from the real GOODS-S source list, written as FITS files.

The 403 sources of ``pho/data/goodss_3dhst_scene.fits`` (3D-HST, via forcepho; see
``pho/data/README.md``) keep their positions, sizes, shapes and F125W/F160W fluxes; the list's
``q`` (sqrt(b/a), forcepho's convention) is squared to pho's b/a and the Sersic index is the
list's 2. Each band gets two dithered exposures at 0.06"/pixel, the second shifted by a
non-integer number of pixels and rotated, each large enough to hold the whole field with a
margin, with a TAN WCS, a 3-Gaussian PSF mixture and Gaussian noise whose level gives the median
source an S/N of ``snr_median`` per band (optimal S/N of the PSF-convolved mixture, both
exposures of the band together). ``tiles`` > 1 repeats the source list on a square grid of
copies side by side (4 or 16 times the sources), for scaling measurements.

The truth is drawn with pho's own model, so a fit recovers it up to noise. The initial source
list is the truth perturbed as a detection catalog would be: positions by ~0.3 pixel, fluxes and
sizes by ~15%, shapes by ~0.1, the Sersic index set to 2.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SimulatedField", "simulate_goodss_field", "goodss_table", "SIM_BANDS", "SIM_PIXEL_SCALE_ARCSEC"]

#: Bands of the simulated field and the FWHM of their PSF cores, pixels.
SIM_BANDS = {"F125W": 2.2, "F160W": 2.5}
#: Pixel scale of every simulated exposure, arcsec.
SIM_PIXEL_SCALE_ARCSEC = 0.06
#: (dx, dy, rotation in degrees) of the two exposures of each band.
SIM_DITHERS = ((0.0, 0.0, 0.0), (3.37, -2.61, 23.0))
_MARGIN_ARCSEC = 3.0


@dataclass
class SimulatedField:
    """Paths of a simulated field.

    Attributes
    ----------
    exposures : list of tuple
        ``(sci_path, err_path, psf_path, band)`` per exposure, the arguments of ``--exposure``.
    truth_path, initial_path : Path
        Source lists (FITS tables in ``python -m pho.tools.fit``'s format, with an ``id`` column):
        the truth and the perturbed starting catalog.
    n_sources : int
    noise_sigma : dict
        Noise per pixel by band, counts.
    """

    exposures: list
    truth_path: Path
    initial_path: Path
    n_sources: int
    noise_sigma: dict


def goodss_table():
    """The shipped GOODS-S source list as an astropy Table."""
    from astropy.table import Table

    resource = importlib.resources.files("pho").joinpath("data/goodss_3dhst_scene.fits")
    with importlib.resources.as_file(resource) as path:
        return Table.read(path)


def _truth_columns(tiles: int, max_sources: int | None):
    t = goodss_table()
    if max_sources is not None:  # a compact small field: the sources nearest the list's centre
        ra, dec = np.array(t["ra"], float), np.array(t["dec"], float)
        d2 = ((ra - np.median(ra)) * math.cos(math.radians(float(np.median(dec))))) ** 2 + (dec - np.median(dec)) ** 2
        t = t[np.sort(np.argsort(d2, kind="stable")[:max_sources])]
    ra, dec = np.array(t["ra"], float), np.array(t["dec"], float)
    dec0 = float(np.mean(dec))
    cosd = math.cos(math.radians(dec0))
    width_ra = (ra.max() - ra.min()) + 2.0 / 3600.0 / cosd
    width_dec = (dec.max() - dec.min()) + 2.0 / 3600.0
    k = int(round(math.sqrt(tiles)))
    if k * k != tiles:
        raise ValueError(f"tiles={tiles} must be a square number (1, 4, 16, ...)")
    cols = {name: [] for name in ("ra", "dec", "q", "pa", "n", "rh", *[f"flux_{b}" for b in SIM_BANDS])}
    for i in range(k):
        for j in range(k):
            cols["ra"].append(ra + i * width_ra)
            cols["dec"].append(dec + j * width_dec)
            cols["q"].append(np.array(t["q"], float) ** 2)
            cols["pa"].append(np.array(t["pa"], float))
            cols["n"].append(np.array(t["sersic"], float))
            cols["rh"].append(np.array(t["rhalf"], float))
            for b in SIM_BANDS:
                cols[f"flux_{b}"].append(np.array(t[b], float))
    return {name: np.concatenate(v) for name, v in cols.items()}


def _write_source_list(path: Path, cols: dict) -> None:
    from astropy.table import Table

    from ..io import write_hdus_atomic
    from astropy.io import fits

    S = len(cols["ra"])
    table = Table({"id": np.arange(S), "type": np.array(["sersic"] * S), **cols})
    write_hdus_atomic(path, [fits.PrimaryHDU(), fits.table_to_hdu(table)])


def _exposure_wcs(cols, dx_pix, dy_pix, rot_deg):
    """TAN WCS at 0.06"/pix rotated by rot_deg, and the image shape that holds the field."""
    from astropy.wcs import WCS

    ra0, dec0 = float(np.mean(cols["ra"])), float(np.mean(cols["dec"]))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    s = SIM_PIXEL_SCALE_ARCSEC / 3600.0
    t = math.radians(rot_deg)
    w.wcs.cd = s * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])
    w.wcs.crpix = [1.0, 1.0]
    x, y = w.world_to_pixel_values(cols["ra"], cols["dec"])
    margin = _MARGIN_ARCSEC / SIM_PIXEL_SCALE_ARCSEC
    x_lo, y_lo = float(np.min(x)) - margin, float(np.min(y)) - margin
    nx = int(math.ceil(float(np.max(x)) + margin - x_lo))
    ny = int(math.ceil(float(np.max(y)) + margin - y_lo))
    w.wcs.crpix = [1.0 - x_lo + dx_pix, 1.0 - y_lo + dy_pix]
    return w, (ny, nx)


def _optimal_snr(cols, band: str, psf, pixel_scale: float, sigma: float, n_exposures: int) -> np.ndarray:
    """Optimal S/N per source of the circularized mixture (module docstring), one band."""
    from ..sersic import auto_profile

    prof = auto_profile()
    a = np.asarray(prof.amplitudes(cols["n"], cols["rh"])[0])  # (S, M)
    r2 = prof.radii_arcsec[None, :] ** 2 * np.sqrt(cols["q"])[:, None]  # geometric-mean variance
    v = 0.5 * (psf.cxx + psf.cyy) * pixel_scale**2  # (L,)
    s2 = (r2[:, :, None] + v[None, None, :]).reshape(len(a), -1)  # (S, K)
    w = (a[:, :, None] * psf.amp[None, None, :]).reshape(len(a), -1)
    integral_p2 = np.einsum("sj,sk,sjk->s", w, w, 1.0 / (2 * np.pi * (s2[:, :, None] + s2[:, None, :])))
    return np.abs(cols[f"flux_{band}"]) * np.sqrt(n_exposures * integral_p2 * pixel_scale**2) / sigma


def simulate_goodss_field(
    outdir: str | os.PathLike,
    *,
    tiles: int = 1,
    snr_median: float = 30.0,
    seed: int = 2026,
    max_sources: int | None = None,
    overwrite: bool = False,
    progress=None,
) -> SimulatedField:
    """Simulate the GOODS-S field (module docstring) and write it to ``outdir``.

    Parameters
    ----------
    outdir : str or path-like
        Folder for the FITS files (created).
    tiles : int
        Copies of the source list, a square number (1, 4, 16).
    snr_median : float
        S/N of the median source in each band.
    seed : int
        Seed of the noise and of the initial catalog's perturbations.
    max_sources : int, optional
        Use only this many sources, those nearest the list's centre (a compact field for tests).
    overwrite : bool
        Replace files written by an earlier simulation.
    progress : callable, optional
        Called with a short message per exposure written.

    Returns
    -------
    SimulatedField
    """
    from astropy.io import fits

    from ..demo import demo_psf
    from ..errors import NOT_OVERWRITING_MSG
    from ..exposure import Exposure
    from ..io import write_hdus_atomic
    from ..likelihood import render
    from ..sources import Scene, Sersic

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cols = _truth_columns(tiles, max_sources)
    S = len(cols["ra"])
    truth_path, initial_path = outdir / "truth.fits", outdir / "initial.fits"
    if not overwrite:
        for p in (truth_path, initial_path):
            if p.exists():
                raise FileExistsError(NOT_OVERWRITING_MSG.format(path=p))
    bands = list(SIM_BANDS)
    sources = [
        Sersic(cols["ra"][i], cols["dec"][i], {b: cols[f"flux_{b}"][i] for b in bands}, cols["q"][i], cols["pa"][i],
               cols["n"][i], cols["rh"][i])
        for i in range(S)
    ]
    scene = Scene(sources, bands=bands)
    exposures, sigmas = [], {}
    for band, fwhm in SIM_BANDS.items():
        psf = demo_psf(fwhm)
        psf_path = outdir / f"psf_{band}.fits"
        psf.write(psf_path, overwrite=True)
        snr_unit = _optimal_snr(cols, band, psf, SIM_PIXEL_SCALE_ARCSEC, 1.0, len(SIM_DITHERS))
        sigma = float(np.median(snr_unit) / snr_median)
        sigmas[band] = sigma
        for k, (dx, dy, rot) in enumerate(SIM_DITHERS):
            wcs, shape = _exposure_wcs(cols, dx, dy, rot)
            blank = Exposure(np.zeros(shape), np.ones(shape), wcs, psf, band, name=f"{band}_e{k}")
            model = render(scene, blank, backend="cpu")
            sci = (model + rng.normal(size=shape) * sigma).astype(np.float32)
            header = wcs.to_header()
            header["BUNIT"] = ("counts", "counts_per_flux = 1")
            header["PHOSIM"] = ("pho.field.simulate", "GOODS-S simulated field")
            header["BAND"] = band
            sci_path, err_path = outdir / f"{band}_e{k}_sci.fits", outdir / f"{band}_e{k}_err.fits"
            for path in (sci_path, err_path):
                if path.exists() and not overwrite:
                    raise FileExistsError(NOT_OVERWRITING_MSG.format(path=path))
            write_hdus_atomic(sci_path, [fits.PrimaryHDU(sci, header=header)])
            write_hdus_atomic(err_path, [fits.PrimaryHDU(np.full(shape, sigma, np.float32), header=header)])
            exposures.append((str(sci_path), str(err_path), str(psf_path), band))
            if progress is not None:
                progress(f"simulated {sci_path.name} ({shape[1]} x {shape[0]} pixels, {S} sources)")
    _write_source_list(truth_path, cols)
    initial = dict(cols)
    cosd = np.cos(np.radians(cols["dec"]))
    jitter = 0.3 * SIM_PIXEL_SCALE_ARCSEC / 3600.0
    initial["ra"] = cols["ra"] + rng.normal(size=S) * jitter / cosd
    initial["dec"] = cols["dec"] + rng.normal(size=S) * jitter
    for b in bands:
        initial[f"flux_{b}"] = cols[f"flux_{b}"] * np.exp(0.15 * rng.normal(size=S))
    initial["rh"] = np.clip(cols["rh"] * np.exp(0.15 * rng.normal(size=S)), 0.02, 1.2)
    initial["q"] = np.clip(cols["q"] + 0.1 * rng.normal(size=S), 0.2, 1.0)
    initial["pa"] = cols["pa"] + 0.2 * rng.normal(size=S)
    initial["n"] = np.full(S, 2.0)
    _write_source_list(initial_path, initial)
    return SimulatedField(exposures=exposures, truth_path=truth_path, initial_path=initial_path, n_sources=S,
                          noise_sigma=sigmas)
