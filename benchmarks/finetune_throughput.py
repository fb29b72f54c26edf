"""Fine-tuning throughput: our LoRA fine-tuner against FireAct's alpaca-lora recipe, side by side.

Same examples of FireAct's hotpotqa.json, same model (the embedded one), same LoRA (r 8, q/v), same
number of optimizer steps. The reference is alpaca-lora as FireAct ran it: every example padded to
cutoff_len 512, fp32, no packing, loss on every token, transformers.Trainer. Ours is finetune.sft with
its defaults: padding-free micro-batches, bf16 autocast where the CPU/GPU has it, loss on Thought/Action.
Useful tokens are the examples' non-padding tokens (the same count for both); tokens/s is over the
training loop only. Each variant runs in its own process so peak RSS is its own.

    python benchmarks/finetune_throughput.py                      # 128 examples, batch 16, micro 4
    python benchmarks/finetune_throughput.py --n_examples 32 --batch_size 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data/fireact/data/finetune/alpaca_format/hotpotqa.json"
RESULTS = ROOT / "benchmarks/results/finetune_throughput.json"


def subset(n: int, path: Path) -> Path:
    rows = json.loads(DATA.read_text())[:n]
    path.write_text(json.dumps(rows))
    return path


def run_reference(args, data: Path) -> dict:
    """alpaca-lora (FireAct finetune/llama_lora/finetune.py) with padding to cutoff_len, fp32."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from finetune.common import load_causal_lm, load_tokenizer
    from finetune.data import alpaca_prompt
    from models.resolve import resolve_model_path

    base = resolve_model_path("smollm2-135m")
    tokenizer = load_tokenizer(base)
    rows = json.loads(data.read_text())
    feats, useful = [], 0
    for r in rows:
        enc = tokenizer(alpaca_prompt(r) + r["output"], truncation=True, max_length=args.cutoff_len)
        ids = enc["input_ids"]
        if ids[-1] != tokenizer.eos_token_id and len(ids) < args.cutoff_len:
            ids = ids + [tokenizer.eos_token_id]
        useful += len(ids)
        feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    model = load_causal_lm(base, attn_implementation="sdpa")  # fp32, padded: as alpaca-lora
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                             bias="none", task_type="CAUSAL_LM"))
    targs = transformers.TrainingArguments(
        output_dir=str(args.workdir / "reference"), per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.batch_size // args.micro_batch_size, num_train_epochs=1,
        learning_rate=3e-4, logging_steps=1, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        seed=42)
    collator = transformers.DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=args.cutoff_len,
                                                   return_tensors="pt")
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=feats, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"variant": "fireact_alpaca_lora", "steps": trainer.state.global_step, "seconds": seconds,
            "useful_tokens": useful, "computed_tokens": len(rows) * args.cutoff_len,
            "trained_tokens": useful, "losses": losses, "bf16": False}


def run_ours(args, data: Path, bf16: str) -> dict:
    from finetune.sft import LoraArguments, train

    out = args.workdir / f"ours_bf16_{bf16}"
    summary = train(LoraArguments(base_model="smollm2-135m", data_path=str(data), output_dir=str(out),
                                  batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, num_epochs=1,
                                  cutoff_len=args.cutoff_len, bf16=bf16, learning_rate=3e-4))
    from finetune.common import load_tokenizer
    from finetune.data import build_sft_dataset
    from models.resolve import resolve_model_path

    _, ds = build_sft_dataset(data, load_tokenizer(resolve_model_path("smollm2-135m")), args.cutoff_len)
    useful = sum(len(x) for x in ds["input_ids"])
    return {"variant": f"ours_lora_bf16_{summary['bf16']}", "steps": summary["optimizer_steps"],
            "seconds": summary["train_seconds"], "useful_tokens": useful, "computed_tokens": useful,
            "trained_tokens": summary["trained_tokens_per_epoch"], "losses": summary["losses"], "bf16": summary["bf16"]}


def child(args) -> None:
    data = Path(args.data)
    result = run_reference(args, data) if args.variant == "reference" else run_ours(args, data, args.variant)
    result["useful_tokens_per_s"] = result["useful_tokens"] / result["seconds"]
    result["trained_tokens_per_s"] = result["trained_tokens"] / result["seconds"]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def machine() -> dict:
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((l.split(":", 1)[1].strip() for l in flags.splitlines() if l.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "cuda": torch.cuda.is_available(), "load_avg_at_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_examples", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--micro_batch_size", type=int, default=4)
    parser.add_argument("--cutoff_len", type=int, default=512)
    parser.add_argument("--variants", default="reference,auto,false",
                        help="reference (FireAct), and our fine-tuner with --bf16 auto / false")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fireharness_ft_bench"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.variant:
        return child(args)

    from tabulate import tabulate

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = subset(args.n_examples, args.workdir / "data.json")
    info = machine()
    runs = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--data", str(data), "--workdir", str(args.workdir),
               "--batch_size", str(args.batch_size), "--micro_batch_size", str(args.micro_batch_size),
               "--cutoff_len", str(args.cutoff_len)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"variant {variant} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(line[len("RESULT "):]))
        print(f"{variant}: {runs[-1]['useful_tokens_per_s']:.1f} useful tokens/s", flush=True)
    ref = next((r for r in runs if r["variant"] == "fireact_alpaca_lora"), None)
    for r in runs:
        r["speedup_useful_tokens_per_s"] = r["useful_tokens_per_s"] / ref["useful_tokens_per_s"] if ref else None
    result = {"benchmark": "finetune_throughput", "machine": info, "n_examples": args.n_examples,
              "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "cutoff_len": args.cutoff_len,
              "model": "smollm2-135m", "data": str(DATA.relative_to(ROOT)), "target_speedup": 3.0, "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(tabulate([[r["variant"], r["steps"], f"{r['seconds']:.0f}", r["useful_tokens"], r["computed_tokens"],
                     f"{r['useful_tokens_per_s']:.1f}", f"{r['trained_tokens_per_s']:.1f}", f"{r['peak_rss_mib']:.0f}",
                     f"{r['speedup_useful_tokens_per_s']:.2f}x" if r["speedup_useful_tokens_per_s"] else "",
                     f"{r['losses'][0]:.3f}->{r['losses'][-1]:.3f}"] for r in runs],
                   headers=["variant", "steps", "s", "useful tok", "computed tok", "useful tok/s", "trained tok/s",
                            "peak RSS MiB", "speed-up", "loss"]))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
