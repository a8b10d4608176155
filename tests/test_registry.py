"""The registries of vqlab.registry: lookup, one-line errors, no double claims, and that the
built-in kinds are registered by their own modules."""

import numpy as np
import pytest

import vqlab.priors  # noqa: F401  (registers the built-in priors)
from vqlab import load_config
from vqlab.errors import ConfigError
from vqlab.priors.maskgit import MaskGIT
from vqlab.priors.var import VAR
from vqlab.registry import PRIORS, PriorEntry, Registry


def test_lookup_and_errors_name_the_registered_kinds():
    reg = Registry("thing.kind")
    entry = object()
    assert reg.register("a", entry) is entry
    assert reg.get("a") is entry and "a" in reg and list(reg) == ["a"]
    with pytest.raises(ConfigError, match=r"thing.kind='b' is not valid; choose one of \['a'\]"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", object())
    reg.unregister("a")
    assert reg.names() == ()


def test_builtin_priors_register_themselves_with_their_class_kind():
    assert set(PRIORS.names()) >= {"maskgit", "var"}
    assert MaskGIT.kind == "maskgit" and VAR.kind == "var"
    assert PRIORS.get("var").needs_quantizer and not PRIORS.get("maskgit").needs_quantizer
    assert isinstance(PRIORS.get("maskgit"), PriorEntry)


@pytest.fixture
def toys():
    """The toy kinds of tests/toy_kinds.py, registered for one test."""
    import toy_kinds

    toy_kinds.register()
    yield toy_kinds
    toy_kinds.unregister()


SMALL = ["data.samples_per_peak=40", "data.test_samples_per_peak=10", "model.hidden=16",
         "vq.codebook_size=16", "train.steps=12", "train.pretrain_steps=6",
         "train.eval_every=6", "train.log_every=6", "train.batch_size=64"]  # fmt: skip


def test_a_toy_quantizer_is_one_file_plus_its_registration(toys, tmp_path):
    """vq.kind=frozen, from tests/toy_kinds.py alone: validated, built, trained by the engine
    under both schedules, and read back from its checkpoint."""
    from vqlab import train
    from vqlab.models.checkpoint import load_checkpoint

    for strategy in ("standard", "deferred"):
        cfg = load_config(None, [*SMALL, "vq.kind=frozen", f"train.strategy={strategy}"])
        summary = train(cfg, tmp_path / strategy, progress=False)
        assert summary["codebook_size"] == 16 and 1.0 <= summary["perplexity"] <= 16.0
        model, config, _ = load_checkpoint(tmp_path / strategy)
        assert isinstance(model.quantizer, toys.FrozenCodes) and config.vq.kind == "frozen"
    # another kind's options are refused by the registry's declarations, not a hand-kept list
    with pytest.raises(ConfigError, match="frozen has none of the single-scale layer's"):
        load_config(None, [*SMALL, "vq.kind=frozen", "vq.dead_code_threshold=1"])
    assert "frozen" in str(pytest.raises(ConfigError, load_config, None, ["vq.kind=x"]).value)


def test_a_toy_prior_is_one_file_plus_its_registration(toys, tmp_path):
    """prior.kind=unigram, from tests/toy_kinds.py alone: a run folder of its config and
    weights is loaded and sampled by ``vqlab sample`` (the prior's own sample method)."""
    import torch
    from safetensors.torch import save_file

    from vqlab.config.parse import save_config
    from vqlab.priors.pretrained import load_prior
    from vqlab.priors.tokens import save_tokens
    from vqlab.runs.sample import sample_run

    ids = np.array([[0, 1, 2, 3], [0, 1, 3, 2]])  # one 2x2 grid each
    save_tokens(tmp_path / "t.npz", train_ids=ids, test_ids=ids, codebook_size=4, scales=[2])
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    cfg = load_config(None, ["task=prior", "data.name=tokens", f"data.path={tmp_path / 't.npz'}",
                             "prior.kind=unigram"])  # fmt: skip
    save_config(cfg, run / "config.yaml")
    logits = torch.full((4, 4), -30.0)
    logits[[0, 1, 2, 3], [3, 2, 1, 0]] = 30.0  # position i holds code 3 - i
    save_file({"logits": logits}, str(run / "checkpoint" / "model.safetensors"))
    assert isinstance(load_prior(run).model, toys.Unigram)
    info = sample_run(run, 5, tmp_path / "s", labels="none", progress=False)
    samples = np.load(tmp_path / "s" / "samples.npz")["ids"]
    assert samples.tolist() == [[3, 2, 1, 0]] * 5 and info["top_k"] == 0
