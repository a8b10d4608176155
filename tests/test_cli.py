"""The CLI: thin commands, run folders as in DESIGN.md, one-line errors with exit code 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vqlab.cli import main

TINY = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--config",
        TINY,
        "--set",
        "train.strategy=deferred",
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0, err
    for name in (
        "config.yaml",
        "command.txt",
        "metrics.jsonl",
        "summary.json",
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "eval_samples.npz",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "deferred" and summary["codebook_size"] == 16
    assert 1 <= summary["perplexity"] <= 16 and "seconds" in summary
    # the known answer: perplexity and usage are those of the test set's tokens (all 200 of
    # them are in eval_samples.npz), recomputed here from the indices alone
    indices = np.load(out / "eval_samples.npz")["indices"]
    assert indices.shape == (200,)
    p = np.bincount(indices, minlength=16) / indices.size
    assert summary["perplexity"] == pytest.approx(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))
    assert summary["usage"] == pytest.approx(np.count_nonzero(p) / 16)
    assert summary["dead_codes"] == 16 - np.count_nonzero(p)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["strategy"] == "deferred" and cfg["vq"]["codebook_size"] == 16
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in rows]
    assert phases[0] == "pretrain" and "init" in phases and phases[-1] == "vq"
    assert all("step" in r for r in rows)
    assert json.loads(stdout)["strategy"] == "deferred"


def test_train_refuses_non_empty_out_then_overwrites(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, "train", "--config", TINY, "--out", str(out), "--quiet")
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "precious"  # nothing lost
    code, _, err = run_cli(
        capsys, "train", "--config", TINY, "--out", str(out), "--quiet", "--overwrite"
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--out", "{tmp}/a", "--set", "vq.codebok_size=3"], "did you mean"),
        (["train", "--out", "{tmp}/a", "--set", "vq.decay=3"], "decay must lie"),
        (["train", "--out", "{tmp}/a", "--set", "train.steps=many"], "expects an int"),
        (["train", "--out", "{tmp}/a", "--set", "novalue"], "KEY=VALUE"),
        (["train", "--out", "{tmp}/a", "--config", "{tmp}/missing.yaml"], "not found"),
        (["train"], "Missing option"),
        (["replicate", "nonsense", "--out", "{tmp}/a"], "unknown experiment"),
        (["replicate", "synthetic", "--out", "{tmp}/a", "--preset", "tpu"], "unknown preset"),
        (["replicate", "recipes", "--out", "{tmp}/a"], "needs --data"),
        (["replicate", "generation", "--out", "{tmp}/a", "--report-only"], "stages that build"),
        (["train", "--out", "{tmp}/a", "--set", "vq.init=magic"], "vq.init"),
        (["sweep", "--out", "{tmp}/a", "--grid", "vq.codebook_size"], "KEY=v1,v2"),
        (["sweep", "--out", "{tmp}/a", "--grid", "vq.nope=1,2"], "unknown config key"),
        (["diagnose", "{tmp}", "--out", "{tmp}/d"], "no checkpoint"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqlab: error:"), err
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_replicate_takes_each_experiments_own_presets(tmp_path, capsys):
    from vqlab.experiments import cifar, recipes
    from vqlab.experiments.replications import EXPERIMENTS, PRESETS

    assert set(PRESETS) == set(EXPERIMENTS)
    assert PRESETS["cifar10"] == tuple(cifar.CIFAR_PRESETS) and "cpu-wide" in PRESETS["cifar10"]
    assert PRESETS["recipes"] == tuple(recipes.PRESETS)
    # cifar10's cpu-wide passes the preset check (the next check, --data, answers)...
    code, _, err = run_cli(capsys, "replicate", "cifar10", "--out", str(tmp_path / "a"),
                           "--preset", "cpu-wide")  # fmt: skip
    assert code == 2 and "needs --data" in err, err
    # ...and an experiment without it names the ones it has
    code, _, err = run_cli(capsys, "replicate", "recipes", "--out", str(tmp_path / "b"),
                           "--preset", "cpu-wide")  # fmt: skip
    assert code == 2 and "unknown preset 'cpu-wide' for recipes" in err and "'gpu'" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sweep_skips_finished_and_records_failures(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        "--config",
        TINY,
        "--grid",
        "vq.codebook_size=8,16",
        "--grid",
        "train.strategy=standard,deferred",
        "--out",
        str(out),
        "--quiet",
        "--jobs",
        "2",
    ]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    text = (out / "results.csv").read_text()
    assert text.count("\n") == 5 and "status" in text.splitlines()[0]
    assert (out / "report.md").is_file() and (out / "plots" / "vs_codebook_size.png").is_file()
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0 and (out / "results.csv").read_text().count("skipped (finished)") == 4
    # a run that fails (init_samples < K at build time is refused up front, so fail at run time:
    # a K larger than the training set) is recorded and the rest still run
    bad = [
        "sweep",
        "--config",
        TINY,
        "--set",
        "vq.init_samples=5000",
        "--grid",
        "vq.codebook_size=8,1000",
        "--out",
        str(tmp_path / "s2"),
        "--quiet",
    ]
    code, stdout, err = run_cli(capsys, *bad)
    assert code == 0 and "1 failed" in stdout
    csv_text = (tmp_path / "s2" / "results.csv").read_text()
    assert "failed" in csv_text and "ok" in csv_text


def test_diagnose_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--config", TINY, "--out", str(run), "--quiet")[0] == 0
    code, stdout, err = run_cli(capsys, "diagnose", str(run), "--out", str(tmp_path / "d"))
    assert code == 0, err
    diag = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    # same checkpoint, same test set -> the same numbers as the end of training
    for key in ("perplexity", "usage", "codebook_mean_l2", "recon_mse"):
        assert diag[key] == pytest.approx(summary[key], rel=1e-5)
    assert (tmp_path / "d" / "plots" / "tokens.png").is_file()


def test_a_codebook_too_large_for_memory_is_one_line_exit_2(tmp_path, capsys):
    # 2e9 codes of D=64 would need ~960 GiB before the first step: refused up front, with one
    # line, instead of a raw allocator traceback
    sets = ["vq.codebook_size=2000000000", "vq.init_samples=2000000000", "model.latent_dim=64"]
    argv = ["train", "--config", TINY, "--out", str(tmp_path / "r"), "--quiet"]
    code, _, err = run_cli(capsys, *argv, *[a for s in sets for a in ("--set", s)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "vq.codebook_size=2000000000" in lines[0] and "free" in lines[0]
