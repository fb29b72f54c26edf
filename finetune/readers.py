"""Readers: every input the converter accepts becomes ``Episode`` objects, so that every output
format is rendered from one place (``finetune.formats.react_text`` / ``messages``).

Inputs (detected from the file's content, see ``detect_kind``):

- ``ours``     this project's ``trajs/<run>.jsonl`` (one ``Episode.to_dict()`` a line)
- ``fireact``  FireAct's released ``trajs/*.json`` (index -> {reward, em, f1, gt, pred, prompt, traj})
- ``alpaca``   FireAct's Alpaca fine-tuning files (a JSON list of {instruction, input, output})
- ``gpt``      FireAct's GPT fine-tuning files (JSONL of {"messages": [...]})
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional

from fireharness.records import Episode, Step, read_episodes
from methods.prompts import ALPACA_TEMPLATE

from .formats import reward_literal

# The inverse of methods.prompts.ALPACA_TEMPLATE (one template for training, evaluation and parsing).
_head, _tail = ALPACA_TEMPLATE.split("{instruction}")
ALPACA_WRAPPER = re.compile(f"^{re.escape(_head)}(?P<question>.*?){re.escape(_tail)}(?P<body>.*)$", re.S)
KEYWORD = re.compile(r"^(Thought|Action|Observation):[ ]?")
FINISH = re.compile(r"^Episode finished, reward = (?P<reward>.*)$", re.S)
REFLEXION_MARK = "let me do a reflection"
# FireAct's generation.py writes a tool fault into the observation as "%r generated an exception: %s".
FIREACT_TOOL_ERROR = re.compile(r"^\(.*\) generated an exception: ", re.S)
UNKNOWN = float("nan")  # f1 of an input that does not record it (FireAct's fine-tuning files)


class InputError(ValueError):
    """An input file this converter cannot read; the message names the file and the fix."""


# --- parsing FireAct's trajectory text ---------------------------------------------------------
def split_question(text: str) -> tuple[str, str]:
    """Split ``question\\nThought: ...`` at the first Thought/Action/Observation line. The question
    may span lines (MMLU's options)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if KEYWORD.match(line):
            return "\n".join(lines[:i]), "\n".join(lines[i:])
    return text, ""


def parse_action(action: str) -> tuple[str, str]:
    """FireAct's own parse (``action.split('[')[:2]``, argument minus its last character), with the
    verb normalised: ``("search", "Milhouse")`` for ``search[Milhouse]``, ``("", "")`` if unparsable."""
    if "[" not in action:
        return "", ""
    verb, arg = action.split("[")[:2]
    verb = verb.strip().lower()
    for known in ("finish", "search", "lookup"):
        if known in verb:
            verb = known
            break
    return verb, arg[:-1] if arg.endswith("]") else arg


def parse_steps(body: str) -> List[Step]:
    """``Thought: ...\\nAction: ...\\nObservation: ...`` lines -> steps. Lines that start with none of
    the three keywords continue the previous field (multi-line search snippets)."""
    steps: List[Step] = []
    field: Optional[str] = None
    for line in body.split("\n"):
        m = KEYWORD.match(line)
        if not m:
            if steps and field:
                setattr(steps[-1], field, (getattr(steps[-1], field) or "") + "\n" + line)
            continue
        kind, rest = m.group(1), line[m.end():]
        if kind == "Thought":
            steps.append(Step(thought=rest))
            field = "thought"
        elif kind == "Action":
            if not steps or steps[-1].action or steps[-1].observation is not None:
                steps.append(Step(thought=None))  # an Action with no Thought line before it
            steps[-1].action = rest
            field = "action"
        else:
            if not steps:
                steps.append(Step(thought=None))
            # FireAct has a few rows with two observation lines after one action; keep them verbatim.
            steps[-1].observation = rest if steps[-1].observation is None else (
                steps[-1].observation + "\nObservation: " + rest)
            field = "observation"
    if body.endswith("\n") and steps and field:  # the split left an empty continuation at the end
        setattr(steps[-1], field, getattr(steps[-1], field)[: -1])
    for step in steps:
        step.raw = "" if step.thought is None else f"Thought: {step.thought}\n"
        step.raw += f"Action: {step.action}"
        step.action_type, step.argument = parse_action(step.action)
        if step.observation and FIREACT_TOOL_ERROR.match(step.observation):
            step.tool_error = step.observation
    return steps


def finish_reward(steps: List[Step]) -> Optional[float]:
    """The reward written in the final ``Episode finished, reward = X`` observation, or None."""
    if not steps or steps[-1].action_type != "finish" or not steps[-1].observation:
        return None
    m = FINISH.match(steps[-1].observation)
    if not m:
        return None
    literal = m.group("reward").split("\n")[0].strip()
    if literal in ("True", "False"):
        return float(literal == "True")
    try:
        return float(literal.split(",")[0].rstrip("."))
    except ValueError:
        return None


def episode_from_text(question: str, body: str, **fields) -> Episode:
    steps = parse_steps(body)
    reward = finish_reward(steps)
    method = fields.pop("method", None) or guess_method(body, steps)
    ep = Episode(question=question, steps=steps, method=method, **fields)
    finished = bool(steps) and steps[-1].action_type == "finish"
    ep.finished = finished
    if finished:
        ep.prediction = steps[-1].argument
    if "reward" not in fields:
        ep.reward = reward or 0.0
        ep.em = ep.reward
        ep.f1 = UNKNOWN
    if not steps:
        ep.error = "unparsable: no Thought/Action lines"
    elif not finished:
        ep.error = "unfinished: the last action is not finish[...]"
    return ep


def guess_method(body: str, steps: List[Step]) -> str:
    # FireAct's CoT rows are one finish step with no newline after the observation; its Reflexion
    # rows carry the reflection phrase in a thought.
    if REFLEXION_MARK in body:
        return "reflexion"
    if len(steps) == 1 and steps[0].action_type == "finish" and not body.endswith("\n"):
        return "cot"
    return "react"


def task_from_name(path: Path) -> tuple[str, str]:
    """``hotpotqa_dev_0_500_...json`` -> (hotpotqa, dev); ``multitask.json`` -> (multitask, train)."""
    m = re.match(r"^(?P<task>[a-z0-9]+?)_(?P<split>train|dev|test|val)_", path.stem)
    if m:
        return m.group("task"), m.group("split")
    return path.stem.split("_")[0], "train"


# --- one reader per input kind ----------------------------------------------------------------
def read_ours(path: Path) -> List[Episode]:
    return list(read_episodes(path))


def read_fireact_trajs(path: Path) -> List[Episode]:
    data = json.loads(path.read_text(encoding="utf-8"))
    task, split = task_from_name(path)
    episodes = []
    for key, rec in data.items():
        traj = rec.get("traj")
        if isinstance(traj, list):  # a chatgpt_format run: [user question, assistant, user obs, ...]
            question = traj[0]["content"] if traj else ""
            body = "\n".join(m["content"] for m in traj[1:]) + "\n"
            fmt = "chat"
        else:
            traj = traj or ""
            m = ALPACA_WRAPPER.match(traj)
            if m:
                question, body, fmt = m.group("question"), m.group("body"), "alpaca"
            else:  # a few-shot text run: traj = question + "\n" + steps
                question, body = split_question(traj)
                fmt = "text"
        ep = episode_from_text(
            question, body, task=task, split=split, index=int(key) if str(key).isdigit() else 0,
            gold=rec.get("gt"), reward=float(bool(rec.get("reward"))), format=fmt, run=path.stem)
        ep.em = float(bool(rec.get("em", rec.get("reward"))))
        ep.f1 = float(rec["f1"]) if rec.get("f1") is not None else UNKNOWN
        ep.prediction = rec.get("pred", ep.prediction)
        episodes.append(ep)
    return episodes


def read_alpaca(path: Path) -> List[Episode]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    task, split = task_from_name(path)
    episodes = []
    for i, row in enumerate(rows):
        # FireAct split "question\ntrajectory" at its first newline: MMLU's options start the output.
        text = row["instruction"] + ("\n" + row["input"] if row.get("input") else "") + "\n" + row["output"]
        question, body = split_question(text)
        episodes.append(episode_from_text(question, body, task=task, split=split, index=i, format="alpaca",
                                          run=path.stem))
    return episodes


def read_gpt(path: Path) -> List[Episode]:
    task, split = task_from_name(path)
    episodes = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(l for l in f if l.strip()):
            msgs = json.loads(line)["messages"]
            question = msgs[0]["content"] if msgs else ""
            body = "\n".join(m["content"] for m in msgs[1:]) + "\n"
            ep = episode_from_text(question, body, task=task, split=split, index=i, format="chat", run=path.stem)
            if ep.method == "react" and len(ep.steps) == 1 and reward_literal(ep) != _literal(ep):
                ep.method = "cot"  # a one-step row spelling the reward as CoT rows do ("1")
            episodes.append(ep)
    return episodes


def _literal(ep: Episode) -> str:
    m = FINISH.match(ep.steps[-1].observation or "") if ep.steps else None
    return m.group("reward").strip() if m else ""


READERS: Dict[str, Callable[[Path], List[Episode]]] = {
    "ours": read_ours, "fireact": read_fireact_trajs, "alpaca": read_alpaca, "gpt": read_gpt}


def detect_kind(path: Path) -> str:
    """Which reader a file needs, from its first record; an ``InputError`` naming the fix otherwise."""
    if not path.exists():
        raise InputError(f"{path}: no such file; pass a trajs/*.jsonl, a FireAct trajs/*.json, "
                         f"or a FireAct alpaca_format/*.json / gpt_format/*.jsonl file")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        if re.match(r'\[\s*(\{\s*"(instruction|input|output)"|\])', head):
            return "alpaca"
    elif head.startswith("{"):
        first = head.split("\n", 1)[0]
        if '"messages"' in first[:50]:
            return "gpt"
        if '"steps"' in first or '"question"' in first[:200] or '"schema"' in first:
            return "ours"
        if re.match(r'\{\s*"[^"]*"\s*:\s*\{\s*"(reward|em|f1|gt|pred|prompt|traj)"', head):
            return "fireact"
    raise InputError(f"{path}: not a format this converter reads (expected our trajs JSONL, FireAct's "
                     f"trajs JSON, or FireAct's alpaca/gpt fine-tuning files)")


def read_any(path: str | Path, kind: Optional[str] = None) -> List[Episode]:
    path = Path(path)
    kind = kind or detect_kind(path)
    if kind not in READERS:
        raise InputError(f"unknown input kind {kind!r}; valid: {', '.join(READERS)}")
    return READERS[kind](path)


def f1_known(ep: Episode) -> bool:
    return not (isinstance(ep.f1, float) and math.isnan(ep.f1))
