"""The run configuration's schema: typed, validated, frozen dataclasses and their rules.

A run is described by :class:`RunConfig`, a tree of frozen dataclasses grouped by concern. Keys are
dotted (``vq.codebook_size``) in YAML files and in ``--set`` overrides alike. Unknown keys, values
of the wrong type and contradictions are refused with a :class:`ConfigError` before any work
starts; the message names the problem and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from vqlab.config.checks import check_choice, check_positive
from vqlab.config.generation import LossConfig, PriorConfig, SampleConfig, resolve_sampler
from vqlab.errors import ConfigError

# The quantizers' vocabulary, spelled here so that reading and checking a config does not load
# torch (the CLI answers a bad --set before the heavy imports; issue 25).
# tests/config/test_config.py checks each against the tuple the quantizer layer itself accepts.
# QUANTIZER_KINDS are the built-in kinds only: any other vq.kind is checked by the registry.
QUANTIZER_KINDS = ("single", "multiscale", "fsq", "lfq")  # vqlab.registry.QUANTIZERS
INIT_WAYS = ("finest", "pyramid", "coarse_then_all")  # quantizers.multiscale.INIT_WAYS
LOSS_ON = ("every_scale", "final")  # quantizers.multiscale.LOSS_ON
ESTIMATORS = ("ste", "rotation")  # quantizers.rotation.ESTIMATORS
UPDATES = ("ema", "grad")  # quantizers.vq.UPDATES
SEARCHES = ("exact", "fast")  # quantizers.vq.SEARCHES
INITS = ("kmeans", "kmeans++", "random_normal", "random_uniform", "sample", "gmm", "none")

DATA_NAMES = ("gaussian_mixture", "cifar10", "image_folder", "idx", "tokens")
MODEL_KINDS = ("mlp", "conv")
# the quantizer layer: vqlab's own, or the peer library's in the same model (vqlab.quantizers.peer)
IMPLS = ("vqlab", "vector_quantize_pytorch")
# Named presets of vq.* values (``vq.recipe``), and of train.* ones under dotted keys. A preset
# fills only the fields left at their defaults, so any key set to something else wins. "best" is
# the winner of ``vqlab replicate recipes`` on CIFAR-10 (results/recipes-cpu, cpu preset, one
# seed): SimVQ under deferred quantization had the best mean rank of test MSE over K=1024 and
# 4096, though deferred + dead-code restart was within 0.5% MSE of it.
RECIPES: dict[str, dict[str, Any]] = {
    "none": {},
    "best": {"simvq": True, "update": "grad", "train.strategy": "deferred"},
}
DEVICES = ("auto", "cpu", "cuda")
# the schedules of train.strategy (:mod:`vqlab.training.schedule` obeys them; config, below
# training, owns the vocabulary)
STRATEGIES = ("standard", "deferred")
NONFINITE_ACTIONS = ("stop", "skip")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DataConfig:
    name: str = "gaussian_mixture"
    path: str | None = None
    peaks: int = 10
    dim: int = 8
    std: float = 0.5
    samples_per_peak: int = 1000
    test_samples_per_peak: int = 200
    spread: float = 10.0
    image_size: int | None = None
    test_limit: int = 0  # evaluate on the first N test samples; 0 = the whole test set

    def __post_init__(self) -> None:
        check_choice("data", "name", self.name, DATA_NAMES)
        for name in ("peaks", "dim", "samples_per_peak", "test_samples_per_peak"):
            check_positive("data", name, getattr(self, name))
        check_positive("data", "test_limit", self.test_limit, strict=False)
        check_positive("data", "std", self.std)
        check_positive("data", "spread", self.spread, strict=False)
        if self.name != "gaussian_mixture" and not self.path:
            raise ConfigError(f"data.name={self.name} needs data.path (a folder or archive)")


def parse_int_list(text: str, key: str) -> tuple[int, ...]:
    """``"1,2,3"`` (or ``"1-2-3"``, which fits inside a comma-separated ``--grid``) -> (1, 2, 3)."""
    try:
        values = tuple(int(p) for p in text.replace("-", ",").split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"{key}={text!r} must be positive integers separated by ',' or '-'")
    return values


def parse_channel_mult(text: str) -> tuple[int, ...]:
    """``"1,2,2"`` (or ``"1-2-2"``, which fits inside a comma-separated ``--grid``) -> (1, 2, 2)."""
    parts = text.replace("-", ",").split(",")
    try:
        mult = tuple(int(p) for p in parts)
    except ValueError:
        mult = ()
    if not mult or min(mult) < 1:
        raise ConfigError(
            f"model.channel_mult={text!r} must be positive integers separated by ',' or '-', "
            "e.g. 1,2,2; or empty for the default"
        )
    return mult


@dataclass(frozen=True)
class ModelConfig:
    """``kind=mlp`` reads hidden, depth; ``kind=conv`` reads width, channel_mult, downsample,
    res_blocks, attention; both read latent_dim (= D).

    conv: level ``i`` of the encoder has ``width * channel_mult[i]`` channels and there is one
    stride-2 step between levels, so ``channel_mult`` has ``log2(downsample) + 1`` entries. Empty
    means 1 at full resolution and 2 at every lower level (``1,2,2`` for downsample=4).
    ``norm_groups``: the most groups a conv GroupNorm may have (the largest divisor of its
    channels up to this). The default 32 keeps every committed run's model; at widths of 32
    channels or fewer it is one channel per group, an InstanceNorm that removes each image's
    per-channel mean (a multi-scale tokenizer's 1x1 scale then sees a near-constant input).
    """

    kind: str = "mlp"
    hidden: int = 64
    depth: int = 2
    latent_dim: int = 8
    width: int = 64
    downsample: int = 4
    channel_mult: str = ""
    res_blocks: int = 1
    attention: bool = False
    norm_groups: int = 32

    def __post_init__(self) -> None:
        check_choice("model", "kind", self.kind, MODEL_KINDS)
        for name in ("hidden", "depth", "latent_dim", "width", "res_blocks", "norm_groups"):
            check_positive("model", name, getattr(self, name))
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ConfigError(
                f"model.downsample must be a power of two (1, 2, 4, 8, 16, ...); "
                f"got {self.downsample}"
            )
        self.channel_multipliers()  # raises on a malformed or mismatched channel_mult

    def channel_multipliers(self) -> tuple[int, ...]:
        """The conv channel multipliers, one per resolution level (resolving the empty default)."""
        levels = self.downsample.bit_length()  # log2(downsample) + 1 for a power of two
        if not self.channel_mult.strip():
            return (1,) + (2,) * (levels - 1)
        mult = parse_channel_mult(self.channel_mult)
        if len(mult) != levels:
            raise ConfigError(
                f"model.channel_mult={self.channel_mult!r} has {len(mult)} levels, but "
                f"model.downsample={self.downsample} needs {levels} (one more than the "
                f"{levels - 1} stride-2 steps); give {levels} multipliers or leave it empty"
            )
        return mult


@dataclass(frozen=True)
class VQConfig:
    """The quantizer (:class:`~vqlab.quantizers.vq.VectorQuantizer`) and its initialisation.

    Recipes against collapse, all off by default:
    - ``dead_code_threshold``: re-seed codes whose EMA usage falls below it (0 = off).
    - ``estimator``: ``ste`` (straight-through) or ``rotation`` (the rotation trick).
    - ``normalize``: cosine codes (L2-normalised search vectors and codes).
    - ``code_dim``: codes of this dimension behind learned projections (0 = ``model.latent_dim``,
      no projection).
    - ``simvq``: codes ``C W`` (frozen ``C``, learned ``W``); needs ``update=grad`` and no
      dead-code restart.
    - ``impl``: ``vqlab`` or ``vector_quantize_pytorch`` (the peer library's layer in the same
      model, for comparisons; the other keys map onto its arguments, see
      :mod:`vqlab.quantizers.peer`).
    - ``search``: ``exact`` or ``fast`` nearest-code search (fast: bf16 tensor-core scoring on
      CUDA, certified per row, the same codes; see :func:`vqlab.quantizers.nearest_code`).
    - ``recipe``: a named preset from ``RECIPES`` that fills the fields left at their defaults.
      A field set to a non-default value wins; a field set explicitly *to its default* is
      indistinguishable from an unset one and takes the preset's value (use ``recipe=none`` to
      opt out).
    """

    codebook_size: int = 256
    beta: float = 0.25
    update: str = "ema"
    decay: float = 0.99
    eps: float = 1e-5
    init: str = "kmeans"
    kmeans_iters: int = 20
    init_samples: int = 10000
    dead_code_threshold: float = 0.0
    estimator: str = "ste"
    normalize: bool = False
    code_dim: int = 0
    simvq: bool = False
    impl: str = "vqlab"
    search: str = "exact"
    recipe: str = "none"
    kind: str = "single"
    scales: str = ""
    quant_resi: float = 0.5
    share_resi: int = 4
    levels: str = ""
    entropy_weight: float = 0.1
    ms_init: str = "finest"
    loss_on: str = "every_scale"

    def __post_init__(self) -> None:
        check_choice("vq", "recipe", self.recipe, tuple(RECIPES))
        self._apply_recipe()
        check_choice("vq", "update", self.update, UPDATES)
        check_choice("vq", "estimator", self.estimator, ESTIMATORS)
        check_choice("vq", "init", self.init, INITS)
        check_choice("vq", "impl", self.impl, IMPLS)
        check_choice("vq", "search", self.search, SEARCHES)
        if self.impl != "vqlab" and self.simvq:
            raise ConfigError(f"vq.simvq=true is vqlab's own; vq.impl={self.impl} has no SimVQ")
        if self.impl != "vqlab" and self.search != "exact":
            raise ConfigError(
                f"vq.search={self.search} is vqlab's own search; vq.impl={self.impl} searches "
                "with its own code"
            )
        check_positive("vq", "codebook_size", self.codebook_size)
        check_positive("vq", "beta", self.beta, strict=False)
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"vq.decay must lie in (0, 1); got {self.decay}")
        check_positive("vq", "eps", self.eps)
        check_positive("vq", "kmeans_iters", self.kmeans_iters, strict=False)
        check_positive("vq", "init_samples", self.init_samples)
        check_positive("vq", "dead_code_threshold", self.dead_code_threshold, strict=False)
        check_positive("vq", "code_dim", self.code_dim, strict=False)
        if self.init_samples < self.codebook_size and self.kind in ("single", "multiscale"):
            raise ConfigError(
                f"vq.init_samples={self.init_samples} is smaller than vq.codebook_size="
                f"{self.codebook_size}; k-means needs at least one sample per code"
            )
        self._check_simvq()
        self._check_kind()

    def _check_kind(self) -> None:
        """``kind``: ``single`` (VectorQuantizer), ``multiscale`` (VAR's residual pyramid over
        ``scales``, e.g. ``1,2,3,4,6,8``; empty = the latent side alone), ``fsq`` (``levels``,
        e.g. ``8,5,5,5``; empty = the recommended set nearest ``codebook_size``, which then
        becomes the product of the levels) or ``lfq`` (log2 K binary channels with an entropy
        penalty of weight ``entropy_weight``; ``beta`` is its commitment weight).
        ``ms_init``: how a multi-scale codebook's k-means sample is drawn: ``finest`` (the
        full-resolution encoder outputs), ``pyramid`` (area-downsampled latents of every scale
        pooled) or ``coarse_then_all`` (fit the coarsest scale, run the residual pass, refit on
        every scale's residuals). ``loss_on``: the multi-scale commitment/codebook loss on every
        scale's running reconstruction, averaged (``every_scale``, VAR's released code) or on
        the final one only (``final``; the averaged pull towards blurred partial
        reconstructions shrinks the latents, results/var-findings-cpu)."""
        if self.kind not in QUANTIZER_KINDS:  # a registered plug-in or a typo: the registry says
            self._check_registered_kind()
            return
        check_choice("vq", "loss_on", self.loss_on, LOSS_ON)
        if self.kind != "multiscale" and self.loss_on != "every_scale":
            raise ConfigError(
                f"vq.loss_on={self.loss_on} is the multi-scale layer's; vq.kind={self.kind} "
                "has one scale (leave vq.loss_on at every_scale)"
            )
        if self.kind == "single":
            return
        unsupported = [
            name
            for name, value, default in (
                ("impl", self.impl, "vqlab"),
                ("estimator", self.estimator, "ste"),
                ("normalize", self.normalize, False),
                ("code_dim", self.code_dim, 0),
                ("simvq", self.simvq, False),
                ("dead_code_threshold", self.dead_code_threshold, 0.0),
            )
            if value != default
        ]
        if unsupported:
            raise ConfigError(
                f"vq.kind={self.kind} has none of the single-scale layer's options; leave "
                f"{', '.join('vq.' + n for n in unsupported)} at the default"
            )
        check_positive("vq", "quant_resi", self.quant_resi, strict=False)
        check_positive("vq", "share_resi", self.share_resi)
        check_positive("vq", "entropy_weight", self.entropy_weight, strict=False)
        if self.kind == "multiscale":
            self.scale_list()
            check_choice("vq", "ms_init", self.ms_init, INIT_WAYS)
        elif self.kind == "fsq":
            from vqlab.quantizers.fsq import fsq_levels_for

            try:
                levels = (
                    parse_int_list(self.levels, "vq.levels")
                    if self.levels.strip()
                    else (fsq_levels_for(self.codebook_size))
                )
            except ValueError as err:
                raise ConfigError(f"vq.kind=fsq: {err}") from None
            object.__setattr__(self, "levels", ",".join(map(str, levels)))
            object.__setattr__(self, "codebook_size", math.prod(levels))
        elif self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(
                f"vq.kind=lfq needs a power of two vq.codebook_size; got {self.codebook_size}"
            )

    def _check_registered_kind(self) -> None:
        """A kind registered beyond the built-in ones (:data:`vqlab.registry.QUANTIZERS`): its
        entry checks its options and resolves values; another kind's options set away from
        their defaults are refused, as the entries declare them (no list here)."""
        from vqlab.quantizers import QUANTIZERS  # the package registers the built-in kinds

        entry = QUANTIZERS.get(self.kind)  # an unknown vq.kind names the registered ones
        defaults = {f.name: f.default for f in fields(self)}
        for name, other in QUANTIZERS.items():
            unsupported = [
                n for n in other.options
                if n not in entry.options and getattr(self, n) != defaults[n]
            ]  # fmt: skip
            if name != self.kind and unsupported:
                raise ConfigError(
                    f"vq.kind={self.kind} has none of the {other.title}'s options; leave "
                    f"{', '.join('vq.' + n for n in unsupported)} at the default"
                )
        if self.init_samples < self.codebook_size and entry.fits_codebook:
            raise ConfigError(
                f"vq.init_samples={self.init_samples} is smaller than vq.codebook_size="
                f"{self.codebook_size}; k-means needs at least one sample per code"
            )
        resolved = entry.check(self) if entry.check is not None else {}
        for key, value in resolved.items():
            object.__setattr__(self, key, value)  # frozen: only during construction

    def scale_list(self) -> tuple[int, ...]:
        """``scales`` as increasing ints (empty: no list, the layer uses the latent side)."""
        if not self.scales.strip():
            return ()
        scales = parse_int_list(self.scales, "vq.scales")
        if list(scales) != sorted(set(scales)):
            raise ConfigError(f"vq.scales={self.scales!r} must increase, e.g. 1,2,3,4,6,8")
        return scales

    def _apply_recipe(self) -> None:
        """Fill the fields still at their defaults from the preset named by ``recipe`` (its
        ``train.*`` entries are applied by :class:`RunConfig`)."""
        defaults = {f.name: f.default for f in fields(self)}
        for name, value in RECIPES[self.recipe].items():
            if "." not in name and getattr(self, name) == defaults[name]:
                object.__setattr__(self, name, value)  # frozen: only during construction

    def _check_simvq(self) -> None:
        if not self.simvq:
            return
        from vqlab.quantizers.vq import simvq_conflict  # the one statement of SimVQ's rules

        conflict = simvq_conflict(self.update, self.dead_code_threshold, prefix="vq.")
        if conflict is None:
            return
        if self.dead_code_threshold > 0:
            conflict += (
                f"; vq.recipe={self.recipe} turns it on, so use vq.recipe=none"
                if RECIPES[self.recipe].get("dead_code_threshold")
                else "; set vq.dead_code_threshold=0"
            )
        raise ConfigError(f"vq.simvq=true {conflict}")


@dataclass(frozen=True)
class TrainConfig:
    """``checkpoint_every``: steps between resumable checkpoints (0 = only the final one). The
    default of 1000 costs little (a checkpoint is one write of the model and optimizer) and
    bounds the work a crash loses. ``on_nonfinite``: a NaN/Inf loss, codebook or gradient
    ``stop``s the run, or the batch is ``skip``ped and counted (``nonfinite_skipped``).
    ``bridge_steps`` and ``refit_at`` soften the switch to VQ (:mod:`vqlab.training.schedule`):
    a linear blend from z_e to z_q over the first ``bridge_steps`` quantized steps, and k-means
    refits of the codebook at the steps listed in ``refit_at`` (e.g. ``375``; empty = none)."""

    strategy: str = "standard"
    steps: int = 3000
    pretrain_steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    on_nonfinite: str = "stop"
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    bridge_steps: int = 0
    refit_at: str = ""

    def __post_init__(self) -> None:
        check_choice("train", "strategy", self.strategy, STRATEGIES)
        check_positive("train", "bridge_steps", self.bridge_steps, strict=False)
        check_choice("train", "on_nonfinite", self.on_nonfinite, NONFINITE_ACTIONS)
        check_choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_positive("train", "warmup_steps", self.warmup_steps, strict=False)
        check_positive("train", "checkpoint_every", self.checkpoint_every, strict=False)
        for name in ("steps", "batch_size", "log_every", "eval_every"):
            check_positive("train", name, getattr(self, name))
        check_positive("train", "lr", self.lr)
        check_positive("train", "weight_decay", self.weight_decay, strict=False)
        check_positive("train", "pretrain_steps", self.pretrain_steps, strict=False)
        if self.strategy == "deferred" and self.pretrain_steps >= self.steps:
            raise ConfigError(
                f"train.pretrain_steps={self.pretrain_steps} must be < train.steps={self.steps} "
                "so that deferred quantization has a VQ phase"
            )
        start = self.pretrain_steps if self.strategy == "deferred" else 0
        outside = [s for s in self.refit_steps() if not start < s < self.steps]
        if outside:
            raise ConfigError(
                f"train.refit_at={self.refit_at!r}: step(s) {outside} lie outside the VQ phase "
                f"(after step {start}, before train.steps={self.steps})"
            )

    def refit_steps(self) -> tuple[int, ...]:
        """``refit_at`` as increasing ints (empty: no refit)."""
        if not self.refit_at.strip():
            return ()
        steps = parse_int_list(self.refit_at, "train.refit_at")
        if list(steps) != sorted(set(steps)):
            raise ConfigError(f"train.refit_at={self.refit_at!r} must increase, e.g. 300,400")
        return steps


TASKS = ("tokenizer", "prior")  # what a run trains (vqlab.training.tasks)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "auto"
    task: str = "tokenizer"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vq: VQConfig = field(default_factory=VQConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:  # a top-level key: no group prefix in the message
            raise ConfigError(f"device={self.device!r} is not valid; choose one of {list(DEVICES)}")
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r} is not valid; choose one of {list(TASKS)}")
        if (self.task == "prior") != (self.data.name == "tokens"):
            raise ConfigError(
                "task=prior trains on token ids and needs data.name=tokens (a file from vqlab "
                "tokenize)"
                if self.task == "prior"
                else "data.name=tokens holds token ids for a prior: set task=prior"
            )
        self._apply_train_recipe()
        # frozen: the sampler's per-prior defaults are filled once, during construction
        object.__setattr__(self, "sample", resolve_sampler(self.sample, self.prior.kind))

    def _apply_train_recipe(self) -> None:
        """A ``vq.recipe`` may name a schedule too (``train.strategy``): fill those ``train.*``
        fields still at their defaults, as the ``vq.*`` ones are filled."""
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        fill = {}
        for key, value in RECIPES[self.vq.recipe].items():
            group, _, name = key.partition(".")
            if group == "train" and getattr(self.train, name) == defaults[name]:
                fill[name] = value
        if fill:  # frozen: replace the group (validated again) during construction only
            object.__setattr__(self, "train", dataclasses.replace(self.train, **fill))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of every key (what ``config.yaml`` holds)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"vq.codebook_size": 256, ...}``: every key, dotted."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


_GROUPS = {f.name: f for f in fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)}


def valid_keys() -> list[str]:
    """Every dotted key a config file or ``--set`` accepts."""
    return sorted(RunConfig().flat())
