"""The machine's limit for the embedded model's decode: how many tokens a second its matmuls alone allow.

    .venv/bin/python benchmarks/gemm_roofline.py [--batches 16 64 256] [--dtype float32] [--seconds 3]

One forward of SmolLM2-135M's linear layers (30 layers of q, k, v, o, gate, up, down, and the 49,152-word LM
head) as plain ``torch`` matmuls on random weights, for B tokens at once (a decode step of B sequences), on
every core torch is given. No attention, norms, sampling or scheduling: an upper bound for any engine's
generated tokens/s at that batch on this CPU, to read vLLM's figure against (issue 23). Writes
``benchmarks/results/gemm_roofline.json`` (the CPU named in it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# SmolLM2-135M: hidden, MLP, layers, key/value width (3 of 9 heads of 64), vocabulary.
HIDDEN, MLP, LAYERS, KV, VOCAB = 576, 1536, 30, 192, 49152
LAYER_SHAPES = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN), (HIDDEN, MLP), (HIDDEN, MLP),
                (MLP, HIDDEN)]


def forward_seconds(batch: int, dtype, seconds: float) -> float:
    import torch

    x = {k: torch.randn(batch, k, dtype=dtype) for k in (HIDDEN, MLP)}
    layer = [torch.randn(a, b, dtype=dtype) for a, b in LAYER_SHAPES]
    head = torch.randn(HIDDEN, VOCAB, dtype=dtype)

    def forward():
        for _ in range(LAYERS):
            for w in layer:
                x[w.shape[0]] @ w
        x[HIDDEN] @ head

    forward()  # warm-up (oneDNN picks its kernels)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward()
        n += 1
    return (time.perf_counter() - start) / n


def main(argv=None) -> dict:
    import torch

    from models.cpu import cpu_info

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--seconds", type=float, default=3.0, help="timed per batch size")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gemm_roofline.json"))
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    macs = LAYERS * sum(a * b for a, b in LAYER_SHAPES) + HIDDEN * VOCAB
    rows = []
    for batch in args.batches:
        s = forward_seconds(batch, dtype, args.seconds)
        rows.append({"batch": batch, "forward_s": s, "tokens_per_s": batch / s, "gflops": 2 * macs * batch / s / 1e9})
        print(f"batch {batch:4d}: {batch / s:7.1f} tokens/s, {2 * macs * batch / s / 1e9:6.1f} GFLOP/s", flush=True)
    result = {"benchmark": "gemm_roofline", "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_info(),
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "dtype": args.dtype,
              "macs_per_token": macs, "load_average": os.getloadavg(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
