"""benchmarks/device_check.sh --smoke: the GPU check runs end to end at toy size on the CPU.

What is checked is that every stage finishes and writes its CSV with the columns the GPU run
will be read by, and values that mean something (searches agree with the fp32 reference, the
steps ran, times are positive). No timing is asserted: the CPU is shared.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def read(out: Path, pattern: str) -> list[dict]:
    paths = sorted(out.glob(pattern))
    assert len(paths) == 1, f"expected one {pattern} in {out}, got {paths}"
    with paths[0].open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory) -> Path:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("device_check")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out), "--smoke"], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    log = (out / "device_check.log").read_text() if (out / "device_check.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log[-4000:]}"
    return out


def test_every_stage_finished_and_files_fit_a_device_reply(smoke_out):
    stages = read(smoke_out, "stages.csv")
    assert [r["stage"] for r in stages] == ["vq", "tokenizer", "kmeans", "prior"]
    assert all(r["status"] == "ok" and r["exit_code"] == "0" for r in stages), stages
    assert all(0 < float(r["seconds"]) <= float(r["limit_s"]) + 10 for r in stages)
    # a lent machine returns at most 8 files, none in sub-folders
    files = list(smoke_out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)
    env = read(smoke_out, "environment.csv")[0]
    assert env["smoke"] == "True" and env["device"] == "cpu" and env["torch_threads"] == "1"


def test_vq_rows_search_through_the_kernel_and_agree(smoke_out):
    rows = read(smoke_out, "vq_*.csv")
    search = {r["method"]: r for r in rows if r["section"] == "search"}
    # the interpreter runs the kernel, so its rows are there and must find the same codes
    for method in ("torch_chunked", "cdist_argmin", "triton_exact", "triton_fast"):
        assert float(search[method]["agreement"]) == 1.0, method
        assert float(search[method]["ms"]) > 0
    assert float(search["bf16_gemm_floor"]["ms"]) > 0
    train = {r["method"]: r for r in rows if r["section"] == "train"}
    assert float(train["vqlab"]["agreement"]) == 1.0
    assert float(train["vqlab"]["ms"]) > 0 and float(train["vqlab"]["eval_ms"]) > 0
    assert {"peak_gib", "x_peer"} <= set(rows[0]) | set(train["vqlab"])
    if "peer" in train and train["peer"].get("ms"):
        assert float(train["vqlab"]["x_peer"]) > 0


def test_tokenizer_rows_time_every_stage(smoke_out):
    rows = {r["stage"]: r for r in read(smoke_out, "tokenizer_*.csv")}
    assert list(rows) == ["data", "percepnet", "build", "pretrain", "init", "vq"]
    assert int(rows["pretrain"]["steps"]) == 3 and int(rows["vq"]["steps"]) == 3
    for name in ("pretrain", "vq"):
        ms, ips = float(rows[name]["ms_per_step"]), float(rows[name]["images_per_s"])
        # batch 8 (the smoke's): images/s is the batch over the median step
        assert ms > 0 and math.isclose(ips, 8000 / ms, rel_tol=0.02)
    assert rows["init"]["init"] == "kmeans" and int(rows["init"]["k"]) == 64


def test_kmeans_rows_reach_the_baselines_inertia(smoke_out):
    rows = read(smoke_out, "kmeans_*.csv")
    lloyd = {r["method"]: r for r in rows if r["stage"] == "lloyd"}
    ours = lloyd["vqlab"]
    assert int(ours["iters_run"]) == 3 and float(ours["seconds_per_iter"]) > 0
    assert math.isfinite(float(ours["inertia"])) and float(ours["inertia"]) > 0
    if "sklearn" in lloyd:  # same init, same Lloyd: the same clusters up to fp32 rounding
        assert abs(float(ours["inertia_diff_pct_vs_sklearn"])) < 0.5


def test_prior_rows_have_both_priors_and_ratios(smoke_out):
    rows = read(smoke_out, "prior_*.csv")
    steps = {(r["prior"], r["impl"]): r for r in rows if r["metric"] == "train_step_ms"}
    assert set(steps) == {(p, i) for p in ("maskgit", "var") for i in ("vqlab", "torch_encoder")}
    for prior in ("maskgit", "var"):
        ours, base = steps[prior, "vqlab"], steps[prior, "torch_encoder"]
        assert math.isclose(
            float(ours["x_torch_encoder"]), float(ours["value"]) / float(base["value"]),
            rel_tol=1e-6,
        )  # fmt: skip
    assert steps["var", "vqlab"]["seq_len"] == "21"  # scales 1, 2, 4


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    for args in ([], ["--smoke"], [str(tmp_path), "--fast"]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, args
