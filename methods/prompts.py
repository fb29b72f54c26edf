"""Few-shot prompts and the three prompt formats.

Prompt names resolve, in order, to FireAct's ``data/fireact/prompts/<name>.txt`` (Google tool:
``react_hotpotqa_google``, ``cot_*``, ``io_*``), the ReAct paper's exemplars in
``data/react/prompts_naive.json`` (Wikipedia tool: ``webthink_simple6``, ``webact_simple6``,
``cotqa_simple6``, ``webqa_simple6``), or a path to a ``.txt`` / ``.json`` file (FireAct's
``--promptpath``). The two families write steps differently: FireAct's are unnumbered
(``Thought: / Action: search[...]``), ReAct's are numbered (``Thought 1: / Action 1: Search[...]``)
and put ``Question:`` before the question; ``PromptStyle`` carries that difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fireharness.paths import DATA_DIR

FIREACT_PROMPTS = DATA_DIR / "fireact" / "prompts"
REACT_PROMPTS = DATA_DIR / "react" / "prompts_naive.json"

# FireAct's prepare_prompt(): the fine-tuned models' format (alpaca-lora), no few-shot examples.
ALPACA_TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")

# The instruction ReAct's hotpotqa notebook puts before webthink_simple6.
REACT_WIKI_INSTRUCTION = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps. Thought can "
    "reason about the current situation, and Action can be three types: \n(1) Search[entity], which searches "
    "the exact entity on Wikipedia and returns the first paragraph if it exists. If not, it will return some "
    "similar entities to search.\n(2) Lookup[keyword], which returns the next sentence containing keyword in "
    "the current passage.\n(3) Finish[answer], which returns the answer and finishes the task.\n"
    "Here are some examples.\n")
_THOUGHT_CLAUSE = ("interleaving Thought, Action, Observation steps. Thought can reason about the current "
                   "situation, and Action")


def act_instruction(text: str) -> str:
    return text.replace(_THOUGHT_CLAUSE, "interleaving Action, Observation steps. Action")


REACT_WIKI_ACT_INSTRUCTION = act_instruction(REACT_WIKI_INSTRUCTION)


class PromptError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class PromptStyle:
    numbered: bool = False  # "Thought 1:" (ReAct) vs "Thought:" (FireAct)
    question_prefix: str = ""  # ReAct writes "Question: " before the question
    capitalize_verbs: bool = False  # ReAct's exemplars write Search[...] / Finish[...]

    def label(self, word: str, i: int) -> str:
        return f"{word} {i}:" if self.numbered else f"{word}:"

    def verb(self, verb: str) -> str:
        return verb.capitalize() if self.capitalize_verbs else verb


FIREACT_STYLE = PromptStyle()
REACT_STYLE = PromptStyle(numbered=True, question_prefix="Question: ", capitalize_verbs=True)
# ReAct's CoT / IO exemplars: "Question: ..." but unnumbered "Thought:" / "Answer:".
REACT_QA_STYLE = PromptStyle(question_prefix="Question: ")


@dataclass(frozen=True)
class FewShot:
    name: str
    text: str  # everything before the question (instruction + examples), "" for zero-shot
    style: PromptStyle = FIREACT_STYLE


@lru_cache(maxsize=None)
def _react_prompts() -> dict:
    with open(REACT_PROMPTS, encoding="utf-8") as f:
        return json.load(f)


def strip_thoughts(text: str) -> str:
    """An Act-only prompt from a ReAct prompt: FireAct ships no Act prompt for Google."""
    kept = [line for line in act_instruction(text).split("\n") if not line.lstrip().lower().startswith("thought")]
    return "\n".join(kept)


def load_fewshot(name: str, *, act_only: bool = False) -> FewShot:
    if not name:
        return FewShot("", "")
    path = FIREACT_PROMPTS / f"{name}.txt"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        return FewShot(name, strip_thoughts(text) if act_only else text, FIREACT_STYLE)
    react = _react_prompts()
    if name in react:
        text = react[name]
        if name.startswith("webthink"):
            return FewShot(name, REACT_WIKI_INSTRUCTION + text, REACT_STYLE)
        if name.startswith("webact"):
            return FewShot(name, REACT_WIKI_ACT_INSTRUCTION + text, REACT_STYLE)
        return FewShot(name, text, REACT_QA_STYLE)
    file = Path(name)
    if file.is_file():
        if file.suffix == ".json":  # FireAct's chat prompts: a list of messages
            messages = json.loads(file.read_text(encoding="utf-8"))
            text = "\n".join(m["content"] for m in messages)
        else:
            text = file.read_text(encoding="utf-8")
        numbered = "Thought 1:" in text or "Action 1:" in text
        return FewShot(file.stem, text, REACT_STYLE if numbered else FIREACT_STYLE)
    valid = sorted([p.stem for p in FIREACT_PROMPTS.glob("*.txt")] + list(react))
    raise PromptError(f"unknown prompt {name!r}: not one of {', '.join(valid)}, nor a file")


def alpaca_prompt(question: str) -> str:
    return ALPACA_TEMPLATE.format(instruction=question.rstrip())
