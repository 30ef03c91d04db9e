#!/usr/bin/env python
"""Markdown tables of the test bed: the starting policy's competence by level
(from a build's ``competence.json``) and the pilots (``result.json`` of each
testbed_pilot.py run).

Run:  python scripts/testbed_pilot_table.py runs/testbed runs/pilots/* > benchmarks/results/reproduce/pilots.md
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


def competence_tables(competence: dict) -> str:
    """Greedy accuracy, sampled accuracy and pass@k by family x level, with the command."""
    out = [f"Command: `{competence['command']}` ({competence['eval_problems']} held-out problems)\n"]
    for name in ("greedy_accuracy", "sampled_accuracy", f"pass@{competence['k']}"):
        table = competence[name]
        levels = list(table["ALL"])
        out += [f"**{name}**\n", "| family | " + " | ".join(f"L{lvl}" for lvl in levels) + " | mean |",
                "|---" * (len(levels) + 2) + "|"]
        out += [f"| {family} | " + " | ".join(f"{row[lvl]:.2f}" for lvl in levels)
                + f" | {sum(row.values()) / len(row):.3f} |" for family, row in table.items()]
        out.append("")
    return "\n".join(out)


def stopped_row(folder: Path) -> str:
    """A pilot stopped before its end: its settings, sampled training reward over its first
    and last 10 steps, its last curve point, and why it was stopped (``NOTE``)."""
    config = json.loads((folder / "config.json").read_text())
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [r["reward"] for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    note = (folder / "NOTE").read_text().strip() if (folder / "NOTE").exists() else ""
    command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").exists() else ""
    last = f"{evals[-1]['step']}:{evals[-1]['accuracy']:.2f}" if evals else ""
    return (f"| {config['lr']} | {config['group_size']}x{config['prompts_per_step']} | {config['temperature']} | "
            f"{config['num_iterations']} | {config['kl_coef']} | stopped at {len(train)} of {config['num_steps']} | "
            f"train reward {sum(train[:10]) / len(train[:10]):.3f} → {sum(train[-10:]) / len(train[-10:]):.3f} | "
            f"| | | {last} | | {note} `{command}` |")


def main(folders: list[str]) -> None:
    for folder in folders:
        path = Path(folder) / "competence.json"
        if path.exists():
            print(f"## Starting policy ({folder})\n")
            print(competence_tables(json.loads(path.read_text())))
    print("## Vanilla GRPO pilots\n")
    print("| lr | G x prompts | T | PPO epochs | KL | steps | greedy (held-out, mean over levels) | gain (pts) "
          "| sampled | pass@8 | greedy curve on the stratified subset (step:acc) | s/step | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in folders:
        path = Path(folder) / "result.json"
        if path.exists():
            print(row(json.loads(path.read_text())))
        elif (Path(folder) / "log.jsonl").exists():
            print(stopped_row(Path(folder)))


if __name__ == "__main__":
    main(sys.argv[1:])
