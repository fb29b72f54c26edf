"""Protocols: how an agent's step texts become actions and observations, step for step.

A protocol is the loop around the model: which prompt each generation gets, with which stop and token
budget, how a text is split into thought and action, what is done with a text that has no action,
what string reaches the tool and what observation string comes back. Published numbers are only
comparable when the loop is the published one, so each seed's loop is one protocol here:

- ``react``: the ReAct paper's ``webthink`` loop (``hotpotqa.ipynb``), for its Wikipedia prompts.
- ``fireact``: FireAct's ``generation.py`` with ``models/llama.py``, for its Google prompts and
  its fine-tuned (Alpaca) format.
- ``lenient``: this project's forgiving parser (``methods/parsing.py``; the loop in
  ``methods/agent.py``): any step number, any case, the first well-formed action, one repair prompt.

``default_protocol`` picks the seed's by prompt family; ``--protocol`` overrides it. The protocol is
recorded in every Episode, the run's results and its default name, and shown in leaderboard labels.
"""
from __future__ import annotations

from typing import Iterator, Optional

from fireharness.registry import Registry

PROTOCOLS: Registry = Registry("protocol", package="methods.protocols")


class ProtocolError(ValueError):
    """This protocol cannot run the requested method/format (one line, raised before any work)."""


class Protocol:
    name = ""
    max_steps = 11  # defaults for --max_steps / --max_tokens when they are not given
    max_tokens = 256

    def __init__(self, *, empty_result: str = "message"):
        self.empty_result = empty_result

    def check(self, method, fmt: str) -> None:
        """Raise ProtocolError when this protocol does not define a loop for the method/format."""

    def episode(self, loop, state) -> Iterator:
        """One episode as a generator of ``methods.agent.Ask`` / ``Act`` (see AgentLoop.run)."""
        raise NotImplementedError


def register_protocol(name: str, *aliases: str):
    return PROTOCOLS.register(name, *aliases)


def default_protocol(method: str, fmt: str, numbered_prompt: bool) -> str:
    """The seed protocol of a prompt family: ReAct's numbered Wikipedia prompts -> ``react``;
    FireAct's unnumbered Google prompts and its fine-tuned Alpaca format -> ``fireact``. Methods and
    formats neither seed's loop defines (act, reflexion, io, cot, chat) -> ``lenient``."""
    if method != "react" or fmt == "chat":
        return "lenient"
    if fmt == "text" and numbered_prompt:
        return "react"
    return "fireact"


def get_protocol(name: str, **kwargs) -> Protocol:
    return PROTOCOLS.get(name)(**kwargs)


def record_tool_call(loop, state, step, obs) -> None:
    """Which tool answered a step, how, and how long it took (the observation text is the protocol's)."""
    step.tool, step.source, step.tool_error, step.latency_s = loop.tool.name, obs.source, obs.error, obs.latency_s
    state.timings["tool_s"] += obs.latency_s


def none_if_empty(protocol: Protocol, obs) -> Optional[str]:
    """A search that found nothing, as the protocol shows it: our message (``empty_result="message"``)
    or FireAct's ``None`` (``"none"``: its ``search()`` returns None and the prompt says "None")."""
    if getattr(obs, "empty", False) and protocol.empty_result == "none":
        return "None"
    return obs.text
