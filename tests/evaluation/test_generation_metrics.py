"""real_reference: the generation metrics of real images, the row samples are read against."""

import numpy as np
import pytest
import torch

from vqlab.data.images import to_tensor
from vqlab.evaluation.featnet import build_featnet, default_config
from vqlab.evaluation.frechet import fd_kd
from vqlab.evaluation.generation import real_reference
from vqlab.evaluation.image_metrics import pixel_distance


@pytest.fixture(scope="module")
def net_and_images():
    torch.manual_seed(0)
    net = build_featnet(default_config("resnet", 3, 2)).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        pred = net(to_tensor(images)).argmax(1).numpy()
    return net, images, other, pred


def test_real_reference_scores_the_real_images(net_and_images):
    net, images, other, pred = net_and_images
    ref = real_reference(images, pred, other, net, pairs=500)
    # the featnet agrees with itself: labels set to its own predictions are all consistent
    assert ref["class_consistency"] == 1.0
    assert real_reference(images, 1 - pred, other, net, pairs=500)["class_consistency"] == 0.0
    assert ref["pixel_distance"] == pixel_distance(images, pred, pairs=500)["pixel_distance"]
    assert ref["g_fd"] == pytest.approx(fd_kd(images, other, net)["fd"])
    assert ref["n_real"] == 40


def test_real_reference_floor_of_a_set_against_itself_is_zero(net_and_images):
    net, images, _, pred = net_and_images
    assert real_reference(images, pred, images, net, pairs=100)["g_fd"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_real_reference_without_labels_has_no_class_consistency(net_and_images):
    net, images, other, _ = net_and_images
    ref = real_reference(images, None, other, net, pairs=100)
    assert ref["class_consistency"] is None and ref["pixel_distance"] > 0


def test_generation_findings_by_hand():
    from vqlab.experiments.generation import findings

    def row(tok, g_fd, pd, ppl):
        return {"tokenizer": tok, "g_fd": g_fd, "pixel_distance": pd,
                "sample_perplexity": ppl, "real_perplexity": 2 * ppl}  # fmt: skip

    rows = [row("standard", 10.0, 92.0, 300), row("standard", 10.2, 92.0, 300),
            row("deferred", 9.0, 86.0, 600), row("deferred", 9.4, 86.0, 600)]  # fmt: skip
    lines = findings(rows, {"pixel_distance": 87.0})
    # means 10.1 and 9.2: gap 0.9 against a widest seed range of 0.4
    assert lines[0].endswith("deferred lower by 0.900; the widest seed-to-seed range of one "
                             "tokenizer is 0.400 (the gap is larger).")  # fmt: skip
    assert "The higher value is standard's, 5.0 above the real images" in lines[1]
    assert "perplexity 300 (standard) vs 600 (deferred), against 600 and 1200" in lines[2]
    assert findings(rows[2:], {})[0].startswith("- A tokenizer has no finished prior")
