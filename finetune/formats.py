"""Renderers: ``Episode`` -> training rows. Every format comes from ``Episode.react_text()`` /
``Episode.messages()`` so that they cannot drift apart.

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


def to_alpaca(ep: Episode) -> dict:
    """FireAct wrote ``question + "\\n" + trajectory`` and split it at the first newline, so a
    multi-line question (MMLU's options) leaves its later lines at the start of ``output``."""
    instruction, _, rest = ep.question.partition("\n")
    output = ep.react_text()
    return {"instruction": instruction, "input": "", "output": f"{rest}\n{output}" if rest else output}


def to_gpt(ep: Episode) -> dict:
    return {"messages": ep.messages()}


def step_completion(ep: Episode, step: Step) -> str:
    """What the model writes at a step: ``Thought: ...\\nAction: ...`` (FireAct stops at
    ``\\nObservation:``)."""
    return _upto(ep, [step]).messages()[1]["content"]


def step_prompt(ep: Episode, k: int, style: str = "alpaca"):
    """The prompt before step ``k`` (0-based): the question and steps ``0..k-1`` with observations.

    ``alpaca``: FireAct's Alpaca wrapper + the text so far (its fine-tuned-model inference prompt);
    ``plain``: question + "\\n" + the text so far (its few-shot text prompt, minus the examples);
    ``chat``: the GPT-format messages so far (a TRL conversational prompt)."""
    if style == "chat":
        return _upto(ep, ep.steps[:k]).messages()
    history = _upto(ep, ep.steps[:k]).react_text() if k else ""
    if style == "alpaca":
        return alpaca_prompt(ep.question) + history
    if style == "plain":
        return ep.question + "\n" + history
    raise ValueError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")


def _upto(ep: Episode, steps: list) -> Episode:
    # A copy holding only some steps, rendered by the same Episode methods as whole trajectories;
    # method "react" so that a history always ends with a newline before the next "Thought:".
    return dataclasses.replace(ep, steps=list(steps), method="react" if ep.method == "cot" else ep.method)


def completion(text: str, style: str):
    return [{"role": "assistant", "content": text}] if style == "chat" else text


def to_steps(ep: Episode, style: str = "alpaca") -> List[dict]:
    """One SFT row per step: {"prompt": trajectory so far, "completion": the next Thought+Action}."""
    return [{"prompt": step_prompt(ep, k, style), "completion": completion(step_completion(ep, s), style)}
            for k, s in enumerate(ep.steps)]


RENDERERS: Dict[str, Callable[[Episode], dict]] = {"alpaca": to_alpaca, "gpt": to_gpt}
