"""Finding 1's tables from run_f1.sh's runs (finished or not): copies each run's config.yaml,
metrics.jsonl and summary.json to results/var-findings-cpu/runs/<name>/ and writes f1.md.

    PYTHONPATH=$PWD /work/main/.venv/bin/python results/var-findings-cpu/summarize_f1.py
"""

import json
import shutil
from pathlib import Path

WORK = Path("runs/var-findings")
OUT = Path("results/var-findings-cpu")


def _evals(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("eval")]


def main() -> None:
    runs = sorted(p.parent for p in WORK.glob("*__g*/metrics.jsonl"))
    lines = ["Latent spread (`embedding_mean_l2`: the mean distance between two latents, test",
             "images) and codebook use over training, every 50 steps (VQ starts at 250 for",
             "deferred):", ""]  # fmt: skip
    steps = sorted({r["step"] for run in runs for r in _evals(run)})
    lines.append("| run | " + " | ".join(str(s) for s in steps) + " |")
    lines.append("|---" * (len(steps) + 1) + "|")
    for run in runs:
        by = {r["step"]: r for r in _evals(run)}
        cells = []
        for s in steps:
            r = by.get(s)
            cells.append(
                ""
                if r is None
                else f"{r['embedding_mean_l2']:.2f}"
                + (
                    f" / {r['perplexity']:.0f} / {100 * r['usage']:.0f}%"
                    if "perplexity" in r
                    else ""
                )
            )
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    lines += ["", "(cells: spread, or spread / perplexity / usage once quantized)", ""]
    final = []
    for run in runs:
        dest = OUT / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "summary.json"):
            if (run / name).is_file():
                shutil.copy(run / name, dest / name)
        if (run / "summary.json").is_file():
            s = json.loads((run / "summary.json").read_text())
            per = " / ".join(f"{c['perplexity']:.0f}" for c in s.get("per_scale", []))
            use = " / ".join(f"{100 * c['usage']:.1f}%" for c in s.get("per_scale", []))
            final.append(
                f"| {run.name} | {s['recon_mse']:.4f} | {s['perplexity']:.0f} | "
                f"{100 * s['usage']:.1f}% | {s['embedding_mean_l2']:.2f} | {per} | {use} | "
                f"{s.get('seconds', 0):.0f} |"
            )
    if final:
        lines += [
            "Finished runs, test set (first 500 images), after 500 steps:",
            "",
            "| run | recon MSE | perplexity | usage | spread | perplexity p=1/2/3/4/6/8 | "
            "usage p=1/2/3/4/6/8 | wall s |",
            "|---|---|---|---|---|---|---|---|",
            *final,
        ]
    (OUT / "f1.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
