"""The task interface: a split of questions, the text shown to the agent, and official scoring."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from fireharness.paths import DATA_DIR
from fireharness.registry import Registry, did_you_mean

TASKS: Registry = Registry("task", package="tasks")

FIREACT_DATA = DATA_DIR / "fireact" / "data"


class DataFileError(RuntimeError):
    """A shipped or user data file is missing, truncated or not in the expected shape."""


class SplitError(ValueError):
    pass


class NoAnswersError(RuntimeError):
    pass


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataFileError(f"data file {path} is missing; re-clone the repository or set FIREHARNESS_DATA") from None
    except json.JSONDecodeError as e:
        raise DataFileError(f"data file {path} is corrupt or truncated ({e.msg} at line {e.lineno}); "
                            f"restore it with `git checkout -- {path}`") from None


class Task:
    """One split of one benchmark.

    ``t[i]`` is the question text shown to the agent (FireAct's formatting); ``t.evaluate(i, answer)``
    returns ``(reward, info)`` with ``info["em"]`` and ``info["f1"]``; ``t.record(i)`` is the whole
    record for reports. Subclasses set ``name``, ``splits`` and implement ``load`` and ``score``.
    """

    name: str = ""
    splits: tuple = ()
    answerless_splits: tuple = ()
    # Few-shot prompt names per (method, tool) in methods/prompts.py; FireAct's defaults.
    prompts: dict = {}
    # How the finish observation spells the reward: FireAct's evaluate returns a bool for the
    # open-answer tasks ("reward = True") and an int for StrategyQA/MMLU ("reward = 1").
    reward_type: type = int

    def __init__(self, split: str):
        self.split = self.check_split(split)
        self.records: list[dict] = self.load(self.split)
        if not self.records:
            raise DataFileError(f"{self.name} {self.split}: the data file holds no questions")

    @classmethod
    def check_split(cls, split: str) -> str:
        if split not in cls.splits:
            raise SplitError(did_you_mean(f"split of task {cls.name!r}", split, cls.splits))
        return split

    # --- for subclasses -------------------------------------------------------------------
    def load(self, split: str) -> list[dict]:
        """Records with at least ``question`` and ``gold`` (None when the split has no answers)."""
        raise NotImplementedError

    def score(self, answer: str, gold: Any) -> dict:
        raise NotImplementedError

    # --- the interface -------------------------------------------------------------------
    @property
    def has_answers(self) -> bool:
        return self.split not in self.answerless_splits

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> str:
        return self.records[idx]["question"]

    def record(self, idx: int) -> dict:
        return self.records[idx]

    def gold(self, idx: int) -> Any:
        return self.records[idx].get("gold")

    def meta(self, idx: int) -> dict:
        """Fields for breakdowns in reports: id, type, level, subject (whatever the record has)."""
        rec = self.records[idx]
        return {k: rec[k] for k in ("id", "type", "level", "subject") if rec.get(k) is not None}

    def evaluate(self, idx: int, answer: str) -> tuple[float, dict]:
        if not self.has_answers:
            raise NoAnswersError(f"{self.name} {self.split} has no gold answers, so it cannot be scored; "
                                 f"drop --evaluate or use a split with answers")
        info = self.score(answer if answer is not None else "", self.records[idx]["gold"])
        return info["reward"], info

    def finish_observation(self, reward) -> str:
        return f"Episode finished, reward = {self.reward_type(reward)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}/{self.split} n={len(self)}>"


def register_task(name: str) -> Callable:
    return TASKS.register(name)


def get_task(name: str, split: str) -> Task:
    """``name``: a registered task, or a task YAML / a folder holding one (tasks/yaml_task.py)."""
    from .yaml_task import is_task_path, task_from_path

    if name not in TASKS and is_task_path(name):
        name = task_from_path(name)
    return TASKS.get(name)(split)
