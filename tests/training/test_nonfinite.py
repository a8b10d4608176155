"""The non-finite guard: stop with a message naming step, phase and tensor, or skip the batch."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vqlab import load_config
from vqlab.cli import main
from vqlab.training import engine
from vqlab.training.guard import NonFiniteError
from vqlab.training.logging import read_metrics
from vqlab.training.tasks import tokenizer

TINY = str(Path(__file__).parents[2] / "configs" / "tiny.yaml")
# deferred: pretrain for steps 0-29, k-means init and VQ (EMA) from step 30
BASE = ["train.strategy=deferred", "train.checkpoint_every=20", "train.log_every=5"]


class PoisonedBatches(nn.Module):
    """The model, fed a batch whose first row is NaN at the given steps (as bad data would)."""

    def __init__(self, model: nn.Module, steps: set[int]) -> None:
        super().__init__()
        self.model, self.steps, self.calls = model, steps, 0

    def forward(self, x: torch.Tensor, *, quantize: bool):
        if self.calls in self.steps:
            x = x.clone()
            x[0] = float("nan")
        self.calls += 1
        return self.model(x, quantize=quantize)


def poison(monkeypatch, steps: set[int]) -> None:
    # the tokenizer task wraps its model for DDP: the poisoned batches go in there
    monkeypatch.setattr(tokenizer, "wrap", lambda model, d, **kw: PoisonedBatches(model, steps))


def test_nan_batch_stops_naming_step_phase_and_tensor_and_keeps_the_checkpoint(
    tmp_path, monkeypatch
):
    poison(monkeypatch, {45})
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as info:
        engine.train(load_config(TINY, BASE), run, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("non-finite loss term 'recon_loss' at step 45 (phase vq)")
    assert f"last good checkpoint is step 40 in {run / 'checkpoint'}" in message
    # the checkpoint on disk is the good one of step 40, not the bad state of step 45
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 40 and not state["finished"]
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point())
    assert not (run / "summary.json").exists()
    assert max(r["step"] for r in read_metrics(run)) == 40


def test_skip_leaves_weights_and_ema_state_untouched_and_counts(tmp_path, monkeypatch):
    bad = {12, 33, 47}  # one in the plain-autoencoder phase, two with the EMA codebook
    poison(monkeypatch, bad)
    states = {}
    real_step = engine._step

    def watched_step(run, step):
        if step in bad:
            states[step] = _state(run)
        losses = real_step(run, step)
        if step in bad:
            assert _equal(states[step], _state(run)), f"step {step} changed the state"
        return losses

    monkeypatch.setattr(engine, "_step", watched_step)
    config = load_config(TINY, [*BASE, "train.on_nonfinite=skip"])
    summary = engine.train(config, tmp_path / "s", progress=False)
    assert summary["nonfinite_skipped"] == 3
    assert summary["perplexity"] > 1  # the run went on and trained a codebook
    rows = {r["step"]: r for r in read_metrics(tmp_path / "s") if r["phase"] != "init"}
    assert rows[10]["nonfinite_skipped"] == 0 and rows[35]["nonfinite_skipped"] == 2
    assert rows[59]["nonfinite_skipped"] == 3


def _state(run) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.clone() for k, v in run.task.model.state_dict().items()}
    for i, s in enumerate(run.task.optimizers["model"].state.values()):
        out.update({f"opt.{i}.{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)})
    return out


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_huge_learning_rate_stops_with_one_line_and_exit_code_1(tmp_path, capsys):
    argv = ["train", "--config", TINY, "--set", "train.lr=1e12", "--out", str(tmp_path / "r")]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.match(r"vqlab: error: non-finite .+ at step \d+ \(phase (pretrain|vq)\)", err[0])


def test_skipping_changes_nothing_but_the_bad_steps(tmp_path, monkeypatch):
    # known answers instead of a range: with no bad batch, skip mode is the plain run bit for
    # bit; with bad batches, the run is that plain run up to the first bad step (12)
    plain = engine.train(load_config(TINY, BASE), tmp_path / "plain", progress=False)
    clean = engine.train(
        load_config(TINY, [*BASE, "train.on_nonfinite=skip"]), tmp_path / "clean", progress=False
    )
    plain.pop("seconds"), clean.pop("seconds")
    assert clean == plain
    poison(monkeypatch, {12, 33, 47})
    config = load_config(TINY, [*BASE, "train.on_nonfinite=skip"])
    skipped = engine.train(config, tmp_path / "skipped", progress=False)
    assert skipped["nonfinite_skipped"] == 3
    before = [r for r in read_metrics(tmp_path / "clean") if r["step"] < 12]
    assert before and [r for r in read_metrics(tmp_path / "skipped") if r["step"] < 12] == before
    assert skipped["perplexity"] != clean["perplexity"]  # the three skipped updates mattered
