"""The tool interface. A tool is built once per run from a ``ToolConfig``; each episode opens a
``ToolSession`` (Wikipedia's ``lookup`` needs the page the episode last opened) and calls
``session.act(verb, argument)`` from worker threads, so a session's tool must be thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from fireharness.registry import Registry

TOOLS: Registry = Registry("tool", package="tools")


class ToolSetupError(RuntimeError):
    """Raised by ``Tool.check()`` before any work starts (missing key, missing index...)."""


class InvalidAction(ValueError):
    """The agent asked for a verb this tool does not have; shown to it as an observation."""


@dataclass
class ToolConfig:
    offline: bool = False
    search_fallback: Optional[str] = None  # "wikipedia": answer an uncached Google query offline
    cache_path: Optional[str] = None  # Google's search.json (default: the shipped cache, copied)
    extra_caches: list = field(default_factory=list)  # FireAct search.json files to merge in
    index_dir: Optional[str] = None  # offline Wikipedia index location (default: cache dir)
    corpus: Optional[str] = None  # HotpotQA-format corpus to index (default: shipped paragraphs)
    retriever: Optional[str] = None  # bm25 | dense | hybrid (retrieve; wikipedia: how a miss finds similar titles)
    index: Optional[str] = None  # retrieve: a build-index name or directory (default: the shipped paragraphs)
    top_k: int = 3  # retrieve: passages per search
    timeout_s: float = 10.0
    retries: int = 4  # attempts after the first, with exponential backoff
    backoff_s: float = 0.5  # first backoff; doubles per attempt (tests set it tiny)
    max_wait_s: float = 30.0  # cap on one wait, including a server's Retry-After


@dataclass
class Observation:
    text: Optional[str]  # what the agent sees; None when the tool failed (see error)
    source: str  # "live", "offline", "cache", "fallback:wikipedia", "none"
    error: Optional[str] = None  # a tool fault that survived the retries
    latency_s: float = 0.0
    empty: bool = False  # the search answered, with nothing (Google: a null result); text says so


class ToolSession:
    def act(self, verb: str, argument: str) -> Observation:
        raise NotImplementedError


class Tool:
    name: str = ""
    verbs: tuple = ()  # e.g. ("search", "lookup"); "finish" is the runner's, never a tool's

    def __init__(self, config: ToolConfig):
        self.config = config

    def check(self) -> None:
        """Fail fast with one clear line (ToolSetupError) when the tool cannot work as configured."""

    def session(self) -> ToolSession:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def backend(self) -> str:
        return "offline" if self.config.offline else "live"


def register_tool(name: str, *aliases: str):
    return TOOLS.register(name, *aliases)


def get_tool(name: str, config: ToolConfig | None = None) -> Tool:
    return TOOLS.get(name)(config or ToolConfig())
