"""pho.io: source lists in, catalogs out (round trips, refusals, atomic writes)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pho.errors import PhoValueError
from pho.fit import OptimizeResult
from pho.io import read_catalog, read_source_list, write_catalog
from pho.sample import SampleResult


class _Src:
    def __init__(self, kind):
        self.kind = kind


class _Scene:
    bands = ("F150W", "F444W")
    parameter_names = (
        "s0.flux_F150W", "s0.flux_F444W", "s0.ra", "s0.dec", "s0.q", "s0.pa", "s0.n", "s0.rh",
        "s1.flux_F150W", "s1.flux_F444W", "s1.ra", "s1.dec",
    )
    sources = (_Src("sersic"), _Src("point"))


def _results(rng):
    names = list(_Scene.parameter_names)
    p = len(names)
    theta = rng.normal(size=p)
    best = OptimizeResult(theta=theta, sigma=np.abs(rng.normal(size=p)), cov=np.eye(p), names=names,
                          lnlike=-12.5, lnpost=-12.5, uncertainty="fisher")
    samples = rng.normal(size=(50, p))
    weights = rng.random(50)
    weights /= weights.sum()
    summary = {n: {"median": float(i), "p16": i - 0.5, "p84": i + 0.7, "mean": 0.0, "std": 1.0} for i, n in enumerate(names)}
    post = SampleResult(samples=samples, weights=weights, logl=-rng.random(50), logz=-20.0, logz_err=0.2,
                        names=names, summary=summary, settings={"nlive": 50, "sampler": "static"})
    return best, post


def test_catalog_round_trip(tmp_path, rng):
    best, post = _results(rng)
    path = write_catalog(tmp_path / "cat.fits", _Scene(), best, post, settings={"CMDLINE": "x --y", "SEED": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["cat.fits"]  # no temporary file left
    cat, samples = read_catalog(path)
    assert len(cat) == 2 and list(cat["type"]) == ["sersic", "point"]
    np.testing.assert_array_equal(cat["flux_F444W_best"], [best.theta[1], best.theta[9]])
    np.testing.assert_array_equal(cat["ra_err"], [best.sigma[2], best.sigma[10]])
    assert cat["rh_median"][0] == 7.0 and cat["rh_p16"][0] == 6.5 and cat["rh_p84"][0] == 7.7
    assert np.isnan(cat["rh_best"][1]) and np.isnan(cat["q_median"][1])  # a star has no shape
    np.testing.assert_array_equal(samples["s1_dec"], post.samples[:, 11])
    np.testing.assert_array_equal(samples["weight"], post.weights)
    with fits.open(path) as hdul:
        h = hdul["CATALOG"].header
        assert h["LOGZ"] == -20.0 and h["SEED"] == 3 and h["CMDLINE"] == "x --y" and h["NS_NLIVE"] == 50
        assert hdul["CATALOG"].columns["ra_best"].unit == "deg"
        assert hdul["SAMPLES"].header["LOGZERR"] == 0.2


def test_catalog_refuses_to_overwrite(tmp_path, rng):
    best, post = _results(rng)
    path = write_catalog(tmp_path / "cat.fits", _Scene(), best, None)
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_catalog(path, _Scene(), best, post)
    write_catalog(path, _Scene(), best, post, overwrite=True)
    assert read_catalog(path)[1] is not None


def test_read_source_list_csv_and_fits(tmp_path):
    pytest.importorskip("pho.sersic")
    from pho.profiles import AnalyticStandInProfile

    prof = AnalyticStandInProfile()
    csv = tmp_path / "src.csv"
    csv.write_text(
        "# initial guesses\n"
        "ra,dec,type,flux_F150W,flux_F444W,q,pa,n,rh\n"
        "150.0,2.0,sersic,3.0,4.0,0.5,0.3,2.0,0.3\n"
        "150.0002,2.0001,star,1.0,2.0,,,,\n"
    )
    sources = read_source_list(csv, profile=prof)
    assert [s.kind for s in sources] == ["sersic", "point"]
    assert sources[0].flux == {"F150W": 3.0, "F444W": 4.0}
    assert (sources[0].q, sources[0].pa, sources[0].n, sources[0].rh) == (0.5, 0.3, 2.0, 0.3)
    assert sources[1].ra == 150.0002
    from astropy.table import Table

    Table({"RA": [150.0], "DEC": [2.0], "TYPE": ["point"], "FLUX": [5.0]}).write(tmp_path / "s.fits")
    (s,) = read_source_list(tmp_path / "s.fits", bands=["F814W"])
    assert s.flux == {"F814W": 5.0} and s.kind == "point"


def test_read_source_list_errors(tmp_path):
    pytest.importorskip("pho.sersic")
    bad = tmp_path / "bad.csv"
    bad.write_text("ra,dec,type,flux_F150W\n150,2,blob,1\n")
    with pytest.raises(PhoValueError, match="type 'blob' is not known"):
        read_source_list(bad)
    bad.write_text("ra,dec,type,flux_F150W,q,pa,n,rh\n150,2,sersic,1,0.5,abc,2,0.3\n")
    with pytest.raises(PhoValueError, match="column 'pa' = 'abc' is not a number"):
        read_source_list(bad)
    bad.write_text("ra,type,flux_F150W\n150,point,1\n")
    with pytest.raises(PhoValueError, match="lacks the column 'dec'"):
        read_source_list(bad)
    with pytest.raises(FileNotFoundError):
        read_source_list(tmp_path / "none.csv")
