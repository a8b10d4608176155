"""The engine/task split changes no number: summaries recorded before the split, re-trained.

``engine_reference.json`` holds the ``summary.json`` (without ``seconds``) of a synthetic run
and of a tiny conv run per strategy, written by the single-loop trainer before the split into
an engine and tasks (``VQLAB_RECORD=1 pytest tests/training/test_engine_reference.py``
rewrites it, which only a change meant to alter the numbers may do). The same machine type,
torch build and thread count (one, see conftest.py) reproduce them to float rounding.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqlab import load_config, train

REFERENCE = Path(__file__).with_name("engine_reference.json")
SYNTHETIC = [
    "data.samples_per_peak=200",
    "data.test_samples_per_peak=50",
    "model.hidden=32",
    "vq.codebook_size=64",
    "vq.init_samples=2000",
    "vq.kmeans_iters=10",
    "train.steps=120",
    "train.pretrain_steps=60",
    "train.eval_every=60",
    "train.log_every=30",
]
CONV = [
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


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def _summaries(tmp_path: Path) -> dict[str, dict]:
    folder = _images(tmp_path / "images")
    runs = {f"synthetic-{s}": [*SYNTHETIC, f"train.strategy={s}"] for s in ("standard", "deferred")}
    runs.update(
        {
            f"conv-{s}": [*CONV, f"data.path={folder}", f"train.strategy={s}"]
            for s in ("standard", "deferred")
        }
    )
    out = {}
    for name, sets in runs.items():
        summary = train(load_config(None, sets), tmp_path / name, progress=False)
        out[name] = {k: v for k, v in summary.items() if k != "seconds"}
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
    return a == b


def test_summaries_equal_those_before_the_engine_split(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    got = _summaries(tmp_path)
    if os.environ.get("VQLAB_RECORD"):
        REFERENCE.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    want = json.loads(REFERENCE.read_text())
    assert set(got) == set(want)
    for name in want:
        assert set(got[name]) == set(want[name]), name
        diff = {k: (got[name][k], v) for k, v in want[name].items() if not _close(got[name][k], v)}
        assert not diff, f"{name}: {diff}"
