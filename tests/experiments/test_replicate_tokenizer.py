"""vqlab replicate tokenizer and generation at toy size, and their papers'-scale presets."""

import json

import numpy as np
import pytest
from image_fixtures import image_folder

from vqlab.experiments import replications, tokenizer
from vqlab.reports.results import read_results, write_results


@pytest.mark.slow
def test_replicate_tokenizer_at_toy_size(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    data = image_folder(tmp_path / "cifar", classes=("airplane", "automobile"))
    toy = {
        **{k: v for k, v in dict(TINY_TOKENIZER_VALUES).items()},
        "loss.perceptual": 0.1,
        "sizes": [4, 8],
        "gan_size": 4,
        "loss.gan": 0.1,
        "loss.disc_layers": 1,
        "featnet_steps": 3,
        "percepnet_steps": 3,
    }
    monkeypatch.setitem(tokenizer.TOKENIZER_PRESETS, "cpu", toy)
    out = tmp_path / "t"
    rows = replications.replicate("tokenizer", out, data=data, progress=False, command="t")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    table = read_results(out / "results.csv")
    arms = {(r["arm"], r["strategy"], r["codebook_size"]) for r in table}
    assert ("GAN", "deferred", 4) in arms and ("MSE+perceptual", "standard", 8) in arms
    assert all(r["r_fd"] >= 0 and r["floor_fd"] >= 0 for r in table)
    report = (out / "report.md").read_text()
    assert "not FID" in report and "floor" in report
    # the scoring net is never the perceptual one
    assert (
        json.loads((out / "featnet" / "featnet.json").read_text())["sha256"]
        != json.loads((out / "percepnet" / "featnet.json").read_text())["sha256"]
    )
    assert (out / "plots" / "recon_K8_MSE_perceptual.png").is_file()
    # a second call skips the finished runs and nets
    again = replications.replicate("tokenizer", out, data=data, progress=False, command="t")
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]


TINY_TOKENIZER_VALUES = [
    ("model.width", 8),
    ("model.latent_dim", 4),
    ("train.batch_size", 4),
    ("train.steps", 6),
    ("train.pretrain_steps", 3),
    ("train.eval_every", 3),
    ("train.log_every", 3),
    ("vq.init_samples", 64),
    ("vq.kmeans_iters", 2),
    ("data.test_limit", 0),
]

# the tokenizer replication's cpu preset at toy size, for the experiments built on it
TOY_TOKENIZER_PRESET = {
    **dict(TINY_TOKENIZER_VALUES),
    "loss.perceptual": 0.1,
    "sizes": [8],
    "gan_size": 8,
    "loss.gan": 0.1,
    "loss.disc_layers": 1,
    "featnet_steps": 3,
    "percepnet_steps": 3,
}


def test_replicate_generation_at_toy_size(tmp_path, monkeypatch):
    from vqlab.experiments import generation

    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    data = image_folder(tmp_path / "cifar", classes=("airplane", "automobile"))
    monkeypatch.setitem(tokenizer.TOKENIZER_PRESETS, "cpu", TOY_TOKENIZER_PRESET)
    prior = {
        "prior.depth": 1,
        "prior.width": 32,
        "prior.heads": 2,
        "train.steps": 4,
        "train.batch_size": 4,
        "train.log_every": 2,
        "train.eval_every": 2,
    }
    toy = {**generation.GENERATION_PRESETS["cpu"], "codebook_size": 8, "samples": 8}
    monkeypatch.setitem(generation.GENERATION_PRESETS, "cpu", {**toy, "prior": prior})
    out = tmp_path / "g"
    rows = replications.replicate("generation", out, data=data, progress=False, command="t")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(r["tokenizer"], r["seed"]) for r in rows} == {
        (s, str(i)) for s in ("standard", "deferred") for i in (0, 1)
    }
    for r in rows:
        assert r["g_fd"] >= 0 and r["pixel_distance"] > 0 and 0 <= r["class_consistency"] <= 1
        assert 1 <= r["sample_perplexity"] <= 8 and r["r_fd"] >= 0
    images = np.load(out / "samples" / rows[0]["run"] / "images.npz")["images"]
    assert images.shape == (8, 16, 16, 3)
    report = (out / "report.md").read_text()
    assert "not FID" in report and "±" in report and "papers (ImageNet-100)" in report
    ref = json.loads((out / "samples" / "reference.json").read_text())
    assert ref["class_consistency"] is not None and ref["g_fd"] >= 0
    assert "| real data (reference) |" in report
    # everything finished is skipped the second time, and the stage times are kept
    first = json.loads((out / "timing.json").read_text())
    assert set(first) == {"tokenizers", "tokenize", "priors", "sample and score"}
    assert "## What changed and why" in report and "| prior.label_smoothing |" in report
    assert " -> " not in report  # no earlier run kept: the settings only
    # an earlier run kept in before/ is paired with this one, seeds averaged
    (out / "before").mkdir()
    before = [{**r, "class_consistency": 0.125} for r in read_results(out / "results.csv")]
    write_results(out / "before" / "results.csv", before)
    again = replications.replicate("generation", out, data=data, progress=False, command="t")
    assert [r["g_fd"] for r in again] == [r["g_fd"] for r in rows]
    assert json.loads((out / "timing.json").read_text()) == first
    report = (out / "report.md").read_text()
    assert "deferred tokenizer's training (its run)" in report
    for strategy in ("standard", "deferred"):
        cc = np.mean([r["class_consistency"] for r in rows if r["tokenizer"] == strategy])
        assert f"0.125 -> {cc:.3g} |" in report


def test_gpu_presets_build_valid_configs_at_the_papers_scale(tmp_path):
    from vqlab.experiments import generation

    runs, base = tokenizer.tokenizer_runs(tmp_path, "gpu", tmp_path / "percepnet")
    configs = [r[2] for r in runs]
    assert {c.vq.codebook_size for c in configs} == {16384}
    assert {c.data.image_size for c in configs} == {128} and configs[0].model.downsample == 8
    assert sum(c.loss.gan > 0 for c in configs) == 2 and all(c.loss.perceptual > 0 for c in configs)
    preset = generation.GENERATION_PRESETS["gpu"]
    priors = generation.prior_runs(
        {"standard": tmp_path / "s.npz", "deferred": tmp_path / "d.npz"}, preset
    )
    assert len(priors) == 4 and {p[2].task for p in priors} == {"prior"}
    assert priors[0][2].prior.depth == 12 and priors[0][2].train.lr_schedule == "cosine"
