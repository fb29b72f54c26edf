"""What this CPU computes fast: its model and flags, and a short measured choice of dtype, cached per machine.

bfloat16 is not faster wherever the CPU has bfloat16 instructions: on an Intel Xeon with AMX it is 3x
float32 for the embedded model, on an AMD EPYC Zen 5 (AVX512-BF16, no AMX) the agent loop ran 0.52 steps/s in
bfloat16 against 0.73 in float32, and on an AVX2-only Zen 3 bfloat16 attention is emulated (several times
slower). So the choice is measured: one decoder layer's work for batched decoding (the linears of a
576-wide model at 32 rows, masked GQA attention over a 1,024-token cache) and for a 256-token prefill, in
float32 and bfloat16, interleaved, best of three. bfloat16 wins only if it is at least ``MARGIN`` faster:
float32 is the exact one. The result is cached in ``$FIREHARNESS_CACHE/cpu_probe.json`` keyed by CPU model,
flags and torch version (about a second to measure on 2 cores).
"""
from __future__ import annotations

import json
import os
import time
from functools import cache
from pathlib import Path

FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # the ones that decide CPU matmul speed
MARGIN = 1.15


def cpu_info() -> dict:
    """The CPU's model name and whether it has each of ``FLAGS`` (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", ""), "family": fields.get("cpu family"), "model_id": fields.get("model"),
            "flags": {f: f in flags for f in FLAGS}}


def _probe_seconds(dtype) -> float:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    hidden, inter, heads, kv_heads, dim, rows, cached, prompt = 576, 1536, 9, 3, 64, 32, 1024, 256
    weights = [rand(inter, hidden), rand(inter, hidden), rand(hidden, inter), rand(hidden, hidden),
               rand(hidden, hidden), rand(kv_heads * dim, hidden)]
    q, k, v = rand(rows, heads, 1, dim), rand(rows, kv_heads, cached, dim), rand(rows, kv_heads, cached, dim)
    mask = torch.ones(rows, 1, 1, cached, dtype=torch.bool)
    mask[::2, :, :, :cached // 4] = False  # ragged rows, as in a padded batch
    decode_x, prefill_x = rand(rows, hidden), rand(prompt, hidden)
    pq, pk = rand(1, heads, prompt, dim), rand(1, kv_heads, prompt, dim)

    def layer():
        for x in (decode_x, prefill_x):
            F.linear(x, weights[0]), F.linear(x, weights[1]), F.linear(F.linear(x, weights[0]), weights[2])
            F.linear(x, weights[3]), F.linear(x, weights[4]), F.linear(x, weights[5])
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        F.scaled_dot_product_attention(pq, pk, pk, is_causal=True, enable_gqa=True)

    layer()  # first call: kernel selection, allocation
    t0 = time.perf_counter()
    layer()
    return time.perf_counter() - t0


def measure_dtypes(rounds: int = 3) -> dict:
    """Seconds of the probe per dtype (best of ``rounds``, interleaved) and the one chosen."""
    import torch

    seconds = {"float32": float("inf"), "bfloat16": float("inf")}
    with torch.inference_mode():
        for _ in range(rounds):
            for name in seconds:
                seconds[name] = min(seconds[name], _probe_seconds(getattr(torch, name)))
    choice = "bfloat16" if seconds["bfloat16"] * MARGIN < seconds["float32"] else "float32"
    return {"dtype": choice, "probe_s": seconds}


@cache
def fastest_dtype() -> dict:
    """``measure_dtypes()`` for this machine, from the cache file when this CPU and torch were measured before."""
    import torch

    from fireharness.paths import cache_dir

    info = cpu_info()
    key = json.dumps([info, torch.__version__, MARGIN], sort_keys=True)
    path = cache_dir() / "cpu_probe.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure_dtypes()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    return known[key]


def preloaded() -> list[str]:
    """The libraries in LD_PRELOAD (vLLM's CPU recipe: tcmalloc, Intel OpenMP), by file name."""
    return [Path(p).name for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()]
