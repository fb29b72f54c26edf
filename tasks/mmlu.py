"""MMLU (Hendrycks et al., 2021): 57 subjects, four options, one letter."""
from __future__ import annotations

import csv

from .base import FIREACT_DATA, DataFileError, SplitError, Task, register_task
from .metrics import score_letter

MMLU_DIR = FIREACT_DATA / "mmlu"
BASE_SPLITS = ("dev", "val", "test")


def subjects() -> list[str]:
    return sorted(p.name[: -len("_test.csv")] for p in (MMLU_DIR / "test").glob("*_test.csv"))


@register_task("mmlu")
class MMLU(Task):
    name = "mmlu"
    splits = BASE_SPLITS
    prompts = {("react", "google"): "react_mmlu_google", ("cot", None): "cot_mmlu",
               ("io", None): "io_mmlu", ("act", "google"): "react_mmlu_google"}

    @classmethod
    def check_split(cls, split):
        """``dev``/``val``/``test`` over all subjects, or ``<subject>_<split>`` for one."""
        if split in BASE_SPLITS:
            return split
        subject, _, base = split.rpartition("_")
        if base in BASE_SPLITS and subject in subjects():
            return split
        from fireharness.registry import did_you_mean
        valid = list(BASE_SPLITS) + [f"{s}_{b}" for s in subjects() for b in BASE_SPLITS]
        raise SplitError(did_you_mean("split of task 'mmlu'", split, valid).split(" Valid:")[0]
                         + " Valid: dev, val, test, or <subject>_<split> for one of the 57 subjects "
                         + f"({', '.join(subjects()[:4])}, ...)")

    def load(self, split):
        if split in BASE_SPLITS:
            # FireAct concatenates files in os.listdir order, which varies by file system; we sort.
            parts = [(s, split) for s in subjects()]
        else:
            subject, _, base = split.rpartition("_")
            parts = [(subject, base)]
        records = []
        for subject, base in parts:
            path = MMLU_DIR / base / f"{subject}_{base}.csv"
            try:
                with open(path, newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
            except FileNotFoundError:
                raise DataFileError(f"data file {path} is missing; re-clone the repository") from None
            for row in rows:
                if len(row) != 6:
                    raise DataFileError(f"{path}: expected 6 columns (question, A-D, answer), got {len(row)}")
                records.append({"question": "Question: {}\nA. {}\nB. {}\nC. {}\nD. {}".format(*row[:5]),
                                "gold": row[5].strip(), "subject": subject})
        return records

    def score(self, answer, gold):
        return score_letter(answer, gold)
