"""``vqlab sample``: load a trained prior run and write samples (ids, and images when the token
file names its tokenizer).

The samples folder holds ``samples.npz`` (``ids`` (N, L) int32, ``labels`` (N,) int64, -1 for
unconditional samples) and ``sampling.json`` (every sampler setting: sampler settings alone move
FD a lot, so each is recorded); with a tokenizer also ``images.npz`` (uint8 ``images``
N x H x W x C), ``grid.png`` (a row per class) and the first few samples as PNGs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqlab.config import load_config
from vqlab.devices import resolve_device
from vqlab.errors import ConfigError
from vqlab.memory import check_sampling_memory
from vqlab.outdir import check_out, clear_out
from vqlab.priors.pretrained import load_prior
from vqlab.priors.tokens import TokenData

PNG_COUNT = 8


def parse_labels(spec: str, n: int, num_classes: int) -> np.ndarray | None:
    """``uniform`` (classes in turn, equally many of each), ``none``, or a class number."""
    if spec == "none" or num_classes == 0:
        if spec not in ("none", "uniform"):
            raise ConfigError(f"--labels {spec}: this prior has no classes; use none")
        return None
    if spec == "uniform":
        return np.arange(n, dtype=np.int64) % num_classes
    try:
        c = int(spec)
    except ValueError:
        raise ConfigError(
            f"--labels must be uniform, none or a class number; got {spec!r}"
        ) from None
    if not 0 <= c < num_classes:
        raise ConfigError(f"--labels {c}: classes are 0..{num_classes - 1}")
    return np.full(n, c, dtype=np.int64)


def sample_run(
    run: str | Path,
    n: int,
    out: str | Path,
    *,
    labels: str = "uniform",
    overrides: list[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Sample ``n`` sequences from the prior of ``run`` into the folder ``out``; returns the
    settings and file list. ``overrides``: ``sample.*`` keys (``sample.steps=12``). A non-empty
    ``out`` is refused unless ``overwrite``; every check comes before anything is written."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1; got {n}")
    check_out(out, overwrite=overwrite)
    device = resolve_device(str(device))
    model, config, tokens, quantizer = load_prior(run, device)
    bad = [o for o in overrides or [] if not o.split("=", 1)[0].strip().startswith("sample.")]
    if bad:
        raise ConfigError(f"vqlab sample takes only sample.* settings; got {bad[0]!r}")
    # parsed and checked as --set is; a top_k/top_p of none takes this prior kind's default
    given = load_config(None, [f"prior.kind={config.prior.kind}", *(overrides or [])]).sample
    keys = {o.split("=", 1)[0].strip().split(".", 1)[1] for o in overrides or []}
    sc = dataclasses.replace(config.sample, **{k: getattr(given, k) for k in keys})
    check_sampling_memory(
        n, tokens.seq_len, tokens.codebook_size, sc.batch_size, sc.cfg > 0, device
    )
    lab = parse_labels(labels, n, tokens.num_classes)
    tok = _tokenizer(tokens)
    gen = torch.Generator().manual_seed(sc.seed)
    given = None if lab is None else torch.as_tensor(lab, device=device)
    extra = {"quantizer": quantizer} if quantizer is not None else {}
    ids = model.sample(
        n, sc, config.prior, labels=given, generator=gen, progress=progress, **extra
    ).cpu()
    out = clear_out(out, overwrite=overwrite)
    labels_arr = np.full(n, -1, np.int64) if lab is None else lab
    np.savez_compressed(out / "samples.npz", ids=ids.numpy().astype(np.int32), labels=labels_arr)
    info = {
        "run": str(run),
        "n": n,
        "labels": labels,
        **dataclasses.asdict(sc),
        "files": ["samples.npz"],
    }
    if tok is not None:
        info["files"] += _decode(tok, ids, labels_arr, out)
    (out / "sampling.json").write_text(json.dumps(info, indent=2))
    return info


def _tokenizer(tokens: TokenData):
    """The tokenizer that decodes the samples (None: ids only), its K checked against the
    prior's; loaded before sampling so that a mismatch costs nothing."""
    import sys

    from vqlab.tokenizer import Tokenizer

    if not tokens.tokenizer or not Path(tokens.tokenizer).exists():
        if tokens.tokenizer:  # the prior was trained on a tokenizer's ids, now gone
            print(f"vqlab: no tokenizer at {tokens.tokenizer!r}: ids only", file=sys.stderr)
        return None
    tok = Tokenizer.from_pretrained(tokens.tokenizer)
    if tok.codebook_size != tokens.codebook_size or tok.seq_len != tokens.seq_len:
        raise ConfigError(
            f"the tokenizer {tokens.tokenizer} has K={tok.codebook_size}, L={tok.seq_len}; this "
            f"prior samples K={tokens.codebook_size}, L={tokens.seq_len}: not its tokenizer"
        )
    return tok


def _decode(tok, ids: torch.Tensor, labels: np.ndarray, out: Path) -> list[str]:
    """Decode the ids with the prior's tokenizer into images.npz, grid.png and PNGs."""
    from PIL import Image

    images = np.concatenate(
        [tok.to_uint8(tok.decode(ids[i : i + 256])) for i in range(0, len(ids), 256)]
    )
    np.savez_compressed(out / "images.npz", images=images)
    save_grid(images, labels, out / "grid.png")
    names = []
    for i in range(min(PNG_COUNT, len(images))):
        Image.fromarray(images[i].squeeze() if images.shape[3] == 1 else images[i]).save(
            out / f"sample_{i:03d}.png"
        )
        names.append(f"sample_{i:03d}.png")
    return ["images.npz", "grid.png", *names]


def save_grid(images: np.ndarray, labels: np.ndarray, path: Path, per_row: int = 10) -> None:
    """A PNG grid of uint8 images (N, H, W, C): one row per class (labels >= 0), or rows of
    ``per_row`` images in order for unconditional samples."""
    from PIL import Image

    n, h, w, c = images.shape
    if (labels >= 0).any():
        rows = [images[labels == k][:per_row] for k in np.unique(labels[labels >= 0])]
    else:
        rows = [images[i : i + per_row] for i in range(0, min(n, per_row * per_row), per_row)]
    grid = np.full((len(rows) * (h + 2), per_row * (w + 2), c), 255, np.uint8)
    for r, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[r * (h + 2) : r * (h + 2) + h, j * (w + 2) : j * (w + 2) + w] = img
    Image.fromarray(grid.squeeze() if c == 1 else grid).save(path)
