#!/usr/bin/env python
"""GRPO with the bundled loop (saerl_zoo/grpo.py): vanilla vs SaeRL is one flag, and a rerun resumes.

    python adapters/grpo/train.py --out runs/grpo-saerl                  # SaeRL order, embedded default
    python adapters/grpo/train.py --out runs/grpo-vanilla --arm vanilla  # the same run, shuffled prompts
    python adapters/grpo/train.py --out runs/grpo-saerl --num-steps 200  # continues the first run

--arm saerl draws prompts from --curriculum (a saved curriculum over exactly the rows of --prompts;
built with the embedded default and saved there when the folder does not exist yet), one SaeRL
batch of --prompts-per-step prompts per step. --arm vanilla shuffles all rows, nothing filtered.
Everything else is the same. Checkpoints go to --out every --checkpoint-every steps; rerunning
the same command continues from the newest one exactly (weights, optimiser, sampler position,
RNGs); only --num-steps may grow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run folder: log.jsonl and checkpoints")
    parser.add_argument("--arm", choices=("saerl", "vanilla"), default="saerl", help="prompt order (default: saerl)")
    parser.add_argument("--model", help="HF causal LM, path or Hub id (default: the embedded policy)")
    parser.add_argument("--prompts", type=Path, help="JSONL with 'prompt' and 'answer' (default: the embedded pool)")
    parser.add_argument("--curriculum", type=Path, default=Path("runs/demo/curriculum"),
                        help="saved curriculum over exactly the rows of --prompts (--arm saerl)")
    parser.add_argument("--reward", choices=("math", "task"),
                        help="math-verify against 'answer', or the embedded pool's scorer (default: task for the "
                             "embedded pool, math otherwise)")
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--dr-grpo", action="store_true", help="Dr. GRPO loss (no std normalisation)")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="the loop's seed and the prompt order's")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def prompt_sampler(args: argparse.Namespace, rows: list[dict[str, Any]]) -> Any:
    """The arm's sampler: the curriculum's SaeRL order, or every row shuffled (a SaeRLSampler with nothing but mixing=1)."""
    from saerl_zoo.curriculum import CONFIG_NAME, Curriculum, default_curriculum
    from saerl_zoo.sampler import SaeRLSampler

    if args.arm == "vanilla":
        return SaeRLSampler(len(rows), batch_size=args.prompts_per_step, mixing=1.0, seed=args.seed)
    if (args.curriculum / CONFIG_NAME).is_file():
        curriculum = Curriculum.load(args.curriculum)
    else:
        print(f"[saerl] no curriculum in {args.curriculum}: scoring {len(rows)} prompts with the embedded default", flush=True)
        curriculum = default_curriculum([r["prompt"] for r in rows], save_to=args.curriculum, progress=False)
    if len(curriculum) != len(rows):
        raise SystemExit(f"{args.curriculum} scores {len(curriculum)} prompts but --prompts has {len(rows)}: "
                         "build the curriculum from exactly these rows")
    return curriculum.sampler(batch_size=args.prompts_per_step, seed=args.seed)


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    from saerl_zoo.data import load_rows
    from saerl_zoo.embedded import default_path
    from saerl_zoo.grpo import GRPOConfig, train
    from saerl_zoo.models import load_model
    from saerl_zoo.rewards import math_row_reward, task_reward

    rows = load_rows(args.prompts or default_path("prompts.jsonl"))
    sampler = prompt_sampler(args, rows)  # before the model: a curriculum of other rows fails fast
    model, tokenizer = load_model(args.model or default_path("model"), device=args.device)
    reward = {"math": math_row_reward, "task": task_reward}[args.reward or ("task" if args.prompts is None else "math")]
    config = GRPOConfig(
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
        lr=args.lr, dr_grpo=args.dr_grpo, num_steps=args.num_steps, checkpoint_every=args.checkpoint_every,
        seed=args.seed, out_dir=str(args.out),
    )
    return train(model, tokenizer, rows, sampler, reward, config)


if __name__ == "__main__":
    main(sys.argv[1:])
