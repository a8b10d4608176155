"""Tokenizer: load a trained run, encode images to ids, decode ids back; vqlab tokenize."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from image_fixtures import TINY_TOKENIZER, image_folder

from vqlab import Tokenizer, load_config, train
from vqlab.cli import main
from vqlab.data.images import to_tensor
from vqlab.priors.tokens import load_tokens
from vqlab.tokenizer import TokenizerError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    folder = image_folder(root / "images")
    cfg = load_config(None, [*TINY_TOKENIZER, f"data.path={folder}"])
    import os

    os.environ["VQLAB_CACHE"] = str(root / "cache")
    train(cfg, root / "run", progress=False)
    return root / "run", folder


def _images(folder, n=5):
    from PIL import Image

    paths = sorted(folder.glob("test/*/*.png"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_decode_of_encode_is_the_models_own_reconstruction_bit_for_bit(run):
    tok = Tokenizer.from_pretrained(run[0])
    images = _images(run[1])
    ids = tok.encode(images)
    assert ids.dtype == torch.int64 and ids.shape == (5, 4, 4)  # 16 px, downsample 4
    x = to_tensor(images)
    with torch.no_grad():
        out = tok.model(x, quantize=True)
    assert torch.equal(tok.decode(ids), out.recon)
    assert torch.equal(ids, out.vq.indices)
    # float input on the training scale gives the same ids; (B, L) row-major ids decode alike
    assert torch.equal(tok.encode(x), ids)
    assert torch.equal(tok.decode(ids.reshape(5, 16)), out.recon)


def test_to_uint8_inverts_the_training_scale():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    assert np.array_equal(Tokenizer.to_uint8(to_tensor(pixels)), pixels)
    assert Tokenizer.to_uint8(torch.full((1, 3, 2, 2), 5.0)).max() == 255  # clipped


def test_save_pretrained_round_trip_and_no_training_state(run, tmp_path):
    tok = Tokenizer.from_pretrained(run[0])
    tok.save_pretrained(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "README.md",  # the model card (tests/test_tokenizer_card.py)
        "config.json",
        "diagnostics.json",
        "model.safetensors",
    ]
    again = Tokenizer.from_pretrained(tmp_path / "p")
    images = _images(run[1])
    assert torch.equal(again.encode(images), tok.encode(images))
    assert again.codebook_size == 8 and again.scales == [4]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 8, 8, 3), np.uint8), r"\(B, 16, 16, 3\)"),
        (np.zeros((2, 16, 16, 1), np.uint8), r"\(B, 16, 16, 3\)"),
        (torch.zeros(2, 1, 16, 16), r"\(B, 3, 16, 16\)"),
        (np.zeros((16, 16, 3), np.uint8), "4-d batch"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.int32), "uint8 or floating"),
    ],
)
def test_images_of_the_wrong_size_or_channels_are_refused(run, bad, message):
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_pretrained(run[0]).encode(bad)


def test_decode_refuses_ids_of_another_grid_or_range(run):
    tok = Tokenizer.from_pretrained(run[0])
    with pytest.raises(TokenizerError, match=r"\(B, 4, 4\)"):
        tok.decode(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(TokenizerError, match=r"\[0, 8\)"):
        tok.decode(torch.full((1, 4, 4), 8))
    with pytest.raises(TokenizerError, match=r"\[0, 8\); got ids in \[-1, 0\]"):
        tok.decode(np.array([[[-1] + [0] * 15]]).reshape(1, 4, 4))
    for empty in (np.zeros((0, 16), np.int64), torch.zeros(0, 4, 4, dtype=torch.long)):
        with pytest.raises(TokenizerError, match="empty batch"):
            tok.decode(empty)


@settings(max_examples=25)
@given(
    ids=hnp.arrays(
        np.int64,
        st.sampled_from([(0, 16), (2, 16), (1, 4, 4), (3, 4, 4), (2, 3, 3), (16,), (2, 17)]),
        elements=st.integers(-(2**40), 2**40) | st.integers(-2, 9),
    )
)
def test_decode_answers_any_ids_or_raises_tokenizer_error(run, ids):
    """Any integer array: decoded (ids in [0, K) of the grid, B >= 1) or a TokenizerError;
    never another exception."""
    tok = Tokenizer.from_pretrained(run[0])
    fits = ids.size > 0 and ids.min() >= 0 and ids.max() < 8 and ids.shape[-2:] in ((4, 4),)
    fits = fits or (
        ids.ndim == 2 and ids.shape[1] == 16 and ids.size > 0 and 0 <= ids.min() and ids.max() < 8
    )
    if fits:
        assert tok.decode(ids).shape == (len(ids), 3, 16, 16)
    else:
        with pytest.raises(TokenizerError):
            tok.decode(ids)


def test_tokenize_writes_the_token_file_of_the_contract(run, tmp_path, capsys):
    out = tmp_path / "tokens.npz"
    assert main(["tokenize", str(run[0]), "--data", str(run[1]), "--out", str(out), "--quiet"]) == 0
    tokens = load_tokens(out)
    raw = np.load(out)
    assert raw["train_ids"].dtype == np.int32 and raw["train_ids"].shape == (12, 16)
    assert raw["test_labels"].dtype == np.int64 and list(raw["test_labels"]) == [0] * 6 + [1] * 6
    assert int(raw["codebook_size"]) == 8 and list(raw["scales"]) == [4]
    assert str(raw["tokenizer"]) == str(run[0])
    tok = Tokenizer.from_pretrained(run[0])
    # row-major ids, the same as encoding the test images directly
    direct = tok.encode(_images(run[1], 12)).reshape(12, 16).numpy()
    assert np.array_equal(raw["test_ids"], direct)
    assert tokens.num_classes == 2


def test_tokenize_bad_input_is_one_line_exit_2(run, tmp_path, capsys):
    assert main(["tokenize", str(tmp_path), "--data", str(run[1]), "--out", "x.npz"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    other = image_folder(tmp_path / "big", size=32, per_class=1)
    out = str(tmp_path / "t.npz")
    assert main(["tokenize", str(run[0]), "--data", str(other), "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "are 32x32 with 3 channels" in err[0] and "trained on 16x16" in err[0]
