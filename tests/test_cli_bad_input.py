"""A table of bad invocations: each exits 2 with one ``vqlab: error:`` line and no traceback.

Every case runs in a folder holding files that must survive untouched (a config, a non-empty
run folder, a plain file), so a refusal never costs the user anything already on disk. Errors
in the config itself must come before any work: the ``--out`` folder is not even created.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vqlab.cli import main

TINY = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")
FAST = ["--config", TINY, "--quiet", "--set", "train.steps=2", "--set", "train.pretrain_steps=1"]


def _fixture_files(tmp: Path) -> dict[Path, bytes]:
    """Files the bad invocations may point at; returns their bytes to compare afterwards."""
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("precious")
    (tmp / "afile").write_text("precious too")
    (tmp / "empty_dir").mkdir()
    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "bad.yaml").write_text("vq: [\n")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01 garbage")
    (tmp / "typo.yaml").write_text("vq:\n  codebok_size: 8\n")
    (tmp / "wrongtype.yaml").write_text("train:\n  steps: [1, 2]\n")
    for damage in ("garbage", "truncated", "badjson"):
        _damaged_checkpoint(tmp / damage, damage)
    return {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}


def _damaged_checkpoint(run: Path, damage: str) -> None:
    """A run folder holding a real (untrained) tiny checkpoint, then damaged."""
    from vqlab.config import load_config
    from vqlab.models.registry import build_model
    from vqlab.training.checkpoint import save_checkpoint

    cfg = load_config(TINY)
    model = build_model(cfg.model, cfg.vq, (cfg.data.dim,))
    ckpt = save_checkpoint(model, cfg, run / "checkpoint", (cfg.data.dim,))
    weights = ckpt / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"\x00garbage, not safetensors" * 8)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:64])
    else:
        (ckpt / "config.json").write_text("{not json")


CASES = [
    # (id, argv, fragment of the one error line, --out that must not be created)
    ("unknown-command", ["frobnicate"], "No such command", None),
    ("unknown-option", ["train", "--out", "{t}/o", "--bogus"], "No such option: --bogus", None),
    ("missing-out", ["train", "--config", TINY], "Missing option '--out'", None),
    (
        "unknown-key",
        ["train", "--out", "{t}/o", "--set", "vq.codebok_size=8"],
        "did you mean 'vq.codebook_size'",
        "{t}/o",
    ),
    (
        "key-in-wrong-group",
        ["train", "--out", "{t}/o", "--set", "train.codebook_size=8"],
        "did you mean 'vq.codebook_size'",
        "{t}/o",
    ),
    ("group-as-key", ["train", "--out", "{t}/o", "--set", "vq=8"], "is a group of keys", "{t}/o"),
    ("set-without-equals", ["train", "--out", "{t}/o", "--set", "novalue"], "KEY=VALUE", "{t}/o"),
    (
        "int-not-int",
        ["train", "--out", "{t}/o", "--set", "train.steps=many"],
        "train.steps expects an int; got 'many'",
        "{t}/o",
    ),
    (
        "float-not-float",
        ["train", "--out", "{t}/o", "--set", "train.lr=fast"],
        "train.lr expects a float",
        "{t}/o",
    ),
    (
        "float-nan",
        ["train", "--out", "{t}/o", "--set", "train.lr=nan"],
        "train.lr expects a finite float",
        "{t}/o",
    ),
    (
        "bool-not-bool",
        ["train", "--out", "{t}/o", "--set", "model.attention=maybe"],
        "expects a bool",
        "{t}/o",
    ),
    ("int-overflow", ["train", "--out", "{t}/o", "--set", "seed=1e30"], "fits in 64 bits", "{t}/o"),
    (
        "deferred-no-vq-phase",
        [
            "train",
            "--out",
            "{t}/o",
            "--set",
            "train.strategy=deferred",
            "--set",
            "train.steps=10",
            "--set",
            "train.pretrain_steps=10",
        ],
        "pretrain_steps=10 must be < train.steps=10",
        "{t}/o",
    ),
    (
        "codebook-size-zero",
        ["train", "--out", "{t}/o", "--set", "vq.codebook_size=0"],
        "vq.codebook_size must be > 0",
        "{t}/o",
    ),
    (
        "decay-out-of-range",
        ["train", "--out", "{t}/o", "--set", "vq.decay=1.5"],
        r"vq.decay must lie in (0, 1)",
        "{t}/o",
    ),
    (
        "init-samples-below-k",
        ["train", "--out", "{t}/o", "--set", "vq.codebook_size=64", "--set", "vq.init_samples=10"],
        "init_samples=10 is smaller",
        "{t}/o",
    ),
    (
        "bad-choice",
        ["train", "--out", "{t}/o", "--set", "device=tpu"],
        "device='tpu' is not valid; choose one of",
        "{t}/o",
    ),
    (
        "missing-config",
        ["train", "--out", "{t}/o", "--config", "{t}/missing.yaml"],
        "config file not found",
        "{t}/o",
    ),
    (
        "config-is-folder",
        ["train", "--out", "{t}/o", "--config", "{t}/empty_dir"],
        "is a folder",
        "{t}/o",
    ),
    (
        "bad-yaml",
        ["train", "--out", "{t}/o", "--config", "{t}/bad.yaml"],
        "is not valid YAML",
        "{t}/o",
    ),
    (
        "yaml-list",
        ["train", "--out", "{t}/o", "--config", "{t}/list.yaml"],
        "must hold a mapping",
        "{t}/o",
    ),
    (
        "yaml-binary",
        ["train", "--out", "{t}/o", "--config", "{t}/binary.yaml"],
        "is not UTF-8 text",
        "{t}/o",
    ),
    (
        "yaml-unknown-key",
        ["train", "--out", "{t}/o", "--config", "{t}/typo.yaml"],
        "did you mean 'vq.codebook_size'",
        "{t}/o",
    ),
    (
        "yaml-wrong-type",
        ["train", "--out", "{t}/o", "--config", "{t}/wrongtype.yaml"],
        "train.steps expects int",
        "{t}/o",
    ),
    ("out-not-empty", ["train", *FAST, "--out", "{t}/full"], "is not empty", None),
    ("out-is-a-file", ["train", *FAST, "--out", "{t}/afile"], "exists and is not a folder", None),
    (
        "cifar-without-path",
        ["train", "--out", "{t}/o", "--set", "data.name=cifar10"],
        "needs data.path",
        "{t}/o",
    ),
    (
        "data-path-missing",
        [
            "train",
            *FAST,
            "--out",
            "{t}/o",
            "--set",
            "data.name=cifar10",
            "--set",
            "data.path={t}/no_such_data",
        ],
        "no_such_data",
        None,
    ),
    (
        "conv-on-vectors",
        ["train", *FAST, "--out", "{t}/o", "--set", "model.kind=conv"],
        "model.kind=conv needs images",
        None,
    ),
    (
        "unknown-replication",
        ["replicate", "nonsense", "--out", "{t}/o"],
        "unknown experiment",
        "{t}/o",
    ),
    (
        "bad-preset",
        ["replicate", "synthetic", "--out", "{t}/o", "--preset", "tpu"],
        "unknown preset 'tpu'",
        "{t}/o",
    ),
    (
        "grid-syntax",
        ["sweep", "--out", "{t}/o", "--grid", "vq.codebook_size"],
        "KEY=v1,v2",
        "{t}/o",
    ),
    (
        "grid-no-values",
        ["sweep", "--out", "{t}/o", "--grid", "vq.codebook_size="],
        "no values",
        "{t}/o",
    ),
    (
        "grid-unknown-key",
        ["sweep", "--out", "{t}/o", "--grid", "vq.nope=1,2"],
        "unknown config key 'vq.nope'",
        "{t}/o",
    ),
    (
        "grid-bad-value",
        ["sweep", "--out", "{t}/o", "--grid", "vq.codebook_size=8,lots"],
        "vq.codebook_size expects an int; got 'lots'",
        "{t}/o",
    ),
    (
        "grid-contradiction",
        ["sweep", "--out", "{t}/o", "--grid", "vq.decay=0.5,2"],
        "vq.decay must lie in",
        "{t}/o",
    ),
    (
        "jobs-negative",
        [
            "sweep",
            "--config",
            TINY,
            "--out",
            "{t}/o",
            "--grid",
            "vq.codebook_size=8",
            "--jobs",
            "-1",
        ],
        "--jobs must be >= 0",
        "{t}/o",
    ),
    (
        "diagnose-no-checkpoint",
        ["diagnose", "{t}/empty_dir", "--out", "{t}/o"],
        "no checkpoint",
        "{t}/o",
    ),
    ("diagnose-missing-folder", ["diagnose", "{t}/nowhere", "--out", "{t}/o"], "nowhere", "{t}/o"),
    ("resume-not-a-run", ["train", "--resume", "{t}/empty_dir"], "not a run folder", None),
]
CASES = [pytest.param(*case[1:], id=case[0]) for case in CASES]

# Cases that only show at run time, once files are read, the data loaded or the machine seen:
# still one line and exit 2, with every pre-existing file untouched.
CASES += [
    pytest.param(
        ["diagnose", "{t}/garbage", "--out", "{t}/o"],
        "model.safetensors",
        "{t}/o",
        id="diagnose-garbage-weights",
    ),
    pytest.param(
        ["diagnose", "{t}/truncated", "--out", "{t}/o"],
        "model.safetensors",
        "{t}/o",
        id="diagnose-truncated-weights",
    ),
    pytest.param(
        ["diagnose", "{t}/badjson", "--out", "{t}/o"],
        "config.json",
        "{t}/o",
        id="diagnose-corrupt-config-json",
    ),
    pytest.param(
        ["train", *FAST, "--out", "{t}/o", "--set", "vq.codebook_size=500"]
        + ["--set", "vq.init_samples=500"],
        "vq.codebook_size",
        None,
        id="codebook-larger-than-the-data",
    ),
    pytest.param(
        ["train", *FAST, "--out", "{t}/o", "--set", "device=cuda"],
        "device=cuda",
        None,
        id="cuda-without-cuda",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
]


@pytest.mark.parametrize("argv, fragment, not_created", CASES)
def test_bad_invocation_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment, not_created):
    before = _fixture_files(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except Exception as err:  # any escape is the failure being tested
        pytest.fail(f"raised {type(err).__name__}: {err}")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vqlab: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    after = {p: p.read_bytes() for p in before}
    assert after == before, "a pre-existing file changed"
    if not_created is not None:
        assert not Path(not_created.replace("{t}", str(tmp_path))).exists(), "work started"


def test_the_table_is_large_enough():
    assert len(CASES) >= 20
