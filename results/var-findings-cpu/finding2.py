"""Finding 2: at model.width=16 the encoder's last GroupNorm is an InstanceNorm, so the
image-mean latent (what a multi-scale tokenizer's 1x1 scale quantizes) barely varies.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 19 /work/main/.venv/bin/python \
        results/var-findings-cpu/finding2.py [RUN ...]

ratio = RMS over images of (image-mean latent - its mean over images), divided by the RMS over
images and pixels of (z_e - its mean over images and pixels): the share of the latent's spread
that the 1x1 scale can see. Measured on the first 2000 CIFAR-10 test images, for freshly built
encoders (step 0; 3 seeds, no training) at width 16 with 32 (the default), 8 and 1 groups and
at width 64 with 32, and for trained tokenizer runs named on the command line.
"""

import json
import sys
import time
from pathlib import Path

import torch

from vqlab import load_config
from vqlab.data.dataset import load_dataset
from vqlab.models.registry import build_model
from vqlab.tokenizer import Tokenizer

DATA = "../shared/data/cifar10"
OUT = Path("runs/var-findings/finding2.json")
BASE = [
    "data.name=cifar10", f"data.path={DATA}", "data.test_limit=2000", "model.kind=conv",
    "model.latent_dim=64", "model.downsample=4", "vq.kind=multiscale",
    "vq.scales=1,2,3,4,6,8", "vq.codebook_size=1024",
]  # fmt: skip


def ratio(z: torch.Tensor) -> dict[str, float]:
    """z (B, D, h, w) -> the image-mean spread, the per-pixel spread and their ratio."""
    image_mean = z.mean((2, 3))  # (B, D): the 1x1 scale's input, area-downsampled to 1x1
    mean_spread = (image_mean - image_mean.mean(0)).pow(2).sum(1).mean().sqrt()
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])
    pixel_spread = (flat - flat.mean(0)).pow(2).sum(1).mean().sqrt()
    return {
        "image_mean_spread": float(mean_spread),
        "pixel_spread": float(pixel_spread),
        "ratio": float(mean_spread / pixel_spread),
    }


@torch.no_grad()
def main() -> None:
    t0 = time.perf_counter()
    cfg = load_config(None, BASE)
    x = load_dataset(cfg.data, 0).test_x  # (2000, 3, 32, 32) in [-1, 1]
    rows = []
    for width, groups in ((16, 32), (16, 8), (16, 1), (64, 32)):
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            c = load_config(None, [*BASE, f"model.width={width}", f"model.norm_groups={groups}"])
            enc = build_model(c.model, c.vq, tuple(x.shape[1:])).encoder.eval()
            last = enc.norm_out
            rows.append({"at": "step 0", "width": width, "norm_groups": groups, "seed": seed,
                         "last_norm": f"{last.num_groups} groups / {last.num_channels} ch",
                         **ratio(enc(x))})  # fmt: skip
    for run in sys.argv[1:]:
        tok = Tokenizer.from_pretrained(run)
        m = tok.config.model
        rows.append({"at": f"trained: {Path(run).name}", "width": m.width,
                     "norm_groups": m.norm_groups, "seed": tok.config.seed,
                     "last_norm": f"{tok.model.encoder.norm_out.num_groups} groups / "
                     f"{tok.model.encoder.norm_out.num_channels} ch",
                     **ratio(tok.model.encoder(x.to(tok.device)).cpu())})  # fmt: skip
    out = {"rows": rows, "seconds": time.perf_counter() - t0}
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
