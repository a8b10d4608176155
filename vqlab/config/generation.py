"""The config groups of generation: the tokenizer's extra losses (``loss.*``), the prior
(``prior.*``) and its sampler (``sample.*``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vqlab.config.checks import check_choice, check_positive
from vqlab.errors import ConfigError

GAN_LOSSES = ("hinge", "non_saturating")
PRIOR_KINDS = ("maskgit", "var")
# What ``prior.label_smoothing``, ``sample.top_k`` and ``sample.top_p`` left unset (none) become,
# per prior kind. VAR: its released trainer and sampler (GENERATION.md). MaskGIT: its sampler
# has no top-k/top-p; its official config smooths by 0.1, but a temperature-1 sampler then draws
# the smoothing floor: measured on tests/priors/test_prior_defaults.py's toy grids (one seed,
# results/var-findings-cpu), MaskGIT's conditional samples were exact 69% of the time at 0.1
# against 99.5% at 0, and VAR's 22% (37% with top-k 900 / top-p 0.96) against 100% at 0.
PRIOR_DEFAULTS: dict[str, dict[str, float]] = {
    "maskgit": {"label_smoothing": 0.0, "top_k": 0, "top_p": 0.0},
    "var": {"label_smoothing": 0.0, "top_k": 900, "top_p": 0.96},
}


def prior_defaults(kind: str) -> dict[str, float]:
    """``PRIOR_DEFAULTS`` of a built-in kind; a registered plug-in prior's own ``defaults``
    (:data:`vqlab.registry.PRIORS`)."""
    if kind in PRIOR_DEFAULTS:
        return PRIOR_DEFAULTS[kind]
    from vqlab.registry import PRIORS

    return PRIORS.get(kind).defaults


@dataclass(frozen=True)
class LossConfig:
    """The tokenizer's losses beyond the MSE reconstruction (taming's VQGAN vocabulary).

    - ``perceptual``: weight of the perceptual distance (0 = off): LPIPS's "baseline" form in the
      feature maps of a frozen network, ``perceptual_net``: a vqlab feature-net folder
      (``vqlab featnet train --arch vgg``), or ``lpips`` for real LPIPS where the ``lpips``
      package and its backbone weights exist. Never the network that scores the run.
    - ``gan``: weight of the adversarial loss (0 = off, the papers' default): a PatchGAN
      discriminator (``disc_width``, ``disc_layers``) with ``gan_loss``, from step
      ``gan_start``; the generator's term is scaled by taming's adaptive weight (clamped to
      ``adaptive_max``). ``r1``: weight of the R1 gradient penalty on real images (0 = off).
      ``disc_lr``: the discriminator's learning rate (0 = ``train.lr``).
    Deferred pretraining trains with the same reconstruction losses, just without VQ.
    """

    perceptual: float = 0.0
    perceptual_net: str = ""
    gan: float = 0.0
    gan_loss: str = "hinge"
    gan_start: int = 0
    r1: float = 0.0
    disc_width: int = 64
    disc_layers: int = 3
    disc_lr: float = 0.0
    adaptive_max: float = 1e4

    def __post_init__(self) -> None:
        check_choice("loss", "gan_loss", self.gan_loss, GAN_LOSSES)
        for name in ("perceptual", "gan", "r1", "disc_lr", "gan_start"):
            check_positive("loss", name, getattr(self, name), strict=False)
        for name in ("disc_width", "disc_layers", "adaptive_max"):
            check_positive("loss", name, getattr(self, name))
        if self.perceptual > 0 and not self.perceptual_net.strip():
            raise ConfigError(
                "loss.perceptual > 0 needs loss.perceptual_net: a feature-net folder "
                "(vqlab featnet train --arch vgg --out DIR) or lpips"
            )


# priors.schedules.SCHEDULES, spelled here so that checking a config does not load torch
# (tests/test_config.py keeps the two equal)
MASK_SCHEDULES = ("cosine", "arccos", "linear")


@dataclass(frozen=True)
class PriorConfig:
    """A generative prior over token ids (``task=prior``, ``data.name=tokens``).

    ``kind=var``: VAR's block-causal next-scale transformer over a multi-scale tokenizer's ids
    (teacher-forced with the tokenizer's running reconstruction; cross-entropy over all
    positions, ``label_smoothing`` and ``class_dropout`` as below, the masking keys unused).
    ``kind=maskgit``: a bidirectional transformer (``depth`` pre-LN blocks of ``width``, ``heads``
    heads, ``dropout``) trained to predict masked tokens; ``mask_schedule`` gamma(r)
    (``cosine``, ``arccos``, ``linear``), cross-entropy with ``label_smoothing`` on the masked
    positions only unless ``loss_on_all``, labels dropped to the null class with probability
    ``class_dropout`` (for classifier-free guidance). ``eval_mask_ratio``: the fixed ratio of
    the validation metrics.
    """

    kind: str = "maskgit"
    depth: int = 4
    width: int = 256
    heads: int = 4
    dropout: float = 0.1
    mask_schedule: str = "cosine"
    label_smoothing: float | None = None
    loss_on_all: bool = False
    class_dropout: float = 0.1
    eval_mask_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:  # a registered plug-in or a typo: the registry says
            import vqlab.priors  # noqa: F401 - registers the built-in priors
            from vqlab.registry import PRIORS

            check_choice("prior", "kind", self.kind, tuple(PRIORS.names()))
        check_choice("prior", "mask_schedule", self.mask_schedule, MASK_SCHEDULES)
        for name in ("depth", "width", "heads"):
            check_positive("prior", name, getattr(self, name))
        if self.width % self.heads:
            raise ConfigError(
                f"prior.width={self.width} must be divisible by prior.heads={self.heads}"
            )
        if self.label_smoothing is None:  # frozen: resolved once, during construction
            smoothing = prior_defaults(self.kind)["label_smoothing"]
            object.__setattr__(self, "label_smoothing", smoothing)
        for name in ("dropout", "label_smoothing", "class_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"prior.{name} must lie in [0, 1); got {getattr(self, name)}")
        if not 0.0 < self.eval_mask_ratio <= 1.0:
            raise ConfigError(
                f"prior.eval_mask_ratio must lie in (0, 1]; got {self.eval_mask_ratio}"
            )


@dataclass(frozen=True)
class SampleConfig:
    """MaskGIT decoding (``vqlab sample``): ``steps`` T, ``temperature`` of the token draw,
    ``choice_temperature`` of the Gumbel noise on the confidences (annealed to 0 over the
    steps), ``cfg`` the classifier-free guidance scale (0 = off), ``batch_size``, ``seed``.
    VAR (``prior.kind=var``) samples scale by scale with ``temperature``, ``cfg`` (ramped from
    0 at the first scale to ``cfg`` at the last), ``top_k`` and ``top_p`` (0 = off; none, the
    default, = the prior kind's value in ``PRIOR_DEFAULTS``, set by :func:`resolve_sampler`)."""

    steps: int = 8
    temperature: float = 1.0
    choice_temperature: float = 4.5
    cfg: float = 0.0
    batch_size: int = 256
    seed: int = 0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "temperature"):
            check_positive("sample", name, getattr(self, name))
        if self.top_k is not None:
            check_positive("sample", "top_k", self.top_k, strict=False)
        if self.top_p is not None and not 0.0 <= self.top_p <= 1.0:
            raise ConfigError(f"sample.top_p must lie in [0, 1] (0 = off); got {self.top_p}")
        for name in ("choice_temperature", "cfg"):
            check_positive("sample", name, getattr(self, name), strict=False)


def resolve_sampler(sample: SampleConfig, kind: str) -> SampleConfig:
    """``sample`` with ``top_k`` / ``top_p`` left at none set to prior ``kind``'s defaults."""
    defaults = prior_defaults(kind)
    fill = {k: defaults[k] for k in ("top_k", "top_p") if getattr(sample, k) is None}
    if fill and "top_k" in fill:
        fill["top_k"] = int(fill["top_k"])
    return dataclasses.replace(sample, **fill) if fill else sample
