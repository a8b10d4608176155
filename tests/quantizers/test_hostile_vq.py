"""Hostile and careless input to VectorQuantizer, nearest_code and kmeans (property-based).

Every case either gives the right answer (checked against a naive float64 reference) or raises a
``TypeError`` / ``ValueError`` whose message names the problem. The policies are in
:mod:`vqlab.validation`: any float dtype in (searched in fp32, output in the input's dtype),
integers and bools refused, NaN / Inf / overflowing values refused by name before any state
changes, and an empty batch gives empty outputs with a zero loss.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vqlab.quantizers import VectorQuantizer, kmeans, nearest_code
from vqlab.validation import max_magnitude, value_checks

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
NOT_FLOATS = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64]
LAYOUTS = ["contiguous", "transposed", "sliced", "expanded"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make(n: int, d: int, seed: int, dtype=torch.float32, layout: str = "contiguous"):
    """(n, d) data in the given memory layout, same values whatever the layout."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 3).to(dtype)
    if layout == "transposed":
        x = x.T.contiguous().T  # (n, d) view of a (d, n) buffer
    elif layout == "sliced":
        wide = torch.zeros(n, 2 * d, dtype=dtype)
        wide[:, ::2] = x
        x = wide[:, ::2]  # every other column of a wider tensor: stride 2
    elif layout == "expanded" and n > 0:
        x = x[:1].expand(n, d)  # stride 0 on the rows: every row the same
    return x


def check_nearest(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor) -> None:
    """The chosen code is a nearest one (up to fp32 rounding), by a float64 brute force."""
    x64, c64 = x.double(), codebook.double()
    d = ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(-1)  # (N, K)
    best = d.min(1).values
    chosen = d.gather(1, indices.reshape(-1, 1).long()).squeeze(1)
    assert torch.all(chosen <= best + 1e-4 * (1 + best)), (chosen - best).max()


# ------------------------------------------------------------------------- VectorQuantizer
@given(
    n=st.integers(0, 24),
    d=st.integers(1, 6),
    k=st.integers(1, 20),
    dtype=st.sampled_from(FLOATS),
    layout=st.sampled_from(LAYOUTS),
    update=st.sampled_from(["ema", "grad"]),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_forward_matches_naive_reference(n, d, k, dtype, layout, update, training, seed):
    torch.manual_seed(seed)
    vq = VectorQuantizer(d, k, update=update).train(training)
    z = make(n, d, seed, dtype, layout).requires_grad_()
    before = vq.codebook.detach().clone()
    out = vq(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == dtype
    assert out.indices.shape == (n,) and out.indices.dtype == torch.int64
    assert out.loss.dtype == torch.float32 and out.loss.dim() == 0
    assert torch.isfinite(out.loss) and out.loss >= 0
    if n == 0:  # the empty-batch policy: empty outputs, zero loss, nothing learned
        assert out.loss == 0 and all(v == 0 for v in out.losses.values())
        assert torch.equal(vq.codebook.detach(), before)
    else:
        check_nearest(z.detach().float(), before, out.indices)
        assert torch.equal(out.quantized.detach(), before[out.indices].to(dtype))
    out.loss.backward()  # always differentiable, even when empty
    assert z.grad is not None and torch.isfinite(z.grad.float()).all()


@given(
    b=st.integers(0, 3),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_channel_first_equals_channel_last(b, h, w, d, seed):
    torch.manual_seed(seed)
    first = VectorQuantizer(d, 7, channel_dim=1).eval()
    last = VectorQuantizer(d, 7).eval()
    last.load_state_dict(first.state_dict())
    z = torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))
    a, c = first(z), last(z.movedim(1, -1))  # the movedim input is non-contiguous
    assert torch.equal(a.indices, c.indices) and a.quantized.shape == z.shape
    assert torch.equal(a.quantized.movedim(1, -1), c.quantized)


def test_zero_and_one_dimensional_inputs():
    vq = VectorQuantizer(4, 8).eval()
    out = vq(torch.randn(4))  # one vector: indices is 0-d
    assert out.indices.shape == () and out.quantized.shape == (4,)
    with pytest.raises(ValueError, match=r"expected D=4 on axis -1 of z_e; got shape \(\)"):
        vq(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"expected D=4 on axis -1 of z_e; got shape \(3,\)"):
        vq(torch.randn(3))
    with pytest.raises(ValueError, match=r"expected D=4 on axis 1 of z_e; got shape \(4,\)"):
        VectorQuantizer(4, 8, channel_dim=1)(torch.randn(4))
    with pytest.raises(ValueError, match="axis 5"):
        VectorQuantizer(4, 8, channel_dim=5)(torch.randn(3, 4))


@given(
    dtype=st.sampled_from(NOT_FLOATS),
    n=st.integers(0, 5),
    method=st.sampled_from(["forward", "init"]),
)
def test_non_float_input_is_a_type_error(dtype, n, method):
    vq = VectorQuantizer(3, 2)
    z = torch.zeros(n, 3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"z_e must have a floating-point dtype.*{dtype}"):
        vq(z) if method == "forward" else vq.init_from_data(z)


@pytest.mark.parametrize("thing", [[[1.0, 2.0, 3.0]], (1.0, 2.0, 3.0), 3.0, None, "z"])
def test_non_tensor_input_is_a_type_error(thing):
    with pytest.raises(TypeError, match="z_e must be a torch.Tensor"):
        VectorQuantizer(3, 2)(thing)


def test_numpy_input_is_a_type_error():
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="got ndarray"):
        VectorQuantizer(3, 2)(np.zeros((2, 3), dtype=np.float32))


@given(
    n=st.integers(1, 12),
    d=st.integers(1, 5),
    dtype=st.sampled_from(FLOATS),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    data=st.data(),
)
def test_nan_and_inf_are_refused_by_name_before_any_update(n, d, dtype, bad, data):
    vq = VectorQuantizer(d, 4, dead_code_threshold=0.5).train()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    z = make(n, d, 0, dtype)
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, d - 1))
    z[i, j] = bad
    kind = "NaN" if bad != bad else "Inf"
    where = rf"\(1 of {n * d} values; first at index \({i}, {j}\)\)"
    with pytest.raises(ValueError, match=rf"z_e contains {kind} {where}"):
        vq(z)
    with pytest.raises(ValueError, match=f"z_e contains {kind}"):
        vq.init_from_data(z, method="random_uniform")
    # nothing moved: a bad batch never reaches the codebook or its statistics
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key


@given(
    d=st.integers(1, 64),
    scale=st.floats(1.01, 1e6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_values_too_large_for_fp32_distances_are_refused(d, scale, dtype):
    limit = max_magnitude(d)
    z = torch.zeros(3, d, dtype=dtype)
    z[1, 0] = min(limit * scale, torch.finfo(dtype).max)
    with pytest.raises(ValueError, match=r"z_e has values up to .* in magnitude; beyond"):
        VectorQuantizer(d, 2)(z)
    # just inside the bound everything stays finite
    z[1, 0] = limit / 4
    out = VectorQuantizer(d, 2).eval()(z)
    assert torch.isfinite(out.loss)


def test_fp64_beyond_fp32_range_is_refused_not_silently_inf():
    z = torch.full((2, 3), 1e300, dtype=torch.float64)
    with pytest.raises(ValueError, match="overflow float32"):
        VectorQuantizer(3, 2)(z)
    with pytest.raises(ValueError, match="overflow float32"):
        kmeans(z, 1)


def test_value_checks_can_be_switched_off_but_not_the_type_checks():
    vq = VectorQuantizer(2, 3).eval()
    bad = torch.tensor([[float("nan"), 0.0]])
    with value_checks(False):
        vq(bad)  # no check, no error (the caller vouched for the data)
        with pytest.raises(TypeError):
            vq(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        vq(bad)


def test_switching_value_checks_off_holds_in_its_own_thread_only():
    import threading

    vq = VectorQuantizer(2, 3).eval()
    bad = torch.tensor([[float("nan"), 0.0]])
    seen = []

    def other():
        try:
            vq(bad)
        except ValueError as err:
            seen.append(str(err))

    with value_checks(False):
        vq(bad)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(seen) == 1 and "NaN" in seen[0]


def test_meta_tensors_are_refused():
    with pytest.raises(ValueError, match="z_e is a meta tensor"):
        VectorQuantizer(3, 2)(torch.zeros(2, 3, device="meta"))
    with pytest.raises(ValueError, match="x is a meta tensor"):
        nearest_code(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x is a meta tensor"):
        kmeans(torch.zeros(4, 3, device="meta"), 2)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dim": 0}, ValueError, "dim must be >= 1"),
        ({"dim": 4.5}, TypeError, "dim must be an int"),
        ({"dim": "4"}, TypeError, "dim must be an int"),
        ({"dim": True}, TypeError, "dim must be an int"),
        ({"codebook_size": 0}, ValueError, "codebook_size must be >= 1"),
        ({"codebook_size": None}, TypeError, "codebook_size must be an int"),
        ({"beta": -1.0}, ValueError, "beta must be >= 0"),
        ({"beta": float("nan")}, ValueError, "beta must be finite"),
        ({"decay": 1.0}, ValueError, r"decay must lie in \(0, 1\)"),
        ({"decay": float("nan")}, ValueError, "decay must be finite"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"dead_code_threshold": -1}, ValueError, "dead_code_threshold must be >= 0"),
        ({"channel_dim": "1"}, TypeError, "channel_dim must be an int"),
        ({"max_bytes": 2}, ValueError, "max_bytes must be >= 4"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    args = {"dim": 4, "codebook_size": 8, **kwargs}
    dim, k = args.pop("dim"), args.pop("codebook_size")
    with pytest.raises(error, match=message):
        VectorQuantizer(dim, k, **args)


@given(
    n=st.integers(0, 30),
    k=st.integers(1, 12),
    d=st.integers(1, 4),
    method=st.sampled_from(["kmeans", "kmeans++", "random_normal", "random_uniform", "sample"]),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**16),
)
def test_init_from_data_works_or_says_how_many_rows(n, k, d, method, dtype, seed):
    vq = VectorQuantizer(d, k)
    z = make(n, d, seed, dtype)
    need = {"random_normal": 2, "random_uniform": 1}.get(method, k)
    if n < need:
        with pytest.raises(ValueError, match=f"needs at least .*{need}.* got {n}"):
            vq.init_from_data(z, method=method, iters=3, seed=seed)
        assert not vq.initialized
        return
    vq.init_from_data(z, method=method, iters=3, seed=seed)
    assert vq.initialized and vq.codebook.shape == (k, d)
    assert torch.isfinite(vq.codebook).all()  # one row, constant columns: still no NaN


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"method": "magic"}, ValueError, "unknown init method 'magic'"),
        ({"iters": -1}, ValueError, "iters must be >= 0"),
        ({"iters": 2.5}, TypeError, "iters must be an int"),
        ({"seed": "0"}, TypeError, "seed must be an int"),
    ],
)
def test_bad_init_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        VectorQuantizer(2, 3).init_from_data(torch.randn(10, 2), **kwargs)


def test_lookup_checks_indices():
    vq = VectorQuantizer(2, 3)
    assert vq.lookup(torch.tensor([[0, 2]])).shape == (1, 2, 2)
    assert vq.lookup(torch.zeros(0, dtype=torch.long)).shape == (0, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\); got values in \[0, 3\]"):
        vq.lookup(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="got values in"):
        vq.lookup(torch.tensor([-1]))
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        vq.lookup(torch.tensor([0.0]))


def test_huge_codebook_small_batch_and_one_code():
    big = VectorQuantizer(3, 20000).eval()
    z = torch.randn(2, 3)
    check_nearest(z, big.codebook, big(z).indices)
    one = VectorQuantizer(3, 1).train()
    out = one(torch.randn(5, 3))
    assert (out.indices == 0).all() and torch.isfinite(one.codebook).all()


def test_empty_batch_in_training_keeps_statistics_and_backward_reaches_parameters():
    vq = VectorQuantizer(3, 4, update="grad", dead_code_threshold=2.0).train()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.zeros(0, 3, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    assert vq.codebook.grad is not None and (vq.codebook.grad == 0).all()
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key


# ----------------------------------------------------------------------------- nearest_code
@given(
    n=st.integers(0, 30),
    k=st.integers(1, 40),
    d=st.integers(1, 6),
    x_dtype=st.sampled_from(FLOATS),
    c_dtype=st.sampled_from(FLOATS),
    layout=st.sampled_from(LAYOUTS),
    max_bytes=st.sampled_from([4, 64, 2**20]),
    seed=st.integers(0, 2**16),
)
def test_nearest_code_matches_brute_force(n, k, d, x_dtype, c_dtype, layout, max_bytes, seed):
    x = make(n, d, seed, x_dtype, layout)
    codebook = make(k, d, seed + 1, c_dtype, layout)
    res = nearest_code(x, codebook, max_bytes=max_bytes)
    assert res.indices.shape == (n,) and res.distances.shape == (n,)
    assert res.indices.dtype == torch.int64 and res.distances.dtype == torch.float32
    assert torch.isfinite(res.distances).all() and (res.distances >= 0).all()
    if n:
        check_nearest(x.float(), codebook.float(), res.indices)


@given(
    which=st.sampled_from(["x", "codebook"]),
    bad=st.sampled_from([float("nan"), float("inf")]),
    dtype=st.sampled_from(FLOATS),
)
def test_nearest_code_names_the_bad_tensor(which, bad, dtype):
    x, codebook = torch.randn(4, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    (x if which == "x" else codebook)[1, 2] = bad
    kind = "NaN" if bad != bad else "Inf"
    with pytest.raises(ValueError, match=rf"^{which} contains {kind}"):
        nearest_code(x, codebook)


@pytest.mark.parametrize(
    "x, codebook, error, message",
    [
        ([[0.0, 1.0]], torch.zeros(2, 2), TypeError, "x must be a torch.Tensor"),
        (torch.zeros(2, 2), None, TypeError, "codebook must be a torch.Tensor"),
        (torch.zeros(2), torch.zeros(2, 2), ValueError, r"shape \(N, D\)"),
        (torch.zeros(2, 3), torch.zeros(2, 2), ValueError, "dimension mismatch"),
        (torch.zeros(2, 2), torch.zeros(0, 2), ValueError, r"empty \(K=0\)"),
        (torch.zeros(2, 2, dtype=torch.int8), torch.zeros(2, 2), TypeError, "floating-point"),
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), TypeError, "floating-point"),
    ],
)
def test_nearest_code_bad_arguments(x, codebook, error, message):
    with pytest.raises(error, match=message):
        nearest_code(x, codebook)


# ------------------------------------------------------------------------------------ kmeans
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 5),
    data=st.data(),
    dtype=st.sampled_from(FLOATS),
    layout=st.sampled_from(LAYOUTS),
    init=st.sampled_from(["kmeans++", "kmeans||", "random"]),
    seed=st.integers(0, 2**16),
)
def test_kmeans_is_finite_and_consistent(n, d, data, dtype, layout, init, seed):
    k = data.draw(st.integers(1, n))
    x = make(n, d, seed, dtype, layout)
    res = kmeans(x, k, iters=4, seed=seed, init=init)
    assert res.centroids.shape == (k, d) and torch.isfinite(res.centroids).all()
    assert int(res.counts.sum()) == n and len(res.inertia) == 5
    # Lloyd steps never increase the inertia (re-seeding an empty cluster only lowers it), up
    # to fp32 rounding of ||x||^2 - 2 x.c + ||c||^2, which scales with sum ||x||^2
    slack = 1e-5 * float((x.double() ** 2).sum()) + 1e-6
    for a, b in zip(res.inertia, res.inertia[1:]):
        assert b <= a + slack
    check_nearest(x.float(), res.centroids, nearest_code(x, res.centroids).indices)


@given(n=st.integers(0, 6), extra=st.integers(1, 5))
def test_kmeans_with_too_few_points_says_so(n, extra):
    with pytest.raises(ValueError, match=f"k={n + extra} centroids need at least k points"):
        kmeans(torch.randn(n, 2), n + extra)


@pytest.mark.parametrize(
    "x, k, kwargs, error, message",
    [
        (torch.randn(5, 2), 2.0, {}, TypeError, "k must be an int"),
        (torch.randn(5, 2), 0, {}, ValueError, "k must be at least 1"),
        (torch.randn(5, 2), 2, {"iters": -1}, ValueError, "iters must be an int >= 0"),
        (torch.randn(5, 2), 2, {"seed": 1.5}, TypeError, "seed must be an int"),
        (torch.randn(5, 2), 2, {"init": "best"}, ValueError, "unknown init 'best'"),
        (torch.randn(5, 0), 2, {}, ValueError, "dimension D=0"),
        (torch.ones(5, 2, dtype=torch.long), 2, {}, TypeError, "floating-point"),
        (torch.full((5, 2), float("nan")), 2, {}, ValueError, "x contains NaN"),
        (torch.randn(5), 2, {}, ValueError, r"shape \(N, D\)"),
    ],
)
def test_kmeans_bad_arguments(x, k, kwargs, error, message):
    with pytest.raises(error, match=message):
        kmeans(x, k, **kwargs)


# ------------------------------------------------------------------------------------- cuda
@CUDA
def test_cuda_matches_cpu_and_device_mismatch_is_named():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16).eval()
    z = torch.randn(64, 4)
    ref = vq(z)
    vq_gpu = VectorQuantizer(4, 16).eval()
    vq_gpu.load_state_dict(vq.state_dict())
    vq_gpu.cuda()
    out = vq_gpu(z.cuda())
    assert torch.equal(out.indices.cpu(), ref.indices)
    with pytest.raises(ValueError, match="z_e is on cpu but the quantizer is on cuda"):
        vq_gpu(z)
    bad = z.cuda()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"z_e contains NaN \(1 of 256 values; first at index"):
        vq_gpu(bad)
    with pytest.raises(ValueError, match="on cuda"):
        nearest_code(z, vq_gpu.codebook)


def test_property_tests_run_under_the_bounded_profile():
    # the one settings block lives in conftest.py; --hypothesis-profile=hunt widens it on purpose
    from hypothesis import settings

    if settings.get_current_profile_name() == "hunt":
        pytest.skip("hunting: more examples, fresh randomness")
    current = settings.default
    assert settings.get_current_profile_name() == "ci"
    assert current.max_examples == 40 and current.derandomize and current.deadline is None
    assert current.database is None
