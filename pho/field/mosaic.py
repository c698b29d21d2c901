"""Exposures of a field on disk: whole mosaics or single frames, read one cutout at a time.

A :class:`FieldExposure` holds the paths of a science image and its noise map, the PSF (one
mixture, or a ``pho.psfgrid.PSFGrid`` whose positions are in this image's pixel frame), the band and the calibration, plus what the planner needs from the headers (shape, WCS, a
typical noise level). It is small and picklable: a patch task carries it to a Dask worker, which
reads only the pixels of its cutout through a memory map (``pho.Exposure.from_fits`` with a
``cutout``), so memory per worker is bounded by the patch, never by the mosaic.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PhoDataError, PhoDataWarning, PhoValueError
from ..exposure import image_hdu
from ..psf import PSFMixture
from ..psfgrid import PSFGrid, read_psf

__all__ = ["FieldExposure"]


@dataclass(frozen=True, eq=False)
class FieldExposure:
    """One exposure of a field, read on demand.

    Build it with :meth:`open`. Attributes: ``sci_path``, ``noise_path``, ``noise_kind``
    (``"err"``: 1-sigma errors in counts, or ``"ivar"``: 1/counts^2), ``psf``, ``band``,
    ``counts_per_flux``, ``hdu``, ``noise_hdu``, ``name``, ``shape`` (ny, nx), ``header`` (the
    science header) and ``noise_sigma`` (median 1-sigma noise of a pixel with data, counts).
    """

    sci_path: str
    noise_path: str
    noise_kind: str
    psf: PSFMixture | PSFGrid
    band: str
    counts_per_flux: float
    hdu: object
    noise_hdu: object
    name: str
    shape: tuple
    header: object
    noise_sigma: float

    @classmethod
    def open(
        cls,
        sci_path: str | os.PathLike,
        noise_path: str | os.PathLike,
        psf: PSFMixture | PSFGrid | str | os.PathLike,
        band: str,
        *,
        noise_kind: str = "err",
        counts_per_flux: float = 1.0,
        hdu=None,
        noise_hdu=None,
    ) -> "FieldExposure":
        """Check the files and read what planning needs (headers and a sparse sample of the noise).

        Parameters
        ----------
        sci_path, noise_path : str or path-like
            Science image (counts, celestial WCS in its header) and noise map of the same shape.
        psf : PSFMixture, PSFGrid or path
            PSF in detector pixels: one mixture, or a grid of them whose positions are in the
            pixel frame of this whole image (each cutout shifts it by its corner).
        band : str
        noise_kind : {"err", "ivar"}
            What the noise map holds.
        counts_per_flux : float
            Counts per unit of user flux.
        hdu, noise_hdu : int or str, optional
            HDUs of the arrays (default: the first 2-d image of each file).

        Returns
        -------
        FieldExposure

        Raises
        ------
        FileNotFoundError
            A missing file.
        PhoValueError
            Shapes that differ, an unknown ``noise_kind``, no 2-d image.
        PhoDataError
            A WCS that is not celestial or is singular; a noise map without a single usable pixel.
        """
        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning

        if noise_kind not in ("err", "ivar"):
            raise PhoValueError(f"noise_kind={noise_kind!r}; use 'err' (1-sigma errors) or 'ivar' (inverse variance)")
        for p in (sci_path, noise_path):
            if not Path(p).exists():
                raise FileNotFoundError(f"exposure file {p} does not exist")
        if not isinstance(psf, (PSFMixture, PSFGrid)):
            psf = read_psf(psf)
        if not isinstance(band, str) or not band:
            raise PhoValueError(f"band must be a non-empty string, got {band!r}")
        name = Path(sci_path).name
        with fits.open(sci_path, memmap=True) as hdul:
            h = image_hdu(hdul, sci_path, hdu)
            shape = tuple(int(v) for v in h.shape)
            header = h.header.copy()
        if 0 in shape:
            raise PhoValueError(f"{sci_path} holds an empty image (shape {shape})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
        if not wcs.has_celestial:
            raise PhoDataError(f"{name}: the header has no celestial (RA/Dec) WCS; pho needs one to place sources")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            det = float(np.linalg.det(wcs.celestial.pixel_scale_matrix))
        if not (math.isfinite(det) and det != 0.0):
            raise PhoDataError(f"{name}: the WCS is singular (det of its CD matrix = {det:g}); check CD/PC/CDELT")
        with fits.open(noise_path, memmap=True) as hdul:
            nh = image_hdu(hdul, noise_path, noise_hdu)
            if tuple(nh.shape) != shape:
                raise PhoValueError(f"{noise_path} has shape {tuple(nh.shape)} but {sci_path} has {shape}; they must agree")
            step = max(1, int(math.sqrt(shape[0] * shape[1] / 40000.0)))
            # a sparse grid of rows through the memory map (hdu.section reads strided slices pixel by pixel)
            sample = np.concatenate([np.asarray(nh.section[y, :][::step], dtype=np.float64) for y in range(0, shape[0], step)])
        sigma = sample if noise_kind == "err" else 1.0 / np.sqrt(np.where(sample > 0, sample, np.nan))
        good = np.isfinite(sigma) & (sigma > 0)
        if not good.any():
            raise PhoDataError(f"{noise_path}: no pixel with usable noise (all zero, negative or non-finite)")
        return cls(
            sci_path=str(sci_path), noise_path=str(noise_path), noise_kind=noise_kind, psf=psf, band=band,
            counts_per_flux=float(counts_per_flux), hdu=hdu, noise_hdu=noise_hdu, name=name, shape=shape,
            header=header, noise_sigma=float(np.median(sigma[good])),
        )

    @property
    def wcs(self):
        """The astropy WCS of the whole image (parsed on each access; cheap)."""
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(self.header, naxis=2).celestial

    @property
    def pixel_scale_arcsec(self) -> float:
        """Geometric-mean pixel size at the reference pixel, arcsec."""
        return float(math.sqrt(abs(np.linalg.det(self.wcs.pixel_scale_matrix))) * 3600.0)

    def sky_to_pixel(self, ra_deg, dec_deg):
        """0-based pixel coordinates (x, y) of sky positions (astropy's full WCS), arrays."""
        x, y = self.wcs.world_to_pixel_values(np.asarray(ra_deg, float), np.asarray(dec_deg, float))
        return np.asarray(x, float), np.asarray(y, float)

    def cutout(self, box):
        """A ``pho.Exposure`` of the pixel box ``(x0, y0, x1, y1)`` (``x0 <= x < x1``), read
        through a memory map (only the box's pixels are read). A PSF grid stays in this image's
        frame: the cutout's ``psf_offset_pix`` is ``(x0, y0)``."""
        from ..exposure import Exposure

        kw = {"err_path" if self.noise_kind == "err" else "ivar_path": self.noise_path}
        with warnings.catch_warnings():
            # pixels without data at mosaic edges are expected; FieldExposure.open reported the map once
            warnings.simplefilter("ignore", PhoDataWarning)
            return Exposure.from_fits(
                self.sci_path, psf=self.psf, band=self.band, cutout=box, hdu=self.hdu, noise_hdu=self.noise_hdu,
                counts_per_flux=self.counts_per_flux, **kw,
            )
