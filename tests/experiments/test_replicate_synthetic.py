"""The synthetic replication end to end, at toy size (the demo itself runs the real preset)."""

from pathlib import Path

import pytest

from vqlab.experiments import replications, synthetic
from vqlab.reports.results import read_results


@pytest.mark.slow
def test_replicate_synthetic_writes_report_table_and_plots(tmp_path, monkeypatch):
    monkeypatch.setitem(
        synthetic.PRESETS,
        "cpu",
        {"train.steps": 80, "train.pretrain_steps": 40, "sizes": [8, 16]},
    )
    small = {
        "data.samples_per_peak": 60,
        "vq.init_samples": 600,
        "vq.kmeans_iters": 5,
        "model.hidden": 16,
        "train.eval_every": 40,
    }
    monkeypatch.setattr(synthetic, "SYNTHETIC_BASE", {**synthetic.SYNTHETIC_BASE, **small})
    out = tmp_path / "syn"
    rows = replications.replicate("synthetic", out, progress=False, command="test")
    assert len(rows) == 2 * 2 * 2  # dims x sizes x strategies
    table = read_results(out / "results.csv")
    assert {r["status"] for r in table} == {"ok"}
    assert {(r["data.dim"], r["strategy"], r["codebook_size"]) for r in table} == {
        (d, s, k) for d in (8, 2) for s in ("standard", "deferred") for k in (8, 16)
    }
    # the papers' effect, read back from the table: at the largest K deferred uses more codes
    for dim in (8, 2):
        at = {r["strategy"]: r for r in table if r["data.dim"] == dim and r["codebook_size"] == 16}
        assert at["deferred"]["perplexity"] > at["standard"]["perplexity"], dim
        assert at["deferred"]["usage"] > at["standard"]["usage"], dim
    report = (out / "report.md").read_text()
    for name in (
        "tokens_dim8_K16.png",
        "tokens_dim2_K16.png",
        "vs_codebook_size.png",
        "spread_over_training_dim8_K16.png",
    ):
        assert (out / "plots" / name).is_file() and f"plots/{name}" in report
    assert "dim 8, K=16: standard used" in report and "command: `test`" in report
    # a second call skips the finished runs
    again = replications.replicate("synthetic", out, progress=False, command="test")
    assert {r["status"] for r in again} == {"skipped (finished)"}
    assert Path(out / "report.md").is_file()
