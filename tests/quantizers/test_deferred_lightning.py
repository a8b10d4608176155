"""The Lightning callback: switch_at as a step or a fraction of the run, counted in optimizer
steps (forward calls = steps x accumulate_grad_batches), the quantizer found or named."""

import pytest
import torch
from embedding_vq import EmbeddingVQ
from torch import nn

pytest.importorskip("lightning")
import lightning.pytorch as pl  # noqa: E402

from vqlab.quantizers.deferred_lightning import DeferredQuantization  # noqa: E402


class Toy(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 3, 1)
        self.quantize = EmbeddingVQ(8, 4)
        self.switch_seen_at = None

    def training_step(self, batch, _):
        x = batch[0]
        z_q, loss, (_, _, idx) = self.quantize(self.enc(x))
        if self.switch_seen_at is None and bool((idx >= 0).all()):
            self.switch_seen_at = self.quantize.calls - 1  # the call that switched
        return ((self.dec(z_q) - x) ** 2).mean() + loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback, steps=12, accumulate=1):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 2, 2))
    model = Toy()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accumulate_grad_batches=accumulate,
                         callbacks=[callback])  # fmt: skip
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=4))
    return model


@pytest.mark.parametrize("switch_at, accumulate, calls", [(5, 1, 5), (0.5, 1, 6), (0.5, 2, 12)])
def test_switch_at_step_or_fraction(switch_at, accumulate, calls):
    model = _fit(DeferredQuantization(switch_at, init_samples=200, attribute="quantize"),
                 accumulate=accumulate)  # fmt: skip
    assert model.quantize.phase == "quantize" and model.quantize.switch_at == calls
    assert model.switch_seen_at == calls
    assert model.quantize.calls == 12 * accumulate


def test_quantizer_found_without_a_name_and_bad_switch_refused():
    model = _fit(DeferredQuantization(3, init_samples=200))
    assert model.quantize.switch_at == 3
    for bad in (0, 1.0, 1.5, True):
        with pytest.raises(ValueError, match="switch_at must be"):
            DeferredQuantization(bad)
