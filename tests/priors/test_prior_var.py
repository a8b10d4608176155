"""VAR prior: block-causal mask, teacher forcing == step-by-step sampling inputs, KV cache,
guidance, top-k / top-p, seeds, and a toy model that learns one id row per class."""

import math

import pytest
import torch

from vqlab.priors.sampling import sample_codes
from vqlab.priors.var import VAR, block_causal_mask, evaluate_var, teacher_inputs, var_loss
from vqlab.priors.var_sampling import cfg_weight, filter_logits, var_logits_stepwise, var_sample
from vqlab.quantizers.multiscale import MultiScaleQuantizer

K, D, C = 8, 4, 3
SCALES = (1, 2, 3)
L = sum(p * p for p in SCALES)


def _quantizer(scales=SCALES):
    torch.manual_seed(0)  # fixed random codebook and phi convs
    return MultiScaleQuantizer(D, K, scales, quant_resi=0.5).eval()


def _model(scales=SCALES, num_classes=C, **kw):
    torch.manual_seed(1)
    m = VAR(K, scales, D, num_classes, depth=2, width=32, heads=2, **kw)
    # AdaLN starts at zero (the identity); give it weights so conditioning really matters here
    for ada in [b.ada for b in m.blocks] + [m.head_ada]:
        torch.nn.init.normal_(ada[-1].weight, std=0.05)
    return m.eval()


def _ids(n, seed=0):
    return torch.randint(K, (n, L), generator=torch.Generator().manual_seed(seed))


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _scale_slices():
    out, start = [], 0
    for p in SCALES:
        out.append(slice(start, start + p * p))
        start += p * p
    return out


def test_block_causal_mask_by_hand():
    t, f = True, False
    want = torch.tensor(
        [[t, f, f, f, f]] + [[t, t, t, t, t]] * 4  # 1x1 sees itself; the 2x2 sees all five
    )
    assert torch.equal(block_causal_mask((1, 2)), want)
    m = VAR(K, (1, 2), D, depth=1, width=16, heads=2)
    assert torch.equal(m.attn_mask, want)


def test_checkpoint_holds_only_the_prior():
    m = _model()
    keys = set(m.state_dict())
    assert not any("codebook" in k or "phis" in k or "attn_mask" in k for k in keys)
    again = VAR(**m.hparams)
    again.load_state_dict(m.state_dict())  # strict: the hparams rebuild the same module


@pytest.mark.parametrize("use_cache", [True, False])
def test_teacher_forced_logits_equal_stepwise(use_cache):
    m, q = _model(), _quantizer()
    ids, labels = _ids(5), torch.tensor([0, 1, 2, -1, 1])
    forced = m(teacher_inputs(q, ids), labels)  # (B, L, K): what var_loss trains on
    assert torch.equal(teacher_inputs(q, ids), q.teacher_forcing_input(ids))
    stepwise = var_logits_stepwise(m, q, ids, labels, use_cache=use_cache)
    assert forced.shape == stepwise.shape == (5, L, K)
    torch.testing.assert_close(stepwise, forced, atol=1e-5, rtol=1e-5)


def test_logits_of_a_scale_see_only_coarser_ids():
    m, q = _model(), _quantizer()
    ids, labels = _ids(4), torch.arange(4) % C
    s1, s2, s3 = _scale_slices()
    base = m(q.teacher_forcing_input(ids), labels)
    finest = ids.clone()
    finest[:, s3] = (finest[:, s3] + 1) % K
    assert torch.equal(m(q.teacher_forcing_input(finest), labels), base)  # never an input
    middle = ids.clone()
    middle[:, s2] = (middle[:, s2] + 1) % K
    moved = m(q.teacher_forcing_input(middle), labels)
    assert torch.equal(moved[:, : s2.stop], base[:, : s2.stop])  # scales 1, 2 are unchanged
    assert not torch.allclose(moved[:, s3], base[:, s3])  # scale 3 reads scale 2's codes


def _redraw(m, q, sampled, labels, *, cfg, top_k, top_p, temperature, generator):
    """The draws a sampler should have made for ``sampled``: from the teacher-forced logits
    (which at scale k depend only on the sampled ids of scales < k), guided, filtered, drawn
    scale by scale with the same generator."""
    x = q.teacher_forcing_input(sampled)
    cond = m(x, labels)
    uncond = m(x, torch.full_like(labels, -1))
    out = []
    for k, s in enumerate(_scale_slices()):
        w = cfg * k / (len(SCALES) - 1)
        logits = (1 + w) * cond[:, s] - w * uncond[:, s] if cfg > 0 else cond[:, s]
        out.append(sample_codes(filter_logits(logits / temperature, top_k, top_p), 1.0, generator))
    return torch.cat([ids for ids, _ in out], dim=1)


@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_samples_follow_the_guided_logits(cfg, monkeypatch):
    m, q = _model(), _quantizer()
    labels = torch.arange(6) % C
    knobs = {"cfg": cfg, "top_k": 5, "top_p": 0.9, "temperature": 0.8}
    batches = []
    condition = m.condition
    monkeypatch.setattr(m, "condition", lambda lab, b: batches.append(b) or condition(lab, b))
    s = var_sample(m, q, 6, labels=labels, generator=_g(3), **knobs)
    # cfg = 0 is plain conditional sampling: no unconditional (doubled) pass at all
    assert batches == [12 if cfg > 0 else 6]
    monkeypatch.undo()
    assert torch.equal(_redraw(m, q, s, labels, generator=_g(3), **knobs), s)


def test_cfg_ramps_from_zero_to_w():
    assert [cfg_weight(k, 4, 1.5) for k in range(4)] == [0.0, 0.5, 1.0, 1.5]
    assert cfg_weight(0, 1, 2.0) == 2.0  # one scale: it is the last one


@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_kv_cache_sampling_equals_recomputing(cfg):
    m, q = _model(), _quantizer()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    knobs = {"labels": labels, "cfg": cfg, "top_k": 6, "top_p": 0.95, "batch_size": 4}
    cached = var_sample(m, q, 7, use_cache=True, generator=_g(5), **knobs)
    recomputed = var_sample(m, q, 7, use_cache=False, generator=_g(5), **knobs)
    assert torch.equal(cached, recomputed)


def test_top_k_1_is_greedy():
    m, q = _model(), _quantizer()
    labels = torch.arange(6) % C
    s = var_sample(m, q, 6, labels=labels, top_k=1, generator=_g(0))
    assert torch.equal(var_sample(m, q, 6, labels=labels, top_k=1, generator=_g(9)), s)
    argmax = m(q.teacher_forcing_input(s), labels).argmax(-1)  # each scale given its past
    assert torch.equal(s, argmax)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)
    logits = probs.log()
    kept = {
        p: torch.isfinite(filter_logits(logits, top_p=p)).nonzero().flatten().tolist()
        for p in (0.3, 0.5, 0.75, 0.85, 0.97, 0.0)
    }
    assert kept[0.3] == [1]  # the most probable code alone already holds 0.5 >= 0.3
    assert kept[0.5] == [1]  # exactly p: the set is complete
    assert kept[0.75] == [1, 3]
    assert kept[0.85] == [0, 1, 3]
    assert kept[0.97] == [0, 1, 2, 3]
    assert kept[0.0] == [0, 1, 2, 3]  # off
    top2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(top2).nonzero().flatten().tolist() == [1, 3]
    assert torch.equal(filter_logits(logits, top_k=2)[[1, 3]], logits[[1, 3]])  # kept as they are


@pytest.mark.parametrize("num_classes", [0, C])
def test_samples_are_codes_only(num_classes):
    m, q = _model(num_classes=num_classes), _quantizer()
    with torch.no_grad():
        m.head.bias.fill_(-5.0)  # a flat, near-uniform head: every code gets drawn
    assert m.head.out_features == K  # no class or null id can ever be sampled
    labels = torch.arange(200) % C if num_classes else None
    s = var_sample(m, q, 200, labels=labels, temperature=3.0, generator=_g(1))
    assert s.shape == (200, L) and s.dtype == torch.long
    assert ((s >= 0) & (s < K)).all() and len(s.unique()) == K


def test_seeded_sampling_is_reproducible():
    m, q = _model(), _quantizer()
    a = var_sample(m, q, 5, labels=torch.arange(5) % C, cfg=1.0, generator=_g(2))
    b = var_sample(m, q, 5, labels=torch.arange(5) % C, cfg=1.0, generator=_g(2))
    c = var_sample(m, q, 5, labels=torch.arange(5) % C, cfg=1.0, generator=_g(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert m.training is False and var_sample(m, q, 0).shape == (0, L)


def test_loss_eval_and_class_dropout():
    m, q = _model(dropout=0.0), _quantizer()
    ids, labels = _ids(10), torch.arange(10) % C
    plain = var_loss(m, q, ids, labels, class_dropout=0.0)
    ev = evaluate_var(m, q, ids, labels, batch_size=3)  # batches of 3, 3, 3, 1: same mean
    assert math.isclose(ev["val_loss"], plain.loss.item(), rel_tol=1e-5)
    assert math.isclose(ev["val_perplexity"], math.exp(ev["val_loss"]))
    assert math.isclose(ev["val_accuracy"], plain.accuracy.item(), rel_tol=1e-6)
    dropped = var_loss(m, q, ids, labels, class_dropout=1.0)  # every label becomes the null
    torch.testing.assert_close(dropped.loss, var_loss(m, q, ids, None, class_dropout=0.0).loss)
    assert not torch.allclose(dropped.loss, plain.loss)
    plain.loss.backward()
    assert all(p.grad is None for p in q.parameters())  # the quantizer stays frozen


def test_a_quantizer_of_other_scales_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        var_sample(_model(), _quantizer((1, 3)), 2)


def test_learns_one_row_per_class():
    """Toy VAR over scales (1, 2): four classes, each one fixed id row; conditional samples
    must reproduce their class's row."""
    scales, classes = (1, 2), 4
    q = _quantizer(scales)
    rows = torch.randint(K, (classes, 5), generator=_g(7))  # (C, L) the class's ids
    torch.manual_seed(0)
    m = VAR(K, scales, D, classes, depth=2, width=64, heads=4, dropout=0.0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    g = _g(1)
    m.train()
    for _ in range(300):
        labels = torch.randint(classes, (64,), generator=g)
        out = var_loss(m, q, rows[labels], labels, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    labels = torch.arange(200) % classes
    s = var_sample(m, q, 200, labels=labels, generator=_g(2))
    hit = (s == rows[labels]).all(dim=1).float().mean().item()
    assert hit >= 0.9, f"only {hit:.0%} of conditional samples are their class's row"
