"""Renderers: ``Episode`` -> training rows. Every format comes from ``react_text(ep)`` / ``messages(ep)``
(FireAct's text shapes, here rather than on the record: the reward's spelling is the task's) so that they
cannot drift apart.

- ``alpaca``  {instruction, input, output}: FireAct's ``alpaca_format/*.json`` rows
- ``gpt``     {"messages": [...]}: FireAct's ``gpt_format/*.jsonl`` rows
- ``steps``   {prompt, completion}: one row per step, prompt = the trajectory so far
- ``dpo``     {prompt, chosen, rejected}: TRL's preference format (see ``finetune.pairs``)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List

from fireharness.records import Episode, Step

from methods.prompts import alpaca_prompt  # FireAct prepare_prompt: what fine-tuned models see

PROMPT_STYLES = ("alpaca", "plain", "chat")


# --- FireAct's text shapes ---------------------------------------------------------------------
def reward_literal(ep: Episode) -> str:
    """How FireAct spells the reward in the finish observation: its evaluate returns a bool for the open-answer
    tasks ("True") and an int for StrategyQA/MMLU ("1"), and its CoT files write an int whatever the task
    (released ``hotpotqa_multimethod.json``)."""
    rtype = int if ep.method == "cot" else _task_reward_type(ep.task)
    return str(rtype(ep.reward))


def _task_reward_type(task: str) -> type:
    try:
        from tasks import TASKS

        return getattr(TASKS.get(task), "reward_type", bool)
    except Exception:  # an unknown or unregistered task name: FireAct's HotpotQA spelling
        return bool


def finish_observation(ep: Episode) -> str:
    return f"Episode finished, reward = {reward_literal(ep)}"


def _finish_obs(ep: Episode, step: Step) -> str:
    # A finish step that recorded its observation (our runs; FireAct's files, where a few rows spell it "0." or
    # differently) keeps it verbatim; otherwise the task's convention.
    if step.observation and step.observation.startswith("Episode finished"):
        return step.observation
    return finish_observation(ep)


def react_text(ep: Episode) -> str:
    """The trajectory from the first Thought to ``Observation: Episode finished, reward = ...``, exactly as
    FireAct's Alpaca ``output`` field writes it (its CoT rows have no final newline)."""
    lines = []
    for step in ep.steps:
        if step.thought is not None:  # None: the model wrote an Action with no Thought line
            lines.append(f"Thought: {step.shown_thought()}")
        lines.append(f"Action: {step.action}")
        obs = _finish_obs(ep, step) if step.action_type == "finish" else step.shown_observation()
        lines.append(f"Observation: {obs}")
    return "\n".join(lines) + ("" if ep.method == "cot" else "\n")


def messages(ep: Episode) -> list:
    """FireAct's GPT format: user question, assistant Thought+Action, user Observation, ..."""
    msgs = [{"role": "user", "content": ep.question}]
    for step in ep.steps:
        head = "" if step.thought is None else f"Thought: {step.shown_thought()}\n"
        msgs.append({"role": "assistant", "content": f"{head}Action: {step.action}"})
        obs = _finish_obs(ep, step) if step.action_type == "finish" else step.shown_observation()
        msgs.append({"role": "user", "content": f"Observation: {obs}"})
    return msgs


def to_alpaca(ep: Episode) -> dict:
    """FireAct wrote ``question + "\\n" + trajectory`` and split it at the first newline, so a
    multi-line question (MMLU's options) leaves its later lines at the start of ``output``."""
    instruction, _, rest = ep.question.partition("\n")
    output = react_text(ep)
    return {"instruction": instruction, "input": "", "output": f"{rest}\n{output}" if rest else output}


def to_gpt(ep: Episode) -> dict:
    return {"messages": messages(ep)}


def step_completion(ep: Episode, step: Step) -> str:
    """What the model writes at a step: ``Thought: ...\\nAction: ...`` (FireAct stops at
    ``\\nObservation:``)."""
    return messages(_upto(ep, [step]))[1]["content"]


def step_prompt(ep: Episode, k: int, style: str = "alpaca"):
    """The prompt before step ``k`` (0-based): the question and steps ``0..k-1`` with observations.

    ``alpaca``: FireAct's Alpaca wrapper + the text so far (its fine-tuned-model inference prompt);
    ``plain``: question + "\\n" + the text so far (its few-shot text prompt, minus the examples);
    ``chat``: the GPT-format messages so far (a TRL conversational prompt)."""
    if style == "chat":
        return messages(_upto(ep, ep.steps[:k]))
    history = react_text(_upto(ep, ep.steps[:k])) if k else ""
    if style == "alpaca":
        return alpaca_prompt(ep.question) + history
    if style == "plain":
        return ep.question + "\n" + history
    raise ValueError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")


def _upto(ep: Episode, steps: list) -> Episode:
    # A copy holding only some steps, rendered by the same functions as whole trajectories;
    # method "react" so that a history always ends with a newline before the next "Thought:".
    return dataclasses.replace(ep, steps=list(steps), method="react" if ep.method == "cot" else ep.method)


def completion(text: str, style: str):
    return [{"role": "assistant", "content": text}] if style == "chat" else text


def to_steps(ep: Episode, style: str = "alpaca") -> List[dict]:
    """One SFT row per step: {"prompt": trajectory so far, "completion": the next Thought+Action}."""
    return [{"prompt": step_prompt(ep, k, style), "completion": completion(step_completion(ep, s), style)}
            for k, s in enumerate(ep.steps)]


RENDERERS: Dict[str, Callable[[Episode], dict]] = {"alpaca": to_alpaca, "gpt": to_gpt}
