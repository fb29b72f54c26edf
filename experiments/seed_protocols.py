"""Each seed's own loop (re-typed in tests/seed_loops.py) against ours under its protocol, question by question.

    python experiments/seed_protocols.py --protocol react     # ReAct's notebook vs --protocol react
    python experiments/seed_protocols.py --protocol fireact   # FireAct's generation.py vs --protocol fireact
    python experiments/seed_protocols.py --protocol lenient   # today's loop (a checkout of --ref) vs --protocol lenient

The embedded model in fp32, greedy, on the same environment answers (offline Wikipedia tool, offline
Google cache). ReAct: HotpotQA distractor-dev questions 0..n-1, webthink_simple6, Wikipedia; FireAct:
HotpotQA dev in its --random order (its README's command), react_hotpotqa_google, Google. A trajectory
is the text the loop appended to the prompt after the few-shot examples (question, every thought, action
and observation) plus the answer; "identical" means both, character for character.

Writes results/seed_protocols_<protocol>.json (the comparison) and, with --golden, the seed's
trajectories to tests/data/seed_golden/<protocol>.json, which tests/test_protocols.py checks ours against.
The lenient protocol's "seed" is this project's loop as committed at --ref (its own checkout, run as a
subprocess): the regression test that the option keeps today's behaviour.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SETUPS = {  # protocol -> the run both loops make
    "react": dict(task_split="distractor-dev", random=False, tool="wikipedia", promptpath="webthink_simple6"),
    "fireact": dict(task_split="dev", random=True, tool="google", promptpath="react_hotpotqa_google"),
    "lenient": dict(task_split="distractor-dev", random=False, tool="wikipedia", promptpath="webthink_simple6",
                    max_steps=7, max_tokens=100),
}


def our_config(protocol: str, n: int, out: str, batch_size: int, start: int = 0):
    from generation import RunConfig
    return RunConfig(task="hotpotqa", task_start_index=start, task_end_index=start + n, evaluate=True, backend="hf",
                     dtype="float32",
                     method="react", protocol=protocol, batch_size=batch_size, output_dir=out,
                     run_name=f"ours_{protocol}", **SETUPS[protocol])


def trajectories(run) -> dict:
    """{index: (trajectory text, prediction)} of a finished Run: its prompt after the few-shot examples."""
    from fireharness.records import read_episodes
    from methods.base import AgentState

    m, out = run.method, {}
    for ep in read_episodes(run.trajs_path):
        state = AgentState(key="-", index=ep.index, question=ep.question, steps=ep.steps)
        prompt = m.prompt(state)
        out[ep.index] = (prompt[len(m.fewshot.text):len(prompt) - len(m.cue(state))], ep.prediction)
    return out


def run_ours(protocol: str, n: int, batch_size: int, out: Path) -> tuple[dict, list]:
    from generation import Run
    run = Run(our_config(protocol, n, str(out), batch_size))
    run.execute()  # resumes: episodes already in out/trajs are kept
    return trajectories(run), run.indices


def seed_trajectories(protocol: str, indices: list, n: int, ref: str, out: Path, budget_s: float = None):
    """Yield (index, trajectory, answer) of each seed episode as it is done (kept in out/seed.jsonl, so a
    re-run resumes); stops starting new questions after budget_s seconds."""
    done_path = out / "seed.jsonl"
    done = {}
    if done_path.exists():
        for line in done_path.read_text().splitlines():
            row = json.loads(line)
            done[row["index"]] = (row["trajectory"], row["answer"])
    todo = [i for i in indices if i not in done]
    if todo and protocol == "lenient":
        fresh = run_committed(ref, n, out)
    elif todo:
        fresh = run_seed(protocol, todo, budget_s)
    else:
        fresh = iter(())
    with open(done_path, "a") as f:
        for i, trajectory, answer in fresh:
            f.write(json.dumps({"index": i, "trajectory": trajectory, "answer": answer}, ensure_ascii=False) + "\n")
            f.flush()
            done[i] = (trajectory, answer)
            yield done
    yield done


def run_seed(protocol: str, indices: list, budget_s: float = None):
    """The re-typed seed loop on each question in turn: yields (index, trajectory, answer)."""
    import seed_loops
    from methods.prompts import load_fewshot
    from models.resolve import resolve_model_path
    from tasks import get_task
    from tools import ToolConfig, get_tool

    t0 = time.perf_counter()
    setup = SETUPS[protocol]
    task = get_task("hotpotqa", setup["task_split"])
    tool = get_tool(setup["tool"], ToolConfig(offline=True))
    tool.check()
    tokenizer, model = seed_loops.load_model(resolve_model_path("smollm2-135m"))
    fewshot = load_fewshot(setup["promptpath"]).text
    prefix = seed_loops.PrefixCache(tokenizer, model, fewshot)
    if protocol == "react":
        llm, env = seed_loops.make_react_llm(tokenizer, model, prefix), seed_loops.OfflineWikiEnv(tool, task)
    else:
        gpts = seed_loops.LlamaInterface(tokenizer, model, prefix).generate_responses_from_llama
        call_tools = seed_loops.make_call_tools(tool)
    for i in indices:
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            print(f"seed {protocol}: time budget spent, stopping before question {i}", file=sys.stderr)
            return
        if protocol == "react":
            r, info = seed_loops.react_webthink(i, llm, env, fewshot)
            trajectory, answer = info["traj"][len(fewshot):], info["answer"] or None
        else:  # one question at a time: FireAct's episodes do not depend on each other
            rs, infos, unfinished = seed_loops.fireact_run(seed_loops.FireActHotpotQA(task), [i], gpts, call_tools,
                                                           fewshot_prompt=fewshot)
            trajectory, answer = (infos[i]["traj"], infos[i]["answer"]) if i in infos else (unfinished[i], None)
        print(f"seed {protocol} {i}: {answer!r} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        yield i, trajectory, answer


def run_committed(ref: str, n: int, out: Path):
    """Today's loop: generation.py of commit ``ref`` (its own checkout), the same questions and settings."""
    from fireharness.records import read_episodes
    from methods import METHODS
    from methods.base import AgentState
    from methods.prompts import load_fewshot

    setup = SETUPS["lenient"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(f"git archive {ref} | tar -x -C {tmp}", shell=True, cwd=ROOT, check=True)
        args = [sys.executable, "generation.py", "--task", "hotpotqa", "--task_split", setup["task_split"],
                "--task_end_index", str(n), "--evaluate", "--backend", "hf", "--dtype", "float32", "--method",
                "react", "--tool", "wikipedia", "--promptpath", setup["promptpath"], "--max_steps", "7",
                "--max_tokens", "100", "--batch_size", str(n), "--output_dir", str((out / "committed").resolve()),
                "--run_name", "committed"]
        subprocess.run(args, cwd=tmp, check=True, env=dict(os.environ, PYTHONPATH=tmp))
    method = METHODS.get("react")(fewshot=load_fewshot(setup["promptpath"]), max_steps=7)
    for ep in read_episodes(out / "committed" / "trajs" / "committed.jsonl"):
        state = AgentState(key="-", index=ep.index, question=ep.question, steps=ep.steps)
        prompt = method.prompt(state)
        yield ep.index, prompt[len(method.fewshot.text):len(prompt) - len(method.cue(state))], ep.prediction


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True, choices=sorted(SETUPS))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=20, help="ours: episodes side by side (1: no batch-shape numerics)")
    p.add_argument("--ref", default="2cf286d", help="lenient: the commit whose loop is 'today's behaviour'")
    p.add_argument("--out", default="outputs/seed_protocols", help="both loops' trajectories (a re-run resumes)")
    p.add_argument("--seed_budget_s", type=float, default=None, help="start no seed question after this many seconds")
    p.add_argument("--golden", action="store_true", help="also write tests/data/seed_golden/<protocol>.json")
    a = p.parse_args()

    out = Path(a.out) / a.protocol
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ours, indices = run_ours(a.protocol, a.n, a.batch_size, out)
    ours_s = time.perf_counter() - t0
    for seed in seed_trajectories(a.protocol, indices, a.n, a.ref, out, a.seed_budget_s):
        write(a, indices, ours, seed, ours_s, time.perf_counter() - t0 - ours_s)
    return 0


def write(a, indices, ours, seed, ours_s, seed_s) -> None:
    """The comparison over the questions both loops have done (rewritten after each seed question)."""
    rows = []
    for i in indices:
        if i not in seed or i not in ours:
            continue
        (ot, op), (st, sp) = ours[i], seed[i]
        same = ot == st and (op or None) == (sp or None)
        row = {"index": i, "identical": same, "seed_answer": sp, "our_answer": op}
        if not same:
            k = first_difference(st, ot)
            row.update(seed_from_diff=st[max(0, k - 80):k + 160], ours_from_diff=ot[max(0, k - 80):k + 160])
        rows.append(row)
    result = {"protocol": a.protocol, "n": len(rows), "identical": sum(r["identical"] for r in rows),
              "same_answer": sum((r["seed_answer"] or None) == (r["our_answer"] or None) for r in rows),
              "our_batch_size": a.batch_size, "ours_s": round(ours_s, 1), "seed_s": round(seed_s, 1),
              "setup": SETUPS[a.protocol], "model": "smollm2-135m fp32 greedy", "questions": rows}
    path = ROOT / "results" / f"seed_protocols_{a.protocol}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if a.golden:
        golden = ROOT / "tests" / "data" / "seed_golden" / f"{a.protocol}.json"
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps({"setup": SETUPS[a.protocol], "trajectories": [
            {"index": i, "trajectory": seed[i][0], "answer": seed[i][1]} for i in indices if i in seed]},
            indent=1, ensure_ascii=False) + "\n")
    print(f"{a.protocol}: identical trajectories {result['identical']}/{result['n']}, same answer "
          f"{result['same_answer']}/{result['n']} -> {path}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
