"""``metrics.jsonl`` on a full disk: short writes leave no torn fragment, nothing is lost
while the buffer holds, and what does not fit is dropped oldest first, said once.

A full filesystem is made real with a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored)
in a child process: the kernel's ``os.write`` then comes back short, then fails with EFBIG,
as on a full disk. Tests run as root, where a small tmpfs would need privileges.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kernel.metrics import METRICS_FILE, MetricRecord

WRITER = """
import logging, resource, signal, sys
from kernel.metrics import MetricsWriter

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
run_dir, limit, buffer, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit returns short / EFBIG
writer = MetricsWriter(run_dir, max_buffer_bytes=buffer)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
for step in range(steps):
    writer.add(step, 1.0, {"train/loss": 1.0 / (step + 1), "lr": 0.1})
    if step % 7 == 6:
        writer.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed
writer.flush()
"""


def _fill(run_dir: Path, *, limit: int, buffer: int, steps: int) -> str:
    run_dir.mkdir()
    args = [str(run_dir), str(limit), str(buffer), str(steps)]
    done = subprocess.run(
        [sys.executable, "-c", WRITER, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _records(run_dir: Path) -> list[MetricRecord]:
    text = (run_dir / METRICS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [MetricRecord.model_validate_json(line) for line in text.splitlines()]


def test_a_full_disk_leaves_no_torn_line_and_loses_nothing_the_buffer_holds(run_dir):
    log = _fill(run_dir, limit=4000, buffer=1 << 20, steps=300)
    assert [r.step for r in _records(run_dir)] == list(range(300))
    assert log.count("could not append to") == 1  # warned once, not at every flush
    assert "is writable again" in log


def test_a_full_disk_keeps_the_buffer_bounded_dropping_the_oldest(run_dir):
    log = _fill(run_dir, limit=4000, buffer=3000, steps=300)
    steps = [r.step for r in _records(run_dir)]
    assert steps == sorted(steps) and steps[-1] == 299
    kept = len(steps)
    assert 40 < kept < 300  # the lines that fit before the limit, then the newest 3000 bytes
    assert log.count("could not append to") == 1
    assert f"{300 - kept} records dropped" in log
