"""vqlab replicate var at toy size: multi-scale tokenizers, per-scale tables, VAR priors."""

import json
import shutil

import numpy as np
import pytest
from image_fixtures import image_folder
from test_replicate_tokenizer import TOY_TOKENIZER_PRESET

from vqlab.evaluation.generation import token_usage
from vqlab.experiments import replications, tokenizer, var, var_report
from vqlab.reports.results import read_results, write_results


def _toy(monkeypatch):
    monkeypatch.setitem(tokenizer.TOKENIZER_PRESETS, "cpu", TOY_TOKENIZER_PRESET)
    prior = {
        "prior.kind": "var",
        "prior.depth": 1,
        "prior.width": 32,
        "prior.heads": 2,
        "train.steps": 4,
        "train.batch_size": 4,
        "train.log_every": 2,
        "train.eval_every": 2,
    }
    toy = {**var.VAR_PRESETS["cpu"], "codebook_size": 8, "scales": "1,2,4", "samples": 8}
    toy["init_ways"] = ["finest", "coarse_then_all"]  # two of the three, to keep it short
    # the preset's tokenizer settings at toy length (its 1500 steps took 160 s of the suite)
    short = {"train.steps": 10, "train.pretrain_steps": 5, "train.eval_every": 2}
    toy["tokenizer_set"] = {**toy["tokenizer_set"], **short, "train.checkpoint_every": 5}
    monkeypatch.setitem(var.VAR_PRESETS, "cpu", {**toy, "prior": prior})


def test_replicate_var_at_toy_size(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    data = image_folder(tmp_path / "cifar", classes=("airplane", "automobile"))
    _toy(monkeypatch)
    out = tmp_path / "v"
    rows = replications.replicate("var", out, data=data, progress=False, command="t")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(r["tokenizer"], r["seed"]) for r in rows} == {
        (s, str(i)) for s in ("standard", "deferred") for i in (0, 1)
    }
    for r in rows:
        assert r["g_fd"] >= 0 and r["pixel_distance"] > 0 and 0 <= r["class_consistency"] <= 1
        assert r["r_fd"] >= 0 and 1 <= r["sample_perplexity"] <= 8
        # per-scale perplexity of the samples, recomputed from the ids of each scale's block
        drawn = np.load(out / "samples" / r["run"] / "samples.npz")["ids"]
        for side, (a, b) in ((1, (0, 1)), (2, (1, 5)), (4, (5, 21))):
            assert r[f"sample_perplexity_p{side}"] == pytest.approx(
                token_usage(drawn[:, a:b], 8)[1]
            )
    ids = np.load(out / "samples" / rows[0]["run"] / "samples.npz")["ids"]
    assert ids.shape == (8, 1 + 4 + 16) and ids.max() < 8
    # the tokenizer table: both strategies x both init ways, per-scale columns from evaluate
    toks = read_results(out / "tokenizers.csv")
    assert {(t["strategy"], t["ms_init"]) for t in toks} == {
        (s, w) for s in ("standard", "deferred") for w in ("finest", "coarse_then_all")
    }
    for t in toks:  # the csv's per-scale columns are the evaluation's per_scale entries
        ev = json.loads((out / "tokenizers" / "runs" / t["run"] / "eval" / "eval.json").read_text())
        per = {c["scale"]: c for c in ev["per_scale"]}
        assert float(t["perplexity_p1"]) == pytest.approx(per[1]["perplexity"])
        assert float(t["usage_p4"]) == pytest.approx(per[4]["usage"])
    report = (out / "report.md").read_text()
    assert "not FID" in report and "±" in report and "papers (ImageNet-100)" in report
    ref = json.loads((out / "samples" / "reference.json").read_text())
    assert ref["class_consistency"] is not None and ref["g_fd"] >= 0
    assert "| real data (reference) |" in report
    assert "p=1" in report and "coarse_then_all" in report
    assert (out / "plots" / "per_scale.png").is_file()
    assert "Why a scale collapses" in report
    for t in toks:
        spread = json.loads(
            (out / "tokenizers" / "runs" / t["run"] / "eval" / "scale_spread.json").read_text()
        )
        assert [c["scale"] for c in spread] == [1, 2, 4]
        assert all(c["second_code"] >= c["nearest_code"] >= 0 for c in spread)
    # the per-scale perplexity over training: a plot and the settling table
    assert (out / "plots" / "per_scale_training.png").is_file()
    assert "Has the per-scale perplexity settled?" in report
    assert "over the last 20% of the run's steps" in report
    # an earlier run kept in before/: the report's "What changed and why" pairs it with this one
    (out / "before").mkdir()
    before_gen = [{**r, "g_fd": 99.0} for r in read_results(out / "results.csv")]
    write_results(out / "before" / "results.csv", before_gen)
    shutil.copy(out / "tokenizers.csv", out / "before" / "tokenizers.csv")
    # everything finished is skipped the second time
    again = replications.replicate("var", out, data=data, progress=False, command="t")
    assert [r["g_fd"] for r in again] == [r["g_fd"] for r in rows]
    report = (out / "report.md").read_text()
    assert "## What changed and why" in report and "| vq.loss_on |" in report
    for strategy in ("standard", "deferred"):
        g = np.mean([r["g_fd"] for r in rows if r["tokenizer"] == strategy])
        assert f"| {strategy} | 99 -> {g:.3g} |" in report
    p1 = next(t for t in toks if t["strategy"] == "deferred" and t["ms_init"] == "finest")
    assert f"{p1['r_fd']:.3g} -> {p1['r_fd']:.3g}" in report


def test_sample_scale_perplexity_by_hand():
    # scales (1, 2): position 0 is scale 1, positions 1..4 scale 2
    ids = np.array([[0, 1, 1, 2, 2], [1, 1, 1, 2, 2]])
    per = var.sample_scale_perplexity(ids, (1, 2), 4)
    assert np.isclose(per[0], 2.0)  # codes 0 and 1 once each
    assert np.isclose(per[1], 2.0)  # codes 1 and 2 four times each


def test_var_gpu_preset_builds_valid_configs(tmp_path):
    from vqlab.experiments.generation import prior_runs

    p = var.VAR_PRESETS["gpu"]
    runs = var.tokenizer_runs_var(tmp_path, p, tmp_path / "percepnet")
    configs = [r[2] for r in runs]
    assert len(runs) == 6 and {c.vq.kind for c in configs} == {"multiscale"}
    assert {c.vq.ms_init for c in configs} == {"finest", "coarse_then_all", "pyramid"}
    assert configs[0].vq.scale_list()[-1] == 16 and configs[0].vq.codebook_size == 16384
    priors = prior_runs({"standard": tmp_path / "s.npz", "deferred": tmp_path / "d.npz"}, p)
    assert {c[2].prior.kind for c in priors} == {"var"} and priors[0][2].prior.depth == 16


def test_tokenizer_set_reaches_the_tokenizer_configs(tmp_path):
    p = {**var.VAR_PRESETS["cpu"], "tokenizer_set": {"vq.loss_on": "final", "model.norm_groups": 8}}
    configs = [r[2] for r in var.tokenizer_runs_var(tmp_path, p, tmp_path / "percepnet")]
    assert {(c.vq.loss_on, c.model.norm_groups) for c in configs} == {("final", 8)}
    plain = {k: v for k, v in p.items() if k != "tokenizer_set"}
    configs = [r[2] for r in var.tokenizer_runs_var(tmp_path, plain, tmp_path / "percepnet")]
    assert {(c.vq.loss_on, c.model.norm_groups) for c in configs} == {("every_scale", 32)}


def test_tokenizers_train_the_priors_pair_first_and_keep_the_grid_order(tmp_path, monkeypatch):
    p = var.VAR_PRESETS["cpu"]
    trained = []

    def sweep(runs, out, **_):  # records the order; leaves a finished evaluation per run
        for name, _, _ in runs:
            trained.append(name)
            (out / var.RUNS_DIR / name / "eval").mkdir(parents=True)
            (out / var.RUNS_DIR / name / "eval" / "eval.json").write_text(json.dumps({"r_fd": 1}))
        return [{"run": name, **assignment} for name, assignment, _ in runs]

    monkeypatch.setattr(var, "_feature_nets", lambda *_: (tmp_path / "f", tmp_path / "p"))
    monkeypatch.setattr(var, "run_sweep", sweep)
    monkeypatch.setattr(var, "_spread_of_run", lambda *_: [])
    rows, _ = var._tokenizers(tmp_path, tmp_path, p, 2, False)
    grid = var.tokenizer_runs_var(tmp_path, p, tmp_path / "p")
    assert [r["run"] for r in rows] == [name for name, _, _ in grid]
    assert [r["ms_init"] for r in rows] == [a["vq.ms_init"] for _, a, _ in grid]
    first = [a for name in trained[:2] for n, a, _ in grid if n == name]
    assert {a["vq.ms_init"] for a in first} == {p["prior_init"]}
    assert {a["train.strategy"] for a in first} == {"standard", "deferred"}
    assert sorted(trained) == sorted(r["run"] for r in rows)


def test_scale_spread_by_hand():
    import torch

    from vqlab.quantizers.multiscale import MultiScaleQuantizer

    q = MultiScaleQuantizer(2, 4, scales=(1, 2), quant_resi=0.0)
    q.codebook.data.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.zeros(2, 2, 2, 2)
    z[0, 0], z[1, 1] = 1.0, 1.0  # image 0 is (1, 0) everywhere, image 1 is (0, 1)
    coarse, fine = var.scale_spread(q, z)
    # scale 1: the vectors (1, 0) and (0, 1), each a code; spread sqrt(0.5); 2nd code at 1
    assert coarse["input_spread"] == pytest.approx(0.5**0.5)
    assert coarse["nearest_code"] == pytest.approx(0.0, abs=1e-6)
    assert coarse["second_code"] == pytest.approx(1.0)
    # scale 2: the constant images are taken whole at scale 1, so every residual is 0
    assert fine["input_spread"] == pytest.approx(0.0, abs=1e-6)
    assert fine["second_code"] == pytest.approx(1.0)


def test_scale_curve_and_settling_by_hand(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    evals = [  # step, perplexity at p=1 and p=2
        (0, 1.0, 10.0), (50, 1.0, 20.0), (100, 2.0, 40.0), (150, 2.0, 50.0), (199, 2.0, 50.0),
    ]  # fmt: skip
    with open(run / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 10, "phase": "vq", "loss": 1.0}) + "\n")  # not an eval row
        for step, a, b in evals:
            per = [
                {"scale": 1, "perplexity": a, "usage": a / 8},
                {"scale": 2, "perplexity": b, "usage": b / 64},
            ]
            f.write(json.dumps({"step": step, "phase": "vq", "eval": True, "per_scale": per}))
            f.write("\n")
    curve = var_report.scale_curve(run)
    assert len(curve) == 10 and curve[0] == {
        "step": 0, "phase": "vq", "scale": 1, "perplexity": 1.0, "usage": 0.125
    }  # fmt: skip
    # last step 199, window 100: compared with the latest eval at or before step 99 (step 50)
    # (relative to that earlier value: 1 -> 2 is +100%, 20 -> 50 is +150%)
    s = var_report.settling(curve, 100)
    assert s[1] == (2.0, pytest.approx(1.0)) and s[2] == (50.0, pytest.approx(1.5))
    # window 50: from step 149 back, step 100 (40 -> 50)
    assert var_report.settling(curve, 50)[2] == (50.0, pytest.approx(0.25))
    # a window longer than the run: from the first eval (10 -> 50)
    assert var_report.settling(curve, 1000)[2] == (50.0, pytest.approx(4.0))
    # a fall is at most -100%: 50 -> 20
    fall = [
        {"step": 0, "scale": 1, "perplexity": 50.0},
        {"step": 100, "scale": 1, "perplexity": 20.0},
    ]
    assert var_report.settling(fall, 100)[1] == (20.0, pytest.approx(-0.6))
    # the report's window is 20% of the run's last step: 40 of 199, from step 150 (50 -> 50)
    assert var_report.settle_window(curve) == 40
    assert var_report.settling(curve, var_report.settle_window(curve))[2] == (50.0, 0.0)
    assert var_report.settle_window([]) == 0


def test_mean_std():
    from vqlab.experiments.generation import mean_std

    rows = [
        {"tokenizer": "standard", "g_fd": 1.0, "r_fd": 4.0, "real_perplexity_p1": 8.5},
        {"tokenizer": "standard", "g_fd": 3.0, "r_fd": 4.0, "real_perplexity_p1": 8.5},
        {"tokenizer": "deferred", "g_fd": 2.0, "r_fd": 5.0, "real_perplexity_p1": None},
    ]
    assert mean_std(rows, "standard", "g_fd") == "2.000 ± 1.414"  # ddof 1
    assert mean_std(rows, "deferred", "g_fd") == "2.000"  # one seed: no ±
    assert mean_std(rows, "deferred", "real_perplexity_p1") == "n/a"
    # a measure of the tokenizer, repeated by every prior seed: one value, no "± 0.000"
    assert mean_std(rows, "standard", "r_fd") == "4.000"
    assert mean_std(rows, "standard", "real_perplexity_p1") == "8.500"
    # ... but a sample measure that two seeds happen to share keeps its ± 0.000
    same = [{**r, "sample_codes_used": 283.0} for r in rows[:2]]
    assert mean_std(same, "standard", "sample_codes_used") == "283.000 ± 0.000"
    # and tokenizer measures that differ (they should not) show their spread
    odd = [rows[0], {**rows[1], "r_fd": 6.0}]
    assert mean_std(odd, "standard", "r_fd") == "5.000 ± 1.414"


def test_seeds_text():
    from vqlab.experiments.generation import seeds_text

    assert seeds_text([0, 1]) == "2 prior seeds"
    assert seeds_text([3]).startswith("1 prior seed (seed 3:")


def test_findings_read_the_gap_against_the_seeds_spread():
    from vqlab.experiments.generation import findings, stage_text

    def rows(std, dfd):
        return [{"tokenizer": "standard", "g_fd": v} for v in std] + [
            {"tokenizer": "deferred", "g_fd": v} for v in dfd
        ]

    two = findings(rows([10.0, 10.2], [8.0, 8.4]), {})[0]
    assert "deferred lower by 1.900" in two and "range of one tokenizer is 0.400" in two
    assert "(the gap is larger)" in two
    assert "(the gap is within it)" in findings(rows([10.0, 11.0], [9.9, 10.1]), {})[0]
    one = findings(rows([12.9], [12.7]), {})[0]
    assert "deferred lower by 0.200" in one and "spread is not measured" in one
    assert stage_text({"priors": 90.0, "tokenize": 0.0}) == (
        "priors 1.5 min, tokenize not recorded (done by an earlier invocation that did not time it)"
    )


def test_report_tail_is_the_end_both_generation_reports_share(tmp_path):
    from vqlab.experiments.generation import report_tail
    from vqlab.experiments.protocol import Job

    for name in ("prior__standard__seed=0", "prior__standard__seed=1"):
        (tmp_path / "samples" / name).mkdir(parents=True)
        (tmp_path / "samples" / name / "grid.png").write_bytes(b"")
    settings = {"prior": {"prior.width": 128}, "sample": ["sample.top_k=900"]}
    job = Job("var", tmp_path, "data/x", "cpu", settings, jobs=2, command="vqlab replicate var")
    rows = [{"run": "prior__standard__seed=0", "status": "ok", "tokenizer": "standard",
             "seed": 0, "val_loss": 3.5, "seconds": 60.0},
            {"run": "prior__standard__seed=1", "status": "ok", "tokenizer": "standard",
             "seed": 1, "val_loss": 3.6, "seconds": "30"}]  # fmt: skip
    tok_rows = [{"seconds": 600.0}]
    lines = report_tail(job, rows, ("All priors", ["val_loss"]), "- tokenizers: the cpu preset",
                        sampler_note=", `sample.cfg=0`", timing={"priors": 90.0},
                        compute={"tokenizers": tok_rows, "priors": rows})  # fmt: skip
    text = "\n".join(lines)
    assert lines[0] == "## All priors"
    assert lines[2].splitlines()[0].startswith("| run | status | tokenizer | seed | val_loss |")
    assert "3.6" in lines[2]
    # the seed-0 grid only, linked relative to the report
    assert "![prior__standard__seed=0](samples/prior__standard__seed=0/grid.png)" in lines
    assert "seed=1/grid.png" not in text
    how = lines[lines.index("## How this was made") :]
    assert how[2].startswith("- preset: `cpu`; runs trained 2 at a time; data: `data/x`")
    assert how[3] == "- tokenizers: the cpu preset"  # the report's own lines follow the preset
    assert how[4] == "- prior: `prior.width=128`"
    assert how[5] == "- sampler: `sample.top_k=900`, `sample.cfg=0`"
    assert how[6] == ("- wall time by stage (from the invocation that did it; `timing.json`): "
                      "priors 1.5 min; compute summed over the runs: tokenizers 10.0 min, "
                      "priors 1.5 min")  # fmt: skip
    assert "vqlab replicate var" in text  # the provenance names the command


def test_forget_weightless_retrains_a_copy_and_refuses_a_link(tmp_path):
    from vqlab.errors import UserError
    from vqlab.experiments.generation import forget_weightless

    def finished(folder, weights):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text("{}")
        if weights:
            (folder / "checkpoint").mkdir()
            (folder / "checkpoint" / "model.safetensors").write_bytes(b"w")
        return folder

    kept = finished(tmp_path / "kept", weights=True)
    forget_weightless(kept)
    assert (kept / "summary.json").is_file()  # weights there: reused as it is
    bare = finished(tmp_path / "bare", weights=False)
    forget_weightless(bare)
    assert not (bare / "summary.json").exists()  # no weights: trained again
    other = finished(tmp_path / "other-experiment" / "run", weights=False)
    link = tmp_path / "link"
    link.symlink_to(other)
    with pytest.raises(UserError, match="links to .*without its weights"):
        forget_weightless(link)
    assert (other / "summary.json").is_file()  # the other experiment's run is untouched
