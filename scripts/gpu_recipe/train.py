#!/usr/bin/env python
"""One GRPO run of the GPU recipe through TRL: vanilla GRPOTrainer or SaeRL's curriculum.

  --arm vanilla   trl.GRPOTrainer on the whole pool, shuffled by TRL (seed = --seed)
  --arm saerl     saerl_zoo.adapters.trl.make_trl_trainer with artifacts/curriculum: prompts reach
                  generation quality-filtered, cluster-first easy -> hard, one SaeRL batch per
                  optimiser step (curriculum seed = --seed)

Both arms train on artifacts/pool.jsonl with reward = math_reward (math-verify) against each
row's answer, and the recipe's train.trl settings; --loss-type picks GRPO or Dr.GRPO
(loss_type and scale_rewards from train.loss_types). The global batch is fixed by the recipe
(prompts_per_step x num_generations completions per optimiser step, one generation per step)
whatever the number of GPUs: gradient_accumulation_steps is derived from the process count.

Checkpoints go to runs/<arm>-<loss>-seed<seed>/checkpoint-N every save_steps; rerunning the same
command resumes from the latest one (the SaeRL order continues exactly, see the TRL adapter), and
a run whose final/ exists is skipped.

Run:    accelerate launch --num_processes 8 scripts/gpu_recipe/train.py --out runs/gpu_recipe --arm saerl --loss-type dr_grpo --seed 0
Smoke:  python scripts/gpu_recipe/train.py --smoke --out /tmp/recipe-smoke --arm saerl --loss-type grpo --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_lib as lib  # noqa: E402

from saerl_zoo.extras import exit_unless_installed  # noqa: E402

ARMS = ("vanilla", "saerl")


def gradient_accumulation(prompts_per_step: int, num_generations: int, per_device: int, world_size: int) -> int:
    """Accumulation steps that make one optimiser step exactly ``prompts_per_step`` prompts x ``num_generations``."""
    completions, per_pass = prompts_per_step * num_generations, per_device * world_size
    if completions % per_pass:
        raise ValueError(
            f"prompts_per_step x num_generations = {completions} completions per step is not a multiple of "
            f"per_device_train_batch_size x processes = {per_device} x {world_size}; change one of them in the recipe"
        )
    return completions // per_pass


def grpo_config(recipe: dict[str, Any], output_dir: Path, loss_type: str, seed: int, max_steps: int | None) -> Any:
    """``trl.GRPOConfig`` from the recipe; unknown keys are refused by name rather than by a TypeError deep in TRL."""
    from trl import GRPOConfig

    spec = recipe["train"]
    if loss_type not in spec["loss_types"]:
        raise ValueError(f"unknown --loss-type {loss_type!r}; the recipe defines {sorted(spec['loss_types'])}")
    kwargs = {**spec["trl"], **spec["loss_types"][loss_type]}
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(GRPOConfig)})
    if unknown:
        raise ValueError(f"train.trl has keys trl.GRPOConfig does not know: {unknown}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    kwargs["gradient_accumulation_steps"] = gradient_accumulation(
        spec["prompts_per_step"], kwargs["num_generations"], kwargs["per_device_train_batch_size"], world_size)
    return GRPOConfig(output_dir=str(output_dir), seed=seed, run_name=output_dir.name, **kwargs)


def train_dataset(out: Path) -> Any:
    """The pool in its stored order: the curriculum scores exactly these rows, in this order."""
    from datasets import Dataset

    pool = lib.read_jsonl(lib.artifacts(out) / "pool.jsonl")
    return Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"], "id": r["id"]} for r in pool])


def make_trainer(arm: str, model: str, config: Any, dataset: Any, out: Path, seed: int) -> Any:
    """The same trainer for both arms but for where prompts come from."""
    if arm == "vanilla":
        from trl import GRPOTrainer

        return GRPOTrainer(model=model, reward_funcs=lib.accuracy_reward, args=config, train_dataset=dataset)
    from saerl_zoo.adapters.trl import make_trl_trainer

    curriculum = lib.artifacts(out) / "curriculum"
    if not curriculum.exists():
        raise FileNotFoundError(f"{curriculum} is missing: run build_artifacts.py first")
    return make_trl_trainer(model, lib.accuracy_reward, config, dataset, curriculum=curriculum,
                            saerl_overrides={"seed": seed})


def save_final(trainer: Any, final: Path) -> None:
    """Weights + tokenizer into final/, renamed into place only once every rank has written its part."""
    staging = final.with_name(f".{final.name}.tmp")
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        os.replace(staging, final)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lib.add_common_args(parser)
    parser.add_argument("--arm", choices=ARMS, required=True)
    parser.add_argument("--loss-type", default="grpo", help="a key of the recipe's train.loss_types: grpo or dr_grpo")
    parser.add_argument("--seed", type=int, default=0, help="TRL's seed (vanilla shuffle, sampling) and the SaeRL order's seed")
    parser.add_argument("--max-steps", type=int, help="override train.trl.max_steps (e.g. to extend a finished run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    exit_unless_installed("trl", "scripts/gpu_recipe/train.py")
    recipe = lib.setup(args)
    run_dir = args.out / "runs" / lib.run_name(args.arm, args.loss_type, args.seed)
    final = run_dir / "final"
    if final.exists():
        print(f"[train] {final} exists: nothing to do")
        return final
    from transformers.trainer_utils import get_last_checkpoint

    config = grpo_config(recipe, run_dir, args.loss_type, args.seed, args.max_steps)
    trainer = make_trainer(args.arm, str(lib.model_dir(recipe, args.out)), config, train_dataset(args.out), args.out,
                           args.seed)
    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    save_final(trainer, final)
    return final


if __name__ == "__main__":
    main()
