"""python -m pho.tools.fitfield: help, a small field end to end, the output lock, per-patch sampling."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pho.errors import PhoWarning
from pho.field import FieldSettings, fit_field, simulate_goodss_field
from pho.runlock import output_lock
from pho.tools import fitfield

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def tiny_field(tmp_path_factory):
    return simulate_goodss_field(tmp_path_factory.mktemp("tiny"), max_sources=6, seed=3)


def _args(field, outdir):
    args = []
    for e in field.exposures:
        args += ["--exposure", *e]
    return args + ["--sources", str(field.initial_path), "--outdir", str(outdir)]


def test_help_names_every_option():
    out = subprocess.run([sys.executable, "-m", "pho.tools.fitfield", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--exposure", "--sources", "--outdir", "--workers", "--scheduler", "--no-sample", "--overwrite",
                   "--resume", "--demo"):
        assert option in out.stdout


def test_command_fits_a_small_field_and_says_where_it_wrote(tiny_field, tmp_path, capsys):
    outdir = tmp_path / "out"
    code = fitfield.main(_args(tiny_field, outdir) + ["--no-sample", "--workers", "2", "--quiet"])
    assert code == 0
    table = Table.read(outdir / "catalog.fits", "CATALOG")
    truth = Table.read(tiny_field.truth_path)
    assert table["id"].tolist() == truth["id"].tolist()
    assert np.all(np.isfinite(table["flux_F160W_best"]))
    assert len(list(outdir.glob("residual_*.fits"))) == 4
    assert (outdir / "patches.png").exists()
    log = (outdir / "fitfield.log").read_text()
    assert "pass01 patch 0:" in log  # per-patch timing in the log
    assert "catalog.fits" in log
    # a second run into the same folder refuses without --overwrite / --resume
    with pytest.raises(SystemExit):
        fitfield.main(_args(tiny_field, outdir) + ["--no-sample"])
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_a_locked_output_folder_is_refused(tiny_field, tmp_path, capsys):
    outdir = tmp_path / "locked"
    with output_lock(outdir):
        code = fitfield.main(_args(tiny_field, outdir) + ["--no-sample", "--workers", "1", "--quiet"])
    assert code == 1
    assert "lock" in capsys.readouterr().err.lower()
    assert not (outdir / "catalog.fits").exists()


def test_patches_are_sampled_with_dynesty(tiny_field, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        table = fit_field(
            tiny_field.exposures, tiny_field.initial_path, workers=2, outdir=tmp_path / "s", residuals=False, plots=False,
            progress=False, settings=FieldSettings(sampler="dynesty", nlive=30, max_passes=2),
        )
    truth = Table.read(tiny_field.truth_path)
    for band in ("F125W", "F160W"):
        med, lo, hi = (np.asarray(table[f"flux_{band}_{s}"], float) for s in ("median", "p16", "p84"))
        assert np.all(np.isfinite(med)) and np.all(lo < med) and np.all(med < hi)
        half = (hi - lo) / 2
        assert np.all(np.abs(med - truth[f"flux_{band}"]) < 4 * half)  # the truth inside the posterior
        best, err = np.asarray(table[f"flux_{band}_best"]), np.asarray(table[f"flux_{band}_err"])
        bright = best / err > 20  # where the posterior is near Gaussian, its width is the Fisher error
        assert bright.sum() >= 2
        assert np.all((half[bright] > 0.5 * err[bright]) & (half[bright] < 2 * err[bright]))
    with fits.open(tmp_path / "s" / "catalog.fits") as h:
        assert h["CATALOG"].header["SAMPLER"] == "dynesty"
