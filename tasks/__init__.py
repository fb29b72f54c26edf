"""Task registry: ``from tasks import get_task; t = get_task("hotpotqa", "dev")``.

Adding a benchmark is one new module in this folder that subclasses ``Task`` and decorates it
with ``@register_task("name")``.
"""
from .base import TASKS, DataFileError, NoAnswersError, SplitError, Task, get_task, register_task  # noqa: F401
from .metrics import exact_match, f1_score, normalize_answer  # noqa: F401


def eval_indices(n: int, start: int = 0, end: int | None = None, shuffle: bool = False) -> list[int]:
    """FireAct's and ReAct's evaluation subset: ``range(n)`` shuffled by ``random.Random(233)``."""
    import random

    idxs = list(range(n))
    if shuffle:
        random.Random(233).shuffle(idxs)
    return idxs[start:end]
