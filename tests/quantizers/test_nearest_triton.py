"""The fused Triton nearest-code kernel against the torch reference.

Where: on CUDA when there is a GPU; otherwise through Triton's CPU interpreter, which must be
switched on (``TRITON_INTERPRET=1``) before triton builds its kernels. This module never flips
that in a running pytest (other modules may already have imported triton), so on a CPU-only
machine :func:`test_kernel_suite_under_the_interpreter` re-runs this file in a subprocess with
the variable set, and the kernel tests here report that they ran there. Interpreter sizes are
tiny (tens of rows and codes); the GPU-only tests at the end use realistic sizes.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "triton", reason="triton is not installed: the fused kernel is checked with the GPU benchmark"
)

from vqlab.quantizers.distance import nearest_code, nearest_code_torch  # noqa: E402
from vqlab.quantizers.ops.triton_nearest import (  # noqa: E402
    TileConfig,
    interpreting,
    nearest_code_triton,
)

ON_GPU = torch.cuda.is_available() and not interpreting()
RUNS_KERNELS = ON_GPU or interpreting()
DEVICE = "cuda" if ON_GPU else "cpu"
kernel_test = pytest.mark.skipif(
    not RUNS_KERNELS,
    reason="no GPU: run in the interpreter by test_kernel_suite_under_the_interpreter",
)
gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs CUDA (too slow for the interpreter)")

# tile configurations: the smallest tile, two D chunks per tile, and a split codebook
CONFIGS = [
    TileConfig(),
    TileConfig(block_n=32, block_k=16, block_d=16, splits=1),
    TileConfig(block_n=16, block_k=32, block_d=32, splits=3),
]
SMALL = CONFIGS[0]  # small tests take a fixed tile: autotuning them would only cost compiles
PRECISIONS = ["exact", "fast"]


@pytest.mark.slow
@pytest.mark.skipif(RUNS_KERNELS, reason="the kernel tests run directly here")
def test_kernel_suite_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).to(DEVICE)


def assert_nearest(res, x: torch.Tensor, codebook: torch.Tensor, tol: float = 1e-4) -> None:
    """Each chosen code is a nearest one in fp64 (up to ``tol``, relative to the norms), and
    the returned distance is its squared distance."""
    d = torch.cdist(x.double().cpu(), codebook.double().cpu()) ** 2  # (N, K)
    idx = res.indices.cpu()
    assert res.indices.dtype == torch.long and res.distances.dtype == torch.float32
    assert idx.shape == (x.shape[0],) and ((idx >= 0) & (idx < codebook.shape[0])).all()
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    scale = 1.0 + x.double().cpu().pow(2).sum(1) + codebook.double().cpu().pow(2).sum(1).max()
    assert (chosen - d.min(1).values <= tol * scale).all()
    torch.testing.assert_close(res.distances.double().cpu(), chosen, rtol=1e-4, atol=1e-4)


def as_near_as(pick: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, c: torch.Tensor):
    """(N,) bool: ``pick`` is as near (in fp64) as ``ref``, up to the rounding of fp32 scores.

    Why not index equality: where codes crowd far from the origin, the fp32 reference's own
    ``||x||^2 - 2 x.c + ||c||^2`` errs by about ``2^-23 (|x|^2 + |c|^2)`` and picks a farther
    code; a search at least as accurate must be allowed to pick the nearer one (ties aside).
    """
    x64, c64 = x.double(), c.double()
    d_pick = (x64 - c64[pick]).pow(2).sum(1)
    d_ref = (x64 - c64[ref]).pow(2).sum(1)
    tol = 2.0**-22 * (x64.pow(2).sum(1) + c64.pow(2).sum(1).max())
    return d_pick <= d_ref + tol


@kernel_test
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config", CONFIGS, ids=["16^3", "2-chunks", "3-splits"])
@pytest.mark.parametrize(("n", "k", "d"), [(37, 53, 5), (50, 130, 33), (1, 1, 1)])
def test_ragged_sizes_match_the_reference(n, k, d, config, precision):
    x, codebook = randn(n, d, seed=n + d), randn(k, d, seed=k)
    res = nearest_code_triton(x, codebook, precision=precision, config=config)
    ref = nearest_code_torch(x, codebook)
    assert_nearest(res, x, codebook)
    # random data has no near ties at these sizes: the indices agree exactly
    assert torch.equal(res.indices, ref.indices)


@kernel_test
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config", CONFIGS, ids=["16^3", "2-chunks", "3-splits"])
def test_ties_go_to_the_lowest_index(precision, config):
    # 300 codes far away, and the same nearest point at 40, 170 and 299: across tiles and splits
    codebook = randn(300, 4, seed=1) + 50.0
    point = torch.tensor([1.0, -2.0, 0.5, 3.0], device=DEVICE)
    for j in (170, 299, 40):
        codebook[j] = point
    x = point + torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.5, 0.25, -0.5, 0.0]], device=DEVICE)
    res = nearest_code_triton(x, codebook, precision=precision, config=config)
    assert res.indices.tolist() == [40, 40]
    # two codes at the same distance on either side of x: the lower index wins
    pair = torch.tensor([[5.0, 5.0], [2.0, 0.0], [-2.0, 0.0]], device=DEVICE)
    zeros = torch.zeros(3, 2, device=DEVICE)
    for codes in (pair, pair[[0, 2, 1]]):
        res = nearest_code_triton(zeros, codes, precision=precision, config=config)
        assert res.indices.tolist() == [1, 1, 1]


@kernel_test
@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_dimensional_codes(precision):
    x, codebook = randn(40, 1, seed=2), randn(70, 1, seed=3)
    res = nearest_code_triton(x, codebook, precision=precision, config=SMALL)
    assert_nearest(res, x, codebook)


@kernel_test
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(
    ("x_dtype", "c_dtype"),
    [
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float16),
    ],
)
def test_half_precision_inputs(precision, x_dtype, c_dtype):
    x, codebook = randn(33, 20, seed=4, dtype=x_dtype), randn(45, 20, seed=5, dtype=c_dtype)
    res = nearest_code_triton(x, codebook, precision=precision, config=SMALL)
    assert_nearest(res, x, codebook)
    assert torch.equal(res.indices, nearest_code_torch(x, codebook).indices)


@kernel_test
@pytest.mark.parametrize("precision", PRECISIONS)
def test_non_contiguous_inputs(precision):
    x = randn(30, 24, seed=6)[:, ::3]  # (30, 8), stride 3 along D
    codebook = randn(8, 41, seed=7).T  # (41, 8), column-major
    assert not x.is_contiguous() and not codebook.is_contiguous()
    res = nearest_code_triton(x, codebook, precision=precision, config=CONFIGS[2])
    assert_nearest(res, x, codebook)
    assert torch.equal(res.indices, nearest_code_torch(x, codebook).indices)


@kernel_test
def test_fast_mode_on_crowded_codes():
    # 20 near-identical codes per centre, stored next to each other (one tile would hold a
    # whole group): where bf16 scores swap neighbours most often
    centres = randn(12, 16, seed=8) * 4
    codebook = centres.repeat_interleave(20, 0) + 0.05 * randn(240, 16, seed=9)  # (240, 16)
    x = centres.repeat(16, 1) + 0.05 * randn(192, 16, seed=10)  # (192, 16)
    exact = nearest_code_torch(x, codebook)
    for config in (SMALL, CONFIGS[2]):
        fast = nearest_code_triton(x, codebook, precision="fast", config=config)
        assert as_near_as(fast.indices, exact.indices, x, codebook).all()
        assert_nearest(fast, x, codebook)


@kernel_test
@pytest.mark.parametrize("config", [SMALL, CONFIGS[2]], ids=["16^3", "3-splits"])
def test_fast_mode_certificate_sends_unsettled_rows_to_the_exact_search(config):
    # groups of 24 codes within 1e-3 of a centre of norm ~16: far below the low-precision
    # copy's resolution (2^-8 of |c| in bf16, 2^-11 in the interpreter's fp16), so scores
    # cannot order a group and the top-8 list alone would often miss the nearest
    centres = randn(6, 16, seed=20) * 4
    codebook = centres.repeat_interleave(24, 0) + 1e-3 * randn(144, 16, seed=21)  # (144, 16)
    x = centres.repeat(20, 1) + 1e-3 * randn(120, 16, seed=22)  # (120, 16)
    stats: dict = {}
    fast = nearest_code_triton(x, codebook, precision="fast", config=config, stats=stats)
    exact = nearest_code_torch(x, codebook)
    assert stats["rows"] == 120 and stats["fallback_rows"] > 0
    assert as_near_as(fast.indices, exact.indices, x, codebook).all()
    assert_nearest(fast, x, codebook)
    # without the certificate nothing is searched again (and nothing is counted)
    unchecked: dict = {}
    nearest_code_triton(x, codebook, precision="fast", config=config, stats=unchecked,
                        certify=False)  # fmt: skip
    assert unchecked == {}


@kernel_test
def test_fast_mode_certificate_settles_well_separated_rows():
    # codes on a grid of step 1 and x within 0.05 of one of them: the nearest code is 0.9 or
    # more nearer than any other, far above every rounding bound, so no row falls back
    grid = torch.cartesian_prod(*[torch.arange(4.0)] * 3).to(DEVICE)  # (64, 3)
    x = grid[torch.arange(0, 64, 3)] + 0.05 * torch.tanh(randn(22, 3, seed=23))
    stats: dict = {}
    fast = nearest_code_triton(x, grid, precision="fast", config=SMALL, stats=stats)
    assert stats == {"rows": 22, "fallback_rows": 0}
    assert fast.indices.tolist() == list(range(0, 64, 3))


@kernel_test
def test_dispatch_reaches_the_kernel():
    # D=32, N and K multiples of 16: on a GPU the autotuner reuses the kernels compiled for
    # test_compiled_kernel_matches_reference and the benchmark
    x, codebook = randn(32, 32, seed=11), randn(48, 32, seed=12)
    ref = nearest_code_torch(x, codebook)
    for precision in PRECISIONS:
        res = nearest_code(x, codebook, backend="triton", precision=precision)
        assert torch.equal(res.indices, ref.indices)
    auto = nearest_code(x, codebook, backend="auto")  # CUDA tensors take the kernel
    assert torch.equal(auto.indices, ref.indices)


@kernel_test
def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="precision"):
        nearest_code_triton(randn(2, 2, seed=0), randn(2, 2, seed=1), precision="bf16")
    with pytest.raises(ValueError, match="dimension mismatch"):
        nearest_code_triton(randn(2, 3, seed=0), randn(2, 2, seed=1))
    empty = nearest_code_triton(randn(0, 3, seed=0), randn(4, 3, seed=1))
    assert empty.indices.shape == (0,)


# ---------------------------------------------------------------- GPU only: the compiled kernel
@gpu_only
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [1, 8, 32, 100, 256, 512])
def test_compiled_kernel_matches_reference(precision, d):
    # D=32 and 256 autotune (at shapes that share compiled kernels with the benchmark); the
    # others take one fixed tile each, to keep compile time down
    config = None
    if d not in (32, 256):
        config = TileConfig(64, 64, min(64, max(16, 1 << (d - 1).bit_length())), 4, 2)
    x, codebook = randn(5008, d, seed=d), randn(3008, d, seed=d + 1)
    res = nearest_code_triton(x, codebook, precision=precision, config=config)
    ref = nearest_code_torch(x, codebook)
    assert_nearest(res, x, codebook)
    ok = as_near_as(res.indices, ref.indices, x, codebook).double().mean().item()
    # D=1: 3008 codes on a line crowd within bf16 error of one another; the fast mode's
    # certificate sends those rows to the exact search
    assert ok >= 0.9999, ok


def fp64_nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N,) fp64 argmin, chunked over rows."""
    parts = [torch.cdist(x[i : i + chunk].double(), c.double()).argmin(1) for i in
             range(0, x.shape[0], chunk)]  # fmt: skip
    return torch.cat(parts)


@gpu_only
def test_fast_mode_agreement_rate_over_many_inputs():
    """Fast against exact fp32 over about 1.2M rows of random, clustered and offset data."""
    total = same = as_near = 0
    stats: dict = {}
    sub_rows = sub_truth = ref_truth = 0
    for seed, (n, k, d, kind) in enumerate(
        [(65536, 16384, 32, "random"), (65536, 16384, 32, "clustered"),
         (65536, 65536, 256, "random"), (65536, 4096, 256, "clustered"),
         (65536, 1024, 8, "clustered"), (65536, 262144, 32, "offset")] * 3
    ):  # fmt: skip
        if kind == "random":
            codebook, x = randn(k, d, seed=seed + 100), randn(n, d, seed=seed + 200)
        else:
            # groups of 64 near-identical codes stored side by side; "offset": all far out
            centres = randn(max(k // 64, 1), d, seed=seed) * 3 + (100.0 if kind == "offset" else 0)
            codebook = centres.repeat_interleave(64, 0)[:k] + 0.1 * randn(k, d, seed=seed + 100)
            x = centres[torch.randint(0, centres.shape[0], (n,), device=DEVICE)]
            x = x + 0.1 * randn(n, d, seed=seed + 200)
        exact = nearest_code_torch(x, codebook).indices
        fast = nearest_code_triton(x, codebook, precision="fast", stats=stats).indices
        total += n
        same += (fast == exact).sum().item()
        as_near += as_near_as(fast, exact, x, codebook).sum().item()
        truth = fp64_nearest(x[:2048], codebook)
        sub_rows += 2048
        sub_truth += (fast[:2048] == truth).sum().item()
        ref_truth += (exact[:2048] == truth).sum().item()
    print(
        f"\nfast vs exact fp32: same index {same}/{total} = {same / total:.6%}; as near "
        f"(ties aside) {as_near}/{total} = {as_near / total:.6%}; on {sub_rows} rows vs fp64 "
        f"truth: fast {sub_truth / sub_rows:.6%}, exact fp32 {ref_truth / sub_rows:.6%}; "
        f"rows searched again exactly: {stats['fallback_rows'] / stats['rows']:.4%}"
    )
    assert as_near / total >= 0.9999


@pytest.mark.skipif(interpreting(), reason="compiles nothing under the interpreter; runs outside")
def test_kernel_compiles_for_an_h100_without_one(tmp_path):
    """What the interpreter cannot check: the kernel lowers to an sm_90 cubin under this
    triton (ptxas ships in its wheel), every configuration the pruner keeps fits an H100's
    shared memory, the fast mode's dots become wgmma and the exact mode's stay fp32 FMAs (a
    tensor-core dot there would round through tf32)."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, str(root / "benchmarks" / "compile_kernel.py"), "--d", "32",
           "--jobs", "2", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("compile_sm90_fp32_triton*.csv")
    rows = list(csv.DictReader(path.open()))
    assert {r["precision"] for r in rows} == {"exact", "fast"} and len(rows) >= 4
    for r in rows:
        assert r["ok"] == "True" and r["fits"] == "True", r
        assert int(r["smem"]) > 0
        assert r["dot"] == ("wgmma" if r["precision"] == "fast" else "fma"), r
