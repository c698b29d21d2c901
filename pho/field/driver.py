"""Fitting a whole field: plan the patches, fit them on Dask in passes, write the results.

:func:`fit_field` is the Python entry point of ``python -m pho.tools.fitfield``:

1. **Plan.** Sources off every exposure are flagged and not fitted. Footprint radii
   (``pho.field.footprints``) give the blends (``pho.field.patches``), cut to at most
   ``max_patch_sources``, and each patch's cutouts and neighbours.
2. **Passes** (Gauss-Seidel over a colouring, :func:`colour_patches`). Patches that hold each
   other's close neighbours (``pho.field.patches``) are adjacent; the brightest patches get the
   lowest colours. In a pass a patch waits on the cluster for its lower-coloured neighbours and
   fits with their new values, and with everything else at its value after the previous pass;
   so a faint source is never fitted against a bright neighbour's initial guess once that
   neighbour has been fitted, and the answer does not depend on which worker finishes first.
   Patches share no active source, and patches of one colour run at the same time. A later pass
   refits only the patches with a close neighbour that moved by more than ``tol_sigma`` of its
   error after the patch last saw it. The field has converged when no patch needs a refit; the
   largest change of each pass is reported.
3. **Sampling** (optional): once the passes are done, every patch's posterior is sampled with its
   neighbours at their best fits: dynesty for patches of up to ``DYNESTY_MAX_PARAMS`` parameters,
   NUTS (``pho.sample_nuts``) above that where it is available.
4. **Outputs** (``pho.field.output``): the catalog, a residual image per exposure, the patch map.

Scheduling is Dask's: a ``LocalCluster`` sized to the machine by default (one single-threaded
worker process per core), or any cluster by scheduler address. Every task carries only its
patch's sources and the exposures' paths and pixel boxes; results are written to ``OUTDIR/work``
(``pho.field.store``) as they arrive, so an interrupted run resumes where it stopped; a worker
that dies mid-patch has its patch rerun by Dask on another worker.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import PhoRangeError, PhoValueError, PhoWarning, warn
from ..sample import DYNESTY_MAX_PARAMS, auto_sampler
from .footprints import footprint_radii_arcsec
from .mosaic import FieldExposure
from .patches import Patch, group_sources, plan_patches, tangent_offsets_arcsec
from .patchfit import PatchResult, PatchTask, fit_patch
from .sourcetable import FieldSources
from .store import ResultStore, fingerprint

__all__ = ["fit_field", "FieldSettings", "FieldRun", "connect", "DYNESTY_MAX_PARAMS", "FIELD_SHAPE_PARAMETERS"]

log = logging.getLogger("pho.field")


#: Shape parameterizations a field fit takes (``FieldSettings.shape_parameters``, ``--shape-parameters``).
FIELD_SHAPE_PARAMETERS = ("q_pa", "eta")


@dataclass
class FieldSettings:
    """Settings of a field fit (all have defaults that suit HST/JWST fields).

    Attributes
    ----------
    max_patch_sources : int
        Largest patch; larger blends are cut (default 12).
    blend_threshold_sigma : float
        Footprint edge for blends, in pixel-noise sigmas (default 0.5).
    light_threshold_sigma : float
        Footprint edge for neighbours' light held fixed in a patch (default 0.02).
    margin_pix : float
        Pixels around the blend footprints in each cutout (default 3).
    max_passes : int
        Passes over the field at most (default 8).
    tol_sigma : float
        Convergence: the largest change of a parameter in a pass, in units of its error (default 0.1).
    sampler : {None, "auto", "dynesty", "nuts"}
        Posterior sampling per patch after the passes (None: optimize only).
    position_box_arcsec : float or None
        Half-width of the position prior box (default: 3 pixels of the coarsest exposure).
    nlive, maxcall, draws, tune, chains, seed
        Sampler settings. NUTS's warm-up ``tune`` is 300 iterations by default: its metric starts
        from the optimizer's Fisher matrix, and NUTS samples only patches of more than
        ``DYNESTY_MAX_PARAMS`` parameters under ``sampler="auto"``; on the 20-parameter demo and the
        80-parameter patch of docs/fitting.md 300 gave max R-hat 1.003-1.006 and no divergences
        (on one faint 7-parameter galaxy it did not: R-hat 1.012, which dynesty samples here).
    fit_sky : {"none", "constant", "plane"}
        Fit a sky background per patch and exposure cutout, jointly with the patch's sources
        (``pho.Likelihood(sky=...)``): a constant level, or a plane (level and x, y slopes).
        Default "none": the exposures' data are taken as sky-subtracted, as before. From the
        second pass on, each patch's skies start from that patch's previous fit (patches and
        their cutouts are planned once per run, so a patch and an exposure name one sky); the
        sky prior stays centred on 0.
    shape_parameters : {"auto", "q_pa", "eta"}
        How the patches fit the galaxies' shapes (``pho.Scene(shape_parameters=...)``): axis ratio
        and position angle, or conformal shear ``eta_plus``, ``eta_cross``. "auto" (default) is
        eta where the patches are sampled (``sampler`` "auto" or "nuts": NUTS mixes better in eta,
        docs/fitting.md) and q_pa otherwise (optimize only, or dynesty: the catalog is then the same
        as before eta existed); :func:`fit_field` resolves it before the fit. Conformal shear is
        (``|eta| = -ln q``; smooth through q = 1, prior ``TruncatedNormal(0, 1, -2.303, 2.303)``
        per component, ``pho.priors.default_priors``). The source table keeps q and pa either
        way: after each patch fit the best eta becomes q and pa, with errors propagated through
        the Jacobian d(q, pa)/d(eta); the catalog adds ``eta_plus_*`` and ``eta_cross_*``.
    """

    max_patch_sources: int = 12
    blend_threshold_sigma: float = 0.5
    light_threshold_sigma: float = 0.02
    margin_pix: float = 3.0
    max_passes: int = 8
    tol_sigma: float = 0.1
    sampler: str | None = None
    position_box_arcsec: float | None = None
    nlive: int | None = None
    maxcall: int | None = None
    draws: int = 1000
    tune: int = 300
    chains: int = 2
    seed: int = 1
    fit_sky: str = "none"
    shape_parameters: str = "auto"

    def resolved(self) -> "FieldSettings":
        """These settings with ``shape_parameters="auto"`` replaced by what it means for ``sampler``."""
        if self.shape_parameters != "auto":
            return self
        return replace(self, shape_parameters="eta" if self.sampler in ("auto", "nuts") else "q_pa")

    def check(self) -> None:
        if self.max_patch_sources < 1:
            raise PhoValueError(f"max_patch_sources={self.max_patch_sources} must be at least 1")
        if not 0 < self.light_threshold_sigma <= self.blend_threshold_sigma:
            raise PhoValueError("need 0 < light_threshold_sigma <= blend_threshold_sigma")
        if self.max_passes < 1:
            raise PhoValueError(f"max_passes={self.max_passes} must be at least 1")
        if not self.tol_sigma > 0:
            raise PhoValueError(f"tol_sigma={self.tol_sigma} must be positive")
        if self.sampler not in (None, "auto", "dynesty", "nuts"):
            raise PhoValueError(f"sampler={self.sampler!r}; use None, 'auto', 'dynesty' or 'nuts'")
        if self.fit_sky not in ("none", "constant", "plane"):
            raise PhoValueError(f"fit_sky={self.fit_sky!r}; use 'none', 'constant' or 'plane'")
        if self.shape_parameters not in FIELD_SHAPE_PARAMETERS + ("auto",):
            raise PhoValueError(
                f"shape_parameters={self.shape_parameters!r}; a field fit takes 'auto' (the default: eta when "
                "patches are sampled, else q_pa), 'q_pa' (axis ratio and position angle) or 'eta' (conformal shear)"
            )

    def fingerprint_part(self) -> dict:
        """The settings that change the answer (not the sampler's, which run after the passes)."""
        part = {k: getattr(self, k) for k in ("max_patch_sources", "blend_threshold_sigma", "light_threshold_sigma",
                                              "margin_pix", "max_passes", "tol_sigma", "position_box_arcsec")}
        if self.fit_sky != "none":  # absent when off, so runs without a sky fingerprint as before
            part["fit_sky"] = self.fit_sky
        if self.shape_parameters != "q_pa":  # likewise: absent for the default
            part["shape_parameters"] = self.shape_parameters
        return part


@dataclass
class FieldRun:
    """The state of a field fit, filled in by :func:`fit_field` (used by the outputs)."""

    exposures: list
    initial: FieldSources
    current: FieldSources
    sigma: np.ndarray  # (S, K) errors in the layout of ``FieldSources`` columns (see _COLUMNS)
    patches: list
    patch_of: np.ndarray  # (S,) patch index, -1 for sources not fitted
    flags: list  # (S,) str, "" when fine
    light_radius_arcsec: np.ndarray
    blend_radius_arcsec: np.ndarray
    settings: FieldSettings
    passes: list = field(default_factory=list)  # one dict per pass
    results: dict = field(default_factory=dict)  # patch index -> its latest PatchResult
    posterior: dict | None = None  # "median"/"p16"/"p84" -> (S, K)
    converged: bool = False
    time_s: float = 0.0
    profile: object = None
    residual_stats: list = field(default_factory=list)
    sky_posterior: dict = field(default_factory=dict)  # patch index -> sampled PatchResult (fit_sky only)
    # shape_parameters="eta": each galaxy's latest (eta_plus, eta_cross) and errors, (S, 2), NaN until fitted
    eta: np.ndarray | None = None
    eta_sigma: np.ndarray | None = None
    eta_posterior: dict | None = None  # "median"/"p16"/"p84" -> (S, 2)


# ----------------------------------------------------------------------------------------- Dask
@contextmanager
def connect(client=None, scheduler: str | None = None, workers: int | None = None, timeout_s: float = 20.0):
    """A Dask client: the one given, one connected to ``scheduler``, or a new local cluster.

    The local cluster has ``workers`` single-threaded worker processes (default: the cores
    available to this process) and no dashboard; it is closed on exit.

    Raises
    ------
    PhoValueError
        The scheduler cannot be reached within ``timeout_s`` (the message says how to start one).
    """
    from dask.distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            c = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise PhoValueError(
                f"could not reach the Dask scheduler at {scheduler} within {timeout_s:g} s ({type(exc).__name__}: {exc}). "
                "Start one with `dask scheduler` and workers with `dask worker ADDRESS --nthreads 1`, or leave out "
                "--scheduler to use a local cluster"
            ) from None
        try:
            yield c
        finally:
            c.close()
        return
    from .._backends import available_cores

    n = available_cores() if workers is None else int(workers)
    if n < 1:
        raise PhoValueError(f"workers={workers} must be at least 1")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


class _PatchProgress:
    """Patches done, through pho's shared progress line (live on a terminal, every 10 s in a log)."""

    def __init__(self, label: str, total: int, enabled: bool, unit: str = "patches"):
        from .._progress import Progress

        self.total, self.done, self.failed, self.unit = total, 0, 0, unit
        self.t0 = time.perf_counter()
        self.line = Progress(label, enabled=enabled and total > 0)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        failed = f", {self.failed} failed" if self.failed else ""
        self.line.update(f"{self.done}/{self.total} {self.unit}{failed}, {elapsed:.0f} s, ~{left:.0f} s left")

    def close(self) -> None:
        self.line.close()


def _run_tasks(client, tasks: list[PatchTask], store: ResultStore | None, stage: str, label: str, progress: bool,
               key_prefix: str, upstream: dict[int, list[int]] | None = None) -> dict[int, PatchResult]:
    """Fit ``tasks`` on the cluster; each result is stored as it arrives. Returns index -> result.

    ``upstream[k]`` lists the patches (among ``tasks``) whose results of this stage patch ``k``
    must see: its task waits for them on the cluster and takes their values for its neighbours.
    """
    from dask.distributed import as_completed

    upstream = upstream or {}
    results: dict[int, PatchResult] = {}
    todo = []
    for t in tasks:
        stored = store.load(stage, t.patch_index) if store is not None else None
        if stored is not None:
            results[t.patch_index] = stored
        else:
            todo.append(t)
    if len(results):
        log.info("%s: %d of %d patches already done (resumed)", label, len(results), len(tasks))
    bar = _PatchProgress(label, len(todo), progress)
    # the biggest patches first, so that no long patch starts last; upstream patches before their dependents
    size = {t.patch_index: len(t.rows) * sum((b[2] - b[0]) * (b[3] - b[1]) for _, b, _ in t.exposures.values())
            for t in todo}
    by_index = {t.patch_index: t for t in todo}
    order = _dependency_order(sorted(by_index, key=lambda k: -size[k]), upstream)
    futures, submitted = {}, {}
    for rank, k in enumerate(order):
        t = by_index[k]
        inputs = [submitted[u] if u in submitted else results[u] for u in upstream.get(k, []) if u in submitted or u in results]
        fut = client.submit(fit_patch, t, *inputs, key=f"{key_prefix}-{stage}-patch{k:05d}", pure=False,
                            priority=len(order) - rank)
        futures[fut] = t
        submitted[k] = fut
    try:
        for fut in as_completed(list(futures)):
            t = futures.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # e.g. KilledWorker: the patch killed every worker it was given
                res = PatchResult(patch_index=t.patch_index, pass_index=t.pass_index, rows=np.asarray(t.rows), ok=False,
                                  message=f"{type(exc).__name__}: {exc}")
            fut.release()
            if store is not None:
                store.save(stage, res)
            results[t.patch_index] = res
            bar.update(res.ok)
            log.debug(
                "%s patch %d: %d sources, %d pixels, %s, %d calls, %.2f s%s%s", stage, res.patch_index, len(res.rows),
                res.n_pixels, "ok" if res.ok else "FAILED", res.n_calls, res.time_s,
                f" (sampling {res.sample_time_s:.2f} s)" if res.sample_time_s else "",
                f": {res.message}" if res.message else "",
            )
            if res.ok and res.sky_names:
                log.debug("%s patch %d sky: %s", stage, res.patch_index, ", ".join(
                    f"{n} = {v:.4g} +/- {e:.2g}" for n, v, e in zip(res.sky_names, res.sky_theta, res.sky_sigma)))
    finally:
        for fut in futures:
            fut.cancel()
        submitted.clear()
        bar.close()
    return results


def _dependency_order(keys: list[int], upstream: dict[int, list[int]]) -> list[int]:
    """``keys`` reordered so that every patch comes after its upstream patches (stable otherwise)."""
    placed, out = set(), []

    def place(k):
        if k in placed:
            return
        placed.add(k)
        for u in upstream.get(k, []):
            if u in wanted:
                place(u)
        out.append(k)

    wanted = set(keys)
    for k in keys:
        place(k)
    return out


def colour_patches(patches: list[Patch], sources: FieldSources) -> np.ndarray:
    """Gauss-Seidel order of the patches: a colour per patch, brightest patches first.

    Two patches are adjacent when one holds a close neighbour of the other. Patches are coloured
    greedily in order of their brightest source (total flux over the bands), each with the smallest
    colour none of its already-coloured neighbours has. Within a pass a patch sees the new values
    of its neighbours of lower colour (it waits for them on the cluster) and the previous pass's
    values of the others; patches of one colour run at the same time.
    """
    owner = np.full(len(sources), -1)
    for p in patches:
        owner[p.sources] = p.index
    adjacent: list[set] = [set() for _ in patches]
    for p in patches:
        for n in p.close:
            q = int(owner[int(n)])
            if q >= 0 and q != p.index:
                adjacent[p.index].add(q)
                adjacent[q].add(p.index)
    brightness = [float(np.max(np.sum(np.abs(sources.flux[p.sources]), axis=1))) for p in patches]
    colour = np.full(len(patches), -1)
    for k in sorted(range(len(patches)), key=lambda k: (-brightness[k], k)):
        used = {int(colour[q]) for q in adjacent[k] if colour[q] >= 0}
        c = 0
        while c in used:
            c += 1
        colour[k] = c
    return colour, adjacent


# ----------------------------------------------------------------------------------------- planning
def _as_exposures(exposures) -> list[FieldExposure]:
    out = []
    for k, e in enumerate(exposures):
        if isinstance(e, FieldExposure):
            out.append(e)
        elif isinstance(e, (tuple, list)) and len(e) == 4:
            out.append(FieldExposure.open(*e))
        else:
            raise TypeError(f"exposure {k} is a {type(e).__name__}; give pho.field.FieldExposure objects or "
                            "(sci_path, err_path, psf, band) tuples")
    if not out:
        raise PhoValueError("a field needs at least one exposure")
    return out


def _as_sources(sources, bands) -> FieldSources:
    if isinstance(sources, FieldSources):
        missing = [b for b in bands if b not in sources.bands]
        if missing:
            raise PhoValueError(f"the source table has no fluxes in band(s) {missing}, which have exposures")
        if tuple(sources.bands) != tuple(bands):
            keep = [sources.bands.index(b) for b in bands]
            sources = FieldSources(**{**sources.__dict__, "flux": sources.flux[:, keep], "bands": tuple(bands)})
        return sources.copy()
    if isinstance(sources, (str, os.PathLike)):
        _warn_unused_bands(Path(sources), bands)
        return FieldSources.read(sources, bands)
    return FieldSources.from_sources(list(sources), bands)


def _warn_unused_bands(path: Path, bands) -> None:
    from ..io import _original_names

    if not path.exists():
        raise FileNotFoundError(f"source list {path} does not exist")
    extra = [b for b in _original_names(path).values() if b not in bands]
    if extra:
        warn(f"source list {path}: band(s) {extra} have no exposure; their fluxes are not fitted and not in the catalog",
             PhoWarning)


def _check_profile_ranges(sources: FieldSources, profile) -> None:
    from ..sersic import auto_profile

    profile = auto_profile() if profile is None else profile
    gal = ~sources.is_point
    (nlo, nhi), (rlo, rhi) = profile.n_range, profile.rh_range_arcsec
    bad = np.flatnonzero(gal & ~((sources.n >= nlo) & (sources.n <= nhi) & (sources.rh >= rlo) & (sources.rh <= rhi)))
    if bad.size:
        i = int(bad[0])
        raise PhoRangeError(
            f"{bad.size} source(s) of the list have n or rh outside the Sersic table's range n in [{nlo:g}, {nhi:g}], "
            f"rh in [{rlo:g}, {rhi:g}] arcsec (first: row {i}, id {int(sources.ids[i])}, n={sources.n[i]:g}, "
            f"rh={sources.rh[i]:g}); bring them inside the range in the source list",
            float(sources.rh[i]), rlo, rhi,
        )


def _coverage(exposures, sources: FieldSources):
    """Pixel positions per exposure and which sources lie on which exposure, (E, S) bool."""
    positions, on = [], np.zeros((len(exposures), len(sources)), dtype=bool)
    for k, e in enumerate(exposures):
        x, y = e.sky_to_pixel(sources.ra, sources.dec)
        ny, nx = e.shape
        on[k] = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        positions.append((x, y))
    return positions, on


def plan_field(exposures, sources: FieldSources, settings: FieldSettings, profile=None):
    """Flags, footprint radii and patches of a field (step 1 of the module docstring).

    Returns
    -------
    patches : list of Patch
    flags : list of str
        Per source: "" or why it is not fitted.
    blend_radius, light_radius : ndarray of shape (S,)
        Footprint radii, arcsec.
    """
    positions, on = _coverage(exposures, sources)
    flags = ["" if on[:, i].any() else "off every exposure" for i in range(len(sources))]
    for k, e in enumerate(exposures):
        if not on[k].any():
            warn(f"exposure {k} ({e.name}, band {e.band}) contains no source of the list; it is not used", PhoWarning)
    blend = footprint_radii_arcsec(sources, exposures, settings.blend_threshold_sigma, profile)
    light = footprint_radii_arcsec(sources, exposures, settings.light_threshold_sigma, profile)
    ra0, dec0 = float(np.mean(sources.ra)), float(np.mean(sources.dec))
    xi, eta = tangent_offsets_arcsec(sources.ra, sources.dec, ra0, dec0)
    fitted = np.flatnonzero(on.any(axis=0))
    groups = group_sources(xi, eta, blend, settings.max_patch_sources, candidates=fitted)
    scales = [e.pixel_scale_arcsec for e in exposures]
    patches = plan_patches(
        groups, positions, [blend / s for s in scales], [light / s for s in scales], [e.shape for e in exposures],
        margin_pix=settings.margin_pix,
    )
    for p in patches:
        if not p.boxes:
            for i in p.sources:
                flags[int(i)] = "no exposure pixels around the source"
    patches = [p for p in patches if p.boxes]
    for k, p in enumerate(patches):
        p.index = k
    return patches, flags, blend, light


def _task(patch: Patch, pass_index: int, run: FieldRun, sampler: str | None, options: dict) -> PatchTask:
    near = patch.all_neighbours
    previous = run.sigma[patch.sources]
    if run.eta_sigma is not None:  # a fit in eta: its own errors are the optimizer's units, in the q, pa columns
        previous = previous.copy()
        cols = run.current.column_kinds
        previous[:, [cols.index("q"), cols.index("pa")]] = run.eta_sigma[patch.sources]
    # warm start of the skies: this patch's latest fit (same patch, same cutouts; None in pass 1)
    last = run.results.get(patch.index)
    sky_start = dict(zip(last.sky_names, (float(v) for v in last.sky_theta))) if last is not None and last.ok and \
        last.sky_names else None
    return PatchTask(
        patch_index=patch.index, pass_index=pass_index, rows=patch.sources,
        active=run.current.subset(patch.sources), start=run.initial.subset(patch.sources), neighbour_rows=near,
        neighbours=run.current.subset(near) if near.size else None,
        exposures={e: (run.exposures[e], patch.boxes[e], patch.neighbours[e]) for e in patch.boxes},
        sampler=sampler, options=options, previous_sigma=previous if np.all(np.isfinite(previous)) else None,
        sky_start=sky_start,
    )


def _apply(run: FieldRun, result: PatchResult) -> dict[int, float]:
    """Write a pass's result into the current state; returns each source's largest change, in sigmas."""
    if not result.ok:
        return {}
    cols = run.current.column_kinds
    changes: dict[int, float] = {}
    for row, kind, value, sigma in zip(result.param_rows, result.param_kinds, result.theta, result.sigma):
        row = int(row)
        change = value - run.current.get(row, kind)
        if kind == "pa":
            change = (change + math.pi / 2) % math.pi - math.pi / 2
        if sigma > 0 and np.isfinite(sigma):
            changes[row] = max(changes.get(row, 0.0), abs(change) / sigma)
        run.current.set(row, kind, value)
        run.sigma[row, cols.index(kind)] = sigma
    if run.eta is not None:
        for row, eta, eta_sigma in zip(result.eta_rows, result.eta_theta, result.eta_sigma):
            run.eta[int(row)], run.eta_sigma[int(row)] = eta, eta_sigma
    return changes


def _sample_patches(client, run: FieldRun, store, options: dict, progress: bool, key_prefix: str) -> None:
    """Step 3 of the module docstring: posterior summaries of every fitted patch into ``run.posterior``."""
    import pho

    have_nuts = hasattr(pho, "sample_nuts")
    n_per_source = {True: len(run.current.bands) + 2, False: len(run.current.bands) + 6}
    n_sky = {"none": 0, "constant": 1, "plane": 3}[run.settings.fit_sky]
    tasks = []
    for patch in run.patches:
        if not run.results.get(patch.index, PatchResult(0, 0, np.zeros(0))).ok:
            continue
        n_params = sum(n_per_source[bool(run.current.is_point[i])] for i in patch.sources) + n_sky * len(patch.boxes)
        sampler = run.settings.sampler
        if sampler == "auto":
            sampler = auto_sampler(n_params) if have_nuts else "dynesty"
        if sampler == "nuts" and not have_nuts:
            raise PhoValueError("sampler='nuts' needs pho.sample_nuts, which this pho does not have; use 'dynesty'")
        tasks.append(_task(patch, 0, run, sampler, options))
    results = _run_tasks(client, tasks, store, "sample", "sampling", progress, key_prefix)
    _take_posterior(run, results)


def _take_posterior(run: FieldRun, results: dict) -> None:
    """The sampled patches' summaries into ``run.posterior`` (and ``run.eta_posterior``,
    ``run.sky_posterior``); a patch whose sampling failed flags its sources."""
    cols = run.current.column_kinds
    S = len(run.current)
    post = {k: np.full((S, len(cols)), np.nan) for k in ("median", "p16", "p84")}
    eta_post = {k: np.full((S, 2), np.nan) for k in ("median", "p16", "p84")} if run.eta is not None else None
    for r in results.values():
        if not r.ok or r.median is None:
            for row in r.rows:
                run.flags[int(row)] = run.flags[int(row)] or f"sampling failed: {r.message}"
            continue
        if r.sky_names and r.sky_median is not None:
            run.sky_posterior[r.patch_index] = r
        for j, (row, kind) in enumerate(zip(r.param_rows, r.param_kinds)):
            for k in post:
                post[k][int(row), cols.index(kind)] = getattr(r, k)[j]
        if eta_post is not None and r.eta_median is not None:
            for j, row in enumerate(r.eta_rows):
                for k in eta_post:
                    eta_post[k][int(row)] = getattr(r, f"eta_{k}")[j]
    run.posterior = post
    run.eta_posterior = eta_post


# ----------------------------------------------------------------------------------------- the fit
def fit_field(
    exposures,
    sources,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    outdir: str | os.PathLike | None = None,
    settings: FieldSettings | None = None,
    resume: bool = False,
    overwrite: bool = False,
    residuals: bool = True,
    plots: bool = True,
    progress: bool = True,
    profile=None,
    run_info: dict | None = None,
):
    """Fit every source of a field (module docstring) and return the catalog.

    Parameters
    ----------
    exposures : sequence of FieldExposure or (sci_path, err_path, psf, band) tuples
        Whole mosaics or single exposures, each with its own WCS, band and PSF mixture.
    sources : FieldSources, path of a source list, or sequence of pho sources
        The initial catalog (``python -m pho.tools.fit``'s source-list format).
    client : dask.distributed.Client, optional
        Use this client. Otherwise ``scheduler`` (an address such as ``tcp://host:8786``) or a
        new local cluster of ``workers`` single-threaded processes (default: one per core).
    outdir : str or path-like, optional
        Write ``catalog.fits``, residual images, ``patches.png`` and the per-patch results
        (``work/``) here. Without it nothing is written and nothing can be resumed.
    settings : FieldSettings, optional
    resume : bool
        Continue the run in ``outdir`` (its finished patches are not fitted again).
    overwrite : bool
        Start again in an ``outdir`` that holds an earlier run.
    residuals, plots : bool
        Write the residual images / the patch map (with ``outdir``).
    progress : bool
        Show the patches done (stderr).
    profile : optional
        Sersic profile of every galaxy (default: the shipped table).
    run_info : dict, optional
        Extra header cards for the catalog (the command line).

    Returns
    -------
    astropy.table.Table
        One row per input source in input order (columns: ``pho.field.output.catalog_table``).

    Raises
    ------
    PhoValueError
        No exposures; bands that disagree; an unreachable scheduler; a resume that does not
        match the folder's earlier run.
    PhoRangeError
        Sources whose n or rh lie outside the Sersic table.
    """
    from . import output

    t0 = time.perf_counter()
    settings = FieldSettings() if settings is None else settings
    settings.check()
    settings = settings.resolved()
    exposures = _as_exposures(exposures)
    bands = list(dict.fromkeys(e.band for e in exposures))
    sources = _as_sources(sources, bands)
    _check_profile_ranges(sources, profile)

    patches, flags, blend, light = plan_field(exposures, sources, settings, profile)
    S, K = len(sources), len(sources.column_kinds)
    run = FieldRun(
        exposures=exposures, initial=sources, current=sources.copy(), sigma=np.full((S, K), np.nan), patches=patches,
        patch_of=np.full(S, -1), flags=flags, light_radius_arcsec=light, blend_radius_arcsec=blend, settings=settings,
        profile=profile,
    )
    if settings.shape_parameters == "eta":
        run.eta, run.eta_sigma = np.full((S, 2), np.nan), np.full((S, 2), np.nan)
    for p in patches:
        run.patch_of[p.sources] = p.index
    sizes = np.array([len(p.sources) for p in patches]) if patches else np.zeros(0, int)
    log.info(
        "field: %d sources (%d not fitted), %d exposures in %d band(s), %d patches (largest %d sources, %d single)",
        S, sum(bool(f) for f in flags), len(exposures), len(bands), len(patches), int(sizes.max(initial=0)),
        int(np.sum(sizes == 1)),
    )

    store = None
    if outdir is not None:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        store = ResultStore(outdir / "work")
        if overwrite and not resume:
            import shutil

            shutil.rmtree(store.workdir, ignore_errors=True)
        store.start(fingerprint(sources, exposures, settings.fingerprint_part()), len(patches), resume)
    key_prefix = f"pho-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
    options = {
        "position_box_arcsec": settings.position_box_arcsec, "seed": settings.seed, "nlive": settings.nlive,
        "maxcall": settings.maxcall, "draws": settings.draws, "tune": settings.tune, "chains": settings.chains,
        "profile": profile, "fit_sky": settings.fit_sky,
    }
    if settings.shape_parameters != "q_pa":
        options["shape_parameters"] = settings.shape_parameters
    with connect(client, scheduler, workers) as c:
        n_workers = len(c.scheduler_info().get("workers", {}))
        log.info("Dask: %d worker(s) at %s", n_workers, c.scheduler.address)
        colour, adjacent = colour_patches(patches, run.initial)
        owner = run.patch_of
        todo = list(patches)
        for p in range(1, settings.max_passes + 1):
            tp = time.perf_counter()
            in_pass = {patch.index for patch in todo}
            upstream = {k: sorted(q for q in adjacent[k] if q in in_pass and colour[q] < colour[k]) for k in in_pass}
            tasks = [_task(patch, p, run, None, options) for patch in todo]
            results = _run_tasks(c, tasks, store, f"pass{p:02d}", f"pass {p}", progress, key_prefix, upstream)
            # patches share no source, so the results go into the state in any order
            changes: dict[int, float] = {}
            for k, r in sorted(results.items()):
                changes.update(_apply(run, r))
            run.results.update(results)
            moved = {row for row, ch in changes.items() if ch > settings.tol_sigma}
            largest = max(changes.values(), default=0.0)
            failed = sum(not r.ok for r in results.values())
            run.passes.append({"pass": p, "patches": len(tasks), "failed": failed, "largest_change_sigma": largest,
                               "time_s": time.perf_counter() - tp})
            log.info("pass %d: %d patches fitted (%d failed) in %.1f s; largest change %.3g sigma, %d sources moved "
                     "by more than %g sigma", p, len(tasks), failed, time.perf_counter() - tp, largest, len(moved),
                     settings.tol_sigma)
            # refit a patch whose close neighbour moved after the patch last looked at it
            todo = []
            for patch in patches:
                stale = False
                for n in (int(i) for i in patch.close if int(i) in moved):
                    q = int(owner[n])
                    seen = patch.index in in_pass and q in in_pass and colour[q] < colour[patch.index]
                    stale = stale or not seen
                if stale:
                    todo.append(patch)
            if not todo:
                run.converged = True
                break
        if not run.converged:
            log.warning("the field did not converge in %d passes: %d patches still have neighbours that moved by more "
                        "than %g sigma", settings.max_passes, len(todo), settings.tol_sigma)
        for k, r in run.results.items():
            if not r.ok:
                for row in r.rows:
                    run.flags[int(row)] = f"fit failed: {r.message}"
        if settings.sampler is not None:
            _sample_patches(c, run, store, options, progress, key_prefix)
        run.time_s = time.perf_counter() - t0
        table = output.catalog_table(run)
        if outdir is not None:
            if residuals:
                for st in output.write_residuals(c, run, outdir, progress=progress):
                    log.info("exposure %d (%s): residual %s, chi2/pixel %.3f (all %d pixels with data), %.3f (%d pixels "
                             "where the model exceeds the noise)", st["exposure"], st["name"], st["path"],
                             st["chi2_per_pixel"], st["n_pixels"], st["chi2_per_source_pixel"], st["n_source_pixels"])
            output.write_catalog(outdir / "catalog.fits", table, run, run_info or {})
            if plots:
                output.plot_patches(run, outdir / "patches.png")
    return table
