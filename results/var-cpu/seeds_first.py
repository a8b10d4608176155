"""`vqlab replicate var --preset cpu`, seed by seed: the same runs, so that a report exists as
soon as one prior seed per tokenizer has finished (2 CPU cores fit one pair at a time).

    python results/var-cpu/seeds_first.py tokenizers OUT   # the tokenizers and their report
    python results/var-cpu/seeds_first.py tokenizers OUT train.steps=3000 init_ways=finest
    python results/var-cpu/seeds_first.py priors OUT       # the priors, seed 0's pair first
    python results/var-cpu/seeds_first.py report OUT 0     # the replicate with seeds 0 only

``tokenizers`` (or ``evaluate``, its older name) trains the six multi-scale tokenizers two at a
time (the replicate's own order: the pair the priors read, ``prior_init``, first), evaluates
them and writes OUT/tokenizers.csv, OUT/plots/ and OUT/tokenizers.md, the report's tokenizer
tables, before any prior exists (KEY=VALUE words after OUT change the preset for a probe:
``init_ways`` takes comma-separated ways, any other key goes into ``tokenizer_set``);
``priors`` trains the preset's priors in the order
(standard, deferred) of seed 0, then of seed 1, two at a time; ``report SEEDS`` runs the
replicate itself with the preset's ``seeds`` set to SEEDS (comma-separated): every finished
stage is skipped, so it samples, scores and writes the report of those seeds. With every seed
finished, ``vqlab replicate var --data ../shared/data/cifar10 --preset cpu --out OUT --jobs 2``
writes the full report.
"""

import sys
from pathlib import Path

from vqlab.experiments import replications
from vqlab.experiments.generation import prior_runs
from vqlab.experiments.sweep import run_sweep
from vqlab.experiments.var import VAR_PRESETS, _tokenizers
from vqlab.experiments.var_report import _findings, _flat, _plots, _scale_section
from vqlab.reports.results import write_results

DATA = "../shared/data/cifar10"


def main() -> None:
    what, out = sys.argv[1], Path(sys.argv[2])
    p = VAR_PRESETS["cpu"]
    if what in ("tokenizers", "evaluate"):
        for word in sys.argv[3:]:
            key, value = word.split("=", 1)
            if key == "init_ways":
                p["init_ways"] = value.split(",")
            else:
                p["tokenizer_set"] = {**p["tokenizer_set"], key: value}
        rows, featnet = _tokenizers(out, DATA, p, 2, False)
        write_results(out / "tokenizers.csv", [_flat(r) for r in rows])
        _plots(out, rows, [])
        lines = [
            f"# {out}: the multi-scale tokenizers alone (no prior yet)",
            "",
            f"Written by `python results/var-cpu/seeds_first.py {' '.join(sys.argv[1:])}`; "
            "test set, "
            f"featnet `{featnet}`; the preset's `tokenizer_set`: {p['tokenizer_set']}",
            "",
            *_findings(rows, [], p),
            "",
            *_scale_section(rows, [], p),
        ]
        (out / "tokenizers.md").write_text("\n".join(lines))
        return
    if what == "priors":
        runs = prior_runs({s: out / "tokens" / f"{s}.npz" for s in ("standard", "deferred")}, p)
        by = {(r[1]["tokenizer"], r[1]["seed"]): r for r in runs}
        order = [by[(s, str(seed))] for seed in p["seeds"] for s in ("standard", "deferred")]
        rows = run_sweep(order, out / "priors", jobs=2, progress=False)
        print([(r["run"], r["status"]) for r in rows], flush=True)
        return
    seeds = [int(s) for s in sys.argv[3].split(",")]
    p["seeds"] = seeds
    command = f"python results/var-cpu/seeds_first.py report {out} {sys.argv[3]}"
    replications.replicate("var", out, data=DATA, jobs=2, progress=False, command=command)


if __name__ == "__main__":
    main()
