"""RAFT training data (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain Specific RAG"):
each row is a question with k documents, the gold ones and distractors, and an answer whose reasoning
quotes the gold passage (``##begin_quote## ... ##end_quote##``) before ``<ANSWER>: ...``. A share
``1 - p_gold`` of the rows holds distractors only, so the model also learns to answer when retrieval
missed (the paper's P; it found P = 0.8 a good default for HotpotQA-like data).

Inputs:
- records with gold evidence, HotpotQA's format: ``context`` (``[[title, sentences], ...]``),
  ``supporting_facts`` (``[[title, sentence index], ...]``) and ``answer``, in .jsonl(.gz) or a .json list
  (e.g. ``data/hotpotqa_distractor/train.jsonl.gz``): gold = the supporting paragraphs, quotes = the
  supporting sentences, distractors = the record's other paragraphs;
- our trajectories (``trajs/*.jsonl``, e.g. of ``--method rag`` or ``react`` with the retrieve tool): gold =
  the observed passages that contain the gold answer (episodes without one are skipped), quotes = their
  sentences holding it, distractors = the passages other episodes observed.

Rows are Alpaca ``{instruction, input, output}`` (what ``finetune.sft`` trains on):

    python -m finetune.convert data/hotpotqa_distractor/train.jsonl.gz -f raft --raft_docs 4 -o raft.json
"""
from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .readers import InputError, read_any

BEGIN, END = "##begin_quote##", "##end_quote##"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Evidence:
    question: str
    answer: str
    gold: List[tuple] = field(default_factory=list)  # (title, text)
    distractors: List[tuple] = field(default_factory=list)
    quotes: List[tuple] = field(default_factory=list)  # (title, sentence) from the gold documents


def is_evidence_file(path: Path) -> bool:
    """A file of records with ``context`` and ``supporting_facts`` (HotpotQA's format)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            head = f.read(65536)
    except (OSError, UnicodeDecodeError):
        return False
    return '"supporting_facts"' in head and '"context"' in head


def read_evidence_records(path: Path) -> List[Evidence]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                          if line.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON / JSON lines ({e.msg} at line {e.lineno})") from None
    out = []
    for n, r in enumerate(records, 1):
        missing = [k for k in ("question", "answer", "context", "supporting_facts") if k not in r]
        if missing:
            raise InputError(f"{path}: record {n} has no {', '.join(missing)} (RAFT needs HotpotQA's fields)")
        paragraphs = {title: [s.strip() for s in sents] for title, sents in r["context"]}
        gold_titles = list(dict.fromkeys(t for t, _ in r["supporting_facts"] if t in paragraphs))
        quotes = [(t, paragraphs[t][i]) for t, i in r["supporting_facts"] if t in paragraphs and i < len(paragraphs[t])]
        if not quotes:
            continue  # none of its supporting paragraphs came with the record: nothing to quote
        out.append(Evidence(r["question"], str(r["answer"]),
                            gold=[(t, " ".join(paragraphs[t])) for t in gold_titles],
                            distractors=[(t, " ".join(s)) for t, s in paragraphs.items() if t not in gold_titles],
                            quotes=quotes))
    return out


def _passages(observation: str) -> List[tuple]:
    """A retrieve observation ``[1] Title: text [2] ...`` -> its (title, text) passages; another tool's -> one
    untitled passage."""
    if not observation.lstrip().startswith("[1] "):
        return [("", observation.strip())]
    out = []
    for part in re.split(r"\s*\[\d+\]\s+", observation):
        if part.strip():
            title, sep, text = part.partition(": ")
            out.append((title.strip(), text.strip()) if sep else ("", title.strip()))
    return out


def read_trajectory_evidence(path: Path) -> List[Evidence]:
    """Episodes with a gold answer that one of their observed passages contains (the model need not
    have answered right: retrieval found the evidence)."""
    from tasks.metrics import normalize_answer

    examples, owners = [], []
    for ep in read_any(path):
        docs = [p for s in ep.steps if s.action_type != "finish" and s.observation for p in _passages(s.observation)]
        gold_answer = normalize_answer(ep.gold) if isinstance(ep.gold, str) else ""

        def holds(text: str) -> bool:  # the answer's words, as whole words ("no" is not in "north")
            return bool(gold_answer) and f" {gold_answer} " in f" {normalize_answer(text)} "

        gold = [d for d in docs if holds(d[1])]
        if not gold:
            continue
        quotes = [(t, s) for t, x in gold for s in _SENTENCE.split(x) if holds(s)]
        examples.append(Evidence(ep.question, str(ep.gold), gold=gold, quotes=quotes or [gold[0]]))
        owners.append(docs)
    for n, ex in enumerate(examples):  # distractors: the passages other episodes observed
        ex.distractors = list(dict.fromkeys(d for m, docs in enumerate(owners) if m != n for d in docs))
    return examples


def reasoning(ex: Evidence) -> str:
    cites = " ".join(f"{t or 'A document'} says {BEGIN}{s}{END}." for t, s in ex.quotes)
    return f"{cites} So the answer is {ex.answer}.\n<ANSWER>: {ex.answer}"


def raft_row(ex: Evidence, k: int, with_gold: bool, rng: random.Random) -> dict:
    gold = ex.gold[:k] if with_gold else []
    pool = [d for d in ex.distractors if d not in gold]
    docs = gold + rng.sample(pool, min(len(pool), k - len(gold)))
    rng.shuffle(docs)
    context = "\n".join(f"<DOCUMENT>{t + ': ' if t else ''}{x}</DOCUMENT>" for t, x in docs)
    return {"instruction": f"{context}\n{ex.question}", "input": "", "output": reasoning(ex)}


def raft_rows(inputs: Sequence, k: int = 4, p_gold: float = 0.8, seed: int = 0,
              limit: Optional[int] = None) -> tuple[List[dict], dict]:
    """Rows and a summary (examples read, rows with and without gold)."""
    if k < 1:
        raise InputError(f"--raft_docs {k}: give at least 1 document per question")
    if not 0 <= p_gold <= 1:
        raise InputError(f"--raft_p_gold {p_gold}: must be within 0-1")
    examples: List[Evidence] = []
    for spec in inputs:
        path = Path(str(spec))
        if not path.exists():
            raise InputError(f"{path}: no such file")
        examples += read_evidence_records(path) if is_evidence_file(path) else read_trajectory_evidence(path)
    if limit is not None:
        examples = examples[:limit]
    rng = random.Random(seed)
    rows, with_gold = [], 0
    for ex in examples:
        keep = rng.random() < p_gold
        with_gold += keep
        rows.append(raft_row(ex, k, keep, rng))
    return rows, {"examples": len(examples), "with_gold": with_gold, "without_gold": len(rows) - with_gold,
                  "docs_per_question": k}
