"""Agent-loop throughput: the FireAct-style reference loop against the hf and vllm backends.

    .venv/bin/python benchmarks/agent_throughput.py [--n 64] [--backends fireact-reference,hf,vllm]
        [--reference_n 16]   # the reference on the first 16 of the 64 only (it takes ~45 min on all 64)

Same N HotpotQA questions (FireAct's --random order of dev), same embedded model, same offline
tool and prompt, greedy decoding, one ReAct run each through ``generation.py``'s own code path
(``generation.Run``); only the backend differs:

(a) ``fireact-reference``: FireAct's ``models/llama.py`` loop, kept here only as a baseline: one
    prompt at a time, ``model.generate`` on the whole prompt every step, no cache reuse.
(b) ``hf``: one padded batch per step, each episode's KV cache reused across steps.
(c) ``vllm``: vLLM's engine with prefix caching and n-gram speculation; episodes join and leave its
    running batch one engine step at a time (``--speculative none``: without speculation).

``--repeats R`` runs every backend R times, in turn, and reports the run with the median steps/s (the lower
middle one of an even R) with the steps/s of all of them.
Reports ReAct steps/s, questions/min, generated tokens/s, prompt tokens computed per episode over
the episode's unique tokens (its final context), and answer agreement with (a). Writes
``benchmarks/results/agent_throughput.json``.

``--reference_n K`` runs the reference on the first K of the N questions only. It handles one prompt at
a time, so its steps/s does not depend on how many questions it is given (only on which: the first K
of FireAct's random order are a random sample of the N); the batched backends still get all N, as a
user running N questions would. Agreement is then over those K.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.base import Backend, Generation, register_backend  # noqa: E402


@register_backend("fireact-reference")
class FireActReference(Backend):
    """FireAct's LlamaInterface.generate_responses_from_llama, minus 4-bit loading: sequential
    ``generate`` over the full prompt with a stop-word criterion."""

    def __init__(self, config):
        super().__init__(config)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from models.resolve import resolve_model_path

        path = resolve_model_path(config.modelpath)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        from models.base import default_dtype

        dtype = getattr(torch, config.dtype or default_dtype())
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        self.torch = torch

    def generate(self, requests, *, stop=None, max_tokens=256, temperature=0.0):
        out = []
        for r in requests:
            ids = self.tokenizer(r.prompt, return_tensors="pt")
            n = ids["input_ids"].shape[1]
            with self.torch.inference_mode():
                gen = self.model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, stop_strings=stop,
                                          tokenizer=self.tokenizer, pad_token_id=self.tokenizer.pad_token_id)
            text = self.tokenizer.decode(gen[0][n:], skip_special_tokens=True)
            for s in stop or []:
                if s in text:
                    text = text[: text.index(s)]
            out.append(Generation(text=text, prompt_tokens=n, generated_tokens=gen.shape[1] - n, computed_prompt_tokens=n))
        return out


def machine() -> dict:
    """The CPU (model, the flags that decide its matmul speed), the load from other processes (1/5/15-min
    load averages: the speeds of a shared machine are only comparable as ratios), libraries preloaded."""
    import torch

    from models.cpu import cpu_info, preloaded

    return {"platform": platform.platform(), "cpu": cpu_info(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "preloaded": preloaded(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def run_backend(backend: str, n: int, out_dir: Path, args) -> dict:
    import generation
    from fireharness.records import read_episodes

    argv = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--task_end_index", str(n), "--evaluate",
            "--method", "react", "--tool", args.tool, "--backend", backend, "--max_steps", str(args.max_steps),
            "--max_tokens", str(args.max_tokens), "--batch_size", str(args.batch_size), "--output_dir", str(out_dir),
            "--run_name", backend, "--speculative", args.speculative, "--protocol", args.protocol] + \
        (["--dtype", args.dtype] if args.dtype else []) + \
        (["--compile", args.compile] if args.compile else [])
    run = generation.Run(generation.parse_args(argv))
    load = os.getloadavg()
    t0 = time.perf_counter()
    result = run.execute()
    wall = time.perf_counter() - t0
    episodes = {ep.index: ep for ep in read_episodes(run.trajs_path)}
    loop_s = wall - result["load_time_s"]
    gen_tokens = sum(ep.tokens["generated"] for ep in episodes.values())
    computed = sum(ep.tokens["computed"] for ep in episodes.values())
    unique = sum(ep.tokens["context"] for ep in episodes.values())
    return {"backend": backend, "questions": len(episodes), "steps": result["steps_this_invocation"],
            "load_s": result["load_time_s"], "loop_s": loop_s, "steps_per_s": result["steps_per_s"],
            "questions_per_min": 60 * len(episodes) / loop_s, "generated_tokens_per_s": gen_tokens / loop_s,
            "prompt_tokens_computed": computed, "unique_tokens": unique,
            "computed_over_unique": computed / unique if unique else None,
            "em": result["em"]["mean"], "f1": result["f1"]["mean"], "load_average_at_start": load,
            "backend_settings": result.get("backend_settings"),
            "predictions": {i: ep.prediction for i, ep in episodes.items()},
            "actions": {i: [s.action for s in ep.steps] for i, ep in episodes.items()}}


def median_run(repeats: list[dict]) -> dict:
    """The run with the median steps/s (the lower middle one of an even count): every speed column of the
    table then comes from one real run, and the others are listed beside it."""
    r = dict(sorted(repeats, key=lambda x: x["steps_per_s"])[(len(repeats) - 1) // 2])
    r["steps_per_s_runs"] = [x["steps_per_s"] for x in repeats]
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64, help="questions (FireAct's --random order of HotpotQA dev)")
    p.add_argument("--backends", default="fireact-reference,hf,vllm")
    p.add_argument("--reference_n", type=int, default=None,
                   help="run the sequential reference on the first K questions only (default: all N)")
    p.add_argument("--tool", default="google", help="offline tool (google: the shipped SerpAPI cache)")
    p.add_argument("--max_steps", type=int, default=8)
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--dtype", default=None, help="all backends alike (default: bfloat16 where the CPU computes it)")
    p.add_argument("--speculative", default="ngram", help="vllm: ngram (generation.py's default) or none")
    p.add_argument("--compile", default=None, help="vllm: true/false, torch.compile at engine start (default: generation.py's)")
    p.add_argument("--protocol", default="lenient",
                   help="agent loop of every backend alike (methods/protocols): lenient, the loop of the figures "
                        "committed before protocols existed; fireact regenerates stop-less texts up to 5 times")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every backend R times, interleaved, and report the median run (this machine's speed "
                        "drifts by 10-20%% over minutes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "agent_throughput.json"))
    args = p.parse_args()
    machine_before = machine()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for backend in args.backends.split(","):
                print(f"== {backend} ({rep + 1}/{args.repeats})", file=sys.stderr)
                n = min(args.reference_n or args.n, args.n) if backend == "fireact-reference" else args.n
                runs.setdefault(backend, []).append(run_backend(backend, n, Path(tmp) / str(rep), args))
                # Written after every run: a benchmark stopped early keeps the runs it finished.
                write(report(runs), machine_before, args, rounds=rep + 1)


def report(all_runs: dict) -> tuple[dict, str]:
    runs = {name: median_run(repeats) for name, repeats in all_runs.items()}
    ref = runs.get("fireact-reference")
    rows = []
    for name, r in runs.items():
        if ref and name != "fireact-reference":
            # Over the questions both ran (all of the reference's: they are the first K of the same order).
            same = [i for i in ref["predictions"] if r["predictions"].get(i) == ref["predictions"][i]]
            same_traj = [i for i in ref["actions"] if r["actions"].get(i) == ref["actions"][i]]
            r["answer_agreement"] = len(same) / len(ref["predictions"])
            r["trajectory_agreement"] = len(same_traj) / len(ref["actions"])
            r["speedup_steps_per_s"] = r["steps_per_s"] / ref["steps_per_s"]
            # Round by round (each backend's k-th run against the reference's k-th, minutes apart).
            r["speedup_each_round"] = [a / b for a, b in zip(r["steps_per_s_runs"], ref["steps_per_s_runs"])]
        rows.append([name, r["questions"], r["steps"], f"{r['steps_per_s']:.2f}",
                     " / ".join(f"{x:.2f}" for x in r["steps_per_s_runs"]), f"{r['questions_per_min']:.1f}",
                     f"{r['generated_tokens_per_s']:.0f}", f"{r['computed_over_unique']:.2f}",
                     f"{r.get('speedup_steps_per_s', 1.0):.1f}x", f"{r.get('answer_agreement', 1.0):.2f}",
                     f"{100 * r['em']:.1f}"])
    from tabulate import tabulate

    table = tabulate(rows, headers=["backend", "questions", "steps", "steps/s", "each run", "questions/min", "gen tok/s",
                                    "computed/unique", "speed-up", "answer agreement", "EM %"], tablefmt="github")
    return runs, table


def write(result: tuple[dict, str], machine_before: dict, args, rounds: int) -> None:
    runs, table = result
    print(table)
    out = {"benchmark": "agent_throughput", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_before,
           "load_average_after": os.getloadavg(), "rounds_done": rounds, "config": vars(args), "runs": runs,
           "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":  # vLLM starts worker processes
    main()
