"""vqlab replicate beat-peer: every arm over seeds, and the target check by hand."""

import pytest
from test_image_replications import TINY_CONV, tiny_cifar  # noqa: F401 (a fixture)

from vqlab.experiments import recipe_search, replications
from vqlab.reports.results import read_results

# the cpu preset at toy size: the bridge and both refits inside an 8-step run
TOY = {**TINY_CONV, "vq.codebook_size": 8, "bridge_steps": 2, "refit_at": 5, "refit_late_at": 7}


@pytest.mark.slow
def test_beat_peer_at_toy_size(tmp_path, tiny_cifar, monkeypatch):  # noqa: F811
    pytest.importorskip("vector_quantize_pytorch")
    toy = {**TOY, "seeds": [0, 1]}
    monkeypatch.setitem(recipe_search.SEARCH_PRESETS, "cpu", toy)
    out = tmp_path / "bp"
    rows = replications.replicate("beat-peer", out, data=tiny_cifar, progress=False, command="t")
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    arms = recipe_search._arms(2, 5, 7)
    expected = {(a, s, seed) for a, (_, ss) in arms.items() for s in ss for seed in (0, 1)}
    assert {(r["arm"], r["strategy"], r["seed"]) for r in rows} == expected
    table = read_results(out / "results.csv")
    assert len(table) == len(expected)
    report = (out / "report.md").read_text()
    assert "ratio_to_best_peer" in report and "±" in report
    winners = [x for x in recipe_search.summarize(rows) if x["meets_target"]]
    assert ("No arm meets the target" in report) == (not winners)
    assert "Without any quantizer the same autoencoder" in report
    # the unquantized path of a finished run: its own decoder on z_e, cached beside it
    import torch

    from vqlab.data.dataset import load_dataset
    from vqlab.training.checkpoint import load_checkpoint
    from vqlab.training.evaluate import evaluate

    one = out / "runs" / "arm=bridge__train.strategy=deferred__seed=0"
    model, cfg, _ = load_checkpoint(one, "cpu")
    direct, _ = evaluate(model, load_dataset(cfg.data, cfg.seed), torch.device("cpu"),
                         quantize=False, probes=False)  # fmt: skip
    by_name = {r["run"]: r for r in rows}
    assert by_name[one.name]["continuous_mse"] == pytest.approx(direct["recon_mse"], rel=1e-6)
    assert by_name[one.name]["continuous_mse"] != by_name[one.name]["recon_mse"]
    assert (one / recipe_search.CONTINUOUS_FILE).exists()
    assert all(r["continuous_mse"] is not None for r in rows)
    # cut short: report on what finished, train nothing (the reference is cached already)
    cut = out / "runs" / "arm=refit__train.strategy=deferred__seed=1"
    (cut / "summary.json").unlink()
    again = replications.replicate(
        "beat-peer", out, data=tiny_cifar, progress=False, command="t", report_only=True
    )
    assert not (cut / "summary.json").exists()
    assert [r["status"] for r in again].count("pending (not run)") == 1
    lines = {(x["arm"], x["seeds"]) for x in recipe_search.summarize(again)}
    assert ("refit", 1) in lines and ("bridge", 2) in lines


def test_search_runs_carry_each_arm_option():
    ordered = recipe_search.search_runs("d", "cpu")
    assert [c.seed for _, _, c in ordered[:8]] == [0] * 8  # every arm at seed 0 first
    runs = {n: c for n, _, c in ordered}
    assert len(runs) == 8 * 3
    by_arm = {n.split("__")[0]: c for n, c in runs.items()}
    assert by_arm["arm=bridge"].train.bridge_steps == 100
    assert by_arm["arm=refit"].train.refit_steps() == (375,)
    assert by_arm["arm=refit_late"].train.refit_steps() == (450,)
    assert by_arm["arm=refit_restart"].vq.dead_code_threshold == 2.0
    assert by_arm["arm=peer_restart"].vq.impl == "vector_quantize_pytorch"
    assert {c.vq.codebook_size for c in runs.values()} == {16384}
    assert {c.data.test_limit for c in runs.values()} == {0}  # the whole test set
    assert {(c.train.steps, c.train.pretrain_steps) for c in runs.values()} == {(500, 250)}
    with pytest.raises(ValueError, match="unknown arm"):
        recipe_search.search_runs("d", "cpu", ["nope"])


def test_summarize_by_hand():
    def row(arm, strategy, mse, usage, seed=0):
        return {"arm": arm, "strategy": strategy, "recon_mse": mse, "usage": usage, "seed": seed}

    rows = [
        row("peer_restart", "deferred", 0.10, 1.0), row("peer_restart", "deferred", 0.12, 1.0, 1),
        row("peer_restart", "standard", 0.20, 1.0),
        row("bridge", "deferred", 0.09, 0.995), row("bridge", "deferred", 0.10, 0.999, 1),
        row("refit", "deferred", 0.08, 0.98), row("refit", "deferred", 0.08, 1.0, 1),
        {"arm": "restart", "strategy": "deferred", "status": "failed"},
    ]  # fmt: skip
    lines = {(x["arm"], x["strategy"]): x for x in recipe_search.summarize(rows)}
    assert set(lines) == {("peer_restart", "deferred"), ("peer_restart", "standard"),
                          ("bridge", "deferred"), ("refit", "deferred")}  # fmt: skip
    peer = lines["peer_restart", "deferred"]
    assert peer["mse"] == pytest.approx(0.11) and peer["mse_std"] == pytest.approx(0.0141421356)
    bridge = lines["bridge", "deferred"]
    assert bridge["ratio_to_best_peer"] == pytest.approx(0.095 / 0.11)
    # per seed: 0.09 / 0.10 and 0.10 / 0.12
    assert bridge["paired_ratio"] == pytest.approx((0.9 + 0.10 / 0.12) / 2)
    assert bridge["paired_ratio_std"] == pytest.approx(abs(0.9 - 0.10 / 0.12) / 2**0.5)
    assert lines["peer_restart", "standard"]["paired_ratio"] == pytest.approx(2.0)  # seed 0 only
    assert peer["paired_ratio"] == pytest.approx(1.0) and peer["paired_ratio_std"] == 0.0
    assert bridge["meets_target"]  # 0.864x, and usage >= 99% on both seeds
    refit = lines["refit", "deferred"]
    assert not refit["meets_target"]  # lower MSE, but one seed used only 98% of the codes
    assert not peer["meets_target"]  # a peer arm is the reference, never the winner
    assert [x["arm"] for x in recipe_search.summarize(rows)][0] == "refit"  # best MSE first


def test_continuous_reference_is_the_deferred_pretraining_carried_on(
    tmp_path,
    tiny_cifar,  # noqa: F811 (a fixture)
    monkeypatch,
):
    """Same seed, init, batches and optimizer: the reference's losses equal a deferred run's
    logged pretraining losses step for step; it never quantizes, so it goes on past the switch."""
    from vqlab.training.engine import train
    from vqlab.training.logging import read_metrics

    toy = {**TOY, "seeds": [0]}
    monkeypatch.setitem(recipe_search.SEARCH_PRESETS, "cpu", toy)
    runs = recipe_search.search_runs(tiny_cifar, "cpu", ["refit"])
    ((_, _, cfg),) = runs
    ref = recipe_search.continuous_reference(cfg)
    train(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    logged = {r["step"]: r["loss"] for r in rows if r["phase"] == "pretrain"}
    assert sorted(logged) == [0, 2]  # pretrain_steps=4, log_every=2
    for step, loss in logged.items():
        assert ref["losses"][step] == pytest.approx(loss, rel=1e-6)
    assert sorted(ref["losses"]) == [0, 2, 4, 6, 7]  # it carries on, unquantized, to the end
    assert ref["recon_mse"] > 0 and ref["steps"] == 8
    assert recipe_search.continuous_reference(cfg)["losses"] == ref["losses"]  # deterministic
    rows = recipe_search.reference_rows(runs, tmp_path / "out")
    assert rows[0]["recon_mse"] == ref["recon_mse"]
    assert (tmp_path / "out" / "autoencoder" / "seed=0.json").exists()


def test_ceiling_line_says_how_much_of_the_gap_the_target_asks_to_close():
    lines = [{"arm": "peer_restart", "mse": 0.040}, {"arm": "bridge", "mse": 0.041}]
    refs = [{"recon_mse": 0.030, "steps": 500}, {"recon_mse": 0.032, "steps": 500}]
    text = recipe_search.ceiling_line(lines, refs)
    # target 0.036; the gap 0.040 - 0.031 = 0.009, of which 0.004 is 44%
    assert "0.03100 ± 0.00141" in text and "0.775x" in text and "close 44%" in text
    assert recipe_search.ceiling_line(lines, []) == ""
    # only the seeds the best peer line has
    seeded = [{"arm": "peer_restart", "mse": 0.040, "seed_list": [0]}]
    refs = [{"recon_mse": 0.030, "steps": 500, "seed": 0},
            {"recon_mse": 0.020, "steps": 500, "seed": 1}]  # fmt: skip
    assert "0.03000 ± 0.00000" in recipe_search.ceiling_line(seeded, refs)
    below = recipe_search.ceiling_line(lines, [{"recon_mse": 0.0405, "steps": 500}])
    assert "below the autoencoder" in below
