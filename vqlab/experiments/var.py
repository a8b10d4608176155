"""VAR over multi-scale residual tokenizers: does deferred quantization make a better VAR, and
where does the shared codebook collapse? ``vqlab replicate var --data DATA --preset cpu --out DIR``.

1. Multi-scale tokenizers (``vq.kind=multiscale``, VAR's residual scheme over ``scales`` with one
   shared codebook), trained as the tokenizer replication's MSE + perceptual arm at equal budget:
   standard and deferred, each with its k-means sample drawn each of the preset's
   ``init_ways`` (``vq.ms_init``: ``finest``, ``pyramid``, ``coarse_then_all``; see
   :meth:`~vqlab.quantizers.multiscale.MultiScaleQuantizer.init_from_latents`). Each is scored
   by ``vqlab evaluate`` (r-FD in the evaluation feature net, perplexity and usage per scale);
   ``DIR/tokenizers``, whose ``featnet/`` and ``percepnet/`` may be links to finished nets;
2. the pair at ``prior_init`` encodes the dataset once (``DIR/tokens/<strategy>.npz``);
3. one VAR prior (``prior.kind=var``) per tokenizer and seed, the same budget (``DIR/priors``);
4. each prior samples N class-conditional images with the same settings, scored as in the
   MaskGIT experiment (g-FD, g-KD, pixel distance, class consistency, token usage), plus the
   perplexity of the sampled ids per scale.
Every stage skips what is finished, and unfinished runs resume from their checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.experiments.generation import prior_runs, sample_and_score, stage_times, tokenize_all
from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import RUNS_DIR, expand, run_sweep
from vqlab.experiments.tokenizer import TOKENIZER_PRESETS, _feature_nets, tokenizer_runs
from vqlab.experiments.var_report import _flat, _plots, _write_report
from vqlab.reports.results import write_results

VAR_PRESETS: dict[str, dict[str, Any]] = {
    # measured on 2 CPU cores with --jobs 2 (results/var-cpu): the six 1500-step tokenizers
    # 64 min, their evaluation 8 min, tokenizing 6 min, the four VAR priors 50 min (two pairs,
    # 22-28 min each) and sampling and scoring 2-4 min: about 2.2 hours in all
    "cpu": {
        "tokenizer_preset": "cpu",
        "codebook_size": 1024,
        "scales": "1,2,3,4,6,8",  # minVAR's CIFAR-10 scales, L = 130
        # issue 22 (results/var-findings-cpu): the commitment on the final reconstruction, not
        # VAR's average over scales, which shrank the latents and stranded deferred's codebook;
        # 8 groups in the encoder's norms, since 32 groups on width 16's 32 channels are an
        # InstanceNorm that flattens the image-mean latent the 1x1 scale quantizes; evaluated
        # every 50 steps so that the per-scale perplexity over training can be read; 1500 steps
        # (750 of them pretraining for deferred), since at the tokenizer preset's 500 the
        # per-scale perplexity was still rising 7-212% over the last 100 steps
        "tokenizer_set": {
            "vq.loss_on": "final",
            "model.norm_groups": 8,
            "train.eval_every": 50,
            "train.steps": 1500,
            "train.pretrain_steps": 750,
            "train.checkpoint_every": 250,
        },
        # what the re-run of issue 22 changed (the report's "What changed and why"; the earlier
        # run's CSVs are kept in OUT/before/)
        "changes": [
            {
                "setting": "vq.loss_on",
                "before": "every_scale (VAR's average over scales)",
                "after": "final",
                "why": "the averaged commitment halved the latents' spread and "
                "stranded deferred's k-means codebook (results/var-findings-cpu, finding 1)",
            },
            {
                "setting": "model.norm_groups",
                "before": "32 (an InstanceNorm at width 16)",
                "after": "8",
                "why": "one channel per group removed each image's mean, so the "
                "1x1 scale's input barely varied (finding 2)",
            },
            {
                "setting": "prior.label_smoothing",
                "before": "0.1",
                "after": "0 (VAR's)",
                "why": "a temperature-1 sampler drew the smoothing floor (finding 3)",
            },
            {
                "setting": "sampler top-k / top-p",
                "before": "none",
                "after": "900 / 0.96 (VAR's)",
                "why": "VAR's own sampler; trims the prior's tail (finding 3)",
            },
            {
                "setting": "vq.ms_init ways",
                "before": "finest, coarse_then_all",
                "after": "+ pyramid",
                "why": "issue 22 compares all three ways of drawing the k-means sample",
            },
            {
                "setting": "tokenizer train.eval_every",
                "before": "125",
                "after": "50",
                "why": "to read the per-scale perplexity over training",
            },
            {
                "setting": "tokenizer train.steps / train.pretrain_steps",
                "before": "500 / 250",
                "after": "1500 / 750",
                "why": "at 500 the per-scale perplexity still rose 7-212% over the last 100 steps",
            },
        ],
        # all three ways (pyramid joined at issue 22's re-run: two more tokenizers, ~20 min on
        # 2 cores; the priors train on finest's pair only)
        "init_ways": ["finest", "coarse_then_all", "pyramid"],
        "prior_init": "finest",
        "seeds": [0, 1],
        "samples": 2000,
        "prior": {
            "prior.kind": "var",
            "prior.depth": 2,
            "prior.width": 128,
            "prior.heads": 4,
            "prior.dropout": 0.1,
            # 0, VAR's own: at 0.1 an unfiltered temperature-1 sampler draws the smoothing floor
            # (results/var-findings-cpu; results/var-cpu was made with 0.1 and no top-k/top-p)
            "prior.label_smoothing": 0.0,
            "prior.class_dropout": 0.1,
            # measured: ~0.6-1.0 s a step at batch 64 on one core (130 positions, all in the
            # loss), so half MaskGIT's 3000 steps keeps the four priors near 40 minutes
            "train.steps": 1500,
            "train.batch_size": 64,
            "train.lr": 1e-3,
            "train.warmup_steps": 100,
            "train.lr_schedule": "cosine",
            "train.weight_decay": 0.05,
            "train.log_every": 100,
            "train.eval_every": 750,
        },
        # no guidance, as the MaskGIT experiment samples at cfg 0; VAR's top-k 900 / top-p 0.96
        # (the VAR prior's defaults since issue 22; results/var-cpu sampled with neither)
        "sample": ["sample.temperature=1.0", "sample.top_k=900", "sample.top_p=0.96"],
    },
    # the papers' scale: 128 px ImageNet-100, 16x16 latents, VAR's ten scales; not run here
    "gpu": {
        "tokenizer_preset": "gpu",
        "codebook_size": 16384,
        "scales": "1,2,3,4,5,6,8,10,13,16",
        "init_ways": ["finest", "coarse_then_all", "pyramid"],
        "prior_init": "finest",
        "seeds": [0, 1],
        "samples": 10000,
        "prior": {
            "prior.kind": "var",
            "prior.depth": 16,
            "prior.width": 1024,
            "prior.heads": 16,
            "prior.dropout": 0.0,
            "prior.label_smoothing": 0.0,
            "prior.class_dropout": 0.1,
            "train.steps": 100000,
            "train.batch_size": 256,
            "train.lr": 1e-4,
            "train.warmup_steps": 2000,
            "train.lr_schedule": "cosine",
            "train.weight_decay": 0.05,
            "train.log_every": 500,
            "train.eval_every": 10000,
        },
        "sample": ["sample.cfg=1.5", "sample.top_k=900", "sample.top_p=0.96"],
    },
}


def tokenizer_runs_var(data, preset: dict, percepnet: str | Path) -> list:
    """(name, assignment, config) of the multi-scale tokenizers: both strategies, each
    ``init_ways`` way, on the tokenizer replication's MSE + perceptual settings, with the
    preset's ``tokenizer_set`` keys on top (e.g. ``vq.loss_on``, ``model.norm_groups``)."""
    _, base = tokenizer_runs(data, preset["tokenizer_preset"], percepnet)
    base = {
        **base,
        "vq.kind": "multiscale",
        "vq.scales": preset["scales"],
        "vq.codebook_size": str(preset["codebook_size"]),
        **{k: str(v) for k, v in preset.get("tokenizer_set", {}).items()},
    }
    grid = {"train.strategy": ["standard", "deferred"], "vq.ms_init": list(preset["init_ways"])}
    return expand(base, [], grid)


def _tokenizers(out: Path, data, preset: dict, jobs: int, progress: bool) -> tuple[list, Path]:
    """Train (or reuse) and evaluate every tokenizer; (their rows, the featnet folder)."""
    from vqlab.runs.evaluate import evaluate_tokenizer

    tok_preset = preset["tokenizer_preset"]
    featnet, percepnet = _feature_nets(out / "tokenizers", data, tok_preset, progress)
    runs = tokenizer_runs_var(data, preset, percepnet)
    # the pair the priors read (prior_init) trains first, so that a sitting cut short leaves it
    # finished; the rows come back in the grid's order
    order = sorted(range(len(runs)), key=lambda i: runs[i][1]["vq.ms_init"] != preset["prior_init"])
    trained = run_sweep([runs[i] for i in order], out / "tokenizers", jobs=jobs, progress=progress)
    rows = [trained[order.index(i)] for i in range(len(runs))]
    failed = [r["run"] for r in rows if r.get("status") == "failed"]
    if failed:
        raise RuntimeError(f"tokenizer runs failed: {failed}; see {out / 'tokenizers'}")
    limit = int(TOKENIZER_PRESETS[preset["tokenizer_preset"]].get("data.test_limit", 0))
    for row, (name, assignment, _) in zip(rows, runs):
        run = out / "tokenizers" / RUNS_DIR / name
        done = run / "eval" / "eval.json"  # a finished evaluation is not run again
        if not done.is_file():
            evaluate_tokenizer(run, data, featnet, run / "eval", limit=limit)
        scores = json.loads(done.read_text())
        row.update({k: v for k, v in scores.items() if k not in row and k != "seconds"})
        row.update(ms_init=assignment["vq.ms_init"], folder=run)
        row["scale_spread"] = _spread_of_run(run, data, limit or 2000)
    return rows, featnet


def scale_spread(quantizer, z_e) -> list[dict[str, float]]:
    """Why a scale collapses, per scale of a multi-scale quantizer on latents z_e (B, D, h, h):
    ``input_spread``, the RMS distance of its search vectors from their mean (how much what it
    quantizes varies over images and positions), beside ``nearest_code`` and ``second_code``,
    the mean distances to the nearest and second-nearest code. An input spread far below the
    gap between the two means every vector of the scale lands on the same code."""
    import torch

    out = []
    codebook = quantizer.codebook.float()
    for side, v in zip(quantizer.scales, quantizer.search_vectors(z_e)):
        flat = v.reshape(-1, v.shape[-1])
        spread = (flat - flat.mean(0)).pow(2).sum(1).mean().sqrt()
        two = torch.cdist(flat, codebook).topk(2, largest=False).values.mean(0)
        out.append(
            {"scale": int(side), "input_spread": float(spread),
             "nearest_code": float(two[0]), "second_code": float(two[1])}
        )  # fmt: skip
    return out


def _spread_of_run(run: Path, data, limit: int) -> list[dict[str, float]]:
    """:func:`scale_spread` of a tokenizer run on its first ``limit`` test images (cached in
    ``eval/scale_spread.json``)."""
    import dataclasses

    import torch

    from vqlab.data.dataset import load_dataset
    from vqlab.tokenizer import Tokenizer

    cached = run / "eval" / "scale_spread.json"
    if not cached.is_file():
        tok = Tokenizer.from_pretrained(run)
        cfg = dataclasses.replace(tok.config.data, path=str(data), test_limit=limit)
        with torch.no_grad():
            z_e = tok.model.encoder(load_dataset(cfg, 0).test_x.to(tok.device))
        cached.write_text(json.dumps(scale_spread(tok.model.quantizer, z_e), indent=2))
    return json.loads(cached.read_text())


def sample_scale_perplexity(ids: np.ndarray, scales: tuple[int, ...], k: int) -> list[float]:
    """Perplexity of ids (N, L) within each scale's block of positions, coarse first."""
    from vqlab.evaluation.generation import token_usage

    bounds = np.cumsum([0, *(p * p for p in scales)])
    return [token_usage(ids[:, a:b], k)[1] for a, b in zip(bounds[:-1], bounds[1:])]


def replicate_var(job: Job) -> Rows:
    """The experiment of the module docstring: report.md, results.csv, tokenizers.csv, plots/."""
    out, data, p, progress = job.out, job.data, job.settings, job.progress
    if p["prior_init"] not in p["init_ways"]:
        raise ValueError(f"prior_init={p['prior_init']!r} is not one of {p['init_ways']}")
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    tok_rows, featnet = _tokenizers(out, data, p, job.jobs, progress)
    job.lap(timing, "tokenizers")
    pair = {r["strategy"]: r["folder"] for r in tok_rows if r["ms_init"] == p["prior_init"]}
    tokens = tokenize_all(out, data, pair, progress)
    job.lap(timing, "tokenize")
    rows = job.sweep(prior_runs(tokens, p), out / "priors", command=None)
    job.lap(timing, "priors")
    reference = sample_and_score(out, rows, tokens, pair, featnet, data, p, progress)
    _sample_scales(out, rows, tokens)
    job.lap(timing, "sample and score")
    write_results(out / "results.csv", rows)
    write_results(out / "tokenizers.csv", [_flat(r) for r in tok_rows])
    _plots(out, tok_rows, rows)
    timing = stage_times(out, timing)
    _write_report(job, tok_rows, rows, reference, timing)
    return rows


def _sample_scales(out: Path, rows: list[dict], tokens: dict[str, Path]) -> None:
    """``sample_perplexity_p<side>`` (and the real test ids' ``real_perplexity_p<side>``)."""
    from vqlab.priors.tokens import load_tokens

    for row in rows:
        if row.get("status") == "failed":
            continue
        t = load_tokens(tokens[row["tokenizer"]])
        ids = np.load(out / "samples" / row["run"] / "samples.npz")["ids"]
        real = t.test_ids[: ids.shape[0]]
        for side, s, r in zip(
            t.scales,
            sample_scale_perplexity(ids, t.scales, t.codebook_size),
            sample_scale_perplexity(real, t.scales, t.codebook_size),
        ):
            row[f"sample_perplexity_p{side}"], row[f"real_perplexity_p{side}"] = s, r


REPLICATION = Replication("var", VAR_PRESETS, replicate_var, needs_data=True)
