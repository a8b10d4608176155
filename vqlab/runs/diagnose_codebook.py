"""``vqlab diagnose --codebook FILE[:KEY]``: collapse diagnostics of a tokenizer trained anywhere.

```python
from vqlab.runs.diagnose_codebook import diagnose_codebook
report = diagnose_codebook("vqgan.ckpt", "diag/", ids="tokens.npz", latents="z.npy")
report["verdict"], report["tokens_collapse"], report["dimensional_collapse"]
```

Inputs (:mod:`vqlab.diagnostics.checkpoint` reads them): the codebook (always); ``ids`` (a
token file or an integer array (N, ...)); ``latents``, encoder outputs (N, ..., D); ``labels``
(N,). Without ids but with latents, the ids are the latents' nearest codes (Euclidean). The
metrics are :func:`vqlab.diagnostics.diagnose`'s, the verdict
:func:`~vqlab.diagnostics.verdict.collapse_verdict`'s, plus the codebook's spectrum:
``codebook_effective_rank`` (Roy & Vetterli) against its cap ``min(D, K - 1)``, and
``dimensional_collapse`` when it is under half of it (codes that use every slot yet span a
low-rank subspace). What each missing input leaves out is listed in ``left_out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from vqlab.diagnostics import diagnose, effective_rank
from vqlab.diagnostics.checkpoint import (
    CodebookError,
    load_codebook,
    load_ids,
    load_labels,
    load_latents,
)
from vqlab.diagnostics.verdict import THRESHOLDS, collapse_verdict
from vqlab.quantizers.distance import nearest_code
from vqlab.reports.codebook_plots import plot_codebook
from vqlab.reports.markdown import markdown_table, provenance
from vqlab.training.logging import prepare_out_dir, write_json

RANK_RATIO = 0.5  # dimensional collapse: effective rank under half of min(D, K - 1)
PROBE_ROWS = 50_000  # the linear probe (slow) runs on at most this many positions

LEFT_OUT = {
    "ids": "usage, perplexity and dead codes (give --ids, or --latents to assign their codes)",
    "latents": "coverage ratio, quantization MSE, nearest-code distance and the embeddings' "
    "spread (give --latents); tokens collapse is then decided on usage and perplexity alone",
    "labels": "the per-class measures: modes with tokens, mode entropy, class separation and "
    "the linear probe (give --labels)",
    "inputs": "embeddings collapse by vqlab's rule, which compares the embeddings with the raw "
    "inputs (their probe accuracy and rank): `vqlab diagnose RUN` has them, this command not",
}


def _tokens_without_coverage(metrics: dict) -> tuple[bool | None, str]:
    """Tokens collapse from usage and perplexity alone (no latents, so no coverage ratio): a
    failed rule says present; passing both leaves it undecided, since coverage is unmeasured."""
    t, k = THRESHOLDS, metrics["codebook_size"]
    ratio = metrics["perplexity"] / k
    failed = []
    if metrics["usage"] < t["usage"]:
        failed.append(f"usage {metrics['usage']:.1%} < {t['usage']:.0%}")
    if ratio < t["perplexity_ratio"]:
        failed.append(
            f"perplexity {metrics['perplexity']:.0f} is {ratio:.1%} of K={k} "
            f"(< {t['perplexity_ratio']:.0%})"
        )
    if failed:
        return True, "**Tokens collapse: present** (" + "; ".join(failed) + ")."
    return None, (
        f"Tokens collapse: not decided (usage {metrics['usage']:.1%} and perplexity "
        f"{metrics['perplexity']:.0f} = {ratio:.1%} of K={k} pass; the coverage ratio needs "
        "--latents)."
    )


def _spectrum(codes: torch.Tensor) -> dict[str, Any]:
    k, d = codes.shape
    cap = min(d, k - 1)
    rank = effective_rank(codes)
    out: dict[str, Any] = {"codebook_dim": d, "codebook_effective_rank": rank}
    out["codebook_rank_cap"] = cap
    out["codebook_rank_ratio"] = rank / cap if cap > 0 else None
    out["dimensional_collapse"] = None if cap < 2 else bool(rank < RANK_RATIO * cap)
    return out


def _dimensional_line(s: dict[str, Any]) -> str:
    if s["dimensional_collapse"] is None:
        return "Dimensional collapse: not decided (fewer than 3 codes)."
    word = "present" if s["dimensional_collapse"] else "absent"
    return (
        f"**Dimensional collapse: {word}** (the codebook's effective rank is "
        f"{s['codebook_effective_rank']:.1f} of at most {s['codebook_rank_cap']} = min(D="
        f"{s['codebook_dim']}, K-1); threshold {RANK_RATIO}x)."
    )


def _inputs(codes, ids, latents, labels):
    """Flattened (positions) tensors for :func:`diagnose`, checked against each other."""
    k, d = codes.shape
    ids_t, file_labels = load_ids(ids, k) if ids is not None else (None, None)
    z = load_latents(latents, d) if latents is not None else None  # (N, P, D)
    y = load_labels(labels) if labels is not None else file_labels
    if (
        ids_t is not None
        and z is not None
        and ids_t[0].numel() * ids_t.shape[0] != z.shape[0] * z.shape[1]
    ):
        raise CodebookError(
            f"ids hold {ids_t.numel()} positions but the latents {z.shape[0] * z.shape[1]}; "
            "they must describe the same samples"
        )
    n = ids_t.shape[0] if ids_t is not None else (z.shape[0] if z is not None else None)
    positions = ids_t[0].numel() if ids_t is not None else (z.shape[1] if z is not None else 1)
    if y is not None and n is not None and y.shape[0] != n:
        raise CodebookError(f"labels hold {y.shape[0]} entries for {n} samples")
    emb = z.reshape(-1, d) if z is not None else None
    if ids_t is not None:
        indices = ids_t.reshape(-1)
    elif emb is not None:
        indices = nearest_code(emb, codes).indices  # the codes these latents would get
    else:
        indices = None
    per_position = y.repeat_interleave(positions) if y is not None and n is not None else None
    return indices, emb, per_position, y


def diagnose_codebook(
    codebook: str | Path,
    out: str | Path,
    *,
    ids: str | Path | None = None,
    latents: str | Path | None = None,
    labels: str | Path | None = None,
    command: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Diagnose a codebook file (and what else is given) into ``out``: ``diagnostics.json``,
    ``report.md`` (the verdict first) and ``plots/codebook.png``. Returns the diagnostics.

    Bad input (an unreadable or refused file, a missing KEY, NaN codes, ids >= K, sizes that
    disagree) raises :class:`~vqlab.diagnostics.checkpoint.CodebookError` before anything is
    written."""
    t0 = time.perf_counter()
    book = load_codebook(codebook)
    codes = book.codes
    indices, emb, per_position, y = _inputs(codes, ids, latents, labels)
    if per_position is not None and indices is None and emb is None:
        raise CodebookError("--labels needs --ids or --latents (labels describe samples)")
    metrics: dict[str, Any] = diagnose(
        codebook=codes,
        embeddings=emb,
        indices=indices,
        labels=per_position,
        probes=emb is not None and emb.shape[0] <= PROBE_ROWS,
    )
    spectrum = _spectrum(codes)
    metrics.update(spectrum)
    if "coverage_ratio" in metrics:
        verdict = collapse_verdict(metrics, dim=codes.shape[1])
        lines = verdict["verdict"][:-1]
        tokens, embeddings = verdict["tokens_collapse"], verdict["embeddings_collapse"]
        thresholds = verdict["verdict"][-1]
    elif "usage" in metrics:
        tokens, first = _tokens_without_coverage(metrics)
        lines, embeddings = [first], None
        thresholds = collapse_verdict({}, dim=codes.shape[1])["verdict"][-1]
    else:
        tokens, embeddings = None, None
        lines = ["Tokens collapse: not decided (needs --ids or --latents)."]
        thresholds = collapse_verdict({}, dim=codes.shape[1])["verdict"][-1]
    if embeddings is None:
        lines.append("Embeddings collapse: not decided (needs the raw inputs; see left out).")
    lines += [_dimensional_line(spectrum), thresholds]
    given = {"ids": ids, "latents": latents, "labels": labels}
    left = {name: text for name, text in LEFT_OUT.items() if given.get(name, None) is None}
    if ids is not None or latents is not None:
        left.pop("ids", None)
    metrics.update(
        tokens_collapse=tokens,
        embeddings_collapse=embeddings,
        verdict=lines,
        codebook_source=book.source,
        inputs={k: (str(v) if v is not None else None) for k, v in given.items()},
        indices_from="ids"
        if ids is not None
        else ("nearest codes of the latents" if latents else None),
        left_out=left,
    )
    out = prepare_out_dir(out, overwrite=overwrite)
    counts = None if indices is None else torch.bincount(indices, minlength=codes.shape[0])
    plot_codebook(codes, counts, out / "plots" / "codebook.png", title=str(codebook))
    write_json(out / "diagnostics.json", metrics)
    _write_report(out, metrics, lines, left, command, time.perf_counter() - t0)
    return json.loads((out / "diagnostics.json").read_text())


def _write_report(out: Path, metrics: dict, lines: list[str], left: dict, command: str, secs):
    skip = {"verdict", "left_out", "inputs"}
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if k not in skip]
    gone = "\n".join(f"- without {k}: {v}" for k, v in left.items()) or "- nothing"
    (out / "report.md").write_text(
        f"# Diagnostics of {metrics['codebook_source']}\n\n" + "\n\n".join(lines) + "\n\n"
        f"## Left out\n\n{gone}\n\n{markdown_table(rows, ['metric', 'value'])}\n\n"
        "![codebook](plots/codebook.png)\n\n## How this was made\n\n"
        f"{provenance(command or 'diagnose_codebook', secs)}\n"
    )
