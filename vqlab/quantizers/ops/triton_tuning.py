"""Launch configurations of the fused nearest-code kernel: candidates, pruning and splits.

:func:`_configs` lists the candidate tiles, :func:`_keep` keeps per tile shape the widest D
chunk that fits the device's shared memory (:func:`_smem_bytes` is the estimate, checked
against compiled sm_90 kernels by ``benchmarks/compile_kernel.py``), and
:func:`_default_splits` cuts the codebook into ranges when few row blocks would leave the GPU
idle. The kernel itself is in :mod:`vqlab.quantizers.ops.triton_nearest`.
"""

from __future__ import annotations

import functools

import torch
import triton


def _configs(fast: bool) -> list[triton.Config]:
    """Candidate tiles; :func:`_prune` keeps, per tile shape, the widest D chunk that fits."""
    # fast: tensor-core tiles; exact: the fp32 FMA dot, where a short inner chunk keeps the
    # operand fragments in registers
    shapes = [(128, 128, 8), (128, 64, 4), (64, 128, 4), (64, 64, 4)]
    if not fast:
        shapes = [(bn, bk, 8 if bn * bk > 4096 else 4) for bn, bk, _ in shapes]
    chunks = (16, 32, 64, 128, 256) if fast else (16, 32)
    # 3 stages won every fast tuning on an H100 but one (D=8, K=1k), and 2 every exact one
    stages = (3,) if fast else (2,)
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "BLOCK_D": bd}, num_warps=w, num_stages=s)
        for bn, bk, w in shapes
        for bd in chunks
        for s in stages
    ]


def _smem_bytes(cfg: triton.Config, d: int, fast: bool) -> int:
    """Shared memory the pipelined loads take (as Triton 3.9 allocated it for sm_90)."""
    bn, bk, bd = cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"], cfg.kwargs["BLOCK_D"]
    size, x_tiles = (2, 2) if fast else (4, 1)  # fast holds x as hi and lo halves
    if bd >= d:  # x is loaded once and stays; only codebook tiles are multi-buffered
        return (x_tiles * bn + cfg.num_stages * bk) * bd * size
    return cfg.num_stages * (x_tiles * bn + bk) * bd * size


@functools.lru_cache(maxsize=8)
def _smem_limit(device: torch.device) -> int:
    if device.type != "cuda":
        return 100 * 2**10
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The autotuner's pruner: :func:`_keep` on the device of ``x``."""
    # D and FAST are passed positionally, so they are in named_args in every triton version
    d, fast = named_args["D"], named_args["FAST"]
    return _keep(configs, d, fast, _smem_limit(named_args["x_ptr"].device))


def _keep(configs: list[triton.Config], d: int, fast: bool, smem: int) -> list[triton.Config]:
    """Per (tile shape, stages): the widest chunk no wider than the padded ``D`` that fits
    ``smem`` bytes of shared memory. A narrower chunk only adds loop trips; a wider one only
    adds padding."""
    d_pad = max(16, triton.next_power_of_2(d))
    limit = smem - 8 * 2**10  # room for the reductions
    best: dict[tuple, triton.Config] = {}
    for cfg in configs:
        key = (cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"], cfg.num_stages)
        bd = cfg.kwargs["BLOCK_D"]
        if bd > d_pad or _smem_bytes(cfg, d, fast) > limit:
            continue
        if key not in best or bd > best[key].kwargs["BLOCK_D"]:
            best[key] = cfg
    return list(best.values()) or [min(configs, key=lambda c: _smem_bytes(c, d, fast))]


def autotuned(kernel: triton.JITFunction, fast: bool) -> triton.runtime.Autotuner:
    """``kernel`` under the autotuner: :func:`_configs` pruned by :func:`_prune`, keyed on the
    size buckets and ``D``."""
    return triton.autotune(
        configs=_configs(fast),
        key=["N_BUCKET", "K_BUCKET", "D"],
        prune_configs_by={"early_config_prune": _prune},
    )(kernel)


@functools.lru_cache(maxsize=8)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a small number so tests still reach the split path
    return torch.cuda.get_device_properties(device).multi_processor_count


def _default_splits(n: int, k: int, device: torch.device) -> int:
    """Codebook ranges so that about two waves of 64-row programs fill the device."""
    row_blocks = triton.cdiv(n, 64)
    want = triton.cdiv(2 * _sm_count(device), row_blocks)
    # each range keeps at least 8 tiles of 128 codes, so the per-range fixed cost stays small
    return max(1, min(want, triton.cdiv(k, 1024)))
