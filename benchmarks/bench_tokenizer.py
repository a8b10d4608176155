"""Time the steps of a replication preset's tokenizer at its real size, on synthetic images.

    python benchmarks/bench_tokenizer.py --preset gpu --steps 300 --out-dir DIR   # one GPU
    python benchmarks/bench_tokenizer.py --smoke --out-dir DIR                    # toy, CPU

The preset is ``vqlab replicate tokenizer``'s (``TOKENIZER_PRESETS``: for ``gpu`` 128-pixel
images, a width-128 conv autoencoder down 8x to 16x16 latents of D = 32, batch 64, K = 16,384,
MSE + 0.1 perceptual loss, EMA codebook initialised by k-means on 262,144 encoder outputs,
20 iterations). No image set can be fetched on a lent machine, so the images are synthetic:
smooth random pictures with a class-dependent tint, written as PNG files in the image-folder
layout (``train/<class>/``, ``test/<class>/``) that the preset reads, decoded by vqlab's own
loader. The perceptual net is a vgg feature net trained for ``--percepnet-steps`` on them: its
weights do not change the cost of a step, only what the loss means.

The run is the deferred strategy cut to ``--steps`` (``--pretrain-steps`` of them without VQ),
driven step by step through the training engine's own step function (forward, backward, the
non-finite guard and its one sync, the optimizer steps), so each step is timed alone; the
k-means init is timed as its own stage. No evaluation runs.

Writes ``tokenizer_<device>_torch<version>.csv`` and ``.json`` to ``--out-dir``: one row per
stage (data, percepnet, build, init, pretrain, vq) with seconds, and for the step stages the
median ms a step and images per second.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SMOKE = {
    "data.image_size": 32,
    "model.width": 8,
    "model.downsample": 4,
    "model.latent_dim": 8,
    "train.batch_size": 8,
    "vq.init_samples": 512,
    "vq.kmeans_iters": 2,
    "data.test_limit": 16,
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="gpu", help="a TOKENIZER_PRESETS name")
    p.add_argument("--steps", type=int, default=300, help="steps in all")
    p.add_argument("--pretrain-steps", type=int, default=100, help="of them, without VQ")
    p.add_argument("--codebook-size", type=int, help="K (default: the preset's largest)")
    p.add_argument("--train-images", type=int, default=1280, help="synthetic training images")
    p.add_argument("--percepnet-steps", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="toy sizes (SMOKE), a few steps, CPU")
    p.add_argument("--device", default="auto", help="the config's device")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args()


def write_images(root: Path, n_train: int, n_test: int, size: int, classes: int = 10) -> None:
    """``root/{train,test}/c<k>/<i>.png``: smooth random RGB pictures (a coarse noise grid
    upsampled bicubically) tinted by class, so a feature net has something to learn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    tints = rng.uniform(-60, 60, (classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % classes
            coarse = rng.uniform(0, 255, (size // 8 or 1, size // 8 or 1, 3)) + tints[c]
            img = Image.fromarray(coarse.clip(0, 255).astype(np.uint8))
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            img.resize((size, size), Image.BICUBIC).save(folder / f"{i}.png")


def preset_values(args: argparse.Namespace, data: Path, percepnet: Path) -> dict:
    """The preset's config values for one deferred run, cut to ``args.steps``."""
    from vqlab.experiments.cifar import CIFAR_BASE
    from vqlab.experiments.tokenizer import TOKENIZER_PRESETS

    p = dict(TOKENIZER_PRESETS[args.preset])
    sizes = p.pop("sizes")
    for key in ("gan_size", "loss.gan", "featnet_steps", "percepnet_steps"):
        p.pop(key)
    values = {**CIFAR_BASE, **p, "data.name": "image_folder", "data.path": str(data)}
    values.update({
        "loss.perceptual_net": str(percepnet),
        "vq.codebook_size": args.codebook_size or max(sizes),
        "train.strategy": "deferred",
        "train.steps": args.steps,
        "train.pretrain_steps": args.pretrain_steps,
        "device": args.device,
    })  # fmt: skip
    if args.smoke:
        values.update(SMOKE)
    return values


def timed_steps(run, first: int, last: int) -> list[float]:
    """Seconds of each engine step in [first, last) (each ends in the engine's one sync)."""
    from vqlab.training import engine

    times = []
    for step in range(first, last):
        t0 = time.perf_counter()
        engine._step(run, step)
        times.append(time.perf_counter() - t0)
        run.step = step + 1
    return times


def bench(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    """Every stage of one run (module docstring); returns (rows, facts about the run)."""
    from vqlab.config.parse import build_config
    from vqlab.evaluation.featnet import train_featnet
    from vqlab.training import engine
    from vqlab.training.distributed import Dist, resolve_device

    rows: list[dict] = []

    def stage(name: str, t0: float, **extra) -> None:
        rows.append({"stage": name, "seconds": round(time.perf_counter() - t0, 3), **extra})
        print(rows[-1], flush=True)

    size = SMOKE["data.image_size"] if args.smoke else 128
    t0 = time.perf_counter()
    write_images(work / "images", args.train_images, max(args.train_images // 10, 10), size)
    stage("data", t0, images=args.train_images)
    t0 = time.perf_counter()
    percepnet = work / "percepnet"
    train_featnet("image_folder", work / "images", percepnet, arch="vgg", seed=1,
                  steps=args.percepnet_steps, batch_size=32, progress=False)  # fmt: skip
    stage("percepnet", t0, steps=args.percepnet_steps)
    values = preset_values(args, work / "images", percepnet)
    config = build_config(values, [])
    t0 = time.perf_counter()
    dist = Dist(0, 1, 0, resolve_device(config.device, 0))
    run = engine._build(config, dist, None)
    sync = torch.cuda.synchronize if dist.device.type == "cuda" else lambda: None
    stage("build", t0)
    batch = config.train.batch_size
    pre = config.train.pretrain_steps
    for name, first, last in (("pretrain", 0, pre), ("vq", pre, config.train.steps)):
        t0 = time.perf_counter()
        info = run.task.prepare(first)
        sync()
        if info is not None:
            stage("init", t0, init=config.vq.init, samples=config.vq.init_samples,
                  k=config.vq.codebook_size, iters=config.vq.kmeans_iters)  # fmt: skip
        t0 = time.perf_counter()
        times = timed_steps(run, first, last)
        # the first steps of a phase compile and allocate: the median leaves them out
        ms = 1000 * statistics.median(times) if times else float("nan")
        stage(name, t0, steps=len(times), ms_per_step=round(ms, 3),
              images_per_s=round(1000 * batch / ms, 1) if times else float("nan"))  # fmt: skip
    params = sum(p.numel() for p in run.task.modules["model"].parameters())
    facts = {key: values[key] for key in sorted(values) if key not in ("data.path",)}
    facts.update(device=str(dist.device), model_params=params)
    return rows, facts


def environment(device: str) -> dict:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"device": name, "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip


def write(rows: list[dict], env: dict, facts: dict, out_dir: Path) -> Path:
    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")

    stem = f"tokenizer_{slug(env['device'])}_torch{slug(env['torch'])}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(
        json.dumps({"environment": env, "config": facts, "rows": rows}, indent=1) + "\n"
    )
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out_dir / f"{stem}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return out_dir / f"{stem}.csv"


def main() -> None:
    args = parse_args()
    if args.smoke:
        args.steps, args.pretrain_steps = min(args.steps, 6), min(args.pretrain_steps, 3)
        args.train_images, args.percepnet_steps = min(args.train_images, 80), 2
        args.codebook_size = args.codebook_size or 64
    with tempfile.TemporaryDirectory(prefix="vqlab-bench-tok-") as tmp:
        rows, facts = bench(args, Path(tmp))
    path = write(rows, environment(facts["device"]), facts, args.out_dir)
    print(f"wrote {path} and .json")


if __name__ == "__main__":
    main()
