"""Data-only tasks: a YAML file names the questions and how to score them, as lm-evaluation-harness's
task YAMLs do; no Python needed.

    task: mydocs-qa                 # the name (--task mydocs-qa once registered); default: the file name
    description: Questions about our documentation
    splits:                         # split -> questions, relative to this file: .jsonl(.gz), .json, .csv,
      dev: questions.jsonl          #   or a `datasets` dataset saved with save_to_disk (a DatasetDict's
      test: test.csv                #   split of the same name is taken)
    answerless_splits: [test]       # splits without answers (cannot be --evaluate'd)
    question_field: query           # lm-eval's doc_to_text; default "question"
    answer_field: reference         # lm-eval's doc_to_target; default "answer"
    id_field: qid                   # optional
    metadata_fields: [kind]         # kept in each episode's meta, broken down in results
    metric: em_f1                   # em_f1 | yes_no | letter | similarity (em_f1 + cosine of embeddings)
    prompts:                        # method -> few-shot prompt name (methods/prompts.py) or file
      io: io_hotpotqa
      react: react_hotpotqa_google
    tool: retrieve                  # the tool the prompts expect (documentation; pass --tool)
    index: mydocs                   # the retrieve tool's default --index for this task

Registered like the built-in tasks: ``--task path/to/task.yaml`` (or a folder holding one task), every
YAML in the folders of ``FIREHARNESS_TASKS`` (``os.pathsep``-separated) and in ``tasks/yaml/``;
``python -m tasks [PATH...]`` lists them. A wrong field, value or file stops with one line that names it.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Optional

from fireharness.registry import did_you_mean

from . import metrics
from .base import TASKS, DataFileError, Task

SHIPPED_DIR = Path(__file__).resolve().parent / "yaml"
YAML_SUFFIXES = (".yaml", ".yml")
METRICS = {"em_f1": metrics.score_open, "yes_no": metrics.score_yes_no, "letter": metrics.score_letter,
           "similarity": metrics.score_similarity}
FIELDS = {"task", "description", "splits", "answerless_splits", "question_field", "answer_field", "id_field",
          "metadata_fields", "metric", "prompts", "tool", "index"}
_LOADED: dict[str, type] = {}  # resolved YAML path -> its Task class


def is_task_path(name: str) -> bool:
    return name.endswith(YAML_SUFFIXES) or os.sep in name or Path(name).is_dir()


def yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES)
        if not found:
            raise DataFileError(f"--task {path}: the folder holds no .yaml task files")
        return found
    if not path.is_file():
        raise DataFileError(f"--task {path}: no such task file or folder")
    return [path]


def register_path(path: os.PathLike | str) -> list[str]:
    """Register every task YAML at ``path`` (a file or a folder); returns their names."""
    return [register_file(f) for f in yaml_files(Path(path))]


def task_from_path(name: str) -> str:
    """``--task path/to/task.yaml`` or a folder holding one task: registers it, returns its name."""
    names = register_path(name)
    if len(names) > 1:
        raise DataFileError(f"--task {name}: the folder holds {len(names)} tasks ({', '.join(names)}); "
                            f"pass one file, or its task name once registered")
    return names[0]


def register_file(path: Path) -> str:
    key = str(path.resolve())
    if key in _LOADED:
        return _LOADED[key].name
    spec = read_spec(path)
    name = spec["task"]
    if name in TASKS._entries and getattr(TASKS._entries[name], "yaml_path", None) != key:
        where = getattr(TASKS._entries[name], "yaml_path", None) or "a built-in task"
        raise DataFileError(f"task file {path}: task: {name!r} is already taken by {where}; give it another name")
    cls = type(f"YamlTask_{name}", (YamlTask,), {"name": name, "spec": spec, "yaml_path": key,
                                                  "splits": tuple(spec["splits"]),
                                                  "answerless_splits": tuple(spec["answerless_splits"]),
                                                  "prompts": {(m, None): p for m, p in spec["prompts"].items()},
                                                  "reward_type": int if spec["metric"] in ("yes_no", "letter") else bool,
                                                  "metric": spec["metric"], "index": spec.get("index")})
    TASKS.register(name)(cls)
    _LOADED[key] = cls
    return name


def _fail(path: Path, what: str) -> DataFileError:
    return DataFileError(f"task file {path}: {what}")


def read_spec(path: Path) -> dict:
    """The YAML, checked field by field; every problem is one DataFileError naming the field."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}: {getattr(e, 'problem', '')})" if mark else ""
        raise _fail(path, f"not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, f"cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(spec, dict):
        raise _fail(path, "must be a mapping of fields (task, splits, question_field, ...)")
    for key in spec:
        if key not in FIELDS:
            raise _fail(path, did_you_mean("field", str(key), FIELDS))
    spec.setdefault("task", path.stem)
    spec.setdefault("question_field", "question")
    spec.setdefault("answer_field", "answer")
    spec.setdefault("answerless_splits", [])
    spec.setdefault("metadata_fields", [])
    spec.setdefault("metric", "em_f1")
    spec.setdefault("prompts", {})
    if not isinstance(spec["task"], str) or not spec["task"].strip() or os.sep in spec["task"]:
        raise _fail(path, f"task: {spec['task']!r} must be a name without slashes")
    splits = spec.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise _fail(path, "splits: give a mapping of split names to question files, e.g. {dev: questions.jsonl}")
    resolved = {}
    for split, file in splits.items():
        target = (path.parent / str(file)).resolve()
        if not target.exists():
            raise _fail(path, f"splits.{split}: no such file {target}")
        resolved[str(split)] = target
    spec["splits"] = resolved
    for field in ("question_field", "answer_field", "id_field"):
        if field in spec and not isinstance(spec[field], str):
            raise _fail(path, f"{field}: {spec[field]!r} must be a field name")
    for field in ("answerless_splits", "metadata_fields"):
        if not isinstance(spec[field], list):
            raise _fail(path, f"{field}: {spec[field]!r} must be a list")
    for split in spec["answerless_splits"]:
        if split not in resolved:
            raise _fail(path, f"answerless_splits: {split!r} is not one of the splits ({', '.join(resolved)})")
    if spec["metric"] not in METRICS:
        raise _fail(path, "metric: " + did_you_mean("metric", str(spec["metric"]), METRICS))
    if not isinstance(spec["prompts"], dict):
        raise _fail(path, "prompts: give a mapping of method to prompt name or file, e.g. {io: io_hotpotqa}")
    prompts = {}
    for method, prompt in spec["prompts"].items():
        local = path.parent / str(prompt)
        if Path(str(prompt)).suffix in (".txt", ".json"):
            if not local.is_file():
                raise _fail(path, f"prompts.{method}: no such prompt file {local}")
            prompt = str(local.resolve())
        prompts[str(method)] = str(prompt)
    spec["prompts"] = prompts
    return spec


def read_rows(file: Path, split: str) -> list[dict]:
    """The question records of one split file (jsonl(.gz), json, csv or a datasets directory)."""
    name = file.name.lower()
    try:
        if file.is_dir():
            import datasets

            data = datasets.load_from_disk(str(file))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise DataFileError(f"{file}: the DatasetDict has no split {split!r} (it has {', '.join(data)})")
                data = data[split]
            return [dict(r) for r in data]
        if name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            rows = []
            with opener(file, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise DataFileError(f"{file}:{lineno}: not JSON lines ({e.msg})") from None
            return rows
        if name.endswith(".json"):
            data = json.loads(file.read_text(encoding="utf-8"))
            return data["data"] if isinstance(data, dict) and "data" in data else data
        if name.endswith(".csv"):
            with open(file, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
    except json.JSONDecodeError as e:
        raise DataFileError(f"{file}: not JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataFileError(f"{file}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:  # datasets: not a saved dataset
        raise DataFileError(f"{file}: not a datasets directory ({e})") from None
    raise DataFileError(f"{file}: unsupported question file; use .jsonl, .jsonl.gz, .json, .csv or a datasets directory")


class YamlTask(Task):
    spec: dict = {}
    yaml_path: str = ""
    metric: str = "em_f1"
    index: Optional[str] = None

    def load(self, split):
        s = self.spec
        file = s["splits"][split]
        rows = read_rows(file, split)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataFileError(f"{file}: expected a list of records (objects with fields)")
        answered = split not in s["answerless_splits"]
        wanted = [("question_field", s["question_field"])] + ([("answer_field", s["answer_field"])] if answered else [])
        wanted += [("id_field", s["id_field"])] if "id_field" in s else []
        wanted += [("metadata_fields", f) for f in s["metadata_fields"]]
        records = []
        for n, row in enumerate(rows, 1):
            for what, field in wanted:
                if field not in row:
                    raise DataFileError(f"task {self.name} split {split}: record {n} of {file} has no field {field!r} "
                                        f"(the YAML's {what}); its fields: {', '.join(map(str, row))}")
            rec = {k: row[k] for k in s["metadata_fields"]}
            rec.update(question=str(row[s["question_field"]]), gold=row[s["answer_field"]] if answered else None)
            if "id_field" in s:
                rec["id"] = row[s["id_field"]]
            records.append(rec)
        return records

    def score(self, answer, gold):
        return METRICS[self.metric](answer, gold)

    def meta(self, idx):
        rec = self.records[idx]
        return {k: rec[k] for k in ["id", *self.spec["metadata_fields"]] if rec.get(k) is not None}


def register_defaults() -> None:
    """The shipped examples (tasks/yaml/) and the folders of FIREHARNESS_TASKS."""
    paths = [SHIPPED_DIR] if SHIPPED_DIR.is_dir() else []
    paths += [Path(p) for p in os.environ.get("FIREHARNESS_TASKS", "").split(os.pathsep) if p]
    for p in paths:
        register_path(p)


register_defaults()
