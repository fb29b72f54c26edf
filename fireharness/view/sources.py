"""Readers that turn result files into ``Run``s for the views: ``leaderboard.py`` and the viewer.

Three kinds of file are read, one reader each (adding a format is adding a ``@SOURCES.register``d
function with a ``detect``-able shape):

- ``results/<run>.json``: our summary (EM/F1 with CIs over n_intended); when its ``trajectories``
  file is found, the per-question episodes are read too, so CIs, breakdowns and paired comparisons
  come from the questions themselves.
- ``trajs/<run>.jsonl``: our ``Episode`` records (``fireharness.records``).
- FireAct's released ``trajs/*.json``: ``{index: {reward, em, f1, gt, pred, prompt, traj, ...}}`` named
  ``{task}_{split}_{start}_{end}_{model}_{temperature}_{date}.json`` by FireAct's generation.py.
  Only finished questions are in the file; FireAct divides by ``end - start`` all the same.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from fireharness.records import read_episodes
from fireharness.shards import SHARD_FILE
from fireharness.registry import Registry

# Per-question columns every reader fills (meta columns are added on request by ``attach_meta``).
QUESTION_COLUMNS = ["em", "f1", "finished", "steps", "tool_errors"]
META_KEYS = ("type", "level", "subject")


class LeaderboardInputError(ValueError):
    """A path or file the leaderboard cannot read; the message names the file and the fix."""


@dataclass
class Run:
    name: str
    model: str
    adapter: Optional[str]
    task: str
    split: str
    method: str
    tool: Optional[str]
    n_intended: int
    # One row per question answered or attempted, indexed by task index; None for a results
    # file whose trajectories were not found (then ``summary`` holds the numbers).
    questions: Optional[pd.DataFrame] = None
    intended: Optional[list] = None  # the task indices asked, when known (for breakdown denominators)
    summary: Optional[dict] = None  # the results json, when there is one
    sources: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # temperature, date, format ...
    # The loop that ran it (methods/protocols): react | fireact | lenient; runs under different protocols
    # are different runs (never merged) and say so in their label.
    protocol: Optional[str] = None

    @property
    def key(self) -> tuple:
        return (self.model, self.adapter or "", self.task, self.split, self.method, self.tool or "", self.protocol or "")

    @property
    def label(self) -> str:
        return " ".join(x for x in (self.model, self.adapter, f"[{self.protocol}]" if self.protocol else "") if x)


# --- readers ---------------------------------------------------------------------------------
# name -> (detect(path, data) -> bool, read(path, data) -> list[Run])
SOURCES: Registry = Registry("leaderboard source")


def source(name: str, detect: Callable) -> Callable:
    def decorator(read):
        SOURCES.register(name)((detect, read))
        return read

    return decorator


def _is_results(path: Path, data) -> bool:
    # "em"/"f1" are only there for --evaluate runs; n_intended and trajectories always are.
    return isinstance(data, dict) and "run" in data and ("n_intended" in data or isinstance(data.get("em"), dict))


def _score(value) -> float:
    """An episode's em/f1; None (a run without --evaluate, an answerless split) is not a zero."""
    return float("nan") if value is None else float(value)


def _is_fireact(path: Path, data) -> bool:
    return (isinstance(data, dict) and bool(data) and all(str(k).lstrip("-").isdigit() for k in data)
            and all(isinstance(v, dict) and "em" in v for v in data.values()))


def _is_episodes(path: Path, data) -> bool:
    return path.suffix == ".jsonl"


def _short(name: Optional[str]) -> Optional[str]:
    """A model or adapter path reads as its last component in a table."""
    if not name:
        return name
    return Path(str(name).rstrip("/")).name or str(name)


def episodes_frame(episodes) -> pd.DataFrame:
    """One row per question. With several samples of it (--num_samples): their mean EM/F1/steps, finished
    if any sample finished, and ``samples``, ``correct`` and ``majority_em`` for pass@k and majority vote."""
    from fireharness.stats import majority_vote

    latest = {(int(ep.index), ep.sample): ep for ep in episodes}  # a resumed run may re-do one: the last wins
    by_index: dict = {}
    for (index, _), ep in sorted(latest.items()):
        by_index.setdefault(index, []).append(ep)
    rows = {}
    for index, eps in by_index.items():
        ems = [_score(ep.em) for ep in eps]
        row = {"em": sum(ems) / len(eps), "f1": sum(_score(ep.f1) for ep in eps) / len(eps),
               "finished": any(ep.finished for ep in eps), "steps": sum(ep.n_steps for ep in eps) / len(eps),
               "tool_errors": sum(ep.n_tool_errors for ep in eps)}
        if len(eps) > 1:
            winner = majority_vote([_answer_key(ep) for ep in eps])
            row.update(samples=len(eps), correct=sum(em >= 0.5 for em in ems),
                       majority_em=ems[winner] if winner is not None else 0.0)
        for k in META_KEYS:
            if eps[0].meta.get(k) is not None:
                row[k] = eps[0].meta[k]
        rows[index] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    if df.empty:
        df = pd.DataFrame(columns=QUESTION_COLUMNS)
    df.index.name = "index"
    return df.sort_index()


def _answer_key(ep) -> Optional[str]:
    """The answer a sample votes for: its normalised prediction (HotpotQA's official normaliser)."""
    if not ep.finished or ep.prediction is None:
        return None
    from tasks.metrics import normalize_answer

    return normalize_answer(ep.prediction)


@source("episodes", _is_episodes)
def read_episodes_file(path: Path, data=None) -> list:
    by_run: dict = {}
    for ep in read_episodes(path):
        by_run.setdefault(ep.run or path.stem, []).append(ep)
    if not by_run:
        raise LeaderboardInputError(f"{path} holds no episodes; pass a trajs/<run>.jsonl written by generation.py")
    runs = []
    for name, eps in by_run.items():
        first = eps[0]
        df = episodes_frame(eps)
        run = Run(name=name, model=_short(first.model) or "?", adapter=_short(first.adapter), task=first.task,
                  split=first.split, method=first.method or "?", tool=first.tool, n_intended=len(df),
                  questions=df, sources=[str(path)], extra={"format": first.format}, protocol=first.protocol)
        # The results file beside the trajectories knows how many questions were asked.
        results = path.parent.parent / "results" / f"{path.stem if _is_shard_of(path.stem, name) else name}.json"
        if results.exists():
            try:
                summary = json.loads(results.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                summary = None
            if _is_results(results, summary):
                run.summary = summary
                run.n_intended = max(int(summary.get("n_intended") or 0), len(df))
                run.sources.append(str(results))
        runs.append(run)
    return runs


def _find_trajectories(results_path: Path, rel: Optional[str]) -> Optional[Path]:
    if not rel:
        return None
    rel_path = Path(rel)
    candidates = [rel_path] if rel_path.is_absolute() else [
        results_path.parent.parent / rel_path, Path.cwd() / rel_path, results_path.parent / rel_path.name,
        results_path.parent.parent / "trajs" / rel_path.name]
    return next((c for c in candidates if c.is_file()), None)


@source("results", _is_results)
def read_results_file(path: Path, data) -> list:
    name = data["run"]
    traj = _find_trajectories(path, data.get("trajectories"))
    if traj is not None:
        runs = [r for r in read_episodes_file(traj) if r.name == name]
        if runs:
            run = runs[0]
            run.summary = data
            run.n_intended = max(int(data.get("n_intended") or 0), len(run.questions))
            if str(path) not in run.sources:
                run.sources.append(str(path))
            return [run]
    return [Run(name=name, model=_short(data.get("model")) or "?", adapter=_short(data.get("adapter")),
                task=data.get("task", "?"), split=data.get("split", "?"), method=data.get("method") or "?",
                tool=data.get("tool"), n_intended=int(data.get("n_intended") or (data.get("em") or {}).get("n") or 0),
                summary=data, sources=[str(path)], extra={"format": data.get("format")},
                protocol=data.get("protocol") or "lenient")]  # results written before protocols: lenient


# FireAct's generation.py: f"trajs/{task}_{split}_{start}_{end}_{modelname}_{temperature}_{time}.json"
FIREACT_NAME = re.compile(r"^(?P<task>[a-z0-9]+)_(?P<split>[a-z]+)_(?P<start>\d+)_(?P<end>\d+)_(?P<model>.+)_"
                          r"(?P<temperature>\d+(?:\.\d+)?)_(?P<date>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})$")


def fireact_model(modelname: str) -> tuple:
    """(model, adapter) readable names from FireAct's ``modelname`` part of a trajectory filename.

    FireAct writes ``llama_<peftpath or modelpath with / -> _>`` for Llama, the OpenAI model id
    (``ft:gpt-3.5-turbo-0613:org::id`` with ``:`` -> ``_`` on disk) for GPT.
    """
    low = modelname.lower()
    m = re.search(r"llama-?(\d)-(\d+)b", low)
    if low.startswith("llama") and m:
        model = f"Llama-{m.group(1)}-{m.group(2)}B"
        if "lora" in low:
            return model, "LoRA"
        return model, ("fine-tuned" if ("full" in low or "-d_" in low) else None)
    m = re.match(r"^(ft[_:])?(gpt-[\w.-]+?)(-\d{4})?(?:[_:].*)?$", modelname, re.I)
    if m:
        model = "GPT-" + m.group(2)[4:].replace("-turbo", "-Turbo") + (m.group(3) or "")
        return model, ("fine-tuned" if m.group(1) else None)
    return modelname, None


def _flag(value) -> float:
    """FireAct's em/reward are bools; accept their string forms too."""
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("true", "false", "", "none"):
            return 1.0 if s == "true" else 0.0
        try:
            return float(s)
        except ValueError:
            return 0.0
    return float(value or 0)


def fireact_steps(traj) -> tuple:
    """(actions taken, tool exceptions) in one FireAct trajectory (Alpaca text or chat messages)."""
    if isinstance(traj, str) and traj.lstrip().startswith("[{"):
        try:
            traj = ast.literal_eval(traj)  # the GPT file stores the message list's repr
        except (ValueError, SyntaxError):
            pass
    if isinstance(traj, list):
        acts = sum(1 for m in traj if isinstance(m, dict) and m.get("role") == "assistant")
        text = "\n".join(str(m.get("content", "")) for m in traj if isinstance(m, dict))
    else:
        text = str(traj or "")
        acts = sum(1 for line in text.split("\n") if line.startswith("Action:"))
    # FireAct's generation.py turns a tool exception into this observation.
    return acts, text.count(" generated an exception: ")


@lru_cache(maxsize=None)
def _task(name: str, split: str):
    from tasks import get_task

    try:
        return get_task(name, split)
    except Exception:  # an unknown task or split: no denominators or meta, the row still shows
        return None


@source("fireact", _is_fireact)
def read_fireact_file(path: Path, data) -> list:
    m = FIREACT_NAME.match(path.stem)
    if m is None:
        print(f"leaderboard: warning: {path.name} is not named like FireAct's "
              f"<task>_<split>_<start>_<end>_<model>_<temperature>_<date>.json; n intended = questions in it",
              file=sys.stderr)
        parts = {"task": "?", "split": "?", "model": path.stem}
        start = end = None
    else:
        parts = m.groupdict()
        start, end = int(parts["start"]), int(parts["end"])
    rows, formats = {}, set()
    for key, rec in data.items():
        steps, errors = fireact_steps(rec.get("traj"))
        formats.add("chat" if isinstance(rec.get("traj"), list) or str(rec.get("traj", "")).startswith("[{")
                    else "alpaca")
        # FireAct's info dict only exists for questions that reached finish within 11 iterations.
        rows[int(key)] = {"em": _flag(rec.get("em")), "f1": float(rec.get("f1") or 0.0), "finished": True,
                          "steps": steps, "tool_errors": errors}
    df = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    df.index.name = "index"
    n_intended = (end - start) if start is not None else len(df)
    intended = None
    task = _task(parts["task"], parts["split"]) if start is not None else None
    if task is not None:
        from tasks import eval_indices

        n_intended = len(range(len(task))[start:end])
        for shuffle in (True, False):  # FireAct's --random shuffles with Random(233)
            idxs = eval_indices(len(task), start, end, shuffle=shuffle)
            if set(df.index) <= set(idxs):
                intended = idxs
                break
    model, adapter = fireact_model(parts["model"])
    run = Run(name=path.stem, model=model, adapter=adapter, task=parts["task"], split=parts["split"],
              method="react", tool="google/serpapi", n_intended=max(n_intended, len(df)), questions=df,
              intended=intended, sources=[str(path)], protocol="fireact",
              extra={"format": "/".join(sorted(formats)), "temperature": parts.get("temperature"),
                     "date": parts.get("date"), "fireact_model": parts["model"]})
    return [run]


# --- entry points ----------------------------------------------------------------------------
def read_path(path: Path, strict: bool = True) -> list:
    """Runs in one file. ``strict`` raises on an unknown shape; folders pass False and skip it."""
    data = None
    if path.suffix != ".jsonl":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if not strict:
                return []
            raise LeaderboardInputError(f"{path} is not valid JSON ({e}); pass results/*.json, trajs/*.jsonl "
                                        f"or FireAct trajectory json") from None
    for name in SOURCES.names():
        detect, read = SOURCES.get(name)
        if detect(path, data):
            return read(path, data)
    if strict:
        raise LeaderboardInputError(f"{path} is neither a results file (results/<run>.json), a trajectory "
                                    f"file (trajs/<run>.jsonl) nor a FireAct trajectory json; pass one of those")
    print(f"leaderboard: warning: skipping {path} (not a results, trajectory or FireAct file)", file=sys.stderr)
    return []


def expand_paths(paths) -> list:
    """Files named, and *.json / *.jsonl found under folders named. Checks every path first."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise LeaderboardInputError(f"{', '.join(missing)}: no such file or folder; pass results files, "
                                    f"trajectory files or folders of them (default results/)")
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [(f, False) for f in sorted(p.rglob("*")) if f.suffix in (".json", ".jsonl") and f.is_file()]
        else:
            files.append((p, True))
    return files


def _is_shard_of(stem: str, name: str) -> bool:
    m = SHARD_FILE.match(stem)
    return bool(m) and m.group("run") == name


def _shard_part(run: Run) -> str:
    """'i/N' for a run read from a job array's shard (generation.py --shard), '' for a whole run."""
    for source in run.sources:
        m = SHARD_FILE.match(Path(source).stem)
        if m and m.group("run") == run.name:
            return f"{m.group('i')}/{m.group('n')}"
    return ""


def merge(a: Run, b: Run) -> Run:
    """The same run read twice (its results json and its trajectories): keep the richer record.
    Shards of one run (or a shard beside the merged run): one run over their questions."""
    parts_a, parts_b = a.extra["parts"], b.extra["parts"]
    if a.questions is not None and b.questions is not None and set(parts_a) != set(parts_b):
        new = b.questions[~b.questions.index.isin(a.questions.index)]  # a question is in one shard: first kept
        a.questions = pd.concat([a.questions, new]).sort_index() if len(new) else a.questions
        parts = {k: max(parts_a.get(k, 0), parts_b.get(k, 0)) for k in {**parts_a, **parts_b}}
        a.extra["parts"] = parts
        a.n_intended = max(parts.get("", 0), sum(n for k, n in parts.items() if k), len(a.questions))
        a.summary = a.summary if "" in parts_a else b.summary if "" in parts_b else None  # a shard's is not the run's
        a.sources += [s for s in b.sources if s not in a.sources]
        return a
    if a.questions is None and b.questions is not None:
        a, b = b, a
    if a.summary is None and b.summary is not None:
        a.summary = b.summary
        a.n_intended = max(a.n_intended, int(b.summary.get("n_intended") or 0))
    a.sources += [s for s in b.sources if s not in a.sources]
    return a


def load_runs(paths) -> list:
    runs: dict = {}
    for path, strict in expand_paths(paths):
        for run in read_path(path, strict=strict):
            run.extra.setdefault("parts", {_shard_part(run): run.n_intended})
            runs[run.name] = merge(runs[run.name], run) if run.name in runs else run
    return list(runs.values())


@lru_cache(maxsize=None)
def _hotpotqa_levels() -> dict:
    """FireAct's hotpotqa dev/test json has no ``level``; the shipped distractor records map
    some dev indices (``dev_index``) to their level."""
    task = _task("hotpotqa", "distractor-dev")
    if task is None:
        return {}
    return {r["dev_index"]: r.get("level") for r in task.records if r.get("dev_index") is not None}


def question_meta(task_name: str, split: str, index: int) -> dict:
    task = _task(task_name, split)
    meta = {}
    if task is not None and 0 <= index < len(task):
        meta = dict(task.meta(index))
    if task_name == "hotpotqa" and split == "dev" and "level" not in meta:
        level = _hotpotqa_levels().get(index)
        if level:
            meta["level"] = level
    return meta


def attach_meta(run: Run, by: str) -> pd.Series:
    """The ``by`` value (type, level, subject) of each intended question, 'unknown' where no
    record says; indexed by task index. Episode meta wins over the task's records."""
    index = list(run.intended) if run.intended is not None else list(run.questions.index)
    have = run.questions[by] if by in run.questions.columns else pd.Series(dtype=object)
    values = {}
    for i in index:
        v = have.get(i) if i in have.index else None
        if v is None or (isinstance(v, float) and v != v):
            v = question_meta(run.task, run.split, int(i)).get(by)
        values[i] = v if v is not None else "unknown"
    return pd.Series(values, name=by)
