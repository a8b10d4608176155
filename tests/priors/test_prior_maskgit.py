"""The MaskGIT model, its masked loss and its held-out evaluation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqlab.priors.maskgit import MaskGIT, evaluate_prior, maskgit_loss
from vqlab.priors.schedules import mask_count

K, L, C = 16, 12, 3


def _model(num_classes=C, **kw):
    torch.manual_seed(0)
    return MaskGIT(K, L, num_classes=num_classes, depth=2, width=32, heads=4, **kw)


class Recorder(nn.Module):
    """Wraps a model: records its inputs and logits, and can add noise where ids are visible."""

    def __init__(self, model, noise_on_visible=0.0):
        super().__init__()
        self.model, self.noise = model, noise_on_visible
        self.num_classes, self.mask_id = model.num_classes, model.mask_id
        self.inputs = self.labels = self.logits = None

    def forward(self, ids, labels=None):
        logits = self.model(ids, labels)
        if self.noise:
            visible = (ids != self.mask_id)[..., None]
            logits = logits + self.noise * visible * torch.randn_like(logits)
        self.inputs, self.labels, self.logits = ids, labels, logits
        return logits


def test_ids_and_shapes():
    m = _model()
    assert (m.mask_id, m.class_id(0), m.class_id(2), m.null_id) == (16, 17, 19, 20)
    assert m.tok_emb.num_embeddings == K + 1 + C + 1
    assert m.head.out_features == K  # MASK / class / null can never be predicted
    assert m.pos_emb.shape == (1, L + 1, 32)  # class token + L image tokens
    ids = torch.randint(K, (5, L))
    assert m(ids, torch.arange(5) % C).shape == (5, L, K)
    assert m(ids, None).shape == (5, L, K)  # None = null class
    with pytest.raises(ValueError, match="class 3"):
        m.class_id(3)
    with pytest.raises(ValueError, match="length 11"):
        m(ids[:, :11])
    u = _model(num_classes=0)
    assert u.pos_emb.shape == (1, L, 32) and u.null_id == K + 1
    with pytest.raises(ValueError, match="num_classes=0"):
        u(ids, torch.zeros(5, dtype=torch.long))


def test_hparams_rebuild_the_same_module():
    m = _model(dropout=0.2)
    clone = MaskGIT(**m.hparams)
    clone.load_state_dict(m.state_dict())
    ids = torch.randint(K, (2, L))
    assert torch.equal(clone.eval()(ids), m.eval()(ids))
    assert clone.hparams["dropout"] == 0.2


def test_null_label_equals_minus_one_and_class_matters():
    m = _model().eval()
    ids = torch.randint(K, (4, L))
    assert torch.equal(m(ids, None), m(ids, torch.full((4,), -1)))
    assert not torch.allclose(m(ids, torch.zeros(4, dtype=torch.long)), m(ids, None))


def test_bidirectional_every_position_sees_every_other():
    m = _model(num_classes=0, dropout=0.0).eval()
    ids = torch.randint(K, (1, L))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % K
    delta = (m(ids) - m(changed)).abs().amax(-1)[0]  # (L,)
    assert (delta[:-1] > 0).all()  # position 0 depends on the last one: no causal mask


def test_loss_masks_the_scheduled_count_per_row():
    rec = Recorder(_model())
    ids, labels = torch.randint(K, (32, L)), torch.arange(32) % C
    out = maskgit_loss(rec, ids, labels, generator=torch.Generator().manual_seed(7))
    r = torch.rand(32, generator=torch.Generator().manual_seed(7))  # the first draw is r
    masked = rec.inputs == K
    assert masked.sum(1).tolist() == mask_count(r, L, "cosine").tolist()
    assert torch.equal(rec.inputs[~masked], ids[~masked])  # visible ids passed unchanged
    assert out.mask_ratio.item() == pytest.approx(masked.float().mean().item())


def test_loss_is_ce_on_masked_positions_only():
    rec = Recorder(_model())
    ids, labels = torch.randint(K, (16, L)), torch.arange(16) % C
    out = maskgit_loss(
        rec, ids, labels, label_smoothing=0.1, generator=torch.Generator().manual_seed(3)
    )
    m = rec.inputs == K
    want = F.cross_entropy(rec.logits[m], ids[m], label_smoothing=0.1)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)
    acc = (rec.logits[m].argmax(-1) == ids[m]).float().mean()
    assert out.masked_accuracy.item() == pytest.approx(acc.item())
    # huge noise on the logits of visible positions leaves the loss as it was
    model = rec.model.eval()  # no dropout, so both runs see the same function
    noisy = Recorder(model, noise_on_visible=1e4)
    a = maskgit_loss(model, ids, labels, generator=torch.Generator().manual_seed(3))
    b = maskgit_loss(noisy, ids, labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.loss, b.loss)
    c = maskgit_loss(
        noisy, ids, labels, loss_on_all=True, generator=torch.Generator().manual_seed(3)
    )
    assert c.loss.item() > 10 * a.loss.item()  # loss_on_all does look at them


def test_class_dropout_sends_labels_to_null():
    rec = Recorder(_model())
    ids, labels = torch.randint(K, (400, L)), torch.arange(400) % C
    maskgit_loss(rec, ids, labels, class_dropout=0.25, generator=torch.Generator().manual_seed(0))
    dropped = rec.labels == -1
    assert 0.18 < dropped.float().mean().item() < 0.32
    assert torch.equal(rec.labels[~dropped], labels[~dropped])
    maskgit_loss(rec, ids, labels, class_dropout=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rec.labels, labels)


def test_loss_backward_and_seeded_determinism():
    m = _model()
    ids, labels = torch.randint(K, (8, L)), torch.arange(8) % C
    torch.manual_seed(1)  # dropout draws from the global generator
    a = maskgit_loss(m, ids, labels, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = maskgit_loss(m, ids, labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss)
    a.loss.backward()
    assert m.tok_emb.weight.grad is not None and m.head.weight.grad.abs().sum() > 0
    # an untrained model starts near uniform: CE about log K
    assert abs(a.loss.item() - math.log(K)) < 0.5


def test_evaluate_prior_fixed_ratio_and_batch_independent():
    m = _model()
    m.train()
    ids, labels = torch.randint(K, (50, L)), torch.arange(50) % C
    a = evaluate_prior(m, ids, labels, mask_ratio=0.5, seed=0, batch_size=7)
    b = evaluate_prior(m, ids, labels, mask_ratio=0.5, seed=0, batch_size=50)
    assert m.training  # mode restored
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert a["val_masked_accuracy"] == b["val_masked_accuracy"]
    assert a["val_perplexity"] == pytest.approx(math.exp(a["val_loss"]))
    # by hand: the same mask (6 of 12 per row) and plain CE, in eval mode
    g = torch.Generator().manual_seed(0)
    ranks = torch.rand(50, L, generator=g).argsort(1).argsort(1)
    mask = ranks < 6
    with torch.no_grad():
        logits = m.eval()(ids.masked_fill(mask, K), labels)
    want = F.cross_entropy(logits[mask], ids[mask]).item()
    assert a["val_loss"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="no rows"):
        evaluate_prior(m, ids[:0], labels[:0])
    with pytest.raises(ValueError, match="mask_ratio"):
        evaluate_prior(m, ids, labels, mask_ratio=0.0)
