"""vqlab evaluate: a tokenizer's eval.json (the replications built on it: tests/experiments/)."""

import json

import pytest
import torch
from image_fixtures import TINY_TOKENIZER, image_folder

from vqlab import Tokenizer, load_config, train
from vqlab.cli import main
from vqlab.evaluation.featnet import build_featnet, default_config, save_featnet
from vqlab.evaluation.image_metrics import psnr


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    import os

    os.environ["VQLAB_CACHE"] = str(root / "cache")
    folder = image_folder(root / "images")
    train(load_config(None, [*TINY_TOKENIZER, f"data.path={folder}"]), root / "run", progress=False)
    torch.manual_seed(5)
    save_featnet(build_featnet(default_config("resnet", 3, 2)), root / "featnet", {"note": "test"})
    return root, folder


def test_evaluate_writes_eval_json_with_quality_and_collapse(setup, capsys):
    root, folder = setup
    argv = [
        "evaluate",
        str(root / "run"),
        "--data",
        str(folder),
        "--featnet",
        str(root / "featnet"),
    ]
    assert main([*argv, "--out", str(root / "eval"), "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "Tokens collapse" in shown
    m = json.loads((root / "eval" / "eval.json").read_text())
    for key in ("r_fd", "r_kd", "floor_fd", "psnr", "ssim", "recon_mse", "perceptual_distance"):
        assert isinstance(m[key], float), key
    assert "lpips" not in m  # only where real LPIPS ran
    assert m["r_fd"] >= 0 and m["n"] == 12 and m["featnet_sha256"]
    assert m["tokens_collapse"] in (True, False) and m["perplexity"] >= 1
    # psnr is that of the uint8 pictures of decode(encode(test images))
    tok = Tokenizer.from_pretrained(root / "run")
    from vqlab.data.dataset import load_dataset

    data = load_dataset(tok.config.data, 0)
    real = tok.to_uint8(data.test_x)
    fake = tok.to_uint8(tok.decode(tok.encode(data.test_x)))
    assert m["psnr"] == pytest.approx(psnr(real, fake))
    report = (root / "eval" / "report.md").read_text()
    assert "not FID" in report and m["featnet_sha256"][:12] in report
    assert report.splitlines()[2].startswith("**Tokens collapse")


def test_evaluate_refuses_a_folder_that_is_no_feature_net(setup, capsys):
    root, folder = setup
    argv = ["evaluate", str(root / "run"), "--data", str(folder), "--featnet", str(root)]
    assert main([*argv, "--out", str(root / "e2")]) == 2
    assert "not a feature net folder" in capsys.readouterr().err
