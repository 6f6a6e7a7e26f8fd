"""How fast a long run opens in the dashboard (prints a markdown table).

Target (the dashboard issue): a run with 100k points opens in under 1 s. For runs of 1k, 10k
and 100k steps of 20 metrics (``_synthetic_run.write_run``), the real service
(``serve_in_thread``, on loopback) serves the run and Debian's chromium, driven by
Playwright as in ``tests/service/test_dashboard_browser.py``, opens its page ``--loads``
times, each in a fresh browser context. A load's time runs from navigation start to the
page's ``charts-drawn`` mark (set once every chart has drawn the first metrics page); the
first load of a run comes after the service's cached metric columns were dropped (a cold
open, in a browser just started), the ``--loads`` after it find them cached. The
metrics response the page asks for (``GET /api/v1/runs/{id}/metrics?max_points=2000``) is
timed and sized on its own too, from Python over loopback, cold and cached.

Run: ``.venv/bin/python benchmarks/dashboard_open.py [--loads 5] [--steps 1000 10000 100000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _synthetic_run import write_run

from autopilot.service.metric_columns import COLUMNS
from autopilot.service.server import serve_in_thread

# the system browser, as the browser tests find it: `playwright install` needs a host we
# cannot reach
CHROMIUM = os.environ.get("AUTOPILOT_CHROMIUM", "/usr/bin/chromium")
MAX_POINTS = 2000


def open_times(url: str, run_id: str, loads: int) -> list[float]:
    """Seconds from navigation start to ``charts-drawn``, one per load, each page fresh;
    the service's cached metric columns are dropped before the first load (a cold open)."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for load in range(loads):
            if load == 0:
                COLUMNS.clear()
            context = browser.new_context(viewport={"width": 1280, "height": 1500})
            page = context.new_page()
            page.goto(f"{url}/dashboard/#/run/{run_id}")
            page.wait_for_function("document.body.dataset.chartsReady === '1'", timeout=60_000)
            mark = page.evaluate("performance.getEntriesByName('charts-drawn')[0].startTime")
            times.append(mark / 1000)
            context.close()
        browser.close()
    return times


def metrics_response(url: str, run_id: str, repeats: int = 3) -> tuple[int, float, float]:
    """The size in bytes of the metrics page the dashboard asks for, its first time (no
    cached columns) and its median time after that (cached)."""
    took, size = [], 0
    COLUMNS.clear()
    with httpx.Client(timeout=120) as http:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            answer = http.get(f"{url}/api/v1/runs/{run_id}/metrics?max_points={MAX_POINTS}")
            took.append(time.perf_counter() - start)
            answer.raise_for_status()
            size = len(answer.content)
    return size, took[0], statistics.median(took[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    if shutil.which(CHROMIUM) is None:
        sys.exit(
            f"no chromium at {CHROMIUM}: apt-get install chromium (or set $AUTOPILOT_CHROMIUM)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for steps in args.steps:
            write_run(root / f"run{steps}", steps)
        serving = serve_in_thread(root, tick=False, warm=False)  # cold opens stay cold
        try:
            rows = [measure(serving.url, steps, args.loads) for steps in args.steps]
        finally:
            serving.stop()
    print(f"{args.loads} page loads per run, 20 metrics a step, max_points={MAX_POINTS}\n")
    print(
        "| steps | page open, cold | page open, cached: median (min-max) | metrics response "
        "| its time, cold | cached |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)


def measure(url: str, steps: int, loads: int) -> str:
    run_id = f"run{steps}"
    size, cold, cached = metrics_response(url, run_id)
    first, *times = open_times(url, run_id, loads + 1)
    opened = f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"
    return (
        f"| {steps:,} | {first:.2f} s | {opened} | {size / 1e3:,.0f} kB | {cold:.2f} s "
        f"| {cached:.2f} s |"
    )


if __name__ == "__main__":
    main()
