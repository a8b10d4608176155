"""``vqlab tokenize``: a dataset's train and test splits through a tokenizer, into a token file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vqlab.data.dataset import load_dataset
from vqlab.outdir import check_out
from vqlab.priors.tokens import save_tokens
from vqlab.tokenizer import BATCH, Tokenizer, TokenizerError


def tokenize_dataset(
    tokenizer: Tokenizer,
    data_path: str | Path,
    out: str | Path,
    *,
    data_name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Encode the train and test splits of a dataset into a token file (the DESIGN contract).

    The file (``.npz``) holds ``train_ids``/``test_ids`` (N, L) int32 in row-major order,
    ``train_labels``/``test_labels`` (N,) int64 (-1 where there are none), ``codebook_size``,
    ``scales`` and ``tokenizer`` (the absolute path it came from); an existing ``out`` is
    refused unless ``overwrite`` (checked before any work and again before writing). The
    dataset is read as the tokenizer's training data was (``data.name`` and ``data.image_size``
    of its config, unless ``data_name`` says otherwise), with the whole test split.
    Returns a small summary.
    """
    check_out(out, overwrite=overwrite, file=True)
    dc = tokenizer.config.data
    if data_name is None and dc.name == "gaussian_mixture":
        raise TokenizerError("this tokenizer was trained on vectors, not images: give --data-name")
    cfg = dataclasses.replace(dc, name=data_name or dc.name, path=str(data_path), test_limit=0)
    data = load_dataset(cfg, tokenizer.config.seed)
    if data.input_shape != tokenizer.input_shape:
        c, h, w = (data.input_shape + (0, 0, 0))[:3]
        raise TokenizerError(
            f"the images at {data_path} are {h}x{w} with {c} channels; this tokenizer was trained "
            f"on {tokenizer.input_shape[1]}x{tokenizer.input_shape[2]} with "
            f"{tokenizer.input_shape[0]} (data.image_size in its config resizes)"
        )
    arrays = {}
    for split, x, y in (
        ("train", data.train_x, data.train_labels),
        ("test", data.test_x, data.test_labels),
    ):
        rows = range(0, x.shape[0], BATCH)
        ids = [
            tokenizer.encode(x[i : i + BATCH]).reshape(-1, tokenizer.seq_len)
            for i in tqdm(rows, desc=f"tokenize {split}", disable=not progress, leave=False)
        ]
        arrays[f"{split}_ids"] = torch.cat(ids).cpu().numpy()
        arrays[f"{split}_labels"] = (
            np.full(x.shape[0], -1, np.int64) if y is None else y.numpy().astype(np.int64)
        )
    check_out(out, overwrite=overwrite, file=True)
    save_tokens(
        out,
        codebook_size=tokenizer.codebook_size,
        scales=tokenizer.scales,
        tokenizer=str(Path(tokenizer.source).resolve()) if tokenizer.source else "",
        **arrays,
    )
    used = np.unique(arrays["train_ids"]).size
    return {
        "out": str(out),
        "train": int(arrays["train_ids"].shape[0]),
        "test": int(arrays["test_ids"].shape[0]),
        "seq_len": int(arrays["train_ids"].shape[1]),
        "codebook_size": tokenizer.codebook_size,
        "codes_used_train": int(used),
    }
