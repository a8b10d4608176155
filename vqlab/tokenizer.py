"""A trained tokenizer you can load and use: images -> token ids -> images.

```python
from vqlab import Tokenizer
tok = Tokenizer.from_pretrained("runs/x")   # a run folder, its checkpoint/, or save_pretrained's
ids = tok.encode(images)    # uint8 (B, H, W, C), or float (B, C, H, W) on the training scale
rec = tok.decode(ids)       # (B, h, w) int64 -> float (B, C, H, W) on the training scale
pictures = tok.to_uint8(rec)                # (B, H, W, C) uint8
tok.save_pretrained("out/", images=images)  # model.safetensors, config.json, README.md card
```

``save_pretrained`` writes a model card (``README.md``, :mod:`vqlab.models.card`) with the
collapse verdict and diagnostics: measured on the ``images`` it is given, else those the
tokenizer came with (a run folder's ``summary.json``, or an earlier ``save_pretrained``'s
``diagnostics.json``), else it says that none were measured.

The training scale of images is [-1, 1] (``x / 127.5 - 1`` of the uint8 pixels, as
:func:`vqlab.data.images.to_tensor` maps them). ``decode(encode(x))`` equals the model's own
reconstruction in eval mode bit for bit: the quantizer's output is exactly the looked-up code.
So ``decode`` returns the decoder's output unclipped, on the training scale but able to leave
[-1, 1] a little (e.g. [-0.87, 1.12]), as taming-transformers' and diffusers' VQ decoders do;
clipping would change the reconstruction metrics. :meth:`to_uint8` clips to pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vqlab.config import RunConfig
from vqlab.diagnostics import diagnose
from vqlab.diagnostics.verdict import collapse_verdict
from vqlab.errors import UserError
from vqlab.models.autoencoder import VQAutoencoder
from vqlab.models.card import diagnostics_payload, render_card
from vqlab.models.checkpoint import CONFIG_FILE, MODEL_FILE, load_checkpoint

BATCH = 256
CARD_FILE, DIAGNOSTICS_FILE = "README.md", "diagnostics.json"


class TokenizerError(UserError, ValueError):
    """Input a tokenizer cannot take (the CLI turns it into exit code 2)."""


class Tokenizer:
    """A VQ autoencoder in eval mode, with the image conventions of its training data."""

    def __init__(
        self,
        model: VQAutoencoder,
        config: RunConfig,
        input_shape: tuple[int, ...],
        source: str = "",
    ) -> None:
        if len(input_shape) != 3:
            raise TokenizerError(
                f"a tokenizer needs an image model; this one was trained on samples of shape "
                f"{tuple(input_shape)} ({config.model.kind})"
            )
        self.model, self.config = model.eval(), config
        self.input_shape = tuple(input_shape)  # (C, H, W)
        self.source = source
        self.device = next(model.parameters()).device
        c, h, w = self.input_shape
        f = config.model.downsample
        self.grid = (h // f, w // f)
        # a multi-scale (VAR) quantizer gives every scale's ids in one row, coarse to fine
        self.multiscale = hasattr(model.quantizer, "split_indices")
        # (metrics, the data they were measured on, in words), or None: the card's diagnosis
        self.diagnostics: tuple[dict, str] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
        """Load a run folder, its ``checkpoint/`` or a folder written by :meth:`save_pretrained`.

        Raises FileNotFoundError for a folder without a checkpoint, and CheckpointError for
        weights that do not fit their config.
        """
        model, config, input_shape = load_checkpoint(path, device)
        tok = cls(model, config, input_shape, source=str(path))
        tok.diagnostics = _stored_diagnostics(Path(path), config)
        return tok

    def save_pretrained(
        self, directory: str | Path, *, images=None, measured_on: str | None = None
    ) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` (plus
        ``diagnostics.json`` when diagnostics are known); no optimizer, no training state, no
        network call.

        images: a batch (as :meth:`encode` takes) to measure the diagnostics on now;
        measured_on: what those images are, in words, for the card."""
        directory = Path(directory)
        if images is not None:
            where = measured_on or f"{len(images)} images given to save_pretrained"
            self.diagnostics = (self.measure(images), where)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / MODEL_FILE))
        meta = {"config": self.config.flat(), "input_shape": list(self.input_shape)}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        metrics, where = self.diagnostics or (None, "")
        verdict = None
        if metrics is not None:
            verdict = collapse_verdict(metrics, dim=self.config.model.latent_dim)["verdict"]
            (directory / DIAGNOSTICS_FILE).write_text(diagnostics_payload(metrics, where, verdict))
        card = render_card(meta["config"], self.input_shape, metrics, where, verdict)
        (directory / CARD_FILE).write_text(card)
        return directory

    @torch.no_grad()
    def measure(self, images) -> dict:
        """Collapse diagnostics of these images' tokens: usage, perplexity, dead codes, the
        codebook's spread and effective dimension, and (single-scale) the encoder outputs'
        coverage and quantization error, plus ``recon_mse`` on the training scale."""
        x = self.to_tensor(images)
        q, ids, emb, sq = self.model.quantizer, [], [], 0.0
        for i in range(0, x.shape[0], BATCH):
            z_e = self.model.encode(x[i : i + BATCH])
            out = q(z_e)
            ids.append(out.indices.reshape(-1))
            if not self.multiscale:
                emb.append(q.to_code_space(z_e))
            sq += float(((self.model.decode(out.quantized) - x[i : i + BATCH]) ** 2).sum())
        if not ids:
            raise TokenizerError("save_pretrained got no images to measure")
        metrics = diagnose(
            codebook=q.codebook,
            embeddings=torch.cat(emb) if emb else None,
            indices=torch.cat(ids),
        )
        metrics["recon_mse"] = sq / x.numel()
        return metrics

    @property
    def codebook_size(self) -> int:
        return self.model.quantizer.codebook_size

    @property
    def scales(self) -> list[int]:
        """Side lengths of the token grids, coarse first (one grid: ``[h]``)."""
        return list(self.model.quantizer.scales) if self.multiscale else [self.grid[0]]

    @property
    def seq_len(self) -> int:
        """Token ids per image: h*w, or the sum of the scales' squares for a multi-scale one."""
        return sum(p * p for p in self.scales) if self.multiscale else self.grid[0] * self.grid[1]

    def to_tensor(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) or float (B, C, H, W) on the training scale -> float (B, C, H, W),
        checked against the image shape the tokenizer was trained on."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not torch.is_tensor(images) or images.ndim != 4:
            shape = tuple(getattr(images, "shape", ()))
            raise TokenizerError(f"images must be a 4-d batch; got shape {shape}")
        c, h, w = self.input_shape
        if images.dtype == torch.uint8:
            if tuple(images.shape[1:]) != (h, w, c):
                raise TokenizerError(
                    f"uint8 images must be (B, {h}, {w}, {c}) (H, W, C) for this tokenizer; "
                    f"got {tuple(images.shape)}"
                )
            x = images.float().div_(127.5).sub_(1.0).permute(0, 3, 1, 2).contiguous()
        elif images.is_floating_point():
            if tuple(images.shape[1:]) != (c, h, w):
                raise TokenizerError(
                    f"float images must be (B, {c}, {h}, {w}) (C, H, W) on the training scale "
                    f"[-1, 1] for this tokenizer; got {tuple(images.shape)}"
                )
            x = images.float()
        else:
            raise TokenizerError(f"images must be uint8 or floating point; got {images.dtype}")
        return x.to(self.device)

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images -> token ids (B, h, w) int64, batched ((B, L) for a multi-scale tokenizer)."""
        x = self.to_tensor(images)
        q = self.model.quantizer
        out = []
        for i in range(0, x.shape[0], BATCH):
            z_e = self.model.encode(x[i : i + BATCH])  # (b, D, h, w)
            out.append(q(z_e).indices)  # (b, h, w)
        if not out:
            shape = (self.seq_len,) if self.multiscale else self.grid
            return torch.zeros(0, *shape, dtype=torch.long, device=self.device)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Token ids (B, h, w), or (B, h*w) in row-major order -> float (B, C, H, W).

        The output is the decoder's, not clipped: on the training scale [-1, 1] but able to
        overshoot it a little (see the module docstring); :meth:`to_uint8` clips. Raises
        :class:`TokenizerError` for ids that are not integers, not in [0, K), not of this
        tokenizer's grid, or an empty batch.
        """
        ids = torch.as_tensor(np.asarray(ids) if isinstance(ids, np.ndarray) else ids)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TokenizerError(f"token ids must be integers; got {ids.dtype}")
        if ids.numel() == 0:
            raise TokenizerError(
                f"no token ids to decode (an empty batch, shape {tuple(ids.shape)})"
            )
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.codebook_size:
            raise TokenizerError(
                f"token ids must lie in [0, {self.codebook_size}); got ids in [{lo}, {hi}]"
            )
        h, w = self.grid
        if self.multiscale:
            if ids.ndim != 2 or ids.shape[1] != self.seq_len:
                raise TokenizerError(
                    f"token ids must be (B, {self.seq_len}) (scales {self.scales}, coarse "
                    f"first); got {tuple(ids.shape)}"
                )
        elif ids.ndim == 2 and ids.shape[1] == h * w:
            ids = ids.reshape(-1, h, w)  # (B, L) row-major -> (B, h, w)
        if not self.multiscale and (ids.ndim != 3 or tuple(ids.shape[1:]) != (h, w)):
            raise TokenizerError(f"token ids must be (B, {h}, {w}); got {tuple(ids.shape)}")
        ids = ids.long().to(self.device)
        out = [
            self.model.decode(self.model.quantizer.lookup(ids[i : i + BATCH]))
            for i in range(0, ids.shape[0], BATCH)
        ]
        return torch.cat(out)

    @staticmethod
    def to_uint8(x: torch.Tensor) -> np.ndarray:
        """float (B, C, H, W) on the training scale -> uint8 (B, H, W, C) pictures (rounded,
        clipped: the inverse of ``x / 127.5 - 1`` for values that came from pixels)."""
        pixels = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp_(0, 255)
        return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _stored_diagnostics(path: Path, config: RunConfig) -> tuple[dict, str] | None:
    """What a loaded tokenizer's folder says about its collapse: an earlier card's
    ``diagnostics.json``, or the run's ``summary.json`` (next to ``checkpoint/``)."""
    folders = [path, path.parent] if path.name == "checkpoint" else [path]
    for folder in folders:
        saved = folder / DIAGNOSTICS_FILE
        payload = json.loads(saved.read_text()) if saved.is_file() else {}
        if isinstance(payload, dict) and {"metrics", "measured_on"} <= set(payload):
            return payload["metrics"], payload["measured_on"]
    for folder in folders:
        summary = folder / "summary.json"
        if summary.is_file() and (folder / "checkpoint").is_dir():
            d = config.data
            limit = f", at most {d.test_limit} images" if d.test_limit else ""
            where = (
                f"the test split of {d.name} ({d.path}{limit}), by `vqlab train` at the end of "
                "training (its summary.json)"
            )
            metrics = json.loads(summary.read_text())
            metrics.setdefault("codebook_size", config.vq.codebook_size)
            return metrics, where
    return None
