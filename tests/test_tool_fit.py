"""python -m pho.tools.fit: argument errors, the demo end to end, a user-style run from files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pho.tools.fit import build_parser, main


def test_help_and_argument_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "give --demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--demo", "--sources", "x.csv"])
    assert "drop --exposure/--sources" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--demo", "--nlive", "2"])
    assert "--nlive 2 is too small" in capsys.readouterr().err
    (tmp_path / "catalog.fits").write_text("x")
    with pytest.raises(SystemExit):
        main(["--demo", "--outdir", str(tmp_path)])
    assert "pass --overwrite" in capsys.readouterr().err
    assert build_parser().parse_args(["--demo"]).outdir == "pho_fit_output"


def test_sampler_auto_follows_the_parameter_count_and_the_options_given():
    from pho.sample import DYNESTY_MAX_PARAMS
    from pho.tools.fit import resolve_sampler

    assert resolve_sampler("auto", DYNESTY_MAX_PARAMS) == "dynesty"
    assert resolve_sampler("auto", DYNESTY_MAX_PARAMS + 1) == "nuts"
    assert resolve_sampler("auto", 80, dynesty_options=["--nlive"]) == "dynesty"
    assert resolve_sampler("auto", 7, nuts_options=["--draws"]) == "nuts"
    assert resolve_sampler("dynesty", 80) == "dynesty" and resolve_sampler("nuts", 7) == "nuts"
    assert resolve_sampler("auto", None) == "auto"  # not counted yet, no option decides
    with pytest.raises(ValueError, match="both dynesty options .--nlive. and NUTS options .--tune. were given; choose one"):
        resolve_sampler("auto", 20, ["--nlive"], ["--tune"])
    with pytest.raises(ValueError, match="--maxcall: dynesty options; with --sampler nuts"):
        resolve_sampler("nuts", 20, ["--maxcall"])
    with pytest.raises(ValueError, match="--chains: NUTS options; with --sampler dynesty"):
        resolve_sampler("dynesty", 20, nuts_options=["--chains"])


def test_the_demo_is_sampled_with_nuts_by_default(tmp_path, capsys):
    """20 parameters: auto means NUTS, in conformal shear, with the demo's 500 draws and 300 warm-up
    iterations (optimize only here; what the sampler is asked to do is printed)."""
    out = tmp_path / "d"
    assert main(["--demo", "--outdir", str(out), "--no-sample", "--no-plots", "--quiet", "--demo-pix", "24"]) == 0
    text = capsys.readouterr().out
    assert "20 parameters" in text and "NUTS 2 chains x 500 draws after 300 warm-up" in text
    with fits.open(out / "catalog.fits") as hdul:
        assert "eta_plus_best" in hdul["CATALOG"].columns.names
    # an option of dynesty chooses dynesty (and q, pa), one of each sampler is refused
    assert main(["--demo", "--outdir", str(out), "--no-sample", "--no-plots", "--quiet", "--demo-pix", "24",
                 "--nlive", "30", "--overwrite"]) == 0
    assert "dynesty nlive 30" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--demo", "--outdir", str(out), "--nlive", "30", "--draws", "100"])
    assert "both dynesty options (--nlive) and NUTS options (--draws)" in capsys.readouterr().err


def test_files_of_one_galaxy_in_one_band_go_to_dynesty(tmp_path, capsys):
    """A user's files: 7 parameters, so auto means dynesty (q, pa), with the non-demo nlive; forcing
    NUTS gives its non-demo defaults below 11 parameters (1000 draws, 1000 warm-up) and eta."""
    from pho.demo import build_demo

    problem = build_demo(shape=(24, 24))
    args = []
    for k, e in enumerate([e for e in problem.exposures if e.band == "F277W"]):
        sci, err, psf = (tmp_path / f"{name}{k}.fits" for name in ("sci", "err", "psf"))
        fits.PrimaryHDU(np.asarray(e.pixels), header=e.wcs.to_header()).writeto(sci)
        fits.PrimaryHDU(1 / np.sqrt(np.asarray(e.ivar))).writeto(err)
        e.psf.write(psf)
        args += ["--exposure", str(sci), str(err), str(psf), "F277W"]
    s0 = problem.initial.sources[0]
    (tmp_path / "sources.csv").write_text(
        f"ra,dec,type,flux_F277W,q,pa,n,rh\n{s0.ra!r},{s0.dec!r},sersic,{s0.flux['F277W']!r},{s0.q!r},{s0.pa!r},{s0.n!r},{s0.rh!r}\n")
    args += ["--sources", str(tmp_path / "sources.csv"), "--no-sample", "--no-plots", "--quiet"]
    assert main(args + ["--outdir", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "7 parameters" in text and "dynesty nlive 200" in text
    with fits.open(tmp_path / "a" / "catalog.fits") as hdul:
        assert "q_best" in hdul["CATALOG"].columns.names and "eta_plus_best" not in hdul["CATALOG"].columns.names
    assert main(args + ["--outdir", str(tmp_path / "b"), "--sampler", "nuts"]) == 0
    assert "NUTS 2 chains x 1000 draws after 1000 warm-up" in capsys.readouterr().out
    with fits.open(tmp_path / "b" / "catalog.fits") as hdul:
        assert "eta_plus_best" in hdul["CATALOG"].columns.names


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    # Small and short so CI can afford it: 24-pixel exposures, nlive 25, a capped number of
    # calls (the posterior is then not converged; the optimizer's answer is complete).
    rc = main(["--demo", "--outdir", str(out), "--nlive", "25", "--maxcall", "800", "--quiet", "--demo-pix", "24"])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("catalog.fits", "exposures.png", "gradients_s0.png", "corner_s0.png", "trace.png", "sampler.pkl"):
        assert (out / name).exists(), name
        assert str(out / name) in text  # each output path is printed
    assert "timings: build" in text and "optimize" in text and "sample" in text
    assert "s2.flux_F444W" in text and "truth" in text
    with fits.open(out / "catalog.fits") as hdul:
        cat = hdul["CATALOG"].data
        samples = hdul["SAMPLES"].data
        header = hdul["CATALOG"].header
        assert list(cat["type"]) == ["sersic", "sersic", "point"]
        assert header["INPUT"].startswith("built-in demo")
        assert header["NS_NLIVE"] == 25
        assert np.isclose(samples["weight"].sum(), 1.0)
        # The optimizer's fluxes are within 4 sigma of the demo's truth.
        from pho.demo import build_demo

        truth = build_demo(shape=(24, 24)).truth
        for i, src in enumerate(truth.sources):
            for band, flux in src.flux.items():
                assert abs(cat[f"flux_{band}_best"][i] - flux) < 4 * cat[f"flux_{band}_err"][i], (i, band)
        assert np.isnan(cat["rh_best"][2])  # the star has no size


def test_demo_with_nuts_end_to_end(tmp_path, capsys):
    """--sampler nuts: a short run (the chains are not converged; the plumbing is what is checked):
    the catalog holds equal-weight draws and NaN-free headers, the checkpoint resumes (plots: tests/test_plots.py)."""
    out = tmp_path / "nuts"
    args = ["--demo", "--outdir", str(out), "--sampler", "nuts", "--draws", "6", "--tune", "6", "--chains", "1",
            "--processes", "1", "--quiet", "--demo-pix", "24", "--no-plots"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "sample: NUTS, 1 chains x 6 draws after 6 warm-up" in text and "R-hat" in text
    for name in ("catalog.fits", "sampler.pkl"):
        assert (out / name).exists(), name
        assert str(out / name) in text
    with fits.open(out / "catalog.fits") as hdul:
        header = hdul["CATALOG"].header
        assert header["NS_SAMPLER"] == "nuts" and header["LOGZ"] == "nan"
        assert len(hdul["SAMPLES"].data) == 6
        assert np.allclose(hdul["SAMPLES"].data["weight"], 1 / 6)
        # --shape-parameters auto: NUTS samples conformal shear; the catalog still reports q and pa
        assert "s0_eta_plus" in hdul["SAMPLES"].columns.names
        assert "q_median" in hdul["CATALOG"].columns.names and np.isfinite(hdul["CATALOG"].data["q_median"][0])
    # dynesty-only options are refused with NUTS
    with pytest.raises(SystemExit):
        main(args + ["--nlive", "50"])
    assert "dynesty options" in capsys.readouterr().err
    # the finished checkpoint resumes at once to the same draws
    assert main(args + ["--resume", "--overwrite"]) == 0
    with fits.open(out / "catalog.fits") as hdul:
        assert hdul["CATALOG"].header["NS_RESUMED"] is True


@pytest.fixture
def default_sigint():
    """Ctrl-C handled as in an interactive shell. A process started in the background (``nohup``,
    ``&``, as CI scripts may be) inherits SIGINT ignored, and pho keeps it ignored (it never takes a
    Ctrl-C its shell ignores), so the test sets the default handler for its own duration."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, capsys, monkeypatch, default_sigint):
    import importlib
    import os
    import signal

    S = importlib.import_module("pho.sample")  # the module (pho.sample is also the function)

    out = tmp_path / "demo"
    real_call = S._LogLike.__call__
    calls = {"n": 0}

    def interrupting_call(self, theta):
        calls["n"] += 1
        if calls["n"] == 700:  # the user presses Ctrl-C while the sampler is at work
            os.kill(os.getpid(), signal.SIGINT)
        return real_call(self, theta)

    monkeypatch.setattr(S._LogLike, "__call__", interrupting_call)
    argv = ["--demo", "--outdir", str(out), "--nlive", "25", "--maxcall", "1500", "--quiet", "--demo-pix", "24",
            "--no-plots", "--processes", "1", "--checkpoint-every", "1000"]
    rc = main(argv)
    assert rc == 130
    err = capsys.readouterr().err
    assert f"saved in {out / 'sampler.pkl'}" in err and "--resume" in err and "Traceback" not in err
    # the last checkpoint was written at the interruption (the periodic one was never due)
    assert (out / "sampler.pkl").exists() and not (out / ".pho.lock").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(S._LogLike, "__call__", real_call)
    assert main(argv + ["--resume"]) == 0
    assert (out / "catalog.fits").exists()


@pytest.mark.slow
def test_resume_with_other_data_is_refused_naming_the_difference(tmp_path, capsys):
    out = tmp_path / "demo"
    common = ["--outdir", str(out), "--nlive", "25", "--quiet", "--no-plots", "--processes", "1"]
    assert main(["--demo", "--demo-pix", "24", "--maxcall", "300"] + common) == 0
    capsys.readouterr()
    # before the fix: accepted, and the run sat at one iteration forever (its ln L never beat the threshold)
    rc = main(["--demo", "--demo-pix", "28", "--maxcall", "600", "--resume", "--overwrite"] + common)
    assert rc == 1
    err = capsys.readouterr().err
    assert "belongs to another problem: the data differ" in err and "start afresh" in err
    assert not (out / ".pho.lock").exists()
