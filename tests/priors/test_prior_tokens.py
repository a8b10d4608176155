"""The token file: a round trip, and one one-line error per breach of the contract."""

import numpy as np
import pytest

from vqlab.priors.tokens import TokenData, TokenFileError, load_tokens, save_tokens


def _arrays(n_train=6, n_test=3, scales=(1, 2), k=8, labels=True, seed=0):
    rng = np.random.default_rng(seed)
    seq = sum(s * s for s in scales)
    return dict(
        train_ids=rng.integers(0, k, (n_train, seq)).astype(np.int32),
        test_ids=rng.integers(0, k, (n_test, seq)).astype(np.int32),
        train_labels=(np.arange(n_train) % 3 if labels else np.full(n_train, -1)).astype(np.int64),
        test_labels=(np.arange(n_test) % 3 if labels else np.full(n_test, -1)).astype(np.int64),
        codebook_size=np.asarray(k),
        scales=np.asarray(scales),
        tokenizer=np.asarray("runs/tok"),
    )


def _write(tmp_path, **changes):
    raw = _arrays()
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / "t.npz"
    np.savez(path, **raw)
    return path


def test_round_trip(tmp_path):
    a = _arrays()
    path = tmp_path / "sub" / "tokens"  # no suffix: written exactly here, not tokens.npz
    saved = save_tokens(
        path,
        train_ids=a["train_ids"].astype(np.int64),  # any int dtype; stored as int32
        test_ids=a["test_ids"],
        codebook_size=8,
        scales=[1, 2],
        train_labels=a["train_labels"],
        test_labels=a["test_labels"],
        tokenizer="runs/tok",
    )
    data = load_tokens(path)
    assert isinstance(data, TokenData)
    assert data.train_ids.dtype == np.int32 and data.train_labels.dtype == np.int64
    np.testing.assert_array_equal(data.train_ids, a["train_ids"])
    np.testing.assert_array_equal(data.test_labels, a["test_labels"])
    assert (data.codebook_size, data.scales, data.tokenizer) == (8, (1, 2), "runs/tok")
    assert data.num_classes == 3 and data.seq_len == 5
    assert saved.num_classes == data.num_classes
    with pytest.raises(AttributeError):  # frozen
        data.codebook_size = 9


def test_unlabelled_and_empty_test_split(tmp_path):
    a = _arrays(labels=False)
    path = tmp_path / "t.npz"
    save_tokens(
        path,
        train_ids=a["train_ids"],
        test_ids=a["test_ids"][:0],
        codebook_size=8,
        scales=[1, 2],
    )
    data = load_tokens(path)
    assert data.num_classes == 0 and data.tokenizer == ""
    assert (data.train_labels == -1).all() and data.test_ids.shape == (0, 5)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"scales": None}, "missing keys \\['scales'\\]"),
        ({"train_ids": _arrays()["train_ids"].astype(np.int64)}, "train_ids must be int32"),
        ({"test_ids": np.zeros((3, 4), np.int32)}, "test_ids must have shape \\(N, 5\\)"),
        ({"train_ids": np.full((6, 5), 8, np.int32)}, "outside \\[0, 8\\)"),
        ({"test_ids": np.full((3, 5), -1, np.int32)}, "outside \\[0, 8\\)"),
        ({"scales": np.asarray([2])}, "must have shape \\(N, 4\\)"),
        ({"train_labels": np.arange(6, dtype=np.int32)}, "train_labels must be int64"),
        ({"train_labels": np.zeros(5, np.int64)}, "train_labels must have shape \\(6,\\)"),
        ({"train_labels": np.asarray([0, 1, -1, 2, 0, 1])}, "all -1 .* or all >= 0"),
        ({"test_labels": np.full(3, -1, np.int64)}, "both be -1 or both set"),
        ({"test_labels": np.asarray([0, 1, 7])}, "test_labels has class 7"),
        ({"codebook_size": np.asarray(0)}, "codebook_size must be a positive int"),
        ({"codebook_size": np.asarray(8.0)}, "codebook_size must be a positive int"),
        ({"scales": np.asarray([[1, 2]])}, "scales must be a 1-D int array"),
        ({"scales": np.asarray([0, 2])}, "scales must be positive"),
        ({"tokenizer": np.asarray(3)}, "tokenizer must be a str"),
        (
            {"train_ids": np.zeros((0, 5), np.int32), "train_labels": np.zeros(0, np.int64)},
            "train_ids is empty",
        ),
    ],
)
def test_each_breach_is_one_line(tmp_path, changes, match):
    path = _write(tmp_path, **changes)
    with pytest.raises(TokenFileError, match=match) as e:
        load_tokens(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_unreadable_files(tmp_path):
    with pytest.raises(TokenFileError, match="no such token file"):
        load_tokens(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TokenFileError, match="not a readable .npz"):
        load_tokens(bad)


def test_save_refuses_out_of_range_before_casting(tmp_path):
    a = _arrays()
    huge = a["train_ids"].astype(np.int64)
    huge[0, 0] = 2**32  # would wrap to 0 in int32
    with pytest.raises(TokenFileError, match="outside"):
        save_tokens(
            tmp_path / "t.npz",
            train_ids=huge,
            test_ids=a["test_ids"],
            codebook_size=8,
            scales=[1, 2],
        )
    assert not (tmp_path / "t.npz").exists()
