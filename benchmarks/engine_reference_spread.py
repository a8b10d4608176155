"""Measure how far the engine-reference runs move when only the CPU kernels change.

    python benchmarks/engine_reference_spread.py

Re-trains the four runs of ``tests/training/test_engine_reference.py`` once per kernel
dispatch, each in a fresh process with one torch thread: torch's vectorised kernels forced to
``ATEN_CPU_CAPABILITY=default`` (scalar) or ``avx2``, times oneDNN's convolutions capped at
``ONEDNN_MAX_CPU_ISA=SSE41`` or ``AVX2``. For each run it prints the largest relative
difference of a float field between any two dispatches, and between any dispatch and the
recorded ``engine_reference.json`` (recorded on another CPU), plus any integer field that
differs. The test's tolerances are a stated factor above these numbers.

Writes ``benchmarks/results/engine_reference_spread_<cpu capability>_torch<version>.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "training" / "engine_reference.json"
DISPATCH = list(itertools.product(("default", "avx2"), ("SSE41", "AVX2")))
CHILD = """
import json, os, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import test_engine_reference as t
with tempfile.TemporaryDirectory() as d:
    os.environ["VQLAB_CACHE"] = str(Path(d) / "cache")
    print(json.dumps(t._summaries(Path(d))))
"""


def _run(aten: str, onednn: str) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    tests = str(ROOT / "tests" / "training")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, tests], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _spread(sets: dict[str, dict], run: str) -> tuple[float, str, str, list[str]]:
    """Largest relative float difference over all pairs of ``sets`` for ``run``."""
    worst, pair, field, ints = 0.0, "", "", []
    for (na, a), (nb, b) in itertools.combinations(sets.items(), 2):
        for k, v in a[run].items():
            if isinstance(v, float) or isinstance(b[run][k], float):
                if _rel(v, b[run][k]) > worst:
                    worst, pair, field = _rel(v, b[run][k]), f"{na} vs {nb}", k
            elif v != b[run][k]:
                ints.append(f"{k} ({na} vs {nb})")
    return worst, pair, field, ints


def main() -> None:
    import torch

    recorded = json.loads(REFERENCE.read_text())
    sets = {f"aten={a},onednn={o}": _run(a, o) for a, o in DISPATCH}
    report = {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    for run in sorted(recorded):
        within = _spread(sets, run)
        against = _spread({**sets, "recorded": recorded}, run)
        report[run] = {"within_dispatches": within, "including_recorded": against}
        print(f"{run:20s} within {within[0]:.2e} ({within[2]}, {within[1]})")
        print(f"{'':20s} +recorded {against[0]:.2e} ({against[2]}, {against[1]}) ints {against[3]}")
    version = torch.__version__.replace("+", "-")
    name = f"engine_reference_spread_{report['cpu'].lower()}_torch{version}.json"
    path = ROOT / "benchmarks" / "results" / name
    path.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
