"""Deferred quantization as a Lightning callback (``pip install 'vqlab[lightning]'``).

```python
from lightning.pytorch import Trainer
from vqlab.quantizers.deferred_lightning import DeferredQuantization

trainer = Trainer(max_steps=40_000, callbacks=[DeferredQuantization(0.5, init_samples=200_000)])
```

At ``setup`` it wraps the module's quantizer (``attribute``, or the only supported quantizer
found in the module) in a :class:`~vqlab.quantizers.deferred.DeferredQuantizer`, before the
optimizers are built and before a checkpoint is restored, so resuming works as for the bare
wrapper. ``switch_at`` follows Lightning's ``StochasticWeightAveraging``: an int is an
optimizer step, a float in (0, 1) a fraction of the run's optimizer steps
(``trainer.estimated_stepping_batches``). The wrapper counts forward calls, so the step is
multiplied by ``accumulate_grad_batches``. Lightning is imported only here; vqlab does not
depend on it.
"""

from __future__ import annotations

import math

from torch import nn

from vqlab.quantizers.adapters import UnsupportedQuantizer, family_of
from vqlab.quantizers.deferred import DeferredQuantizer

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as err:  # the optional extra is missing
    raise ImportError(
        "vqlab.quantizers.deferred_lightning needs Lightning: pip install 'vqlab[lightning]'"
    ) from err


def _find(module: nn.Module, attribute: str | None) -> tuple[nn.Module, str]:
    """(parent, name) of the quantizer to wrap: the dotted ``attribute``, or the one module of a
    supported family (an error lists them when there are several or none)."""
    if attribute is not None:
        *path, name = attribute.split(".")
        parent = module.get_submodule(".".join(path)) if path else module
        if not hasattr(parent, name):
            raise AttributeError(f"the LightningModule has no {attribute!r}")
        return parent, name
    found = []
    for dotted, sub in module.named_modules():
        if dotted and not isinstance(sub, DeferredQuantizer):
            try:
                family_of(sub)
            except UnsupportedQuantizer:
                continue
            found.append(dotted)
    roots = [d for d in found if not any(d.startswith(o + ".") for o in found)]
    if len(roots) != 1:
        what = ", ".join(roots) if roots else "none"
        raise ValueError(f"DeferredQuantization needs attribute=...: quantizers found: {what}")
    return _find(module, roots[0])


class DeferredQuantization(Callback):
    """Wrap the module's quantizer so that it passes through until ``switch_at``, then is
    k-means-initialised on a sample of the encoder outputs and quantizes.

    Args:
        switch_at: optimizer step (int >= 1), or fraction of the run's steps (float in (0, 1)).
        init_samples, kmeans_iters, seed, sample_window: as :class:`DeferredQuantizer`.
        attribute: dotted name of the quantizer in the LightningModule (default: found).
    """

    def __init__(
        self,
        switch_at: int | float,
        init_samples: int = 200_000,
        *,
        kmeans_iters: int = 20,
        seed: int = 0,
        sample_window: int | None = None,
        attribute: str | None = None,
    ) -> None:
        fraction = isinstance(switch_at, float)
        if (fraction and not 0.0 < switch_at < 1.0) or (
            not fraction
            and (
                isinstance(switch_at, bool) or not isinstance(switch_at, int) or switch_at < 1
            )  # fmt: skip
        ):
            raise ValueError(
                f"switch_at must be an int >= 1 (a step) or a float in (0, 1) (a fraction); "
                f"got {switch_at!r}"
            )
        self.switch_at, self.attribute = switch_at, attribute
        self.options = {
            "init_samples": init_samples,
            "kmeans_iters": kmeans_iters,
            "seed": seed,
            "sample_window": sample_window,
        }
        self.wrapper: DeferredQuantizer | None = None

    def switch_step(self, trainer) -> int:
        """The optimizer step of the switch."""
        if isinstance(self.switch_at, float):
            return max(1, math.floor(self.switch_at * trainer.estimated_stepping_batches))
        return self.switch_at

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.wrapper is not None:
            return
        parent, name = _find(pl_module, self.attribute)
        current = getattr(parent, name)
        if isinstance(current, DeferredQuantizer):
            self.wrapper = current
            return
        calls = self.switch_step(trainer) * max(1, trainer.accumulate_grad_batches)
        self.wrapper = DeferredQuantizer(current, switch_at=calls, **self.options)
        setattr(parent, name, self.wrapper)
