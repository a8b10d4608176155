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
