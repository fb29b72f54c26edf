"""The method interface: how an agent's prompt is rendered each step and how its text is read.

A method is stateless; each episode's state lives in an ``AgentState``. The batched loop that
drives methods, backends and tools is ``methods/agent.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from fireharness.records import Step
from fireharness.registry import Registry

from .parsing import ParsedStep, parse_step
from .prompts import FewShot, alpaca_prompt

METHODS: Registry = Registry("method", package="methods")

FORMATS = ("text", "chat", "alpaca")


@dataclass
class AgentState:
    key: str  # the backend's handle for this episode (KV-cache reuse)
    index: int
    question: str
    sample: int = 0  # which of the question's samples (--num_samples)
    seed: Optional[int] = None  # this episode's sampling seed (None: the backend's)
    steps: list = field(default_factory=list)
    session: Any = None  # the episode's ToolSession
    reflection: Optional[str] = None  # Reflexion: shown before the next step's thought
    done: bool = False
    finished: bool = False  # ended with an answer
    prediction: Optional[str] = None
    reward: Any = None
    score: Optional[dict] = None  # the task's evaluate() info: em, f1, ...
    error: Optional[str] = None
    tokens: dict = field(default_factory=lambda: {"prompt": 0, "generated": 0, "computed": 0, "context": 0})
    timings: dict = field(default_factory=lambda: {"model_s": 0.0, "tool_s": 0.0})


class Method:
    """ReAct-shaped by default: Thought, Action, Observation until ``finish[answer]``."""

    name = ""
    uses_tools = True
    # The few-shot prompt this method takes from a task's ``prompts`` table.
    prompt_method = "react"

    def __init__(self, *, fewshot: FewShot, fmt: str = "text", max_steps: int = 11, question_prefix: str = "",
                 reflect_at: tuple = ()):
        if fmt not in FORMATS:
            raise ValueError(f"unknown prompt format {fmt!r}; valid: {', '.join(FORMATS)}")
        self.fewshot = fewshot
        self.style = fewshot.style
        self.fmt = fmt
        self.max_steps = max_steps
        self.question_prefix = question_prefix
        self.reflect_at = tuple(reflect_at)

    # --- rendering ------------------------------------------------------------------------
    def question_text(self, state: AgentState) -> str:
        return self.question_prefix + state.question

    def cue(self, state: AgentState) -> str:
        """What the prompt ends with, for the model to continue: "Thought:" / "Thought 3:"."""
        return self.style.label("Thought", len(state.steps) + 1)

    def render_step(self, step: Step, i: int) -> str:
        s = self.style
        lines = [f"{s.label('Thought', i)} {step.shown_thought()}"] if self.uses_thoughts else []
        lines += [f"{s.label('Action', i)} {step.action}", f"{s.label('Observation', i)} {step.shown_observation()}"]
        return "\n".join(lines) + "\n"

    uses_thoughts = True

    def history(self, state: AgentState) -> str:
        return "".join(self.render_step(step, i) for i, step in enumerate(state.steps, 1))

    def reflection_prefix(self, state: AgentState) -> str:
        return f" {state.reflection}" if state.reflection else ""

    def prompt(self, state: AgentState):
        """The prompt for the next step, in this method's format (str, or chat messages)."""
        if self.fmt == "chat":
            return self.chat_messages(state)
        if self.fmt == "alpaca":
            head = alpaca_prompt(self.question_text(state))
        else:
            head = self.fewshot.text + self.style.question_prefix + self.question_text(state) + "\n"
        return head + self.history(state) + self.cue(state) + self.reflection_prefix(state)

    def chat_messages(self, state: AgentState) -> list:
        messages = [{"role": "system", "content": self.fewshot.text.strip()}] if self.fewshot.text.strip() else []
        messages.append({"role": "user", "content": self.question_text(state)})
        for step in state.steps:
            content = (f"Thought: {step.shown_thought()}\nAction: {step.action}" if self.uses_thoughts
                       else f"Action: {step.action}")
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": f"Observation: {step.shown_observation()}"}]
        return messages

    def stop(self) -> list:
        # Prefix-free across numbered and unnumbered styles; the model must not write observations.
        return ["\nObservation"]

    # --- reading --------------------------------------------------------------------------
    def parse(self, text: str, state: AgentState) -> ParsedStep:
        return parse_step(text)

    def repair_prompt(self, state: AgentState, parsed: ParsedStep):
        """FireAct's repair: show the thought and ask for the action alone. None: no repair."""
        if self.fmt == "chat":
            return None
        return f"{self.prompt(state)} {parsed.thought}\n{self.style.label('Action', len(state.steps) + 1)}"

    def needs_reflection(self, state: AgentState) -> bool:
        return False

    def opening_actions(self, state: AgentState) -> list:
        """(verb, argument) tool calls the loop makes before the first generation (rag: the retrieval)."""
        return []

    def verb(self, verb: str) -> str:
        return self.style.verb(verb)


def register_method(name: str, *aliases: str):
    return METHODS.register(name, *aliases)
