#!/usr/bin/env bash
# The FireAct loop in miniature on a CPU, as a config of the loop (experiments/mini_fireact.yaml): prompted
# IO, CoT and ReAct against a LoRA on FireAct's multitask_multimethod.json, SmolLM2-135M, offline.
#
#   bash experiments/mini_fireact.sh                      # hours on 2 cores; run it in the background
#   bash experiments/mini_fireact.sh --eval hotpotqa:distractor-dev:200-500   # any field, as a flag
#
# It resumes where it stopped (python -m fireharness.loop); the leaderboard, paired comparisons and plot go
# to outputs/mini_fireact_loop/leaderboard.{md,csv,png}. The committed results/mini_fireact.md came from
# this script's earlier, staged form (git log -- experiments/mini_fireact.sh), which also trained LoRAs on
# hotpotqa.json alone and with oracle trajectories and evaluated Bamboogle, StrategyQA and MMLU.
set -euo pipefail
cd "$(dirname "$0")/.."
make venv >/dev/null
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4} \
  VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}
exec .venv/bin/python -m fireharness.loop experiments/mini_fireact.yaml "$@"
