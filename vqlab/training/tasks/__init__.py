"""Tasks the engine trains, by the name of the ``task`` config key."""

from __future__ import annotations

from collections.abc import Callable

from vqlab.training.tasks.base import StepLosses, Task
from vqlab.training.tasks.prior import PriorTask
from vqlab.training.tasks.tokenizer import TokenizerTask

TASKS: dict[str, Callable[..., Task]] = {"tokenizer": TokenizerTask, "prior": PriorTask}

__all__ = ["TASKS", "PriorTask", "StepLosses", "Task", "TokenizerTask"]
