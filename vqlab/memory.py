"""Will a codebook fit? An estimate checked against the device's free memory before building.

``vq.codebook_size=2000000000`` would otherwise end deep in the allocator with a raw traceback
(or, worse, a machine swapping itself to a halt). :func:`check_codebook_memory` refuses such a
size with a one-line :class:`~vqlab.errors.ConfigError` before anything is allocated. It is an
estimate of the codebook's own tensors, not of the whole run: activations, the encoder and the
k-means sample come on top, so a size that passes can still run out of memory later.
"""

from __future__ import annotations

import os

import torch

from vqlab.errors import ConfigError

FP32_BYTES = 4


def codebook_bytes(codebook_size: int, dim: int, *, extra_bytes_per_code: int = 0) -> int:
    """Bytes of a (K, D) fp32 codebook with its EMA statistics, plus ``extra_bytes_per_code``.

    Per code: the code itself and its EMA sum (``D`` fp32 each) and its EMA count (one fp32).
    ``extra_bytes_per_code`` adds what the caller knows more of (a gradient and the optimizer's
    moments for a trained codebook, a second copy, ...).
    """
    per_code = FP32_BYTES * (2 * dim + 1) + extra_bytes_per_code
    return int(codebook_size) * per_code


def available_bytes(device: torch.device | str | None) -> int | None:
    """Free memory of ``device`` in bytes, or ``None`` where it cannot be read.

    CPU (``None`` too): ``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``'s available
    physical pages. CUDA: the free bytes of ``torch.cuda.mem_get_info``. Other devices: ``None``.
    """
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_codebook_memory(
    codebook_size: int,
    dim: int,
    device: torch.device | str | None,
    *,
    extra_bytes_per_code: int = 0,
) -> int:
    """Refuse a codebook that cannot fit in ``device``'s free memory; returns the estimate.

    The estimate is :func:`codebook_bytes`. Where the free memory cannot be read (an unknown
    device, no ``/proc``), nothing is refused. Raises :class:`~vqlab.errors.ConfigError` with
    one line naming the size, the estimate and what is free.
    """
    need = codebook_bytes(codebook_size, dim, extra_bytes_per_code=extra_bytes_per_code)
    free = available_bytes(device)
    if free is not None and need > free:
        where = torch.device(device or "cpu")
        raise ConfigError(
            f"vq.codebook_size={codebook_size} with code dimension {dim} needs about "
            f"{_human(need)} for the codebook and its statistics, but {where} has "
            f"{_human(free)} free; choose a smaller vq.codebook_size"
        )
    return need


def _refuse(need: int, device: torch.device | str | None, what: str, advice: str) -> int:
    free = available_bytes(device)
    if free is not None and need > free:
        where = torch.device(device or "cpu")
        raise ConfigError(
            f"{what} needs about {_human(need)}, but {where} has {_human(free)} free; {advice}"
        )
    return need


def prior_parameters(
    codebook_size: int, seq_len: int, num_classes: int, width: int, depth: int
) -> int:
    """An upper bound on a prior's parameter count (MaskGIT or VAR).

    Embedding tables and head: token ids plus mask and class rows in, K logits out
    (``width * (2K + C + 2L + 4)``), VAR's input projection and head norm (``3 W^2``); per block
    at most ``18 W^2 + 16 W`` (attention 4 W^2, MLP 8 W^2, VAR's adaptive norm 6 W^2, biases
    and norms). tests/test_outdir_devices.py checks it against both priors.
    """
    k, c, length, w = int(codebook_size), int(num_classes), int(seq_len), int(width)
    return w * (2 * k + c + 2 * length + 4) + 3 * w * w + int(depth) * (18 * w * w + 16 * w)


def check_prior_memory(
    codebook_size: int,
    seq_len: int,
    num_classes: int,
    width: int,
    depth: int,
    device: torch.device | str | None,
    *,
    training: bool = True,
) -> int:
    """Refuse a prior whose weights cannot fit, before any is allocated; returns the estimate.

    fp32 parameters, and in training their gradients and AdamW's two moments (16 bytes each).
    The sizes come from the user: ``prior.width``/``prior.depth`` and the token file's K and
    label count (a label of 10**13 makes 10**13 class rows).
    """
    params = prior_parameters(codebook_size, seq_len, num_classes, width, depth)
    need = params * FP32_BYTES * (4 if training else 1)
    what = (
        f"a prior of width {width}, depth {depth} over K={codebook_size} codes, "
        f"L={seq_len}, {num_classes} classes ({params:.3g} parameters)"
    )
    advice = "lower prior.width or prior.depth, or check the token file's codebook_size and labels"
    return _refuse(need, device, what, advice)


def check_sampling_memory(
    n: int, seq_len: int, codebook_size: int, batch_size: int, cfg: bool, device
) -> int:
    """Refuse ``vqlab sample --n`` whose buffers cannot fit: the ids and masks of all ``n``
    sequences (int64, twice) and one batch's logits (fp32 (B, L, K), twice with guidance)."""
    need = 16 * int(n) * int(seq_len)
    need += FP32_BYTES * min(int(n), int(batch_size)) * int(seq_len) * int(codebook_size)
    need *= 2 if cfg else 1
    return _refuse(need, device, f"sampling --n {n} sequences of {seq_len} ids", "lower --n")


def check_feature_memory(n_real: int, n_fake: int, features: int, device=None) -> int:
    """Refuse feature buffers that cannot fit: (N, F) float64 per image set, the covariances
    and their square root (F x F float64, a few of each)."""
    f = int(features)
    need = 8 * (int(n_real) + int(n_fake)) * f + 8 * 6 * f * f
    what = f"the features of {n_real} + {n_fake} images ({f} each)"
    return _refuse(need, device, what, "score fewer images")
