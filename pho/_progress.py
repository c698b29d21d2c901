"""One progress display for the samplers, fit for where it goes.

On a terminal (``stream.isatty()``) it redraws one live line with ``\\r`` at most every
``tty_interval_s``; when the stream is a file or a pipe (a batch job's log) it writes a whole line
every ``log_interval_s`` seconds instead, so a long run leaves tens of lines in the log, not
thousands of carriage-return fragments.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]

#: Seconds between summary lines when the output is not a terminal.
LOG_INTERVAL_S = 10.0
#: Seconds between redraws of the live line on a terminal.
TTY_INTERVAL_S = 0.2


class Progress:
    """A rate-limited progress line.

    Parameters
    ----------
    label : str
        Printed at the start of every line (``"nuts"``, ``"dynesty"``).
    stream : file-like, optional
        Default ``sys.stderr``.
    enabled : bool
        False: print nothing (a library call with ``progress=False``).
    log_interval_s, tty_interval_s : float
        Seconds between lines in a log, and between redraws on a terminal.

    Examples
    --------
    >>> import io
    >>> p = Progress("demo", stream=io.StringIO(), log_interval_s=0.0)
    >>> p.update("10/100 iterations")
    >>> p.close("done")
    >>> p.stream.getvalue().splitlines()[-1]
    'demo: done'
    """

    def __init__(self, label: str, stream=None, enabled: bool = True,
                 log_interval_s: float = LOG_INTERVAL_S, tty_interval_s: float = TTY_INTERVAL_S):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled)
        isatty = getattr(self.stream, "isatty", None)
        self.is_tty = bool(isatty()) if callable(isatty) else False
        self.interval_s = tty_interval_s if self.is_tty else log_interval_s
        self._last = -float("inf")
        self._width = 0
        self._pending = False
        self._unshown = None

    def update(self, text: str, force: bool = False) -> None:
        """Show ``text`` if the interval has passed since the last line (or ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            self._unshown = text
            return
        self._last = now
        self._unshown = None
        line = f"{self.label}: {text}"
        if self.is_tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self._pending = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, text: str | None = None) -> None:
        """End the display with a final line: ``text`` if given, else the last status not yet shown."""
        if not self.enabled:
            return
        text = self._unshown if text is None else text
        if text is not None:
            self.update(text, force=True)
        if self.is_tty and self._pending:
            self.stream.write("\n")
            self.stream.flush()
        self._pending = False
