"""The "What changed and why" section: before/after pairing by hand, and the plot it sits by."""

from vqlab.reports.changes import before_after, changes_section, read_before
from vqlab.reports.plots import plot_per_scale_over_training
from vqlab.reports.results import write_results


def test_before_after_pairs_by_key_and_averages_seeds():
    before = [
        {"tokenizer": "standard", "seed": 0, "g_fd": 10.0, "cc": 0.2},
        {"tokenizer": "standard", "seed": 1, "g_fd": 12.0, "cc": 0.3},
        {"tokenizer": "gone", "seed": 0, "g_fd": 5.0},
    ]
    after = [
        {"tokenizer": "standard", "seed": 0, "g_fd": 8.0, "cc": 0.5},
        {"tokenizer": "standard", "seed": 1, "g_fd": 9.0, "cc": 0.7, "status": "ok"},
        {"tokenizer": "standard", "seed": 2, "g_fd": 1000.0, "status": "failed"},  # left out
        {"tokenizer": "new", "seed": 0, "g_fd": float("nan"), "cc": 0.1},  # nan left out
    ]
    rows = before_after(before, after, lambda r: r["tokenizer"], ["g_fd", "cc"])
    assert rows == [
        {"compared": "gone", "g_fd": "5 -> n/a", "cc": "n/a -> n/a"},
        {"compared": "new", "g_fd": "n/a -> n/a", "cc": "n/a -> 0.1"},
        {"compared": "standard", "g_fd": "11 -> 8.5", "cc": "0.25 -> 0.6"},
    ]


def test_changes_section_and_read_before(tmp_path):
    assert read_before(tmp_path) is None
    (tmp_path / "before").mkdir()
    write_results(tmp_path / "before" / "results.csv", [{"tokenizer": "a", "g_fd": 2.5}])
    assert read_before(tmp_path) == [{"tokenizer": "a", "g_fd": 2.5}]
    changes = [{"setting": "x", "before": "1", "after": "2", "why": "because"}]
    lines = changes_section(changes, [("caption:", [{"compared": "a", "g_fd": "2.5 -> 2"}]),
                                      ("empty:", [])])  # fmt: skip
    text = "\n".join(lines)
    assert lines[0] == "## What changed and why"
    assert "| x | 1 | 2 | because |" in text and "| a | 2.5 -> 2 |" in text
    assert "caption:" in text and "empty:" not in text


def test_plot_per_scale_over_training_writes_a_png(tmp_path):
    curves = {
        "standard": [{"step": s, "scale": p, "perplexity": 1.0 + s * p} for s in (0, 50)
                     for p in (1, 2)],
        "deferred": [],
    }  # fmt: skip
    out = plot_per_scale_over_training(curves, "perplexity", tmp_path / "c.png", title="t")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
