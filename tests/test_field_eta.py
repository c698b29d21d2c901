"""Field fits in conformal shear (FieldSettings.shape_parameters="eta", ``--shape-parameters eta``)."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from pho.errors import PhoValueError, PhoWarning
from pho.field import FieldSettings, connect, fit_field, simulate_goodss_field
from pho.field.patchfit import PatchResult, _eta_to_q_pa, _widen_to_include
from pho.field.simulate import SIM_BANDS
from pho.fit import derived_quantities
from pho.tools import fitfield
from pho.transforms import eta_from_q_pa, q_pa_from_eta

pytest.importorskip("dask.distributed")

N_SMALL = 24  # sources of the small field (the one tests/test_field.py fits)


# ------------------------------------------------------------------------------------ options
def test_shape_parameters_default_is_eta_when_sampled_else_q_pa():
    settings = FieldSettings()
    assert settings.shape_parameters == "auto"
    assert settings.resolved().shape_parameters == "q_pa"  # optimize only
    assert "shape_parameters" not in settings.resolved().fingerprint_part()  # earlier runs still resume
    assert FieldSettings(sampler="dynesty").resolved().shape_parameters == "q_pa"
    for sampler in ("auto", "nuts"):
        assert FieldSettings(sampler=sampler).resolved().shape_parameters == "eta"
    assert FieldSettings(sampler="nuts", shape_parameters="q_pa").resolved().shape_parameters == "q_pa"
    assert FieldSettings(shape_parameters="eta").fingerprint_part()["shape_parameters"] == "eta"
    assert FieldSettings(shape_parameters="q_pa").fingerprint_part() == settings.resolved().fingerprint_part()
    assert FieldSettings().tune == 300


@pytest.mark.parametrize("bad", ["g1_g2", "qpa", "ETA", ""])
def test_bad_shape_parameters_are_a_clear_error(bad):
    with pytest.raises(PhoValueError, match=rf"shape_parameters={bad!r}; a field fit takes 'auto' .* 'q_pa' .* or 'eta'"):
        FieldSettings(shape_parameters=bad).check()


def test_command_line_option_and_its_bad_values(capsys):
    from pho.field.driver import FIELD_SHAPE_PARAMETERS

    parser = fitfield.build_parser()
    assert "--shape-parameters {auto,q_pa,eta}" in parser.format_help()
    action = next(a for a in parser._actions if "--shape-parameters" in a.option_strings)
    assert tuple(action.choices) == ("auto",) + FIELD_SHAPE_PARAMETERS and action.default == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--demo", "--shape-parameters", "g1_g2"])
    err = capsys.readouterr().err
    assert "--shape-parameters: invalid choice: 'g1_g2'" in err and "'auto', 'q_pa', 'eta'" in err


# ------------------------------------------------------------------------------------ eta -> q, pa
def _fd_jacobian(ep, ec, h=1e-6):
    """d(q, pa)/d(eta_plus, eta_cross) by central differences."""
    jac = np.empty((2, 2))
    for j, (dp, dc) in enumerate(((h, 0.0), (0.0, h))):
        hi = np.array(q_pa_from_eta(ep + dp, ec + dc), dtype=float)
        lo = np.array(q_pa_from_eta(ep - dp, ec - dc), dtype=float)
        jac[:, j] = (hi - lo) / (2 * h)
    return jac


def test_a_patch_fitted_in_eta_reports_q_pa_with_errors_through_the_jacobian():
    rng = np.random.default_rng(5)
    # two galaxies and a star; per galaxy flux, ra, dec, eta_plus, eta_cross, n, rh
    names = ["s0.flux_F160W", "s0.ra", "s0.dec", "s0.eta_plus", "s0.eta_cross", "s0.n", "s0.rh",
             "s1.flux_F160W", "s1.ra", "s1.dec",
             "s2.flux_F160W", "s2.ra", "s2.dec", "s2.eta_plus", "s2.eta_cross", "s2.n", "s2.rh"]
    theta = rng.normal(size=len(names))
    theta[[3, 4]] = eta_from_q_pa(0.45, 1.1)
    theta[[13, 14]] = eta_from_q_pa(0.8, -0.4)
    a = rng.normal(size=(len(names), len(names)))
    cov = 1e-3 * (a @ a.T + np.eye(len(names)))  # correlated errors
    best = SimpleNamespace(theta=theta, sigma=np.sqrt(np.diag(cov)), derived=derived_quantities(names, theta, cov))
    result = PatchResult(patch_index=0, pass_index=1, rows=np.array([10, 11, 12]))
    result.param_kinds = [n.split(".", 1)[1] for n in names]
    result.param_rows = np.array([10 + int(n[1]) for n in names])
    result.theta, result.sigma = theta[: len(names)], best.sigma[: len(names)]
    _eta_to_q_pa(result, names, best)
    assert result.param_kinds[3:5] == ["q", "pa"] and result.param_kinds[13:15] == ["q", "pa"]
    assert result.eta_rows.tolist() == [10, 12]
    np.testing.assert_array_equal(result.eta_theta, [theta[[3, 4]], theta[[13, 14]]])
    np.testing.assert_array_equal(result.eta_sigma, [best.sigma[[3, 4]], best.sigma[[13, 14]]])
    assert theta[3] == result.eta_theta[0, 0]  # best.theta itself is not overwritten (the sampler starts there)
    for (i, j), q_true, pa_true in (((3, 4), 0.45, 1.1), ((13, 14), 0.8, -0.4)):
        assert result.theta[i] == pytest.approx(q_true, rel=1e-12)
        assert result.theta[j] == pytest.approx(pa_true, rel=1e-12)
        jac = _fd_jacobian(theta[i], theta[j])
        c = jac @ cov[np.ix_([i, j], [i, j])] @ jac.T
        assert result.sigma[i] == pytest.approx(math.sqrt(c[0, 0]), rel=1e-6)
        assert result.sigma[j] == pytest.approx(math.sqrt(c[1, 1]), rel=1e-6)
    # everything else is untouched
    others = [k for k in range(len(names)) if k not in (3, 4, 13, 14)]
    np.testing.assert_array_equal(result.theta[others], theta[others])
    np.testing.assert_array_equal(result.sigma[others], best.sigma[others])


def test_an_eta_start_just_outside_its_prior_box_widens_the_truncated_normal():
    from pho.priors import ETA_MAX, Priors, TruncatedNormal, Uniform

    priors = Priors(["s0.eta_plus", "s0.n"], {"s0.eta_plus": TruncatedNormal(0.0, 1.0, -ETA_MAX, ETA_MAX),
                                              "s0.n": Uniform(0.5, 6.0)})
    wider = _widen_to_include(priors, np.array([ETA_MAX + 1e-12, 1.0]))
    d = wider.distributions[0]
    assert isinstance(d, TruncatedNormal) and (d.mu, d.sigma) == (0.0, 1.0)  # the shape of the prior stays
    assert d.lo == -ETA_MAX and d.hi > ETA_MAX + 1e-12  # only the side that needs it
    assert wider.distributions[1] is priors.distributions[1]


# ------------------------------------------------------------------------------------ field fits
@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    return simulate_goodss_field(tmp_path_factory.mktemp("field_eta"), max_sources=N_SMALL, seed=7)


@pytest.fixture(scope="module")
def fits_q_pa_and_eta(small_field, tmp_path_factory):
    out = {}
    with connect(workers=2) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        for shape in ("q_pa", "eta"):
            outdir = tmp_path_factory.mktemp(f"fit_{shape}")
            out[shape] = fit_field(small_field.exposures, small_field.initial_path, client=client, outdir=outdir,
                                   settings=FieldSettings(shape_parameters=shape), progress=False, residuals=False,
                                   plots=False)
    return out


def _pulls(table, truth, kind):
    diff = np.asarray(table[f"{kind}_best"], float) - np.asarray(truth[kind], float)
    if kind == "pa":
        diff = (diff + math.pi / 2) % math.pi - math.pi / 2
    return diff / np.asarray(table[f"{kind}_err"], float)


@pytest.mark.slow
def test_field_fit_in_eta_recovers_the_truth(small_field, fits_q_pa_and_eta):
    table = fits_q_pa_and_eta["eta"]
    truth = Table.read(small_field.truth_path)
    assert table["id"].tolist() == truth["id"].tolist() and not any(table["flag"])
    galaxy = np.asarray(truth["type"]) != "point"
    assert galaxy.sum() >= 20
    for kind in [f"flux_{b}" for b in SIM_BANDS] + ["ra", "dec", "q", "pa", "n", "rh"]:
        pull = _pulls(table, truth, kind)[galaxy]
        assert np.all(np.isfinite(pull)), kind
        assert np.mean(np.abs(pull) < 3) >= 0.8, (kind, pull)
        assert abs(np.median(pull)) < 1.0, (kind, pull)
    # the fitted conformal shear itself, against the truth's
    ep, ec = eta_from_q_pa(np.asarray(truth["q"], float), np.asarray(truth["pa"], float))
    for kind, true in (("eta_plus", ep), ("eta_cross", ec)):
        pull = ((np.asarray(table[f"{kind}_best"]) - true) / np.asarray(table[f"{kind}_err"]))[galaxy]
        assert np.mean(np.abs(pull) < 3) >= 0.8, (kind, pull)
    # q and pa in the catalog are those of the fitted eta
    q, pa = q_pa_from_eta(np.asarray(table["eta_plus_best"]), np.asarray(table["eta_cross_best"]))
    np.testing.assert_allclose(np.asarray(table["q_best"])[galaxy], q[galaxy], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(table["pa_best"])[galaxy], pa[galaxy], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_field_fits_in_eta_and_q_pa_agree(fits_q_pa_and_eta):
    a, b = fits_q_pa_and_eta["q_pa"], fits_q_pa_and_eta["eta"]
    assert "eta_plus_best" not in a.colnames and "eta_plus_err" in b.colnames
    for kind in [f"flux_{band}" for band in SIM_BANDS] + ["ra", "dec", "q", "pa", "n", "rh"]:
        diff = np.asarray(b[f"{kind}_best"], float) - np.asarray(a[f"{kind}_best"], float)
        if kind == "pa":
            diff = (diff + math.pi / 2) % math.pi - math.pi / 2
        err_a, err_b = np.asarray(a[f"{kind}_err"], float), np.asarray(b[f"{kind}_err"], float)
        # the priors differ (uniform q and pa, a truncated normal per eta component): close, not equal
        assert np.max(np.abs(diff) / err_a) < 1.0, (kind, diff / err_a)
        assert np.median(np.abs(diff) / err_a) < 0.1, (kind, diff / err_a)
        # Fisher errors at two nearby optima: alike (a faint source's can differ by tens of percent)
        assert 0.9 < np.median(err_b / err_a) < 1.1, (kind, err_b / err_a)


@pytest.mark.slow
def test_default_field_fit_is_bit_identical_to_an_explicit_q_pa_fit(tmp_path):
    field = simulate_goodss_field(tmp_path / "tiny", max_sources=6, seed=3)
    tables = []
    for extra in ([], ["--shape-parameters", "q_pa"]):
        outdir = tmp_path / f"out{len(tables)}"
        args = []
        for e in field.exposures:
            args += ["--exposure", *e]
        args += ["--sources", str(field.initial_path), "--outdir", str(outdir), "--no-sample", "--workers", "2",
                 "--quiet", "--no-residuals", "--no-plots"]
        assert fitfield.main(args + extra) == 0
        tables.append(Table.read(outdir / "catalog.fits", "CATALOG"))
    a, b = tables
    assert a.colnames == b.colnames and not any(c.startswith("eta") for c in a.colnames)
    for c in a.colnames:
        assert np.array_equal(np.asarray(a[c]), np.asarray(b[c]), equal_nan=a[c].dtype.kind == "f"), c


def test_eta_results_survive_the_result_store(tmp_path):
    from pho.field.store import ResultStore

    res = PatchResult(patch_index=3, pass_index=2, rows=np.array([4, 9]), ok=True, param_kinds=["q", "pa"],
                      param_rows=np.array([4, 4]), theta=np.array([0.5, 0.2]), sigma=np.array([0.01, 0.02]),
                      eta_rows=np.array([4]), eta_theta=np.array([[0.3, -0.1]]), eta_sigma=np.array([[0.02, 0.03]]))
    store = ResultStore(tmp_path / "work")
    store.save("pass02", res)
    back = store.load("pass02", 3)
    assert back.eta_rows.tolist() == [4]
    np.testing.assert_array_equal(back.eta_theta, res.eta_theta)
    np.testing.assert_array_equal(back.eta_sigma, res.eta_sigma)
    assert back.eta_median is None


def test_a_sampled_patch_in_eta_reports_q_pa_and_eta_percentiles(tmp_path, monkeypatch):
    """A patch fitted in eta and sampled: the q and pa slots hold the summaries of every sample's q
    and pa, eta its own; the catalog gets both. The sampler is replaced by draws from the Fisher
    Gaussian around the optimum (the plumbing is tested here; NUTS itself in tests/test_nuts.py)."""
    import pho
    from pho.field import FieldExposure, FieldSources
    from pho.field.driver import FieldRun, _apply, _take_posterior, _task, plan_field
    from pho.field.output import catalog_table
    from pho.field.patchfit import fit_patch
    from pho.sample import _summarize

    summaries = []

    def fake_nuts(likelihood, priors, *, theta0, init_cov, seed, **kwargs):
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(theta0, init_cov, size=4000)
        draws = draws[np.all((draws > priors.lower) & (draws < priors.upper), axis=1)]
        summaries.append(_summarize(draws, np.full(len(draws), 1.0 / len(draws)), list(likelihood.parameter_names),
                                    priors))
        return SimpleNamespace(summary=summaries[-1])

    monkeypatch.setattr(pho, "sample_nuts", fake_nuts)
    field = simulate_goodss_field(tmp_path / "tiny", max_sources=6, seed=3)
    exposures = [FieldExposure.open(*e) for e in field.exposures]
    sources = FieldSources.read(field.initial_path, list(SIM_BANDS))
    settings = FieldSettings(shape_parameters="eta", sampler="nuts")
    patches, flags, blend, light = plan_field(exposures, sources, settings)
    S, K = len(sources), len(sources.column_kinds)
    run = FieldRun(exposures=exposures, initial=sources, current=sources.copy(), sigma=np.full((S, K), np.nan),
                   patches=patches, patch_of=np.full(S, -1), flags=flags, light_radius_arcsec=light,
                   blend_radius_arcsec=blend, settings=settings, eta=np.full((S, 2), np.nan),
                   eta_sigma=np.full((S, 2), np.nan))
    patch = patches[0]
    run.patch_of[patch.sources] = patch.index
    options = {"shape_parameters": "eta", "seed": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoWarning)
        best = fit_patch(_task(patch, 1, run, None, options))
        _apply(run, best)
        run.results[patch.index] = best
        sampled = fit_patch(_task(patch, 0, run, "nuts", options))
    assert sampled.ok, sampled.message
    summary = summaries[-1]
    row = int(patch.sources[0])
    kinds = list(sampled.param_kinds)
    assert "eta_plus" not in kinds and {"q", "pa"} <= set(kinds)
    for stat in ("median", "p16", "p84"):
        assert getattr(sampled, stat)[kinds.index("q")] == summary["s0.q"][stat]
        assert getattr(sampled, stat)[kinds.index("pa")] == summary["s0.pa"][stat]
        assert getattr(sampled, f"eta_{stat}")[0].tolist() == [summary["s0.eta_plus"][stat],
                                                             summary["s0.eta_cross"][stat]]
    assert sampled.p16[kinds.index("q")] < sampled.median[kinds.index("q")] < sampled.p84[kinds.index("q")]
    _take_posterior(run, {patch.index: sampled})
    table = catalog_table(run)
    for kind in ("q", "pa", "eta_plus", "eta_cross", "flux_F160W"):
        for stat in ("median", "p16", "p84"):
            assert f"{kind}_{stat}" in table.colnames
    assert table["q_median"][row] == summary["s0.q"]["median"]
    assert table["eta_cross_p84"][row] == summary["s0.eta_cross"]["p84"]
    assert table["eta_plus_best"][row] == best.eta_theta[0, 0]
    assert table["q_best"][row] == pytest.approx(float(np.exp(-np.hypot(*best.eta_theta[0]))), rel=1e-12)
    assert np.isnan(table["eta_plus_median"][[i for i in range(S) if i != row]]).all()
