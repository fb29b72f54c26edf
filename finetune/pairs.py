"""DPO preference pairs in TRL's standard format: {"prompt", "chosen", "rejected"}.

Two sources of a rejected step, both on the exact prompt the chosen step answered:

- ``failed``: the same question answered by a successful and a failing episode; where both took the
  same actions so far (same step-0..k-1 actions; thoughts may differ between samples), the failing
  episode's step k is rejected when its action differs from the successful one's. The prompt is
  rendered from the successful episode's history.
- ``repeat``: as Araft does, a step that re-issues the previous search query (the classic ReAct loop)
  is rejected in favour of the successful episode's actual next step.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List

from fireharness.records import Episode, Step

from .formats import completion, step_completion, step_prompt

SOURCES = ("failed", "repeat")


def _question_key(ep: Episode) -> str:
    return " ".join(ep.question.split()).lower()


def _action_key(step: Step) -> str:
    return " ".join(step.action.split()).lower()


def failed_pairs(successes: List[Episode], failures: List[Episode], style: str) -> Iterable[dict]:
    by_question: Dict[str, List[Episode]] = defaultdict(list)
    for ep in failures:
        by_question[_question_key(ep)].append(ep)
    for good in successes:
        seen = set()  # one pair per (prefix, rejected action): sampled failures often repeat
        for bad in by_question.get(_question_key(good), []):
            for k, (gs, bs) in enumerate(zip(good.steps, bad.steps)):
                if _action_key(gs) != _action_key(bs):
                    if bs.action and (k, _action_key(bs)) not in seen:
                        seen.add((k, _action_key(bs)))
                        yield {"prompt": step_prompt(good, k, style),
                               "chosen": completion(step_completion(good, gs), style),
                               "rejected": completion(step_completion(bad, bs), style),
                               "source": "failed", "question": good.question, "step": k}
                    break  # the trajectories diverged: later steps no longer share a prefix


def repeat_pairs(successes: List[Episode], style: str) -> Iterable[dict]:
    for good in successes:
        for k in range(1, len(good.steps)):
            prev, step = good.steps[k - 1], good.steps[k]
            if prev.action_type == "search" and _action_key(prev) != _action_key(step):
                yield {"prompt": step_prompt(good, k, style),
                       "chosen": completion(step_completion(good, step), style),
                       "rejected": completion(step_completion(good, prev), style),
                       "source": "repeat", "question": good.question, "step": k}


def dpo_pairs(successes: List[Episode], failures: List[Episode], sources=SOURCES,
              style: str = "alpaca") -> List[dict]:
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown DPO pair source(s) {sorted(unknown)}; valid: {', '.join(SOURCES)}")
    rows: List[dict] = []
    if "failed" in sources:
        rows += failed_pairs(successes, failures, style)
    if "repeat" in sources:
        rows += repeat_pairs(successes, style)
    return rows
