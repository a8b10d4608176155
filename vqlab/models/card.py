"""The model card (``README.md``) that :meth:`vqlab.Tokenizer.save_pretrained` writes.

It follows the Hugging Face hub mixin's conventions, so a folder pushed as it is reads as a
model page: YAML front matter with ``library_name``, ``tags`` and the config (flat, dotted keys,
as ``config.json`` holds them), then a body. vqlab adds what a tokenizer's user needs before
anything else: the collapse verdict and the diagnostics measured at save time, with the data
they were measured on. Writing a card makes no network call (nothing here imports a hub
client).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

TAGS = ["vqlab", "vector-quantization", "image-tokenizer", "vq-vae"]
SHOWN = (
    "usage",
    "perplexity",
    "dead_codes",
    "codebook_size",
    "coverage_ratio",
    "quant_mse",
    "recon_mse",
    "effective_dim",
    "codebook_mean_l2",
    "embedding_mean_l2",
)
DATASETS = {"cifar10": "cifar10"}  # data.name -> the Hub's dataset id, where there is one


def _number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_card(
    config: dict[str, Any],
    input_shape: tuple[int, ...],
    diagnostics: dict[str, Any] | None,
    measured_on: str,
    verdict: list[str] | None,
) -> str:
    """The card's text. config: the flat config (``RunConfig.flat()``); diagnostics: metric
    name -> number (None when nothing was measured); measured_on: the data, in words; verdict:
    :func:`~vqlab.diagnostics.verdict.collapse_verdict`'s sentences."""
    front: dict[str, Any] = {"library_name": "vqlab", "tags": list(TAGS)}
    dataset = DATASETS.get(str(config.get("data.name", "")))
    if dataset:
        front["datasets"] = [dataset]
    front["config"] = {k: v for k, v in config.items()}
    head = yaml.safe_dump(front, sort_keys=False, default_flow_style=False).strip()
    k, d = config.get("vq.codebook_size"), config.get("model.latent_dim")
    c, h, w = (tuple(input_shape) + (0, 0, 0))[:3]
    lines = [
        "---",
        head,
        "---",
        "",
        f"# vqlab tokenizer: K={k} codes of D={d}, {config.get('vq.kind', 'single')} quantizer",
        "",
        f"Images of {h}x{w} with {c} channels -> token ids; trained with "
        f"`train.strategy={config.get('train.strategy')}` for {config.get('train.steps')} steps "
        f"on `{config.get('data.name')}`.",
        "",
        "## Collapse diagnosis at save time",
        "",
    ]
    if diagnostics is None:
        lines += [
            "Not measured: this tokenizer was saved without diagnostics (give "
            "`save_pretrained(dir, images=...)` a batch of images to measure them).",
        ]
    else:
        lines += [f"Measured on {measured_on}.", ""]
        for sentence in verdict or []:  # one paragraph each
            lines += [sentence, ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {m} | {_number(diagnostics[m])} |" for m in SHOWN if m in diagnostics]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from vqlab import Tokenizer",
        'tok = Tokenizer.from_pretrained("this-folder")',
        "ids = tok.encode(images)   # uint8 (B, H, W, C) -> (B, h, w) int64",
        "images_back = tok.to_uint8(tok.decode(ids))",
        "```",
        "",
        "Files: `model.safetensors` (weights), `config.json` (the config above and the input "
        "shape), `diagnostics.json` (the numbers above, when measured).",
        "",
    ]
    return "\n".join(lines)


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (what the Hub reads as metadata)."""
    if not text.startswith("---\n"):
        raise ValueError("a model card starts with '---' and YAML front matter")
    body = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(body)


def diagnostics_payload(diagnostics: dict[str, Any], measured_on: str, verdict) -> str:
    """``diagnostics.json``: the numbers, the data they came from and the verdict."""
    return json.dumps(
        {"measured_on": measured_on, "metrics": diagnostics, "verdict": verdict}, indent=2
    )
