"""``vqlab fd`` and ``vqlab featnet train`` through ``vqlab.cli.main``: one JSON line, or one
error line and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.evaluation.conftest import shapes_images
from vqlab.cli import main
from vqlab.evaluation import build_featnet, save_featnet
from vqlab.evaluation.featnet import default_config
from vqlab.evaluation.inception import WEIGHTS_BYTES


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    torch.manual_seed(0)
    info = save_featnet(build_featnet(default_config("resnet", 3, 10)), tmp_path / "fn", {})
    np.savez(tmp_path / "real.npz", images=shapes_images(40, seed=0))
    np.savez(tmp_path / "fake.npz", images=shapes_images(30, seed=1))
    np.savez(tmp_path / "small.npz", images=shapes_images(30, side=20, seed=1))
    np.savez(tmp_path / "floats.npz", images=np.zeros((4, 32, 32, 3), np.float32))
    np.savez(tmp_path / "other.npz", pictures=np.zeros((4, 32, 32, 3), np.uint8))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "featnet.json").write_text(json.dumps({**info, "sha256": "0" * 64}))
    (tmp_path / "broken" / "featnet.safetensors").write_bytes(b"junk")
    with open(tmp_path / "incep.pth", "wb") as f:
        f.truncate(WEIGHTS_BYTES)
    return {p.stem: str(p) for p in tmp_path.iterdir()} | {"sha": info["sha256"]}


def test_fd_prints_one_json_line(files: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    rc = main(["fd", files["real"], files["fake"], "--featnet", files["fn"], "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    result = json.loads(out[0])
    assert set(result) == {"fd", "kd", "kd_std", "n_real", "n_fake", "featnet_sha256"}
    assert (result["n_real"], result["n_fake"]) == (40, 30)
    assert result["featnet_sha256"] == files["sha"] and result["fd"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{real}", "{tmp}/missing.npz"], "missing.npz: no such file or folder"),
        (["{real}", "{other}"], "no 'images' array"),
        (["{real}", "{floats}"], "must be uint8"),
        (["{real}", "{small}"], "REAL images are 32x32x3 but FAKE images are 20x20x3"),
        (["{real}", "{fake}", "--featnet", "{broken}"], "does not match featnet.json"),
        (["{real}", "{fake}", "--featnet", "{tmp}"], "not a feature net folder"),
        (["{real}", "{fake}", "--inception", "{tmp}/none.pth"], "no such file"),
        (["{real}", "{fake}", "--inception", "{fake}"], "not the 95,628,359-byte"),
        (["{real}", "{fake}", "--inception", "{incep}"], "pip install 'vqlab[inception]'"),
        (["{real}", "{fake}", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_fd_bad_input_is_one_line_and_exit_2(
    files: dict[str, str],
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    names = {**files, "tmp": str(Path(files["real"]).parent)}
    argv = ["fd", *(a.format(**names) for a in args), "--quiet"]
    if "--featnet" not in argv:
        argv += ["--featnet", files["fn"]]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("vqlab: error: ") and message in err[0]


def test_featnet_train_command(
    two_class_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["featnet", "train", "--data", str(two_class_data), "--data-name", "image_folder"]
    rc = main([*argv, "--arch", "vgg", "--steps", "3", "--out", str(tmp_path / "fn"), "--quiet"])
    out = json.loads(capsys.readouterr().out.strip())
    assert rc == 0 and set(out) == {"test_accuracy", "steps", "seconds", "sha256"}
    assert (tmp_path / "fn" / "featnet.safetensors").is_file()
    rc = main([*argv, "--arch", "alexnet", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown feature net arch" in err[0]
