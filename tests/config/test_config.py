from pathlib import Path

import pytest

from vqlab.config import ConfigError, RunConfig, load_config, save_config, valid_keys

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["vq.codebook_size=64", "train.strategy=deferred", "train.lr=3e-4"])
    assert cfg.vq.codebook_size == 64 and isinstance(cfg.vq.codebook_size, int)
    assert cfg.train.strategy == "deferred"
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert load_config(None, ["data.path=none"]).data.path is None
    assert load_config(None, ["train.steps=1e4"]).train.steps == 10000


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    assert isinstance(load_config(path), RunConfig)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'vq.codebook_size'"):
        load_config(None, ["vq.codebok_size=3"])
    with pytest.raises(ConfigError, match="unknown config key 'nonsense'"):
        load_config(None, ["nonsense=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=abc", "expects an int"),
        ("vq.beta=high", "expects a float"),
        ("vq.decay=1.5", r"decay must lie in \(0, 1\)"),
        ("vq.codebook_size=0", "codebook_size must be > 0"),
        ("vq.update=adam", "choose one of"),
        ("train.strategy=late", "choose one of"),
        ("model.kind=transformer", "choose one of"),
        ("vq.codebook_size", "KEY=VALUE"),
        ("data.name=cifar10", "needs data.path"),
        ("device=tpu", "choose one of"),
    ],
)
def test_bad_values_are_refused_with_a_named_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_contradiction_refused_before_work():
    with pytest.raises(ConfigError, match="pretrain_steps=100 must be < train.steps=100"):
        load_config(
            None, ["train.strategy=deferred", "train.steps=100", "train.pretrain_steps=100"]
        )
    with pytest.raises(ConfigError, match="init_samples=10 is smaller"):
        load_config(None, ["vq.init_samples=10", "vq.codebook_size=64"])


def test_yaml_types_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vq:\n  codebook_size: [1, 2]\n")
    with pytest.raises(ConfigError, match="vq.codebook_size expects int"):
        load_config(bad)
    bad.write_text("vq: {beta: true}\n")
    with pytest.raises(ConfigError, match="vq.beta expects float"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_dotted_keys_in_yaml_and_roundtrip(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("vq.codebook_size: 32\nseed: 3\n")
    cfg = load_config(f, ["seed=4"])
    assert cfg.vq.codebook_size == 32 and cfg.seed == 4
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    assert set(cfg.flat()) == set(valid_keys())


def test_the_configs_quantizer_vocabulary_is_the_layers():
    """config spells the quantizers' choices itself (reading a config loads no torch); they must
    stay the tuples the layers accept."""
    from vqlab.config import generation, schema
    from vqlab.priors.schedules import SCHEDULES
    from vqlab.quantizers import QUANTIZERS, multiscale, rotation, vq
    from vqlab.registry import PRIORS

    # the built-in kinds, a subset of the registries (a plug-in kind is checked there)
    assert set(schema.QUANTIZER_KINDS) <= set(QUANTIZERS)
    assert set(generation.PRIOR_KINDS) <= set(PRIORS.names())
    assert schema.LOSS_ON == multiscale.LOSS_ON
    assert schema.INIT_WAYS == multiscale.INIT_WAYS
    assert schema.ESTIMATORS == tuple(rotation.ESTIMATORS)
    assert schema.UPDATES == vq.UPDATES and schema.SEARCHES == vq.SEARCHES
    assert schema.INITS == vq.INIT_METHODS
    assert generation.MASK_SCHEDULES == tuple(SCHEDULES)


def test_reading_and_checking_a_config_loads_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom vqlab.config import load_config\n"
        "load_config(None, ['vq.codebook_size=8', 'task=prior', 'data.name=tokens',"
        " 'data.path=x.npz', 'prior.mask_schedule=arccos'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
