"""diagnose(): contract keys per argument set, agreement with the parts, meaning on toy runs."""

import json

import pytest
import torch

from vqlab.diagnostics import (
    class_separation,
    diagnose,
    mean_nearest_distance,
    mean_pairwise_cos_dist,
    mean_pairwise_l2,
)

BASE = {"codebook_size", "codebook_mean_l2", "codebook_mean_cos_dist", "effective_dim"}
USAGE = {"perplexity", "usage", "dead_codes"}
EMB = {"embedding_mean_l2", "coverage_ratio", "mean_nearest_distance"}
LABELLED_EMB = {"class_separation", "probe_accuracy", "embedding_effective_rank"}
INTS = {"codebook_size", "dead_codes", "effective_dim", "modes_with_tokens", "modes_in_recon"}


def _mixture(n_per: int = 100, seed: int = 0):
    """Four 2-D Gaussian modes at the corners of a square; returns (x, labels, means)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    labels = torch.arange(4).repeat_interleave(n_per)
    return means[labels] + 0.5 * torch.randn(4 * n_per, 2, generator=gen), labels, means


def _nearest(x, codebook):
    return torch.cdist(x, codebook).argmin(dim=1)


def test_keys_follow_the_arguments_given():
    x, labels, means = _mixture()
    codebook = means + 0.1
    idx = _nearest(x, codebook)
    assert set(diagnose(codebook=codebook)) == BASE
    assert set(diagnose(codebook=codebook, indices=idx)) == BASE | USAGE
    assert set(diagnose(codebook=codebook, embeddings=x)) == BASE | EMB
    full = diagnose(
        codebook=codebook,
        embeddings=x,
        indices=idx,
        labels=labels,
        reconstructions=x,
        inputs=x,
        means=means,
        mode_radius=1.0,
    )
    expected = BASE | USAGE | EMB | LABELLED_EMB
    expected |= {"quant_mse", "recon_mse", "modes_with_tokens", "mode_entropy"}
    expected |= {"modes_in_recon", "recon_mode_accuracy"}
    assert set(full) == expected
    for key, value in full.items():
        assert type(value) is (int if key in INTS else float), key
    json.dumps(full, allow_nan=False)


def test_values_agree_with_the_parts_and_hand_values():
    codebook = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    z_e = torch.tensor([[1.0, 0.0], [4.0, 2.0], [0.0, 3.0], [0.0, 0.0]])
    idx = torch.tensor([0, 1, 2, 2])  # the last position is deliberately not its nearest code
    out = diagnose(codebook=codebook, embeddings=z_e, indices=idx, embedding_sample=4)
    assert out["codebook_size"] == 3
    assert out["codebook_mean_l2"] == pytest.approx((4 + 3 + 5) / 3)
    assert out["codebook_mean_cos_dist"] == pytest.approx(mean_pairwise_cos_dist(codebook))
    assert out["effective_dim"] == 2
    assert out["usage"] == pytest.approx(1.0) and out["dead_codes"] == 0
    assert out["perplexity"] == pytest.approx(2 ** (1.5))  # shares 1/4, 1/4, 1/2
    assert out["embedding_mean_l2"] == pytest.approx(mean_pairwise_l2(z_e))
    assert out["coverage_ratio"] == pytest.approx(out["codebook_mean_l2"] / mean_pairwise_l2(z_e))
    assert out["mean_nearest_distance"] == pytest.approx(mean_nearest_distance(z_e, codebook))
    # ||z_e - z_q||^2 per position: 1, 4, 0, 9 -> mean 3.5.
    assert out["quant_mse"] == pytest.approx(3.5)


def test_recon_mse_is_per_element_on_any_layout():
    inputs = torch.zeros(2, 3, 4, 4)
    recon = torch.zeros(2, 3, 4, 4)
    recon[0, 0, 0, 0] = 4.0  # one element off by 4: 16 / 96
    out = diagnose(codebook=torch.eye(3), reconstructions=recon, inputs=inputs)
    assert out["recon_mse"] == pytest.approx(16 / 96)


def test_healthy_and_collapsed_codebooks_are_told_apart():
    x, labels, means = _mixture(seed=1)
    healthy = torch.cat([means, means + 0.3])  # two codes per mode
    # Collapsed: every code is the same vector, so the first code takes every position.
    collapsed = torch.tensor([[1.0, 1.0]]).repeat(8, 1)
    good = diagnose(codebook=healthy, embeddings=x, indices=_nearest(x, healthy), labels=labels)
    bad = diagnose(codebook=collapsed, embeddings=x, indices=_nearest(x, collapsed), labels=labels)
    assert good["modes_with_tokens"] == 4 and bad["modes_with_tokens"] == 1
    assert good["perplexity"] > 4.0 > bad["perplexity"]
    assert good["coverage_ratio"] > 0.5 and bad["coverage_ratio"] == 0.0
    assert good["effective_dim"] == 2 and bad["effective_dim"] == 0
    assert bad["perplexity"] == pytest.approx(1.0) and bad["dead_codes"] == 7
    assert good["mean_nearest_distance"] < 1.0 < bad["mean_nearest_distance"]
    assert good["quant_mse"] < bad["quant_mse"]
    assert bad["mode_entropy"] == 0.0 and good["mode_entropy"] == pytest.approx(
        torch.log(torch.tensor(4.0)).item()
    )
    # The embeddings are the same in both runs, so their diagnostics are too.
    assert good["class_separation"] == bad["class_separation"] == class_separation(x, labels)
    assert good["probe_accuracy"] == 1.0


def test_mode_metrics_on_reconstructions():
    x, labels, means = _mixture(seed=3)
    recon = means[torch.zeros_like(labels)]  # a decoder that always outputs mode 0
    out = diagnose(
        codebook=means, reconstructions=recon, labels=labels, means=means, mode_radius=1.0
    )
    assert out["modes_in_recon"] == 1
    assert out["recon_mode_accuracy"] == pytest.approx(0.25)
    out = diagnose(codebook=means, reconstructions=x, labels=labels, means=means, mode_radius=1.0)
    assert out["modes_in_recon"] == 4
    assert out["recon_mode_accuracy"] == pytest.approx(1.0)


def test_embedding_spread_uses_a_seeded_subsample():
    z_e = torch.randn(3000, 3, generator=torch.Generator().manual_seed(4))
    codebook = torch.randn(16, 3, generator=torch.Generator().manual_seed(5))
    exact = mean_pairwise_l2(z_e)
    full = diagnose(codebook=codebook, embeddings=z_e)
    assert full["embedding_mean_l2"] == pytest.approx(exact, rel=1e-12)  # 3000 <= 8192
    small = diagnose(codebook=codebook, embeddings=z_e, embedding_sample=1000, seed=7)
    assert small["embedding_mean_l2"] != exact
    assert small["embedding_mean_l2"] == pytest.approx(exact, rel=0.03)
    again = diagnose(codebook=codebook, embeddings=z_e, embedding_sample=1000, seed=7)
    assert again == small


def test_codebook_parameter_with_grad_is_accepted():
    codebook = torch.nn.Parameter(torch.randn(8, 4))
    out = diagnose(codebook=codebook, embeddings=torch.randn(20, 4), indices=torch.arange(20) % 8)
    assert out["usage"] == 1.0


def test_bad_arguments_raise():
    codebook = torch.randn(8, 2)
    x, labels, means = _mixture(n_per=5)
    idx = _nearest(x, codebook)
    with pytest.raises(ValueError, match="one row per position"):
        diagnose(codebook=codebook, embeddings=x, indices=idx[:-1])
    with pytest.raises(ValueError, match="D=2"):
        diagnose(codebook=torch.randn(8, 3), embeddings=x)
    with pytest.raises(ValueError, match="indices must be a"):
        diagnose(codebook=codebook, indices=idx.view(4, 5))
    with pytest.raises(ValueError, match="inputs without"):
        diagnose(codebook=codebook, inputs=x)
    with pytest.raises(ValueError, match="mode_radius without"):
        diagnose(codebook=codebook, embeddings=x, mode_radius=1.0)
    with pytest.raises(ValueError, match="labels without"):
        diagnose(codebook=codebook, labels=labels)
    with pytest.raises(ValueError, match="same shape"):
        diagnose(codebook=codebook, reconstructions=x, inputs=x[:3])
    with pytest.raises(ValueError, match="at least 1 row"):
        diagnose(codebook=codebook[:0])
    # one code is a (fully collapsed) result, not an error: it has no pairs, so no spread
    single = diagnose(codebook=codebook[:1], embeddings=x, indices=torch.zeros_like(idx))
    assert single["codebook_mean_l2"] == 0.0 and single["coverage_ratio"] == 0.0


def test_diagnose_without_codebook_gives_embedding_metrics_only():
    torch.manual_seed(0)
    emb = torch.randn(40, 3)
    labels = torch.arange(4).repeat_interleave(10)
    recon, inputs = torch.zeros(40, 2), torch.ones(40, 2)
    out = diagnose(
        codebook=None, embeddings=emb, labels=labels, reconstructions=recon, inputs=inputs
    )
    full = diagnose(
        codebook=torch.randn(5, 3),
        embeddings=emb,
        labels=labels,
        reconstructions=recon,
        inputs=inputs,
    )
    assert set(out) == {
        "embedding_mean_l2",
        "class_separation",
        "probe_accuracy",
        "embedding_effective_rank",
        "recon_mse",
    }
    for key in out:
        assert out[key] == full[key]
    with pytest.raises(ValueError, match="indices without a codebook"):
        diagnose(codebook=None, indices=torch.zeros(3, dtype=torch.long))
