"""HotpotQA: FireAct's dev/test question files and the distractor-setting records."""
from __future__ import annotations

import gzip
import json

from fireharness.paths import DATA_DIR

from .base import FIREACT_DATA, DataFileError, Task, load_json, register_task
from .metrics import score_open

DISTRACTOR_DIR = DATA_DIR / "hotpotqa_distractor"


def read_distractor(split: str) -> list[dict]:
    """The official distractor records (``context`` = 10 [title, sentences] paragraphs)."""
    path = DISTRACTOR_DIR / f"{split}.jsonl.gz"
    records = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    records.append(json.loads(line))
    except FileNotFoundError:
        raise DataFileError(f"data file {path} is missing; re-clone the repository") from None
    except (EOFError, OSError, json.JSONDecodeError) as e:
        raise DataFileError(f"data file {path} is corrupt or truncated ({e}); "
                            f"restore it with `git checkout -- {path}`") from None
    return records


@register_task("hotpotqa")
class HotpotQA(Task):
    name = "hotpotqa"
    splits = ("dev", "test", "train", "distractor-dev")
    reward_type = bool
    answerless_splits = ("test",)
    prompts = {("react", "google"): "react_hotpotqa_google", ("cot", None): "cot_hotpotqa",
               ("io", None): "io_hotpotqa", ("react", "wikipedia"): "webthink_simple6",
               ("act", "wikipedia"): "webact_simple6", ("act", "google"): "react_hotpotqa_google"}

    def load(self, split):
        if split in ("dev", "test"):
            rows = load_json(FIREACT_DATA / "hotpotqa" / f"{split}.json")
            return [{"question": r["question"], "gold": r.get("answer"), "type": r.get("type")} for r in rows]
        rows = read_distractor("train" if split == "train" else "dev")
        return [{"question": r["question"], "gold": r["answer"], "id": r["_id"], "type": r.get("type"),
                 "level": r.get("level"), "dev_index": r.get("dev_index"),
                 "supporting_facts": r.get("supporting_facts"), "context": r.get("context")} for r in rows]

    def score(self, answer, gold):
        return score_open(answer, gold)
