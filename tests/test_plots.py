"""pho.plots: the panels show what they claim (data, model, residual, chi, gradients), files are written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pho import plots  # noqa: E402
from pho.sample import SampleResult  # noqa: E402


class _Exposure:
    def __init__(self, rng, shape):
        self.pixels = rng.normal(size=shape) + 10.0
        self.ivar = np.full(shape, 4.0)
        self.mask = np.zeros(shape, bool)
        self.mask[1, 2] = True
        self.band = "F200W"
        self.background = 0.5
        self.name = "exp"


class _Like:
    parameter_names = ["s0.flux_F200W", "s0.ra", "s1.flux_F200W"]

    def __init__(self, rng):
        self.exposures = [_Exposure(rng, (8, 9)), _Exposure(rng, (8, 9))]
        self.design = rng.normal(size=(3, 8, 9))

    def model_images(self, theta):
        return [np.tensordot(theta, self.design, 1) + 10.0 for _ in self.exposures]

    def gradient_images(self, theta, e):
        return self.design * (e + 1)


def _image(ax):
    return np.ma.filled(ax.images[0].get_array().astype(float), np.nan)


def test_exposure_panels_hold_data_model_residual_chi(tmp_path, rng):
    like = _Like(rng)
    theta = np.array([1.0, 2.0, 3.0])
    fig = plots.plot_exposures(like, theta, tmp_path / "exp.png")
    assert (tmp_path / "exp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 8  # 2 exposures x 4 panels
    e = like.exposures[1]
    model = like.model_images(theta)[1]
    data, mod, resid, chi = (_image(ax) for ax in image_axes[4:8])
    np.testing.assert_allclose(data, e.pixels - 0.5)
    np.testing.assert_allclose(mod, model - 0.5)
    good = ~e.mask
    np.testing.assert_allclose(resid[good], (e.pixels - model)[good])
    np.testing.assert_allclose(chi[good], 2.0 * (e.pixels - model)[good])
    assert np.isnan(resid[1, 2]) and np.isnan(chi[1, 2])  # masked pixel not shown as a residual


def test_gradient_panels_are_one_sources_gradients(tmp_path, rng):
    like = _Like(rng)
    fig = plots.plot_gradients(like, np.ones(3), source_index=0, exposure_index=1, path=tmp_path / "g.png")
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_visible()]
    assert len(image_axes) == 3  # model + the two parameters of s0
    np.testing.assert_allclose(_image(image_axes[1]), 2 * like.design[0])
    np.testing.assert_allclose(_image(image_axes[2]), 2 * like.design[1])
    assert "s0.ra" in image_axes[2].get_title()
    with pytest.raises(ValueError, match="no source s5"):
        plots.plot_gradients(like, np.ones(3), source_index=5)


def test_corner_and_trace(tmp_path, rng):
    names = ["s0.flux_A", "s0.q"]
    samples = rng.normal(size=(400, 2)) * [1.0, 0.1] + [5.0, 0.5]
    w = np.full(400, 1 / 400)
    summary = {n: {"median": float(np.median(samples[:, i])), "p16": float(np.quantile(samples[:, i], 0.16)),
                   "p84": float(np.quantile(samples[:, i], 0.84)), "mean": 0.0, "std": 0.0} for i, n in enumerate(names)}
    post = SampleResult(samples=samples, weights=w, logl=-np.sort(rng.random(400))[::-1], logz=0.0, logz_err=0.1,
                        names=names, summary=summary, settings={"nlive": 40})
    fig = plots.plot_corner(post, tmp_path / "c.png", truths={"s0.q": 0.5})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3  # lower triangle of 2 x 2
    # the 2-d panel is the weighted histogram of all samples (the range is +-6 sigma: all inside)
    mesh = visible[1].collections[0]
    assert np.asarray(mesh.get_array()).sum() == pytest.approx(1.0, abs=1e-9)
    fig = plots.plot_trace(post, tmp_path / "t.png")
    assert len(fig.axes) == 3  # ln L + two parameters
    np.testing.assert_allclose(fig.axes[2].collections[0].get_offsets()[:, 1], samples[:, 1])
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "t.png").stat().st_size > 1000


def test_import_pho_does_not_import_matplotlib():
    code = "import sys, pho; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_chains_draws_traces_and_rank_histograms(tmp_path):
    from pho.errors import PhoValueError

    rng = np.random.default_rng(0)
    chains = rng.normal(size=(2, 50, 2))
    chains[1, :, 1] += 3.0  # a chain elsewhere: its rank histogram piles at the top
    divergent = np.zeros((2, 50), bool)
    divergent[0, 7] = True
    post = SampleResult(samples=chains.reshape(100, 2), weights=np.full(100, 0.01), logl=np.zeros(100),
                        logz=float("nan"), logz_err=float("nan"), names=["s0.a", "s0.b"], summary={},
                        results={"chains": chains, "divergent": divergent},
                        diagnostics={"s0.a": {"rhat": 1.0, "ess_bulk": 90.0, "ess_tail": 80.0}})
    fig = plots.plot_chains(post, tmp_path / "chains.png", bins=5)
    assert (tmp_path / "chains.png").stat().st_size > 1000
    axes = fig.axes
    assert len(axes) == 4
    # the shifted chain's ranks all sit in the top bins of parameter b
    heights = [p.get_data()[0] for p in axes[3].patches]
    assert heights[1][-1] == 20 and heights[0][-1] <= 2  # bins of 20 ranks: the top one is all chain 1
    assert "R-hat 1.000" in axes[1].get_title()
    # the divergence is marked
    assert any(line.get_marker() == "|" for line in axes[0].lines)
    with pytest.raises(PhoValueError, match="plot_trace"):
        plots.plot_chains(SampleResult(samples=chains[0], weights=np.full(50, 0.02), logl=np.zeros(50), logz=0.0,
                                       logz_err=0.0, names=["s0.a", "s0.b"], summary={}))
