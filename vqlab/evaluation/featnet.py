"""The feature net: a small classifier vqlab trains on the user's own images.

No standard FID weights can be downloaded here, so image-quality metrics (FD, KD, class
consistency) and the perceptual loss use networks trained on the data itself. Two architectures:

- ``resnet`` (default): the evaluation net, a CIFAR-style residual network;
- ``vgg``: a plain conv stack, for the perceptual loss, so that the network that scores a run is
  never the one the run trained against.

Inputs are float images (B, C, H, W) on vqlab's training scale [-1, 1]
(:func:`vqlab.data.images.to_tensor`), any side >= 16 (the head pools adaptively).
:func:`train_featnet` trains one and writes ``featnet.safetensors`` + ``featnet.json``;
:func:`load_featnet` reads it back frozen, after checking the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from vqlab.evaluation.errors import FeatNetError

ARCHS = ("resnet", "vgg")
MIN_SIDE = 16
WEIGHTS, INFO = "featnet.safetensors", "featnet.json"
# measured on 2 CPU cores at batch 128, 32x32 (CIFAR-10): resnet 3.0 steps/s, vgg 3.0 steps/s;
# ~14 and ~7 minutes
DEFAULT_STEPS = {"resnet": 2500, "vgg": 1200}


@dataclass(frozen=True)
class FeatNetConfig:
    """Architecture of a feature net.

    arch: ``"resnet"`` or ``"vgg"``. widths: channels of each stage (each stage after the first
    halves the resolution). blocks: residual blocks (resnet) or conv layers (vgg) per stage.
    """

    arch: str = "resnet"
    in_channels: int = 3
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise FeatNetError(f"unknown feature net arch {self.arch!r}; choose one of {ARCHS}")
        for name in ("in_channels", "num_classes", "blocks"):
            if getattr(self, name) < 1:
                raise FeatNetError(f"featnet {name} must be >= 1, got {getattr(self, name)}")
        if not self.widths or min(self.widths) < 1:
            raise FeatNetError(f"featnet widths must be positive, got {self.widths}")

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatNetConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class _BasicBlock(nn.Module):
    """Two 3x3 convs with a (projected when the shape changes) skip connection."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


def _resnet_stages(cfg: FeatNetConfig) -> nn.ModuleList:
    stages = nn.ModuleList()
    c_in = cfg.widths[0]
    for i, width in enumerate(cfg.widths):
        layers = [
            _BasicBlock(c_in if b == 0 else width, width, 2 if i and not b else 1)
            for b in range(cfg.blocks)
        ]
        if i == 0:  # the stem belongs to the first stage, so its maps are the first ones
            layers.insert(0, _conv_bn(cfg.in_channels, width))
        stages.append(nn.Sequential(*layers))
        c_in = width
    return stages


def _vgg_stages(cfg: FeatNetConfig) -> nn.ModuleList:
    stages = nn.ModuleList()
    c_in = cfg.in_channels
    for i, width in enumerate(cfg.widths):
        # pooling opens every stage but the first, so each stage ends on a ReLU (its maps)
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if i else []
        for _ in range(cfg.blocks):
            layers.append(_conv_bn(c_in, width))
            c_in = width
        stages.append(nn.Sequential(*layers))
    return stages


_STAGES = {"resnet": _resnet_stages, "vgg": _vgg_stages}  # keys: ARCHS


class FeatNet(nn.Module):
    """A small image classifier whose pooled penultimate features score image sets.

    forward(x): (B, C, H, W) in [-1, 1] -> logits (B, num_classes).
    features(x): -> (B, F) pooled penultimate features, F = ``num_features`` (FD/KD).
    feature_maps(x): -> one (B, widths[i], H_i, W_i) activation after each stage (perceptual
        loss in LPIPS's "baseline" form).
    ``info`` holds what :func:`load_featnet` read from ``featnet.json`` (empty when untrained).
    """

    def __init__(self, cfg: FeatNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stages = _STAGES[cfg.arch](cfg)
        self.head = nn.Linear(cfg.widths[-1], cfg.num_classes)
        self.info: dict = {}

    @property
    def in_channels(self) -> int:
        """C, the channels of the images the net reads."""
        return self.cfg.in_channels

    @property
    def num_features(self) -> int:
        """F, the width of :meth:`features` (torchmetrics' FID reads this attribute)."""
        return self.cfg.widths[-1]

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels or not x.is_floating_point():
            raise FeatNetError(
                f"feature net expects float (B, {self.cfg.in_channels}, H, W) images in [-1, 1], "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        if min(x.shape[2:]) < MIN_SIDE:
            raise FeatNetError(f"feature net needs images of side >= {MIN_SIDE}, got {x.shape[2:]}")

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [(B, widths[i], H / 2^i, W / 2^i) for each stage i] (post-ReLU)."""
        self._check(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, F): global average of the last stage's maps."""
        return self.feature_maps(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self.head(self.features(x))


def build_featnet(cfg: FeatNetConfig) -> FeatNet:
    """A freshly initialised feature net of architecture ``cfg``."""
    return FeatNet(cfg)


def default_config(arch: str, in_channels: int, num_classes: int) -> FeatNetConfig:
    """The default size of each architecture (sized for CIFAR-10 on 2 CPU cores)."""
    if arch == "resnet":
        return FeatNetConfig("resnet", in_channels, num_classes, (32, 64, 128), 1)
    if arch == "vgg":
        return FeatNetConfig("vgg", in_channels, num_classes, (32, 64, 128), 2)
    raise FeatNetError(f"unknown feature net arch {arch!r}; choose one of {ARCHS}")


# -------------------------------------------------------------------------------- training


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` (0 is mid-grey on the [-1, 1] scale) and a
    random horizontal flip, per image. x: (B, C, H, W) -> (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen)
    rows = (dy + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx + torch.arange(w))[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols]  # (B, H, W, C)
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


@torch.no_grad()
def accuracy(
    net: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 500,
    desc: str | None = None,
) -> float:
    """Top-1 accuracy of ``net`` (in eval mode) on x (N, C, H, W) with labels (N,) int64;
    ``desc``: show a progress bar of that name (a CIFAR-10 pass takes minutes on a CPU)."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in tqdm(range(0, x.shape[0], batch_size), desc=desc, disable=desc is None, leave=False):
        correct += int((net(x[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
    net.train(was_training)
    return correct / max(1, x.shape[0])


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _labelled_data(data_name: str, data_path: str | Path, seed: int):
    from vqlab.config import DataConfig
    from vqlab.data.dataset import load_dataset
    from vqlab.data.errors import DataError

    data = load_dataset(DataConfig(name=data_name, path=str(data_path)), seed)
    if data.train_labels is None or data.test_labels is None:
        raise DataError(
            f"{data_path}: the feature net is a classifier and needs class labels "
            "(class sub-folders of images); this data has none"
        )
    if data.train_x.ndim != 4:
        raise DataError(f"{data_path}: the feature net needs images, got {data.input_shape}")
    return data


def train_featnet(
    data_name: str,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    arch: str = "resnet",
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 5e-2,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train a feature net on the labelled images of ``data_name`` at ``data_path``.

    AdamW with a one-cycle schedule, label smoothing 0.1, random-crop (pad 4) and flip
    augmentation. ``steps`` None: :data:`DEFAULT_STEPS` of ``arch``. Writes
    ``out_dir/featnet.safetensors`` and ``out_dir/featnet.json`` and returns the json's dict
    (architecture, data, image shape, steps, test accuracy, seconds, sha256, torch version).
    Raises DataError for data without labels; a non-empty ``out_dir`` is refused unless
    ``overwrite`` (before any work) and replaced only once the new net is trained.
    """
    from vqlab.outdir import check_out, clear_out

    check_out(out_dir, overwrite=overwrite)
    if arch not in ARCHS:
        raise FeatNetError(f"unknown feature net arch {arch!r}; choose one of {ARCHS}")
    steps = DEFAULT_STEPS[arch] if steps is None else steps
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise FeatNetError(
            f"featnet training needs steps >= 1, batch_size >= 1 and lr > 0; "
            f"got steps={steps}, batch_size={batch_size}, lr={lr}"
        )
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = _labelled_data(data_name, data_path, seed)
    num_classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    cfg = default_config(arch, data.train_x.shape[1], num_classes)
    net = build_featnet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    n = data.train_x.shape[0]
    order, pos = torch.randperm(n, generator=gen), 0
    net.train()
    bar = tqdm(range(steps), desc=f"featnet {arch}", disable=not progress, mininterval=2.0)
    for _ in bar:
        if pos + batch_size > n:  # a fresh epoch: reshuffle, drop the ragged tail
            order, pos = torch.randperm(n, generator=gen), 0
        rows = order[pos : pos + batch_size]
        pos += batch_size
        logits = net(augment(data.train_x[rows], gen))
        loss = F.cross_entropy(logits, data.train_labels[rows], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"featnet training diverged (loss {loss.item()})")
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    hparams = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": "adamw",
        "schedule": "one-cycle",
        "label_smoothing": 0.1,
        "augment": "crop(pad=4)+hflip",
    }
    k = min(n, int(data.test_x.shape[0]))

    def bar_name(split: str) -> str | None:
        return f"featnet {split} accuracy" if progress else None

    info = {
        "config": cfg.to_dict(),
        "train": hparams,
        "data": {"name": data_name, "path": str(data_path)},
        "image_shape": list(data.train_x.shape[1:]),
        "num_classes": num_classes,
        "steps": steps,
        "n_train": n,
        "n_test": int(data.test_x.shape[0]),
        "test_accuracy": accuracy(net, data.test_x, data.test_labels, desc=bar_name("test")),
        # on as many (unaugmented) training images as there are test images
        "train_accuracy": accuracy(
            net, data.train_x[:k], data.train_labels[:k], desc=bar_name("train")
        ),
    }
    clear_out(out_dir, overwrite=overwrite)
    return save_featnet(net, out_dir, {**info, "seconds": round(time.perf_counter() - t0, 1)})


# ------------------------------------------------------------------------------ save / load


def save_featnet(net: FeatNet, out_dir: str | Path, info: dict) -> dict:
    """Write ``featnet.safetensors`` and ``featnet.json`` (``info`` plus config, sha256 and
    torch version) into ``out_dir``; returns the json's dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    full = {
        **info,
        "config": net.cfg.to_dict(),
        "sha256": sha256_file(out / WEIGHTS),
        "torch": torch.__version__,
    }
    (out / INFO).write_text(json.dumps(full, indent=2) + "\n")
    return full


def load_featnet(path: str | Path) -> FeatNet:
    """The feature net saved in folder ``path``, in eval mode with frozen parameters.

    Its ``.info`` is the folder's ``featnet.json`` (``sha256`` included). Raises FeatNetError
    (one line) for a missing folder or file, a sha256 that does not match the weights, or a
    corrupt file.
    """
    folder = Path(path)
    weights, info_path = folder / WEIGHTS, folder / INFO
    for p in (weights, info_path):
        if not p.is_file():
            raise FeatNetError(
                f"{folder}: not a feature net folder (no {p.name}); "
                "train one with `vqlab featnet train`"
            )
    try:
        info = json.loads(info_path.read_text())
        cfg = FeatNetConfig.from_dict(info["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise FeatNetError(f"{info_path}: unreadable feature net description ({err})") from None
    digest = sha256_file(weights)
    if digest != info.get("sha256"):
        raise FeatNetError(
            f"{weights}: sha256 {digest[:12]}... does not match featnet.json "
            f"({str(info.get('sha256'))[:12]}...); the file is corrupt or was replaced"
        )
    net = FeatNet(cfg)
    try:
        net.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FeatNetError(f"{weights}: cannot load the feature net ({first})") from None
    net.eval().requires_grad_(False)
    net.info = info
    return net
