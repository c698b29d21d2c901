"""The field's source table: every source's parameters as arrays, in input order.

A field holds thousands of sources; the patches take a few at a time. :class:`FieldSources`
keeps them as columns (``ra``, ``dec``, ``q``, ``pa``, ``n``, ``rh`` and one flux column per
band), turns any subset into ``pho.Sersic`` / ``pho.PointSource`` objects for a patch's scene,
and takes fitted values back by parameter name. Units as everywhere in pho: degrees, radians
(north through east), arcsec, user flux units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import PhoValueError

__all__ = ["FieldSources", "SHAPE_KINDS"]

#: Parameter kinds of a Sersic source after the fluxes, in scene order (point sources: ra, dec).
SHAPE_KINDS = ("ra", "dec", "q", "pa", "n", "rh")


@dataclass
class FieldSources:
    """Columns of a source list.

    Parameters
    ----------
    ids : ndarray of shape (S,), int64
        The input's ``id`` column, or the row index.
    is_point : ndarray of shape (S,), bool
        True for point sources (stars), False for Sersic galaxies.
    ra, dec : ndarray of shape (S,)
        Degrees.
    q, pa, n, rh : ndarray of shape (S,)
        Axis ratio b/a, position angle (rad), Sersic index, half-light radius (arcsec); NaN for
        point sources.
    flux : ndarray of shape (S, B)
        Flux per band, user units.
    bands : tuple of str, length B
    """

    ids: np.ndarray
    is_point: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    n: np.ndarray
    rh: np.ndarray
    flux: np.ndarray
    bands: tuple = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.ra)

    def copy(self) -> "FieldSources":
        return replace(self, **{k: np.array(getattr(self, k)) for k in ("ids", "is_point", "ra", "dec", "q", "pa", "n", "rh", "flux")})

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_sources(cls, sources: Sequence, bands: Sequence[str], ids=None) -> "FieldSources":
        """Columns from ``pho.Sersic`` / ``pho.PointSource`` objects.

        Raises
        ------
        PhoValueError
            A source without a flux in one of ``bands``; ``ids`` of the wrong length.
        """
        bands = tuple(bands)
        S = len(sources)
        if S == 0:
            raise PhoValueError("the source list is empty; a field needs at least one source")
        cols = {k: np.full(S, np.nan) for k in ("ra", "dec", "q", "pa", "n", "rh")}
        flux = np.empty((S, len(bands)))
        is_point = np.zeros(S, dtype=bool)
        for i, s in enumerate(sources):
            missing = [b for b in bands if b not in s.flux]
            if missing:
                raise PhoValueError(f"source {i} has no flux in band(s) {missing}; give every source a flux in {list(bands)}")
            flux[i] = [s.flux[b] for b in bands]
            cols["ra"][i], cols["dec"][i] = s.ra, s.dec
            is_point[i] = s.kind == "point"
            if not is_point[i]:
                cols["q"][i], cols["pa"][i], cols["n"][i], cols["rh"][i] = s.q, s.pa, s.n, s.rh
        ids = np.arange(S, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if ids.shape != (S,):
            raise PhoValueError(f"ids has shape {ids.shape}; need one id per source ({S})")
        return cls(ids=ids, is_point=is_point, flux=flux, bands=bands, **cols)

    @classmethod
    def read(cls, path: str | os.PathLike, bands: Sequence[str]) -> "FieldSources":
        """Read a source list in the format of ``python -m pho.tools.fit`` (``pho.io.read_source_list``).

        The ``id`` column, if any, is kept (as integers); otherwise ids are row numbers.
        """
        from ..io import read_id_column, read_source_list

        sources = read_source_list(path, bands=list(bands))
        return cls.from_sources(sources, bands, ids=read_id_column(Path(path), len(sources)))

    # ----------------------------------------------------------------------------- patches
    def to_sources(self, index: Sequence[int], profile=None) -> list:
        """``pho`` source objects for the rows ``index`` (in that order)."""
        from ..sources import PointSource, Sersic

        out = []
        for i in index:
            flux = {b: float(f) for b, f in zip(self.bands, self.flux[i])}
            if self.is_point[i]:
                out.append(PointSource(self.ra[i], self.dec[i], flux))
            else:
                out.append(Sersic(self.ra[i], self.dec[i], flux, self.q[i], self.pa[i], self.n[i], self.rh[i], profile=profile))
        return out

    def subset(self, index: Sequence[int]) -> "FieldSources":
        """The rows ``index`` as a new table (ids kept)."""
        index = np.asarray(index, dtype=int)
        return FieldSources(
            ids=self.ids[index], is_point=self.is_point[index], ra=self.ra[index], dec=self.dec[index], q=self.q[index],
            pa=self.pa[index], n=self.n[index], rh=self.rh[index], flux=self.flux[index], bands=self.bands,
        )

    def get(self, row: int, kind: str) -> float:
        """One parameter of one source by scene kind (``"ra"``, ``"flux_F160W"``, ...)."""
        if kind.startswith("flux_"):
            return float(self.flux[row, self.bands.index(kind[5:])])
        return float(getattr(self, kind)[row])

    def set(self, row: int, kind: str, value: float) -> None:
        """Set one parameter of one source by scene kind."""
        if kind.startswith("flux_"):
            self.flux[row, self.bands.index(kind[5:])] = value
        else:
            getattr(self, kind)[row] = value

    @property
    def column_kinds(self) -> list[str]:
        """Every parameter kind of the table's columns: fluxes in ``bands`` order, then ``SHAPE_KINDS``."""
        return [f"flux_{b}" for b in self.bands] + list(SHAPE_KINDS)

    def kinds(self, row: int) -> list[str]:
        """Scene parameter kinds of a source, in scene order (fluxes first)."""
        base = ["ra", "dec"] if self.is_point[row] else list(SHAPE_KINDS)
        return [f"flux_{b}" for b in self.bands] + base
