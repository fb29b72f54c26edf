"""Trajectories -> fine-tuning data: Alpaca / GPT rows (FireAct's shapes), per-step SFT rows, DPO pairs.

    python -m finetune.convert trajs/run.jsonl --format alpaca --out data/ft/run.json
    python -m finetune.convert --mix trajs/hotpotqa.jsonl:500 trajs/strategyqa.jsonl:0.5 \\
        --format gpt --out data/ft/multitask.jsonl
    python -m finetune.convert trajs/run.jsonl --format dpo --out data/ft/run_dpo.jsonl --hf_dataset data/ft/run_dpo

Python API: ``convert(inputs, fmt, ...) -> list[dict]`` (``run_conversion`` also returns the summary).
Every input is parsed into ``Episode`` objects (``finetune.readers``), filtered, mixed, then rendered
(``finetune.formats``, ``finetune.pairs``).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from fireharness.records import Episode

from .formats import PROMPT_STYLES, RENDERERS, react_text, to_steps
from .pairs import SOURCES, dpo_pairs
from .readers import READERS, InputError, detect_kind, f1_known, read_any

FORMATS = ("alpaca", "gpt", "steps", "dpo")
DEDUP = ("question", "trajectory", "none")
# Why an episode was dropped, in the order the filters run (the summary table's columns).
REASONS = ("unparsable", "unfinished", "failed", "low_f1", "too_many_steps", "tool_error", "duplicate",
           "not_sampled")


@dataclass
class InputSpec:
    """One input of a mix: a file and how much of it to take (None: all; int: a count; float: a ratio)."""
    path: Path
    amount: Optional[Union[int, float]] = None
    kind: Optional[str] = None

    @classmethod
    def parse(cls, spec: Union[str, Path, "InputSpec", Tuple]) -> "InputSpec":
        if isinstance(spec, InputSpec):
            return spec
        if isinstance(spec, tuple):
            return cls(Path(spec[0]), spec[1] if len(spec) > 1 else None)
        text = str(spec)
        path, sep, amount = text.rpartition(":")
        if not sep or not amount or "/" in amount or Path(text).exists():  # a ':' inside the file name
            return cls(Path(text))
        try:
            value: Union[int, float] = float(amount) if "." in amount else int(amount)
        except ValueError:
            raise InputError(f"{text!r}: the part after ':' must be a count (500) or a ratio (0.5)") from None
        if value < 0 or (isinstance(value, float) and value > 1):
            raise InputError(f"{text!r}: a ratio must be within 0.0-1.0 and a count >= 0")
        return cls(Path(path), value)

    def __str__(self) -> str:
        return f"{self.path}" + ("" if self.amount is None else f":{self.amount}")


@dataclass
class Filters:
    keep_failed: bool = False  # keep episodes whose reward (EM) is 0
    min_f1: Optional[float] = None  # also require F1 >= this (Araft keeps F1 >= 1.0)
    max_steps: Optional[int] = None
    drop_tool_errors: bool = False  # FireAct trained on its successes even when a tool call had failed

    def reason(self, ep: Episode) -> Optional[str]:
        """Why ``ep`` is not training data, or None to keep it."""
        if not ep.steps or any(not s.action for s in ep.steps):  # e.g. a Thought with no Action line
            return "unparsable"
        if not ep.finished or ep.steps[-1].action_type != "finish":
            return "unfinished"
        if not self.keep_failed and not ep.reward > 0:
            return "failed"
        if self.min_f1 is not None and f1_known(ep) and ep.f1 < self.min_f1:
            return "low_f1"
        if self.max_steps is not None and ep.n_steps > self.max_steps:
            return "too_many_steps"
        if self.drop_tool_errors and ep.n_tool_errors:
            return "tool_error"
        return None


@dataclass
class InputReport:
    spec: str
    kind: str
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    kept: int = 0
    short: int = 0  # asked for more than the filters left


@dataclass
class Conversion:
    rows: List[dict]
    reports: List[InputReport]
    fmt: str
    n_episodes: int = 0

    def table(self) -> str:
        from tabulate import tabulate

        headers = ["input", "kind", "read", *REASONS, "kept"]
        body = [[r.spec, r.kind, r.read, *[r.dropped.get(k, 0) for k in REASONS],
                 f"{r.kept}" + (f" ({r.short} short)" if r.short else "")] for r in self.reports]
        if len(body) > 1:
            body.append(["total", "", sum(r.read for r in self.reports),
                         *[sum(r.dropped.get(k, 0) for r in self.reports) for k in REASONS],
                         sum(r.kept for r in self.reports)])
        return (tabulate(body, headers=headers) +
                f"\n{self.n_episodes} episodes -> {len(self.rows)} {self.fmt} rows")


def _dedup_key(ep: Episode, dedup: str):
    question = " ".join(ep.question.split()).lower()
    # Per method: a multimethod mix holds a question under ReAct, CoT and Reflexion, each worth keeping.
    return (question, ep.method) if dedup == "question" else (question, react_text(ep))


def _take(eps: List[Episode], amount, rng: random.Random) -> List[Episode]:
    if amount is None:
        return eps
    n = round(len(eps) * amount) if isinstance(amount, float) else amount
    eps = list(eps)
    rng.shuffle(eps)
    return eps[:n]


def run_conversion(inputs: Sequence, fmt: str = "alpaca", *, filters: Optional[Filters] = None,
                   dedup: str = "question", seed: int = 0, shuffle: bool = True,
                   prompt_style: str = "alpaca", pair_sources: Iterable[str] = SOURCES,
                   pair_meta: bool = False) -> Conversion:
    """Read, filter, mix and render. Inputs are paths, ``"path:500"`` / ``"path:0.5"`` strings,
    ``(path, amount)`` tuples or ``InputSpec``s; every problem with them is raised as an
    ``InputError`` before any file is read."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if dedup not in DEDUP:
        raise InputError(f"unknown dedup {dedup!r}; valid: {', '.join(DEDUP)}")
    if prompt_style not in PROMPT_STYLES:
        raise InputError(f"unknown prompt style {prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")
    pair_sources = tuple(pair_sources)
    if set(pair_sources) - set(SOURCES):
        raise InputError(f"unknown pair source(s) {sorted(set(pair_sources) - set(SOURCES))}; "
                         f"valid: {', '.join(SOURCES)}")
    specs = [InputSpec.parse(s) for s in inputs]
    if not specs:
        raise InputError("no inputs: pass at least one trajectory or fine-tuning file")
    kinds = [s.kind or detect_kind(s.path) for s in specs]  # raises on a missing/unknown file
    filters = filters or Filters()
    rng = random.Random(seed)

    kept: List[Episode] = []
    failures: List[Episode] = []  # parsable, finished-or-not episodes that failed: DPO's rejected steps
    seen = set()
    reports = []
    for spec, kind in zip(specs, kinds):
        report = InputReport(str(spec), kind)
        eps = read_any(spec.path, kind)
        report.read = len(eps)
        candidates = []
        for ep in eps:
            why = filters.reason(ep)
            if why in ("failed", "unfinished") and ep.steps:
                failures.append(ep)
            if why is None and dedup != "none" and _dedup_key(ep, dedup) in seen:
                why = "duplicate"
            if why:
                report.dropped[why] += 1
                continue
            if dedup != "none":
                seen.add(_dedup_key(ep, dedup))
            candidates.append(ep)
        taken = _take(candidates, spec.amount, rng)
        if spec.amount is not None and isinstance(spec.amount, int) and spec.amount > len(candidates):
            report.short = spec.amount - len(candidates)
        report.dropped["not_sampled"] += len(candidates) - len(taken)
        if dedup != "none":  # a question not sampled here may still come from a later input
            taken_ids = {id(ep) for ep in taken}
            for ep in candidates:
                if id(ep) not in taken_ids:
                    seen.discard(_dedup_key(ep, dedup))
        report.kept = len(taken)
        kept += taken
        reports.append(report)
    if shuffle:
        rng.shuffle(kept)

    if fmt in RENDERERS:
        rows = [RENDERERS[fmt](ep) for ep in kept]
    elif fmt == "steps":
        rows = [row for ep in kept for row in to_steps(ep, prompt_style)]
    else:
        rows = dpo_pairs(kept, failures, pair_sources, prompt_style)
        if not pair_meta:
            rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    return Conversion(rows, reports, fmt, len(kept))


def convert(inputs: Sequence, fmt: str = "alpaca", **kwargs) -> List[dict]:
    """``convert(["trajs/run.jsonl"], "gpt", filters=Filters(min_f1=1.0))`` -> training rows."""
    return run_conversion(inputs, fmt, **kwargs).rows


def write_rows(rows: List[dict], out: Path, fmt: str) -> None:
    """Alpaca: one JSON list (indent 4, as FireAct's files); the others: JSONL."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if fmt == "alpaca":
            json.dump(rows, f, indent=4)
        else:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    tmp.replace(out)  # a killed run never leaves a half-written training file


def save_dataset(rows: List[dict], directory: Path) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(directory))


# --- CLI ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m finetune.convert",
        description="Turn agent trajectories into fine-tuning data: FireAct's Alpaca/GPT formats, "
                    "per-step SFT rows or DPO pairs. Prints what was kept and dropped, and why.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT[:N|:RATIO]",
                   help="input files: our trajs/*.jsonl, FireAct's trajs/*.json, or FireAct's "
                        "alpaca_format/*.json / gpt_format/*.jsonl; ':500' takes 500 episodes of that "
                        "input (after filtering, shuffled by --seed), ':0.5' takes half")
    p.add_argument("--mix", nargs="+", default=[], metavar="INPUT[:N|:RATIO]",
                   help="more inputs, same syntax (FireAct's multitask/multimethod files are mixes)")
    p.add_argument("--format", "-f", dest="fmt", choices=FORMATS + ("raft",), default="alpaca",
                   help="alpaca: JSON list of {instruction,input,output}; gpt: JSONL of {messages}; "
                        "steps: JSONL of {prompt,completion}, one per step; dpo: JSONL of "
                        "{prompt,chosen,rejected}; raft: Alpaca rows of question + gold/distractor documents -> "
                        "an answer quoting the gold passage (RAFT), from HotpotQA-format records or trajectories")
    p.add_argument("--out", "-o", type=Path, help="output file (omit to print only the summary)")
    p.add_argument("--hf_dataset", type=Path, metavar="DIR",
                   help="also save the rows as a Hugging Face datasets dataset (save_to_disk) here")
    p.add_argument("--keep_failed", action="store_true",
                   help="keep episodes with reward 0 (by default only successful ones, reward/EM > 0)")
    p.add_argument("--min_f1", type=float,
                   help="also drop episodes with F1 below this (Araft keeps F1 >= 1.0); inputs without "
                        "F1 (FireAct's fine-tuning files) are not filtered by it")
    p.add_argument("--max_steps", type=int, help="drop episodes with more steps than this")
    p.add_argument("--drop_tool_errors", action="store_true",
                   help="drop episodes in which a tool failed (kept by default, as FireAct kept them)")
    p.add_argument("--dedup", choices=DEDUP, default="question",
                   help="question: keep one episode per question and method across all inputs (first input wins; "
                        "a multimethod mix keeps a question's ReAct, CoT and Reflexion episodes); "
                        "trajectory: drop only identical trajectories; none: keep all")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="shuffle the mixed rows (FireAct's gpt_format files are shuffled)")
    p.add_argument("--prompt_style", choices=PROMPT_STYLES, default="alpaca",
                   help="prompt of steps/dpo rows: alpaca = FireAct's Alpaca wrapper + trajectory so far "
                        "(what its fine-tuned models see); plain = question + trajectory so far; chat = "
                        "message lists (TRL conversational format)")
    p.add_argument("--pair_sources", nargs="+", choices=SOURCES, default=list(SOURCES),
                   help="dpo rejected steps: failed = a failing episode's step after the same actions on "
                        "the same question; repeat = re-issuing the previous search query (Araft)")
    p.add_argument("--pair_meta", action="store_true",
                   help="keep source/question/step columns in dpo rows (off: exactly prompt/chosen/rejected)")
    p.add_argument("--raft_docs", type=int, default=4,
                   help="raft: documents per question (the gold ones and distractors)")
    p.add_argument("--raft_p_gold", type=float, default=0.8,
                   help="raft: share of questions whose documents include the gold ones (RAFT's P)")
    p.add_argument("--kind", choices=sorted(READERS),
                   help="force the input reader instead of detecting it from the file's content")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    inputs = list(args.inputs) + list(args.mix)
    if args.fmt == "raft":
        return raft_main(parser, args, inputs)
    try:
        specs = [InputSpec.parse(s) for s in inputs]
        for s in specs:
            s.kind = args.kind or detect_kind(s.path)
        if args.min_f1 is not None and not 0 <= args.min_f1 <= 1:
            raise InputError(f"--min_f1 {args.min_f1}: must be within 0-1")
        if args.max_steps is not None and args.max_steps < 1:
            raise InputError(f"--max_steps {args.max_steps}: must be >= 1")
        if args.out and args.out.is_dir():
            raise InputError(f"--out {args.out} is a directory; give a file name, e.g. {args.out}/train.json")
        if not specs:
            raise InputError("no inputs: pass at least one trajectory or fine-tuning file")
    except InputError as e:
        parser.error(str(e))
    filters = Filters(args.keep_failed, args.min_f1, args.max_steps, args.drop_tool_errors)
    result = run_conversion(specs, args.fmt, filters=filters, dedup=args.dedup, seed=args.seed,
                            shuffle=args.shuffle, prompt_style=args.prompt_style,
                            pair_sources=args.pair_sources, pair_meta=args.pair_meta)
    print(result.table())
    if args.out:
        write_rows(result.rows, args.out, args.fmt)
        print(f"wrote {args.out}")
    if args.hf_dataset:
        save_dataset(result.rows, args.hf_dataset)
        print(f"saved dataset {args.hf_dataset}")
    for r in result.reports:
        if r.short:
            print(f"warning: {r.spec} asked for {r.short} more episodes than its filters left", file=sys.stderr)
    return 0


def raft_main(parser: argparse.ArgumentParser, args, inputs: list) -> int:
    """``-f raft``: records with gold evidence or trajectories -> RAFT rows (finetune/raft.py)."""
    from .raft import raft_rows

    if not inputs:
        parser.error("no inputs: pass HotpotQA-format records (e.g. data/hotpotqa_distractor/train.jsonl.gz) "
                     "or trajectories")
    try:
        rows, summary = raft_rows(inputs, k=args.raft_docs, p_gold=args.raft_p_gold, seed=args.seed)
    except InputError as e:
        parser.error(str(e))
    print(f"{summary['examples']} questions -> {len(rows)} raft rows ({summary['with_gold']} with the gold "
          f"documents, {summary['without_gold']} with distractors only; {summary['docs_per_question']} documents each)")
    if args.out:
        write_rows(rows, args.out, "alpaca")  # Alpaca rows: finetune.sft trains on them as they are
        print(f"wrote {args.out}")
    if args.hf_dataset:
        save_dataset(rows, args.hf_dataset)
        print(f"saved dataset {args.hf_dataset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
