#!/usr/bin/env bash
# The FireAct loop in miniature on a CPU: prompted vs fine-tuned SmolLM2-135M, offline.
#
#   bash experiments/mini_fireact.sh            # hours on 2 cores; run it in the background
#   N=50 bash experiments/mini_fireact.sh       # a smaller HotpotQA subset
#   bash experiments/mini_fireact.sh lora table # some stages only (listed below)
#
# Every step resumes: generation.py skips finished questions, a fine-tune whose adapter exists is
# skipped. Wall-clock times are appended to results/mini_fireact_times.tsv; the table and the plot
# go to results/mini_fireact.md and results/mini_fireact.png.
set -euo pipefail
cd "$(dirname "$0")/.."
make venv >/dev/null
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4} \
  VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}
N=${N:-200}                      # HotpotQA distractor-dev questions (the split's first N)
EPOCHS=${EPOCHS:-3}               # LoRA epochs on hotpotqa.json (500 examples)
MULTI_EPOCHS=${MULTI_EPOCHS:-1}   # on multitask_multimethod.json (2,063 examples)
ORACLE_EPOCHS=${ORACLE_EPOCHS:-1} # on hotpotqa.json + gold-evidence trajectories (1,052 rows after dedup)
# FireAct's (alpaca-lora's) target modules; all seven linear layers (q k v o gate up down) learn more but
# cost 1.75x per token on this CPU (40 s vs ~21 s per step of 16 examples).
LORA_MODULES=${LORA_MODULES:-q_proj,v_proj}
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

# Stages, in the order that answers the main question first (each resumes; `table` alone re-draws):
#   baseline  prompted ReAct on HotpotQA
#   lora   LoRA on hotpotqa.json, the LoRA model on HotpotQA
#   oracle LoRA on hotpotqa.json + gold-evidence trajectories observed offline, on HotpotQA
#   hotpot prompted CoT and IO on HotpotQA
#   tasks  prompted ReAct on Bamboogle, StrategyQA dev, 100 MMLU test questions
#   multi  LoRA on multitask_multimethod.json, evaluated on all four tasks
#   confirm  questions 200-499: prompted ReAct vs the multitask LoRA, on fresh questions
#   table  leaderboard, paired comparisons, plot
STAGES=${*:-baseline lora oracle hotpot tasks multi table}

FIREACT_FT=data/fireact/data/finetune/alpaca_format
lora() {  # [DEDUP=question|trajectory] lora NAME EPOCHS INPUT...: the inputs (mixed) through our converter, then train and merge
  local name=$1 epochs=$2; shift 2
  $PY -m finetune.convert "$@" -f alpaca --keep_failed --dedup "${DEDUP:-question}" -o "$OUT/$name.alpaca.json"
  if [ ! -f "$OUT/lora_$name/adapter_model.safetensors" ]; then
    timed "lora-$name" $PY -m finetune.sft --base_model smollm2-135m --data_path "$OUT/$name.alpaca.json" \
      --output_dir "$OUT/lora_$name" --num_epochs "$epochs" --batch_size 16 --micro_batch_size 8 \
      --learning_rate 3e-4 --lora_r 16 --lora_alpha 32 --lora_target_modules $LORA_MODULES --cutoff_len 1024
  fi
  # Evaluated merged: the same weights, but vLLM's LoRA kernels on CPU ran ~4.7x slower per question
  # here (14 s vs 3 s); `--add_lora --peftpath` gives the same model.
  [ -f "$OUT/merged_$name/model.safetensors" ] || $PY -m finetune.merge --base_model smollm2-135m \
    --peftpath "$OUT/lora_$name" --output_dir "$OUT/merged_$name"
}

# A fine-tuned model is evaluated as FireAct evaluates its own: --alpaca_format, no few-shot examples.
tuned() { echo --alpaca_format --modelpath "$OUT/merged_$1"; }
run_other() {  # run_other RUN_PREFIX EXTRA...: ReAct on the three other tasks
  local prefix=$1; shift
  timed "$prefix-bamboogle" $PY "${GEN[@]}" --task bamboogle --task_split test --task_end_index -1 \
    --method react "${TOOL[@]}" "$@" --run_name "mini_${prefix}_bamboogle"
  timed "$prefix-strategyqa" $PY "${GEN[@]}" --task strategyqa --task_split dev --task_end_index -1 \
    --question_prefix "Yes or no: " --method react "${TOOL[@]}" "$@" --run_name "mini_${prefix}_strategyqa"
  timed "$prefix-mmlu" $PY "${GEN[@]}" --task mmlu --task_split test --random --task_end_index 100 \
    --method react "${TOOL[@]}" "$@" --run_name "mini_${prefix}_mmlu"
}

for stage in $STAGES; do
  case $stage in
    baseline)
      timed prompted-react-hotpotqa $PY "${GEN[@]}" "${HOTPOT[@]}" --method react "${TOOL[@]}" \
        --run_name mini_prompted_react_hotpotqa ;;
    lora)
      lora hotpotqa "$EPOCHS" "$FIREACT_FT/hotpotqa.json"
      # shellcheck disable=SC2046
      timed lora-hotpotqa-hotpotqa $PY "${GEN[@]}" "${HOTPOT[@]}" --method react "${TOOL[@]}" $(tuned hotpotqa) \
        --run_name mini_lora_hotpotqa_hotpotqa ;;
    oracle)
      # FireAct's 500 trajectories + gold-evidence ones on HotpotQA train whose observations come from
      # the same offline tool as the evaluation (finetune/oracle.py); one epoch = as many steps as lora's.
      [ -f "$OUT/oracle_hotpotqa_train.jsonl" ] || $PY -m finetune.oracle --split train "${TOOL[@]}" \
        --out "$OUT/oracle_hotpotqa_train.jsonl"
      lora hotpotqa_oracle "$ORACLE_EPOCHS" "$FIREACT_FT/hotpotqa.json" "$OUT/oracle_hotpotqa_train.jsonl"
      # shellcheck disable=SC2046
      timed lora-hotpotqa-oracle-hotpotqa $PY "${GEN[@]}" "${HOTPOT[@]}" --method react "${TOOL[@]}" \
        $(tuned hotpotqa_oracle) --run_name mini_lora_hotpotqa_oracle_hotpotqa ;;
    hotpot)
      for method in cot io; do
        timed "prompted-$method-hotpotqa" $PY "${GEN[@]}" "${HOTPOT[@]}" --method $method "${TOOL[@]}" \
          --run_name "mini_prompted_${method}_hotpotqa"
      done ;;
    tasks)
      run_other prompted_react ;;
    multi)
      # Multimethod means the same question under ReAct, CoT and Reflexion: keep each (one-per-question
      # dedup would drop 290 of the 2,063 rows).
      DEDUP=trajectory lora multitask_multimethod "$MULTI_EPOCHS" "$FIREACT_FT/multitask_multimethod.json"
      # shellcheck disable=SC2046
      timed lora-multitask-hotpotqa $PY "${GEN[@]}" "${HOTPOT[@]}" --method react "${TOOL[@]}" \
        $(tuned multitask_multimethod) --run_name mini_lora_multitask_multimethod_hotpotqa
      # shellcheck disable=SC2046
      run_other lora_multitask_multimethod $(tuned multitask_multimethod) ;;
    confirm)
      # Questions 200-499 of distractor-dev, run after the first 200 showed the multitask LoRA's effect:
      # fresh questions for the same comparison (run names outside mini_*, so `table` keeps to the 200).
      CONFIRM=(--task hotpotqa --task_split distractor-dev --task_start_index 200 --task_end_index 500)
      timed confirm-prompted-react-hotpotqa $PY "${GEN[@]}" "${CONFIRM[@]}" --method react "${TOOL[@]}" \
        --run_name confirm_prompted_react_hotpotqa
      # shellcheck disable=SC2046
      timed confirm-lora-multitask-hotpotqa $PY "${GEN[@]}" "${CONFIRM[@]}" --method react "${TOOL[@]}" \
        $(tuned multitask_multimethod) --run_name confirm_lora_multitask_multimethod_hotpotqa
      $PY leaderboard.py results/confirm_*.json | tee results/confirm.md
      printf '\n### Paired\n\n' | tee -a results/confirm.md
      $PY leaderboard.py --compare results/confirm_prompted_react_hotpotqa.json \
        results/confirm_lora_multitask_multimethod_hotpotqa.json | tee -a results/confirm.md ;;
    table)
      # Every run's results, and the trajectories of a run stopped before it wrote them.
      runs=(results/mini_*.json)
      for t in trajs/mini_*.jsonl; do [ -f "results/$(basename "$t" .jsonl).json" ] || runs+=("$t"); done
      {
        $PY leaderboard.py "${runs[@]}"
        for run in "${runs[@]}"; do
          name=$(basename "${run%.*}")
          case $name in mini_lora_*_hotpotqa) ;; *) continue ;; esac
          printf '\n### Paired: prompted ReAct vs %s\n\n' "$name"  # given two files, --compare prints no leaderboard
          $PY leaderboard.py --compare results/mini_prompted_react_hotpotqa.json "$run"
        done
      } | tee results/mini_fireact.md
      $PY leaderboard.py "${runs[@]}" --plot results/mini_fireact.png >/dev/null ;;
    *) echo "unknown stage $stage (baseline lora oracle hotpot tasks multi confirm table)" >&2; exit 2 ;;
  esac
done
