"""The feature net: shapes, augmentation, training on separable data, save/load and corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.evaluation.conftest import write_folder
from vqlab.data.errors import DataError
from vqlab.evaluation import FeatNetError, build_featnet, load_featnet, save_featnet, train_featnet
from vqlab.evaluation.featnet import augment, default_config


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_shapes_of_logits_features_and_maps(arch: str) -> None:
    net = build_featnet(default_config(arch, 3, 7))
    x = torch.rand(2, 3, 24, 20) * 2 - 1
    assert net(x).shape == (2, 7)
    assert net.features(x).shape == (2, net.num_features)
    maps = net.feature_maps(x)
    assert [m.shape[1] for m in maps] == list(net.cfg.widths)
    assert maps[0].shape[2:] == (24, 20) and maps[-1].shape[2:] == (6, 5)
    with pytest.raises(FeatNetError, match="side >= 16"):
        net(torch.zeros(1, 3, 15, 32))
    with pytest.raises(FeatNetError, match="3, H, W"):
        net(torch.zeros(1, 1, 16, 16))


def test_the_two_architectures_differ() -> None:
    resnet, vgg = (build_featnet(default_config(a, 3, 10)) for a in ("resnet", "vgg"))
    assert set(resnet.state_dict()) != set(vgg.state_dict())
    with pytest.raises(FeatNetError, match="unknown feature net arch"):
        default_config("alexnet", 3, 10)


def test_augment_crops_and_flips_but_keeps_pixels() -> None:
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    values = set(out.unique().tolist()) - {0.0}  # 0 is the padding
    assert values <= set(x.unique().tolist())
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, x)


def test_save_load_round_trip_gives_identical_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_featnet(default_config("resnet", 3, 10)).eval()
    info = save_featnet(net, tmp_path / "fn", {"note": "untrained"})
    loaded = load_featnet(tmp_path / "fn")
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(net.features(x), loaded.features(x))
    assert loaded.info["sha256"] == info["sha256"] and loaded.info["note"] == "untrained"
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_a_corrupt_or_missing_file_is_refused(tmp_path: Path) -> None:
    save_featnet(build_featnet(default_config("vgg", 3, 2)), tmp_path / "fn", {})
    weights = tmp_path / "fn" / "featnet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FeatNetError, match="does not match featnet.json"):
        load_featnet(tmp_path / "fn")
    # a damaged file whose sha256 was written down anyway: safetensors refuses it
    weights.write_bytes(b"not a safetensors file")
    info = json.loads((tmp_path / "fn" / "featnet.json").read_text())
    info["sha256"] = __import__("hashlib").sha256(b"not a safetensors file").hexdigest()
    (tmp_path / "fn" / "featnet.json").write_text(json.dumps(info))
    with pytest.raises(FeatNetError, match="cannot load the feature net"):
        load_featnet(tmp_path / "fn")
    with pytest.raises(FeatNetError, match="not a feature net folder"):
        load_featnet(tmp_path / "nowhere")


def test_training_on_bright_and_dark_images_reaches_high_accuracy(
    two_class_data: Path, tmp_path: Path
) -> None:
    info = train_featnet(
        "image_folder", two_class_data, tmp_path / "fn", steps=50, batch_size=32, progress=False
    )
    assert info["test_accuracy"] >= 0.95
    assert info["image_shape"] == [3, 16, 16] and info["num_classes"] == 2
    assert info["config"]["arch"] == "resnet" and info["steps"] == 50
    on_disk = json.loads((tmp_path / "fn" / "featnet.json").read_text())
    assert on_disk == info
    net = load_featnet(tmp_path / "fn")
    assert net.info["sha256"] == info["sha256"]


def test_training_needs_labels(tmp_path: Path, cache: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3)).astype(np.uint8)
    folder = write_folder(tmp_path / "plain", images, None)
    with pytest.raises(DataError, match="needs class labels"):
        train_featnet("image_folder", folder, tmp_path / "fn", steps=2, progress=False)
