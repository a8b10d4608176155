"""cifar10, capacity and init replications end to end at toy size (no shared data needed)."""

import shutil

import numpy as np
import pytest
from PIL import Image

from vqlab.experiments import capacity, cifar, init_study, replications
from vqlab.experiments.protocol import Job
from vqlab.experiments.sweep import PENDING
from vqlab.reports.results import read_results

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
    # a sweep cut short: --report-only trains nothing and lists the missing run as pending
    cut = out / "runs" / "vq.codebook_size=8__train.strategy=deferred"
    (cut / "summary.json").unlink()
    again = replications.replicate(
        "cifar10", out, data=tiny_cifar, progress=False, command="t", report_only=True
    )
    assert not (cut / "summary.json").exists()  # nothing was trained
    status = {r["run"]: r["status"] for r in again}
    assert status[cut.name] == PENDING
    assert sum(v.startswith("skipped") for v in status.values()) == 3
    line = "K=8: no comparison yet (standard: skipped (finished); deferred: pending (not run))"
    assert line in (out / "report.md").read_text()
    assert "| pending (not run) | deferred | 8 |" in (out / "report.md").read_text()
    # with every K=8 run gone, the training plot shows the largest K that has runs
    shutil.rmtree(out / "runs" / "vq.codebook_size=8__train.strategy=standard")
    shutil.rmtree(cut)
    replications.replicate(
        "cifar10", out, data=tiny_cifar, progress=False, command="t", report_only=True
    )
    assert "plots/spread_over_training_K4.png" in (out / "report.md").read_text()
    assert (out / "plots" / "spread_over_training_K4.png").is_file()
    assert {r["status"] for r in read_results(out / "results.csv")} >= {PENDING}


def test_report_only_refuses_experiments_with_stages(tmp_path):
    with pytest.raises(ValueError, match="--report-only works for the one-sweep experiments"):
        replications.replicate("generation", tmp_path, data="d", report_only=True)


def test_replicate_cifar10_needs_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs --data"):
        replications.replicate("cifar10", tmp_path / "x", data=None, progress=False)


@pytest.mark.slow
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
    # known answers on the 10-peak mixture (peaks 10 apart, std 0.5): with 16 hidden units the
    # embeddings keep every peak apart (probe 1), and with 2 they merge some (the paper's point)
    probe = {(str(r["model.hidden"]), r["strategy"]): r["probe_accuracy"] for r in rows
             if r.get("model.hidden") not in (None, "")}  # fmt: skip
    for strategy in ("standard", "deferred"):
        assert probe["16", strategy] == 1.0
        assert probe["2", strategy] < 0.9
    assert (tmp_path / "cap" / "plots" / "synthetic_vs_width.png").is_file()
    assert (tmp_path / "cap" / "plots" / "cifar_vs_width.png").is_file()

    monkeypatch.setitem(init_study.STEPS, "cpu", (40, 20))
    monkeypatch.setattr(init_study, "SYNTHETIC_BASE", {**init_study.SYNTHETIC_BASE, **small})
    rows = replications.replicate("init", tmp_path / "init", progress=False)
    assert len(rows) == len(init_study.ARMS) and all(r["status"] == "ok" for r in rows)
    assert {(r["strategy"], r["init"]) for r in rows} == set(init_study.ARMS)
    assert "random_uniform" in (tmp_path / "init" / "report.md").read_text()
    assert (tmp_path / "init" / "plots" / "init_gaussian_mixture.png").is_file()


@pytest.mark.slow
def test_replicate_recipes(tmp_path, tiny_cifar, monkeypatch):
    """Every arm (the peer's too, when installed) runs in one sweep, lands in results.csv with
    its recipe name, and the report ranks the arms that finished at every size."""
    from vqlab.experiments import recipes

    pytest.importorskip("vector_quantize_pytorch")
    monkeypatch.setitem(recipes.PRESETS, "cpu", {**TINY_CONV, "sizes": [8, 16]})
    out = tmp_path / "rec"
    # FSQ's recommended levels start at K=256: its arms have their own test below
    arms = [a for a in recipes.ARMS if a not in ("fsq", "lfq")]
    rows = replications.replicate(
        "recipes", out, data=tiny_cifar, progress=False, command="t", arms=arms
    )
    expected = {(a, s, k) for a in arms for s in recipes.ARMS[a][1] for k in (8, 16)}
    assert {(r["recipe"], r["strategy"], r["codebook_size"]) for r in rows} == expected
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    table = read_results(out / "results.csv")
    assert {r["recipe"] for r in table} == set(arms)
    report = (out / "report.md").read_text()
    ranking = recipes.rank_recipes(rows)
    assert len(ranking) == len({(a, s) for a, s, _ in expected})
    assert f"**{ranking[0][0]} ({ranking[0][1]})** is best here" in report
    assert (out / "plots" / "recipes.png").is_file()
    # cut short: the arm missing a size drops out of the ranking, listed as pending
    cut = out / "runs" / "recipe=plain__train.strategy=standard__vq.codebook_size=16"
    (cut / "summary.json").unlink()
    again = replications.replicate(
        "recipes", out, data=tiny_cifar, progress=False, arms=arms, report_only=True
    )
    assert not (cut / "summary.json").exists()
    assert [r["status"] for r in again].count(PENDING) == 1
    assert ("plain", "standard") not in {(a, s) for a, s, _ in recipes.rank_recipes(again)}
    assert len(recipes.rank_recipes(again)) == len(ranking) - 1


def test_recipes_fsq_and_lfq_arms_at_their_nominal_size(tmp_path, tiny_cifar, monkeypatch):
    """FSQ and LFQ under both schedules: ranked at the nominal K, with FSQ's real grid size
    (the product of its recommended levels) in ``codes``, and usage over that grid."""
    from vqlab.experiments import recipes

    monkeypatch.setitem(recipes.PRESETS, "cpu", {**TINY_CONV, "sizes": [256, 1024]})
    out = tmp_path / "grid"
    rows = replications.replicate(
        "recipes", out, data=tiny_cifar, progress=False, command="t", arms=["fsq", "lfq"]
    )
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    codes = {(r["recipe"], r["codebook_size"]): r["codes"] for r in rows}
    assert codes == {("fsq", 256): 240, ("fsq", 1024): 1000, ("lfq", 256): 256, ("lfq", 1024): 1024}
    for r in rows:  # 12 test images of 2x2 latents: at most 48 distinct codes
        assert 0 < r["usage"] * r["codes"] <= 48 and 1 <= r["perplexity"] <= 48
    assert len(recipes.rank_recipes(rows)) == 4


def test_rank_recipes_by_hand():
    """Mean rank of MSE over sizes; an arm missing a size is left out; failures do not rank."""
    from vqlab.experiments.recipes import rank_recipes

    rows = [
        {"recipe": "a", "strategy": "standard", "codebook_size": 4, "recon_mse": 0.3},
        {"recipe": "b", "strategy": "standard", "codebook_size": 4, "recon_mse": 0.1},
        {"recipe": "c", "strategy": "deferred", "codebook_size": 4, "recon_mse": 0.2},
        {"recipe": "a", "strategy": "standard", "codebook_size": 8, "recon_mse": 0.1},
        {"recipe": "b", "strategy": "standard", "codebook_size": 8, "recon_mse": 0.2},
        {"recipe": "c", "strategy": "deferred", "codebook_size": 8, "status": "failed"},
    ]
    # K=4: b 1, c 2, a 3; K=8: a 1, b 2 -> a 2.0, b 1.5; c lacks K=8
    assert rank_recipes(rows) == [("b", "standard", 1.5), ("a", "standard", 2.0)]


def test_replicate_recipes_refuses_unknown_arm(tmp_path):
    from vqlab.experiments.recipes import recipe_runs

    with pytest.raises(ValueError, match="unknown recipe arm"):
        recipe_runs(tmp_path, "cpu", ["plain", "magic"])


def test_cifar_wide_preset_covers_2_4_to_2_16_with_enough_init_samples():
    runs, _, sizes = cifar.cifar_runs("data", "cpu-wide")
    assert sizes == [2**p for p in range(4, 17)] and len(runs) == 2 * 13
    by_k = {c.vq.codebook_size: c for _, _, c in runs}
    assert by_k[16].vq.init_samples == 32768 and by_k[16384].vq.init_samples == 32768
    assert by_k[32768].vq.init_samples == 65536 and by_k[65536].vq.init_samples == 131072
    # equal budget: every run has the same steps and pretraining share
    assert {(c.train.steps, c.train.pretrain_steps) for _, _, c in runs} == {(1000, 500)}


def test_cifar_trend_findings_by_hand():
    def row(mse, ppl):
        return {"recon_mse": mse, "perplexity": ppl}

    by = {
        ("standard", 16): row(0.01, 10), ("deferred", 16): row(0.02, 12),
        ("standard", 8192): row(0.03, 500), ("deferred", 8192): row(0.02, 4000),
        ("standard", 65536): row(0.03, 600), ("deferred", 65536): row(0.01, 20000),
    }  # fmt: skip
    lines = cifar._trend(by, [16, 8192, 65536])
    assert lines[0].startswith("- Standard has the lower test MSE at K = 16 of the 3 sizes")
    assert "grows 1.20x for standard (500 -> 600) and 5.00x for deferred" in lines[1]
    assert cifar._trend(by, [16, 8192]) == []  # too few sizes for a trend


def test_sweep_image_runs_refuses_a_missing_peer_before_any_run(tmp_path, tiny_cifar, monkeypatch):
    from vqlab.experiments import recipes
    from vqlab.quantizers import peer

    def missing():
        raise peer.MissingDependency("vector-quantize-pytorch is not installed")

    monkeypatch.setattr(peer, "load_peer", missing)
    monkeypatch.setitem(recipes.PRESETS, "cpu", {**TINY_CONV, "sizes": [8]})
    runs = recipes.recipe_runs(tiny_cifar, "cpu", ["plain", "peer_restart"])
    with pytest.raises(peer.MissingDependency, match="not installed"):
        job = Job("recipes", tmp_path / "o", tiny_cifar, "cpu", recipes.PRESETS["cpu"])
        recipes.sweep_image_runs(runs, job)
    assert not (tmp_path / "o").exists()  # no run started


def test_every_replication_names_its_presets_and_needs_data_in_one_line(tmp_path):
    for name in ("cifar10", "tokenizer", "generation", "var", "recipes", "beat-peer"):
        with pytest.raises(FileNotFoundError, match=f"replicate {name} needs --data"):
            replications.replicate(name, tmp_path / name, data=None, progress=False)
        with pytest.raises(
            ValueError, match=rf"unknown preset 'h100' for {name}; choose one of \['cpu'"
        ):
            replications.replicate(name, tmp_path / name, data=tmp_path, preset="h100")
