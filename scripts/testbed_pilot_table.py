#!/usr/bin/env python
"""The pilot table (markdown) from the ``result.json`` of testbed_pilot.py runs.

Run:  python scripts/testbed_pilot_table.py runs/pilots/* > benchmarks/results/testbed_pilots.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(result: dict) -> str:
    """One pilot: settings, held-out greedy accuracy before -> after (all levels), the gain,
    the curve on the stratified subset, sampled accuracy and pass@k after, and the command."""
    a = result["args"]
    before, after = result["before"], result["after"]
    mean = {name: sum(t["ALL"].values()) / len(t["ALL"]) for name, t in after.items()}
    mean0 = {name: sum(t["ALL"].values()) / len(t["ALL"]) for name, t in before.items()}
    passk = next(k for k in after if k.startswith("pass@"))
    curve = " ".join(f"{s}:{acc:.2f}" for s, acc in result["curve"])
    return (f"| {a['lr']} | {a['group_size']}x{a['prompts_per_step']} | {a['temperature']} | {a['epochs']} | "
            f"{a['kl']} | {a['steps']} | {mean0['greedy_accuracy']:.3f} → {mean['greedy_accuracy']:.3f} | "
            f"{100 * (mean['greedy_accuracy'] - mean0['greedy_accuracy']):+.1f} | "
            f"{mean0['sampled_accuracy']:.3f} → {mean['sampled_accuracy']:.3f} | "
            f"{mean0[passk]:.3f} → {mean[passk]:.3f} | {curve} | {result['mean_step_seconds']} | "
            f"`{result['command']}` |")


def main(folders: list[str]) -> None:
    print("| lr | G x prompts | T | PPO epochs | KL | steps | greedy (held-out, mean over levels) | gain (pts) "
          "| sampled | pass@8 | greedy curve on the stratified subset (step:acc) | s/step | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in folders:
        path = Path(folder) / "result.json"
        if path.exists():
            print(row(json.loads(path.read_text())))


if __name__ == "__main__":
    main(sys.argv[1:])
