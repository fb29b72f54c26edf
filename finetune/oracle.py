"""Gold-evidence ReAct trajectories for HotpotQA, observed through the evaluation's own offline tool.

FireAct's training trajectories saw Google snippets; offline, an agent sees the offline tool's answers
(the replayed cache rarely holds a new query, so the Wikipedia fallback answers). This writes, for each
distractor-setting record, the trajectory a reader of the gold paragraphs would take: search each
supporting-fact title (the one whose observation holds the answer last), then finish with the gold
answer. Observations come from the real tool session, so training and evaluation see the same text::

    python -m finetune.oracle --split train --tool google --offline --search-fallback wikipedia \\
        --out trajs/oracle_hotpotqa_train.jsonl
    python -m finetune.convert trajs/oracle_hotpotqa_train.jsonl --format alpaca --out data/ft/oracle.json

A record is kept only when the answer is grounded: it appears (normalised) in an observation, or it is
yes/no (comparison questions). The rows are our trajectory schema (``model = "oracle"``), so
``finetune.convert`` mixes them with FireAct's files like any other run.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from fireharness.records import Episode, Step, append_episode
from tasks.base import get_task
from tasks.metrics import normalize_answer
from tools.base import ToolConfig, ToolSession, get_tool

from .formats import finish_observation


def supporting_titles(record: dict) -> list[str]:
    return list(dict.fromkeys(title for title, _sentence in record.get("supporting_facts") or []))


def oracle_episode(task, idx: int, session: ToolSession, tool_name: str) -> tuple[Optional[Episode], str]:
    """(the episode, "kept") or (None, why it was dropped)."""
    record = task.record(idx)
    answer = str(record["gold"])
    titles = supporting_titles(record)
    if not titles:
        return None, "no_supporting_facts"
    observed = [(t, session.act("search", t)) for t in titles]
    if any(o.text is None for _, o in observed):
        return None, "tool_error"
    gold = normalize_answer(answer)
    holds = [gold in normalize_answer(o.text) for _, o in observed]
    if not any(holds) and gold not in ("yes", "no"):
        return None, "ungrounded"
    # The search that shows the answer goes last, so the agent finishes right after reading it.
    observed = [x for x, h in zip(observed, holds) if not h] + [x for x, h in zip(observed, holds) if h]
    # The thought names the page without the verb: after "I need to search X." a 135M model learnt to copy
    # "search X" into the action, brackets dropped (EM 0 on the first 83 dev questions).
    steps = [Step(thought=f"I need information on {t}.", action=f"search[{t}]", action_type="search", argument=t,
                  observation=o.text, tool=tool_name, source=o.source) for t, o in observed]
    steps.append(Step(thought=f"So the answer is {answer}.", action=f"finish[{answer}]", action_type="finish",
                      argument=answer))
    reward, info = task.evaluate(idx, answer)
    ep = Episode(task=task.name, split=task.split, index=idx, question=task[idx], gold=record["gold"],
                 prediction=answer, em=info["em"], f1=info["f1"], reward=reward, finished=True, steps=steps,
                 method="react", model="oracle", tool=tool_name, run="oracle", meta=task.meta(idx))
    steps[-1].observation = finish_observation(ep)
    return ep, "kept"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.oracle", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="hotpotqa", help="a task whose records have supporting_facts")
    p.add_argument("--split", default="train", help="train (700 records) or distractor-dev")
    p.add_argument("--tool", default="google", help="the tool that observes each search")
    p.add_argument("--offline", action="store_true", help="the tool's offline backend (cache / index)")
    p.add_argument("--search-fallback", "--search_fallback", dest="search_fallback", default=None,
                   help="google: answer an uncached query from the offline Wikipedia index")
    p.add_argument("--out", "-o", type=Path, required=True, help="trajectory JSONL (our schema)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists; remove it or choose another file")
    task = get_task(args.task, args.split)
    if not any(task.record(i).get("supporting_facts") for i in range(len(task))):
        parser.error(f"{args.task} {args.split} has no supporting_facts (use hotpotqa train or distractor-dev)")
    tool = get_tool(args.tool, ToolConfig(offline=args.offline, search_fallback=args.search_fallback))
    tool.check()
    tool_name = f"{args.tool}/{tool.backend}"
    counts = Counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for idx in tqdm(range(len(task)), desc="oracle trajectories", unit="q"):
            ep, why = oracle_episode(task, idx, tool.session(), tool_name)
            counts[why] += 1
            if ep is not None:
                append_episode(args.out, ep)
    finally:
        tool.close()
    print(", ".join(f"{k} {v}" for k, v in counts.most_common()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
