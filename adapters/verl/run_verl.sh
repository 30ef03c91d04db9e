#!/usr/bin/env bash
# GRPO with veRL (FSDP workers + vLLM rollout), prompts in SaeRL order; one node of 8 GPUs.
#
# The command is veRL's own `python -m verl.trainer.main_ppo <hydra overrides>` plus the SaeRL sampler:
#   veRL <= 0.7 (tested: 0.7.1): two config lines, data.sampler.class_path/class_name, select it;
#   veRL >= 0.8 (read: 0.8.0, 0.9.1): that hook is gone, so `python -m saerl_zoo.adapters.verl` runs
#   main_ppo with the same overrides and installs the sampler inside veRL's TaskRunner.
# Both read +data.sampler.saerl_curriculum; this script picks the entry point for the installed veRL.
# Defaults: the paper's setting as scripts/gpu_recipe/ builds it. Build the pool, its curriculum, and the parquet:
#   python scripts/gpu_recipe/build_artifacts.py --out runs/gpu_recipe
#   python adapters/verl/prepare_data.py --prompts runs/gpu_recipe/artifacts/pool.jsonl --field question \
#       --out runs/gpu_recipe/verl/train.parquet
# Rerunning the same command resumes (trainer.resume_mode=auto), the SaeRL order included (veRL's data.pt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
RUN=${RUN:-runs/gpu_recipe}
TRAIN=${TRAIN:-$RUN/verl/train.parquet}             # from prepare_data.py: extra_info.index = row position
CURRICULUM=${CURRICULUM:-$RUN/artifacts/curriculum} # scores exactly the rows of $TRAIN, in order
GPUS=${GPUS:-8}

[[ -f $CURRICULUM/curriculum.json ]] || { echo "run_verl.sh: no curriculum in $CURRICULUM (see the header)" >&2; exit 1; }

overrides=(
    algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False
    data.train_files="$TRAIN" data.val_files="$TRAIN"
    data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=3000
    data.filter_overlong_prompts=False data.truncation=error data.dataloader_num_workers=0
    +data.sampler.saerl_curriculum="$CURRICULUM"
    actor_rollout_ref.model.path="$MODEL" actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.ppo_mini_batch_size=128 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4
    actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8
    custom_reward_function.path="$here/reward_fn.py" custom_reward_function.name=compute_score
    trainer.n_gpus_per_node="$GPUS" trainer.nnodes=1 trainer.total_epochs=1 trainer.save_freq=50
    trainer.test_freq=-1 trainer.val_before_train=False trainer.logger='["console"]'
    trainer.project_name=saerl trainer.experiment_name=grpo-saerl trainer.default_local_dir="$RUN/verl/checkpoints"
)

if [[ $(python -c "import verl; from packaging.version import Version as V; print(int(V(verl.__version__) >= V('0.8')))") == 1 ]]; then
    python -m saerl_zoo.adapters.verl "${overrides[@]}" "$@"
else
    python -m verl.trainer.main_ppo \
        data.sampler.class_path=pkg://saerl_zoo.adapters.verl data.sampler.class_name=SaeRLVerlSampler \
        "${overrides[@]}" "$@"
fi
