"""Outputs of a field fit: the catalog, residual images and the patch map.

- ``catalog.fits``, HDU ``CATALOG``: one row per input source in input order: ``id``,
  ``type``, ``patch`` (-1: not fitted), ``flag`` (empty, or why the source was not fitted or its
  fit failed), and for every parameter kind (``flux_<band>``, ``ra``, ``dec``, ``q``, ``pa``,
  ``n``, ``rh``) the columns ``<kind>_best`` and ``<kind>_err`` (L-BFGS-B and Fisher errors) and,
  when sampled, ``<kind>_median``, ``<kind>_p16``, ``<kind>_p84``; NaN where a source has no
  such parameter (a point source's ``n``) or was not fitted. A fit in conformal shear
  (``shape_parameters="eta"``) reports q and pa derived from eta (errors propagated through the
  Jacobian) and adds ``eta_plus_*`` and ``eta_cross_*`` (same statistics; NaN for point sources).
  The header holds the settings, the passes with their largest change, and the residual statistics.
- ``catalog.fits``, HDU ``SKY`` (with ``fit_sky``): one row per patch and exposure cutout:
  ``patch``, ``exposure`` (index), ``name``, ``level_best``, ``level_err`` (counts per pixel; the
  mean sky over the cutout, on top of the exposure's data as given) and, for a plane,
  ``slope_x_*``, ``slope_y_*`` (counts per pixel per pixel, about the cutout's centre pixel
  ``box_x0 + (nx - 1)/2``, ``box_y0 + (ny - 1)/2``), the cutout ``box_x0, box_y0, box_x1, box_y1``
  (0-based, half-open), and the posterior ``*_median``, ``*_p16``, ``*_p84`` when sampled. The
  residual images are data minus the sources' model; the fitted skies are not subtracted
  (cutouts of neighbouring patches overlap, so there is no one sky per pixel).
- ``residual_<k>_<name>.fits`` per exposure: data minus the model of the whole field (counts,
  float32, NaN where a pixel has no data), with the exposure's WCS; computed in tiles on the
  Dask workers and written through a memory map, so no process holds a whole mosaic.
- ``patches.png``: the patches over the field.
All files are written to a hidden temporary file and renamed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..io import UNITS, _header_cards, write_hdus_atomic

__all__ = ["catalog_table", "sky_table", "write_catalog", "write_residuals", "plot_patches", "RESIDUAL_TILE_PIX"]

#: Side of the square tiles in which the residual images are computed, pixels.
RESIDUAL_TILE_PIX = 512


def catalog_table(run):
    """The catalog (module docstring) as an astropy Table."""
    from astropy.table import Table

    src = run.current
    kinds = src.column_kinds
    S = len(src)
    fitted = run.patch_of >= 0
    ok = np.array([fitted[i] and not run.flags[i] for i in range(S)])
    table = Table()
    table["id"] = src.ids
    table["type"] = np.where(src.is_point, "point", "sersic")
    table["patch"] = run.patch_of
    table["flag"] = np.array(run.flags, dtype=str) if S else np.zeros(0, dtype="U1")
    for j, kind in enumerate(kinds):
        best = np.array([src.get(i, kind) for i in range(S)])
        err = run.sigma[:, j].copy()
        if kind in ("q", "pa", "n", "rh"):
            best[src.is_point] = np.nan
        best[~ok] = np.nan
        err[~ok] = np.nan
        unit = UNITS.get("flux" if kind.startswith("flux") else kind, "") or None
        table[f"{kind}_best"] = best
        table[f"{kind}_err"] = err
        table[f"{kind}_best"].unit = table[f"{kind}_err"].unit = unit
        if run.posterior is not None:
            for stat in ("median", "p16", "p84"):
                table[f"{kind}_{stat}"] = run.posterior[stat][:, j]
                table[f"{kind}_{stat}"].unit = unit
    if run.eta is not None:
        unit = UNITS.get("eta_plus", "") or None
        for j, kind in enumerate(("eta_plus", "eta_cross")):
            best, err = run.eta[:, j].copy(), run.eta_sigma[:, j].copy()
            best[~ok | src.is_point], err[~ok | src.is_point] = np.nan, np.nan
            table[f"{kind}_best"], table[f"{kind}_err"] = best, err
            stats = ("median", "p16", "p84") if run.eta_posterior is not None else ()
            for stat in stats:
                table[f"{kind}_{stat}"] = run.eta_posterior[stat][:, j]
            for c in [f"{kind}_best", f"{kind}_err"] + [f"{kind}_{stat}" for stat in stats]:
                table[c].unit = unit
    return table


def sky_table(run):
    """The fitted skies per patch and exposure (module docstring, HDU ``SKY``) as an astropy
    Table, or None when the run fitted no sky."""
    from astropy.table import Table

    if run.settings.fit_sky == "none":
        return None
    params = ("level", "slope_x", "slope_y") if run.settings.fit_sky == "plane" else ("level",)
    rows = []
    for k in sorted(run.results):
        r = run.results[k]
        if not r.ok or not r.sky_names:
            continue
        post = run.sky_posterior.get(k)
        by_exposure: dict[int, dict] = {}
        for j, name in enumerate(r.sky_names):
            head, p = name.split(".", 1)
            e = int(head[4:])
            row = by_exposure.setdefault(e, {"patch": k, "exposure": e, "name": run.exposures[e].name})
            row[f"{p}_best"], row[f"{p}_err"] = float(r.sky_theta[j]), float(r.sky_sigma[j])
            if post is not None and name in post.sky_names:
                jj = post.sky_names.index(name)
                for stat in ("median", "p16", "p84"):
                    row[f"{p}_{stat}"] = float(getattr(post, f"sky_{stat}")[jj])
        patch = run.patches[k]
        for e, row in sorted(by_exposure.items()):
            row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"] = patch.boxes[e]
            rows.append(row)
    stats = ["best", "err"] + (["median", "p16", "p84"] if run.posterior is not None else [])
    columns = ["patch", "exposure", "name"] + [f"{p}_{s}" for p in params for s in stats] + ["box_x0", "box_y0",
                                                                                          "box_x1", "box_y1"]
    table = Table(rows=[[row.get(c, np.nan) for c in columns] for row in rows], names=columns) if rows else Table(
        names=columns, dtype=[int, int, str] + [float] * (len(columns) - 7) + [int] * 4)
    for c in columns:
        if c.split("_")[0] in ("level", "slope"):
            table[c].unit = UNITS[c.rsplit("_", 1)[0]]
    return table


def write_catalog(path: str | os.PathLike, table, run, run_info: dict) -> Path:
    """Write the catalog table (and the ``SKY`` table of a run that fitted skies) with the run's
    settings in its header, atomically."""
    from astropy.io import fits

    from .. import __version__

    hdu = fits.table_to_hdu(table)
    hdu.name = "CATALOG"
    settings = {"PHOVER": __version__, "NSOURCES": len(table), "NPATCHES": len(run.patches),
                "NPASSES": len(run.passes), "CONVERGED": bool(run.converged), "TIME_S": round(run.time_s, 2)}
    settings.update({f"FIELD_{k}": v for k, v in run.settings.fingerprint_part().items()})
    settings["SAMPLER"] = run.settings.sampler or "none"
    for p in run.passes:
        settings[f"PASS{p['pass']}_PATCHES"] = p["patches"]
        settings[f"PASS{p['pass']}_CHANGE"] = float(p["largest_change_sigma"])
    for st in run.residual_stats:
        settings[f"RES{st['exposure']}_CHI2"] = round(float(st["chi2_per_pixel"]), 5)
        settings[f"RES{st['exposure']}_CHI2SRC"] = round(float(st["chi2_per_source_pixel"]), 5)
    settings.update(run_info)
    for key, value in _header_cards(settings):
        hdu.header[key] = value
    hdus = [fits.PrimaryHDU(), hdu]
    sky = sky_table(run)
    if sky is not None:
        sky_hdu = fits.table_to_hdu(sky)
        sky_hdu.name = "SKY"
        sky_hdu.header["SKYMODEL"] = (run.settings.fit_sky, "sky fitted per patch and exposure cutout")
        hdus.append(sky_hdu)
    return write_hdus_atomic(path, hdus)


# ----------------------------------------------------------------------------------------- residuals
def _tile_residual(fexp, box, sources, profile):
    """Worker: data - model over one tile; returns (box, residual float32, chi2, n, chi2_src, n_src)."""
    import warnings

    from ..errors import PhoWarning
    from ..likelihood import render
    from ..sources import Scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        cut = fexp.cutout(box)
        model = np.zeros(cut.shape)
        if sources is not None and len(sources):
            scene = Scene(sources.to_sources(range(len(sources)), profile), bands=list(sources.bands))
            model = render(scene, cut, backend="cpu", workers=1)
    counted = cut.counted
    resid = np.where(counted, np.where(counted, cut.pixels, 0.0) - model, np.nan)
    chi = np.where(counted, resid, 0.0) ** 2 * np.where(counted, cut.ivar, 0.0)
    # "source pixels": where the model is above the pixel's noise
    src = counted & (np.abs(model) * np.sqrt(np.where(counted, cut.ivar, 0.0)) > 1.0)
    return box, resid.astype(np.float32), float(chi.sum()), int(counted.sum()), float(chi[src].sum()), int(src.sum())


def _empty_fits(path: Path, shape, header) -> int:
    """A FITS file of float32 zeros of ``shape`` with ``header``; returns the data's byte offset."""
    from astropy.io import fits

    ny, nx = shape
    h = fits.PrimaryHDU(data=np.zeros((1, 1), np.float32), header=header).header
    h["NAXIS1"], h["NAXIS2"] = nx, ny
    text = h.tostring()
    data_bytes = ny * nx * 4
    with open(path, "wb") as f:
        f.write(text.encode("ascii"))
        f.seek(len(text) + data_bytes + (-data_bytes) % 2880 - 1)
        f.write(b"\0")
    return len(text)


def write_residuals(client, run, outdir: Path, progress: bool = True) -> list[dict]:
    """Residual image and chi^2 per pixel of every exposure (module docstring).

    Returns
    -------
    list of dict
        Per exposure: ``path``, ``chi2_per_pixel`` (all pixels with data), ``chi2_per_source_pixel``
        (pixels where the model exceeds the noise) and the pixel counts.
    """
    from dask.distributed import as_completed
    from scipy.spatial import cKDTree

    from .driver import _PatchProgress
    from .patches import distance_to_box

    src = run.current
    stats = []
    for k, e in enumerate(run.exposures):
        ny, nx = e.shape
        x, y = e.sky_to_pixel(src.ra, src.dec)
        light = run.light_radius_arcsec / e.pixel_scale_arcsec
        tree = cKDTree(np.column_stack([x, y]))
        futures = []
        for y0 in range(0, ny, RESIDUAL_TILE_PIX):
            for x0 in range(0, nx, RESIDUAL_TILE_PIX):
                box = (x0, y0, min(nx, x0 + RESIDUAL_TILE_PIX), min(ny, y0 + RESIDUAL_TILE_PIX))
                cx, cy = 0.5 * (box[0] + box[2] - 1), 0.5 * (box[1] + box[3] - 1)
                w, h = box[2] - box[0], box[3] - box[1]
                near = np.array(tree.query_ball_point([cx, cy], math.hypot(w, h) / 2 + float(light.max())), dtype=int)
                if near.size:
                    near = np.sort(near[distance_to_box(x[near], y[near], box) < light[near]])
                sub = src.subset(near) if near.size else None
                futures.append(client.submit(_tile_residual, e, box, sub, run.profile, pure=False))
        stem = Path(e.sci_path).name.removesuffix(".gz").removesuffix(".fits").removesuffix(".fit")
        path = outdir / f"residual_{k}_{stem}.fits"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        header = e.wcs.to_header()
        header["BUNIT"] = ("counts", "data minus the model of the whole field")
        header["PHOSCI"] = (Path(e.sci_path).name, "science image")
        offset = _empty_fits(tmp, e.shape, header)
        image = np.memmap(tmp, dtype=">f4", mode="r+", offset=offset, shape=(ny, nx))
        chi2 = chi2_src = 0.0
        n = n_src = 0
        bar = _PatchProgress(f"residuals {k}", len(futures), progress, unit="tiles")
        try:
            for fut in as_completed(futures):
                box, resid, c, m, cs, ms = fut.result()
                image[box[1]:box[3], box[0]:box[2]] = resid
                chi2, n, chi2_src, n_src = chi2 + c, n + m, chi2_src + cs, n_src + ms
                bar.update(True)
                fut.release()
            image.flush()
            del image
            os.replace(tmp, path)
        finally:
            bar.close()
            if tmp.exists():
                tmp.unlink()
        stats.append({"exposure": k, "name": e.name, "band": e.band, "path": path, "chi2_per_pixel": chi2 / max(n, 1),
                      "n_pixels": n, "chi2_per_source_pixel": chi2_src / max(n_src, 1), "n_source_pixels": n_src})
    run.residual_stats = stats
    return stats


# ----------------------------------------------------------------------------------------- patch map
def plot_patches(run, path: str | os.PathLike) -> Path:
    """The patches over the field: sources coloured by patch with their blend footprints, the
    exposures' outlines, sources not fitted marked with a cross. Written atomically."""
    from matplotlib.patches import Circle

    from ..plots import _figure, save_figure
    from .patches import tangent_offsets_arcsec

    src = run.current
    ra0, dec0 = float(np.mean(src.ra)), float(np.mean(src.dec))
    xi, eta = tangent_offsets_arcsec(src.ra, src.dec, ra0, dec0)
    fig = _figure(7.5, 7.0)
    ax = fig.add_subplot(111)
    colors = np.array(["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"])
    for p in run.patches:
        color = "0.6" if len(p.sources) == 1 else colors[p.index % len(colors)]
        for i in p.sources:
            ax.add_patch(Circle((xi[i], eta[i]), run.blend_radius_arcsec[i], fc=color, ec=color, alpha=0.35, lw=0.5))
        ax.plot(xi[p.sources], eta[p.sources], ".", color=color, ms=2)
    bad = np.array([bool(f) for f in run.flags])
    if bad.any():
        ax.plot(xi[bad], eta[bad], "x", color="k", ms=5, label=f"not fitted or failed ({int(bad.sum())})")
        ax.legend(loc="upper right", fontsize=8)
    for k, e in enumerate(run.exposures):
        ny, nx = e.shape
        corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5], [-0.5, -0.5]])
        ra, dec = e.wcs.pixel_to_world_values(corners[:, 0], corners[:, 1])
        cx, cy = tangent_offsets_arcsec(np.asarray(ra), np.asarray(dec), ra0, dec0)
        ax.plot(cx, cy, "-", lw=0.8, color=f"C{k % 10}", alpha=0.7)
    sizes = np.array([len(p.sources) for p in run.patches]) if run.patches else np.zeros(1, int)
    ax.set_title(f"{len(src)} sources in {len(run.patches)} patches (largest {int(sizes.max())}, "
                 f"{int(np.sum(sizes > 1))} blends); grey: single sources", fontsize=9)
    ax.set_xlabel('east offset (arcsec)')
    ax.set_ylabel('north offset (arcsec)')
    ax.set_aspect("equal")
    ax.invert_xaxis()  # east to the left, as on the sky
    ax.autoscale_view()
    return save_figure(fig, path)
