"""load_dataset for image sources, and a conv run end to end on a tiny fake image folder."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vqlab import load_config, train
from vqlab.data.dataset import load_dataset
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.quantizers import VectorQuantizer
from vqlab.training.evaluate import evaluate


def make_folder(root, splits=("train", "test"), per_class=6, size=16):
    rng = np.random.default_rng(0)
    for split in splits:
        for c, colour in enumerate(([220, 30, 30], [30, 30, 220])):
            d = root / split / f"class{c}" if split else root / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                img = np.clip(rng.normal(colour, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_image_folder_splits_and_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "imgs")
    cfg = load_config(None, ["data.name=image_folder", f"data.path={root}"]).data
    ds = load_dataset(cfg, seed=0)
    assert ds.train_x.shape == (12, 3, 16, 16) and ds.test_x.shape == (12, 3, 16, 16)
    assert ds.train_x.min() >= -1 and ds.train_x.max() <= 1
    assert sorted(ds.train_labels.tolist()) == [0] * 6 + [1] * 6
    # class 0 is red: its red channel is high
    assert ds.train_x[ds.train_labels == 0, 0].mean() > 0.5


def test_folder_without_splits_holds_out_a_seeded_tenth(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "flat", splits=("",), per_class=10)
    cfg = load_config(None, ["data.name=image_folder", f"data.path={root}"]).data
    a, b = load_dataset(cfg, seed=0), load_dataset(cfg, seed=0)
    assert a.train_x.shape[0] == 18 and a.test_x.shape[0] == 2
    assert (a.test_x == b.test_x).all()
    # no image is in both sets
    flat_train = a.train_x.reshape(18, -1)
    for img in a.test_x.reshape(2, -1):
        assert not (flat_train == img).all(1).any()


def test_conv_run_on_images_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "imgs")
    cfg = load_config(
        None,
        [
            "data.name=image_folder",
            f"data.path={root}",
            "model.kind=conv",
            "model.width=8",
            "model.latent_dim=4",
            "vq.codebook_size=8",
            "vq.init_samples=8",
            "vq.kmeans_iters=3",
            "train.strategy=deferred",
            "train.steps=12",
            "train.pretrain_steps=6",
            "train.batch_size=4",
            "train.eval_every=6",
            "train.log_every=3",
        ],
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["codebook_size"] == 8 and 1 <= summary["perplexity"] <= 8
    # class metrics come from per-image pooled embeddings, one label per image
    assert 0 <= summary["probe_accuracy"] <= 1 and 0 <= summary["token_probe_accuracy"] <= 1
    assert summary["modes_with_tokens"] in (1, 2)
    assert "recon_mse" in summary and np.isfinite(summary["recon_mse"])


def test_two_colours_evaluate_to_known_answers(tmp_path, monkeypatch):
    # An identity "encoder" on red and blue images: every pixel is its own 3-d latent, the two
    # codes sit on the two colours, so the answers are known. Per-image pooling gives each image
    # its mean colour, which a linear probe separates perfectly (probe 1); every pixel takes its
    # colour's code, so each image's tokens pool to that code (token probe 1), and the 6 red and
    # 6 blue test images use the two codes equally (perplexity exactly 2, usage 1).
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "imgs")
    data = load_dataset(load_config(None, ["data.name=image_folder", f"data.path={root}"]).data, 0)
    quantizer = VectorQuantizer(3, 2, channel_dim=1)
    pixels = data.train_x.movedim(1, -1).reshape(-1, 3)  # (12 * 16 * 16, 3)
    quantizer.init_from_data(pixels, method="kmeans", iters=10, seed=0)
    model = VQAutoencoder(nn.Identity(), quantizer, nn.Identity())
    metrics, _ = evaluate(model, data, torch.device("cpu"), quantize=True)
    assert metrics["probe_accuracy"] == 1.0 and metrics["token_probe_accuracy"] == 1.0
    assert metrics["perplexity"] == pytest.approx(2.0, abs=1e-9) and metrics["usage"] == 1.0
    assert metrics["dead_codes"] == 0


def test_missing_image_path_is_a_data_error(tmp_path):
    from vqlab.data.errors import DataError

    cfg = load_config(None, ["data.name=cifar10", f"data.path={tmp_path / 'nope'}"]).data
    with pytest.raises(DataError):
        load_dataset(cfg, seed=0)


def test_test_limit_is_a_fixed_class_balanced_subset():
    base = ["data.peaks=4", "data.test_samples_per_peak=100", "data.test_limit=40"]
    a = load_dataset(load_config(None, base).data, seed=0)
    b = load_dataset(load_config(None, base).data, seed=5)
    assert a.test_x.shape[0] == 40
    assert len(set(a.test_labels.tolist())) == 4  # not just the first class (the set is sorted)
    # same rows for every run seed: the subset is drawn with its own fixed seed
    full = load_dataset(load_config(None, base[:2]).data, seed=0)
    rows = [(full.test_x == x).all(1).nonzero().item() for x in a.test_x]
    rows_b = [
        (load_dataset(load_config(None, base[:2]).data, seed=5).test_x == x).all(1).nonzero().item()
        for x in b.test_x
    ]
    assert rows == rows_b
