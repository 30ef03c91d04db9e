#!/usr/bin/env python
"""GRPO with TRL, prompts drawn in SaeRL order: TRL's own GRPO arguments plus --curriculum and --prompts.

Every ``GRPOConfig`` and ``ModelConfig`` flag works as in TRL's ``trl grpo`` script
(``--output_dir``, ``--max_steps``, ``--num_generations``, ``--use_peft``, ``--config recipe.yaml``, ...).
With no arguments but ``--output_dir`` it trains the embedded default policy on the embedded pool:

    python adapters/trl/train_grpo_saerl.py --output_dir runs/trl --max_steps 2 --per_device_train_batch_size 8 \\
        --num_generations 8 --max_completion_length 8 --use_cpu --report_to none
    accelerate launch adapters/trl/train_grpo_saerl.py --config my_grpo.yaml   # on GPUs

``--curriculum`` is the folder of a saved curriculum over exactly the rows of ``--prompts``, in
order (``saerl-zoo curriculum --prompts P.jsonl --model M --sae S ... --out runs/x`` writes
``runs/x/curriculum``). If the folder does not exist yet, the embedded default scores ``--prompts``
and saves the curriculum there: right for the embedded pool, a stand-in for anything else.
Rerunning the same command resumes from the newest checkpoint in ``--output_dir``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saerl_zoo.extras import exit_unless_installed


@dataclass
class SaeRLArguments:
    """The flags this script adds to TRL's."""

    prompts: str | None = field(
        default=None, metadata={"help": "JSONL of rows with 'prompt' and 'answer' (default: the embedded pool)"}
    )
    curriculum: str = field(
        default="runs/demo/curriculum",
        metadata={"help": "saved curriculum over exactly the rows of --prompts; built with the embedded default if absent"},
    )
    reward: str | None = field(
        default=None,
        metadata={"help": "'math' (math-verify against row['answer']) or 'task' (the embedded pool's scorer); "
                          "default: task for the embedded pool, math otherwise", "choices": ["math", "task"]},
    )


def reward_function(kind: str):
    """TRL's reward-function shape (completions plus dataset columns) around a saerl_zoo row reward."""
    from saerl_zoo.rewards import math_row_reward, task_reward

    row_reward = {"math": math_row_reward, "task": task_reward}[kind]

    def reward(completions: list, answer: list, **_: object) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # plain or conversational
        return [row_reward(text, {"answer": a}) for text, a in zip(texts, answer)]

    reward.__name__ = f"{kind}_reward"
    return reward


def main(argv: list[str] | None = None) -> Any:
    exit_unless_installed("trl", "adapters/trl/train_grpo_saerl.py")
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config

    from saerl_zoo.adapters.trl import SaeRLGRPOTrainer
    from saerl_zoo.curriculum import CONFIG_NAME, Curriculum, default_curriculum
    from saerl_zoo.data import load_rows
    from saerl_zoo.embedded import default_path

    parser = TrlParser((SaeRLArguments, GRPOConfig, ModelConfig))
    saerl_args, training_args, model_args = parser.parse_args_and_config(args=argv)

    rows = load_rows(saerl_args.prompts or default_path("prompts.jsonl"))
    folder = Path(saerl_args.curriculum)
    if (folder / CONFIG_NAME).is_file():
        curriculum = Curriculum.load(folder)
    else:
        print(f"[saerl] no curriculum in {folder}: scoring {len(rows)} prompts with the embedded default", flush=True)
        curriculum = default_curriculum([r["prompt"] for r in rows], save_to=folder, progress=False)

    dtype = getattr(model_args, "dtype", None) or getattr(model_args, "torch_dtype", None)  # trl renamed it
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        **({"dtype": dtype} if dtype is not None else {}),
        **(training_args.model_init_kwargs or {}),
    }
    trainer = SaeRLGRPOTrainer(
        model=model_args.model_name_or_path or str(default_path("model")),
        reward_funcs=reward_function(saerl_args.reward or ("task" if saerl_args.prompts is None else "math")),
        args=training_args,
        train_dataset=Dataset.from_list(list(rows)),  # the rows the curriculum scored, in the same order
        peft_config=get_peft_config(model_args),
        curriculum=curriculum,
    )
    output = Path(training_args.output_dir)
    last = training_args.resume_from_checkpoint or (get_last_checkpoint(str(output)) if output.is_dir() else None)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
