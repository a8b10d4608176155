"""The papers' generation experiment: does deferred quantization make a better, more diverse
MaskGIT? ``vqlab replicate generation --data DATA --preset cpu --out DIR``.

1. Two tokenizers at equal budget, standard and deferred, trained exactly as the tokenizer
   replication's MSE + perceptual arm at the preset's K (``DIR/tokenizers``: copy or link a
   finished ``vqlab replicate tokenizer`` folder there and its runs are reused, as are its
   ``featnet/`` and ``percepnet/``);
2. each tokenizer encodes the dataset once (``DIR/tokens/<strategy>.npz``);
3. one MaskGIT prior per tokenizer and seed, the same prior budget (``DIR/priors``);
4. each prior samples N class-conditional images with the same sampler settings
   (``DIR/samples/<run>``), scored against N test images in the evaluation feature net: g-FD,
   g-KD, pixel distance (overall and within class), class consistency, token usage.
Every stage skips what is already finished, and unfinished runs resume from their checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vqlab.config import build_config
from vqlab.errors import UserError
from vqlab.experiments.protocol import Job, Replication, Rows
from vqlab.experiments.sweep import RUNS_DIR, run_sweep
from vqlab.experiments.tokenizer import TOKENIZER_PRESETS, _feature_nets, tokenizer_runs
from vqlab.reports.markdown import markdown_table
from vqlab.reports.results import write_results

GENERATION_PRESETS: dict[str, dict[str, Any]] = {
    # ~2.5 hours on 2 CPU cores: two tokenizers (shared with replicate tokenizer), 4 priors
    "cpu": {
        "tokenizer_preset": "cpu",
        "codebook_size": 1024,
        "seeds": [0, 1],
        "samples": 2000,
        "prior": {
            "prior.depth": 2,
            "prior.width": 128,
            "prior.heads": 4,
            "prior.dropout": 0.1,
            # 0, the prior's default since issue 22: at MaskGIT's official 0.1 the toy grids
            # were sampled exactly 69% of the time, at 0 99.5% (results/generation-cpu was
            # made with 0.1)
            "prior.label_smoothing": 0.0,
            "prior.class_dropout": 0.1,
            "train.steps": 3000,
            "train.batch_size": 64,
            "train.lr": 1e-3,
            "train.warmup_steps": 200,
            "train.lr_schedule": "cosine",
            "train.weight_decay": 0.045,
            "train.log_every": 100,
            "train.eval_every": 1000,
        },
        "sample": ["sample.steps=8", "sample.choice_temperature=4.5", "sample.temperature=1.0"],
        # what the re-run of issue 22 changed (the report's "What changed and why"; the earlier
        # run's results.csv is kept in OUT/before/)
        "changes": [
            {
                "setting": "prior.label_smoothing",
                "before": "0.1 (MaskGIT's official config)",
                "after": "0",
                "why": "on toy token grids a prior trained at 0.1 sampled its "
                "class's grid 69% of the time, at 0 99.5% (results/var-findings-cpu)",
            },
        ],
    },
    # the papers' scale (ImageNet-100 at 128 px, K = 16384, 16x16 tokens); not run here
    "gpu": {
        "tokenizer_preset": "gpu",
        "codebook_size": 16384,
        "seeds": [0, 1],
        "samples": 10000,
        "prior": {
            "prior.depth": 12,
            "prior.width": 512,
            "prior.heads": 8,
            "prior.dropout": 0.1,
            "prior.label_smoothing": 0.1,
            "prior.class_dropout": 0.1,
            "train.steps": 100000,
            "train.batch_size": 256,
            "train.lr": 1e-4,
            "train.warmup_steps": 5000,
            "train.lr_schedule": "cosine",
            "train.weight_decay": 0.045,
            "train.log_every": 500,
            "train.eval_every": 10000,
        },
        "sample": ["sample.steps=8", "sample.choice_temperature=4.5", "sample.temperature=1.0"],
    },
}
_SRC = "papers (ImageNet-100)"
PAPERS = [  # ImageNet-100, 128 px, K = 16384 (GENERATION.md); not comparable in scale
    {"source": _SRC, "strategy": "deferred", "g_fd": "14.60 (FID)", "pixel_distance": 80.77},
    {"source": _SRC, "strategy": "standard", "g_fd": "14.75 (FID)", "pixel_distance": 75.89},
]
METRICS = [
    "r_fd", "g_fd", "g_kd", "pixel_distance", "pixel_distance_within_class",
    "class_consistency", "real_perplexity", "sample_perplexity", "sample_codes_used",
]  # fmt: skip


def forget_weightless(run: Path) -> None:
    """A reused tokenizer folder whose weights were not kept (``results/`` keeps no
    checkpoints) is trained again: its ``summary.json`` goes, so the sweep reruns it. A folder
    that is a link (to another experiment's run) is refused instead, before anything is
    deleted: retraining through it would clear the other experiment's run."""
    if not (run / "summary.json").is_file() or (run / "checkpoint" / "model.safetensors").is_file():
        return
    if run.is_symlink():
        raise UserError(
            f"{run} links to {run.resolve()}, a finished run without its weights "
            "(checkpoint/model.safetensors): copy the run with its checkpoint there, or remove "
            "the link to train this tokenizer again"
        )
    (run / "summary.json").unlink()


def _tokenizers(out: Path, data, preset: dict, jobs: int, progress: bool) -> tuple[dict, Path]:
    """Train (or reuse) the standard and deferred tokenizers; their run folders by strategy."""
    tok_preset = preset["tokenizer_preset"]
    featnet, percepnet = _feature_nets(out / "tokenizers", data, tok_preset, progress)
    runs, _ = tokenizer_runs(data, tok_preset, percepnet)
    k = str(preset["codebook_size"])
    mine = [r for r in runs if r[1]["vq.codebook_size"] == k and "loss.gan" not in r[1]]
    for name, _, _ in mine:
        forget_weightless(out / "tokenizers" / RUNS_DIR / name)
    rows = run_sweep(mine, out / "tokenizers", jobs=jobs, progress=progress)
    failed = [r["run"] for r in rows if r.get("status") == "failed"]
    if failed:
        raise RuntimeError(f"tokenizer runs failed: {failed}; see {out / 'tokenizers'}")
    found = {r[1]["train.strategy"]: out / "tokenizers" / RUNS_DIR / r[0] for r in mine}
    from vqlab.runs.evaluate import evaluate_tokenizer

    limit = int(TOKENIZER_PRESETS[tok_preset].get("data.test_limit", 0))
    for run in found.values():  # r-FD of each tokenizer (done already in a reused folder)
        if not (run / "eval" / "eval.json").is_file():
            evaluate_tokenizer(run, data, featnet, run / "eval", limit=limit)
    return found, featnet


def tokenize_all(out: Path, data, tokenizers: dict, progress: bool) -> dict[str, Path]:
    """``out/tokens/<name>.npz`` of each tokenizer run folder (by name), encoded once."""
    from vqlab.runs.tokenize import tokenize_dataset
    from vqlab.tokenizer import Tokenizer

    files = {}
    for strategy, run in tokenizers.items():
        files[strategy] = out / "tokens" / f"{strategy}.npz"
        if not files[strategy].is_file():
            files[strategy].parent.mkdir(parents=True, exist_ok=True)
            tok = Tokenizer.from_pretrained(run)
            tokenize_dataset(tok, data, files[strategy], progress=progress)
    return files


def prior_runs(tokens: dict[str, Path], preset: dict) -> list:
    """(name, assignment, config) of one prior per tokenizer and seed."""
    runs = []
    for strategy, path in tokens.items():
        for seed in preset["seeds"]:
            values = {"task": "prior", "data.name": "tokens", "data.path": str(path)}
            values.update(preset["prior"])
            values["seed"] = seed
            assignment = {"tokenizer": strategy, "seed": str(seed)}
            runs.append((f"prior__{strategy}__seed={seed}", assignment, build_config(values)))
    return runs


def replicate_generation(job: Job) -> Rows:
    """The experiment of the module docstring: report.md, results.csv, plots/."""
    out, data, p, progress = job.out, job.data, job.settings, job.progress
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    tokenizers, featnet = _tokenizers(out, data, p, job.jobs, progress)
    job.lap(timing, "tokenizers")
    tokens = tokenize_all(out, data, tokenizers, progress)
    job.lap(timing, "tokenize")
    rows = job.sweep(prior_runs(tokens, p), out / "priors", command=None)
    job.lap(timing, "priors")
    reference = sample_and_score(out, rows, tokens, tokenizers, featnet, data, p, progress)
    job.lap(timing, "sample and score")
    write_results(out / "results.csv", rows)
    timing = stage_times(out, timing)
    for strategy, run in tokenizers.items():  # trained here or reused: their own seconds
        done = json.loads((run / "summary.json").read_text())
        timing[f"{strategy} tokenizer's training (its run)"] = float(done.get("seconds", 0.0))
    _write_report(job, rows, reference, timing)
    return rows


def sample_and_score(out, rows, tokens, tokenizers, featnet, data, p, progress) -> dict:
    """Sample ``p['samples']`` images from each finished prior row into ``out/samples/<run>``
    and score them against as many test images (``metrics.json``, reused when it exists);
    the scores and the tokenizer's r-FD go into the row. Returns the scores of real images
    (``samples/reference.json``: N train against the N test images, and the test images'
    own diversity and class consistency), the row to read the samples against."""
    import dataclasses

    import torch

    from vqlab.data.dataset import load_dataset
    from vqlab.evaluation.featnet import load_featnet
    from vqlab.evaluation.generation import generation_metrics, real_reference
    from vqlab.priors.tokens import load_tokens
    from vqlab.runs.sample import sample_run
    from vqlab.tokenizer import Tokenizer

    net = load_featnet(featnet)
    any_tok = Tokenizer.from_pretrained(next(iter(tokenizers.values())))
    cfg = dataclasses.replace(any_tok.config.data, path=str(data), test_limit=p["samples"])
    ds = load_dataset(cfg, 0)
    real = any_tok.to_uint8(ds.test_x)
    reference = out / "samples" / "reference.json"
    if not reference.is_file():
        n = min(real.shape[0], ds.train_x.shape[0])
        pick = np.random.default_rng(0).choice(ds.train_x.shape[0], size=n, replace=False)
        train = any_tok.to_uint8(ds.train_x[torch.as_tensor(pick)])
        labels = None if ds.test_labels is None else ds.test_labels.numpy()
        ref = real_reference(real, labels, train, net)
        reference.parent.mkdir(parents=True, exist_ok=True)
        reference.write_text(json.dumps(ref, indent=2))
    for row in rows:
        if row.get("status") == "failed":
            continue
        strategy = row["tokenizer"]
        folder = out / "samples" / row["run"]
        scores = folder / "metrics.json"
        if not scores.is_file():
            run = out / "priors" / RUNS_DIR / row["run"]
            sample_run(run, p["samples"], folder, overrides=p["sample"], progress=progress)
            t = load_tokens(tokens[strategy])
            m = generation_metrics(
                folder, real, net, codebook_size=t.codebook_size, real_ids=t.test_ids
            )
            scores.write_text(json.dumps(m, indent=2))
        row.update(json.loads(scores.read_text()))
        evaluated = tokenizers[strategy] / "eval" / "eval.json"
        if evaluated.is_file():
            row["r_fd"] = json.loads(evaluated.read_text())["r_fd"]
    return json.loads(reference.read_text())


def reference_row(reference: dict, label: str = "real data (reference)") -> dict:
    """The table row of :func:`sample_and_score`'s reference: g-FD/g-KD are the
    real-against-real floor, the rest the test images' own scores."""
    keys = ("g_fd", "g_kd", "pixel_distance", "pixel_distance_within_class", "class_consistency")
    return {
        "strategy": label,
        **{k: f"{reference[k]:.3f}" for k in keys if reference.get(k) is not None},
    }


def stage_text(timing: dict[str, float]) -> str:
    """``tokenizers 12.3 min, ...``; a stage under a second was done by an invocation that
    did not time it (one stopped before it could, or a script that trained a stage's runs
    outside the replicate, as ``results/var-cpu/seeds_first.py``): ``not recorded``."""
    untimed = "not recorded (done by an earlier invocation that did not time it)"
    return ", ".join(
        f"{k} {v / 60:.1f} min" if v >= 1 else f"{k} {untimed}" for k, v in timing.items()
    )


def seeds_text(seeds: list[int]) -> str:
    """``2 prior seeds`` / ``1 prior seed (seed 0: a ± over seeds needs more than one)``."""
    if len(seeds) == 1:
        return f"1 prior seed (seed {seeds[0]}: a ± over seeds needs more than one)"
    return f"{len(seeds)} prior seeds"


def _of_tokenizer(key: str) -> bool:
    """Whether ``key`` measures the tokenizer or its real ids, the same for every prior seed."""
    return key == "r_fd" or key.startswith("real_")


def mean_std(rows: list[dict], strategy: str, key: str) -> str:
    """``mean ± std`` (ddof 1) of ``key`` over the rows of one tokenizer; one value alone, and
    one value for a measure of the tokenizer itself (``r_fd``, ``real_*``) that every prior
    seed repeats (a ``± 0.000`` there would pass for a spread over seeds)."""
    vals = [r[key] for r in rows if r.get("tokenizer") == strategy and r.get(key) is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1 or (_of_tokenizer(key) and len(set(vals)) == 1):
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def changes_lines(out: Path, rows: list[dict], p: dict, extra: list[str]) -> list[str]:
    """The "What changed and why" section of a re-run: the preset's ``changes`` and the
    priors' metrics (plus ``extra``) before -> after, seeds averaged, against the earlier run's
    ``out/before/results.csv``."""
    from vqlab.reports.changes import before_after, changes_section, read_before

    if not p.get("changes"):
        return []
    metrics = ["g_fd", "class_consistency", "pixel_distance", "sample_perplexity",
               "sample_codes_used", *extra]  # fmt: skip
    before = read_before(out)
    tables = [] if before is None else [(
        "Priors, before -> after (mean over seeds):",
        before_after(before, rows, lambda r: str(r["tokenizer"]), metrics),
    )]  # fmt: skip
    return changes_section(p["changes"], tables)


def stage_times(out: Path, timing: dict[str, float]) -> dict[str, float]:
    """Each stage's wall time from the invocation that did its work: ``out/timing.json`` keeps
    the longest time seen per stage, since an invocation that finds a stage finished only
    checks it (seconds) and must not overwrite the time it took."""
    path = out / "timing.json"
    seen = json.loads(path.read_text()) if path.is_file() else {}
    merged = {k: max(v, float(seen.get(k, 0.0))) for k, v in timing.items()}
    path.write_text(json.dumps(merged, indent=2))
    return merged


def _values(rows: list[dict], strategy: str, key: str) -> list[float]:
    return [r[key] for r in rows if r.get("tokenizer") == strategy and r.get(key) is not None]


SCORING = (
    "Pixel distance: mean per-pixel RMS difference of 10,000 random pairs on the 0-255 scale "
    "(within class: pairs inside each class). The last row scores real images: g-FD/g-KD of N "
    "train against the N test images (the real-against-real floor), and the test images' own "
    "pixel distance and class consistency (the featnet's accuracy on them)."
)


def report_tail(
    job: Job,
    rows: list[dict],
    runs: tuple[str, list[str]],
    *settings: str,
    sampler_note: str = "",
    timing: dict[str, float],
    compute: dict[str, list[dict]],
) -> list[str]:
    """The end shared by the generation reports (MaskGIT's and VAR's): the table of every prior
    run (``runs``: its heading and the columns between the seed and the metrics), the seed-0
    sample grids, and "How this was made": preset and data, the report's own ``settings``
    lines, the prior and the sampler, the wall time by stage and the compute summed over each
    group of ``compute`` rows (``{"priors": rows}`` -> ``priors 12.3 min``)."""
    p = job.settings
    heading, columns = runs
    grids = sorted((job.out / "samples").glob("*seed=0/grid.png"))
    summed = ", ".join(
        f"{name} {sum(float(r.get('seconds') or 0) for r in group) / 60:.1f} min"
        for name, group in compute.items()
    )
    return [
        f"## {heading}",
        "",
        markdown_table(rows, ["run", "status", "tokenizer", "seed", *columns, *METRICS]),
        "",
        "## Samples (seed 0, one row per class)",
        "",
        *(f"![{g.parent.name}](samples/{g.parent.name}/grid.png)" for g in grids),
        "",
        *job.how_made(
            f"- preset: `{job.preset}`; runs trained {job.jobs} at a time; data: `{job.data}` (if "
            "`../shared/data/cifar10`: the JPEG re-encoded copy)",
            *settings,
            "- prior: " + ", ".join(f"`{k}={v}`" for k, v in p["prior"].items()),
            "- sampler: " + ", ".join(f"`{s}`" for s in p["sample"]) + sampler_note,
            "- wall time by stage (from the invocation that did it; `timing.json`): "
            + stage_text(timing)
            + "; compute summed over the runs: "
            + summed,
        ),
    ]


def findings(rows: list[dict], reference: dict) -> list[str]:
    """What the table says, in words: g-FD (with the seeds' spread), pixel distance against
    the real images' own, and the token diversity of the samples."""
    s = {k: _values(rows, "standard", k) for k in METRICS}
    d = {k: _values(rows, "deferred", k) for k in METRICS}
    if not (s["g_fd"] and d["g_fd"]):
        return ["- A tokenizer has no finished prior; see results.csv."]

    def mean(v):
        return float(np.mean(v))

    gap = mean(s["g_fd"]) - mean(d["g_fd"])
    head = (
        f"- g-FD: {mean(s['g_fd']):.3f} (standard) vs {mean(d['g_fd']):.3f} (deferred), "
        f"{'deferred' if gap > 0 else 'standard'} lower by {abs(gap):.3f}; "
    )
    if min(len(s["g_fd"]), len(d["g_fd"])) < 2:  # no spread to read the gap against
        lines = [head + "one prior seed per tokenizer, so the seeds' spread is not measured."]
    else:
        spread = max(np.ptp(s["g_fd"]), np.ptp(d["g_fd"]))
        lines = [
            head + f"the widest seed-to-seed range of one tokenizer is {spread:.3f}"
            + (" (the gap is larger)." if abs(gap) > spread else " (the gap is within it).")
        ]  # fmt: skip
    real = reference.get("pixel_distance")
    if real is not None and s["pixel_distance"] and d["pixel_distance"]:
        pd_s, pd_d = mean(s["pixel_distance"]), mean(d["pixel_distance"])
        lines.append(
            f"- Pixel distance: {pd_s:.1f} (standard) vs {pd_d:.1f} (deferred); real test "
            f"images score {real:.1f}. The higher value is "
            f"{'standard' if pd_s > pd_d else 'deferred'}'s, "
            f"{abs(max(pd_s, pd_d) - real):.1f} {'above' if max(pd_s, pd_d) > real else 'below'} "
            "the real images: pairwise pixel distance grows with noise as well as with "
            "diversity, so read it against the real value."
        )
    if s["sample_perplexity"] and d["sample_perplexity"]:
        lines.append(
            f"- Token diversity of the samples: perplexity {mean(s['sample_perplexity']):.0f} "
            f"(standard) vs {mean(d['sample_perplexity']):.0f} (deferred), against "
            f"{mean(s['real_perplexity']):.0f} and {mean(d['real_perplexity']):.0f} for the "
            "real test ids of each tokenizer."
        )
    return lines


def _write_report(job: Job, rows, reference, timing) -> None:
    out, p, preset = job.out, job.settings, job.preset
    table = [
        {"strategy": s, **{k: mean_std(rows, s, k) for k in METRICS}}
        for s in ("standard", "deferred")
    ] + [reference_row(reference)]
    sha = next((r["featnet_sha256"][:12] for r in rows if r.get("featnet_sha256")), "?")
    text = [
        f"# Generation on CIFAR-10 ({preset} preset): MaskGIT over standard vs deferred tokens",
        "",
        f"K={p['codebook_size']}; {seeds_text(p['seeds'])} per tokenizer, mean ± std; "
        f"N={p['samples']} class-conditional samples (classes in turn) against N test images. "
        f"g-FD, g-KD and class consistency are in the feature space of featnet {sha} (a "
        f"vqlab-trained ResNet): **not FID**. {SCORING}",
        "",
        *findings(rows, reference),
        "",
        markdown_table(table, ["strategy", *METRICS]),
        "",
        *changes_lines(out, rows, p, ["val_masked_accuracy"]),
        "The papers' numbers (ImageNet-100, 128 px, K=16384, Inception FID) for orientation "
        "only; scale, data and metric network all differ:",
        "",
        markdown_table(PAPERS, ["source", "strategy", "g_fd", "pixel_distance"]),
        "",
        *report_tail(
            job,
            rows,
            ("All runs", ["val_masked_accuracy"]),
            sampler_note=", `sample.cfg=0`",
            timing=timing,
            compute={"priors": rows},
        ),
    ]
    (out / "report.md").write_text("\n".join(text))


REPLICATION = Replication("generation", GENERATION_PRESETS, replicate_generation, needs_data=True)
