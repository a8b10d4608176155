"""The collapse verdict in words, on a collapsed and a healthy run's metrics and on real runs."""

import pytest
import torch

from vqlab.diagnostics.verdict import THRESHOLDS, collapse_verdict, data_reference

HEALTHY = {
    "usage": 0.99,
    "perplexity": 900.0,
    "codebook_size": 1024,
    "coverage_ratio": 1.0,
    "probe_accuracy": 0.42,
    "embedding_effective_rank": 40.0,
}
REFERENCE = {"data_probe_accuracy": 0.40, "data_effective_rank": 100.0}


def test_healthy_run_has_neither_collapse():
    v = collapse_verdict(HEALTHY, dim=64, reference=REFERENCE)
    assert v["tokens_collapse"] is False and v["embeddings_collapse"] is False
    assert v["verdict"][0].startswith("**Tokens collapse: absent**")
    assert "Thresholds" in v["verdict"][-1]


def test_each_token_rule_alone_finds_collapse():
    # the committed standard CIFAR-10 run at K=4096 (results/cifar10-cpu): usage 0.33
    for key, value in (("usage", 0.3), ("perplexity", 200.0), ("coverage_ratio", 0.4)):
        v = collapse_verdict({**HEALTHY, key: value}, dim=64, reference=REFERENCE)
        assert v["tokens_collapse"] is True, key
        assert "present" in v["verdict"][0]
    # exactly at a threshold is not collapse
    at = {**HEALTHY, "usage": THRESHOLDS["usage"]}
    assert collapse_verdict(at, dim=64)["tokens_collapse"] is False


def test_embeddings_collapse_by_probe_or_rank():
    low_probe = collapse_verdict({**HEALTHY, "probe_accuracy": 0.2}, dim=64, reference=REFERENCE)
    assert (
        low_probe["embeddings_collapse"] is True
        and "probe accuracy 20.0%" in low_probe["verdict"][1]
    )
    # rank 10 of at most min(D=64, 100) = 64: under half
    low_rank = collapse_verdict(
        {**HEALTHY, "embedding_effective_rank": 10.0}, dim=64, reference=REFERENCE
    )
    assert low_rank["embeddings_collapse"] is True and "of at most 64.0" in low_rank["verdict"][1]
    # the cap is the inputs' own rank when that is below D
    small = collapse_verdict(
        {**HEALTHY, "embedding_effective_rank": 3.0},
        dim=64,
        reference={"data_effective_rank": 5.0},
    )
    assert small["embeddings_collapse"] is False


def test_missing_metrics_are_undecided_not_guessed():
    v = collapse_verdict({"recon_mse": 0.1}, dim=8)
    assert v["tokens_collapse"] is None and v["embeddings_collapse"] is None
    assert "not decided" in v["verdict"][0] and "not decided" in v["verdict"][1]


def test_data_reference_on_two_colours_has_a_perfect_probe():
    x = torch.cat([torch.zeros(20, 3, 4, 4), torch.ones(20, 3, 4, 4)]) + 0.01 * torch.randn(
        40, 3, 4, 4, generator=torch.Generator().manual_seed(0)
    )
    y = torch.tensor([0] * 20 + [1] * 20)
    ref = data_reference(x, y)
    assert ref["data_probe_accuracy"] == 1.0
    assert 1.0 <= ref["data_effective_rank"] <= 48
    assert "data_probe_accuracy" not in data_reference(x, None)


@pytest.mark.slow
def test_diagnose_reports_open_with_the_verdict_on_a_collapsed_and_a_healthy_run(tmp_path):
    # the papers' effect at toy scale (tests/training/test_loop.py): standard quantization
    # uses 11-14% of K=64 codes, deferred 78-100%
    from vqlab import load_config, train
    from vqlab.runs.diagnose import diagnose_run

    small = [
        "data.samples_per_peak=200",
        "data.test_samples_per_peak=50",
        "model.hidden=32",
        "vq.codebook_size=64",
        "vq.init_samples=2000",
        "vq.kmeans_iters=10",
        "train.steps=400",
        "train.pretrain_steps=200",
        "train.eval_every=400",
        "train.log_every=100",
    ]
    found = {}
    for strategy in ("standard", "deferred"):
        run = tmp_path / strategy
        train(load_config(None, [*small, f"train.strategy={strategy}"]), run, progress=False)
        metrics = diagnose_run(run, tmp_path / f"{strategy}-diag")
        found[strategy] = metrics["tokens_collapse"]
        first = (tmp_path / f"{strategy}-diag" / "report.md").read_text().splitlines()[2]
        word = "present" if strategy == "standard" else "absent"
        assert first.startswith(f"**Tokens collapse: {word}**"), first
    assert found == {"standard": True, "deferred": False}
