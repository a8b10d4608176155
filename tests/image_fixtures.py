"""Tiny labelled image folders and tokenizer runs for the tests of the generation pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_TOKENIZER = [
    "data.name=image_folder",
    "model.kind=conv",
    "model.width=8",
    "model.latent_dim=4",
    "vq.codebook_size=8",
    "vq.init_samples=64",
    "vq.kmeans_iters=2",
    "train.batch_size=4",
    "train.steps=8",
    "train.pretrain_steps=4",
    "train.eval_every=4",
    "train.log_every=2",
]


def image_folder(
    root: Path,
    *,
    size: int = 16,
    per_class: int = 6,
    seed: int = 0,
    classes: tuple[str, str] = ("a", "b"),
) -> Path:
    """train/ and test/ x two classes, dark and bright, x ``per_class`` noisy RGB PNGs
    (``classes=("airplane", "automobile")`` makes it read as CIFAR-10)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls, level in zip(classes, (60, 190)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = np.clip(rng.normal(level, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def crash_and_resume(monkeypatch, config, tmp_path: Path, crash_at: int) -> tuple[dict, dict]:
    """Train ``config`` whole, and again with a crash at step ``crash_at`` then ``resume``;
    returns both summaries without ``seconds`` (the metrics files are compared too)."""
    import pytest

    from vqlab.training import engine
    from vqlab.training.logging import read_metrics

    whole = engine.train(config, tmp_path / "whole", progress=False)
    real = engine._step

    def dying(run, step):
        if step == crash_at:
            raise RuntimeError("simulated crash")
        return real(run, step)

    monkeypatch.setattr(engine, "_step", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        engine.train(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(engine, "_step", real)
    again = engine.resume(tmp_path / "cut", progress=False)
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "whole")
    whole.pop("seconds"), again.pop("seconds")
    return whole, again


def tokenizer_and_tokens(folder: Path, tmp_path: Path, extra: tuple[str, ...] = ()) -> Path:
    """Train a tiny tokenizer on ``folder`` into ``tmp_path/tok`` and write its token file with
    ``vqlab tokenize`` (exit code checked); returns the token file."""
    from vqlab import load_config, train
    from vqlab.cli import main

    sets = [*TINY_TOKENIZER, f"data.path={folder}", *extra]
    train(load_config(None, sets), tmp_path / "tok", progress=False)
    tokens = tmp_path / "tokens.npz"
    argv = ["tokenize", str(tmp_path / "tok"), "--data", str(folder), "--out", str(tokens)]
    assert main([*argv, "--quiet"]) == 0
    return tokens
