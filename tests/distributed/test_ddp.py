"""Data parallel training: 2 CPU processes with the gloo backend (``pytest -m distributed``).

Tolerance of "2 ranks match 1 process": DDP averages the two ranks' gradients of mean losses
over equal shards, which is the gradient of the mean over the global batch, and the quantizer
sums its EMA statistics over ranks. So the two runs compute the same numbers, only summed in
another order: float32 rounding of ~1e-7 per step, which Adam and the EMA carry along without
amplifying as long as no nearest-code assignment flips. Measured on this config the weights
differ by < 1e-6 and the EMA counts (sums of 0/1 assignments) not at all; the test allows
``rtol = atol = 1e-5`` on tensors and ``rel = 1e-5`` on the summary, and asserts that the
assignment counts are exactly equal (a flip would make the runs genuinely different).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_workers import (
    TINY,
    scenario_init,
    scenario_nonfinite,
    scenario_restart_more_dead_than_rows,
    scenario_resume,
    scenario_train,
    spawn,
)
from safetensors.torch import load_file

from vqlab import load_config
from vqlab.data.dataset import load_dataset
from vqlab.models.registry import build_model
from vqlab.training import engine
from vqlab.training.feed import init_codebook
from vqlab.training.logging import read_metrics

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    spawn(scenario_train, out)
    return out


def _weights(out: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"{name}.rank{rank}.safetensors"))


@pytest.mark.parametrize("name", ["ema", "grad"])
def test_codebooks_and_weights_identical_across_ranks(two_rank_runs, name):
    w0, w1 = _weights(two_rank_runs, name, 0), _weights(two_rank_runs, name, 1)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert int(w0["quantizer.restarts"]) > 0 or name == "grad"  # restarts were exercised
    # the deferred switch (and its k-means init) happened once, on the same step on each rank
    seen = [json.loads((two_rank_runs / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["init_steps"] == seen[1]["init_steps"] == [30]
    for s in seen:
        s["summary"].pop("seconds")  # each rank's own clock
    assert seen[0]["summary"] == seen[1]["summary"]  # every rank returns rank 0's summary


def test_only_rank_0_writes_the_run_folder(two_rank_runs):
    run = two_rank_runs / "ema"
    rows = read_metrics(run)
    assert [r["step"] for r in rows if r["phase"] != "init"] == [*range(0, 80, 10), 79]
    assert (run / "summary.json").is_file() and (run / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["ema", "grad"])
def test_two_ranks_match_one_process(two_rank_runs, tmp_path, name):
    config = load_config(None, TINY if name == "ema" else [*TINY, "vq.update=grad"])
    one = engine.train(config, tmp_path / "one", progress=False)
    ref = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    two = _weights(two_rank_runs, name, 0)
    for key, value in ref.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-5, msg=key)
        else:
            assert torch.equal(two[key], value), key
    assert torch.equal(two["quantizer.ema_counts"], ref["quantizer.ema_counts"])
    summary = json.loads((two_rank_runs / name / "summary.json").read_text())
    for key, value in one.items():
        if key != "seconds" and isinstance(value, float):
            assert summary[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


def test_kmeans_init_identical_across_ranks(tmp_path):
    spawn(scenario_init, tmp_path)
    c0 = load_file(str(tmp_path / "init.rank0.safetensors"))
    c1 = load_file(str(tmp_path / "init.rank1.safetensors"))
    for key in c0:
        assert torch.equal(c0[key], c1[key]), key
    assert bool(c0["initialized"])
    # and it is the init a single process makes from the same (ungathered) sample
    config = load_config(None, TINY)
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape)
    init_codebook(model, data, config, "cpu")
    torch.testing.assert_close(c0["codebook"], model.quantizer.codebook, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_every_rank_resumes_after_a_crash(tmp_path):
    spawn(scenario_resume, tmp_path)
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    whole.pop("seconds"), cut.pop("seconds")
    assert cut == whole  # same world size, same order of every sum: bit for bit
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "whole")


@pytest.mark.slow
def test_vqlab_train_nproc_launches_torchrun(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vqlab", "train", "--nproc", "2", "--quiet", "--out", str(out)]
    cmd += ["--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "device=cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["codebook_size"] == 16  # rank 0 alone
    assert json.loads((out / "checkpoint" / "state.json").read_text())["world_size"] == 2
    assert "--nproc 2" in (out / "command.txt").read_text()


@pytest.mark.slow
def test_a_non_finite_batch_on_one_rank_stops_or_skips_every_rank_alike(tmp_path):
    spawn(scenario_nonfinite, tmp_path)
    seen = [json.loads((tmp_path / f"nonfinite.rank{r}.json").read_text()) for r in (0, 1)]
    # stop: both ranks raise, with the same message, though only rank 1 saw the NaN
    assert seen[0]["stop"] is not None and seen[0]["stop"] == seen[1]["stop"]
    assert "at step 45 (phase vq)" in seen[0]["stop"]
    stopped = read_metrics(tmp_path / "stop")
    assert (
        max(r["step"] for r in stopped) < 45 and not (tmp_path / "stop" / "summary.json").exists()
    )
    # skip: both ranks skip that one step, and stay identical
    assert seen[0]["skip"] == seen[1]["skip"] == 1
    w0 = load_file(str(tmp_path / "skip.rank0.safetensors"))
    w1 = load_file(str(tmp_path / "skip.rank1.safetensors"))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    rows = {r["step"]: r for r in read_metrics(tmp_path / "skip") if r["phase"] != "init"}
    assert rows[40]["nonfinite_skipped"] == 0 and rows[79]["nonfinite_skipped"] == 1


def test_a_restart_with_more_dead_codes_than_rows_stays_in_step_across_ranks(tmp_path):
    """``random_subset``'s broadcast: rank 0's choice of dead codes is every rank's."""
    spawn(scenario_restart_more_dead_than_rows, tmp_path)
    r0, r1 = (load_file(str(tmp_path / f"restart.rank{r}.safetensors")) for r in (0, 1))
    assert torch.equal(r0["subset"], r1["subset"])  # drawn from differently seeded generators
    assert r0["subset"].unique().numel() == 7 and set(r0["subset"].tolist()) <= set(
        range(0, 120, 3)
    )
    assert torch.equal(r0["codebook"], r1["codebook"]) and torch.equal(r0["counts"], r1["counts"])
    # 16 of the 64 codes were re-seeded, each with a distinct row of the global batch
    changed = (r0["codebook"] != r0["before"]).any(dim=1)
    assert int(changed.sum()) == 16
    rows = {tuple(row.tolist()) for row in r0["z_global"]}
    reseeded = [tuple(row.tolist()) for row in r0["codebook"][changed]]
    assert set(reseeded) == rows  # every global row once, so the two shards' rows both appear
