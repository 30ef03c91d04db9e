#!/usr/bin/env python
"""Accuracy of the base policy and the trained runs on MATH500, AIME24, AMC23, Minerva and OlympiadBench.

Each problem is rendered with the recipe's prompt template (as in training) and scored with
saerl_zoo.rewards.math_reward (math-verify) against the set's reference answer: greedy accuracy,
or avg@k (the mean over k samples) where the recipe's eval set asks for samples > 1.

Models: --model NAME=SPEC (repeatable; SPEC a folder or Hub id), --base (the recipe's policy),
--runs (final/ of every finished run under <out>/runs) and --all-checkpoints (also every
checkpoint-N of those runs, as <run>@N, for accuracy-vs-step curves). Each model's result is
cached in <out>/eval/<NAME>.json and skipped when present; results.json and results.md are
rebuilt from every cached result, with runs that differ only in their seed summarised as
mean +- sd. On a GPU evaluate one model per process (launch.sh does): vLLM does not give its
memory back within a process.

Run:    python scripts/gpu_recipe/evaluate.py --out runs/gpu_recipe --base --runs
Smoke:  python scripts/gpu_recipe/evaluate.py --smoke --out /tmp/recipe-smoke --base --runs
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_lib as lib  # noqa: E402

from saerl_zoo.generation import Generator  # noqa: E402

SEED_SUFFIX = re.compile(r"-seed\d+$")


# ---------------------------------------------------------------- which models


def models_to_evaluate(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Path]:
    """NAME -> local model folder, from --model, --base, --runs and --all-checkpoints."""
    models: dict[str, Path] = {}
    if args.base:
        models["base"] = lib.model_dir(recipe, args.out)
    for item in args.model:
        name, sep, spec = item.partition("=")
        if not sep:
            raise ValueError(f"--model takes NAME=SPEC, got {item!r}")
        models[name] = lib.model_folder(spec)
    for run in sorted((args.out / "runs").glob("*")):
        if (args.runs or args.all_checkpoints) and (run / "final").is_dir():
            models[run.name] = run / "final"
        if args.all_checkpoints:
            for checkpoint in run.glob("checkpoint-*"):
                models[f"{run.name}@{checkpoint.name.removeprefix('checkpoint-')}"] = checkpoint
    if not models:
        raise SystemExit("nothing to evaluate: give --model NAME=SPEC, --base, --runs or --all-checkpoints")
    return models


# ---------------------------------------------------------------- one model


def eval_rows(spec: dict[str, Any], out: Path, template: str) -> list[dict[str, str]]:
    """The set's problems as {prompt, answer}, rendered like training prompts."""
    rows = lib.load_table(spec, out, [spec["question_field"], spec["answer_field"]])
    return [{"prompt": lib.fill(template, str(r[spec["question_field"]])), "answer": lib.reference(r[spec["answer_field"]])}
            for r in rows]


def evaluate_set(generator: Generator, rows: list[dict[str, str]], spec: dict[str, Any], max_tokens: int,
                 seed: int) -> dict[str, Any]:
    """Greedy accuracy, or avg@k over ``samples`` completions per problem."""
    from saerl_zoo.rewards import math_reward

    samples = int(spec["samples"])
    completions = generator.generate([r["prompt"] for r in rows], n=samples, temperature=float(spec["temperature"]),
                                     max_new_tokens=max_tokens, seed=seed)
    scores = [float(np.mean([math_reward(c, row["answer"]) for c in texts])) for row, texts in zip(rows, completions)]
    return {
        "accuracy": float(np.mean(scores)),
        "metric": "greedy" if samples == 1 else f"avg@{samples}",
        "temperature": float(spec["temperature"]),
        "n_problems": len(rows),
        "per_problem": scores,
    }


def evaluate_model(name: str, path: Path, recipe: dict[str, Any], out: Path, smoke: bool) -> dict[str, Any]:
    """Every eval set of the recipe for one model, with where and when it was measured."""
    import torch

    spec = recipe["eval"]
    generator = Generator(path, seed=recipe["seed"], **lib.generation_options(recipe))
    sets = {}
    for set_name, set_spec in spec["sets"].items():
        rows = eval_rows(set_spec, out, recipe["prompt"]["template"])
        sets[set_name] = evaluate_set(generator, rows, set_spec, spec["max_tokens"], recipe["seed"])
        print(f"[evaluate] {name} {set_name}: {sets[set_name]['metric']} {sets[set_name]['accuracy']:.4f}")
    return {
        "model": name,
        "path": str(path),
        "sets": sets,
        "average": float(np.mean([s["accuracy"] for s in sets.values()])),
        "measured_on": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})",
        "backend": generator.backend,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_tokens": spec["max_tokens"],
        "smoke": smoke,
    }


# ---------------------------------------------------------------- tables


def seed_groups(results: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Final runs grouped by name without their seed (``saerl-dr_grpo-seed1`` -> ``saerl-dr_grpo``)."""
    groups: dict[str, list[str]] = {}
    for name in results:
        if "@" not in name and SEED_SUFFIX.search(name):
            groups.setdefault(SEED_SUFFIX.sub("", name), []).append(name)
    return groups


def percent(values: list[float]) -> str:
    """One value as a percentage; several (seeds) as mean +- sd; none as a dash."""
    if not values:
        return "-"
    return f"{100 * np.mean(values):.1f}" if len(values) == 1 else f"{100 * np.mean(values):.1f} +- {100 * np.std(values):.1f}"


def render_markdown(results: dict[str, dict[str, Any]], set_names: list[str]) -> str:
    """One row per model (checkpoints are left to results.json), then seed means; the header says what each column is."""
    first = next(iter(results.values()))
    metrics = [f"{n} ({first['sets'][n]['metric']})" if n in first["sets"] else n for n in set_names]
    lines = [
        "# GPU recipe: evaluation",
        "",
        "Accuracy in % (math_reward, math-verify), written by scripts/gpu_recipe/evaluate.py.",
        "Measured on: " + "; ".join(sorted({f"{r['measured_on']} ({r['backend']})" for r in results.values()})) + ".",
        *(["", "**Smoke test on tiny local stand-ins: these numbers mean nothing.**"] if any(r["smoke"] for r in results.values()) else []),
        "",
        "| model | " + " | ".join(metrics) + " | average |",
        "|---|" + "---:|" * (len(set_names) + 1),
    ]
    rows = {name: [name] for name in results if "@" not in name}
    groups = seed_groups(results)
    for title, table in (("", rows), ("Mean +- sd over seeds:", groups)):
        if title and table:
            lines += ["", title, "", "| run | " + " | ".join(set_names) + " | average |", "|---|" + "---:|" * (len(set_names) + 1)]
        for label, names in table.items():
            if title:
                label = f"{label} ({len(names)} seed{'s' if len(names) > 1 else ''})"
            cells = [percent([results[m]["sets"][n]["accuracy"] for m in names if n in results[m]["sets"]]) for n in set_names]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {percent([results[m]['average'] for m in names])} |")
    return "\n".join(lines) + "\n"


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """A cached result without its per-problem scores."""
    sets = {name: {k: v for k, v in s.items() if k != "per_problem"} for name, s in result["sets"].items()}
    return {**result, "sets": sets}


def write_tables(eval_dir: Path, set_names: list[str]) -> None:
    from saerl_zoo.storage import atomic_path, read_json, write_json

    results = {p.stem: read_json(p) for p in sorted(eval_dir.glob("*.json")) if p.name != "results.json"}
    write_json(eval_dir / "results.json", {name: summary(r) for name, r in results.items()})
    with atomic_path(eval_dir / "results.md") as tmp:
        tmp.write_text(render_markdown(results, set_names))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lib.add_common_args(parser)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SPEC", help="a model folder or Hub id to evaluate")
    parser.add_argument("--base", action="store_true", help="evaluate the recipe's base policy (as 'base')")
    parser.add_argument("--runs", action="store_true", help="evaluate final/ of every finished run under <out>/runs")
    parser.add_argument("--all-checkpoints", action="store_true", help="--runs plus every checkpoint-N of those runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    from saerl_zoo.storage import write_json

    args = parse_args(argv)
    recipe = lib.setup(args)
    eval_dir = args.out / "eval"
    for name, path in models_to_evaluate(args, recipe).items():
        target = eval_dir / f"{name}.json"
        if target.exists():
            print(f"[evaluate] {target} exists: skipped")
            continue
        write_json(target, evaluate_model(name, path, recipe, args.out, args.smoke))
    write_tables(eval_dir, list(recipe["eval"]["sets"]))
    return eval_dir / "results.md"


if __name__ == "__main__":
    main()
