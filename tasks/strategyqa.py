"""StrategyQA: yes/no questions that need implicit multi-step reasoning."""
from .base import FIREACT_DATA, Task, load_json, register_task
from .metrics import score_yes_no

FILES = {"dev": "strategyqa_dev.json", "test": "strategyqa_test.json", "train": "strategyqa_train_filtered.json"}


@register_task("strategyqa")
class StrategyQA(Task):
    name = "strategyqa"
    splits = ("dev", "test", "train")
    answerless_splits = ("test",)
    prompts = {("react", "google"): "react_strategyqa_google", ("cot", None): "cot_strategyqa",
               ("io", None): "io_strategyqa", ("act", "google"): "react_strategyqa_google"}

    def load(self, split):
        rows = load_json(FIREACT_DATA / "strategyqa" / FILES[split])
        return [{"question": r["question"], "gold": r.get("answer"), "id": r.get("qid"),
                 "facts": r.get("facts")} for r in rows]

    def score(self, answer, gold):
        return score_yes_no(answer, gold)
