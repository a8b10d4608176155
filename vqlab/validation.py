"""Input checks shared by the quantizers and the diagnostics, with messages that name the problem.

Every public entry point that takes tensors (``VectorQuantizer.forward`` and
``init_from_data``, ``nearest_code``, ``kmeans``, the diagnostics) checks its input here, so
that bad input fails at the door with a ``TypeError`` or ``ValueError`` naming the tensor,
rather than deep inside torch with an unrelated message, or worse, silently as NaN.

Policies:

- **Types.** A tensor argument must be a ``torch.Tensor`` (not a list or a NumPy array), and a
  vector argument must be floating point: integer, bool and complex inputs are a
  ``TypeError``. fp16, bf16, fp32 and fp64 are all accepted; the quantizer searches in fp32.
- **Meta tensors** have a shape but no values, so they are a ``ValueError``.
- **Empty input.** ``VectorQuantizer`` takes a batch with no positions (N = 0) and returns empty
  ``quantized`` and ``indices`` with a zero loss that still reaches the graph, leaving the
  statistics alone, so a training loop needs no special case; ``nearest_code`` returns empty
  results. Where nothing can be computed from zero rows the answer is a ``ValueError`` that
  says how many rows are needed: ``kmeans`` (k <= N), ``init_from_data`` (K rows for the
  data-placed methods) and the diagnostics (N >= 1, K >= 1).
- **Values.** NaN and Inf are a ``ValueError`` naming the tensor, how many values are bad and
  where the first one is. So are finite values so large that squared distances overflow in
  the dtype they are computed in (:func:`max_magnitude`): for the fp32 search that is
  ``sqrt(float32_max / (4 D))``, about ``9.2e18 / sqrt(D)``; an fp64 input above it would turn
  into Inf once cast to fp32.
- **Cost.** The value check is one reduction (``x.abs().amax()``; NaN propagates through it)
  and one host-device sync per checked call; several tensors checked together share the one
  sync. On CPU that is one pass over the data. On a GPU the sync also stops the CPU from
  queueing work ahead, which costs most on small batches; the measured overhead is in
  ``benchmarks/results/notes_nvidia-h100-80gb-hbm3_torch2.11.0-cu130.md``. Where that
  matters (a tight benchmark loop, or input already known to be clean),
  ``with value_checks(False):`` skips the value checks (never the type and shape checks).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from contextvars import ContextVar

import torch

# Scoped to the current thread / task (a ContextVar, not a process-wide flag): a ``with
# value_checks(False)`` block in one thread leaves the checks of every other thread on.
_VALUE_CHECKS: ContextVar[bool] = ContextVar("vqlab_value_checks", default=True)


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn the NaN / Inf / magnitude checks (one sync each) on or off inside a ``with`` block.

    The switch holds for the code this block runs (this thread or task only) and is restored
    when the block ends.
    """
    token = _VALUE_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def max_magnitude(dim: int, compute: torch.dtype = torch.float32) -> float:
    """Largest ``|value|`` whose squared distances in ``dim`` dimensions stay finite in ``compute``.

    ``||x - c||^2 <= dim * (2 m)^2`` for entries bounded by ``m``, so ``m`` must stay below
    ``sqrt(finfo(compute).max / (4 dim))``.
    """
    return math.sqrt(torch.finfo(compute).max / (4 * max(int(dim), 1)))


# ------------------------------------------------------------------------- structural checks
def check_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` must be a tensor with real storage (not a meta tensor); returns it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor (a shape without values); give real data")
    return x


def check_float(x: object, name: str) -> torch.Tensor:
    """``x`` must be a floating-point tensor (fp16, bf16, fp32, fp64); returns it."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or "
            f"float64); got {x.dtype}"
        )
    return x


def check_integer(x: object, name: str) -> torch.Tensor:
    """``x`` must be an integer tensor (not bool, float or complex); returns it."""
    x = check_tensor(x, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype; got {x.dtype}")
    return x


def check_matrix(
    x: object, name: str, *, min_rows: int = 0, dim: int | None = None
) -> torch.Tensor:
    """``x`` must be a floating-point (N, D) tensor with ``N >= min_rows`` and ``D >= 1``
    (``D == dim`` when given). Structural only: no sync. Returns it."""
    x = check_float(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D); got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        rows = "row" if min_rows == 1 else "rows"
        raise ValueError(f"{name} needs at least {min_rows} {rows}; got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero columns (D=0)")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"expected D={dim} on axis -1 of {name}; got shape {tuple(x.shape)}")
    return x


def check_same_device(**tensors: torch.Tensor) -> None:
    """All the named tensors must live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"tensors must be on one device; got {listed}")


# ------------------------------------------------------------------------------ value checks
def _describe_bad(x: torch.Tensor, name: str, kind: str) -> str:
    """Where the bad values are (only runs once a check has failed)."""
    bad = torch.isnan(x) if kind == "NaN" else torch.isinf(x)
    count = int(bad.sum())
    first = tuple(torch.nonzero(bad)[0].tolist()) if x.dim() > 0 else ()
    where = f"first at index {first}" if x.dim() > 0 else "a 0-d tensor"
    return f"{name} contains {kind} ({count} of {x.numel()} values; {where})"


def check_values(
    named: dict[str, torch.Tensor],
    *,
    compute: torch.dtype = torch.float32,
    dim: int | None = None,
    what: str = "",
) -> None:
    """Refuse NaN, Inf and values too large for squared distances in ``compute``.

    named: name -> floating-point tensor. dim: the code dimension D for the magnitude bound
    (default: each tensor's last axis). One reduction per tensor and one sync for them all.
    what: the computation, for the message ("nearest-code search", ...).
    Does nothing inside ``with value_checks(False)``.
    """
    if not _VALUE_CHECKS.get():
        return
    items = [(n, t.detach()) for n, t in named.items() if t.numel() > 0]
    if not items:
        return
    # max |x| per tensor (NaN propagates through amax); float64 holds the peak of any float
    # dtype exactly (MPS has no float64)
    acc = torch.float32 if items[0][1].device.type == "mps" else torch.float64
    device = items[0][1].device
    peaks = torch.stack([t.abs().amax().to(device=device, dtype=acc) for _, t in items])
    for (name, t), peak in zip(items, peaks.tolist()):  # the one sync
        if math.isnan(peak):
            raise ValueError(_describe_bad(t, name, "NaN"))
        if math.isinf(peak):
            raise ValueError(_describe_bad(t, name, "Inf"))
        d = dim if dim is not None else (t.shape[-1] if t.dim() > 0 else 1)
        limit = max_magnitude(d, compute)
        if peak > limit:
            where = f" in the {what}" if what else ""
            raise ValueError(
                f"{name} has values up to {peak:.3g} in magnitude; beyond {limit:.3g} (D={d}) "
                f"squared distances{where} overflow {str(compute).replace('torch.', '')}"
            )


# -------------------------------------------------------------------------- scalar arguments
def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` must be an int (not a bool), at least ``minimum`` when given; returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` must be a finite real number (not a bool) inside the given bounds; returns it.

    ``low_open`` / ``high_open`` exclude the bound itself: ``low=0, low_open=True`` is ``> 0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        if low is not None and high is not None:
            want = f"lie in {lo}, {hi}"
        elif low is not None:
            want = f"be {'>' if low_open else '>='} {low:g}"
        else:
            want = f"be {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must {want}; got {value:g}")
    return value


# ---------------------------------------------------------------------------- the quantizer
def check_quantizer_args(
    *,
    dim: object,
    codebook_size: object,
    beta: object,
    decay: object,
    eps: object,
    dead_code_threshold: object,
    channel_dim: object,
    max_bytes: object,
) -> None:
    """The scalar arguments of ``VectorQuantizer(...)``: types first, then ranges."""
    check_int(dim, "dim", minimum=1)
    check_int(codebook_size, "codebook_size", minimum=1)
    check_number(beta, "beta", low=0.0)
    check_number(decay, "decay", low=0.0, high=1.0, low_open=True, high_open=True)
    check_number(eps, "eps", low=0.0, low_open=True)
    check_number(dead_code_threshold, "dead_code_threshold", low=0.0)
    check_int(channel_dim, "channel_dim")
    check_int(max_bytes, "max_bytes", minimum=4)


def check_quantizer_input(
    z_e: object, *, dim: int, channel_dim: int, device: torch.device, name: str = "z_e"
) -> None:
    """``z_e`` for a quantizer of code dimension ``dim`` whose D sits on axis ``channel_dim``.

    Floating point, real data, on the quantizer's ``device``, with ``dim`` entries on that axis,
    and finite values small enough for the fp32 search. One sync (the value check).
    """
    z_e = check_float(z_e, name)
    nd = z_e.dim()
    if nd == 0 or not -nd <= channel_dim < nd or z_e.shape[channel_dim] != dim:
        raise ValueError(
            f"expected D={dim} on axis {channel_dim} of {name}; got shape {tuple(z_e.shape)}"
        )
    if z_e.device != device:
        raise ValueError(
            f"{name} is on {z_e.device} but the quantizer is on {device}; move the "
            "quantizer (or the model) with .to(device)"
        )
    check_values({name: z_e}, dim=dim, what="nearest-code search")


def check_init_args(
    method: object,
    *,
    rows: int,
    codebook_size: int,
    iters: object,
    seed: object,
    methods: tuple[str, ...],
) -> None:
    """The arguments of ``VectorQuantizer.init_from_data`` once ``z_e`` has ``rows`` vectors.

    ``kmeans``, ``kmeans++`` and ``sample`` place each code on data and need ``rows >= K``;
    ``random_normal`` needs 2 rows for a standard deviation, ``random_uniform`` 1 row.
    """
    if method not in methods:
        raise ValueError(f"unknown init method {method!r}; choose one of {list(methods)}")
    check_int(iters, "iters", minimum=0)
    check_int(seed, "seed")
    if method == "random_normal" and rows < 2:
        raise ValueError(
            f"init_from_data(method='random_normal') needs at least 2 vectors for a standard "
            f"deviation; got {rows}"
        )
    if method == "random_uniform" and rows < 1:
        raise ValueError("init_from_data(method='random_uniform') needs at least 1 vector; got 0")
    if method in ("kmeans", "kmeans++", "sample") and rows < codebook_size:
        raise ValueError(
            f"init_from_data(method={method!r}) needs at least codebook_size={codebook_size} "
            f"vectors, one per code; got {rows}"
        )
