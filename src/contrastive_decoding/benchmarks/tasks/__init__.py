"""Benchmark tasks: a plain dict registry from task name to :class:`~.base.Task` subclass."""

from __future__ import annotations

from ...decoding._validation import did_you_mean
from .base import Item, ItemOutput, Task

TASKS: dict[str, type[Task]] = {}


def register(task: type[Task]) -> type[Task]:
    """Class decorator adding ``task`` to :data:`TASKS` under ``task.name``."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """An instance of the task called ``name``; unknown names raise ValueError with a did-you-mean."""
    if name not in TASKS:
        raise ValueError(
            f"Unknown task {name!r}.{did_you_mean(name, TASKS)} Known tasks: {', '.join(sorted(TASKS))}."
        )
    return TASKS[name]()


__all__ = ["TASKS", "Item", "ItemOutput", "Task", "get_task", "register"]

from . import cnndm, factor, gsm8k, memotrap, nq_swap, open_ended, overshadow, truthfulqa, vision  # noqa: E402,F401  (registers the tasks)
