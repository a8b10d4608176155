"""``vqlab diagnose``: diagnostics of a trained model, from its checkpoint."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.data.dataset import load_dataset
from vqlab.diagnostics.verdict import collapse_verdict, data_reference
from vqlab.outdir import check_out
from vqlab.reports.markdown import markdown_table, provenance
from vqlab.reports.plots import plot_tokens
from vqlab.training.checkpoint import load_checkpoint
from vqlab.training.distributed import resolve_device
from vqlab.training.evaluate import SAMPLES_FILE, evaluate
from vqlab.training.logging import prepare_out_dir, write_json


def diagnose_run(
    run: str | Path,
    out: str | Path,
    *,
    data_path: str | Path | None = None,
    command: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate a run folder's checkpoint on its test data (or ``data_path``) into ``out``.

    Writes ``diagnostics.json``, ``eval_samples.npz``, ``plots/tokens.png`` and ``report.md``.
    """
    t0 = time.perf_counter()
    check_out(out, overwrite=overwrite)  # a non-empty out only with overwrite, before any work
    model, config, _ = load_checkpoint(run)
    if data_path is not None:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, path=str(data_path))
        )
    device = resolve_device(config.device)
    model.to(device)
    data = load_dataset(config.data, config.seed)
    metrics, samples = evaluate(model, data, device, quantize=True)
    reference = data_reference(data.test_x, data.test_labels)
    verdict = collapse_verdict(
        {**metrics, "codebook_size": config.vq.codebook_size},
        dim=config.model.latent_dim,
        reference=reference,
    )
    metrics.update(reference)
    metrics.update({k: v for k, v in verdict.items() if k != "verdict"})
    out = prepare_out_dir(out, overwrite=overwrite)
    write_json(out / "diagnostics.json", metrics)
    np.savez_compressed(out / SAMPLES_FILE, **samples)
    plot_tokens({config.train.strategy: out / SAMPLES_FILE}, out / "plots" / "tokens.png", f"{run}")
    rows = [{"metric": k, "value": v} for k, v in metrics.items()]
    (out / "report.md").write_text(
        f"# Diagnostics of {run}\n\n" + "\n\n".join(verdict["verdict"]) + "\n\n"
        f"{markdown_table(rows, ['metric', 'value'])}\n\n"
        f"![tokens](plots/tokens.png)\n\n## How this was made\n\n"
        f"{provenance(command or 'vqlab diagnose', time.perf_counter() - t0)}\n"
    )
    return json.loads((out / "diagnostics.json").read_text())
