"""Sky background fitted per patch and exposure in a field (FieldSettings.fit_sky, ``--fit-sky``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pho.errors import PhoValueError
from pho.field import FieldSettings, simulate_goodss_field
from pho.tools import fitfield

pytest.importorskip("dask.distributed")

#: Injected sky per exposure: level at the exposure's centre pixel, in units of the band's pixel
#: noise, and x, y slopes (noise units per pixel).
SKIES = [(3.0, 0.1, -0.06), (-2.0, 0.0, 0.08), (2.5, -0.06, 0.0), (4.0, 0.04, 0.04)]


def test_default_settings_fit_no_sky_and_keep_their_fingerprint():
    settings = FieldSettings()
    assert settings.fit_sky == "none"
    assert "fit_sky" not in settings.fingerprint_part()  # resumable runs of before keep their fingerprint
    assert FieldSettings(fit_sky="plane").fingerprint_part()["fit_sky"] == "plane"
    with pytest.raises(PhoValueError, match="fit_sky='slope'; use 'none', 'constant' or 'plane'"):
        FieldSettings(fit_sky="slope").check()
    assert "--fit-sky" in fitfield.build_parser().format_help()


@pytest.fixture(scope="module")
def sky_field(tmp_path_factory):
    """The tiny simulated field with a sky plane added to every exposure."""
    root = tmp_path_factory.mktemp("skyfield")
    sim = simulate_goodss_field(root / "sim", max_sources=6, seed=3)
    exposures, truth = [], []
    for (sci, err, psf, band), (level, sx, sy) in zip(sim.exposures, SKIES):
        sigma = sim.noise_sigma[band]
        with fits.open(sci) as hdul:
            data = hdul[0].data.astype(np.float64)
            header = hdul[0].header
        ny, nx = data.shape
        xc, yc = (nx - 1) / 2, (ny - 1) / 2
        plane = sigma * (level + sx * (np.arange(nx)[None, :] - xc) + sy * (np.arange(ny)[:, None] - yc))
        path = root / f"sky_{band}_{len(exposures)}.fits"
        fits.PrimaryHDU((data + plane).astype(np.float32), header=header).writeto(path)
        exposures.append((str(path), err, psf, band))
        truth.append((sigma * level, sigma * sx, sigma * sy, xc, yc, sigma))
    return sim, exposures, truth


@pytest.mark.slow
def test_fitfield_fits_a_sky_plane_per_patch_and_reports_it(sky_field, tmp_path):
    sim, exposures, truth = sky_field
    outdir = tmp_path / "out"
    args = []
    for e in exposures:
        args += ["--exposure", *e]
    args += ["--sources", str(sim.initial_path), "--outdir", str(outdir), "--no-sample", "--workers", "2", "--quiet",
             "--fit-sky", "plane"]
    assert fitfield.main(args) == 0
    sky = Table.read(outdir / "catalog.fits", hdu="SKY")
    header = fits.getheader(outdir / "catalog.fits", "SKY")
    assert header["SKYMODEL"] == "plane"
    catalog = Table.read(outdir / "catalog.fits", hdu="CATALOG")
    n_patches = len(set(catalog["patch"].tolist()) - {-1})
    assert len(sky) >= n_patches and set(sky["patch"]) == set(catalog["patch"]) - {-1}
    pulls = {"level": [], "slope_x": [], "slope_y": []}
    for row in sky:
        level, sx, sy, xc, yc, sigma = truth[int(row["exposure"])]
        # the fitted level is the plane's mean over the cutout: its value at the cutout's centre pixel
        cx = 0.5 * (row["box_x0"] + row["box_x1"] - 1)
        cy = 0.5 * (row["box_y0"] + row["box_y1"] - 1)
        expected = {"level": level + sx * (cx - xc) + sy * (cy - yc), "slope_x": sx, "slope_y": sy}
        for p in pulls:
            assert row[f"{p}_err"] > 0
            pulls[p].append((row[f"{p}_best"] - expected[p]) / row[f"{p}_err"])
    # the injected slopes are detected (typically at many sigma), not just consistent with zero
    nonzero = [abs(truth[int(r["exposure"])][1]) > 0 for r in sky]
    assert np.median(np.abs(np.asarray(sky["slope_x_best"])[nonzero] / np.asarray(sky["slope_x_err"])[nonzero])) > 5
    for p, values in pulls.items():
        values = np.asarray(values)
        assert np.mean(np.abs(values) < 3) >= 0.8, (p, values)
        assert abs(np.median(values)) < 1.5, (p, values)
    # the sources are still recovered beside their skies
    true = Table.read(sim.truth_path)
    for band in ("F125W", "F160W"):
        best, err = np.asarray(catalog[f"flux_{band}_best"], float), np.asarray(catalog[f"flux_{band}_err"], float)
        pull = (best - np.asarray(true[f"flux_{band}"], float)) / err
        assert np.mean(np.abs(pull) < 3) >= 0.8, pull
    log = (outdir / "fitfield.log").read_text()
    assert "sky of exposure 0" in log and "patch 0 sky: sky_0.level = " in log


def test_each_pass_starts_a_patch_sky_from_its_previous_fit(sky_field):
    """Pass 2 of a patch starts its skies at pass 1's fit of the same patch and exposure (and
    needs fewer likelihood calls for it); pass 1 starts them at 0. The passes are run by hand
    with the driver's own pieces (plan, task, fit, apply), as fit_field runs them on Dask."""
    from dataclasses import replace

    from pho.field import FieldExposure, FieldSources
    from pho.field.driver import FieldRun, _apply, _task, plan_field
    from pho.field.patchfit import fit_patch
    from pho.field.simulate import SIM_BANDS

    sim, exposures, _ = sky_field
    settings = FieldSettings(fit_sky="constant")
    field_exposures = [FieldExposure.open(*e) for e in exposures]
    sources = FieldSources.read(sim.initial_path, list(SIM_BANDS))
    patches, flags, blend, light = plan_field(field_exposures, sources, settings)
    S, K = len(sources), len(sources.column_kinds)
    run = FieldRun(exposures=field_exposures, initial=sources, current=sources.copy(), sigma=np.full((S, K), np.nan),
                   patches=patches, patch_of=np.full(S, -1), flags=flags, light_radius_arcsec=light,
                   blend_radius_arcsec=blend, settings=settings)
    options = {"fit_sky": "constant", "seed": 1}
    patches = patches[:2]  # two single-galaxy patches, each on the 4 exposures
    first = {}
    for patch in patches:
        task = _task(patch, 1, run, None, options)
        assert task.sky_start is None
        res = fit_patch(task)
        assert res.ok, res.message
        assert len(res.sky_names) >= 2 and np.all(res.sky_start == 0.0)
        assert np.all(np.abs(res.sky_theta) > 3 * res.sky_sigma)  # the injected skies are far from 0
        first[patch.index] = res
        _apply(run, res)
        run.results[patch.index] = res
    for patch in patches:
        before = first[patch.index]
        task = _task(patch, 2, run, None, options)
        assert task.sky_start == dict(zip(before.sky_names, before.sky_theta))
        warm = fit_patch(task)
        cold = fit_patch(replace(task, sky_start=None))
        assert warm.ok and cold.ok
        assert warm.sky_names == before.sky_names
        np.testing.assert_array_equal(warm.sky_start, before.sky_theta)  # what the optimizer started from
        assert np.all(cold.sky_start == 0.0)
        assert warm.n_calls < cold.n_calls, (warm.n_calls, cold.n_calls)
        # one optimum either way (the sky prior is centred on 0 in both)
        np.testing.assert_allclose(warm.sky_theta, cold.sky_theta, atol=0.1 * float(np.min(before.sky_sigma)))
