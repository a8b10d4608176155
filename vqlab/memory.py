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
