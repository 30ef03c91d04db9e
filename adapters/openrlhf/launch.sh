#!/usr/bin/env bash
# GRPO with OpenRLHF 0.11.2 (Ray + vLLM + DeepSpeed), prompts in SaeRL order.
#
# The command is OpenRLHF's own `python -m openrlhf.cli.train_ppo_ray <flags>` with the SaeRL launcher in
# front and one flag added (--saerl-curriculum); every other flag is train_ppo_ray's, unchanged.
# Defaults: the paper's setting as scripts/gpu_recipe/ builds it (Qwen2.5-Math-1.5B, a DeepMath pool whose
# rows carry the rendered "prompt" and the reference "answer"), one node of 8 GPUs, every model colocated.
# Build the pool and its curriculum first:
#   python scripts/gpu_recipe/build_artifacts.py --out runs/gpu_recipe
# or, for your own data and SAE:
#   saerl-zoo curriculum --prompts pool.jsonl --model M --sae S --difficulty-probe D --quality-probe Q --out runs/pool
# Rerunning the same command resumes (--ckpt.load_enable), the SaeRL order included.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
RUN=${RUN:-runs/gpu_recipe}
PROMPTS=${PROMPTS:-$RUN/artifacts/pool.jsonl}      # JSONL: "prompt" (the policy's text) and "answer"
CURRICULUM=${CURRICULUM:-$RUN/artifacts/curriculum} # scores exactly the rows of $PROMPTS, in order
SAVE=${SAVE:-$RUN/openrlhf}
GPUS=${GPUS:-8}

[[ -f $CURRICULUM/curriculum.json ]] || { echo "launch.sh: no curriculum in $CURRICULUM (see the header for how to build it)" >&2; exit 1; }

python -m saerl_zoo.adapters.openrlhf \
    --saerl-curriculum "$CURRICULUM" \
    --actor.model_name_or_path "$MODEL" \
    --actor.num_nodes 1 --actor.num_gpus_per_node "$GPUS" \
    --ref.num_nodes 1 --ref.num_gpus_per_node "$GPUS" \
    --vllm.num_engines "$GPUS" --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.5 --vllm.enable_sleep \
    --train.colocate_all --ds.enable_sleep \
    --reward.remote_url "$here/reward_func.py" \
    --data.prompt_dataset "$PROMPTS" --data.input_key prompt --data.label_key answer \
    --data.max_len 4096 --rollout.max_new_tokens 3000 \
    --algo.advantage.estimator group_norm --algo.kl.init_coef 0 \
    --rollout.n_samples_per_prompt 8 --rollout.batch_size 128 --rollout.micro_batch_size 8 \
    --train.batch_size 1024 --train.micro_batch_size 4 \
    --train.num_episodes 1 --train.max_epochs 1 --train.seed 0 \
    --actor.adam.lr 1e-6 --actor.lr_scheduler constant --actor.gradient_checkpointing_enable \
    --ds.zero_stage 3 --ds.param_dtype bf16 \
    --ckpt.path "$SAVE/ckpt" --ckpt.save_steps 50 --ckpt.load_enable --ckpt.output_dir "$SAVE/final" \
    --logger.logging_steps 1 \
    "$@"
