"""The model card that Tokenizer.save_pretrained writes: the hub mixin's front matter, and the
diagnostics at save time with the data they were measured on; no network call."""

import json
import socket

import numpy as np
import pytest
import torch
from image_fixtures import TINY_TOKENIZER, image_folder

from vqlab import Tokenizer, load_config, train
from vqlab.diagnostics import code_counts, perplexity, usage
from vqlab.models.card import read_front_matter


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    folder = image_folder(root / "images")
    import os

    os.environ["VQLAB_CACHE"] = str(root / "cache")
    train(load_config(None, [*TINY_TOKENIZER, f"data.path={folder}"]), root / "run", progress=False)
    return root / "run", folder


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("save_pretrained tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _images(folder, n=6):
    from PIL import Image

    paths = sorted(folder.glob("test/*/*.png"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_card_from_a_run_carries_its_summary(run, tmp_path, offline):
    tok = Tokenizer.from_pretrained(run[0])
    tok.save_pretrained(tmp_path / "p")
    card = (tmp_path / "p" / "README.md").read_text()
    front = read_front_matter(card)
    assert front["library_name"] == "vqlab" and "vector-quantization" in front["tags"]
    assert front["config"] == tok.config.flat()
    summary = json.loads((run[0] / "summary.json").read_text())
    saved = json.loads((tmp_path / "p" / "diagnostics.json").read_text())
    assert saved["metrics"]["usage"] == summary["usage"]
    assert saved["measured_on"].startswith("the test split of image_folder")
    assert f"| usage | {summary['usage']:.4g} |" in card
    assert "Collapse diagnosis at save time" in card and "Tokens collapse:" in card
    # a re-save of the saved folder keeps the diagnosis and where it came from
    Tokenizer.from_pretrained(tmp_path / "p").save_pretrained(tmp_path / "q")
    again = json.loads((tmp_path / "q" / "diagnostics.json").read_text())
    assert again["metrics"] == saved["metrics"] and again["measured_on"] == saved["measured_on"]


def test_card_measured_on_the_images_given(run, tmp_path, offline):
    tok = Tokenizer.from_pretrained(run[0])
    images = _images(run[1])
    tok.save_pretrained(tmp_path / "m", images=images, measured_on="6 test images")
    saved = json.loads((tmp_path / "m" / "diagnostics.json").read_text())
    counts = code_counts(tok.encode(images).reshape(-1), tok.codebook_size)
    assert saved["metrics"]["usage"] == usage(counts)
    assert saved["metrics"]["perplexity"] == pytest.approx(perplexity(counts), rel=1e-12)
    assert saved["measured_on"] == "6 test images" and "coverage_ratio" in saved["metrics"]
    assert saved["verdict"][0].startswith(
        ("**Tokens collapse: present**", "**Tokens collapse: absent**")
    )
    assert "Measured on 6 test images." in (tmp_path / "m" / "README.md").read_text()


def test_card_without_diagnostics_says_so(run, tmp_path):
    tok = Tokenizer.from_pretrained(run[0])
    fresh = Tokenizer(tok.model, tok.config, tok.input_shape)  # built in code: nothing measured
    fresh.save_pretrained(tmp_path / "n")
    card = (tmp_path / "n" / "README.md").read_text()
    assert "Not measured" in card and not (tmp_path / "n" / "diagnostics.json").exists()
    assert torch.equal(Tokenizer.from_pretrained(tmp_path / "n").model.quantizer.codebook,
                       tok.model.quantizer.codebook)  # fmt: skip
