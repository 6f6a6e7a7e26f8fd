"""What ``autopilot demo`` sees of the training: progress lines and the before/after figures,
read from the run's ``metrics.jsonl`` as it grows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from autopilot.cli._format import value_text
from autopilot.cli._metrics import MetricsFollower

PROGRESS_EVERY = 100
_SHOWN = {"train/loss": "{:.4f}", "val/loss": "{:.4f}", "val/acc": "{:.3f}", "lr": "{:g}"}


def _text(fmt: str, value: float | None) -> str:
    return "-" if value is None else fmt.format(value)


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One validation result and the learning rate it was trained with."""

    step: int
    loss: float
    acc: float
    lr: float


class Watch:
    """Follows the demo run's metrics and prints a progress line every 100 steps."""

    def __init__(self, run_dir: Path) -> None:
        self._follower = MetricsFollower(run_dir)
        self._latest: dict[str, float] = {}
        self._printed = 0
        self._notes: list[tuple[int, str]] = []
        self.last_step = 0
        self.evals: list[Evaluation] = []

    def update(self) -> None:
        """Read the new records; print progress for each 100th step among them."""
        for record in self._follower.new_records():
            metrics = record.metrics
            self._latest.update(metrics)
            self.last_step = record.step
            self._print_notes(record.step)
            if "val/loss" in metrics:
                self.evals.append(
                    Evaluation(
                        step=record.step,
                        loss=metrics["val/loss"],
                        acc=metrics.get("val/acc", float("nan")),
                        lr=metrics.get("lr", float("nan")),
                    )
                )
            if record.step % PROGRESS_EVERY == 0:
                self._progress(record.step)

    def note(self, step: int, text: str) -> None:
        """Print ``text`` in step order: once the records reach ``step``."""
        self._notes.append((step, text))
        self._print_notes(self.last_step)

    def finish(self) -> None:
        """Print what is left: notes, and the last step's progress line."""
        self.update()
        self._print_notes(None)
        if self.last_step and self.last_step != self._printed:
            self._progress(self.last_step)

    def _print_notes(self, step: int | None) -> None:
        due = [n for n in self._notes if step is None or n[0] <= step]
        self._notes = [n for n in self._notes if n not in due]
        for _, text in due:
            print(text)

    def _progress(self, step: int) -> None:
        self._printed = step
        cells = [f"{name} {_text(fmt, self._latest.get(name)):<6}" for name, fmt in _SHOWN.items()]
        print(f"  step {step:>5}  " + "  ".join(cells).rstrip())

    def comparison(self, change_step: int, window: int = 3) -> list[str]:
        """Mean validation figures of the last ``window`` evaluations before the change
        (at or before ``change_step``) and of the last ``window`` evaluations of the run."""
        before = [e for e in self.evals if e.step <= change_step][-window:]
        after = [e for e in self.evals if e.step > change_step][-window:]
        if not before or not after:
            return ["  too few evaluations on one side of the change to compare"]
        lines = [self._mean_line("before", before), self._mean_line("after", after)]
        old, new = fmean(e.loss for e in before), fmean(e.loss for e in after)
        trend = "lower" if new < old else "higher"
        lines.append(f"  val/loss is {abs(1 - new / old):.0%} {trend} after the change")
        return lines

    @staticmethod
    def _mean_line(label: str, evals: list[Evaluation]) -> str:
        steps = f"steps {evals[0].step}-{evals[-1].step}"
        return (
            f"  {label + ':':<8}{steps:<16} lr {value_text(evals[-1].lr):<8} "
            f"val/loss {fmean(e.loss for e in evals):.4f}  "
            f"val/acc {fmean(e.acc for e in evals):.4f}"
        )
