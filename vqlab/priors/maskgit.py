"""MaskGIT prior: a bidirectional transformer over token ids, its masked loss and its eval.

Ids seen by the embedding (K = codebook_size, C = num_classes):
    0..K-1 codes, K = MASK, K+1+c = class c, K+1+C = null class (classifier-free guidance).
The sequence is ``[class token, L image tokens]`` when C > 0, else the L tokens alone. The
output head is a separate ``Linear(width, K)`` (not tied to the embedding): it has exactly K
outputs, so MASK, class and null ids can never be predicted or sampled.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.priors.schedules import mask_count


def uniform(
    shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """U[0, 1) float32 of ``shape`` on ``device``, drawn on the generator's own device.

    Drawing where the generator lives keeps a seeded CPU generator usable (and bitwise
    reproducible) with a model on any device; pass a generator on the model's device to avoid
    the copy.
    """
    src = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=src).to(device)


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); no attention mask."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.1):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width),
            nn.GELU(),
            nn.Linear(mlp_ratio * width, width),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, W) -> (B, S, W)."""
        b, s, w = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, w // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, S, W/H)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, S, W/H)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, s, w)))
        return x + self.drop(self.mlp(self.ln2(x)))


class MaskGIT(nn.Module):
    """Bidirectional transformer prior over L token ids with K codes and C classes."""

    kind = "maskgit"  # its name in vqlab.registry.PRIORS

    def __init__(
        self,
        codebook_size: int,
        seq_len: int,
        num_classes: int = 0,
        depth: int = 4,
        width: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        if codebook_size < 1 or seq_len < 1 or num_classes < 0 or depth < 1:
            raise ValueError(
                f"need codebook_size >= 1, seq_len >= 1, num_classes >= 0, depth >= 1; got "
                f"{codebook_size}, {seq_len}, {num_classes}, {depth}"
            )
        self.codebook_size, self.seq_len, self.num_classes = codebook_size, seq_len, num_classes
        # what a checkpoint needs to rebuild the module: MaskGIT(**model.hparams)
        self.hparams = dict(
            codebook_size=codebook_size, seq_len=seq_len, num_classes=num_classes, depth=depth,
            width=width, heads=heads, dropout=dropout, mlp_ratio=mlp_ratio,
        )  # fmt: skip
        self.prefix = 1 if num_classes > 0 else 0  # the class token, when there are classes
        self.tok_emb = nn.Embedding(codebook_size + 1 + num_classes + 1, width)
        self.pos_emb = nn.Parameter(torch.zeros(1, self.prefix + seq_len, width))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # GPT-2 style small init: logits start near uniform, so the first loss is ~log K
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    def class_id(self, c: int) -> int:
        """Embedding id of class ``c`` in [0, num_classes)."""
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} outside [0, {self.num_classes})")
        return self.codebook_size + 1 + c

    @property
    def null_id(self) -> int:
        """Embedding id of the null class (label dropped, or unconditional sampling)."""
        return self.codebook_size + 1 + self.num_classes

    def class_tokens(
        self, labels: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        """(B,) class-token ids: K+1+label, and the null id where the label is < 0 or None."""
        if labels is None:
            return torch.full((batch,), self.null_id, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        return torch.where(labels < 0, self.null_id, self.codebook_size + 1 + labels)

    def sample(self, n: int, settings, prior, **kwargs) -> torch.Tensor:
        """``n`` sequences (n, L) by iterative decoding with the ``sample.*`` ``settings`` and
        ``prior.mask_schedule`` (:func:`vqlab.priors.sampling.maskgit_sample`); ``kwargs``:
        ``labels``, ``generator``, ``progress``."""
        from vqlab.registry import PRIORS

        return PRIORS.get(self.kind).sample(self, n, settings, prior, **kwargs)

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, L) long in [0, K] (K = MASK); labels (B,) long in [0, C) or -1 (null), or
        None (all null). Returns logits (B, L, K) over the codes only."""
        b, seq = ids.shape
        if seq != self.seq_len:
            raise ValueError(f"ids have length {seq}, the model was built for {self.seq_len}")
        if self.num_classes == 0 and labels is not None:
            raise ValueError("labels given to a MaskGIT built with num_classes=0")
        x = ids.long()
        if self.prefix:
            x = torch.cat([self.class_tokens(labels, b, ids.device)[:, None], x], dim=1)
        h = self.drop(self.tok_emb(x) + self.pos_emb)  # (B, prefix + L, W)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h[:, self.prefix :]))  # (B, L, K)


class MaskGITLoss(NamedTuple):
    loss: torch.Tensor  # scalar, with grad
    masked_accuracy: torch.Tensor  # scalar, detached: argmax == target over masked positions
    mask_ratio: torch.Tensor  # scalar, detached: masked fraction of the batch


def random_mask(
    counts: torch.Tensor, seq_len: int, *, generator: torch.Generator | None, device
) -> torch.Tensor:
    """(B, L) bool with exactly ``counts[i]`` random True positions in row i (counts (B,)).

    Vectorised: rank i.i.d. uniform scores per row (double argsort) and mask the lowest ranks.
    """
    scores = uniform((counts.shape[0], seq_len), generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (B, L): a random permutation per row
    return ranks < counts.to(device)[:, None]


def maskgit_loss(
    model: MaskGIT,
    ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    schedule: str = "cosine",
    label_smoothing: float = 0.1,
    loss_on_all: bool = False,
    class_dropout: float = 0.1,
    generator: torch.Generator | None = None,
) -> MaskGITLoss:
    """MaskGIT training loss on ids (B, L) in [0, K) and labels (B,) (or None / -1 = none).

    Random draws, in this order: r (B,) ~ U[0, 1); mask scores (B, L); class-dropout (B,)
    (only for a class-conditional model given labels). Row i gets ceil(gamma(r_i) * L) masked
    positions; cross-entropy (with ``label_smoothing``) is the mean over all masked positions of
    the batch, or over every position with ``loss_on_all`` (biases towards copying visible
    tokens; off by default as in the official code). ``masked_accuracy`` is always over the
    masked positions. A model with num_classes=0 ignores ``labels`` (a token file without
    labels carries -1 everywhere).
    """
    b, seq = ids.shape
    dev = ids.device
    r = uniform((b,), generator=generator, device=dev)
    mask = random_mask(mask_count(r, seq, schedule), seq, generator=generator, device=dev)
    target = ids.long()
    inputs = target.masked_fill(mask, model.mask_id)
    if labels is not None and model.num_classes > 0 and class_dropout > 0:
        drop = uniform((b,), generator=generator, device=dev) < class_dropout
        labels = torch.where(drop, -1, labels.to(dev).long())
    logits = model(inputs, labels if model.num_classes > 0 else None)  # (B, L, K)
    where = torch.ones_like(mask) if loss_on_all else mask
    loss = F.cross_entropy(logits[where], target[where], label_smoothing=label_smoothing)
    with torch.no_grad():
        acc = (logits[mask].argmax(-1) == target[mask]).float().mean()
    return MaskGITLoss(loss, acc, mask.float().mean())


@torch.no_grad()
def evaluate_prior(
    model: MaskGIT,
    ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    mask_ratio: float = 0.5,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Held-out masked-token metrics at a fixed ratio and seed, ids (N, L), labels (N,).

    Every row masks ceil(mask_ratio * L) positions (at least 1) chosen by a CPU generator
    seeded with ``seed``, drawn for all N rows at once so the result does not depend on
    ``batch_size``. No label smoothing, no class dropout. ``val_loss`` is the mean CE over the
    masked positions, ``val_perplexity`` = exp(val_loss).
    """
    if not 0.0 < mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
    n, seq = ids.shape
    if n == 0:
        raise ValueError("evaluate_prior got no rows (an empty test split?)")
    dev = next(model.parameters()).device
    count = min(max(1, math.ceil(mask_ratio * seq)), seq)
    g = torch.Generator().manual_seed(seed)
    masks = random_mask(torch.full((n,), count), seq, generator=g, device=torch.device("cpu"))
    was_training = model.training
    model.eval()
    total_ce, total_correct, total = 0.0, 0, 0
    for i in range(0, n, batch_size):
        x = ids[i : i + batch_size].to(dev).long()
        m = masks[i : i + batch_size].to(dev)
        lab = None if labels is None or model.num_classes == 0 else labels[i : i + batch_size]
        logits = model(x.masked_fill(m, model.mask_id), lab)
        total_ce += F.cross_entropy(logits[m], x[m], reduction="sum").item()
        total_correct += (logits[m].argmax(-1) == x[m]).sum().item()
        total += int(m.sum())
    model.train(was_training)
    loss = total_ce / total
    return {
        "val_loss": loss,
        "val_masked_accuracy": total_correct / total,
        "val_perplexity": math.exp(loss),
    }
