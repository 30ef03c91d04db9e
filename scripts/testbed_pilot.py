#!/usr/bin/env python
"""One vanilla-GRPO pilot on a worked-solution test bed built by build_default.py.

Why: before any SaeRL arm is compared, the test bed must show that plain GRPO
learns on it (issue 14: >= 5 points of held-out accuracy within the step
budget, still rising at mid-run).  Settings are chosen here on vanilla alone.

The run trains on the whole pool (clean + broken) in a shuffled order
(``SaeRLSampler(mixing=1)``, the reproduction's vanilla arm), evaluates greedy
accuracy on a stratified subset of the held-out set every ``--eval-every``
steps, checkpoints (so a killed pilot resumes), and at the end measures greedy
accuracy, sampled accuracy and pass@k on the whole held-out set, before and
after, into ``<out>/result.json``.

Run:  python scripts/testbed_pilot.py --testbed runs/testbed --out runs/pilots/lr1e-4 --lr 1e-4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from build_default import competence, log, write_json  # noqa: E402

from saerl_zoo.data import load_rows  # noqa: E402


def stratified_subset(items: list[dict], truth: list[dict], per_cell: int) -> list[dict]:
    """The first ``per_cell`` held-out items of every family x level (in file order)."""
    taken: dict[tuple, int] = defaultdict(int)
    out = []
    for item, t in zip(items, truth):
        cell = (t["family"], t["level"])
        if taken[cell] < per_cell:
            taken[cell] += 1
            out.append(item)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--testbed", type=Path, required=True, help="folder written by build_default.py --tasks worked")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=1, help="PPO epochs per sampled batch (GRPOConfig.num_iterations)")
    p.add_argument("--kl", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=110)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-per-cell", type=int, default=10, help="held-out items per family x level for the curve")
    p.add_argument("--k", type=int, default=8, help="samples per problem for sampled accuracy and pass@k at the end")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    from saerl_zoo.grpo import GRPOConfig, train
    from saerl_zoo.models import load_model
    from saerl_zoo.rewards import task_reward
    from saerl_zoo.sampler import SaeRLSampler

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    command = " ".join(["python scripts/testbed_pilot.py", *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.txt").write_text(command + "\n")  # so a stopped pilot still has its row
    pool = load_rows(args.testbed / "prompts.jsonl")
    eval_items = load_rows(args.testbed / "eval_prompts.jsonl")
    eval_truth = load_rows(args.testbed / "eval_truth.jsonl", prompt_field=None)
    curve_rows = stratified_subset(eval_items, eval_truth, args.eval_per_cell)
    before = json.loads((args.testbed / "competence.json").read_text())
    settings = {"k": args.k, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if any(before.get(key) != value for key, value in settings.items()):
        sys.exit(f"error: {args.testbed / 'competence.json'} was measured with "
                 f"{ {key: before.get(key) for key in settings} }, not {settings}: before and after would not compare")
    model, tokenizer = load_model(args.testbed / "model")
    config = GRPOConfig(
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, lr=args.lr, num_iterations=args.epochs, kl_coef=args.kl,
        num_steps=args.steps, eval_every=args.eval_every, seed=args.seed, checkpoint_every=25,
        out_dir=str(args.out), log=False,
    )
    sampler = SaeRLSampler(len(pool), batch_size=args.prompts_per_step, mixing=1.0, seed=args.seed)
    start = time.time()
    history = train(model, tokenizer, pool, sampler, task_reward, config, eval_rows=curve_rows,
                    callback=lambda r: r["type"] == "eval" and log(f"step {r['step']}: held-out subset {r['accuracy']:.3f}"))
    seconds = time.time() - start
    after = competence(model, tokenizer, eval_items, eval_truth, k=args.k, max_new_tokens=args.max_new_tokens,
                       seed=args.seed)
    steps = history["train"]
    result = {
        "command": command, "args": {k: str(v) for k, v in vars(args).items()},
        "curve": [[r["step"], round(r["accuracy"], 4)] for r in history["eval"]],
        "curve_problems": len(curve_rows), "eval_problems": len(eval_items),
        "mean_step_seconds": round(sum(r["seconds"] for r in steps) / max(1, len(steps)), 2),
        "wall_seconds_this_session": round(seconds, 1),
        "before": {k: before[k] for k in after}, "after": after,
    }
    write_json(args.out / "result.json", result)
    for name in after:
        log(f"{name}: before {before[name]['ALL']} -> after {after[name]['ALL']}")


if __name__ == "__main__":
    main()
