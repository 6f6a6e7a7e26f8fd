"""What ``autopilot demo`` shows of the training: a progress line every 100 steps, read from
the run's ``metrics.jsonl`` as it grows."""

from __future__ import annotations

from pathlib import Path

from autopilot.metrics_tail import MetricsFollower

PROGRESS_EVERY = 100
_SHOWN = {"train/loss": "{:.4f}", "val/loss": "{:.4f}", "val/acc": "{:.3f}", "lr": "{:g}"}


def _text(fmt: str, value: float | None) -> str:
    return "-" if value is None else fmt.format(value)


class Watch:
    """Follows the demo run's metrics and prints a progress line every 100 steps."""

    def __init__(self, run_dir: Path) -> None:
        self._follower = MetricsFollower(run_dir)
        self._latest: dict[str, float] = {}
        self._printed = 0
        self.last_step = 0

    def update(self) -> None:
        """Read the new records; print progress for each 100th step among them."""
        for record in self._follower.new_records():
            self._latest.update(record.metrics)
            self.last_step = record.step
            if record.step % PROGRESS_EVERY == 0:
                self._progress(record.step)

    def finish(self) -> None:
        """Print the last step's progress line, unless it was just printed."""
        self.update()
        if self.last_step and self.last_step != self._printed:
            self._progress(self.last_step)

    def _progress(self, step: int) -> None:
        self._printed = step
        cells = [f"{name} {_text(fmt, self._latest.get(name)):<6}" for name, fmt in _SHOWN.items()]
        print(f"  step {step:>5}  " + "  ".join(cells).rstrip())
