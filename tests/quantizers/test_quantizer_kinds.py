"""vq.kind: the multi-scale (VAR), FSQ and LFQ quantizers inside the tokenizer task."""

import numpy as np
import pytest
import torch
from image_fixtures import TINY_TOKENIZER, crash_and_resume, image_folder, tokenizer_and_tokens

from vqlab import Tokenizer, load_config, train
from vqlab.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    import os

    os.environ["VQLAB_CACHE"] = str(root / "cache")
    return image_folder(root / "images")


@pytest.mark.parametrize("strategy", ["standard", "deferred"])
def test_multiscale_tokenizer_trains_reports_per_scale_and_round_trips(folder, tmp_path, strategy):
    sets = [*TINY_TOKENIZER, f"data.path={folder}", "vq.kind=multiscale", "vq.scales=1,2,4"]
    summary = train(
        load_config(None, [*sets, f"train.strategy={strategy}"]), tmp_path / "r", progress=False
    )
    per = summary["per_scale"]
    assert [p["scale"] for p in per] == [1, 2, 4]
    for p in per:
        assert 1 <= p["perplexity"] <= 8 and p["dead_codes"] == round(8 * (1 - p["usage"]))
    # the 1x1 scale sees 12 test images: at most 12 codes; usage of K=8 is then by hand
    tok = Tokenizer.from_pretrained(tmp_path / "r")
    assert tok.scales == [1, 2, 4] and tok.seq_len == 21
    from vqlab.data.dataset import load_dataset

    x = load_dataset(tok.config.data, 0).test_x
    ids = tok.encode(x)
    assert ids.shape == (12, 21)
    coarse = ids[:, 0]
    assert per[0]["usage"] == pytest.approx(len(set(coarse.tolist())) / 8)
    with torch.no_grad():
        recon = tok.model(x, quantize=True).recon
    assert torch.equal(tok.decode(ids), recon)
    out = tmp_path / "t.npz"
    assert (
        main(["tokenize", str(tmp_path / "r"), "--data", str(folder), "--out", str(out), "--quiet"])
        == 0
    )
    raw = np.load(out)
    assert list(raw["scales"]) == [1, 2, 4] and raw["train_ids"].shape == (12, 21)


@pytest.mark.parametrize("kind, extra, k", [("fsq", ["vq.levels=3,3"], 9), ("lfq", [], 8)])
def test_fsq_and_lfq_tokenizers_train_with_implicit_codebooks(folder, tmp_path, kind, extra, k):
    sets = [*TINY_TOKENIZER, f"data.path={folder}", f"vq.kind={kind}", *extra]
    summary = train(
        load_config(None, [*sets, "train.strategy=deferred"]), tmp_path / "r", progress=False
    )
    assert summary["codebook_size"] == k and 1 <= summary["perplexity"] <= k
    tok = Tokenizer.from_pretrained(tmp_path / "r")
    x = torch.zeros(2, 3, 16, 16)
    assert torch.equal(tok.decode(tok.encode(x)), tok.model(x, quantize=True).recon.detach())


def test_kind_errors_are_one_line(folder, tmp_path):
    with pytest.raises(ValueError, match="must end at the latent side 4"):
        train(
            load_config(
                None,
                [*TINY_TOKENIZER, f"data.path={folder}", "vq.kind=multiscale", "vq.scales=1,2"],
            ),
            tmp_path / "a",
            progress=False,
        )
    assert not (tmp_path / "a").exists()  # refused before the run folder was written
    with pytest.raises(ValueError, match="needs model.kind=conv"):
        train(load_config(None, ["vq.kind=multiscale"]), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="power of two"):
        load_config(None, ["vq.kind=lfq", "vq.codebook_size=12"])


@pytest.mark.parametrize("how", ["finest", "pyramid", "coarse_then_all"])
def test_each_multiscale_init_sample_fills_the_codebook(folder, tmp_path, how):
    sets = [*TINY_TOKENIZER, f"data.path={folder}", "vq.kind=multiscale", "vq.scales=1,2,4"]
    sets += [
        "train.strategy=deferred",
        f"vq.ms_init={how}",
        "train.steps=5",
        "train.pretrain_steps=4",
    ]
    train(load_config(None, sets), tmp_path / "r", progress=False)
    from vqlab.training.logging import read_metrics

    init = [r for r in read_metrics(tmp_path / "r") if r["phase"] == "init"][0]
    assert init["step"] == 4
    assert init["init_method"] == ("kmeans" if how == "finest" else f"kmeans ({how})")
    codebook = Tokenizer.from_pretrained(tmp_path / "r").model.quantizer.codebook
    assert torch.isfinite(codebook).all() and torch.unique(codebook, dim=0).shape[0] == 8


VAR_PRIOR = [
    "task=prior",
    "data.name=tokens",
    "prior.kind=var",
    "prior.depth=1",
    "prior.width=32",
    "prior.heads=2",
    "train.batch_size=4",
    "train.log_every=2",
    "train.eval_every=4",
]


def test_var_prior_over_a_multiscale_tokenizer_trains_resumes_and_samples(
    folder, tmp_path, monkeypatch
):
    from vqlab.training.logging import read_metrics

    tokens = tokenizer_and_tokens(folder, tmp_path, ("vq.kind=multiscale", "vq.scales=1,2,4"))
    prior = [*VAR_PRIOR, f"data.path={tokens}", "train.steps=8", "train.checkpoint_every=4"]
    whole, again = crash_and_resume(monkeypatch, load_config(None, prior), tmp_path, 6)
    assert again == whole
    assert {"val_loss", "val_accuracy", "val_perplexity"} <= set(whole)
    assert "accuracy" in read_metrics(tmp_path / "whole")[0]
    out = tmp_path / "s"
    argv = ["sample", str(tmp_path / "whole"), "--n", "4", "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "sample.top_k=3", "--set", "sample.cfg=1.0"]) == 0
    ids = np.load(out / "samples.npz")["ids"]
    assert ids.shape == (4, 21) and ids.min() >= 0 and ids.max() < 8
    assert np.load(out / "images.npz")["images"].shape == (4, 16, 16, 3)


def test_var_prior_needs_a_multiscale_tokenizer(folder, tmp_path):
    tokens = tokenizer_and_tokens(folder, tmp_path)
    with pytest.raises(ValueError, match="needs a multi-scale tokenizer"):
        train(
            load_config(None, [*VAR_PRIOR, f"data.path={tokens}", "train.steps=2"]),
            tmp_path / "p",
            progress=False,
        )
    assert not (tmp_path / "p").exists()
