"""Fuzzed config keys, values and files: a RunConfig or a ConfigError that names the problem.

Never a raw TypeError / KeyError / AttributeError, whatever the text: an unknown key suggests
the closest valid one, a value that does not parse names the expected type, and a
contradiction is refused by ``load_config`` itself, i.e. before any run starts.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vqlab.config import (
    ConfigError,
    RunConfig,
    build_config,
    closest_key,
    edit_distance,
    load_config,
    valid_keys,
)

KEYS = valid_keys()


def _types() -> dict[str, typing.Any]:
    """Dotted key -> annotated type, read from the dataclasses themselves."""
    out = {}
    for f in dataclasses.fields(RunConfig):
        typ = typing.get_type_hints(RunConfig)[f.name]
        if dataclasses.is_dataclass(typ):
            hints = typing.get_type_hints(typ)
            out.update({f"{f.name}.{g.name}": hints[g.name] for g in dataclasses.fields(typ)})
        else:
            out[f.name] = typ
    return out


TYPES = _types()


def _base(typ: typing.Any) -> typing.Any:
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return args[0] if args else typ


def _config_or_config_error(fn, *args) -> RunConfig | ConfigError:
    """Run ``fn``; anything but a RunConfig or a one-line ConfigError fails the test."""
    try:
        cfg = fn(*args)
    except ConfigError as err:
        assert str(err).strip() and "\n" not in str(err).strip(), repr(str(err))
        return err
    assert isinstance(cfg, RunConfig)
    return cfg


KEY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="="), max_size=24)


# --------------------------------------------------------------------------------------- keys
@settings(max_examples=60)
@given(key=st.one_of(KEY_TEXT, st.builds(".".join, st.lists(KEY_TEXT, min_size=2, max_size=4))))
def test_unknown_keys_are_config_errors(key):
    assume(key.strip() not in KEYS)
    err = _config_or_config_error(load_config, None, [f"{key}=1"])
    assert isinstance(err, ConfigError)
    assert "unknown config key" in str(err) or "is a group of keys" in str(err)
    assert "Valid keys" in str(err) or "give one of" in str(err)


@st.composite
def typos(draw):
    """A valid key with one character inserted, deleted or replaced."""
    key = draw(st.sampled_from(KEYS))
    pos = draw(st.integers(0, len(key) - 1))
    ch = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_."))
    edit = draw(st.sampled_from(["insert", "delete", "replace"]))
    if edit == "insert":
        return key[:pos] + ch + key[pos:]
    if edit == "delete":
        return key[:pos] + key[pos + 1 :]
    return key[:pos] + ch + key[pos + 1 :]


@settings(max_examples=60)
@given(typo=typos())
def test_a_one_character_typo_gets_a_close_suggestion(typo):
    assume(typo not in KEYS and typo not in ("data", "model", "vq", "train"))
    err = _config_or_config_error(load_config, None, [f"{typo}=1"])
    assert isinstance(err, ConfigError)
    suggestion = closest_key(typo)
    assert suggestion in KEYS and f"did you mean {suggestion!r}" in str(err)
    # as close as the key it came from, or the same field name in another group
    same_leaf = suggestion.rsplit(".", 1)[-1] == typo.rsplit(".", 1)[-1]
    assert edit_distance(typo, suggestion) <= 1 or same_leaf


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("vq.codebok_size", "vq.codebook_size"),
        ("codebook_size", "vq.codebook_size"),
        ("train.codebook_size", "vq.codebook_size"),
        ("vq.lr", "train.lr"),
        ("trian.steps", "train.steps"),
        ("sed", "seed"),
    ],
)
def test_suggestions_for_common_slips(key, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        load_config(None, [f"{key}=1"])


def test_a_group_name_is_not_a_key():
    with pytest.raises(ConfigError, match="'vq' is a group of keys, not a key; give one of vq."):
        load_config(None, ["vq=3"])
    with pytest.raises(ConfigError, match="'train' is a group"):
        build_config({"train": None})


# ------------------------------------------------------------------------------------- values
@settings(max_examples=60)
@given(key=st.sampled_from(KEYS), text=st.text(max_size=16))
def test_any_text_for_any_key_parses_or_names_the_type(key, text):
    result = _config_or_config_error(load_config, None, [f"{key}={text}"])
    base = _base(TYPES[key])
    if isinstance(result, ConfigError):
        message = str(result)
        if f"{key} expects" in message:  # a parse failure: names the type
            assert base.__name__ in message
        return
    value = result.flat()[key]
    if value is not None:
        assert type(value) is base, (key, value)
    if base is float and value is not None:
        assert math.isfinite(value)


@settings(max_examples=60)
@given(
    key=st.sampled_from([k for k in KEYS if _base(TYPES[k]) in (int, float)]),
    special=st.sampled_from(["nan", "inf", "-inf", "1e400", "NaN", " 1 ", "1_0", "0x1", "1e3"]),
)
def test_special_number_text(key, special):
    result = _config_or_config_error(load_config, None, [f"{key}={special}"])
    if isinstance(result, RunConfig):
        value = result.flat()[key]
        assert value is None or math.isfinite(value)
    elif special.strip().lower() in ("nan", "inf", "-inf", "1e400"):
        assert f"{key} expects" in str(result) or "must" in str(result)


YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=60)
@given(key=st.sampled_from(KEYS), value=YAML_VALUES)
def test_any_yaml_value_for_any_key_is_checked(key, value):
    result = _config_or_config_error(build_config, {key: value})
    if isinstance(result, RunConfig):
        got = result.flat()[key]
        base = _base(TYPES[key])
        assert got is None or type(got) is base
        assert not (isinstance(got, float) and not math.isfinite(got))


@settings(max_examples=60)
@given(text=st.text(max_size=60))
def test_any_file_text_loads_or_is_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    _config_or_config_error(load_config, path)


@settings(max_examples=60)
@given(tree=st.dictionaries(st.sampled_from(["data", "model", "vq", "train", "seed"]), YAML_VALUES))
def test_any_yaml_tree_loads_or_is_a_config_error(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    _config_or_config_error(load_config, path)


def test_unreadable_files(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    (tmp_path / "tag.yaml").write_text("seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):  # safe_load: no code runs
        load_config(tmp_path / "tag.yaml")
    (tmp_path / "leaf.yaml").write_text("seed: {}\n")
    with pytest.raises(ConfigError, match="seed expects int"):
        load_config(tmp_path / "leaf.yaml")


# ------------------------------------------------------------------------------ contradictions
@settings(max_examples=60)
@given(steps=st.integers(1, 10**6), pretrain=st.integers(0, 10**6))
def test_deferred_needs_a_vq_phase(steps, pretrain):
    sets = ["train.strategy=deferred", f"train.steps={steps}", f"train.pretrain_steps={pretrain}"]
    if pretrain >= steps:
        with pytest.raises(ConfigError, match=f"pretrain_steps={pretrain} must be < train.steps"):
            load_config(None, sets)
    else:
        assert load_config(None, sets).train.pretrain_steps == pretrain


@settings(max_examples=60)
@given(k=st.integers(-(10**6), 0))
def test_codebook_size_below_one(k):
    with pytest.raises(ConfigError, match="vq.codebook_size must be > 0"):
        load_config(None, [f"vq.codebook_size={k}"])


@settings(max_examples=60)
@given(decay=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)))
def test_decay_outside_the_open_unit_interval(decay):
    with pytest.raises(ConfigError, match="vq.decay"):
        load_config(None, [f"vq.decay={decay!r}"])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["vq.init_samples=10", "vq.codebook_size=64"], "init_samples=10 is smaller"),
        (["vq.eps=0"], "vq.eps must be > 0"),
        (["vq.beta=-1"], "vq.beta must be >= 0"),
        (["vq.simvq=true"], "needs vq.update=grad"),
        (["train.lr=0"], "train.lr must be > 0"),
        (["train.batch_size=0"], "train.batch_size must be > 0"),
        (["train.steps=-5"], "train.steps must be > 0"),
        (["model.downsample=3"], "power of two"),
        (["model.downsample=4", "model.channel_mult=1,2"], "needs 3"),
        (["data.name=cifar10"], "needs data.path"),
        (["data.std=0"], "data.std must be > 0"),
        (["data.peaks=0"], "data.peaks must be > 0"),
        (["device=tpu"], r"device='tpu' is not valid; choose one of \['auto', 'cpu', 'cuda'\]"),
        (["seed=1e30"], "fits in 64 bits"),
        (["train.lr=nan"], "finite float"),
    ],
)
def test_contradictions_are_refused_at_load_time(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("", "beta", 4),
        ("beta", "", 4),
        ("beta", "beta", 0),
        ("beta", "betta", 1),  # one insertion
        ("decay", "dcay", 1),  # one deletion
        ("codebook_size", "codebook_sise", 1),  # one substitution
        ("kitten", "sitting", 3),  # the textbook pair: 2 substitutions and 1 insertion
        ("flaw", "lawn", 2),
        ("vq.beta", "vq.atbe", 4),  # a transposition is two edits in Levenshtein distance
    ],
)
def test_edit_distance_known_pairs(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected
