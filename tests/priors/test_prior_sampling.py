"""MaskGIT decoding: no MASK left, known tokens kept, special ids never sampled, CFG, seeds."""

import pytest
import torch
from torch import nn

from vqlab.priors.maskgit import MaskGIT
from vqlab.priors.sampling import maskgit_sample

K, L, C = 16, 12, 3


def _model(num_classes=C):
    torch.manual_seed(0)
    return MaskGIT(K, L, num_classes=num_classes, depth=1, width=32, heads=2)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("steps", [1, 2, 8, 20])  # 20 > L: steps run out of tokens to reveal
@pytest.mark.parametrize("schedule", ["cosine", "arccos", "linear"])
def test_no_mask_left_and_codes_in_range(steps, schedule):
    m = _model()
    s = maskgit_sample(
        m,
        9,
        labels=torch.arange(9) % C,
        steps=steps,
        schedule=schedule,
        generator=_g(),
        batch_size=4,
    )
    assert s.shape == (9, L) and s.dtype == torch.long
    assert ((s >= 0) & (s < K)).all()


class Spy(nn.Module):
    """A model stand-in that counts, per call, how many positions are still MASK."""

    def __init__(self, model):
        super().__init__()
        self.model, self.masked = model, []
        for name in ("codebook_size", "seq_len", "num_classes", "mask_id"):
            setattr(self, name, getattr(model, name))

    def forward(self, ids, labels=None):
        self.masked.append((ids == self.mask_id).sum(1).tolist())
        return self.model(ids, labels)


def test_schedule_of_revealed_tokens():
    spy = Spy(_model())
    maskgit_sample(spy, 2, steps=4, schedule="linear", generator=_g())
    # L=12, linear: floor(12 * (1 - (t+1)/4)) stays masked after step t -> 12, 9, 6, 3, then 0
    assert spy.masked == [[12, 12], [9, 9], [6, 6], [3, 3]]
    spy.masked.clear()
    maskgit_sample(spy, 1, steps=20, generator=_g())  # more steps than tokens: 1 per step
    counts = [c[0] for c in spy.masked]
    assert counts[:12] == list(range(12, 0, -1)) and all(c == 0 for c in counts[12:])


def test_known_tokens_are_kept():
    m = _model()
    init = torch.full((6, L), m.mask_id)
    init[:, ::2] = torch.randint(K, (6, L // 2), generator=_g(1))  # half known
    init[0] = torch.randint(K, (L,), generator=_g(2))  # one row fully known
    s = maskgit_sample(m, 6, labels=torch.arange(6) % C, init_ids=init, generator=_g())
    known = init != m.mask_id
    assert torch.equal(s[known], init[known])
    assert torch.equal(s[0], init[0]) and (s < K).all()


class Cheater(nn.Module):
    """Returns logits over K + extra ids that make every id >= K overwhelmingly likely."""

    def __init__(self, extra=5):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.codebook_size, self.seq_len, self.num_classes, self.mask_id = K, L, C, K
        self.extra = extra

    def forward(self, ids, labels=None):
        logits = torch.zeros(*ids.shape, K + self.extra)
        logits[..., K:] = 1e6
        logits[..., 3] = 1.0  # the best of the real codes
        return logits


def test_special_ids_never_sampled_even_when_favoured():
    s = maskgit_sample(Cheater(), 8, labels=torch.arange(8) % C, generator=_g())
    assert (s < K).all()
    s = maskgit_sample(Cheater(), 8, labels=torch.arange(8) % C, cfg=2.0, generator=_g())
    assert (s < K).all()
    # the real model: its head only has K outputs
    assert _model().head.out_features == K


def test_zero_probability_codes_are_never_sampled():
    class OnlyTwo(Cheater):
        def forward(self, ids, labels=None):
            logits = torch.full((*ids.shape, K), -torch.inf)
            logits[..., 5] = 0.0
            logits[..., 9] = 0.0
            return logits

    s = maskgit_sample(OnlyTwo(extra=0), 200, generator=_g())
    assert set(s.unique().tolist()) == {5, 9}


def test_cfg_zero_is_conditional_sampling_bit_for_bit():
    m = _model()
    labels = torch.arange(10) % C
    plain = maskgit_sample(m, 10, labels=labels, generator=_g(4))
    zero = maskgit_sample(m, 10, labels=labels, cfg=0.0, generator=_g(4))
    assert torch.equal(plain, zero)
    guided = maskgit_sample(m, 10, labels=labels, cfg=3.0, generator=_g(4))
    assert not torch.equal(plain, guided) and (guided < K).all()


def test_cfg_combines_cond_and_null_logits():
    class Fixed(Cheater):
        # cond favours code 1 over code 0, uncond (label -1) favours code 1 far more:
        # (1 + w) cond - w uncond with w = 1 gives code 0 a logit of 20, code 1 of -8
        def forward(self, ids, labels=None):
            logits = torch.zeros(*ids.shape, K)
            cond = labels >= 0
            logits[..., 0] = torch.where(cond, 10.0, 0.0)[:, None]
            logits[..., 1] = torch.where(cond, 12.0, 32.0)[:, None]
            return logits

    labels = torch.zeros(50, dtype=torch.long)
    assert (maskgit_sample(Fixed(extra=0), 50, labels=labels, cfg=1.0, generator=_g()) == 0).all()


def test_seeded_determinism_and_mode_restored():
    m = _model()
    m.train()
    a = maskgit_sample(m, 7, labels=torch.arange(7) % C, generator=_g(9), batch_size=3)
    b = maskgit_sample(m, 7, labels=torch.arange(7) % C, generator=_g(9), batch_size=3)
    assert torch.equal(a, b) and m.training
    c = maskgit_sample(m, 7, labels=torch.arange(7) % C, generator=_g(10), batch_size=3)
    assert not torch.equal(a, c)


def test_unconditional_model_and_empty_request():
    m = _model(num_classes=0)
    assert maskgit_sample(m, 5, generator=_g(), progress=True).shape == (5, L)
    assert maskgit_sample(m, 0).shape == (0, L)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps >= 1"),
        ({"temperature": 0.0}, "temperature > 0"),
        ({"cfg": 1.0}, "cfg > 0 needs labels"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, "labels must have shape"),
        ({"init_ids": torch.zeros(4, L - 1, dtype=torch.long)}, "init_ids must be"),
        ({"init_ids": torch.full((4, L), K + 1)}, "init_ids must be in"),
        ({"schedule": "nope"}, "unknown mask schedule"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        maskgit_sample(_model(), 4, **kwargs)


def test_labels_for_unconditional_model_refused():
    with pytest.raises(ValueError, match="no classes"):
        maskgit_sample(_model(num_classes=0), 2, labels=torch.zeros(2, dtype=torch.long))
