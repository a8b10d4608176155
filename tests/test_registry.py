"""The registries of vqlab.registry: lookup, one-line errors, no double claims, and that the
built-in kinds are registered by their own modules."""

import pytest

import vqlab.priors  # noqa: F401  (registers the built-in priors)
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
