#!/usr/bin/env bash
# The FireAct loop in miniature on a CPU: prompted vs fine-tuned SmolLM2-135M, offline.
#
#   bash experiments/mini_fireact.sh            # hours on 2 cores; run it in the background
#   N=50 bash experiments/mini_fireact.sh       # a smaller HotpotQA subset
#
# Every step resumes: generation.py skips finished questions, a fine-tune whose adapter exists is
# skipped. Wall-clock times are appended to results/mini_fireact_times.tsv; the table and the plot
# go to results/mini_fireact.md and results/mini_fireact.png.
set -euo pipefail
cd "$(dirname "$0")/.."
make venv >/dev/null
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
N=${N:-200}                      # HotpotQA distractor-dev questions (the split's first N)
EPOCHS=${EPOCHS:-3}
OUT=${OUT:-outputs/mini_fireact}  # adapters (not committed)
TIMES=results/mini_fireact_times.tsv
mkdir -p "$OUT" results
[ -f "$TIMES" ] || printf 'step\tseconds\tcommand\n' > "$TIMES"

timed() {  # timed NAME CMD...: run, and record the wall-clock time
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" >&2
  "$@"
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$*" >> "$TIMES"
}

# The offline tool for every run: Google replays FireAct's real SerpAPI cache; a query it does not
# hold is answered from the offline Wikipedia index (the distractor paragraphs, which contain the
# gold ones for distractor-dev). The fine-tuning data's observations are Google snippets.
TOOL=(--tool google --offline --search-fallback wikipedia)
GEN=(generation.py --evaluate --backend vllm --max_steps 8)
HOTPOT=(--task hotpotqa --task_split distractor-dev --task_end_index "$N")

# 1. Prompted baselines on the embedded model.
for method in react cot io; do
  timed "prompted-$method-hotpotqa" $PY "${GEN[@]}" "${HOTPOT[@]}" --method $method "${TOOL[@]}" \
    --run_name "mini_prompted_${method}_hotpotqa"
done
timed prompted-react-bamboogle $PY "${GEN[@]}" --task bamboogle --task_split test --task_end_index -1 \
  --method react "${TOOL[@]}" --run_name mini_prompted_react_bamboogle
timed prompted-react-strategyqa $PY "${GEN[@]}" --task strategyqa --task_split dev --task_end_index -1 \
  --method react "${TOOL[@]}" --question_prefix "Yes or no: " --run_name mini_prompted_react_strategyqa
timed prompted-react-mmlu $PY "${GEN[@]}" --task mmlu --task_split test --random --task_end_index 100 \
  --method react "${TOOL[@]}" --run_name mini_prompted_react_mmlu

# 2. Fine-tune the embedded model on FireAct's released data (through our converter: it checks the
#    file and writes the Alpaca rows the trainer reads).
for data in hotpotqa multitask_multimethod; do
  $PY -m finetune.convert "data/fireact/data/finetune/alpaca_format/$data.json" -f alpaca \
    --keep_failed -o "$OUT/$data.alpaca.json"
  if [ ! -f "$OUT/lora_$data/adapter_model.safetensors" ]; then
    timed "lora-$data" $PY -m finetune.sft --base_model smollm2-135m --data_path "$OUT/$data.alpaca.json" \
      --output_dir "$OUT/lora_$data" --num_epochs "$EPOCHS" --batch_size 16 --micro_batch_size 8 \
      --learning_rate 3e-4 --lora_r 16 --lora_alpha 32 \
      --lora_target_modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj --cutoff_len 1024
  fi
done

# 3. Evaluate the fine-tuned models as FireAct evaluates its own: --alpaca_format, no few-shot.
for data in hotpotqa multitask_multimethod; do
  timed "lora-$data-hotpotqa" $PY "${GEN[@]}" "${HOTPOT[@]}" --method react "${TOOL[@]}" --alpaca_format \
    --add_lora --peftpath "$OUT/lora_$data" --run_name "mini_lora_${data}_hotpotqa"
done
timed lora-multitask-bamboogle $PY "${GEN[@]}" --task bamboogle --task_split test --task_end_index -1 --method react \
  "${TOOL[@]}" --alpaca_format --add_lora --peftpath "$OUT/lora_multitask_multimethod" --run_name mini_lora_multitask_multimethod_bamboogle
timed lora-multitask-strategyqa $PY "${GEN[@]}" --task strategyqa --task_split dev --task_end_index -1 --method react \
  "${TOOL[@]}" --alpaca_format --add_lora --peftpath "$OUT/lora_multitask_multimethod" --run_name mini_lora_multitask_multimethod_strategyqa
timed lora-multitask-mmlu $PY "${GEN[@]}" --task mmlu --task_split test --random --task_end_index 100 --method react \
  "${TOOL[@]}" --alpaca_format --add_lora --peftpath "$OUT/lora_multitask_multimethod" --run_name mini_lora_multitask_multimethod_mmlu

# 4. The table, the paired comparison against the prompted baseline, the plot.
{
  $PY leaderboard.py results/mini_*.json
  echo
  $PY leaderboard.py results/mini_*.json --compare mini_prompted_react_hotpotqa mini_lora_hotpotqa_hotpotqa
  echo
  $PY leaderboard.py results/mini_*.json --compare mini_prompted_react_hotpotqa mini_lora_multitask_multimethod_hotpotqa
} | tee results/mini_fireact.md
$PY leaderboard.py results/mini_*.json --plot results/mini_fireact.png >/dev/null
