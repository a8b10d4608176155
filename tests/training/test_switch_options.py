"""train.bridge_steps and train.refit_at: the switch from autoencoder to VQ, softened."""

import pytest
import torch

from vqlab import load_config, train
from vqlab.errors import ConfigError
from vqlab.models.registry import build_model
from vqlab.training.logging import read_metrics
from vqlab.training.tasks import tokenizer as tokenizer_task

SMALL = [
    "data.samples_per_peak=50",
    "data.test_samples_per_peak=20",
    "model.hidden=16",
    "vq.codebook_size=16",
    "vq.init_samples=200",
    "vq.kmeans_iters=2",
    "train.strategy=deferred",
    "train.steps=12",
    "train.pretrain_steps=4",
    "train.eval_every=6",
    "train.log_every=1",
    "train.batch_size=32",
]


def test_blend_decodes_the_point_between_z_e_and_z_q():
    cfg = load_config(None, ["vq.codebook_size=8", "model.hidden=8"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.vq, (cfg.data.dim,))
    model.quantizer.init_from_data(torch.randn(64, model.quantizer.dim), method="sample")
    model.eval()  # no EMA update between the calls
    x = torch.randn(5, cfg.data.dim)
    full = model(x)
    half = model(x, blend=0.5)
    z_e = model.encoder(x)
    mid = z_e + 0.5 * (full.vq.quantized - z_e)
    torch.testing.assert_close(half.recon, model.decoder(mid))
    torch.testing.assert_close(model(x, blend=1.0).recon, full.recon)
    torch.testing.assert_close(half.vq.loss, full.vq.loss)  # the VQ losses are unblended


def test_bridge_is_logged_and_refits_rerun_the_init(tmp_path, monkeypatch):
    steps = []
    real = tokenizer_task.init_codebook

    def spy(model, data, config, device, dist=None):
        steps.append(len(steps))
        return real(model, data, config, device, dist)

    monkeypatch.setattr(tokenizer_task, "init_codebook", spy)
    cfg = load_config(None, [*SMALL, "train.bridge_steps=4", "train.refit_at=8"])
    train(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    inits = [r["step"] for r in rows if r.get("phase") == "init"]
    assert inits == [4, 8] and len(steps) == 2
    blend = {r["step"]: r.get("blend") for r in rows if r.get("phase") == "vq"}
    assert blend[4] == pytest.approx(0.25) and blend[6] == pytest.approx(0.75)
    assert blend[7] is None  # a = 1 from the end of the bridge on: nothing to log


def test_refit_outside_the_vq_phase_is_a_config_error():
    with pytest.raises(ConfigError, match="outside the VQ phase"):
        load_config(None, [*SMALL, "train.refit_at=3"])
    with pytest.raises(ConfigError, match="must increase"):
        load_config(None, [*SMALL, "train.refit_at=9,8"])
    with pytest.raises(ConfigError, match="bridge_steps"):
        load_config(None, [*SMALL, "train.bridge_steps=-2"])
