"""The one trajectory record that flows generation -> conversion -> training data -> leaderboard.

``generation.py`` appends one ``Episode`` per line to ``trajs/<run>.jsonl``; ``finetune.convert``
turns episodes into Alpaca / GPT rows; ``leaderboard.py`` aggregates them. Keep field names stable:
every later stage reads them without reshaping.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA_VERSION = 1


@dataclass
class Step:
    thought: str = ""
    action: str = ""  # the whole action string as the model wrote it, e.g. "search[Milhouse]"
    action_type: str = ""  # normalised lower-case verb: search, lookup, finish, or "" when unparsable
    argument: str = ""
    observation: Optional[str] = None  # what the agent was shown (None when a tool error replaced it)
    tool: Optional[str] = None  # tool that answered, e.g. "wikipedia", "google"
    source: Optional[str] = None  # which backend answered: "live", "offline", "cache", "fallback:wikipedia"
    tool_error: Optional[str] = None  # a tool fault after retries, distinct from an observation
    raw: str = ""  # the model's text for this step before parsing
    repaired: bool = False  # the action came from FireAct's repair prompt
    reflection: Optional[str] = None  # Reflexion's self-reflection shown before this step
    latency_s: float = 0.0  # tool latency

    def shown_thought(self) -> str:
        """The thought as the agent wrote it: FireAct's Reflexion prepends the reflection to the
        next thought on the same line."""
        if self.reflection:
            return f"{self.reflection.strip()} {self.thought or ''}".strip()
        return self.thought or ""

    def shown_observation(self) -> str:
        """The observation line the agent saw (a tool error is shown to it as such)."""
        if self.observation is not None:
            return self.observation
        return f"Tool error: {self.tool_error}" if self.tool_error else ""


@dataclass
class Episode:
    task: str
    split: str
    index: int
    question: str
    gold: Any = None
    prediction: Optional[str] = None
    em: float = 0.0
    f1: float = 0.0
    reward: float = 0.0
    finished: bool = False  # the agent called finish (or answered, for IO/CoT)
    steps: list = field(default_factory=list)
    method: str = ""
    format: str = "text"  # text | chat | alpaca
    # The loop that produced it (methods/protocols): react | fireact | lenient (every run before protocols existed)
    protocol: str = "lenient"
    model: str = ""
    adapter: Optional[str] = None
    tool: Optional[str] = None  # tool name and backend, e.g. "google/offline"
    run: str = ""
    similarity: Optional[float] = None  # cosine of the embedded prediction and gold, for tasks that ask for it
    sample: int = 0  # which of the run's samples of this question (generation.py --num_samples), from 0
    meta: dict = field(default_factory=dict)  # id, type, level, subject ... for breakdowns
    timings: dict = field(default_factory=dict)  # seconds: model, tools, total
    tokens: dict = field(default_factory=dict)  # prompt, generated, computed (prompt tokens actually run)
    error: Optional[str] = None  # why the episode ended without an answer, if it did
    schema: int = SCHEMA_VERSION

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def n_tool_errors(self) -> int:
        return sum(1 for s in self.steps if s.tool_error)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_steps"] = self.n_steps
        d["n_tool_errors"] = self.n_tool_errors
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Episode":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        step_names = {f.name for f in dataclasses.fields(Step)}
        kwargs["steps"] = [Step(**{k: v for k, v in s.items() if k in step_names}) for s in d.get("steps", [])]
        return cls(**kwargs)


def episode_key(ep: Episode) -> tuple:
    """What identifies an episode within its run: resuming skips the keys already on disk."""
    return (ep.index, ep.sample)


def sample_seed(run: str, index: int, sample: int, seed: int = 0) -> int:
    """The sampling seed of one episode, from its identity (run, index, sample) and the run's --seed: a
    resumed, re-sent or elsewhere-run sample draws the same tokens. 31 bits, which every API accepts."""
    digest = hashlib.sha256(f"{seed}:{run}:{index}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def read_episodes(path: str | Path) -> Iterator[Episode]:
    """Read a ``trajs/*.jsonl`` file. A torn last line (a run killed mid-write) is skipped."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield Episode.from_dict(json.loads(line))
            except json.JSONDecodeError:
                continue  # only a crash mid-append leaves a partial line; the run re-does that index


def append_episode(path: str | Path, episode: Episode) -> None:
    """Append one finished episode and flush it to disk before returning."""
    import os

    line = json.dumps(episode.to_dict(), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def repair_jsonl(path: str | Path) -> int:
    """Cut a torn trailing line left by a process killed mid-append, so that the next append
    starts on a fresh line. Returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    return len(data) - keep
