"""pho.sample_nuts: moments of a known Gaussian, the transformed gradient, seeds, resume, a real galaxy."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

import pho
from pho import _backends
from pho.errors import PhoConvergenceWarning, PhoValueError
from pho.nuts import _Target, _windows, sample_nuts
from pho.priors import LogUniform, Priors, Uniform, default_priors

from helpers import central_difference

NAMES = ["s0.flux_A", "s0.ra", "s0.q", "s0.rh"]
MEAN = np.array([10.0, 150.0, 0.5, 0.3])
SIGMA = np.array([0.3, 2e-5, 0.03, 0.02])
CORR = np.array([[1.0, 0.8, -0.3, 0.0], [0.8, 1.0, -0.2, 0.1], [-0.3, -0.2, 1.0, 0.0], [0.0, 0.1, 0.0, 1.0]])
COV = CORR * np.outer(SIGMA, SIGMA)
HALF = 8 * SIGMA  # prior box +-8 sigma: truncation changes the moments by < 1e-12
BACKEND = "cpu" if "cpu" in _backends.available_backends() else "reference"

#: Gradient calls after which the interrupting Gaussian raises (module global: workers do not share it).
_KILL = {"calls": 0, "limit": None}


class _Killed(Exception):
    pass


class CorrelatedGaussian:
    """lnL = -chi^2/2 of a correlated 4-d Gaussian (mean MEAN, covariance COV)."""

    parameter_names = NAMES
    initial = MEAN + 0.5 * SIGMA

    def __init__(self):
        self.icov = np.linalg.inv(COV)

    def lnlike_and_grad(self, theta):
        _KILL["calls"] += 1
        if _KILL["limit"] is not None and _KILL["calls"] >= _KILL["limit"]:
            raise _Killed("simulated kill")
        d = np.asarray(theta) - MEAN
        return -0.5 * d @ self.icov @ d, -self.icov @ d


def _priors():
    return Priors(NAMES, {n: Uniform(m - h, m + h) for n, m, h in zip(NAMES, MEAN, HALF)})


@pytest.mark.parametrize("metric", ["diag", "dense"])
def test_correlated_gaussian_moments_within_monte_carlo_error(metric):
    _KILL.update(calls=0, limit=None)
    res = sample_nuts(CorrelatedGaussian(), _priors(), draws=1000, tune=400, chains=2, seed=3, processes=1,
                      progress=False, metric=metric)
    x = res.samples
    assert x.shape == (2000, 4) and np.all(res.weights == 1 / 2000) and math.isnan(res.logz)
    for i, name in enumerate(NAMES):
        d = res.diagnostics[name]
        assert d["rhat"] < 1.01, (name, d)
        assert d["ess_bulk"] > 400, (name, d)
        ess = d["ess_bulk"]
        # 4 Monte Carlo standard errors: mean sigma/sqrt(ess), std sigma/sqrt(2 ess)
        assert abs(x[:, i].mean() - MEAN[i]) < 4 * SIGMA[i] / math.sqrt(ess), name
        assert abs(x[:, i].std() / SIGMA[i] - 1) < 4 / math.sqrt(2 * ess), name
    corr = np.corrcoef(x.T)
    ess_min = min(d["ess_bulk"] for d in res.diagnostics.values())
    # standard error of a correlation coefficient: (1 - rho^2) / sqrt(ess)
    np.testing.assert_array_less(np.abs(corr - CORR), 4 * (1 - CORR**2) / math.sqrt(ess_min) + 1e-9)
    assert res.settings["divergences"] == 0
    assert res.n_calls > res.n_iter  # every iteration costs at least one gradient
    assert res.results["chains"].shape == (2, 1000, 4)


def test_same_seed_same_draws_whatever_the_processes():
    _KILL.update(calls=0, limit=None)
    kw = dict(draws=30, tune=30, chains=2, seed=11, progress=False)
    a = sample_nuts(CorrelatedGaussian(), _priors(), processes=1, **kw)
    b = sample_nuts(CorrelatedGaussian(), _priors(), processes=2, **kw)
    c = sample_nuts(CorrelatedGaussian(), _priors(), processes=1, **{**kw, "seed": 12})
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.n_calls == b.n_calls
    assert b.settings["processes"] == 2
    assert not np.array_equal(a.samples, c.samples)


@pytest.mark.filterwarnings("ignore::pho.errors.PhoConvergenceWarning")  # 40 draws: R-hat ~1.02 by chance
def test_resume_after_a_kill_gives_the_uninterrupted_draws(tmp_path, monkeypatch):
    import pho.nuts

    monkeypatch.setattr(pho.nuts, "_SLICE_S", 0.0)  # one iteration per slice: a checkpoint after each
    kw = dict(draws=40, tune=40, chains=2, seed=5, processes=1, progress=False)
    _KILL.update(calls=0, limit=None)
    full = sample_nuts(CorrelatedGaussian(), _priors(), **kw)
    path = tmp_path / "nuts.pkl"
    _KILL.update(calls=0, limit=full.n_calls // 2)
    with pytest.raises(_Killed):
        sample_nuts(CorrelatedGaussian(), _priors(), checkpoint_file=path, checkpoint_every_s=0.0, **kw)
    with open(path, "rb") as f:
        saved = pickle.load(f)
    assert 0 < sum(s["iteration"] for s in saved["states"]) < 2 * 80, "the checkpoint is not from mid-run"
    _KILL.update(calls=0, limit=None)
    resumed = sample_nuts(CorrelatedGaussian(), _priors(), checkpoint_file=path, resume=True, **kw)
    assert resumed.settings["resumed"] is True
    assert _KILL["calls"] < full.n_calls, "the resumed run started over"
    np.testing.assert_array_equal(resumed.samples, full.samples)
    # resuming with other settings is refused
    with pytest.raises(PhoValueError, match="draws=40, this call draws=41"):
        sample_nuts(CorrelatedGaussian(), _priors(), checkpoint_file=path, resume=True, **{**kw, "draws": 41})


class _KillAfter:
    """A pho likelihood that raises after ``limit`` gradient calls (None: never); the counters are private, so
    the checkpoint fingerprint of the wrapper is the same whatever the limit."""

    def __init__(self, likelihood, limit=None):
        self.likelihood = likelihood
        self._limit, self._calls = limit, 0

    @property
    def parameter_names(self):
        return self.likelihood.parameter_names

    def lnlike_and_grad(self, theta):
        self._calls += 1
        if self._limit is not None and self._calls >= self._limit:
            raise _Killed("simulated kill")
        return self.likelihood.lnlike_and_grad(theta)


def _with_pixels(like, pixels):
    """The same problem with other pixel values (same noise, WCS, PSF, band)."""
    e = like.exposures[0]
    return pho.Likelihood(copy.deepcopy(like.scene), [pho.Exposure(pixels, e.ivar, e.wcs, e.psf, e.band)],
                          backend=BACKEND)


@pytest.mark.filterwarnings("ignore::pho.errors.PhoConvergenceWarning")  # 15 draws: R-hat far from 1
def test_resume_checks_the_data_fingerprint(tmp_path, monkeypatch):
    """A NUTS checkpoint of a real galaxy: resuming it against other pixels, noise or priors is refused with
    the mismatch named; against the same data it continues to the uninterrupted run's draws."""
    import pho.nuts

    monkeypatch.setattr(pho.nuts, "_SLICE_S", 0.0)  # a checkpoint after every iteration
    truth, like = _one_galaxy(np.random.default_rng(3))
    pri = default_priors(like)
    kw = dict(draws=15, tune=15, chains=2, seed=4, processes=1, progress=False, theta0=truth.get_vector())
    full = sample_nuts(_KillAfter(like), pri, **kw)
    path = tmp_path / "nuts.pkl"
    with pytest.raises(_Killed):
        sample_nuts(_KillAfter(like, full.n_calls // 2), pri, checkpoint_file=path, checkpoint_every_s=0.0, **kw)
    with open(path, "rb") as f:
        saved = pickle.load(f)
    assert 0 < sum(s["iteration"] for s in saved["states"]) < 2 * 30, "the checkpoint is not from mid-run"
    assert saved["fingerprint"]["hashes"]["data"]

    pixels = like.exposures[0].pixels.copy()
    pixels[8, 8] += 0.01  # a quarter of the noise sigma in one pixel
    with pytest.raises(PhoValueError, match=r"belongs to another problem: the data differ\. "):
        sample_nuts(_KillAfter(_with_pixels(like, pixels)), pri, checkpoint_file=path, resume=True, **kw)
    e = like.exposures[0]
    noisier = pho.Likelihood(copy.deepcopy(like.scene), [pho.Exposure(e.pixels, 0.5 * e.ivar, e.wcs, e.psf, e.band)],
                             backend=BACKEND)
    with pytest.raises(PhoValueError, match="the noise maps differ"):
        sample_nuts(_KillAfter(noisier), pri, checkpoint_file=path, resume=True, **kw)
    with pytest.raises(PhoValueError, match="the priors differ"):
        sample_nuts(_KillAfter(like), pri.replace({"rh": (0.05, 1.0)}), checkpoint_file=path, resume=True, **kw)
    with pytest.raises(PhoValueError, match="the sources differ"):  # another likelihood around the same data
        sample_nuts(like, pri, checkpoint_file=path, resume=True, **kw)
    # a checkpoint without a fingerprint (written before pho had one) is refused, not trusted
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps({k: v for k, v in saved.items() if k != "fingerprint"}))
    with pytest.raises(PhoValueError, match="no problem fingerprint"):
        sample_nuts(_KillAfter(like), pri, checkpoint_file=old, resume=True, **kw)

    # the same data (a new but identical likelihood object): continues where it stopped, same draws
    same = _KillAfter(_with_pixels(like, like.exposures[0].pixels.copy()))
    resumed = sample_nuts(same, pri, checkpoint_file=path, resume=True, **kw)
    assert resumed.settings["resumed"] is True
    assert same._calls < full.n_calls, "the resumed run started over"
    np.testing.assert_array_equal(resumed.samples, full.samples)


def test_initial_covariance_gives_the_right_moments_and_is_checked():
    """init_cov (e.g. the optimizer's inverse Fisher matrix) as the first metric: on the correlated Gaussian,
    with a warm-up too short for any metric window (tune < 50), the draws have the known moments; a bad
    matrix is refused by name."""
    _KILL.update(calls=0, limit=None)
    res = sample_nuts(CorrelatedGaussian(), _priors(), draws=600, tune=40, chains=2, seed=8, processes=1,
                      progress=False, init_cov=COV)
    x = res.samples
    for i, name in enumerate(NAMES):
        ess = res.diagnostics[name]["ess_bulk"]
        assert ess > 600, (name, res.diagnostics[name])  # without init_cov (same seed): 449 for the worst
        assert abs(x[:, i].mean() - MEAN[i]) < 4 * SIGMA[i] / math.sqrt(ess), name
        assert abs(x[:, i].std() / SIGMA[i] - 1) < 4 / math.sqrt(2 * ess), name
    assert res.settings["init_cov"] is True and res.settings["divergences"] == 0
    # the metric was the given covariance (mapped to the logistic coordinates): shorter trajectories than with
    # the curvature along each axis (mean depth 3.03 without init_cov, same seed)
    assert res.settings["mean_tree_depth"] < 2.8
    with pytest.raises(PhoValueError, match=r"init_cov must be a finite \(4, 4\) covariance"):
        sample_nuts(CorrelatedGaussian(), _priors(), init_cov=np.eye(3))
    with pytest.raises(PhoValueError, match="init_cov is not positive definite"):
        sample_nuts(CorrelatedGaussian(), _priors(), init_cov=-COV)


def test_window_metric_is_shrunk_towards_the_previous_one():
    """A dense metric from fewer draws than parameters is singular; shrunk towards the metric in use (weight
    P / (n + P)) it is positive definite and equals the exact weighted mean."""
    from pho._hmc import _welford_add, _welford_metric

    P, n = 10, 6
    rng = np.random.default_rng(0)
    w = {"n": 0, "mean": np.zeros(P), "m2": np.zeros((P, P)), "ref": None}
    draws = rng.normal(size=(n, P))
    for x in draws:
        _welford_add(w, x, np.zeros(P, bool), np.ones(P))
    previous = np.diag(np.linspace(1.0, 2.0, P))
    m = _welford_metric(w, previous)
    np.testing.assert_allclose(m, (n * np.cov(draws.T) + P * previous) / (n + P), rtol=1e-12)
    assert np.linalg.eigvalsh(m).min() > 0.3  # >= P / (n + P) times previous's smallest eigenvalue
    assert np.linalg.matrix_rank(np.cov(draws.T)) < P


def test_bad_arguments_are_refused(tmp_path):
    like, pri = CorrelatedGaussian(), _priors()
    with pytest.raises(PhoValueError, match="draws=2 must be an integer >= 4"):
        sample_nuts(like, pri, draws=2)
    with pytest.raises(PhoValueError, match="chains=0"):
        sample_nuts(like, pri, chains=0)
    with pytest.raises(PhoValueError, match="target_accept=1.0"):
        sample_nuts(like, pri, target_accept=1.0)
    with pytest.raises(PhoValueError, match="metric='full'"):
        sample_nuts(like, pri, metric="full")
    with pytest.raises(PhoValueError, match="does not exist"):
        sample_nuts(like, pri, checkpoint_file=tmp_path / "none.pkl", resume=True)
    with pytest.raises(PhoValueError, match="processes="):
        sample_nuts(like, pri, processes=0)
    with pytest.raises(PhoValueError, match="priors.names differ"):
        sample_nuts(like, Priors(NAMES[::-1], {n: Uniform(m - h, m + h) for n, m, h in zip(NAMES, MEAN, HALF)}))
    with pytest.raises(pho.PhoRangeError, match="starting point: s0.q"):
        sample_nuts(like, pri, theta0=MEAN + np.array([0, 0, 1.0, 0]))
    bad = tmp_path / "dynesty.pkl"
    bad.write_bytes(pickle.dumps({"sampler": "something else"}))
    with pytest.raises(PhoValueError, match="not a pho NUTS checkpoint"):
        sample_nuts(like, pri, checkpoint_file=bad, resume=True)


def test_unconverged_chains_and_divergences_warn_by_name():
    # Started 7 sigma out with no warm-up, 8 draws: the chains still drift, R-hat is far above 1.01.
    theta0 = MEAN + 7 * SIGMA
    with pytest.warns(PhoConvergenceWarning, match=r"R-hat > 1.01 .* for .*s0\.flux_A"):
        sample_nuts(CorrelatedGaussian(), _priors(), draws=8, tune=0, chains=2, seed=1, processes=1,
                    progress=False, theta0=theta0, jitter=0.0)

    class Wall:
        """A unit Gaussian in x cut by a wall at x = 0.5 (zero density beyond: the likelihood refuses)."""

        parameter_names = ["s0.x"]
        initial = np.array([0.0])

        def lnlike_and_grad(self, theta):
            if theta[0] > 0.5:
                raise pho.PhoRangeError("x beyond the wall", float(theta[0]), -10.0, 0.5)
            return -0.5 * theta[0] ** 2, -theta

    pri = Priors(["s0.x"], {"s0.x": Uniform(-10.0, 10.0)})
    with pytest.warns(PhoConvergenceWarning, match="divergent NUTS transitions"):
        res = sample_nuts(Wall(), pri, draws=200, tune=100, chains=1, seed=2, processes=1, progress=False)
    assert res.settings["divergences"] > 0
    assert res.samples.max() <= 0.5


def test_warmup_windows_follow_stans_schedule():
    assert _windows(1000) == (75, [100, 150, 250, 450, 950])
    init, ends = _windows(100)
    assert init == 15 and ends[-1] == 90
    assert _windows(10) == (10, []) and _windows(49) == (49, [])
    assert _windows(50) == (7, [40])  # 10 step-size-only iterations at the end


def _one_galaxy(rng, shape_parameters="q_pa", shape=(16, 16), flux=40.0, sigma=0.04):
    from pho.demo import DEC0_DEG, RA0_DEG, demo_psf, demo_wcs

    truth = pho.Scene([pho.Sersic(RA0_DEG, DEC0_DEG, {"F200W": flux}, q=0.6, pa=0.7, n=1.5, rh=0.2)],
                      shape_parameters=shape_parameters)
    blank = pho.Exposure(np.zeros(shape), np.full(shape, 1 / sigma**2), demo_wcs(shape, 0.3, -0.2, 0.0),
                         demo_psf(1.7), "F200W")
    model = pho.Likelihood(truth, [blank], backend=BACKEND).model_images(truth.get_vector())[0]
    exposure = pho.Exposure(model + rng.normal(size=shape) * sigma, blank.ivar, blank.wcs, blank.psf, "F200W")
    # The likelihood gets its own copy of the scene: fitting moves it, the truth must stay put.
    return truth, pho.Likelihood(copy.deepcopy(truth), [exposure], backend=BACKEND)


@pytest.mark.parametrize("shape_parameters", ["q_pa", "g1_g2", "eta"])
def test_transformed_log_density_gradient_matches_finite_differences(rng, shape_parameters):
    """d ln p(u)/d u (likelihood, prior incl. a LogUniform, logistic log-Jacobian, periodic pa) vs central
    differences, parameter by parameter."""
    truth, like = _one_galaxy(rng, shape_parameters)
    pri = default_priors(like).replace({"rh": LogUniform(0.02, 1.0)})
    target = _Target(like, pri)
    assert target.periodic.sum() == (1 if shape_parameters == "q_pa" else 0)
    theta = truth.get_vector()
    theta[0] *= 1.1  # off the optimum, so every component of the gradient is sizeable
    u = target.to_unconstrained(theta)
    logp, grad, lnl = target(u)
    assert lnl == pytest.approx(like.lnlike(theta), rel=1e-12)
    for i, name in enumerate(like.parameter_names):
        step = 1e-5 * max(1.0, abs(u[i]))
        fd = central_difference(lambda v: target(v)[0], u, i, step)
        assert fd == pytest.approx(grad[i], rel=2e-5, abs=1e-6 * abs(logp) / 1e3), name


def test_shear_outside_the_unit_disc_has_zero_density(rng):
    truth, like = _one_galaxy(rng, "g1_g2")
    target = _Target(like, Priors(like.parameter_names, {
        n: (Uniform(-0.99, 0.99) if n.endswith((".g1", ".g2")) else d)
        for n, d in zip(like.parameter_names, default_priors(like).distributions)
    }))
    theta = truth.get_vector()
    names = list(like.parameter_names)
    theta[names.index("s0.g1")], theta[names.index("s0.g2")] = 0.8, 0.7  # |g| = 1.06
    logp, grad, lnl = target(target.to_unconstrained(theta))
    assert logp == -math.inf and lnl == -math.inf


def test_one_galaxy_posterior_matches_the_fisher_errors_and_truth():
    """A 7-parameter Sersic galaxy at S/N ~ 40 (16 x 16 pixels): posterior means within 4 sigma of the truth,
    widths within 25% of the Fisher errors at the best fit (the posterior is close to Gaussian at this S/N).
    R-hat < 1.03: with 2 x 200 draws R-hat of converged chains scatters by ~0.01 around 1, so the 1.01 that
    the warning uses for long runs would fail by chance here."""
    rng = np.random.default_rng(7)
    truth, like = _one_galaxy(rng)
    best = pho.optimize(like)
    like.scene.set_vector(best.theta)
    res = sample_nuts(like, draws=200, tune=200, chains=2, seed=1, processes=1, progress=False, metric="dense")
    sigma = best.sigma
    for i, name in enumerate(like.parameter_names):
        s = res.summary[name]
        d = res.diagnostics[name]
        assert d["rhat"] < 1.03 and d["ess_bulk"] > 100, (name, d)
        t = truth.get_vector()[i]
        diff = s["mean"] - t
        if name.endswith(".pa"):
            diff = (diff + math.pi / 2) % math.pi - math.pi / 2
        assert abs(diff) < 4 * s["std"], (name, s, t)
        assert s["std"] == pytest.approx(sigma[i], rel=0.25), name
    assert res.settings["divergences"] == 0
    # position angle draws lie in the prior window
    i_pa = like.parameter_names.index("s0.pa")
    pri = default_priors(like)
    assert pri.lower[i_pa] <= res.samples[:, i_pa].min() and res.samples[:, i_pa].max() < pri.upper[i_pa]


def test_fixed_parameters_view_and_default_priors_are_accepted(rng):
    truth, like = _one_galaxy(rng)
    view = pho.FixedParameters(like, {"s0.n": 1.5, "s0.q": 0.6, "s0.pa": 0.7})
    res = sample_nuts(view, default_priors(view), draws=20, tune=20, chains=1, seed=0, processes=1, progress=False)
    assert res.names == list(view.parameter_names) and res.samples.shape == (20, 4)
    # the chain moves (a short warm-up once ended on a step size at which every draw diverged)
    assert res.settings["divergences"] < 5 and np.all(np.ptp(res.samples, axis=0) > 0)
    assert set(res.diagnostics) == set(view.parameter_names)


def test_interval_coverage_over_noise_realizations():
    """Calibration: 20 data sets y ~ N(truth, COV); the posterior of each (flat prior) is N(y, COV). The
    number k of 68% intervals holding the truth is Binomial(20, 0.68) per parameter for a correct
    sampler; 8 <= k <= 19 fails by chance with probability 0.3% per parameter, 4 parameters: ~1%.
    (tools/coverage_nuts.py does the same on the real one-galaxy model.)"""
    noise = np.random.default_rng(42)
    chol = np.linalg.cholesky(COV)
    hits = np.zeros(4, int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoConvergenceWarning)
        for r in range(20):
            y = MEAN + chol @ noise.standard_normal(4)

            class Shifted(CorrelatedGaussian):
                def lnlike_and_grad(self, theta, y=y):
                    return super().lnlike_and_grad(np.asarray(theta) - y + MEAN)

            like = Shifted()
            like.initial = y
            pri = Priors(NAMES, {n: Uniform(m - h, m + h) for n, m, h in zip(NAMES, y, HALF)})
            res = sample_nuts(like, pri, draws=100, tune=100, chains=1, seed=r, processes=1, progress=False)
            lo, hi = np.quantile(res.samples, [0.16, 0.84], axis=0)
            hits += (lo <= MEAN) & (MEAN <= hi)
    assert np.all((8 <= hits) & (hits <= 19)), hits


def test_inference_data_export_where_arviz_is_installed():
    """ArviZ is optional: the export is checked where it is installed (skipped otherwise)."""
    from pho.nuts import to_inference_data

    _KILL.update(calls=0, limit=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhoConvergenceWarning)
        res = sample_nuts(CorrelatedGaussian(), _priors(), draws=10, tune=10, chains=2, seed=0, processes=1, progress=False)
    az = pytest.importorskip("arviz")
    idata = to_inference_data(res)
    assert idata.posterior["s0_q"].shape == (2, 10)
    np.testing.assert_array_equal(idata.posterior["s0_q"].values, res.results["chains"][:, :, 2])
    assert float(az.rhat(idata)["s0_q"]) == pytest.approx(res.diagnostics["s0.q"]["rhat"], rel=1e-10)


def test_usable_covariance_accepts_only_finite_positive_definite_matrices():
    from pho.nuts import usable_covariance

    good = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(usable_covariance(good), good)
    assert usable_covariance(np.array([[1.0, 2.0], [2.0, 1.0]])) is None  # indefinite
    assert usable_covariance(np.array([[np.inf, 0.0], [0.0, 1.0]])) is None
    assert usable_covariance(np.ones(3)) is None
