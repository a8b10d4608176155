"""Finding 3: a VAR prior trained with label smoothing 0.1 and sampled with no top-k/top-p
draws the smoothing floor. Resumable (finished priors and sample sets are skipped).

Run from the repo root, after run_f1.sh has trained the tokenizer it names:
    PYTHONPATH=$PWD nice -n 19 /work/main/.venv/bin/python results/var-findings-cpu/finding3.py

One tokenizer (the multi-scale standard one, loss_on=every_scale, the committed var-cpu
tokenizer's settings without the perceptual loss), two VAR priors (the var cpu preset's prior
at STEPS steps, label smoothing 0.1 and 0), each sampled N class-conditional times with the
sampler unfiltered and with VAR's top-k 900 / top-p 0.96. Token statistics against the real
ids, and g-FD / class consistency in the committed featnet.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from vqlab.config import build_config
from vqlab.experiments.generation import sample_and_score, tokenize_all
from vqlab.experiments.sweep import RUNS_DIR, run_sweep
from vqlab.priors.tokens import load_tokens

DATA = "../shared/data/cifar10"
FEATNET = Path("results/featnet-cifar10")
WORK = Path("runs/var-findings")
TOKENIZER = WORK / sys.argv[1] if len(sys.argv) > 1 else WORK / "standard__every_scale__g32"
OUT = WORK / f"f3__{TOKENIZER.name}"
STEPS, N = 300, 1000
PRIOR = {
    "prior.kind": "var", "prior.depth": 2, "prior.width": 128, "prior.heads": 4,
    "prior.dropout": 0.1, "prior.class_dropout": 0.1, "train.steps": STEPS,
    "train.batch_size": 64, "train.lr": 1e-3, "train.warmup_steps": 100,
    "train.lr_schedule": "cosine", "train.weight_decay": 0.05, "train.log_every": 50,
    "train.eval_every": STEPS,
}  # fmt: skip
SAMPLERS = {"plain": ["sample.top_k=0", "sample.top_p=0"],
            "topk900_topp0.96": ["sample.top_k=900", "sample.top_p=0.96"]}  # fmt: skip


def token_stats(ids: np.ndarray, real: np.ndarray, scales: list[int]) -> dict:
    """Share of samples whose 1x1 code never occurs in the real ids; distinct codes in the
    samples and in the real ids; per scale, the share of sampled tokens at codes that never
    occur at that scale in the real ids."""
    bounds = np.cumsum([0, *(p * p for p in scales)])
    out = {
        "unseen_1x1_share": float(np.mean(~np.isin(ids[:, 0], np.unique(real[:, 0])))),
        "distinct_codes_samples": int(np.unique(ids).size),
        "distinct_codes_real": int(np.unique(real[: ids.shape[0]]).size),
    }
    for p, a, b in zip(scales, bounds[:-1], bounds[1:]):
        seen = np.unique(real[:, a:b])
        out[f"unseen_share_p{p}"] = float(np.mean(~np.isin(ids[:, a:b], seen)))
        out[f"distinct_p{p}_samples"] = int(np.unique(ids[:, a:b]).size)
        out[f"distinct_p{p}_real"] = int(np.unique(real[: ids.shape[0], a:b]).size)
    return out


def main() -> None:
    t0 = time.perf_counter()
    tokens = tokenize_all(OUT, DATA, {"tok": TOKENIZER}, progress=False)
    t_tok = time.perf_counter() - t0
    runs = []
    for ls in ("0.1", "0.0"):
        values = {"task": "prior", "data.name": "tokens", "data.path": str(tokens["tok"])}
        values.update(PRIOR, **{"prior.label_smoothing": ls, "seed": 0})
        runs.append((f"prior__ls={ls}", {"tokenizer": "tok", "ls": ls}, build_config(values)))
    rows = run_sweep(runs, OUT / "priors", jobs=1, progress=False)
    t_prior = time.perf_counter() - t0 - t_tok
    t = load_tokens(tokens["tok"])
    results = []
    for name, overrides in SAMPLERS.items():
        sub = OUT / name
        for row in rows:  # sample_and_score reads the priors from sub/priors
            link = sub / "priors" / RUNS_DIR / row["run"]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((OUT / "priors" / RUNS_DIR / row["run"]).resolve())
        scored = [dict(r) for r in rows]
        p = {"samples": N, "sample": overrides}
        ref = sample_and_score(sub, scored, tokens, {"tok": TOKENIZER}, FEATNET, DATA, p, False)
        for r in scored:
            ids = np.load(sub / "samples" / r["run"] / "samples.npz")["ids"]
            stats = token_stats(ids, t.train_ids, list(t.scales))
            keep = ("g_fd", "class_consistency", "sample_perplexity", "real_perplexity",
                    "featnet_sha256", "val_loss", "val_accuracy", "seconds")  # fmt: skip
            results.append({"prior": r["run"], "sampler": name, **stats,
                            **{k: r.get(k) for k in keep}})  # fmt: skip
        results.append({"prior": "real (train vs test)", "sampler": "", "g_fd": ref["g_fd"],
                        "class_consistency": ref["class_consistency"]})  # fmt: skip
    t_sample = time.perf_counter() - t0 - t_tok - t_prior
    timing = {"tokenize_s": t_tok, "priors_s": t_prior, "sample_score_s": t_sample}
    (OUT / "finding3.json").write_text(json.dumps({"rows": results, "timing": timing}, indent=2))
    print(json.dumps({"rows": results, "timing": timing}, indent=2))


if __name__ == "__main__":
    main()
