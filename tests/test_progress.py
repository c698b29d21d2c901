"""pho._progress: a live line on a terminal, whole lines at intervals in a log."""

from __future__ import annotations

import io

from pho._progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_output_is_rate_limited_whole_lines():
    stream = io.StringIO()
    p = Progress("nuts", stream=stream, log_interval_s=3600.0)
    for i in range(1000):
        p.update(f"{i}/1000")
    p.close("1000/1000 done")
    lines = stream.getvalue().splitlines()
    assert lines == ["nuts: 0/1000", "nuts: 1000/1000 done"]
    assert "\r" not in stream.getvalue()


def test_terminal_output_redraws_one_line():
    stream = _Tty()
    p = Progress("dynesty", stream=stream, tty_interval_s=0.0)
    p.update("a long first status")
    p.update("short")
    p.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    # the shorter line blanks out the rest of the longer one
    assert "\rdynesty: short" + " " * (len("dynesty: a long first status") - len("dynesty: short")) in text


def test_disabled_prints_nothing():
    stream = io.StringIO()
    p = Progress("x", stream=stream, enabled=False)
    p.update("y", force=True)
    p.close("z")
    assert stream.getvalue() == ""


def test_close_shows_the_last_suppressed_status():
    stream = io.StringIO()
    p = Progress("nuts", stream=stream, log_interval_s=3600.0)
    p.update("1/3")
    p.update("2/3")
    p.update("3/3")
    p.close()
    assert stream.getvalue().splitlines() == ["nuts: 1/3", "nuts: 3/3"]


def test_dynesty_progress_in_a_log_is_a_few_lines(capfd):
    """The whole dynesty run of a 3-d Gaussian writes a first and a last line to a redirected stderr
    (it used to write one fragment per iteration)."""
    import numpy as np

    from pho.priors import Priors, Uniform
    from pho.sample import sample

    class Gauss:
        parameter_names = ["s0.a", "s0.b"]

        def lnlike(self, theta):
            return -0.5 * float(np.sum(np.asarray(theta) ** 2))

    pri = Priors(Gauss.parameter_names, {n: Uniform(-5.0, 5.0) for n in Gauss.parameter_names})
    sample(Gauss(), pri, nlive=30, rng=np.random.default_rng(0), progress=True)
    err = capfd.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("dynesty:")]
    assert 1 <= len(lines) <= 3, err[-2000:]
    assert "\r" not in err
    assert "ln Z" in lines[-1]
