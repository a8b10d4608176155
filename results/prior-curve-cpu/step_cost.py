"""CPU seconds per prior train step (one thread), to size the prior compute curve.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 19 /work/main/.venv/bin/python \
        results/prior-curve-cpu/step_cost.py

MaskGIT over 8x8 = 64 ids (the single-scale cpu tokenizers) and VAR over the scales
1,2,3,4,6,8 (L = 130), K = 1024, 10 classes, batch 64, AdamW, at three sizes. Process CPU time
(``time.process_time``) of 6 steps after 2 warm-up steps: on a shared machine wall time
measures the neighbours, CPU time much less so (it still grows somewhat under contention).
"""

import json
import time
from pathlib import Path

import torch

from vqlab.priors import MaskGIT, maskgit_loss
from vqlab.priors.var import VAR, var_loss
from vqlab.quantizers.multiscale import MultiScaleQuantizer

K, C, B, SCALES, D = 1024, 10, 64, (1, 2, 3, 4, 6, 8), 64
SIZES = ((2, 128, 4), (4, 256, 4), (6, 384, 6))


def cost(kind: str, depth: int, width: int, heads: int) -> tuple[float, int]:
    """(CPU seconds per train step, parameter count) of one prior."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(C, (B,), generator=g)
    if kind == "maskgit":
        model = MaskGIT(K, 64, num_classes=C, depth=depth, width=width, heads=heads)
        ids = torch.randint(K, (B, 64), generator=g)

        def loss():
            return maskgit_loss(model, ids, labels, generator=g).loss
    else:
        q = MultiScaleQuantizer(D, K, SCALES).eval()
        model = VAR(K, SCALES, D, C, depth=depth, width=width, heads=heads)
        ids = torch.randint(K, (B, sum(p * p for p in SCALES)), generator=g)

        def loss():
            return var_loss(model, q, ids, labels, generator=g).loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(8):
        t = time.process_time()
        opt.zero_grad()
        loss().backward()
        opt.step()
        if i >= 2:
            times.append(time.process_time() - t)
    return sum(times) / len(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    rows = []
    for kind in ("maskgit", "var"):
        for depth, width, heads in SIZES:
            s, params = cost(kind, depth, width, heads)
            rows.append({"kind": kind, "depth": depth, "width": width, "heads": heads,
                         "cpu_s_per_step": round(s, 4), "params": params})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    Path("results/prior-curve-cpu/step_cost.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
