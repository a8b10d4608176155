"""End-to-end runs of the training loop on small synthetic data (CPU, seconds)."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vqlab import load_config, train
from vqlab.data.dataset import load_dataset
from vqlab.models.registry import build_model
from vqlab.quantizers.vq import VectorQuantizer
from vqlab.training.checkpoint import load_checkpoint
from vqlab.training.feed import init_codebook
from vqlab.training.logging import read_metrics

ROOT = Path(__file__).parents[2]
SMALL = [
    "data.samples_per_peak=200",
    "data.test_samples_per_peak=50",
    "model.hidden=32",
    "vq.codebook_size=64",
    "vq.init_samples=2000",
    "vq.kmeans_iters=10",
    "train.steps=400",
    "train.pretrain_steps=200",
    "train.eval_every=200",
    "train.log_every=100",
]


def _spy_on_inits(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record every codebook init: the encoder outputs it clustered and the codebook it made."""
    calls: list[dict[str, torch.Tensor]] = []
    real = VectorQuantizer.init_from_data

    def spy(self, z, *args, **kwargs):
        out = real(self, z, *args, **kwargs)
        calls.append({"z": z.detach().clone(), "codebook": self.codebook.detach().clone()})
        return out

    monkeypatch.setattr(VectorQuantizer, "init_from_data", spy)
    return calls


def _init_on_a_fresh_model(config) -> None:
    """The init a standard run must make: on the untrained encoder, built as a run builds it."""
    torch.manual_seed(config.seed)
    data = load_dataset(config.data, config.seed)
    model = build_model(config.model, config.vq, data.input_shape)
    init_codebook(model, data, config, "cpu")


def test_deferred_beats_standard_on_perplexity_and_usage(tmp_path, monkeypatch):
    # The papers' effect at toy scale: 10 peaks at dim 8, K=64, equal budget of 400 steps.
    # Measured over seeds 0-4: standard perplexity 6-9 / usage 11-14%, deferred 38-53 / 78-100%.
    inits = _spy_on_inits(monkeypatch)
    std_config = load_config(None, SMALL)
    std = train(std_config, tmp_path / "std", progress=False)
    # the baseline is the standard one: k-means once, at step 0, before any training step
    rows = read_metrics(tmp_path / "std")
    init = [r for r in rows if r["phase"] == "init"]
    assert len(init) == 1 and init[0]["step"] == 0 and init[0]["init_method"] == "kmeans"
    assert "pretrain" not in {r["phase"] for r in rows}
    # ... on the untrained encoder: the same sample and codebook as k-means on the outputs of a
    # freshly built model with the same seed
    _init_on_a_fresh_model(std_config)
    assert len(inits) == 2
    assert torch.equal(inits[0]["z"], inits[1]["z"])
    assert torch.equal(inits[0]["codebook"], inits[1]["codebook"])
    dfr = train(
        load_config(None, [*SMALL, "train.strategy=deferred"]), tmp_path / "dfr", progress=False
    )
    # deferred clusters the pretrained encoder's outputs instead
    assert len(inits) == 3 and not torch.allclose(inits[2]["z"], inits[1]["z"])
    assert dfr["perplexity"] > 2 * std["perplexity"]
    assert dfr["usage"] > std["usage"] + 0.3
    assert dfr["coverage_ratio"] > std["coverage_ratio"]
    assert dfr["recon_mse"] < std["recon_mse"]
    # both spent the same budget
    assert json.loads((tmp_path / "std" / "summary.json").read_text())["steps"] == 400
    assert read_metrics(tmp_path / "dfr")[-1]["step"] == read_metrics(tmp_path / "std")[-1]["step"]


def test_deferred_inits_on_the_trained_encoder_at_the_switch(tmp_path):
    train(load_config(None, [*SMALL, "train.strategy=deferred"]), tmp_path / "d", progress=False)
    rows = read_metrics(tmp_path / "d")
    init = [r for r in rows if r["phase"] == "init"]
    assert len(init) == 1 and init[0]["step"] == 200 and init[0]["init_samples"] == 2000
    assert {r["phase"] for r in rows if r["step"] < 200} == {"pretrain"}
    assert all("commitment" not in r for r in rows if r["phase"] == "pretrain")
    assert all("commitment" in r for r in rows if r["phase"] == "vq")
    pre_eval = [r for r in rows if r.get("eval") and r["phase"] == "pretrain"]
    assert pre_eval and "perplexity" not in pre_eval[0]  # no codebook yet, so no usage metrics


def test_seeded_cpu_runs_are_bitwise_reproducible(tmp_path):
    cfg = load_config(None, [*SMALL, "train.steps=120", "train.pretrain_steps=60"])
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    wa = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")


def test_checkpoint_roundtrip_reproduces_codes(tmp_path):
    cfg = load_config(None, [*SMALL, "train.steps=60", "train.pretrain_steps=30"])
    train(cfg, tmp_path / "r", progress=False)
    model, loaded, shape = load_checkpoint(tmp_path / "r")
    assert loaded == cfg and shape == (8,)
    assert bool(model.quantizer.initialized)
    x = torch.randn(5, 8)
    again, _, _ = load_checkpoint(tmp_path / "r" / "checkpoint")
    assert torch.equal(model(x).vq.indices, again(x).vq.indices)


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python snippet"
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    # what the README's commands before the Tokenizer snippet make: a trained image tokenizer
    # in runs/tok (here a tiny one, on a folder of 32x32 images)
    from image_fixtures import TINY_TOKENIZER, image_folder

    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "images", size=32, per_class=4)
    train(load_config(None, [*TINY_TOKENIZER, f"data.path={folder}"]), "runs/tok", progress=False)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "readme-tiny" / "summary.json").is_file()
    assert (tmp_path / "runs" / "tok-pretrained" / "model.safetensors").is_file()


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    from safetensors.torch import save_file

    from vqlab.training.checkpoint import CheckpointError

    cfg = load_config(None, [*SMALL, "train.steps=20", "train.pretrain_steps=10"])
    train(cfg, tmp_path / "r", progress=False)
    path = tmp_path / "r" / "checkpoint" / "model.safetensors"
    state = load_file(str(path))
    state["quantizer.codebook"][0, 0] = float("nan")
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="non-finite values in quantizer.codebook"):
        load_checkpoint(tmp_path / "r")
