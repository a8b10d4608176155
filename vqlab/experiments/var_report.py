"""The report of ``vqlab replicate var`` (:mod:`vqlab.experiments.var`): the tokenizers' and
priors' tables, the per-scale perplexity (by scale, over training, and whether it settled), why
a scale collapses, the "What changed and why" section and the plots.
"""

from __future__ import annotations

from pathlib import Path

from vqlab.experiments.generation import (
    _SRC,
    METRICS,
    SCORING,
    findings,
    mean_std,
    reference_row,
    report_tail,
    seeds_text,
)
from vqlab.experiments.protocol import Job
from vqlab.reports.markdown import markdown_table

PAPERS = [  # ImageNet-100, 128 px, K = 16384 (PAPER.md); not comparable in scale
    {"source": _SRC, "strategy": "deferred", "r_fd": "5.04 (r-FID)", "g_fd": "10.70 (FID)",
     "pixel_distance": 75.92, "real_perplexity": 7044.51},
    {"source": _SRC, "strategy": "standard", "r_fd": "5.39 (r-FID)", "g_fd": "12.88 (FID)",
     "pixel_distance": 70.69, "real_perplexity": 2801.88},
]  # fmt: skip


TOKENIZER_COLUMNS = [
    "strategy", "ms_init", "r_fd", "floor_fd", "recon_mse", "psnr", "perplexity", "usage",
    "codebook_mean_l2", "seconds",
]  # fmt: skip


def scale_curve(run: Path) -> list[dict]:
    """Per eval row of a multi-scale tokenizer run and scale: ``step``, ``phase``, ``scale``,
    ``perplexity`` and ``usage`` (on the run's eval images), from its metrics.jsonl."""
    from vqlab.training.logging import read_metrics

    return [
        {"step": r["step"], "phase": r.get("phase"), "scale": s["scale"],
         "perplexity": s["perplexity"], "usage": s["usage"]}
        for r in read_metrics(run) if r.get("eval")
        for s in r.get("per_scale") or []
    ]  # fmt: skip


def settling(curve: list[dict], window: int) -> dict[int, tuple[float, float]]:
    """Per scale: (the last eval's perplexity, its relative change over the last ``window``
    steps), the change taken from the latest eval at or before ``last step - window`` (from
    the first eval when none is that early) and relative to that earlier value (40 -> 50 is
    +25%, 43 -> 17 is -60%)."""
    out = {}
    for scale in sorted({int(r["scale"]) for r in curve}):
        pts = sorted((int(r["step"]), float(r["perplexity"])) for r in curve if r["scale"] == scale)
        last_step, last = pts[-1]
        early = [p for st, p in pts if st <= last_step - window] or [pts[0][1]]
        out[scale] = (last, (last - early[-1]) / early[-1])
    return out


# the share of a run's steps, at its end, over which the report reads whether a scale's
# perplexity settled (100 of 500 steps, 300 of 1500): a fixed window would call a longer run
# settled for the same drift per step
SETTLE_SHARE = 0.2


def settle_window(curve: list[dict]) -> int:
    """The settling window of a run's ``scale_curve``: SETTLE_SHARE of its last eval's step."""
    return round(SETTLE_SHARE * max((int(r["step"]) for r in curve), default=0))


def _sides(p: dict) -> list[int]:
    return [int(s) for s in p["scales"].split(",")]


def _by_scale(tok_rows: list[dict], sides: list[int], cells_of, fmt) -> list[dict]:
    """One table row per tokenizer: ``fmt(cell)`` under each scale ``p=side`` whose cell
    ``cells_of(row)`` (``{side: cell}``) holds, blank where it holds none."""
    table = []
    for r in tok_rows:
        cells = cells_of(r)
        row = {"tokenizer": f"{r['strategy']}, {r['ms_init']}"}
        for side in sides:
            row[f"p={side}"] = fmt(cells[side]) if side in cells else ""
        table.append(row)
    return table


def _scale_columns(sides: list[int]) -> list[str]:
    return ["tokenizer", *(f"p={s}" for s in sides)]


def _settling_table(tok_rows: list[dict], p: dict) -> str:
    """Per tokenizer and scale: final perplexity (change over the run's last SETTLE_SHARE)."""

    def cells(row: dict) -> dict:
        curve = scale_curve(row["folder"])
        return settling(curve, settle_window(curve))

    table = _by_scale(
        tok_rows,
        _sides(p),
        cells,
        lambda c: f"{c[0]:.0f} ({100 * c[1]:+.0f}%)",
    )
    return markdown_table(table, _scale_columns(_sides(p)))


def _changes(out: Path, tok_rows: list[dict], rows: list[dict], p: dict) -> list[str]:
    """The "What changed and why" section against the earlier run kept in ``out/before``."""
    from vqlab.reports.changes import before_after, changes_section, read_before

    if not p.get("changes"):
        return []
    sides = _sides(p)
    tok_metrics = ["r_fd", "recon_mse", "perplexity", "usage", *(f"perplexity_p{s}" for s in sides)]
    gen_metrics = ["g_fd", "class_consistency", "pixel_distance", "sample_perplexity",
                   "sample_codes_used", f"sample_perplexity_p{sides[0]}"]  # fmt: skip
    tables = []
    before_tok, before_gen = read_before(out, "tokenizers.csv"), read_before(out, "results.csv")
    if before_tok is not None:
        tables.append((
            "Tokenizers, before -> after (test set):",
            before_after(before_tok, [_flat(r) for r in tok_rows],
                         lambda r: f"{r['strategy']}, {r['ms_init']}", tok_metrics),
        ))  # fmt: skip
    if before_gen is not None:
        tables.append((
            "VAR priors, before -> after (mean over seeds):",
            before_after(before_gen, rows, lambda r: str(r["tokenizer"]), gen_metrics),
        ))  # fmt: skip
    return changes_section(p["changes"], tables)


def scale_rows(tok_rows: list[dict]) -> list[dict]:
    """One row per tokenizer and scale from the evaluation's ``per_scale`` (test set)."""
    out = []
    for r in tok_rows:
        for s in r.get("per_scale") or []:
            name = f"{r['strategy']}, {r['ms_init']}"
            out.append({"tokenizer": name, **s})
    return out


def _flat(row: dict) -> dict:
    """A tokenizer row for the csv: lists and paths dropped, per-scale perplexity spread."""
    flat = {k: v for k, v in row.items() if not isinstance(v, list | dict | Path)}
    for s in row.get("per_scale") or []:
        flat[f"perplexity_p{s['scale']}"] = s["perplexity"]
        flat[f"usage_p{s['scale']}"] = s["usage"]
    return flat


def _plots(out: Path, tok_rows: list[dict], rows: list[dict]) -> None:
    """plots/per_scale.png: the tokenizers' perplexity and usage against scale;
    plots/per_scale_training.png: each tokenizer's per-scale perplexity over training."""
    from vqlab.reports.plots import plot_against, plot_per_scale_over_training

    (out / "plots").mkdir(exist_ok=True)
    plot_against(
        scale_rows(tok_rows),
        "scale",
        ["perplexity", "usage"],
        out / "plots" / "per_scale.png",
        series="tokenizer",
        title="Multi-scale tokenizers: test-set perplexity and usage per scale",
        xlabel="scale (side p_k)",
    )
    plot_per_scale_over_training(
        {f"{r['strategy']}, {r['ms_init']}": scale_curve(r["folder"]) for r in tok_rows},
        "perplexity",
        out / "plots" / "per_scale_training.png",
        title="Per-scale perplexity over training (eval images)",
    )


def _scale_table(tok_rows: list[dict], rows: list[dict], p: dict) -> str:
    """Tokenizers' perplexity / usage per scale, then the priors' samples against the real ids
    (no such rows while ``rows`` holds no prior)."""
    sides = _sides(p)
    table = _by_scale(
        tok_rows,
        sides,
        lambda r: {c["scale"]: c for c in r.get("per_scale") or []},
        lambda c: f"{c['perplexity']:.0f} / {100 * c['usage']:.1f}%",
    )
    for strategy in ("standard", "deferred") if rows else ():
        for what in ("real", "sample"):
            row = {"tokenizer": f"{strategy} VAR: {what} ids (perplexity)"}
            for side in sides:
                row[f"p={side}"] = mean_std(rows, strategy, f"{what}_perplexity_p{side}")
            table.append(row)
    return markdown_table(table, _scale_columns(sides))


def _scale_section(tok_rows: list[dict], rows: list[dict], p: dict) -> list[str]:
    """The report's per-scale part: perplexity / usage per scale (with the VAR samples' rows
    when ``rows`` holds priors), whether it settled over training, and each scale's spread."""
    samples = (
        ", and the per-scale perplexity of the VAR samples against that of the real test ids "
        f"(N={p['samples']}), mean ± std over prior seeds"
    )
    return [
        f"Perplexity / usage per scale (side p, test set){samples if rows else ''}:",
        "",
        _scale_table(tok_rows, rows, p),
        "",
        "![per scale](plots/per_scale.png)",
        "",
        "Has the per-scale perplexity settled? Each tokenizer's last evaluation per scale, with "
        f"its change over the last {SETTLE_SHARE:.0%} of the run's steps (eval images; "
        "`metrics.jsonl`):",
        "",
        _settling_table(tok_rows, p),
        "",
        "![per scale over training](plots/per_scale_training.png)",
        "",
        "Why a scale collapses: what each scale quantizes (the area-downsampled latent at the "
        "coarsest, residuals after) spreads around its mean by the first number (RMS, test "
        "images), against the mean distance to the nearest and the second-nearest code. A "
        "spread far below the second distance means one code takes the whole scale:",
        "",
        _spread_table(tok_rows, p),
        "",
        *_coarse_finding(tok_rows),
    ]


def _spread_table(tok_rows: list[dict], p: dict) -> str:
    """Per tokenizer and scale: input spread / nearest-code / second-code distance."""
    table = _by_scale(
        tok_rows,
        _sides(p),
        lambda r: {c["scale"]: c for c in r.get("scale_spread") or []},
        lambda c: f"{c['input_spread']:.3f} / {c['nearest_code']:.3f} / {c['second_code']:.3f}",
    )
    return markdown_table(table, _scale_columns(_sides(p)))


def _coarse_finding(tok_rows: list[dict]) -> list[str]:
    """The coarsest scale of each tokenizer: one code for all, and why (the spread)."""
    lines = []
    for r in tok_rows:
        per, spread = r.get("per_scale") or [], r.get("scale_spread") or []
        if not (per and spread):
            continue
        c, s = per[0], spread[0]
        lines.append(
            f"- {r['strategy']}, {r['ms_init']}: at p={c['scale']} {c['perplexity']:.1f} "
            f"effective codes ({c['usage'] * r.get('codebook_size', 0):.0f} used); "
            f"its inputs spread {s['input_spread']:.3f} around their mean, against "
            f"{s['nearest_code']:.3f} to the nearest and {s['second_code']:.3f} to the "
            "second-nearest code."
        )
    return lines


def _findings(tok_rows: list[dict], rows: list[dict], p: dict) -> list[str]:
    by = {(r["strategy"], r["ms_init"]): r for r in tok_rows}
    lines = []
    for way in p["init_ways"]:
        s, d = by.get(("standard", way)), by.get(("deferred", way))
        if not (s and d):
            continue
        per_scale = " vs ".join(
            "/".join(f"{c['perplexity']:.0f}" for c in x.get("per_scale") or []) for x in (s, d)
        )
        lines.append(
            f"- ms_init={way}: r-FD {s['r_fd']:.3f} (standard) vs {d['r_fd']:.3f} (deferred); "
            f"perplexity {s['perplexity']:.0f} vs {d['perplexity']:.0f}; usage "
            f"{100 * s['usage']:.1f}% vs {100 * d['usage']:.1f}%; MSE {s['recon_mse']:.4f} vs "
            f"{d['recon_mse']:.4f}; perplexity per scale, coarse to fine: {per_scale}."
        )
    return lines


def _write_report(job: Job, tok_rows, rows, reference, timing) -> None:
    out, p, preset = job.out, job.settings, job.preset
    gen = [
        {"strategy": s, **{k: mean_std(rows, s, k) for k in METRICS}}
        for s in ("standard", "deferred")
    ] + [reference_row(reference)]
    sha = next((r["featnet_sha256"][:12] for r in rows if r.get("featnet_sha256")), "?")
    floor = next((r["floor_fd"] for r in tok_rows if "floor_fd" in r), float("nan"))
    text = [
        f"# VAR on CIFAR-10 ({preset} preset): multi-scale tokenizers, standard vs deferred",
        "",
        f"K={p['codebook_size']} shared by the scales {p['scales']}; tokenizers trained with MSE "
        "+ perceptual loss at equal budget (the tokenizer replication's settings). r-FD, g-FD, "
        f"g-KD and class consistency are in the feature space of featnet {sha} (a vqlab-trained "
        f"ResNet): **not FID**; its real-against-real floor is FD {floor:.3f}. Perplexity and "
        "usage are over the test set.",
        "",
        *_changes(out, tok_rows, rows, p),
        "## Tokenizers",
        "",
        *_findings(tok_rows, rows, p),
        "",
        markdown_table(tok_rows, TOKENIZER_COLUMNS),
        "",
        *_scale_section(tok_rows, rows, p),
        "",
        f"## Generation (VAR priors over the `ms_init={p['prior_init']}` tokenizers)",
        "",
        f"{seeds_text(p['seeds'])} per tokenizer, mean ± std; N={p['samples']} "
        f"class-conditional samples (classes in turn) against N test images. {SCORING}",
        "",
        *findings(rows, reference),
        "",
        markdown_table(gen, ["strategy", *METRICS]),
        "",
        "The papers' numbers (ImageNet-100, 128 px, K=16384, Inception FID) for orientation "
        "only; scale, data and metric network all differ:",
        "",
        markdown_table(
            PAPERS, ["source", "strategy", "r_fd", "g_fd", "pixel_distance", "real_perplexity"]
        ),  # fmt: skip
        "",
        *report_tail(
            job,
            rows,
            ("All priors", ["val_loss", "val_accuracy"]),
            "- tokenizers: the tokenizer replication's `"
            + p["tokenizer_preset"]
            + "` preset"
            + "".join(f", `{k}={v}`" for k, v in p.get("tokenizer_set", {}).items()),
            timing=timing,
            compute={"tokenizers": tok_rows, "priors": rows},
        ),
    ]
    job.write_report(text)
