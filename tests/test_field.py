"""Whole fields: grouping, planning, the Dask field fit, resume, retries, external clusters, bad input."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pho.errors import PhoRangeError, PhoValueError, PhoWarning
from pho.field import FieldExposure, FieldSettings, FieldSources, connect, fit_field, simulate_goodss_field
from pho.field.footprints import footprint_radii_arcsec
from pho.field.patches import group_sources, plan_patches
from pho.field.simulate import SIM_BANDS
from pho.field.store import ResultStore

dask_distributed = pytest.importorskip("dask.distributed")

N_SMALL = 24  # sources of the small CI field


# ------------------------------------------------------------------------------------ pure planning
def test_group_sources_links_overlapping_disks_and_cuts_large_groups():
    # a pair that touches, a chain of five, and a loner far away
    x = np.array([0.0, 1.5, 10.0, 11.5, 13.0, 14.5, 16.0, 40.0])
    y = np.zeros_like(x)
    r = np.full(8, 1.0)
    groups = group_sources(x, y, r, max_sources=10)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3, 4, 5, 6], [7]]
    cut = group_sources(x, y, r, max_sources=2)
    assert sorted(len(g) for g in cut) == [1, 1, 2, 2, 2]
    assert sorted(int(i) for g in cut for i in g) == list(range(8))  # every source exactly once
    # disks that do not reach each other are not linked
    assert len(group_sources(x, y, np.full(8, 0.7), max_sources=10)) == 8
    # only the candidates are grouped
    assert [g.tolist() for g in group_sources(x, y, r, 10, candidates=[0, 7])] == [[0], [7]]


def test_plan_patches_boxes_and_neighbours():
    x = np.array([20.0, 24.0, 60.0, 35.0])
    y = np.array([20.0, 20.0, 20.0, 20.0])
    blend = np.array([2.0, 2.0, 2.0, 2.0])
    light = np.array([3.0, 3.0, 3.0, 12.0])
    patches = plan_patches([np.array([0, 1]), np.array([2]), np.array([3])], [(x, y)], [blend], [light], [(50, 64)],
                           margin_pix=1.0)
    p0 = patches[0]
    assert p0.boxes[0] == (17, 17, 28, 24)  # x 20-3 .. 24+3, y 20-3 .. 20+3, as half-open pixel ranges
    assert p0.neighbours[0].tolist() == [3]  # source 3's light reaches the box; source 2's does not
    assert patches[1].boxes[0] == (57, 17, 64, 24)  # clipped at the image edge (nx = 64)
    assert 3 not in patches[2].neighbours[0]


def test_colouring_puts_adjacent_patches_in_order_brightest_first():
    from pho.field.driver import _dependency_order, colour_patches
    from pho.field.patches import Patch

    # patch 0 (faint) and patch 2 (bright) hold each other's close neighbours; patch 1 is alone
    patches = [Patch(0, np.array([0]), close=np.array([2])), Patch(1, np.array([1])), Patch(2, np.array([2]))]
    sources = FieldSources(ids=np.arange(3), is_point=np.ones(3, bool), ra=np.zeros(3), dec=np.zeros(3),
                           q=np.full(3, np.nan), pa=np.full(3, np.nan), n=np.full(3, np.nan), rh=np.full(3, np.nan),
                           flux=np.array([[1.0], [5.0], [100.0]]), bands=("F",))
    colour, adjacent = colour_patches(patches, sources)
    assert colour.tolist() == [1, 0, 0]  # the bright patch first, its faint neighbour after it
    assert adjacent[0] == {2} and adjacent[2] == {0} and adjacent[1] == set()
    assert _dependency_order([0, 1, 2], {0: [2]}) == [2, 0, 1]


def test_footprint_radius_grows_with_flux_and_falls_with_threshold(small_field):
    sources = FieldSources.read(small_field.initial_path, list(SIM_BANDS))
    exposures = [FieldExposure.open(*e) for e in small_field.exposures]
    r_blend = footprint_radii_arcsec(sources, exposures, 0.5)
    r_light = footprint_radii_arcsec(sources, exposures, 0.02)
    assert np.all(r_light >= r_blend)
    assert np.any(r_light > r_blend)
    brighter = sources.copy()
    brighter.flux *= 100.0
    assert np.all(footprint_radii_arcsec(brighter, exposures, 0.5) >= r_blend)
    assert np.any(footprint_radii_arcsec(brighter, exposures, 0.5) > r_blend)
    faint = sources.copy()
    faint.flux[:] = 1e-12
    core = 3 * np.sqrt(np.linalg.eigvalsh(exposures[0].psf.covariances)[0, -1]) * exposures[0].pixel_scale_arcsec
    assert np.all(footprint_radii_arcsec(faint, exposures, 0.5) >= 0.99 * core)  # never below 3 PSF-core sigmas


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    return simulate_goodss_field(tmp_path_factory.mktemp("field"), max_sources=N_SMALL, seed=7)


@pytest.fixture(scope="module")
def client():
    with connect(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def small_run(small_field, client, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        table = fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=outdir, progress=False)
    return outdir, table


# ------------------------------------------------------------------------------------ the field fit
def test_field_fit_recovers_the_truth(small_field, small_run):
    outdir, table = small_run
    truth = Table.read(small_field.truth_path)
    assert len(table) == N_SMALL
    assert table["id"].tolist() == truth["id"].tolist()  # input order, input ids
    assert np.all(table["patch"] >= 0) and not any(table["flag"])
    for band in SIM_BANDS:
        best, err, true = (np.asarray(a, float) for a in (table[f"flux_{band}_best"], table[f"flux_{band}_err"],
                                                          truth[f"flux_{band}"]))
        assert np.all(err > 0)
        snr = best / err
        sel = snr > 20
        assert sel.sum() >= 5
        pull = (best - true)[sel] / err[sel]
        assert np.mean(np.abs(pull) < 3) >= 0.8, pull
        assert np.median(np.abs(best - true)[sel] / true[sel]) < 0.05
    # positions within a few sigma
    dra = (np.asarray(table["ra_best"]) - truth["ra"]) / table["ra_err"]
    assert np.median(np.abs(dra)) < 2.0


def test_field_outputs_catalog_residuals_and_map(small_field, small_run):
    outdir, table = small_run
    with fits.open(outdir / "catalog.fits") as hdul:
        cat = hdul["CATALOG"]
        assert cat.header["NSOURCES"] == N_SMALL
        assert cat.header["CONVERGED"] in (True, False)
        names = cat.columns.names
    for kind in [f"flux_{b}" for b in SIM_BANDS] + ["ra", "dec", "q", "pa", "n", "rh"]:
        assert f"{kind}_best" in names and f"{kind}_err" in names
    residuals = sorted(outdir.glob("residual_*.fits"))
    assert len(residuals) == len(small_field.exposures)
    for k, (path, exp) in enumerate(zip(residuals, small_field.exposures)):
        with fits.open(path) as r, fits.open(exp[0]) as s, fits.open(exp[1]) as n:
            res = r[0].data.astype(float)
            assert res.shape == s[0].data.shape
            assert r[0].header["CRVAL1"] == pytest.approx(s[0].header["CRVAL1"])
            chi2 = np.nanmean((res / n[0].data) ** 2)
            assert 0.9 < chi2 < 1.05, chi2
            # the residual is data - model: far smaller than the data where the sources are
            data = s[0].data.astype(float)
            bright = data > 20 * n[0].data
            assert np.abs(res[bright]).max() < 0.5 * data[bright].max()
    assert (outdir / "patches.png").stat().st_size > 10_000
    assert not list(outdir.glob(".*.tmp*"))


def test_field_passes_report_their_largest_change(small_run):
    outdir, _ = small_run
    header = fits.getheader(outdir / "catalog.fits", "CATALOG")
    changes = [header[f"PASS{p}_CHANGE"] for p in range(1, header["NPASSES"] + 1)]
    assert changes[0] > 0.1  # the initial catalog is off by ~15%
    if header["CONVERGED"]:
        assert changes[-1] <= header["FIELD_TOL_SIGMA"]


def test_resume_skips_finished_patches_and_gives_the_same_catalog(small_field, small_run, client, tmp_path):
    outdir, table = small_run
    copy = tmp_path / "copy"
    shutil.copytree(outdir / "work", copy / "work")
    # a crash half way through the first pass: half of its results and all later ones are missing
    store = ResultStore(copy / "work")
    done = sorted((copy / "work" / "pass01").glob("patch*.npz"))
    for p in done[len(done) // 2:]:
        p.unlink()
    for later in (copy / "work").glob("pass0[2-9]"):
        shutil.rmtree(later)
    (copy / "work" / "pass01" / ".patch00000.tmp123.npz").write_bytes(b"half a file")  # left by the crash
    kept = {p.name: p.stat().st_mtime_ns for p in done[: len(done) // 2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        again = fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=copy, resume=True,
                          residuals=False, plots=False, progress=False)
    for name, mtime in kept.items():
        assert (copy / "work" / "pass01" / name).stat().st_mtime_ns == mtime  # not fitted again
    assert not list((copy / "work").glob("**/.*.tmp*"))
    for col in table.colnames:
        if table[col].dtype.kind == "f":
            np.testing.assert_array_equal(np.asarray(again[col]), np.asarray(table[col]), err_msg=col)
    assert store.load("pass01", 0) is not None


def test_resume_of_another_problem_is_refused(small_field, small_run, client, tmp_path):
    outdir, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(outdir / "work", copy / "work")
    with pytest.raises(PhoValueError, match="the fit settings differs"):
        fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=copy, resume=True,
                  settings=FieldSettings(max_patch_sources=3), progress=False)
    with pytest.raises(PhoValueError, match="earlier field fit; pass --resume"):
        fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=copy, progress=False)
    with pytest.raises(PhoValueError, match="nothing to resume"):
        fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=tmp_path / "new", resume=True,
                  progress=False)


class _KillOnce(dask_distributed.WorkerPlugin):
    """A Dask worker plugin that kills its worker process when it starts a given patch, once."""

    def __init__(self, marker: str, key_part: str):
        self.marker, self.key_part = marker, key_part

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and self.key_part in str(key) and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)


def test_a_killed_worker_patch_is_retried_and_counted_once(small_field, small_run, tmp_path):
    _, table = small_run
    marker = tmp_path / "killed"
    with connect(workers=2) as c:
        c.register_plugin(_KillOnce(str(marker), "pass01-patch00001"), name="kill-once")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PhoWarning)
            again = fit_field(small_field.exposures, small_field.initial_path, client=c, outdir=tmp_path / "out",
                              residuals=False, plots=False, progress=False)
    assert marker.exists()  # a worker really died in the middle of patch 1
    assert not any(again["flag"])
    np.testing.assert_array_equal(np.asarray(again["flux_F160W_best"]), np.asarray(table["flux_F160W_best"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_external_cluster_started_by_hand_gives_the_local_result(small_field, small_run, tmp_path):
    _, table = small_run
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1])] + sys.path))
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--dashboard-address", ":0", "--no-show"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--nworkers", "2", "--no-dashboard"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    try:
        from dask.distributed import Client

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with Client(address, timeout="2s") as c:
                    if len(c.scheduler_info()["workers"]) >= 2:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PhoWarning)
            again = fit_field(small_field.exposures, small_field.initial_path, scheduler=address,
                              outdir=tmp_path / "out", residuals=False, plots=False, progress=False)
    finally:
        for p in (worker, scheduler):
            p.terminate()
            p.wait(timeout=30)
    for col in ("flux_F125W_best", "flux_F160W_err", "ra_best", "rh_best"):
        np.testing.assert_array_equal(np.asarray(again[col]), np.asarray(table[col]), err_msg=col)


def test_unreachable_scheduler_is_a_clear_error():
    port = _free_port()  # nothing listens there
    t0 = time.time()
    with pytest.raises(PhoValueError, match=r"could not reach the Dask scheduler .* Start one with `dask scheduler`"):
        with connect(scheduler=f"tcp://127.0.0.1:{port}", timeout_s=2.0):
            pass
    assert time.time() - t0 < 30


# ------------------------------------------------------------------------------------ bad input
def test_off_field_sources_are_flagged_and_failed_patches_do_not_stop_the_field(small_field, small_run, client, tmp_path):
    sources = FieldSources.read(small_field.initial_path, list(SIM_BANDS))
    patch_of = np.asarray(small_run[1]["patch"])
    lonely = int(next(i for i in range(N_SMALL) if np.sum(patch_of == patch_of[i]) == 1))  # a patch of its own
    extra = sources.subset([0, 1])
    extra.ids = np.array([1000, 1001])
    extra.dec = extra.dec + 1.0  # a degree away: on no exposure
    both = FieldSources(**{k: (np.concatenate([getattr(sources, k), getattr(extra, k)]) if k != "bands" else sources.bands)
                           for k in sources.__dict__})
    # a hole in the noise map of every exposure around that source: its patch has no pixel to fit
    from pho.field.driver import plan_field

    patches, _, _, _ = plan_field([FieldExposure.open(*e) for e in small_field.exposures], sources, FieldSettings())
    boxes = next(p.boxes for p in patches if p.sources.tolist() == [lonely])
    exposures = []
    for k, (sci, err, psf, band) in enumerate(small_field.exposures):
        with fits.open(err) as h:
            data = h[0].data.copy()
            header = h[0].header
        x0, y0, x1, y1 = boxes[k]
        data[y0:y1, x0:x1] = 0.0
        holed = tmp_path / Path(err).name
        fits.writeto(holed, data, header)
        exposures.append(FieldExposure.open(sci, holed, psf, band))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        table = fit_field(exposures, both, client=client, outdir=tmp_path / "out", residuals=False, plots=False,
                          progress=False, settings=FieldSettings(max_passes=1))
    assert table["id"][-2:].tolist() == [1000, 1001]
    assert list(table["flag"][-2:]) == ["off every exposure"] * 2
    assert np.all(table["patch"][-2:] == -1) and np.all(np.isnan(table["flux_F160W_best"][-2:]))
    assert table["flag"][lonely].startswith("fit failed: ")
    assert "no pixel counts" in table["flag"][lonely]
    ok = np.array([not f for f in table["flag"]])
    assert ok.sum() == N_SMALL - 1 and np.all(np.isfinite(table["flux_F160W_best"][ok]))


def test_exposure_without_sources_and_bands_without_exposures_are_named(small_field, tmp_path):
    from pho.field.driver import _as_sources, plan_field

    with pytest.warns(PhoWarning, match=r"band\(s\) \['F125W'\] have no exposure; their fluxes are not fitted"):
        only_f160w = _as_sources(small_field.initial_path, ["F160W"])
    assert only_f160w.bands == ("F160W",)
    # an exposure a degree away from every source
    sci, err, psf, band = small_field.exposures[0]
    header = fits.getheader(sci)
    header["CRVAL2"] = header["CRVAL2"] + 1.0
    far_sci = tmp_path / "far_sci.fits"
    fits.writeto(far_sci, fits.getdata(sci), header)
    exposures = [FieldExposure.open(*e) for e in small_field.exposures] + [FieldExposure.open(far_sci, err, psf, band)]
    sources = FieldSources.read(small_field.initial_path, list(SIM_BANDS))
    with pytest.warns(PhoWarning, match=r"exposure 4 \(far_sci.fits, band F125W\) contains no source of the list"):
        patches, flags, _, _ = plan_field(exposures, sources, FieldSettings())
    assert all(4 not in p.boxes for p in patches) and not any(flags)


def test_sources_outside_the_sersic_table_are_refused_before_fitting(small_field, client):
    sources = FieldSources.read(small_field.initial_path, list(SIM_BANDS))
    sources.rh[3] = 50.0
    with pytest.raises(PhoRangeError, match=r"row 3, id 3, n=2, rh=50"):
        fit_field(small_field.exposures, sources, client=client, progress=False)


def test_a_patch_is_sampled_with_nuts(small_field, small_run):
    from pho.field.driver import FieldRun, _task, plan_field
    from pho.field.patchfit import fit_patch

    exposures = [FieldExposure.open(*e) for e in small_field.exposures]
    _, table = small_run
    fitted = FieldSources.read(small_field.initial_path, list(SIM_BANDS))
    start = fitted.copy()
    for i in range(len(fitted)):  # the field's best fit as the state around the patch
        for kind in fitted.kinds(i):
            fitted.set(i, kind, float(table[f"{kind}_best"][i]))
    patches, flags, blend, light = plan_field(exposures, start, FieldSettings())
    patch = min((p for p in patches if len(p.sources) == 2), key=lambda p: p.n_pixels, default=patches[0])
    run = FieldRun(exposures=exposures, initial=start, current=fitted, sigma=np.full((len(start), 8), np.nan),
                   patches=patches, patch_of=np.zeros(len(start), int), flags=flags, light_radius_arcsec=light,
                   blend_radius_arcsec=blend, settings=FieldSettings())
    task = _task(patch, 0, run, "nuts", {"draws": 150, "tune": 150, "chains": 2, "seed": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        result = fit_patch(task)
    assert result.ok, result.message
    assert np.all(result.p16 < result.median) and np.all(result.median < result.p84)
    half = (result.p84 - result.median + result.median - result.p16) / 2
    pa = np.array([k == "pa" for k in result.param_kinds])
    diff = np.where(pa, (result.median - result.theta + np.pi / 2) % np.pi - np.pi / 2, result.median - result.theta)
    assert np.all(np.abs(diff) < 4 * half)  # the posterior sits on the optimum
    flux = np.array([k.startswith("flux") for k in result.param_kinds])
    assert np.all((half[flux] > 0.5 * result.sigma[flux]) & (half[flux] < 2 * result.sigma[flux]))
