"""The agent-tuning loop as one command: sample -> filter -> SFT -> DPO -> evaluate -> repeat.

    python -m fireharness.loop experiments/mini_fireact.yaml                 # a config file (LoopConfig's fields)
    python -m fireharness.loop experiments/mini_fireact.yaml --rounds 3      # flags override the file

Round 0 trains on a teacher's trajectories (``teacher_backend``: any backend, model, adapter and method run on
the train questions) and/or files (``teacher_files``: ours or FireAct's released sets). Round r >= 1: round
r-1's model samples each train question ``num_samples`` times at ``temperature``; the filter keeps what
passes (EM = 1, ``min_f1``, ``filter_max_steps``, ``drop_tool_errors``) as SFT rows and, with ``dpo``, the
successes against the failures of the same question as DPO pairs (``finetune.convert``); SFT trains a LoRA
from the base model, DPO continues it; every trained model and, once, the prompted ``baselines`` are
evaluated greedily on the ``eval`` questions; a leaderboard compares each round with the one before and
with the baselines (paired: McNemar on EM).

Serving (``serve``): ``merged`` (default) merges each round's adapter into its weights
(``adapters/r<R>_sft_merged/``) and starts one vllm engine per model, shared by all of that model's stages
(round R's evaluation and round R+1's sampling); ``lora`` keeps one engine for the whole loop and passes
each run's adapter with its requests (vLLM's LoRARequest). vLLM's LoRA kernels on CPU slow every request of a
LoRA-enabled engine, the base model's too (minutes for what a merged model does in seconds here), hence
the default. Training runs in its own process. The loop is a layer
above ``generation.py``'s ``Run`` and the trainers: it calls them, they know nothing of it.

The experiment directory (``output_dir``), which the viewer reads:

    manifest.json        config; per stage: key (hash of its parameters, its upstream stages' keys and the
                         files it reads from outside), status (running/done), kind, deps, params, seconds,
                         work_seconds, outputs; last_invocation: wall_s, engine_start_s, stage_work_s, overhead;
                         invocations: each run of the command (start, CPU, wall_s, stage_work_s), a killed one too
                         (a heartbeat brings the running stage's seconds and its invocation's up to date every 30 s)
    trajs/<run>.jsonl    episodes (fireharness.records.Episode) of every generation run
    results/<run>.json   generation.py's results of each run (EM/F1 with CIs, pass@k, majority vote)
    data/r<R>_sft.json   round R's Alpaca rows; r<R>_dpo.jsonl its DPO pairs; r<R>_filter.txt the filter's table
    adapters/r<R>_sft/   round R's LoRA adapter (r<R>_dpo/ after DPO)
    leaderboard.md/.csv/.png   a row per round and stage, and the paired comparisons

Run names: ``baseline_<method>_<set>``, ``r0_teacher_<set>``, ``r<R>_sample_<set>``, ``r<R>_sft_eval_<set>``,
``r<R>_dpo_eval_<set>``, where ``<set>`` is ``<task>_<split>_<start>_<end>``.

Kill it anywhere (even with SIGKILL) and rerun the same command: finished stages whose key is unchanged
are skipped, generation resumes by episode (each sample's seed comes from its run, index and sample, so
a re-drawn sample is the same episode), training from its last checkpoint. A changed field re-runs the
stages it reaches, and the log says which field or upstream stage changed.
"""
from .config import LoopConfig, LoopConfigError, parse_config  # noqa: F401
from .run import Loop, LoopError  # noqa: F401
