"""Repeated sampling on vllm: do the K samples of a question share their prompt in the engine?

    .venv/bin/python benchmarks/sampling_prefix_cache.py [--n 8] [--k 8] [--max_steps 4] [--max_tokens 64]

N HotpotQA dev questions (FireAct's --random order), ReAct with FireAct's few-shot prompt, offline
Wikipedia, the embedded model, K samples each at temperature 0.7 (``generation.py --num_samples K``).
Reports the prompt tokens the engine computed over the unique tokens of all the episodes, counted as a
prefix tree: the few-shot prompt every question starts with once, each question's own first prompt after
it once, plus what each sample added after that (its final context minus the first prompt). 1.0 would be
every unique token computed once; about K would be no sharing between the samples. Writes
``benchmarks/results/sampling_prefix_cache.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    import generation
    from methods.base import AgentState
    from models import BackendConfig, get_backend
    from models.cpu import cpu_info
    from models.resolve import resolve_model_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max_steps", type=int, default=4)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--protocol", default="lenient", help="agent loop (as agent_throughput.py): one generation per step")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampling_prefix_cache.json"))
    args = p.parse_args(argv)

    backend = get_backend("vllm", BackendConfig(modelpath=resolve_model_path("smollm2-135m"), batch_size=64))
    with tempfile.TemporaryDirectory() as tmp:
        run = generation.Run(generation.parse_args([
            "--task", "hotpotqa", "--task_split", "dev", "--random", "--task_end_index", str(args.n), "--evaluate",
            "--backend", "vllm", "--method", "react", "--tool", "wikipedia", "--max_steps", str(args.max_steps),
            "--max_tokens", str(args.max_tokens), "--num_samples", str(args.k), "--protocol", args.protocol, "--temperature",
            str(args.temperature), "--output_dir", tmp]))
        t0 = time.perf_counter()
        result = run.execute(backend=backend)
        seconds = time.perf_counter() - t0
        episodes = list(run.done.values())
    backend.llm.reset_prefix_cache()
    computed = sum(ep.tokens["computed"] for ep in episodes)
    # Unique tokens as a prefix tree of every episode's context: the few-shot prompt every question starts
    # with once, each question's first prompt after it once, each sample's own continuation once.
    firsts = {i: backend.encode(run.method.prompt(AgentState(key="", index=i, question=run.task[i])))
              for i in run.indices}
    shared = len(os.path.commonprefix(list(firsts.values())))
    unique = shared
    for i, first in firsts.items():
        samples = [ep for ep in episodes if ep.index == i]
        unique += len(first) - shared + sum(max(0, ep.tokens["context"] - len(first)) for ep in samples)
    backend.close()
    report = {"cpu": cpu_info(), "protocol": args.protocol, "n_questions": args.n, "k": args.k, "episodes": len(episodes),
              "max_steps": args.max_steps, "max_tokens": args.max_tokens, "temperature": args.temperature,
              "prompt_tokens": sum(ep.tokens["prompt"] for ep in episodes), "prompt_tokens_computed": computed,
              "unique_tokens": unique, "shared_prefix_tokens": shared, "computed_over_unique": computed / unique, "seconds": seconds,
              "steps_per_s": result["steps_per_s"], "sampling": result.get("sampling"), "em": result["em"]}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{len(episodes)} episodes ({args.n} questions x {args.k}): prompt tokens {report['prompt_tokens']}, "
          f"computed {computed}, unique {unique}: computed / unique {computed / unique:.2f}; {seconds:.0f} s")
    return report


if __name__ == "__main__":
    main()
