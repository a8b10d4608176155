"""The tokenizer task's VQGAN-style losses inside the engine: perceptual and adversarial."""

import pytest
import torch
from image_fixtures import TINY_TOKENIZER, image_folder
from safetensors.torch import load_file

from vqlab import load_config
from vqlab.evaluation.featnet import build_featnet, default_config, save_featnet
from vqlab.training import engine
from vqlab.training.checkpoint import load_training_state
from vqlab.training.logging import read_metrics


class Crash(RuntimeError):
    pass


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("VQLAB_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "images")
    torch.manual_seed(3)  # an untrained net: the perceptual loss needs frozen features, not skill
    net = build_featnet(default_config("vgg", 3, 2))
    save_featnet(net, tmp_path / "percep", {"note": "random init, for tests"})
    sets = [
        *TINY_TOKENIZER,
        f"data.path={folder}",
        "train.steps=12",
        "train.strategy=deferred",
        "train.pretrain_steps=4",
        "train.log_every=1",
        "loss.perceptual=0.5",
        f"loss.perceptual_net={tmp_path / 'percep'}",
        "loss.gan=0.1",
        "loss.gan_start=6",
        "loss.disc_width=8",
        "loss.disc_layers=2",
    ]
    return tmp_path, sets


def test_gan_and_perceptual_terms_are_logged_from_their_steps(setup):
    tmp_path, sets = setup
    summary = engine.train(load_config(None, sets), tmp_path / "r", progress=False)
    rows = [r for r in read_metrics(tmp_path / "r") if r["phase"] != "init"]
    # deferred pretraining trains with the same reconstruction losses, just without VQ
    assert all("perceptual_loss" in r for r in rows)
    assert all("commitment" not in r for r in rows if r["step"] < 4)
    assert all("g_loss" not in r for r in rows if r["step"] < 6)
    assert all({"g_loss", "d_loss", "gan_weight"} <= set(r) for r in rows if r["step"] >= 6)
    assert all(r["gan_weight"] >= 0 for r in rows if r["step"] >= 6)
    assert summary["steps"] == 12
    ckpt = tmp_path / "r" / "checkpoint"
    assert (ckpt / "discriminator.safetensors").is_file()
    assert any(
        k.startswith("layers") or k for k in load_file(str(ckpt / "discriminator.safetensors"))
    )


def test_a_resumed_run_with_a_discriminator_equals_an_uninterrupted_one(setup, monkeypatch):
    tmp_path, sets = setup
    sets = [*sets, "train.checkpoint_every=8"]
    whole = engine.train(load_config(None, sets), tmp_path / "whole", progress=False)
    real_step = engine._step

    def dying_step(run, step):
        if step == 10:
            raise Crash("simulated crash")
        return real_step(run, step)

    monkeypatch.setattr(engine, "_step", dying_step)
    with pytest.raises(Crash):
        engine.train(load_config(None, sets), tmp_path / "cut", progress=False)
    state = load_training_state(tmp_path / "cut" / "checkpoint")
    assert state.meta["step"] == 8 and set(state.optimizers) == {"model", "discriminator"}
    monkeypatch.setattr(engine, "_step", real_step)
    again = engine.resume(tmp_path / "cut", progress=False)
    whole.pop("seconds"), again.pop("seconds")
    assert again == whole
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "whole")
    for name in ("model", "discriminator"):
        a = load_file(str(tmp_path / "whole" / "checkpoint" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "cut" / "checkpoint" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_discriminator_is_trained_by_its_loss_alone(setup, monkeypatch):
    # the generator's adversarial term must not reach the discriminator: with the
    # discriminator's own loss replaced by zero, its gradients after a GAN step are all zero,
    # while the generator's term still trains the decoder
    import vqlab.losses

    tmp_path, sets = setup
    monkeypatch.setattr(
        vqlab.losses, "hinge_d_loss", lambda real, fake: 0.0 * (real.sum() + fake.sum())
    )
    config = load_config(
        None, [*sets, "loss.gan_start=0", "loss.perceptual=0", "loss.perceptual_net="]
    )
    run = engine._build(config, engine.setup("cpu"), None)
    run.task.prepare(0)
    result = run.task.losses(4)  # a VQ step with the GAN on
    disc = run.task.modules["discriminator"]
    grads = [p.grad for p in disc.parameters()]
    assert all(g is None or not g.any() for g in grads)
    assert result.terms["g_loss"].requires_grad
    assert run.task.model.last_layer.grad.abs().sum() > 0


def test_perceptual_loss_needs_a_net_and_gan_needs_images(tmp_path):
    with pytest.raises(ValueError, match="loss.perceptual_net"):
        load_config(None, ["loss.perceptual=1"])
    with pytest.raises(ValueError, match="needs images"):
        engine.train(
            load_config(None, ["loss.gan=0.1", "train.steps=2"]), tmp_path / "x", progress=False
        )
