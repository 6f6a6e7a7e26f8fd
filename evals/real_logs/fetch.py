"""Download the sources of the real-log development set, where GitHub can be reached.

Usage: ``python -m evals.real_logs.fetch DIR [--sources FILE] [--base-url URL]`` writes each
listed ``repo``/``path`` at its ``commit`` to ``DIR/<owner>/<repo>/<path>`` (a file already
there is kept), then ``python -m evals.real_logs.build DIR OUT`` turns them into labelled
recorded runs. ``--base-url`` (default ``https://raw.githubusercontent.com``) serves files as
``BASE/<owner>/<repo>/<commit>/<path>``: a mirror, or a local copy. A file that cannot be
read is reported and skipped, so one moved repository does not stop the rest.

Example:
    >>> raw_url(GITHUB_RAW, "o/r", "abc", "checkpoint-5/trainer_state.json")
    'https://raw.githubusercontent.com/o/r/abc/checkpoint-5/trainer_state.json'
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from evals.real_logs.build import SOURCES, Source, read_sources

GITHUB_RAW = "https://raw.githubusercontent.com"
MAX_BYTES = 20 * 1024 * 1024
"""A Trainer state larger than this is not a log worth a benchmark (and not what was read)."""


def raw_url(base: str, repo: str, commit: str, path: str) -> str:
    """Where ``base`` serves ``repo``'s ``path`` at ``commit``."""
    return "/".join((base.rstrip("/"), repo, commit, urllib.parse.quote(path)))


def fetch(root: Path, sources: list[Source], *, base: str = GITHUB_RAW) -> list[str]:
    """Download every source not yet under ``root``; one line per source that failed."""
    problems = []
    for source in sources:
        target = root / source.repo / source.path
        if target.is_file():
            continue
        url = raw_url(base, source.repo, source.commit, source.path)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (http(s) only)
                body = response.read(MAX_BYTES + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            problems.append(f"{source.repo}/{source.path}: {url}: {exc}")
            continue
        if len(body) > MAX_BYTES:
            problems.append(f"{source.repo}/{source.path}: larger than {MAX_BYTES} bytes; skipped")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.real_logs.fetch", description=__doc__)
    parser.add_argument("root", type=Path, help="where the files go, DIR/<owner>/<repo>/<path>")
    parser.add_argument("--sources", type=Path, default=SOURCES)
    parser.add_argument("--base-url", default=GITHUB_RAW)
    args = parser.parse_args(argv)
    if not args.base_url.startswith(("http://", "https://")):
        parser.error(f"--base-url must be an http(s) URL, got {args.base_url!r}")
    sources = read_sources(args.sources)
    problems = fetch(args.root, sources, base=args.base_url)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(sources) - len(problems)} of {len(sources)} sources under {args.root}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
