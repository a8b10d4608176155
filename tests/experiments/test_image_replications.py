"""cifar10, capacity and init replications end to end at toy size (no shared data needed)."""

import numpy as np
import pytest
from PIL import Image

from vqlab.experiments import capacity, cifar, init_study, replications
from vqlab.experiments.results import read_results

TINY_CONV = {
    "model.width": 8,
    "model.latent_dim": 4,
    "train.batch_size": 4,
    "train.steps": 8,
    "train.pretrain_steps": 4,
    "train.lr": 1e-3,
    "train.eval_every": 4,
    "train.log_every": 2,
    "vq.init_samples": 64,
    "vq.kmeans_iters": 2,
    "data.test_limit": 0,
}


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A CIFAR-like image folder: train/test x 2 classes x 6 images of 8x8."""
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar"
    for split in ("train", "test"):
        for cls in ("airplane", "automobile"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.png")
    monkeypatch.setitem(cifar.CIFAR_PRESETS, "cpu", {**TINY_CONV, "sizes": [4, 8]})
    return root


def test_replicate_cifar10(tmp_path, tiny_cifar):
    out = tmp_path / "c"
    rows = replications.replicate("cifar10", out, data=tiny_cifar, progress=False, command="t")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    table = read_results(out / "results.csv")
    assert {(r["strategy"], r["codebook_size"]) for r in table} == {
        (s, k) for s in ("standard", "deferred") for k in (4, 8)
    }
    report = (out / "report.md").read_text()
    assert "K=8: perplexity" in report and "JPEG re-encoded" in report
    assert (out / "plots" / "vs_codebook_size.png").is_file()
    assert (out / "plots" / "spread_over_training_K8.png").is_file()


def test_replicate_cifar10_needs_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs --data"):
        replications.replicate("cifar10", tmp_path / "x", data=None, progress=False)


def test_replicate_capacity_and_init(tmp_path, tiny_cifar, monkeypatch):
    monkeypatch.setitem(
        capacity.PRESETS,
        "cpu",
        {
            "widths": [2, 16],
            "synthetic": {"train.steps": 40, "train.pretrain_steps": 20},
            "conv_widths": [4, 8],
            "conv": {
                "train.steps": 8,
                "train.pretrain_steps": 4,
                "train.batch_size": 4,
                "vq.codebook_size": 8,
            },
        },
    )
    small = {"data.samples_per_peak": 60, "vq.init_samples": 600, "vq.kmeans_iters": 3}
    monkeypatch.setattr(capacity, "SYNTHETIC_BASE", {**capacity.SYNTHETIC_BASE, **small})
    monkeypatch.setitem(cifar.CIFAR_PRESETS, "cpu", {**TINY_CONV, "sizes": [8]})
    rows = replications.replicate("capacity", tmp_path / "cap", data=tiny_cifar, progress=False)
    assert len(rows) == 2 * 2 + 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert all(0 <= r["probe_accuracy"] <= 1 for r in rows)
    assert (tmp_path / "cap" / "plots" / "synthetic_vs_width.png").is_file()
    assert (tmp_path / "cap" / "plots" / "cifar_vs_width.png").is_file()

    monkeypatch.setitem(init_study.STEPS, "cpu", (40, 20))
    monkeypatch.setattr(init_study, "SYNTHETIC_BASE", {**init_study.SYNTHETIC_BASE, **small})
    rows = replications.replicate("init", tmp_path / "init", progress=False)
    assert len(rows) == len(init_study.ARMS) and all(r["status"] == "ok" for r in rows)
    assert {(r["strategy"], r["init"]) for r in rows} == set(init_study.ARMS)
    assert "random_uniform" in (tmp_path / "init" / "report.md").read_text()
