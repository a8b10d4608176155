"""task=prior through the engine, vqlab sample, and the whole pipeline at toy size:
images -> tokenizer -> tokens -> MaskGIT prior -> samples -> images."""

import json

import numpy as np
import pytest
from image_fixtures import crash_and_resume, image_folder, tokenizer_and_tokens

from vqlab import load_config, train
from vqlab.cli import main
from vqlab.priors.tokens import save_tokens
from vqlab.training.logging import read_metrics

PRIOR = [
    "task=prior",
    "data.name=tokens",
    "prior.depth=2",
    "prior.width=64",
    "prior.heads=4",
    "prior.dropout=0.0",
    "prior.class_dropout=0.1",
    "prior.label_smoothing=0.0",  # smoothing leaves ~9% of the mass on wrong codes to sample
    "train.batch_size=32",
    "train.lr=3e-3",
    "train.warmup_steps=20",
    "train.lr_schedule=cosine",
    "train.log_every=50",
    "train.eval_every=100",
]


def grids_file(path, per_class=64):
    """4 classes, each one fixed 4x4 grid of ids over K=16 (every position differs by class)."""
    rng = np.random.default_rng(0)
    grids = np.stack([rng.permutation(16)[:16] for _ in range(4)])  # (4, 16)
    grids = np.stack([(grids[0] + c) % 16 for c in range(4)])  # distinct ids at every position
    labels = np.repeat(np.arange(4), per_class)
    ids = grids[labels]
    save_tokens(
        path,
        train_ids=ids,
        test_ids=ids[::8],
        codebook_size=16,
        scales=[4],
        train_labels=labels,
        test_labels=labels[::8],
    )
    return grids


def test_a_prior_learns_fixed_grids_and_samples_follow_their_class(tmp_path):
    grids = grids_file(tmp_path / "tokens.npz")
    cfg = load_config(None, [*PRIOR, f"data.path={tmp_path / 'tokens.npz'}", "train.steps=300"])
    summary = train(cfg, tmp_path / "prior", progress=False)
    assert summary["task"] == "prior" and summary["val_masked_accuracy"] > 0.95
    assert summary["val_perplexity"] < 1.5  # of 16 codes
    rows = read_metrics(tmp_path / "prior")
    assert {r["phase"] for r in rows} == {"train"} and "masked_accuracy" in rows[0]
    out = tmp_path / "s"
    assert main(["sample", str(tmp_path / "prior"), "--n", "40", "--out", str(out), "--quiet"]) == 0
    s = np.load(out / "samples.npz")
    assert s["ids"].shape == (40, 16) and s["ids"].dtype == np.int32
    assert list(s["labels"][:5]) == [0, 1, 2, 3, 0]  # uniform: classes in turn
    exact = (s["ids"] == grids[s["labels"]]).all(axis=1)
    assert exact.mean() >= 0.95
    info = json.loads((out / "sampling.json").read_text())
    assert (
        info["steps"] == 8
        and info["choice_temperature"] == 4.5
        and info["files"] == ["samples.npz"]
    )


def test_a_resumed_prior_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    grids_file(tmp_path / "tokens.npz")
    sets = [*PRIOR, f"data.path={tmp_path / 'tokens.npz'}", "train.steps=40"]
    sets += ["train.checkpoint_every=20", "train.log_every=5"]
    whole, again = crash_and_resume(monkeypatch, load_config(None, sets), tmp_path, 30)
    assert again == whole


def test_the_whole_pipeline_decodes_samples_to_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "images")
    tokens = tokenizer_and_tokens(folder, tmp_path)
    cfg = load_config(None, [*PRIOR, f"data.path={tokens}", "train.steps=10", "train.batch_size=4"])
    train(cfg, tmp_path / "prior", progress=False)
    out = tmp_path / "s"
    argv = ["sample", str(tmp_path / "prior"), "--n", "6", "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "sample.steps=4", "--set", "sample.cfg=1.5"]) == 0
    images = np.load(out / "images.npz")["images"]
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    assert (out / "grid.png").is_file() and (out / "sample_000.png").is_file()
    info = json.loads((out / "sampling.json").read_text())
    assert info["steps"] == 4 and info["cfg"] == 1.5
    # bad input: one line, exit code 2
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "tok"), "--n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "not a prior" in capsys.readouterr().err
    fresh = [*argv[:4], "--out", str(tmp_path / "s2"), "--quiet"]  # s holds samples now
    assert main([*fresh, "--labels", "7"]) == 2
    assert "classes are 0..1" in capsys.readouterr().err
    assert main([*fresh, "--set", "train.steps=3"]) == 2
    assert "only sample.*" in capsys.readouterr().err
    assert main([*argv, "--labels", "7"]) == 2  # the same folder again: refused first
    assert "is not empty; pass --overwrite" in capsys.readouterr().err


def test_prior_and_tokens_go_together():
    with pytest.raises(ValueError, match="needs data.name=tokens"):
        load_config(None, ["task=prior"])
    with pytest.raises(ValueError, match="set task=prior"):
        load_config(None, ["data.name=tokens", "data.path=x.npz"])
