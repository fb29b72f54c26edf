"""What the viewer shows, read only from under the roots it was given.

A ``Catalog`` finds the runs under its roots (``trajs/<run>.jsonl`` episodes, ``results/<run>.json``
summaries, FireAct's released trajectory json, loop experiments' ``manifest.json``) and keeps, per run,
one small row per episode (question, gold, prediction, scores, flags) plus where its full record lies
on disk, so that a 10,000-episode run costs a few MB and an episode is read only when it is opened.
A trajectory file still being written is read on from where it was left (``refresh``).

The numbers are the leaderboard's: run scores through ``leaderboard.leaderboard_frame``, paired
comparisons through ``leaderboard.paired_em`` / ``compare_runs`` (McNemar's exact test), the plot through
``leaderboard.plot_leaderboard``. Nothing here writes to disk.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import leaderboard
from fireharness.records import Episode
from fireharness.view.sources import FIREACT_NAME, META_KEYS, Run, episodes_frame, read_fireact_file

# Longest text kept per row for the table and its search; the episode view shows the whole of it.
ROW_TEXT_LIMIT = 2000
RESCAN_INTERVAL_S = 2.0
HEAD_BYTES = 4096
FIREACT_HEAD = re.compile(r'^\{\s*"-?\d+"\s*:\s*\{\s*"(reward|em|f1|gt|pred|prompt|traj)"')


def to_json(payload) -> bytes:
    """JSON with NaN as null (the browser's JSON.parse rejects NaN); rows are clean already, so the
    walk over every value runs only when a NaN or a numpy scalar is in the payload."""
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError):
        pass

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if hasattr(x, "item"):  # numpy scalars
            return clean(x.item())
        return x
    return json.dumps(clean(payload), ensure_ascii=False, default=str).encode("utf-8")


class ViewInputError(ValueError):
    """A path the viewer cannot show; the message names it and the fix."""


def _finite(x) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _text(x, limit: int = ROW_TEXT_LIMIT) -> str:
    s = "" if x is None else (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))
    return s if len(s) <= limit else s[:limit] + "…"


def episode_row(d: dict) -> dict:
    """The table row of one episode record (``Episode.to_dict()`` shape)."""
    steps = d.get("steps") or []
    meta = d.get("meta") or {}
    row = {"index": int(d.get("index", 0)), "question": _text(d.get("question")),
           "gold": _text(d.get("gold")), "prediction": _text(d.get("prediction")),
           "em": _finite(d.get("em")), "f1": _finite(d.get("f1")), "finished": bool(d.get("finished")),
           "steps": len(steps), "tool_errors": sum(1 for s in steps if s.get("tool_error")),
           "repaired": sum(1 for s in steps if s.get("repaired")),
           # FireAct's parse gives no verb for an action it cannot read ("" action_type)
           "invalid": sum(1 for s in steps if not s.get("action_type"))}
    for k in ("sample", "error", "protocol"):  # only when present: 10,000 rows travel to the browser
        if d.get(k) is not None:
            row[k] = d[k]
    for k in META_KEYS:
        if meta.get(k) is not None:
            row[k] = str(meta[k])
    return row


def row_key(row: dict) -> tuple:
    return (row["index"], row.get("sample"))


def within(path: Path, roots) -> bool:
    """True when ``path`` (symlinks resolved) lies under one of ``roots`` (already resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return any(real == r or r in real.parents for r in roots)


# --- one run -----------------------------------------------------------------------------------
@dataclass
class RunEntry:
    """One run: its rows in file order (a re-done index replaces its row in place)."""
    id: int
    name: str
    kind: str  # episodes | fireact | results
    files: list = field(default_factory=list)  # trajectory files (shards of one run read as one)
    results: Optional[dict] = None
    results_path: Optional[Path] = None
    rows: list = field(default_factory=list)
    where: list = field(default_factory=list)  # per row: (file number, byte offset, length) or an Episode dict
    keys: dict = field(default_factory=dict)  # (index, sample) -> row position
    first: dict = field(default_factory=dict)  # the first record's run-level fields (model, task ...)
    generation: int = 0  # bumped whenever rows change other than by appending
    experiment: Optional[int] = None
    fireact_run: Optional[Run] = None
    _summary: Optional[tuple] = None  # (version, dict)
    _rows_json: Optional[tuple] = None  # (version, bytes)

    @property
    def version(self) -> tuple:
        return (self.generation, len(self.rows), self.results.get("n_intended") if self.results else None)

    def add(self, row: dict, where) -> None:
        key = row_key(row)
        pos = self.keys.get(key)
        if pos is None:
            self.keys[key] = len(self.rows)
            self.rows.append(row)
            self.where.append(where)
        else:  # a resumed run re-did this question: the last record wins, as in the leaderboard
            self.rows[pos], self.where[pos] = row, where
            self.generation += 1

    def reset(self) -> None:
        self.rows, self.where, self.keys = [], [], {}
        self.generation += 1

    # The leaderboard's Run, so that every number is computed where the leaderboard computes it.
    def leaderboard_run(self) -> Run:
        if self.fireact_run is not None:
            return self.fireact_run
        r, first = self.results or {}, self.first
        n_rows = len({row["index"] for row in self.rows})
        questions = None
        if self.rows:
            questions = episodes_frame(SimpleNamespace(
                index=row["index"], sample=row.get("sample"), prediction=row["prediction"] if row["finished"] else None,
                em=row["em"], f1=row["f1"], finished=row["finished"], n_steps=row["steps"],
                n_tool_errors=row["tool_errors"], meta={k: row[k] for k in META_KEYS if k in row})
                for row in self.rows)
        short = lambda x: Path(str(x).rstrip("/")).name if x else x  # noqa: E731 (as the leaderboard labels)
        run = Run(name=self.name, model=short(first.get("model") or r.get("model")) or "?",
                  adapter=short(first.get("adapter") or r.get("adapter")),
                  task=first.get("task") or r.get("task") or "?", split=first.get("split") or r.get("split") or "?",
                  method=first.get("method") or r.get("method") or "?", tool=first.get("tool") or r.get("tool"),
                  n_intended=max(int(r.get("n_intended") or 0), n_rows), questions=questions, summary=self.results)
        # The loop that ran it, as the leaderboard's readers label it (records from before protocols: the
        # Episode default); set after construction, so that a Run without the field still builds.
        default = getattr(Episode, "protocol", None)
        run.protocol = first.get("protocol") or r.get("protocol") or (default if isinstance(default, str) else None)
        return run


# --- files -------------------------------------------------------------------------------------
class EpisodeFile:
    """A ``trajs/<run>.jsonl`` read incrementally: each refresh parses only the bytes appended since."""

    def __init__(self, path: Path, number: int):
        self.path, self.number = path, number
        self.offset = 0
        self.ident = None

    def refresh(self, catalog: "Catalog") -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        ident = (st.st_ino, st.st_dev)
        if self.ident is not None and (ident != self.ident or st.st_size < self.offset):
            catalog.forget_file(self)  # rewritten or truncated (a repaired torn line): read it again
            self.offset = 0
        self.ident = ident
        if st.st_size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        end = data.rfind(b"\n") + 1  # a torn last line is read once it is complete
        pos = 0
        while pos < end:
            nl = data.index(b"\n", pos)
            line = data[pos:nl]
            start = self.offset + pos
            pos = nl + 1
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(d, dict) and "question" in d:
                catalog.add_record(self, d, (self.number, start, len(line)))
        self.offset += end


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(HEAD_BYTES).lstrip()
    except OSError:
        return ""


def _is_episodes_file(path: Path) -> bool:
    head = _head(path)
    if not head.startswith("{"):
        return False
    first = head.split("\n", 1)[0]
    return '"question"' in first and ('"steps"' in first or '"schema"' in first or len(first) >= HEAD_BYTES - 1)


# --- the catalog -------------------------------------------------------------------------------
class Catalog:
    def __init__(self, paths):
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise ViewInputError(f"{', '.join(missing)}: no such file or folder; pass output folders (with trajs/ "
                                 f"and results/), trajs/*.jsonl, results/*.json, FireAct trajectory json or loop "
                                 f"experiment folders")
        self.paths = [Path(p) for p in paths]
        self.roots = [Path(p).resolve() for p in paths]
        self.lock = threading.RLock()
        self.runs: dict = {}  # name -> RunEntry
        self.by_id: dict = {}
        self.files: dict = {}  # resolved path -> EpisodeFile
        self.file_list: list = []
        self.seen: dict = {}  # resolved path -> mtime of json files read (results, manifests)
        self.experiments: dict = {}  # resolved dir -> {"id", "dir", "manifest"}
        self.skipped: list = []  # (path, why): symlinks out of the roots, unreadable files
        self.last_scan = 0.0
        self._plot = None
        self.scan()
        if not self.runs and not self.experiments:
            raise ViewInputError(f"{', '.join(map(str, paths))}: holds no runs (no trajs/*.jsonl, results/*.json, "
                                 f"FireAct trajectory json or manifest.json); pass an output folder of generation.py")

    # -- discovery ------------------------------------------------------------------------------
    def _walk(self):
        """Files under the roots; a symlink whose target lies outside every root is skipped."""
        for root, given in zip(self.roots, self.paths):
            if root.is_file():
                yield root
                continue
            for dirpath, dirnames, filenames in os.walk(root):  # does not descend into symlinked folders
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    if not name.endswith((".json", ".jsonl")):
                        continue
                    if p.is_symlink() and not within(p, self.roots):
                        self.skipped.append((str(p), "a symlink out of the given paths"))
                        continue
                    yield p

    def scan(self) -> None:
        with self.lock:
            self.last_scan = time.monotonic()
            self.skipped = []
            for p in self._walk():
                real = p.resolve()
                if p.suffix == ".jsonl":
                    if real not in self.files and _is_episodes_file(p):
                        ef = EpisodeFile(real, len(self.file_list))
                        self.files[real] = ef
                        self.file_list.append(ef)
                    continue
                try:
                    mtime = os.stat(real).st_mtime_ns
                except OSError:
                    continue
                if self.seen.get(real) == mtime:
                    continue
                self.seen[real] = mtime
                self._read_json(p, real)
            for ef in self.file_list:
                ef.refresh(self)
            for run in self.runs.values():
                self._assign_experiment(run)

    def refresh(self, force: bool = False) -> None:
        """Pick up appended episodes and new files (at most every RESCAN_INTERVAL_S)."""
        with self.lock:
            if force or time.monotonic() - self.last_scan >= RESCAN_INTERVAL_S:
                self.scan()

    def _entry(self, name: str, kind: str) -> RunEntry:
        run = self.runs.get(name)
        if run is None:
            run = RunEntry(id=len(self.by_id), name=name, kind=kind)
            self.runs[name] = run
            self.by_id[run.id] = run
        return run

    def _read_json(self, p: Path, real: Path) -> None:
        head = _head(real)
        if p.name == "manifest.json":
            try:
                manifest = json.loads(real.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.skipped.append((str(p), "not valid JSON"))
                return
            exp = self.experiments.get(real.parent)
            if exp is None:
                exp = self.experiments[real.parent] = {"id": len(self.experiments), "dir": real.parent}
            exp["manifest"] = manifest
            return
        if FIREACT_HEAD.match(head):
            self._read_fireact(p, real)
            return
        if not head.startswith("{") or '"run"' not in head:
            return
        try:
            data = json.loads(real.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.skipped.append((str(p), "not valid JSON"))
            return
        if not (isinstance(data, dict) and isinstance(data.get("run"), str)
                and ("n_intended" in data or isinstance(data.get("em"), dict))):
            return
        run = self._entry(data["run"], "results")
        run.results, run.results_path = data, real
        traj = data.get("trajectories")
        if traj:  # its trajectories, when they lie under the roots (never outside them)
            for cand in (real.parent.parent / traj, real.parent.parent / "trajs" / Path(traj).name):
                if cand.is_file() and within(cand, self.roots) and cand.resolve() not in self.files \
                        and _is_episodes_file(cand):
                    ef = EpisodeFile(cand.resolve(), len(self.file_list))
                    self.files[ef.path] = ef
                    self.file_list.append(ef)
                    break

    def _read_fireact(self, p: Path, real: Path) -> None:
        from finetune.readers import read_fireact_trajs

        try:
            data = json.loads(real.read_text(encoding="utf-8"))
            lb_run = read_fireact_file(real, data)[0]
            episodes = read_fireact_trajs(real)
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.skipped.append((str(p), f"unreadable FireAct trajectory json ({e})"))
            return
        run = self._entry(lb_run.name, "fireact")
        run.reset()
        run.fireact_run = lb_run
        run.files = [real]
        m = FIREACT_NAME.match(real.stem)
        run.first = {"model": lb_run.model, "adapter": lb_run.adapter, "task": lb_run.task, "split": lb_run.split,
                     "method": lb_run.method, "tool": lb_run.tool,
                     "date": m.group("date") if m else None}
        for ep in episodes:
            d = ep.to_dict()
            d["meta"] = {}
            run.add(episode_row(d), d)

    def add_record(self, ef: EpisodeFile, d: dict, where) -> None:
        name = d.get("run") or ef.path.stem
        run = self._entry(name, "episodes")
        run.kind = "episodes"  # its results file may have been read first
        if ef.path not in run.files:
            run.files.append(ef.path)
        if not run.first:
            run.first = {k: d.get(k) for k in ("model", "adapter", "task", "split", "method", "tool", "format",
                                              "protocol")}
        run.add(episode_row(d), where)

    def forget_file(self, ef: EpisodeFile) -> None:
        for run in self.runs.values():
            if ef.path in run.files:
                keep = [(r, w) for r, w in zip(run.rows, run.where)
                        if not (isinstance(w, tuple) and w[0] == ef.number)]
                run.reset()
                for r, w in keep:
                    run.add(r, w)

    def _assign_experiment(self, run: RunEntry) -> None:
        for d, exp in self.experiments.items():
            if any(d in Path(f).parents for f in run.files) or (run.results_path and d in run.results_path.parents):
                run.experiment = exp["id"]

    # -- what the pages show ---------------------------------------------------------------------
    def run(self, run_id) -> RunEntry:
        try:
            return self.by_id[int(run_id)]
        except (KeyError, ValueError, TypeError):
            raise KeyError(f"no run {run_id!r}") from None

    def summary(self, run: RunEntry) -> dict:
        if run._summary and run._summary[0] == run.version:
            return run._summary[1]
        lb_run = run.leaderboard_run()
        if lb_run.questions is None and lb_run.summary is None:
            return {}
        row = leaderboard.leaderboard_frame([lb_run]).iloc[0].to_dict()
        r = run.results or {}
        out = {k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()}
        date = run.first.get("date")
        if not date:
            stamp = max((os.stat(f).st_mtime for f in run.files if os.path.exists(f)), default=None) \
                or (run.results_path and os.stat(run.results_path).st_mtime)
            date = time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else None
        out.update({"id": run.id, "name": run.name, "kind": run.kind, "date": date, "episodes": len(run.rows),
                    "protocol": getattr(lb_run, "protocol", None),
                    "samples": r.get("num_samples") or (1 + max((x.get("sample") or 0 for x in run.rows), default=0)),
                    "experiment": run.experiment, "has_episodes": bool(run.rows),
                    "note": None if run.rows or run.kind == "fireact" else
                    "trajectories not under the given paths: only the results file's numbers"})
        run._summary = (run.version, out)
        return out

    def runs_payload(self) -> dict:
        with self.lock:
            runs = [self.summary(r) for r in sorted(self.runs.values(), key=lambda r: r.id)]
            runs = [r for r in runs if r]
            return {"runs": runs, "experiments": [self.experiment_brief(e) for e in self.experiments.values()],
                    "version": [list(self.by_id[r["id"]].version) for r in runs],
                    "skipped": [{"path": p, "why": w} for p, w in self.skipped]}

    def rows_payload(self, run_id, gen: Optional[int] = None, count: Optional[int] = None) -> dict:
        with self.lock:
            run = self.run(run_id)
            if gen == run.generation and count is not None and 0 <= count <= len(run.rows):
                rows, start = run.rows[count:], count  # only what was appended since the client's copy
            else:
                rows, start = run.rows, 0
            return {"run": self.summary(run), "generation": run.generation, "start": start, "total": len(run.rows),
                    "rows": rows}

    def rows_json(self, run_id) -> bytes:
        """``rows_payload`` of a whole run as JSON, encoded once per version of the run (a 10,000-episode
        run is 3 MB: encoding it takes longer than sending it)."""
        with self.lock:
            run = self.run(run_id)
            if run._rows_json is None or run._rows_json[0] != run.version:
                run._rows_json = (run.version, to_json(self.rows_payload(run_id)))
            return run._rows_json[1]

    def episode(self, run_id, pos) -> dict:
        with self.lock:
            run = self.run(run_id)
            pos = int(pos)
            if not 0 <= pos < len(run.rows):
                raise KeyError(f"run {run.name} has no episode {pos}")
            where = run.where[pos]
            if isinstance(where, dict):
                d = dict(where)
            else:
                number, offset, length = where
                with open(self.file_list[number].path, "rb") as f:
                    f.seek(offset)
                    d = json.loads(f.read(length))
            d["pos"] = pos
            d["run_id"] = run.id
            d["n_rows"] = len(run.rows)
            d["run_samples"] = self.summary(run).get("samples") or 1
            d["supporting"] = supporting_facts(d)
            for k in ("em", "f1"):
                d[k] = _finite(d.get(k))
            return d

    def episodes_chunk(self, run_id, start: int, stop: int) -> list:
        return [self.episode(run_id, i) for i in range(start, min(stop, len(self.run(run_id).rows)))]

    def compare(self, a_id, b_id) -> dict:
        with self.lock:
            a_entry, b_entry = self.run(a_id), self.run(b_id)
            a, b = a_entry.leaderboard_run(), b_entry.leaderboard_run()
        table, note = leaderboard.compare_runs(a, b)  # LeaderboardInputError: not comparable
        both, em_a, em_b = leaderboard.paired_em(a, b)
        cells = {"rr": [], "rw": [], "wr": [], "ww": []}
        for i, x, y in zip(both, em_a, em_b):
            cells[("r" if x >= 0.5 else "w") + ("r" if y >= 0.5 else "w")].append(int(i))
        pos_a = {r["index"]: p for p, r in enumerate(a_entry.rows) if not r.get("sample")}
        pos_b = {r["index"]: p for p, r in enumerate(b_entry.rows) if not r.get("sample")}
        return {"a": a_entry.id, "b": b_entry.id, "cells": cells, "n_paired": len(both),
                "p_mcnemar": leaderboard.mcnemar_exact(len(cells["rw"]), len(cells["wr"])),
                "pos_a": {str(i): pos_a.get(i) for i in both}, "pos_b": {str(i): pos_b.get(i) for i in both},
                "note": note, "columns": list(table.columns), "table": table.astype(str).values.tolist()}

    def comparable_pairs(self) -> list:
        with self.lock:
            runs = [r for r in self.runs.values() if r.rows]
            keys = {r.id: (r.leaderboard_run().task, r.leaderboard_run().split) for r in runs}
        return [(a.id, b.id) for a in runs for b in runs if a.id != b.id and keys[a.id] == keys[b.id]]

    def leaderboard_runs(self) -> list:
        with self.lock:
            return [r.leaderboard_run() for r in self.runs.values() if r.rows or r.results]

    def leaderboard_payload(self) -> dict:
        lb_runs = self.leaderboard_runs()
        df = leaderboard.leaderboard_frame(lb_runs)
        if df.empty:
            return {"columns": [], "rows": [], "ids": []}
        shown = leaderboard.display_frame(df)
        ids = [self.runs[name].id for name in df["run"]]
        return {"columns": list(shown.columns), "rows": shown.astype(str).values.tolist(), "ids": ids}

    def plot_png(self) -> bytes:
        """The leaderboard's plot, drawn again only when a run changed (matplotlib takes seconds)."""
        with self.lock:
            version = [(r.id, r.version) for r in self.runs.values()]
            if self._plot and self._plot[0] == version:
                return self._plot[1]
            df = leaderboard.leaderboard_frame(self.leaderboard_runs())
        buf = io.BytesIO()
        if not df.empty:
            leaderboard.plot_leaderboard(df, buf)
        self._plot = (version, buf.getvalue())
        return self._plot[1]

    def experiment_brief(self, exp: dict) -> dict:
        return {"id": exp["id"], "dir": exp["dir"].name}

    def experiment(self, exp_id) -> dict:
        with self.lock:
            for exp in self.experiments.values():
                if str(exp["id"]) == str(exp_id):
                    runs = [self.summary(r) for r in self.runs.values() if r.experiment == exp["id"]]
                    return {"id": exp["id"], "dir": exp["dir"].name, "manifest": exp.get("manifest"),
                            "runs": [r for r in runs if r]}
        raise KeyError(f"no experiment {exp_id!r}")


# --- HotpotQA distractor records: which supporting pages the agent searched -------------------
@lru_cache(maxsize=8)
def _task(name: str, split: str):
    from tasks import get_task

    try:
        return get_task(name, split)
    except Exception:  # unknown task or split: no supporting facts to show
        return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", str(s)).strip().lower()


def supporting_facts(d: dict) -> list:
    """[{title, searched}] for a HotpotQA distractor record (supporting facts are [title, sentence])."""
    if d.get("task") != "hotpotqa" or d.get("split") != "distractor-dev":
        return []
    task = _task("hotpotqa", "distractor-dev")
    idx = d.get("index")
    if task is None or not isinstance(idx, int) or not 0 <= idx < len(task):
        return []
    titles = list(dict.fromkeys(t for t, _ in task.record(idx).get("supporting_facts") or []))
    searched = {_norm(s.get("argument") or "") for s in d.get("steps") or [] if s.get("action_type") == "search"}
    return [{"title": t, "searched": _norm(t) in searched} for t in titles]
