"""benchmarks/_timing.py, the benchmark scripts' helper: interleaved medians, CSV + JSON rows."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "_timing", Path(__file__).resolve().parents[1] / "benchmarks" / "_timing.py"
)
timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timing)


def test_interleaved_ms_calls_in_turn_and_takes_medians(monkeypatch):
    calls, clock = [], [0.0]
    cost = {"a": [1.0, 5.0, 2.0], "b": [10.0, 30.0, 20.0]}  # seconds per timed call, in order

    def make(name):
        def fn():
            calls.append(name)
            n = sum(c == name for c in calls) - 2  # the first call of each is the warm-up
            clock[0] += cost[name][n] if n >= 0 else 100.0

        return fn

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    ms = timing.interleaved_ms({"a": make("a"), "b": make("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three rounds in turn
    assert ms == {"a": pytest.approx(2000.0), "b": pytest.approx(20000.0)}
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved_ms({"a": make("a")}, repeats=0)


def test_write_rows_round_trips(tmp_path):
    rows = [{"n": 1, "ms": 2.5}, {"n": 2, "extra": "x"}]
    timing.write_rows(tmp_path / "sub" / "stem", rows, env={"torch": "t"})
    data = json.loads((tmp_path / "sub" / "stem.json").read_text())
    assert data == {"env": {"torch": "t"}, "rows": rows} and list(data) == ["env", "rows"]
    with open(tmp_path / "sub" / "stem.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert got == [{"n": "1", "ms": "2.5", "extra": ""}, {"n": "2", "ms": "", "extra": "x"}]
