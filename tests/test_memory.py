"""check_codebook_memory: the estimate by hand, and a one-line refusal of what cannot fit."""

import pytest
import torch

from vqlab import memory
from vqlab.errors import ConfigError
from vqlab.memory import available_bytes, check_codebook_memory, codebook_bytes


def test_codebook_bytes_by_hand():
    # per code: D fp32 for the code, D for its EMA sum, 1 for its EMA count
    assert codebook_bytes(10, 3) == 10 * 4 * (3 + 3 + 1)
    assert codebook_bytes(10, 3, extra_bytes_per_code=12) == 10 * (28 + 12)


def test_refuses_what_does_not_fit_with_one_line(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    assert check_codebook_memory(5, 4, "cpu") == 5 * 36  # 180 bytes fit in 1000
    with pytest.raises(ConfigError) as info:
        check_codebook_memory(100, 4, "cpu")  # 3600 bytes do not
    message = str(info.value)
    assert "\n" not in message and "vq.codebook_size=100" in message
    assert "3.5 KiB" in message and "1000.0 B free" in message


def test_unknown_free_memory_refuses_nothing(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    assert check_codebook_memory(2_000_000_000, 64, "meta") > 0


def test_cpu_free_memory_is_read():
    free = available_bytes("cpu")
    assert free is None or 0 < free
    assert available_bytes("meta") is None


def test_build_model_checks_before_allocating(monkeypatch):
    from vqlab.config import ModelConfig, VQConfig
    from vqlab.models.registry import build_model

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000)
    vq = VQConfig(codebook_size=1000, init_samples=1000)
    with pytest.raises(ConfigError, match="vq.codebook_size=1000"):
        build_model(ModelConfig(latent_dim=8), vq, (8,))
    # a grad-trained codebook also counts its gradient and Adam's moments
    small = VQConfig(codebook_size=64, init_samples=1000, update="grad")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 4 * 17 + 1)
    with pytest.raises(ConfigError):
        build_model(ModelConfig(latent_dim=8), small, (8,))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 4 * (17 + 24))
    assert build_model(ModelConfig(latent_dim=8), small, (8,)).quantizer.codebook.shape == (64, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_free_memory_is_read():
    free = available_bytes("cuda")
    assert free is not None and free <= torch.cuda.get_device_properties(0).total_memory
