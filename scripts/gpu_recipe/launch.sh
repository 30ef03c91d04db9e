#!/usr/bin/env bash
# SaeRL in the paper's setting, end to end: Qwen2.5-Math-1.5B on DeepMath-103K, vanilla GRPO vs SaeRL through TRL,
# GRPO and Dr.GRPO, evaluated on MATH500 / AIME24 / AMC23 / Minerva / OlympiadBench.
#
# GPU-HOUR FIGURES BELOW ARE ESTIMATES FROM ARITHMETIC (tokens x FLOPs, typical vLLM throughput), NOT MEASUREMENTS:
# nothing in this recipe has been run on a GPU by its authors. Record your own timings.
#
# Needs: pip install -e ".[trl]" vllm accelerate (a CUDA build of torch first), Hub access (or a filled HF cache).
# Every step skips what is already done, so rerunning this script after a crash continues where it stopped.
#
#   bash scripts/gpu_recipe/launch.sh                    # everything, 8 GPUs, 3 seeds, both losses
#   NGPU=4 SEEDS="0" LOSSES="dr_grpo" bash scripts/gpu_recipe/launch.sh
#   SAE=org/qwen-math-sae bash scripts/gpu_recipe/launch.sh  # any saerl_zoo.load_sae spec instead of training an SAE
#   SMOKE=1 OUT=/tmp/recipe-smoke bash scripts/gpu_recipe/launch.sh   # CPU, tiny stand-ins, a few minutes
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-runs/gpu_recipe}
RECIPE=${RECIPE:-scripts/gpu_recipe/recipe.yaml}
NGPU=${NGPU:-8}
SEEDS=${SEEDS:-"0 1 2"}
LOSSES=${LOSSES:-"grpo dr_grpo"}
COMMON=(--recipe "$RECIPE" --out "$OUT")
LAUNCH=(accelerate launch --num_processes "$NGPU")
if [[ -n "${SMOKE:-}" ]]; then
  COMMON+=(--smoke); LAUNCH=(python); SEEDS=${SMOKE_SEEDS:-0}
fi
step() { echo "== $*"; }

# 1. Artifacts, one GPU, one process per stage (vLLM frees its memory only at exit).
step "pool: download DeepMath-103K (~2 GB of parquet) and render the prompts (CPU, minutes)"
python scripts/gpu_recipe/build_artifacts.py "${COMMON[@]}" --stage pool
step "labels: 10% of the pool (~10k prompts) x 8 rollouts of up to 3000 tokens with vLLM (estimate: 1-3 GPU-hours)"
python scripts/gpu_recipe/build_artifacts.py "${COMMON[@]}" --stage labels
step "sae: TopK SAE, 16k latents, on block 14, 50M tokens with sae-lens (estimate: 1-2 GPU-hours); SAE=<spec> reuses one"
python scripts/gpu_recipe/build_artifacts.py "${COMMON[@]}" --stage sae ${SAE:+--sae "$SAE"}
step "probes: featurize 103k prompts (estimate: < 15 GPU-minutes), fit probes, k-means, curriculum (CPU, minutes)"
python scripts/gpu_recipe/build_artifacts.py "${COMMON[@]}" --stage probes

# 2. Training: 500 steps x 128 prompts x 8 completions of up to 3000 tokens, vLLM colocated.
#    Estimate per run: ~8-15 hours on 8 H100s (~60-120 GPU-hours); both arms x 2 losses x 3 seeds = 12 runs.
for loss in $LOSSES; do
  for seed in $SEEDS; do
    for arm in vanilla saerl; do
      step "train $arm $loss seed $seed"
      "${LAUNCH[@]}" scripts/gpu_recipe/train.py "${COMMON[@]}" --arm "$arm" --loss-type "$loss" --seed "$seed"
    done
  done
done

# 3. Evaluation, one model per process: the base policy, then every checkpoint of every run (accuracy-vs-step
#    curves for "steps to target accuracy"). ~2,600 completions per model (estimate: 5-10 GPU-minutes each).
step "evaluate base"
python scripts/gpu_recipe/evaluate.py "${COMMON[@]}" --base
for run in "$OUT"/runs/*/; do
  for model in "$run"checkpoint-* "$run"final; do
    [[ -d "$model" ]] || continue
    name=$(basename "$run"); [[ "$(basename "$model")" == final ]] || name="$name@${model##*checkpoint-}"
    step "evaluate $name"
    python scripts/gpu_recipe/evaluate.py "${COMMON[@]}" --model "$name=$model"
  done
done
step "results: $OUT/eval/results.md (table) and $OUT/eval/results.json (all numbers, checkpoints included)"
