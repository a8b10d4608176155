"""The diagonal Gaussian mixture behind ``vq.init=gmm``: against scikit-learn and by hand."""

import math

import numpy as np
import pytest
import torch

from vqlab.quantizers.gmm import e_step_statistics, fit_gmm, gmm_em, gmm_log_prob
from vqlab.quantizers.vq import VectorQuantizer, fit_codes


def blobs(n_per: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three anisotropic 2-D clusters, far apart; returns (x (3 n_per, 2), the sample mean of
    each cluster (3, 2))."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0], [6.0, 1.0], [-3.0, 7.0]])
    scales = torch.tensor([[1.0, 0.3], [0.5, 1.5], [0.8, 0.8]])
    parts = [m + s * torch.randn(n_per, 2, generator=g) for m, s in zip(means, scales)]
    return torch.cat(parts), torch.stack([p.mean(0) for p in parts])


def test_log_prob_matches_the_density_by_hand():
    x = torch.tensor([[1.0, -2.0]])
    means = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    var = torch.tensor([[1.0, 4.0], [0.5, 2.0]])
    w = torch.tensor([0.25, 0.75])
    got = gmm_log_prob(x, means, var, w)
    for k in range(2):
        dens = w[k].item()
        for d in range(2):
            v, m = var[k, d].item(), means[k, d].item()
            dens *= math.exp(-((x[0, d].item() - m) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)
        assert got[0, k].item() == pytest.approx(math.log(dens), rel=1e-6)


def test_em_matches_scikit_learn_step_for_step():
    """From the same start, n EM steps equal scikit-learn's GaussianMixture(diag, max_iter=n)."""
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    x, _ = blobs()
    g = torch.Generator().manual_seed(1)
    m0 = x[torch.randperm(x.shape[0], generator=g)[:4]].clone()
    v0 = torch.full((4, 2), 2.0)
    w0 = torch.full((4,), 0.25)
    for steps in (1, 5):
        ours = gmm_em(x.double(), m0.double(), v0.double(), w0.double(), iters=steps)
        ref = sklearn_mixture.GaussianMixture(
            4, covariance_type="diag", max_iter=steps, tol=0.0, reg_covar=1e-6,
            means_init=m0.numpy(), weights_init=w0.numpy(), precisions_init=1 / v0.numpy(),
        )  # fmt: skip
        with pytest.warns(Warning):  # tol=0 never "converges"
            ref.fit(x.numpy().astype(np.float64))
        np.testing.assert_allclose(ours.means.numpy(), ref.means_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(ours.variances.numpy(), ref.covariances_, rtol=1e-6)
        np.testing.assert_allclose(ours.weights.numpy(), ref.weights_, rtol=1e-6)
        # scikit-learn's lower bound is the mean log-likelihood before its last M-step (the
        # empty-component guard is 10 fp32 eps here, 10 fp64 eps there: ~1e-8 apart)
        assert ours.log_likelihood[-1] == pytest.approx(ref.lower_bound_, rel=1e-7)


def test_log_likelihood_never_decreases_and_means_find_the_clusters():
    x, true = blobs()
    fit = fit_gmm(x, 3, iters=15, seed=0)
    ll = fit.log_likelihood
    # EM never lowers the likelihood; the mean log-likelihood of 600 rows summed in float32 is
    # exact to about 1e-6 relative, so a converged fit may wobble by that much (measured: the
    # greedy k-means++ init starts at the optimum, and step 1 reads 3.8e-6 lower, -3.3012449)
    assert all(b >= a - 2e-6 * abs(a) for a, b in zip(ll, ll[1:]))
    # the clusters are > 6 std apart, so the maximum-likelihood means are the sample means
    dist = torch.cdist(true, fit.means)
    assert dist.min(1).values.max() < 1e-3
    assert fit.weights.sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("max_bytes", [64, 1024, 1 << 20])
def test_e_step_is_chunk_invariant(max_bytes):
    x, _ = blobs(50)
    means, var, w = x[:5].clone(), torch.ones(5, 2), torch.full((5,), 0.2)
    whole = e_step_statistics(x, means, var, w, max_bytes=1 << 30)
    chunked = e_step_statistics(x, means, var, w, max_bytes=max_bytes)
    for a, b in zip(whole[:3], chunked[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert chunked[3] == pytest.approx(whole[3], rel=1e-9)
    assert whole[0].sum().item() == pytest.approx(x.shape[0], rel=1e-5)  # responsibilities


def test_a_component_with_no_mass_keeps_its_parameters():
    x, _ = blobs(50)
    far = torch.tensor([[1e3, 1e3]])
    means = torch.cat([x[:2], far])
    var, w = torch.ones(3, 2), torch.full((3,), 1 / 3)
    fit = gmm_em(x, means, var, w, iters=2)
    assert torch.isfinite(fit.means).all() and torch.isfinite(fit.variances).all()
    torch.testing.assert_close(fit.means[2], far[0])


def test_fit_gmm_refuses_bad_arguments():
    x, _ = blobs(5)
    with pytest.raises(ValueError, match="1 <= k <= N"):
        fit_gmm(x, 100)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_gmm(x[0], 2)
    with pytest.raises(ValueError, match="iters"):
        fit_gmm(x, 2, iters=-1)


def test_fit_codes_gmm_is_deterministic_and_none_keeps_the_codebook():
    x, _ = blobs()
    a = fit_codes(x, 3, "gmm", iters=5, seed=3)
    torch.testing.assert_close(a, fit_codes(x, 3, "gmm", iters=5, seed=3), rtol=0, atol=0)
    assert fit_codes(x, 3, "none") is None
    vq = VectorQuantizer(2, 3)
    before = vq.codebook.clone()
    vq.init_from_data(x, method="none")
    assert bool(vq.initialized) and torch.equal(vq.codebook, before)
    vq.init_from_data(x, method="gmm", iters=5, seed=3)
    torch.testing.assert_close(vq.codebook, a)
