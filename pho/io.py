"""Catalog and source-list input/output.

- :func:`read_source_list`: an initial source list (FITS table or CSV) -> list of sources.
- :func:`write_catalog`: results -> a FITS file, written atomically (temp file, then
  ``os.replace``), with

  * HDU 1 ``CATALOG``: one row per source: ``id``, ``type``, and for every parameter kind
    (``flux_<band>``, ``ra``, ``dec``, ``q``, ``pa``, ``n``, ``rh``) the columns ``<kind>_best``,
    ``<kind>_err`` (optimizer), ``<kind>_median``, ``<kind>_p16``, ``<kind>_p84`` (posterior);
    NaN where a source has no such parameter (a point source's ``n``) or a stage was not run;
    for sources with conformal shear (``eta_plus``, ``eta_cross``) also ``q_*`` and ``pa_*``,
    derived from eta (errors propagated from the covariance; posterior summaries of every
    sample's q and pa);
  * HDU 2 ``SAMPLES``: every nested-sampling sample, one column per parameter (``s0_flux_F200W``,
    dots become underscores), plus ``weight`` and ``logl``;
  * HDU ``SKY`` when the fit had sky parameters (``pho.Likelihood(sky=...)``): one row per
    exposure, ``exposure`` (index), ``name`` and ``level_*``, ``slope_x_*``, ``slope_y_*`` with
    the same statistics (counts per pixel, and per pixel per pixel); the best values are also
    header cards ``SKY<k>_LEVEL``, ``SKY<k>_LEVEL_ERR``, ... of ``CATALOG``;
  * the run's settings (pho version, command line, sampler settings, ln Z) in both headers.
- :func:`read_catalog`: the two tables back as astropy Tables.

Units: fluxes in the user's units, ``ra``/``dec`` degrees, ``pa`` radians (north through east),
``rh`` arcsec.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import NOT_OVERWRITING_MSG, PhoValueError

__all__ = ["read_source_list", "read_id_column", "write_catalog", "read_catalog", "write_hdus_atomic", "UNITS"]

#: Unit of each parameter kind in the catalog.
UNITS = {"flux": "", "ra": "deg", "dec": "deg", "q": "", "pa": "rad", "n": "", "rh": "arcsec", "g1": "", "g2": "",
         "eta_plus": "", "eta_cross": "", "level": "count", "slope_x": "count/pix", "slope_y": "count/pix"}

_POINT_TYPES = {"point", "star", "pointsource", "psf"}
_SERSIC_TYPES = {"sersic", "galaxy"}
_SHAPE_COLUMNS = ("q", "pa", "n", "rh")


def _rows_from_file(path: Path) -> list[dict]:
    if path.suffix.lower() in (".csv", ".txt"):
        with open(path, newline="") as f:
            reader = csv.DictReader(line for line in f if not line.lstrip().startswith("#"))
            return [{k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()} for row in reader]
    from astropy.table import Table

    table = Table.read(path)
    return [{name.lower(): row[name] for name in table.colnames} for row in table]


def read_source_list(
    path: str | os.PathLike, bands: Sequence[str] | None = None, profile=None
) -> list:
    """Read an initial source list.

    Parameters
    ----------
    path : str or path-like
        A FITS table or a CSV file (lines starting with ``#`` are skipped) with columns
        ``ra``, ``dec`` (degrees), ``type`` (``sersic`` or ``point``/``star``), fluxes as
        ``flux_<band>`` columns (or one ``flux`` column used for every band in ``bands``), and
        for Sersic sources ``q``, ``pa`` (radians, north through east), ``n``, ``rh`` (arcsec).
    bands : sequence of str, optional
        The bands wanted; default every ``flux_<band>`` column. A band with no column takes the
        ``flux`` column if there is one.
    profile : optional
        The Sersic profile for every galaxy (default: ``pho.sersic.auto_profile()``, any r_h from 0.001" to 10").

    Returns
    -------
    list of pho.PointSource and pho.Sersic

    Raises
    ------
    PhoValueError
        A missing column, an unknown type, a non-numeric value (naming the row and column).
    """
    from .sources import PointSource, Sersic

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"source list {path} does not exist")
    rows = _rows_from_file(path)
    if not rows:
        raise PhoValueError(f"source list {path} has no rows")
    columns = list(rows[0])
    for need in ("ra", "dec", "type"):
        if need not in columns:
            raise PhoValueError(f"source list {path} lacks the column {need!r}; it has {columns}")
    flux_columns = {c[len("flux_"):]: c for c in columns if c.startswith("flux_")}
    if bands is None:
        # keep the band names as written in the file header
        original = _original_names(path)
        bands = [original.get(b, b) for b in flux_columns]
        if not bands:
            raise PhoValueError(f"source list {path} has no flux_<band> columns; add them or pass bands=[...]")
    sources = []
    for i, row in enumerate(rows):
        def num(col, i=i, row=row):
            if col not in row:
                raise PhoValueError(f"source list {path}, row {i}: no column {col!r} (columns: {columns})")
            try:
                return float(row[col])
            except (TypeError, ValueError):
                raise PhoValueError(f"source list {path}, row {i}: column {col!r} = {row[col]!r} is not a number") from None

        flux = {}
        for b in bands:
            col = flux_columns.get(b.lower())
            flux[b] = num(col if col is not None else "flux")
        kind = str(row["type"]).strip().lower()
        if kind in _POINT_TYPES:
            sources.append(PointSource(num("ra"), num("dec"), flux))
        elif kind in _SERSIC_TYPES:
            sources.append(Sersic(num("ra"), num("dec"), flux, num("q"), num("pa"), num("n"), num("rh"), profile=profile))
        else:
            raise PhoValueError(
                f"source list {path}, row {i}: type {row['type']!r} is not known; use 'sersic' or 'point' (or 'star')"
            )
    return sources


def read_id_column(path: Path, n_rows: int) -> np.ndarray:
    """The source list's ``id`` column as int64, or the row numbers if it has none.

    Raises
    ------
    PhoValueError
        An ``id`` value that is not an integer.
    """
    rows = _rows_from_file(Path(path))
    if not rows or "id" not in rows[0]:
        return np.arange(n_rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            value = float(row["id"])
        except (TypeError, ValueError):
            value = float("nan")
        if not (np.isfinite(value) and value == int(value)):
            raise PhoValueError(f"source list {path}, row {i}: id {row['id']!r} is not an integer")
        out[i] = int(value)
    return out


def _original_names(path: Path) -> dict:
    """Lower-case band name -> band name as spelled in the file's flux_<band> column."""
    if path.suffix.lower() in (".csv", ".txt"):
        with open(path, newline="") as f:
            header = next(csv.reader(line for line in f if not line.lstrip().startswith("#")))
    else:
        from astropy.table import Table

        header = Table.read(path).colnames
    return {h.strip()[5:].lower(): h.strip()[5:] for h in header if h.strip().lower().startswith("flux_")}


def _header_cards(settings: Mapping[str, object]) -> list[tuple[str, object]]:
    cards = []
    for key, value in settings.items():
        if value is None:
            value = "None"
        elif isinstance(value, (list, tuple, dict)):
            value = str(value)
        elif isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # FITS headers cannot hold NaN or inf (ln Z of an MCMC run is NaN)
        key = str(key).upper()
        cards.append((key if len(key) <= 8 and key.replace("_", "").isalnum() else f"HIERARCH {key}", value))
    return cards


def write_catalog(
    path: str | os.PathLike,
    scene,
    best=None,
    posterior=None,
    settings: Mapping[str, object] | None = None,
    overwrite: bool = False,
    exposure_names: Sequence[str] | None = None,
) -> Path:
    """Write the results as a FITS catalog (one row per source) plus the weighted samples.

    Parameters
    ----------
    path : str or path-like
        Output FITS file.
    scene : pho.Scene
        The fitted scene (for source types and parameter names).
    best : pho.fit.OptimizeResult, optional
        Fills ``<kind>_best`` and ``<kind>_err``.
    posterior : pho.sample.SampleResult, optional
        Fills ``<kind>_median``, ``_p16``, ``_p84`` and the ``SAMPLES`` HDU.
    settings : mapping, optional
        Extra header cards (command line, inputs).
    overwrite : bool
        Replace an existing file.
    exposure_names : sequence of str, optional
        Names of the exposures, for the ``SKY`` HDU (default ``exposure <k>``).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    from astropy.io import fits

    from . import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(NOT_OVERWRITING_MSG.format(path=path))
    names = list(scene.parameter_names)
    n_src = len(scene.sources)
    kinds: list[str] = []
    for name in names:
        k = name.split(".", 1)[1]
        if k not in kinds:
            kinds.append(k)
    values = {}
    stats = ("best", "err", "median", "p16", "p84")
    from .transforms import eta_pairs

    derived_kinds = ["q", "pa"] if eta_pairs(names) else []
    for k in kinds + derived_kinds:
        for s in stats:
            values[f"{k}_{s}"] = np.full(n_src, np.nan)
    for j, name in enumerate(names):
        src, k = name.split(".", 1)
        i = int(src[1:])
        if best is not None:
            values[f"{k}_best"][i] = best.theta[j]
            values[f"{k}_err"][i] = best.sigma[j]
        if posterior is not None:
            s = posterior.summary[name]
            values[f"{k}_median"][i] = s["median"]
            values[f"{k}_p16"][i] = s["p16"]
            values[f"{k}_p84"][i] = s["p84"]
    for _, _, prefix in eta_pairs(names):
        i = int(prefix[1:])
        for k in derived_kinds:
            if best is not None and f"{prefix}.{k}" in getattr(best, "derived", {}):
                values[f"{k}_best"][i], values[f"{k}_err"][i] = best.derived[f"{prefix}.{k}"]
            if posterior is not None and f"{prefix}.{k}" in posterior.summary:
                for stat in ("median", "p16", "p84"):
                    values[f"{k}_{stat}"][i] = posterior.summary[f"{prefix}.{k}"][stat]
    cols = [
        fits.Column(name="id", format="J", array=np.arange(n_src)),
        fits.Column(name="type", format="8A", array=np.array([s.kind for s in scene.sources])),
    ]
    for k in kinds + derived_kinds:
        unit = UNITS.get("flux" if k.startswith("flux") else k, "")
        for s in stats:
            cols.append(fits.Column(name=f"{k}_{s}", format="D", unit=unit or None, array=values[f"{k}_{s}"]))
    catalog = fits.BinTableHDU.from_columns(cols, name="CATALOG")

    header_settings = {
        "PHOVER": __version__,
        "DATE": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "CMDLINE": " ".join(sys.argv),
        "NSOURCES": n_src,
        "BANDS": ",".join(scene.bands),
    }
    if best is not None:
        header_settings.update({"BEST_LNL": best.lnlike, "ERRTYPE": best.uncertainty, "OPT_OK": best.success})
    if posterior is not None:
        header_settings.update({"LOGZ": posterior.logz, "LOGZERR": posterior.logz_err, "NSAMPLES": len(posterior.weights)})
        header_settings.update({f"NS_{k}": v for k, v in posterior.settings.items()})
    sky_hdu, sky_cards = _sky_table(best, posterior, exposure_names, stats)
    header_settings.update(sky_cards)
    header_settings.update(dict(settings or {}))
    cards = _header_cards(header_settings)
    for key, value in cards:
        catalog.header[key] = value
    hdus = [fits.PrimaryHDU(), catalog]
    if posterior is not None:
        scols = [
            fits.Column(name=n.replace(".", "_"), format="D", array=posterior.samples[:, j])
            for j, n in enumerate(posterior.names)
        ]
        scols += [
            fits.Column(name="weight", format="D", array=posterior.weights),
            fits.Column(name="logl", format="D", array=posterior.logl),
        ]
        samples = fits.BinTableHDU.from_columns(scols, name="SAMPLES")
        for key, value in cards:
            samples.header[key] = value
        hdus.append(samples)
    if sky_hdu is not None:
        hdus.append(sky_hdu)
    for hdu in hdus:
        for key, value in cards:
            if key in ("PHOVER", "CMDLINE"):
                hdus[0].header[key] = value
    return write_hdus_atomic(path, hdus)


def _sky_table(best, posterior, exposure_names, stats):
    """The ``SKY`` HDU (or None) and the header cards of the sky parameters' best values."""
    from astropy.io import fits

    names = list(best.names if best is not None else posterior.names if posterior is not None else [])
    sky = [(j, n) for j, n in enumerate(names) if n.startswith("sky_") and "." in n]
    if not sky:
        return None, {}
    exposures = sorted({int(n.split(".", 1)[0][4:]) for _, n in sky})
    row = {k: r for r, k in enumerate(exposures)}
    values = {f"{p}_{s}": np.full(len(exposures), np.nan) for p in ("level", "slope_x", "slope_y") for s in stats}
    cards = {}
    for j, n in sky:
        head, p = n.split(".", 1)
        r = row[int(head[4:])]
        if best is not None:
            values[f"{p}_best"][r], values[f"{p}_err"][r] = best.theta[j], best.sigma[j]
            cards[f"SKY{head[4:]}_{p.upper()}"] = float(best.theta[j])
            cards[f"SKY{head[4:]}_{p.upper()}_ERR"] = float(best.sigma[j])
        if posterior is not None:
            for s in ("median", "p16", "p84"):
                values[f"{p}_{s}"][r] = posterior.summary[n][s]
    labels = [exposure_names[k] if exposure_names is not None else f"exposure {k}" for k in exposures]
    cols = [fits.Column(name="exposure", format="J", array=np.array(exposures)),
            fits.Column(name="name", format=f"{max(8, max(len(x) for x in labels))}A", array=np.array(labels))]
    for key, array in values.items():
        cols.append(fits.Column(name=key, format="D", unit=UNITS[key.rsplit("_", 1)[0]], array=array))
    return fits.BinTableHDU.from_columns(cols, name="SKY"), cards


def write_hdus_atomic(path: str | os.PathLike, hdus) -> Path:
    """Write a list of FITS HDUs to ``path`` atomically: a hidden temporary file beside it, then
    ``os.replace`` (readers see the old file or the new one, never half of one)."""
    from astropy.io import fits

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fits.HDUList(list(hdus)).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_catalog(path: str | os.PathLike):
    """Read a catalog written by :func:`write_catalog`.

    Returns
    -------
    catalog : astropy.table.Table
        One row per source.
    samples : astropy.table.Table or None
        The weighted samples (None if the file has none).

    The ``SKY`` table, when the fit had sky parameters, is read by ``astropy.table.Table.read(path,
    hdu="SKY")``.
    """
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(path) as hdul:
        if "CATALOG" not in hdul:
            raise PhoValueError(f"{path} has no CATALOG extension; is it a pho catalog?")
        catalog = Table(hdul["CATALOG"].data, meta=dict(hdul["CATALOG"].header))
        samples = Table(hdul["SAMPLES"].data) if "SAMPLES" in hdul else None
    return catalog, samples
