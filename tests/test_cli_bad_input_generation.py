"""The generation commands as a hostile user tries them (issue 25): each bad invocation is one
``vqlab: error:`` line, exit code 2, no traceback, and every file already on disk unchanged.

One tiny world is built once per module: an image folder, a conv tokenizer, its token file, a
prior trained on it, a feature net, and token files that break the rules (no test rows, a K of
10**13, a label of 10**13, a K that is not its tokenizer's). Every case below failed before the
fix (a traceback, a silent overwrite, or the wrong cause named); the success cases after the
table are the ones the issue found broken on the main path.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import image_folder, tokenizer_and_tokens

from vqlab.cli import main

PRIOR = ["task=prior", "data.name=tokens", "prior.depth=1", "prior.width=32", "prior.heads=2"]
PRIOR += ["train.batch_size=4", "train.steps=2", "train.log_every=1", "train.eval_every=2"]


def _sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def _tokens(path: Path, base: dict, **change) -> Path:
    """A token file written raw (no validation on write), from ``base`` with ``change``."""
    np.savez(path, **{**base, **change})
    return path


def _idx(folder: Path, n: int = 8, side: int = 16) -> Path:
    """MNIST-style IDX files: n images per split of two classes (dark, bright)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = (np.arange(n) % 2).astype(np.uint8)
        images = np.clip(rng.normal(60 + 130 * labels[:, None, None], 30, (n, side, side)), 0, 255)
        header = struct.pack(">BBBBIII", 0, 0, 8, 3, n, side, side)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            header + images.astype(np.uint8).tobytes()
        )
        header = struct.pack(">BBBBI", 0, 0, 8, 1, n)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vqlab import load_config, train
    from vqlab.evaluation import build_featnet, save_featnet
    from vqlab.evaluation.featnet import default_config

    root = tmp_path_factory.mktemp("world")
    old_cache = os.environ.get("VQLAB_CACHE")
    os.environ["VQLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    images = image_folder(root / "images")
    tokens = tokenizer_and_tokens(images, root)  # root/tok, root/tokens.npz
    train(load_config(None, [*PRIOR, f"data.path={tokens}"]), root / "prior", progress=False)
    torch.manual_seed(0)
    net = build_featnet(default_config("resnet", 3, 2))
    save_featnet(net, root / "featnet", {"image_shape": [3, 16, 16]})
    save_featnet(net, root / "featnet32", {"image_shape": [3, 32, 32]})  # scores 32-pixel images
    base = dict(np.load(tokens))
    empty = {k: base[k][:0] for k in ("train_ids", "test_ids", "train_labels", "test_labels")}
    _tokens(root / "no_rows.npz", base, **empty)
    _tokens(
        root / "no_test.npz",
        base,
        test_ids=base["test_ids"][:0],
        test_labels=base["test_labels"][:0],
    )
    _tokens(root / "huge_k.npz", base, codebook_size=np.asarray(10**13), tokenizer=np.asarray(""))
    labels = base["train_labels"].copy()
    labels[0] = 10**13
    _tokens(root / "huge_label.npz", base, train_labels=labels, tokenizer=np.asarray(""))
    _tokens(root / "other_k.npz", base, codebook_size=np.asarray(16))
    np.savez(root / "one.npz", images=np.zeros((1, 16, 16, 3), np.uint8))
    np.savez(root / "two.npz", images=np.full((2, 16, 16, 3), 9, np.uint8))
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("precious")
    (root / "afile").write_text("precious too")
    shutil.copytree(root / "tok", root / "damaged")
    (root / "damaged" / "checkpoint" / "state.json").write_text("{not json")
    (root / "damaged" / "summary.json").unlink()  # unfinished: resume reads the checkpoint
    _idx(root / "idx")
    yield root
    if old_cache is None:
        os.environ.pop("VQLAB_CACHE", None)
    else:
        os.environ["VQLAB_CACHE"] = old_cache


CASES = [
    # (id, argv, fragment of the one error line, a path that must not be created)
    (
        "prior-no-rows",
        ["train", "--out", "{w}/o", *_sets(*PRIOR, "data.path={w}/no_rows.npz")],
        "train_ids is empty",
        "{w}/o",
    ),
    (
        "prior-test-split-empty",
        ["train", "--out", "{w}/o", *_sets(*PRIOR, "data.path={w}/no_test.npz")],
        "test_ids is empty",
        "{w}/o",
    ),
    (
        "prior-k-1e13",
        ["train", "--out", "{w}/o", *_sets(*PRIOR, "data.path={w}/huge_k.npz")],
        "K=10000000000000",
        "{w}/o",
    ),
    (
        "prior-label-1e13",
        ["train", "--out", "{w}/o", *_sets(*PRIOR, "data.path={w}/huge_label.npz")],
        "10000000000001 classes",
        "{w}/o",
    ),
    (
        "prior-width-200000",
        [
            "train",
            "--out",
            "{w}/o",
            *_sets(*PRIOR, "data.path={w}/tokens.npz", "prior.width=200000"),
        ],
        "width 200000",
        "{w}/o",
    ),
    (
        "prior-depth-100000",
        [
            "train",
            "--out",
            "{w}/o",
            *_sets(*PRIOR, "data.path={w}/tokens.npz", "prior.depth=100000"),
        ],
        "depth 100000",
        "{w}/o",
    ),
    (
        "prior-k-not-the-tokenizers",
        ["train", "--out", "{w}/o", *_sets(*PRIOR, "data.path={w}/other_k.npz")],
        "differs from its tokenizer",
        "{w}/o",
    ),
    (
        "sample-out-not-empty",
        ["sample", "{w}/prior", "--n", "2", "--out", "{w}/full"],
        "is not empty; pass --overwrite",
        None,
    ),
    (
        "sample-out-is-a-file",
        ["sample", "{w}/prior", "--n", "2", "--out", "{w}/afile"],
        "exists and is not a folder",
        None,
    ),
    (
        "sample-n-zero",
        ["sample", "{w}/prior", "--n", "0", "--out", "{w}/o"],
        "--n must be >= 1",
        "{w}/o",
    ),
    (
        "sample-n-huge",
        ["sample", "{w}/prior", "--n", "100000000000000", "--out", "{w}/o"],
        "lower --n",
        "{w}/o",
    ),
    (
        "sample-device-tpu",
        ["sample", "{w}/prior", "--n", "2", "--out", "{w}/o", "--device", "tpu"],
        "'tpu' is not a device",
        "{w}/o",
    ),
    (
        "sample-missing-run",
        ["sample", "{w}/nowhere", "--n", "2", "--out", "{w}/o"],
        "no such file or folder",
        "{w}/o",
    ),
    (
        "tokenize-out-exists",
        ["tokenize", "{w}/tok", "--data", "{w}/images", "--out", "{w}/tokens.npz"],
        "exists; pass --overwrite",
        None,
    ),
    (
        "tokenize-out-is-a-folder",
        ["tokenize", "{w}/tok", "--data", "{w}/images", "--out", "{w}/full"],
        "is a folder",
        None,
    ),
    (
        "tokenize-out-under-a-file",
        ["tokenize", "{w}/tok", "--data", "{w}/images", "--out", "{w}/afile/t.npz"],
        "is a file, not a folder",
        None,
    ),
    (
        "evaluate-out-not-empty",
        [
            "evaluate",
            "{w}/tok",
            "--data",
            "{w}/images",
            "--featnet",
            "{w}/featnet",
            "--out",
            "{w}/full",
        ],
        "is not empty; pass --overwrite",
        None,
    ),
    (
        "evaluate-featnet-of-another-size",
        [
            "evaluate",
            "{w}/tok",
            "--data",
            "{w}/images",
            "--featnet",
            "{w}/featnet32",
            "--out",
            "{w}/o",
        ],
        "trained on 32x32 images",
        "{w}/o",
    ),
    (
        "featnet-out-exists",
        ["featnet", "train", "--data", "{w}/images", "--out", "{w}/featnet", "--steps", "1"],
        "is not empty; pass --overwrite",
        None,
    ),
    (
        "featnet-kind-unknown",
        ["featnet", "train", "--data", "{w}/afile", "--out", "{w}/o"],
        "cannot tell its kind",
        "{w}/o",
    ),
    (
        "diagnose-out-not-empty",
        ["diagnose", "{w}/tok", "--out", "{w}/full"],
        "is not empty; pass --overwrite",
        None,
    ),
    (
        "fd-one-image",
        ["fd", "{w}/two.npz", "{w}/one.npz", "--featnet", "{w}/featnet"],
        "FAKE holds 1 image",
        None,
    ),
    ("resume-corrupt-state", ["train", "--resume", "{w}/damaged"], "state.json is damaged", None),
]
CASES = [pytest.param(*c[1:], id=c[0]) for c in CASES]
CASES += [
    pytest.param(
        ["sample", "{w}/prior", "--n", "2", "--out", "{w}/o", "--device", "cuda"],
        "no CUDA device",
        "{w}/o",
        id="sample-cuda-without-cuda",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    pytest.param(
        ["sample", "{w}/prior", "--n", "2", "--out", "{w}/o", "--device", "cuda:64"],
        "cuda:64",
        "{w}/o",
        id="sample-gpu-index-absent",
    ),
]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("argv, fragment, not_created", CASES)
def test_bad_generation_input_is_one_line_and_exit_2(world, capsys, argv, fragment, not_created):
    before = _snapshot(world)
    argv = [a.replace("{w}", str(world)) for a in argv]
    capsys.readouterr()
    quiet = [] if argv[0] == "diagnose" else ["--quiet"]
    try:
        code = main([*argv, *quiet])
    except Exception as err:  # any escape is the failure being tested
        pytest.fail(f"raised {type(err).__name__}: {err}")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vqlab: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(world) == before, "a file on disk changed"
    if not_created is not None:
        assert not Path(not_created.replace("{w}", str(world))).exists(), "work started"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_diagnose_works_on_an_image_run_and_takes_overwrite(world, tmp_path, capsys):
    # the README's diagnose line crashed in plot_tokens on image runs (labels per image)
    code, _, err = _run(capsys, "diagnose", world / "tok", "--out", tmp_path / "d")
    assert code == 0, err
    assert (tmp_path / "d" / "plots" / "tokens.png").stat().st_size > 0
    (tmp_path / "d" / "stale.txt").write_text("old")
    code, _, err = _run(capsys, "diagnose", world / "tok", "--out", tmp_path / "d", "--overwrite")
    assert code == 0, err
    assert not (tmp_path / "d" / "stale.txt").exists()


def test_a_prior_run_samples_from_anywhere_and_refuses_a_changed_tokenizer(
    world, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "prior"
    shutil.copytree(world / "prior", run)
    facts = json.loads((run / "tokens.json").read_text())
    assert facts["tokenizer"] == str((world / "tok").resolve())
    assert facts["codebook_size"] == 8 and facts["num_classes"] == 2
    assert len(facts["tokenizer_sha256"]) == 64 and Path(facts["token_file"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the run's data.path is no longer reachable from here
    code, _, err = _run(capsys, "sample", run, "--n", "3", "--out", "s", "--quiet")
    assert code == 0, err
    assert np.load("s/images.npz")["images"].shape == (3, 16, 16, 3)
    # the same folder again: refused without --overwrite, replaced with it
    assert _run(capsys, "sample", run, "--n", "2", "--out", "s", "--quiet")[0] == 2
    assert len(np.load("s/samples.npz")["ids"]) == 3
    assert _run(capsys, "sample", run, "--n", "2", "--out", "s", "--quiet", "--overwrite")[0] == 0
    assert len(np.load("s/samples.npz")["ids"]) == 2
    # --device auto: the GPU when torch sees one, else the CPU (the same ids as cpu here)
    if not torch.cuda.is_available():
        code, _, err = _run(capsys, "sample", run, "--n", "2", "--out", "a", "--quiet",
                            "--device", "auto")  # fmt: skip
        assert code == 0, err
        np.testing.assert_array_equal(
            np.load("a/samples.npz")["ids"], np.load("s/samples.npz")["ids"]
        )
    # the tokenizer's weights change: its codes are no longer the ones the prior learned
    tok = tmp_path / "tok"
    shutil.copytree(world / "tok", tok)
    facts["tokenizer"] = str(tok)
    (run / "tokens.json").write_text(json.dumps(facts))
    weights = tok / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    code, _, err = _run(capsys, "sample", run, "--n", "2", "--out", "s2", "--quiet")
    assert code == 2 and "changed since this prior was trained" in err
    assert not Path("s2").exists()


def test_tokenize_records_its_tokenizer_by_absolute_path_and_takes_overwrite(
    world, tmp_path, capsys
):
    out = tmp_path / "t.npz"
    argv = ["tokenize", world / "tok", "--data", world / "images", "--out", out, "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    assert Path(str(np.load(out)["tokenizer"])).is_absolute()
    out.write_bytes(b"old")
    assert _run(capsys, *argv)[0] == 2 and out.read_bytes() == b"old"
    assert _run(capsys, *argv, "--overwrite")[0] == 0
    assert len(np.load(out)["train_ids"]) == 12


def test_featnet_train_reads_the_data_kind_from_the_path(world, tmp_path, capsys):
    out = tmp_path / "fn"
    argv = ["featnet", "train", "--data", world / "idx", "--out", out, "--steps", "1", "--quiet"]
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    info = json.loads((out / "featnet.json").read_text())
    assert info["data"]["name"] == "idx" and info["image_shape"] == [1, 16, 16]


def test_a_long_prior_says_so_before_it_starts(world, tmp_path, capsys, monkeypatch):
    from vqlab import load_config
    from vqlab.training.tasks import prior

    # the defaults at CIFAR-10's size (K=1024, L=64): hours on this project's CPU
    cfg = load_config(None, ["task=prior", "data.name=tokens", "data.path=x.npz"])
    assert prior.cpu_budget_seconds(cfg, 64, 1024) > 3600
    # the rule against the idle steps it was fitted to and the two it was not (VAR, L=130)
    for kind, depth, width, length, seconds in [
        ("maskgit", 2, 128, 64, 0.558), ("maskgit", 4, 256, 64, 2.316),
        ("var", 2, 128, 130, 1.234), ("var", 4, 256, 130, 4.831),
    ]:  # fmt: skip
        sets = [f"prior.kind={kind}", f"prior.depth={depth}", f"prior.width={width}"]
        one = load_config(None, ["task=prior", "data.name=tokens", "data.path=x.npz", *sets,
                                 "train.steps=1", "train.batch_size=64"])  # fmt: skip
        assert prior.cpu_budget_seconds(one, length, 1024) == pytest.approx(seconds, rel=0.1)
    monkeypatch.setattr(prior, "ANNOUNCE_SECONDS", 0.0)
    sets = _sets(*PRIOR, f"data.path={world / 'tokens.npz'}")
    code, _, err = _run(capsys, "train", "--out", tmp_path / "p", *sets, "--quiet")
    assert code == 0 and "this prior trains 2 steps on the CPU: about" in err
