"""Official answer scoring, shared by every task (no per-task copies).

``normalize_answer`` and ``f1_score`` are HotpotQA's official evaluation (hotpot_evaluate_v1.py),
including its rule that a yes/no/noanswer prediction or gold scores F1 0 unless both match.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_YES_NO = ("yes", "no", "noanswer")


def normalize_answer(s: str) -> str:
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> tuple[float, float, float]:
    """(f1, precision, recall) of normalised token overlap."""
    pred, gold = normalize_answer(prediction), normalize_answer(ground_truth)
    if (pred in _YES_NO or gold in _YES_NO) and pred != gold:
        return 0.0, 0.0, 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def score_open(prediction: str, gold: str) -> dict:
    """HotpotQA / Bamboogle: EM and F1 on normalised answers (FireAct's info keys)."""
    pred, gt = normalize_answer(prediction), normalize_answer(gold)
    em = float(pred == gt)
    return {"reward": em, "em": em, "f1": f1_score(pred, gt)[0], "gt": gt, "pred": pred}


def parse_yes_no(prediction: str) -> str | None:
    words = normalize_answer(prediction).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def score_yes_no(prediction: str, gold: bool) -> dict:
    """StrategyQA: the answer starts with yes or no (FireAct: ``pred.startswith('yes')``)."""
    said = parse_yes_no(prediction)
    em = float(said is not None and (said == "yes") == bool(gold))
    return {"reward": em, "em": em, "f1": em, "gt": bool(gold), "pred": said}


_LETTER = re.compile(r"^\W*(?:(?:the\s+)?answer\s*(?:is)?\s*:?\s*)?\(?([A-D])(?![A-Za-z0-9])", re.I)


def parse_letter(prediction: str) -> str | None:
    """The option letter an answer names: "B", "b.", "(C) text", "D. the solar system",
    "answer: A". Unlike FireAct's ``pred.startswith(gt)``, "about" does not count as A."""
    m = _LETTER.match(str(prediction).strip())
    return m.group(1).upper() if m else None


def score_letter(prediction: str, gold: str) -> dict:
    said = parse_letter(prediction)
    em = float(said is not None and said == str(gold).strip().upper())
    return {"reward": em, "em": em, "f1": em, "gt": str(gold).strip().upper(), "pred": said}


def score_similarity(prediction: str, gold: str) -> dict:
    """EM and F1 plus the cosine similarity of the embedded prediction and gold (the RAFT seed's
    similarity score; all-MiniLM-L6-v2 by default, see fireharness/embeddings.py). Reward stays EM."""
    from fireharness.embeddings import cosine

    info = score_open(prediction, gold)
    info["similarity"] = cosine(str(prediction), str(gold)) if str(prediction).strip() else 0.0
    return info
