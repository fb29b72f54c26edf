"""Backend throughput on ReAct-like prompts: hf (batched, KV reuse) vs vllm, and batch vs sequential.

    .venv/bin/python benchmarks/backend_throughput.py [--n 20] [--steps 3] [--max_tokens 128]
        [--sequential_n 5] [--backends hf,vllm]

N episodes, each the text of data/fireact/prompts/react_hotpotqa_google.txt + a HotpotQA dev
question; ``--steps`` steps each (the next prompt = prompt + generation + a fixed observation),
stop ["\\nObservation:"], greedy. Reports steps/s per backend, per-step times, prompt tokens
computed vs total, and one-step throughput of the hf batch vs sequential ``model.generate`` (plain,
one prompt at a time, no reuse; on ``--sequential_n`` prompts, as it is slow). Writes
``benchmarks/results/backend_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

STOP = ["\nObservation:"]
OBSERVATION = "\nObservation: The search returned a short snippet that does not contain the answer.\n"


def make_prompts(n: int) -> list[str]:
    base = (ROOT / "data/fireact/prompts/react_hotpotqa_google.txt").read_text()
    questions = [q["question"] for q in json.loads((ROOT / "data/fireact/data/hotpotqa/dev.json").read_text())[:n]]
    return [f"{base}\n\n{q}\n" for q in questions]


def run_episodes(backend, prompts, steps, max_tokens):
    from models import GenerationRequest

    prompts = list(prompts)
    per_step, computed, total, generated = [], 0, 0, 0
    for step in range(steps):
        start = time.perf_counter()
        gens = backend.generate([GenerationRequest(f"ep{i}", p) for i, p in enumerate(prompts)],
                                stop=STOP, max_tokens=max_tokens, temperature=0.0)
        per_step.append(time.perf_counter() - start)
        for i, g in enumerate(gens):
            computed += g.computed_prompt_tokens
            total += g.prompt_tokens
            generated += g.generated_tokens
            prompts[i] = prompts[i] + g.text + OBSERVATION
    for i in range(len(prompts)):
        backend.release(f"ep{i}")
    wall = sum(per_step)
    return {"episodes": len(prompts), "steps": steps, "wall_s": round(wall, 2),
            "steps_per_s": round(len(prompts) * steps / wall, 3), "step_s": [round(t, 2) for t in per_step],
            "prompt_tokens": total, "computed_prompt_tokens": computed, "generated_tokens": generated,
            "generated_tokens_per_s": round(generated / wall, 2)}


def sequential_generate(backend, prompts, max_tokens):
    """FireAct's way: one prompt at a time through HF generate, stopping at the stop string."""
    import torch

    start = time.perf_counter()
    generated = 0
    for prompt in prompts:
        ids = torch.tensor([backend.encode(prompt)])
        out = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                     do_sample=False, stop_strings=STOP, tokenizer=backend.tokenizer,
                                     pad_token_id=backend.pad_id)
        generated += out.shape[1] - ids.shape[1]
    wall = time.perf_counter() - start
    return {"prompts": len(prompts), "wall_s": round(wall, 2), "prompts_per_s": round(len(prompts) / wall, 3),
            "generated_tokens_per_s": round(generated / wall, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--sequential_n", type=int, default=5)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/backend_throughput.json"))
    args = parser.parse_args()

    import torch

    from models import BackendConfig, get_backend

    prompts = make_prompts(args.n)
    results = {"config": vars(args), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                "torch_threads": torch.get_num_threads(),
                                                "load_avg_at_start": os.getloadavg()}}
    for name in args.backends.split(","):
        start = time.perf_counter()
        backend = get_backend(name, BackendConfig(batch_size=args.n))
        load_s = time.perf_counter() - start
        results[name] = {"load_s": round(load_s, 1), **run_episodes(backend, prompts, args.steps, args.max_tokens)}
        print(name, json.dumps(results[name]), flush=True)
        if name == "hf" and args.sequential_n:
            subset = prompts[:args.sequential_n]
            results["hf_sequential_generate"] = sequential_generate(backend, subset, args.max_tokens)
            one = run_episodes(backend, subset, 1, args.max_tokens)
            results["hf_batch_one_step"] = {"prompts": len(subset), "wall_s": one["wall_s"],
                                            "prompts_per_s": one["steps_per_s"],
                                            "generated_tokens_per_s": one["generated_tokens_per_s"]}
            print("sequential", results["hf_sequential_generate"], "batch", results["hf_batch_one_step"], flush=True)
        backend.close()
        del backend
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.output)


if __name__ == "__main__":
    main()
