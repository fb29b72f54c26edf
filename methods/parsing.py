"""Tolerant, bounded parsing of a model's step text into (thought, action).

Small models write "Action:" in the wrong case, forget it, number it, put several actions in one
step or trail off without the closing bracket; every such text parses to the first well-formed
action it contains, or to no action (the runner then tries FireAct's repair prompt once).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_THOUGHT_LABEL = re.compile(r"^\s*thought\s*\d*\s*:\s*", re.I)
_ACTION_LABEL = re.compile(r"(?:^|\n)[ \t]*action\s*\d*\s*:[ \t]*", re.I)
_CALL = re.compile(r"([A-Za-z_][\w ]{0,30}?)\s*\[")
_BARE_CALL = re.compile(r"\b(search|lookup|finish)\s*\[", re.I)
_ANSWER_LABEL = re.compile(r"(?:^|\n)[ \t]*(?:final\s+)?answer\s*:[ \t]*", re.I)


@dataclass
class ParsedStep:
    thought: str
    verb: Optional[str]  # lower-case action verb, None when the text holds no action
    argument: str = ""
    action: str = ""  # the action as written, e.g. "Search[Milhouse]"


def one_line(text: str) -> str:
    return " ".join(text.split())


def _call(text: str) -> Optional[tuple[str, str, str]]:
    """The first ``verb[argument]`` in text: (verb, argument, as written). The argument runs to
    the bracket that closes it, else to the end of the line."""
    m = _CALL.search(text)
    if not m:
        return None
    verb = m.group(1).strip()
    depth, i = 1, m.end()
    while i < len(text) and depth:
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
        elif text[i] == "\n":
            break
        i += 1
    closed = depth == 0
    argument = text[m.end(): i - 1 if closed else i].strip()
    return verb.lower().replace(" ", "_"), argument, f"{verb}[{argument}]"


def parse_step(text: str) -> ParsedStep:
    text = _THOUGHT_LABEL.sub("", text.strip(), count=1)
    m = _ACTION_LABEL.search(text)
    if m:
        thought, rest = text[: m.start()], text[m.end():]
    else:
        bare = _BARE_CALL.search(text)
        if not bare:
            return ParsedStep(thought=one_line(text), verb=None)
        thought, rest = text[: bare.start()], text[bare.start():]
    call = _call(rest.split("\n", 1)[0]) if rest.strip() else None
    if call is None:
        return ParsedStep(thought=one_line(thought), verb=None)
    verb, argument, written = call
    return ParsedStep(thought=one_line(thought), verb=verb, argument=one_line(argument), action=written)


def parse_answer(text: str) -> ParsedStep:
    """IO / CoT: ``[Thought: ...] Answer: X``; also accepts ReAct's ``finish[X]``."""
    text = _THOUGHT_LABEL.sub("", text.strip(), count=1)
    m = _ANSWER_LABEL.search(text)
    if m:
        answer = one_line(text[m.end():].split("\n", 1)[0])
        return ParsedStep(thought=one_line(text[: m.start()]), verb="finish", argument=answer,
                          action=f"finish[{answer}]")
    step = parse_step(text)
    if step.verb == "finish":
        return step
    if not step.verb and "\n" not in text.strip() and text.strip():
        # IO with the "Answer:" cue already in the prompt: the whole text is the answer.
        answer = one_line(text)
        return ParsedStep(thought="", verb="finish", argument=answer, action=f"finish[{answer}]")
    return ParsedStep(thought=one_line(text), verb=None)
