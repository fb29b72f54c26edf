"""``make demo``: prompted ReAct against a fine-tuned agent on the same HotpotQA questions, in one engine.

The embedded SmolLM2-135M answers the first 30 HotpotQA distractor-dev questions twice, offline (FireAct's
Google cache, the Wikipedia index answering its misses), in one vLLM engine: once with FireAct's few-shot
ReAct prompt, once through the released multitask LoRA (``data/adapters/smollm2-135m-fireact-multitask-lora``,
trained on FireAct's multitask_multimethod.json; evaluated as FireAct evaluates its fine-tuned models:
Alpaca format, no few-shot examples), the adapter going with each request. Both rows run the same loop, the
lenient protocol of the committed ``results/`` (FireAct's own loop, ``--protocol fireact``, lets the prompted
model write 1,000-token steps and regenerate them: over 10 minutes here instead of about 5). Then the two rows
and their paired comparison, as ``leaderboard.py`` prints them, and the command that opens the viewer on both runs. vLLM's
log lines go to ``OUTPUT/engine.log``; a re-run resumes (finished questions are not asked again).

    .venv/bin/python -m experiments.demo [--n 30] [--max_steps 8] [--max_tokens N] [--output_dir outputs/demo] [--protocol lenient]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from fireharness.paths import DATA_DIR

ADAPTER = DATA_DIR / "adapters" / "smollm2-135m-fireact-multitask-lora"
MODEL = "smollm2-135m"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=30, help="questions (the first N of distractor-dev)")
    p.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    p.add_argument("--adapter", type=Path, default=ADAPTER, help="the fine-tuned agent's LoRA adapter")
    p.add_argument("--max_steps", type=int, default=8, help="steps per episode")
    p.add_argument("--max_tokens", type=int, default=None, help="tokens per step (default: the protocol's)")
    p.add_argument("--protocol", default="lenient", choices=("lenient", "fireact"),
                   help="the agent loop of both rows (methods/protocols)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n {args.n}: ask at least one question")
    if args.max_steps < 1:
        p.error(f"--max_steps {args.max_steps}: give the agent at least one step")
    if not (args.adapter / "adapter_config.json").is_file():
        if args.adapter != ADAPTER:
            p.error(f"--adapter {args.adapter}: no adapter_config.json there; pass a LoRA adapter folder")
        print(f"note: the released adapter {ADAPTER} is not in this checkout (data/adapters/README.md says how "
              f"it is made); the prompted agent runs alone", flush=True)
        args.adapter = None
    return args


def quiet_engine(log_path: Path) -> tuple:
    """Everything written to the process's stderr (vLLM's and torch's log lines, from C++ too) goes to
    ``log_path``; Python's own stderr (the progress bars) stays on the terminal. Returns (log, terminal)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's loggers then go through the root logger
    logging.basicConfig(stream=log, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)
    logging.captureWarnings(True)
    return log, terminal


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.output_dir
    log_path = out / "engine.log"
    print(f"Prompted ReAct vs a fine-tuned ReAct agent: {MODEL}, the first {args.n} HotpotQA distractor-dev "
          f"questions, offline tools, the {args.protocol} protocol for both, one vLLM engine (its log: {log_path})",
          flush=True)
    log, terminal = quiet_engine(log_path)

    from generation import Run, RunConfig
    from models import BackendConfig, get_backend
    from models.adapters import adapter_rank, prepare_adapter
    from models.resolve import resolve_model_path

    common = dict(task="hotpotqa", task_split="distractor-dev", task_end_index=args.n, method="react",
                  tool="google", offline=True, search_fallback="wikipedia", evaluate=True, backend="vllm",
                  modelpath=MODEL, max_steps=args.max_steps, max_tokens=args.max_tokens, protocol=args.protocol, output_dir=str(out))
    configs = [RunConfig(**common, run_name=f"demo_prompted_react_{args.protocol}")]
    labels = ["prompted (FireAct's few-shot ReAct prompt)"]
    if args.adapter is not None:
        configs.append(RunConfig(**common, add_lora=True, peftpath=str(args.adapter), alpaca_format=True,
                                 run_name=f"demo_finetuned_react_{args.protocol}"))
        labels.append(f"fine-tuned ({args.adapter.name}, Alpaca format, no few-shot examples)")
    runs = [Run(c) for c in configs]  # every input checked before the engine starts
    engine = None
    try:
        for label, run in zip(labels, runs):
            print(f"\n{label}", file=sys.stderr, flush=True)
            if engine is None and len(run.done) < len(run.indices):  # a re-run that has all its answers needs none
                t0 = time.perf_counter()
                rank = adapter_rank(prepare_adapter(str(args.adapter), resolve_model_path(MODEL))) if args.adapter else 0
                sys.stderr = log  # vLLM's own loading bars, too
                try:
                    engine = get_backend("vllm", BackendConfig(modelpath=MODEL, max_lora_rank=rank, batch_size=64))
                finally:
                    sys.stderr = terminal
                print(f"engine ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            run.execute(backend=engine)
    finally:
        if engine is not None:
            engine.close()

    import leaderboard
    from fireharness.view.sources import load_runs

    found = {r.name: r for r in load_runs([out / "results"])}
    pair = [found[c.run_name] for c in configs]
    print("\n" + leaderboard.markdown(leaderboard.display_frame(leaderboard.leaderboard_frame(pair))))
    if len(pair) == 2:
        table, note = leaderboard.compare_runs(*pair)
        print(f"\nPaired: {note}\n")
        print(leaderboard.markdown(table))
    print(f"\nSee every step of both runs:\n  .venv/bin/python -m fireharness.view {out}\n"
          f"then open http://127.0.0.1:8765/#/compare (the 2x2 table; each cell opens both runs' episodes).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
