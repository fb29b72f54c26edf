"""A fine-tuned agent on vllm: LoRA per request in a LoRA-enabled engine vs the same weights merged.

    .venv/bin/python benchmarks/lora_serving.py --adapter DIR [--n 8] [--repeats 2]

The loop (fireharness.loop) serves every round's model from one engine by passing each run's adapter with
its requests (vLLM's LoRARequest); the alternative is a merged model per round (finetune.merge) in an engine
of its own. Both engines start in this process, then run the same N HotpotQA dev questions (ReAct, FireAct's
Alpaca format, offline Wikipedia, greedy) in turn, ``--repeats`` times, with their prefix caches reset
before each run. Reports steps/s of each and the ratio per repeat; writes
``benchmarks/results/lora_serving.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    import generation
    from models import BackendConfig, get_backend
    from models.adapters import adapter_rank, prepare_adapter
    from models.cpu import cpu_info
    from models.resolve import resolve_model_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max_steps", type=int, default=4)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--protocol", default="lenient", help="agent loop (as agent_throughput.py): one generation per step")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_serving.json"))
    args = p.parse_args(argv)

    base = resolve_model_path("smollm2-135m")
    merged = Path(tempfile.mkdtemp(prefix="merged-"))
    from finetune.merge import main as merge
    merge(["--base_model", "smollm2-135m", "--peftpath", args.adapter, "--output_dir", str(merged)])
    rank = adapter_rank(prepare_adapter(args.adapter, base))
    engines = {}
    t0 = time.perf_counter()
    engines["lora"] = get_backend("vllm", BackendConfig(modelpath=base, batch_size=64, max_lora_rank=rank))
    start = {"lora": time.perf_counter() - t0}
    t0 = time.perf_counter()
    engines["merged"] = get_backend("vllm", BackendConfig(modelpath=str(merged), batch_size=64))
    start["merged"] = time.perf_counter() - t0

    runs = {k: [] for k in engines}
    answers = {}
    for repeat in range(args.repeats):
        for name, engine in engines.items():
            flags = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--task_end_index", str(args.n),
                     "--evaluate", "--backend", "vllm", "--method", "react", "--tool", "wikipedia", "--alpaca_format",
                     "--max_steps", str(args.max_steps), "--max_tokens", str(args.max_tokens), "--protocol", args.protocol]
            if name == "lora":
                flags += ["--add_lora", "--peftpath", args.adapter, "--modelpath", base]
            else:
                flags += ["--modelpath", str(merged)]
            engine.llm.reset_prefix_cache()
            with tempfile.TemporaryDirectory() as tmp:
                run = generation.Run(generation.parse_args(flags + ["--output_dir", tmp]))
                result = run.execute(backend=engine)
                answers[name] = [run.done[k].prediction for k in sorted(run.done)]
            runs[name].append(result["steps_per_s"])
            print(f"repeat {repeat}: {name} {result['steps_per_s']:.2f} steps/s", file=sys.stderr)
    for engine in engines.values():
        engine.close()
    ratios = [m / lo for m, lo in zip(runs["merged"], runs["lora"])]
    report = {"cpu": cpu_info(), "protocol": args.protocol, "n": args.n, "max_steps": args.max_steps, "max_tokens": args.max_tokens,
              "adapter_rank": rank, "engine_start_s": start, "steps_per_s": runs,
              "merged_over_lora": ratios, "same_answers": answers["lora"] == answers["merged"]}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
