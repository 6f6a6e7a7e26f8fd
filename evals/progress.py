"""A dependency-free progress bar for long harness commands (a bench, a replay of a corpus).

On a terminal it redraws one line in place with ``\\r``. Anywhere else (CI, a pipe, a log
file) it prints a plain line only when another 5 % is done or 10 s have passed, so a log of
a 480-run bench stays about twenty lines long. A stream that is closed or broken (the reader
of the pipe went away) silences the bar; it never raises into the work it reports on.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(2, "bench", stream=out, clock=lambda: 0.0) as bar:
    ...     bar.advance("digits/lr_high")
    ...     bar.advance()
    >>> out.getvalue().splitlines()[-1]
    'bench [####################] 2/2  100%  elapsed 0s  eta 0s'
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

logger = logging.getLogger(__name__)

BAR_WIDTH = 20
PLAIN_EVERY_FRACTION = 0.05
PLAIN_EVERY_S = 10.0
TTY_EVERY_S = 0.1
"""A terminal redraw more often than this is invisible and costs time in tight loops."""


def format_duration(seconds: float) -> str:
    """``42s``, ``1m02s``, ``2h05m``: short enough for a status line or a report header."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Count ``total`` units of work, showing a bar, the elapsed time and an estimate.

    Args:
        total: units of work expected (runs, replays); ``advance`` counts one each call.
        label: the word in front of the bar.
        stream: where to draw; standard error when ``None``.
        clock: seconds, monotonic; tests pass a fake one.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._tty = _is_tty(self._stream)
        self._last_shown_at = self._started
        self._last_shown_done = 0
        self._width = 0
        self._closed = False
        self._broken = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, note: str = "") -> None:
        """Count one unit done; ``note`` says what it was (shown at the end of the line)."""
        self.done += 1
        now = self._clock()
        if self._due(now):
            self._show(self.line(note, now=now), now)

    def close(self, note: str = "") -> None:
        """Print the final line (once); later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if self._tty or self._last_shown_done != self.done or self.done == 0:
            self._show(self.line(note, now=now), now)
        if self._tty:
            self._write("\n")

    def line(self, note: str = "", *, now: float | None = None) -> str:
        """The status line: ``label [#####.....] 12/480  25%  elapsed 1m02s  eta 3m05s``."""
        elapsed = (self._clock() if now is None else now) - self._started
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = round(fraction * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        remaining = max(0, self.total - self.done)
        eta = format_duration(elapsed / self.done * remaining) if self.done else "?"
        text = (
            f"{self.label} [{bar}] {self.done}/{self.total}  {fraction:4.0%}  "
            f"elapsed {format_duration(elapsed)}  eta {eta}"
        )
        return f"{text}  {note}" if note else text

    def _due(self, now: float) -> bool:
        if self.done == self.total:
            return True
        if self._tty:
            return now - self._last_shown_at >= TTY_EVERY_S
        step = max(1, round(self.total * PLAIN_EVERY_FRACTION))
        return (
            self.done - self._last_shown_done >= step or now - self._last_shown_at >= PLAIN_EVERY_S
        )

    def _show(self, text: str, now: float) -> None:
        self._last_shown_at = now
        self._last_shown_done = self.done
        if self._tty:
            # pad over the tail of a longer previous line (a long note)
            self._write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O operation on closed file
            self._broken = True
            logger.debug("progress bar %r silenced: its stream failed (%s)", self.label, exc)


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False
