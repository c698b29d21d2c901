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
