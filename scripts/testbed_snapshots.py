#!/usr/bin/env python
"""Pick the test bed's starting policy among the SFT snapshots of one build.

Why: issue 14 asks for a *graded* starting competence (greedy accuracy near
0.9 on level 1 falling to about 0.05 on level 7, pass@8 at least twice pass@1
on the middle levels), and how far supervised training should go to get it is
not known in advance.  ``build_default.py --snapshot-every N`` keeps the
policy every N steps; this script measures each snapshot on a stratified
subset of the held-out set and ranks them by one rule fixed before looking:
the squared distance of greedy accuracy per level to the straight line
0.9 → 0.05, among snapshots whose pass@8 is at least twice the sampled
accuracy on levels 3–5.  Only the starting policy is looked at (no GRPO arm),
so choosing here cannot favour a method.

Run:  python scripts/testbed_snapshots.py --testbed runs/testbedB --per-cell 20
Writes <testbed>/snapshots/competence.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from build_default import competence, log, write_json  # noqa: E402
from testbed_pilot import stratified_subset  # noqa: E402

from saerl_zoo.data import load_rows  # noqa: E402

TARGET_EASIEST, TARGET_HARDEST = 0.9, 0.05
MIDDLE_LEVELS = ("3", "4", "5")


def grading_distance(greedy: dict[str, float]) -> float:
    """Squared distance of greedy accuracy per level to the line from 0.9 (level 1) to 0.05 (last level)."""
    levels = sorted(greedy, key=int)
    target = np.linspace(TARGET_EASIEST, TARGET_HARDEST, len(levels))
    return float(sum((greedy[lvl] - t) ** 2 for lvl, t in zip(levels, target)))


def spread_ok(tables: dict[str, dict[str, dict[str, float]]], k: int) -> bool:
    """pass@k at least twice the sampled accuracy on every middle level (GRPO has right answers to reinforce)."""
    sampled, passk = tables["sampled_accuracy"]["ALL"], tables[f"pass@{k}"]["ALL"]
    return all(passk[lvl] >= 2 * sampled[lvl] and passk[lvl] > 0 for lvl in MIDDLE_LEVELS if lvl in passk)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--testbed", type=Path, required=True)
    p.add_argument("--per-cell", type=int, default=20, help="held-out problems per family x level")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=110)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from saerl_zoo.models import load_model

    items = load_rows(args.testbed / "eval_prompts.jsonl")
    truth = load_rows(args.testbed / "eval_truth.jsonl", prompt_field=None)
    by_id = {t["id"]: t for t in truth}
    subset = stratified_subset(items, truth, args.per_cell)
    subset_truth = [by_id[i["id"]] for i in subset]
    out_path = args.testbed / "snapshots" / "competence.json"
    settings = {"per_cell": args.per_cell, "k": args.k, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    saved = json.loads(out_path.read_text()) if out_path.exists() else {"settings": settings, "snapshots": {}}
    if saved.get("settings") != settings:  # rankings over snapshots measured differently would mislead
        sys.exit(f"error: {out_path} was measured with {saved.get('settings')}, not {settings}: remove it to start over")
    results = saved["snapshots"]
    for folder in sorted((args.testbed / "snapshots").glob("step-*")):
        if folder.name in results:
            continue
        model, tokenizer = load_model(folder)
        tables = competence(model, tokenizer, subset, subset_truth, k=args.k, max_new_tokens=args.max_new_tokens,
                            seed=args.seed)
        results[folder.name] = {"distance": round(grading_distance(tables["greedy_accuracy"]["ALL"]), 4),
                                "spread_ok": spread_ok(tables, args.k), **tables}
        write_json(out_path, saved)  # after each snapshot, so a stopped run keeps what it measured
        log(f"{folder.name}: distance {results[folder.name]['distance']}")
    print(f"{'snapshot':<12} {'dist':>6} {'spread':>6}  greedy by level | pass@{args.k} by level")
    for name, r in results.items():
        greedy, passk = r["greedy_accuracy"]["ALL"], r[f"pass@{args.k}"]["ALL"]
        print(f"{name:<12} {r['distance']:>6.3f} {str(r['spread_ok']):>6}  "
              + " ".join(f"{v:.2f}" for v in greedy.values()) + " | " + " ".join(f"{v:.2f}" for v in passk.values()))
    eligible = {n: r for n, r in results.items() if r["spread_ok"]}
    if eligible:
        print("chosen:", min(eligible, key=lambda n: eligible[n]["distance"]))
    else:
        print("no snapshot has pass@k >= 2 x sampled accuracy on levels 3-5")


if __name__ == "__main__":
    main()
