"""Time from start to the error line of bad ``vqlab`` invocations (issue 25).

    python benchmarks/cli_errors.py [--repeat 5] [--checkout PATH ...]

Each invocation runs as ``python -m vqlab ...`` in a fresh process (what a user waits for),
``--repeat`` times; the median wall time is reported with ``uptime``'s load average before and
after, since a shared machine's load moves these numbers. ``--checkout`` compares several source
trees (e.g. one before the fix): each is put first on ``PYTHONPATH``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD = [
    ["frobnicate"],  # the parser's own error
    ["sample", "RUN", "--n", "0", "--out", "OUT"],  # a command's argument check
    ["train", "--out", "OUT", "--set", "vq.codebok_size=8"],  # a config key
]


def _time(checkout: Path, argv: list[str], cwd: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vqlab", *argv], env=env, cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 2:
        raise SystemExit(f"{argv}: exit {done.returncode}, expected 2: {done.stderr[-500:]}")
    return seconds, done.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--checkout", type=Path, action="append")
    args = parser.parse_args()
    checkouts = args.checkout or [ROOT]
    print(
        f"load before: {os.getloadavg()}  cores: {os.cpu_count()}  python: {sys.version.split()[0]}"
    )
    print("\n| invocation | " + " | ".join(f"`{c}` median s (min, max)" for c in checkouts) + " |")
    print("|---|" + "---:|" * len(checkouts))
    with tempfile.TemporaryDirectory() as cwd:
        for argv in BAD:
            cells = []
            for checkout in checkouts:
                runs = [_time(checkout, argv, cwd) for _ in range(args.repeat)]
                times = [t for t, _ in runs]
                cells.append(f"{statistics.median(times):.2f} ({min(times):.2f}, {max(times):.2f})")
            print(f"| `vqlab {' '.join(argv)}` | " + " | ".join(cells) + " |")
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
