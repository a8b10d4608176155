"""One registry per kind of component, at the bottom of the house, filled by the implementations.

As timm's ``_registry.py``: the module that defines a quantizer (or a prior) registers it under
its config name, with what the rest of vqlab needs to know about it. The registry then both
validates the config value (``vq.kind``, ``prior.kind``: an unknown name is a one-line error
naming the registered ones) and builds the object. Nothing else keeps a list of the kinds, so
adding one is one new file plus its registration.

- :data:`QUANTIZERS` (``vq.kind``): :class:`QuantizerEntry`, registered in each layer's module
  (:mod:`vqlab.quantizers.vq`, ``fsq``, ``lfq``, ``multiscale``);
- :data:`PRIORS` (``prior.kind``): :class:`PriorEntry`, registered beside each prior's sampler
  (:mod:`vqlab.priors.sampling` for MaskGIT, :mod:`vqlab.priors.var_sampling` for VAR).

The packages ``vqlab.quantizers`` and ``vqlab.priors`` import every built-in kind, so a registry
read through them is complete. The entries hold callables only; the config types appear in
their signatures by name, so this leaf imports nothing of vqlab but the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vqlab.errors import ConfigError


@dataclass(frozen=True)
class QuantizerEntry:
    """What vqlab needs to know about a quantizer kind.

    build: ``(vq: VQConfig, model: ModelConfig, input_shape, channel_dim) -> nn.Module``; the
        layer for ``model.latent_dim``-dimensional encoder outputs, D on ``channel_dim``.
    check: ``(vq: VQConfig) -> dict``: refuses (``ConfigError``) values of its own options that
        have no meaning, and returns the fields it resolves, which the config then holds. None =
        nothing to check. The config checks the built-in kinds itself without loading torch
        (``QUANTIZER_KINDS`` of :mod:`vqlab.config.schema`, issue 25); a registered kind beyond
        them is checked through its entry.
    options: the ``vq.*`` fields only this kind (among the registered ones) reads; another
        kind refuses them set away from their defaults.
    fits_codebook: whether the layer learns a codebook that k-means fits (then
        ``vq.init_samples`` must cover ``vq.codebook_size``); a fixed grid does not.
    title: the layer in words, for messages (``"multi-scale layer"``).
    """

    build: Callable[..., Any]
    check: Callable[[Any], dict[str, Any]] | None = None
    options: tuple[str, ...] = ()
    fits_codebook: bool = True
    title: str = ""


@dataclass(frozen=True)
class PriorEntry:
    """What vqlab needs to know about a prior kind.

    build: ``(prior: PriorConfig, tokens: TokenData, quantizer) -> nn.Module``; ``quantizer`` is
        the tokenizer's frozen quantizer when ``needs_quantizer``, else None.
    sample: ``(model, n, settings: SampleConfig, prior: PriorConfig, *, labels, generator,
        progress, quantizer) -> (n, L) ids``: the prior's own decoding, from the sampler keys it
        reads (the prior's ``sample`` method calls it).
    needs_quantizer: whether the prior builds its inputs with the tokenizer's quantizer (VAR).
    defaults: what ``prior.label_smoothing``, ``sample.top_k`` and ``sample.top_p`` left unset
        become for this kind (the built-in kinds' are ``PRIOR_DEFAULTS`` of
        :mod:`vqlab.config.generation`, which reads them without loading torch).
    """

    build: Callable[..., Any]
    sample: Callable[..., Any]
    needs_quantizer: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)


E = TypeVar("E")


class Registry(Generic[E]):
    """Name -> entry for one config key (``vq.kind``); see the module docstring."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._entries: dict[str, E] = {}

    def register(self, name: str, entry: E) -> E:
        """Add ``name``; registering a taken name is an error (two modules claiming one kind)."""
        if name in self._entries:
            raise ValueError(f"{self.key}={name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register a toy kind)."""
        del self._entries[name]

    def get(self, name: str) -> E:
        """The entry of ``name``, or a one-line ``ConfigError`` naming the registered ones."""
        if name not in self._entries:
            raise ConfigError(
                f"{self.key}={name!r} is not valid; choose one of {list(self._entries)}"
            )
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, E]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))


QUANTIZERS: Registry[QuantizerEntry] = Registry("vq.kind")
PRIORS: Registry[PriorEntry] = Registry("prior.kind")
