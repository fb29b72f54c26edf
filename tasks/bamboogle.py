"""Bamboogle (Press et al., 2022): 125 two-hop questions Google cannot answer directly."""
import csv

from .base import FIREACT_DATA, DataFileError, Task, register_task
from .metrics import score_open


@register_task("bamboogle")
class Bamboogle(Task):
    name = "bamboogle"
    splits = ("test",)
    reward_type = bool
    # FireAct uses HotpotQA's prompts for Bamboogle.
    prompts = {("react", "google"): "react_hotpotqa_google", ("cot", None): "cot_hotpotqa",
               ("io", None): "io_hotpotqa", ("react", "wikipedia"): "webthink_simple6",
               ("act", "wikipedia"): "webact_simple6", ("act", "google"): "react_hotpotqa_google"}

    def load(self, split):
        path = FIREACT_DATA / "bamboogle" / f"{split}.csv"
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise DataFileError(f"data file {path} is missing; re-clone the repository") from None
        if rows and not {"Question", "Answer"} <= set(rows[0]):
            raise DataFileError(f"data file {path} lacks the Question/Answer columns")
        return [{"question": r["Question"], "gold": r["Answer"]} for r in rows]

    def score(self, answer, gold):
        return score_open(answer, gold)
