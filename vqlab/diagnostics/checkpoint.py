"""Reading a codebook, token ids, latents and labels out of other people's files.

Files: safetensors, ``.npy``, ``.npz``, and torch checkpoints (``.pt``, ``.pth``, Lightning's
``.ckpt`` with its ``state_dict`` nesting). A torch checkpoint is only ever opened with
``torch.load(weights_only=True)``: what that refuses (a pickle that would run code) is one
:class:`CodebookError` line, and none of it runs.

The codebook is found by the layouts in use, unless ``FILE:KEY`` names the tensor:

- ``*embedding.weight`` (K, D): taming, LlamaGen, VAR and diffusers (``quantize.embedding``);
- ``*_codebook.embed`` (H, K, d): vector-quantize-pytorch, heads first (head 0 when H > 1);
- ``*quantizer.codebook`` / ``*codebook_raw`` (K, d): vqlab's own checkpoints;
- a file that holds one 2-D (or (1, K, d)) array: that array.

Several candidates: :class:`CodebookError` lists them and asks for KEY. Glossary: K codes of
dimension D; ids (N, ...) ints; latents (N, ..., D) floats; labels (N,) ints.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqlab.errors import UserError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
LAYOUTS = (
    ("embedding.weight", 2, "nn.Embedding codebook (taming / LlamaGen / VAR / diffusers)"),
    ("_codebook.embed", 3, "vector-quantize-pytorch (heads, K, d)"),
    ("quantizer.codebook", 2, "vqlab"),
    ("codebook_raw", 2, "vqlab (gradient-trained cosine codes, stored raw)"),
)


class CodebookError(UserError, ValueError):
    """A file, key or array that cannot be diagnosed (the CLI: one line, exit code 2)."""


@dataclass(frozen=True)
class Codebook:
    """codes: (K, D) float32; source: ``FILE:KEY`` and the layout it was recognised as."""

    codes: torch.Tensor
    source: str


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> one dict of dotted keys (Lightning's ``state_dict`` and friends)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def load_arrays(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in ``path``, by dotted key (``""`` for a bare ``.npy`` array)."""
    path = Path(path)
    if not path.is_file():
        raise CodebookError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tree: object = load_file(str(path))
        elif suffix == ".npy":
            tree = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                tree = {k: torch.from_numpy(z[k]) for k in z.files}
        elif suffix in TORCH_SUFFIXES:
            tree = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CodebookError(
                f"{path}: unknown file type {suffix!r}; give .safetensors, .npy, .npz, .pt, "
                ".pth or .ckpt"
            )
    except pickle.UnpicklingError as err:
        # torch's message is many lines; the one that names what was refused is kept
        why = [ln.strip() for ln in str(err).splitlines() if "Unsupported" in ln]
        what = why[0].split(" was not")[0].removeprefix("WeightsUnpickler error: ") if why else ""
        raise CodebookError(
            f"{path}: refused to load: it holds pickled objects, not only tensors "
            f"({what or 'refused'}); vqlab reads checkpoints with torch.load(weights_only=True) "
            "only, so none of it ran (if you trust the file, save its tensors alone, e.g. "
            "torch.save(ckpt['state_dict'], 'weights.pt'), and diagnose that)"
        ) from None
    except (ValueError, OSError, RuntimeError, zipfile.BadZipFile) as err:
        if isinstance(err, CodebookError):
            raise
        raise CodebookError(f"{path}: cannot read it ({type(err).__name__}: {err})") from None
    flat = _flatten(tree)
    return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}


def _candidates(arrays: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(key, layout) of every tensor that looks like a codebook."""
    found = []
    for key, t in arrays.items():
        if not t.is_floating_point():
            continue
        for suffix, ndim, layout in LAYOUTS:
            # whole dotted components: ``pos_embedding.weight`` is no codebook
            if (key == suffix or key.endswith("." + suffix)) and t.dim() == ndim:
                found.append((key, layout))
                break
    return found


def _as_matrix(t: torch.Tensor, where: str) -> tuple[torch.Tensor, str]:
    """(K, D) from a (K, D) or (H, K, D) float tensor (head 0), checked for NaN/Inf."""
    if not t.is_floating_point():
        raise CodebookError(f"{where} is {t.dtype}, not a floating-point codebook")
    note = ""
    if t.dim() == 3:
        note = f", head 0 of {t.shape[0]}" if t.shape[0] > 1 else ""
        t = t[0]
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise CodebookError(f"{where} has shape {tuple(t.shape)}; a codebook is (K, D)")
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise CodebookError(f"{where} has {bad} NaN or infinite values of {t.numel()}")
    return t.float(), note


def load_codebook(spec: str | Path) -> Codebook:
    """The codebook of ``FILE`` or ``FILE:KEY`` (see the module doc for how it is found)."""
    text = str(spec)
    path, key = Path(text), None
    if not path.is_file() and ":" in text:
        head, _, key = text.rpartition(":")
        path = Path(head)
    arrays = load_arrays(path)
    if key is not None:
        if key not in arrays:
            names = [k for k, _ in _candidates(arrays)] or sorted(arrays)[:20]
            raise CodebookError(f"{path} has no tensor {key!r}; candidates: {', '.join(names)}")
        codes, note = _as_matrix(arrays[key], f"{path}:{key}")
        return Codebook(codes, f"{path}:{key} (given{note})")
    found = _candidates(arrays)
    if len(arrays) == 1 and not found:
        ((only, t),) = arrays.items()
        codes, note = _as_matrix(t, f"{path}:{only}" if only else str(path))
        return Codebook(codes, f"{path}{':' + only if only else ''} (the only array{note})")
    if len(found) == 1:
        ((name, layout),) = found
        codes, note = _as_matrix(arrays[name], f"{path}:{name}")
        return Codebook(codes, f"{path}:{name} ({layout}{note})")
    if not found:
        floats = [k for k, t in arrays.items() if t.is_floating_point() and t.dim() in (2, 3)]
        raise CodebookError(
            f"{path}: no tensor in a known codebook layout; give FILE:KEY, e.g. one of: "
            + ", ".join(floats[:20])
        )
    raise CodebookError(
        f"{path} holds several codebooks: {', '.join(k for k, _ in found)}; give FILE:KEY"
    )


def _one_array(path: Path, names: tuple[str, ...], what: str) -> torch.Tensor:
    arrays = load_arrays(path)
    for name in names:
        if name in arrays:
            return arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise CodebookError(
        f"{path} holds {', '.join(sorted(arrays))}; none is the {what} ({' or '.join(names)})"
    )


def load_ids(path: str | Path, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (N, ...) int64 and the token file's test labels (N,) (or None).

    A token file of the contract gives ``test_ids`` (its ``codebook_size`` must equal K);
    any other integer array (``.npz`` with one array or ``ids``/``indices``, ``.npy``) is used
    whole. Every id must lie in [0, K)."""
    path = Path(path)
    arrays = load_arrays(path)
    labels = None
    if "test_ids" in arrays:
        ids = arrays["test_ids"]
        if "codebook_size" in arrays and int(arrays["codebook_size"]) != codebook_size:
            raise CodebookError(
                f"{path} holds ids of a K={int(arrays['codebook_size'])} tokenizer but the "
                f"codebook has K={codebook_size} codes"
            )
        if "test_labels" in arrays and bool((arrays["test_labels"] >= 0).all()):
            labels = arrays["test_labels"].long()
    else:
        ids = _one_array(path, ("ids", "indices"), "token ids")
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.dim() == 0:
        raise CodebookError(f"{path}: ids must be an integer array (N, ...); got {ids.dtype}")
    ids = ids.long()
    if ids.numel() == 0:
        raise CodebookError(f"{path}: no ids")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= codebook_size:
        raise CodebookError(
            f"{path}: ids lie in [{lo}, {hi}] but the codebook has K={codebook_size} codes "
            f"(ids must lie in [0, {codebook_size}))"
        )
    return ids, labels


def load_latents(path: str | Path, dim: int) -> torch.Tensor:
    """Encoder outputs (N, ..., D) float -> (N, positions, D) float32; D must be the code's."""
    path = Path(path)
    z = _one_array(path, ("latents", "z_e", "embeddings"), "latents")
    if not z.is_floating_point() or z.dim() < 2:
        raise CodebookError(f"{path}: latents must be a float array (N, ..., D); got {z.dtype}")
    if z.shape[-1] != dim:
        raise CodebookError(
            f"{path}: latents end in D={z.shape[-1]} but the codebook has D={dim} (give them "
            "channel-last, (N, ..., D))"
        )
    if not bool(torch.isfinite(z).all()):
        raise CodebookError(f"{path}: latents hold NaN or infinite values")
    return z.reshape(z.shape[0], -1, dim).float()


def load_labels(path: str | Path) -> torch.Tensor:
    """Class labels (N,) int64."""
    path = Path(path)
    y = _one_array(path, ("labels", "test_labels", "y"), "labels")
    if y.is_floating_point() or y.dim() != 1:
        raise CodebookError(f"{path}: labels must be an integer array (N,); got {tuple(y.shape)}")
    return y.long()
