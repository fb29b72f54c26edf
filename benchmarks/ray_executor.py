"""The Ray executor's overhead: the same ReAct run (64 HotpotQA dev questions, ``--random``, embedded model,
offline Google, greedy) in-process, on one Ray replica and on two, interleaved round by round.

    .venv/bin/python benchmarks/ray_executor.py --n 64 --backend vllm --rounds 2

Each run is its own ``generation.py`` process (as a user runs it), with a fresh output dir; the Ray runs start
a local cluster of this machine. Reported per run: wall time (process start to exit), the backend's load
time, the agent loop's time and steps/s (``results/<run>.json``). Overhead ratio = Ray loop time / in-process
loop time of the same round (goal <= 1.1), and the same for wall time (Ray adds a cluster and an actor
start). On paper: N GPU replicas run N x the measured per-replica rate, less the driver's share.
Result: ``benchmarks/results/ray_executor.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    from models.cpu import cpu_info

    return {"platform": platform.platform(), "cpu": cpu_info(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "python": platform.python_version()}


def one_run(mode: str, args, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "generation.py"), "--task", "hotpotqa", "--task_split", "dev", "--random",
           "--task_end_index", str(args.n), "--evaluate", "--method", "react", "--tool", "google",
           "--backend", args.backend, "--max_steps", str(args.max_steps), "--max_tokens", str(args.max_tokens),
           "--batch_size", str(args.batch_size), "--protocol", args.protocol, "--output_dir", str(out),
           "--run_name", "bench"]
    if mode != "in-process":
        cmd += ["--executor", "ray", "--replicas", mode.split("-")[1]]
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    result = json.loads((out / "results" / "bench.json").read_text())
    episodes = [json.loads(line) for line in (out / "trajs" / "bench.jsonl").read_text().splitlines()]
    loop_s = result["steps_this_invocation"] / result["steps_per_s"]
    return {"mode": mode, "wall_s": wall, "load_s": result["load_time_s"], "loop_s": loop_s,
            "steps": result["steps_this_invocation"], "steps_per_s": result["steps_per_s"],
            "questions_per_min": 60 * result["n_episodes"] / loop_s, "em": result["em"]["mean"],
            "load_average_at_start": load,
            "trajectories": {e["index"]: [s["raw"] for s in e["steps"]] + [e["prediction"]] for e in episodes}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--backend", default="vllm")
    p.add_argument("--max_steps", type=int, default=6)
    p.add_argument("--max_tokens", type=int, default=96)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--protocol", default="lenient", help="agent loop of every mode alike (as agent_throughput.py)")
    p.add_argument("--modes", default="in-process,ray-1,ray-2")
    p.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_executor.json"))
    args = p.parse_args()
    modes = args.modes.split(",")
    before = machine()
    rounds = []
    for r in range(args.rounds):
        runs = {}
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
                runs[mode] = one_run(mode, args, Path(tmp))
            print(json.dumps({k: v for k, v in runs[mode].items() if k != "trajectories"}), file=sys.stderr)
        base = runs.get("in-process")
        if base:
            for mode, run in runs.items():
                run["loop_ratio_vs_in_process"] = run["loop_s"] / base["loop_s"]
                run["wall_ratio_vs_in_process"] = run["wall_s"] / base["wall_s"]
                # Same greedy text as in-process, question by question (batch shapes may differ: see the module doc)
                run["same_trajectory_as_in_process"] = sum(run["trajectories"][i] == t for i, t in base["trajectories"].items()) / len(base["trajectories"])
        for run in runs.values():
            del run["trajectories"]
        rounds.append(runs)
    summary = {}
    for mode in modes:
        per_round = [r[mode] for r in rounds]
        summary[mode] = {k: statistics.median(x[k] for x in per_round)
                         for k in ("wall_s", "load_s", "loop_s", "steps", "steps_per_s", "questions_per_min")}
        if "in-process" in modes:
            summary[mode]["loop_ratio_per_round"] = [x["loop_ratio_vs_in_process"] for x in per_round]
            summary[mode]["wall_ratio_per_round"] = [x["wall_ratio_vs_in_process"] for x in per_round]
            summary[mode]["same_trajectory_per_round"] = [x["same_trajectory_as_in_process"] for x in per_round]
    rate = summary.get("ray-1", {}).get("questions_per_min")
    out = {"benchmark": "ray_executor", "command": " ".join(sys.argv), "config": vars(args),
           "machine_before": before, "machine_after": machine(), "note": args.note, "rounds": rounds,
           "summary": summary,
           "projection": None if not rate else {
               "per_replica_questions_per_min": rate,
               "n_gpu_replicas": {n: n * rate for n in (1, 2, 4, 8)},
               "assumes": "one replica per GPU, each as fast as the measured one on its own device; the driver "
                          "(one process, writing one line per episode) is not the bottleneck below ~10^4 episodes/s"}}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
