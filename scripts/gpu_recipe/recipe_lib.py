"""What the GPU recipe's three scripts share: the recipe file, run layout, data, generation, reward.

Everything the scripts do is configured in ``recipe.yaml``; its ``smoke:``
section is merged over the rest by ``--smoke``, and :func:`make_standins`
writes the tiny local stand-ins it points at (the embedded default policy, a
few hundred of its prompts, five tiny eval sets), so the whole sequence runs
on a CPU without network access. Relative paths in a recipe are read against
the run folder (``--out``).

Run folder layout::

    <out>/artifacts/pool.jsonl              id, question, answer, prompt (what the policy reads), sae_text
    <out>/artifacts/labels/pass_rates.jsonl the labelled subset's pass rates (k rollouts)
    <out>/artifacts/sae/                    the SAE trained here (sae-lens format) + sae_metrics.json
    <out>/artifacts/features/               featurize cache of the pool (resumable shards)
    <out>/artifacts/{difficulty_probe,quality_probe,clusters,curriculum}/
    <out>/runs/<arm>-<loss>-seed<seed>/     TRL checkpoints and final/
    <out>/eval/<model>.json, results.json, results.md
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from saerl_zoo.storage import atomic_folder, write_jsonl

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPE = HERE / "recipe.yaml"
SMOKE_POOL = 200  # prompts of the embedded default pool used as the smoke stand-in pool
SMOKE_EVAL = 4  # problems per smoke eval set


# ---------------------------------------------------------------- recipe and run folder


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, dicts merged key by key (so a smoke override names only what it changes)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(path: str | os.PathLike[str], smoke: bool = False) -> dict[str, Any]:
    """The recipe without its ``smoke:`` section, or with that section merged over it."""
    recipe = yaml.safe_load(Path(path).read_text())
    smoke_section = recipe.pop("smoke", {})
    return merge(recipe, smoke_section) if smoke else recipe


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="the recipe file (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: artifacts, runs and eval results go here")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke test: merge the recipe's smoke section and use tiny local stand-ins (no GPU, no Hub)")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Load the recipe for this invocation; in smoke mode make sure the stand-ins exist first."""
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        make_standins(args.out / "standins")
    recipe = load_recipe(args.recipe, smoke=args.smoke)
    if recipe.get("torch_threads"):
        import torch

        torch.set_num_threads(recipe["torch_threads"])
    return recipe


def artifacts(out: Path) -> Path:
    return out / "artifacts"


def resolve(out: Path, path: str | os.PathLike[str]) -> Path:
    """A recipe path: absolute as given, relative to the run folder otherwise."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else out / path


def run_name(arm: str, loss_type: str, seed: int) -> str:
    return f"{arm}-{loss_type}-seed{seed}"


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def model_dir(recipe: dict[str, Any], out: Path) -> Path:
    """The policy as a local folder: a path as given, a Hub id through the HF cache (safe files only).

    sae-lens's runner and vLLM both want a folder, and one folder for every
    stage guarantees they all read the same weights.
    """
    spec = recipe["model"]
    local = resolve(out, spec["id"])
    return model_folder(local if local.is_dir() else spec["id"], spec.get("revision"))


def model_folder(spec: str | os.PathLike[str], revision: str | None = None) -> Path:
    """An existing folder as it is, anything else as a Hub model id fetched into the HF cache (safetensors/JSON/text only)."""
    if Path(spec).expanduser().is_dir():
        return Path(spec).expanduser()
    from saerl_zoo.zoo.hub import download_snapshot

    return download_snapshot(str(spec), revision=revision)


# ---------------------------------------------------------------- files


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    from saerl_zoo.data import load_rows

    return load_rows(path, prompt_field=None)


# ---------------------------------------------------------------- data


def fill(template: str, question: str) -> str:
    """``template`` with ``{question}`` replaced (plain replacement: LaTeX braces in templates need no escaping)."""
    if "{question}" not in template:
        raise ValueError(f"prompt template {template!r} has no {{question}} slot")
    return template.replace("{question}", question)


def reference(value: Any) -> str:
    """A reference answer as text: OlympiadBench-style lists of answers become one comma-separated tuple."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def load_table(spec: dict[str, Any], out: Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a local jsonl/parquet file (``path``) or a Hub dataset (``hub``, ``config``, ``split``,
    ``revision``), keeping only ``fields`` (DeepMath's three R1 solutions would otherwise fill memory)."""
    if spec.get("path"):
        rows = read_jsonl(resolve(out, spec["path"]))
    else:
        import datasets

        table = datasets.load_dataset(spec["hub"], spec.get("config"), split=spec["split"], revision=spec.get("revision"))
        rows = table.select_columns([f for f in fields if f in table.column_names]).to_list()
    missing = sorted({f for f in fields for row in rows[:1] if f not in row})
    if missing:
        raise ValueError(f"{spec.get('path') or spec.get('hub')}: rows have no field(s) {missing}; set the field names in the recipe")
    return rows


def subsample(n: int, size: int | None, seed: int) -> list[int]:
    """``size`` row indices out of ``n`` (all when None), sorted so the pool keeps the dataset's order."""
    if size is None or size >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), size))


# ---------------------------------------------------------------- generation


def generation_options(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``generation`` section as :class:`saerl_zoo.generation.Generator` keywords.

    No chat template: the recipe renders every prompt with its own ``prompt.template``.
    """
    spec = recipe["generation"]
    return {"backend": spec["backend"], "dtype": spec["dtype"], "device": device(), "batch_size": spec["batch_size"],
            "chat_template": False,
            "vllm_options": {"max_model_len": spec["max_model_len"], "gpu_memory_utilization": spec["gpu_memory_utilization"]}}


# ---------------------------------------------------------------- reward


def accuracy_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """TRL reward function: :func:`saerl_zoo.rewards.math_reward` of each completion against its row's answer."""
    from saerl_zoo.rewards import math_reward

    return [math_reward(completion, reference) for completion, reference in zip(completions, answer)]


# ---------------------------------------------------------------- smoke stand-ins


def make_standins(folder: Path) -> None:
    """Tiny local stand-ins for the smoke test, written once: policy, pool, quality labels, eval sets.

    The policy is the embedded default (a 4-layer Llama with a BPE tokenizer,
    saved with save_pretrained); the pool is its first prompts, with the
    broken ones kept so the quality filter has something to find; each eval
    set uses the real set's field names (OlympiadBench's answers as lists).
    """
    if folder.exists():
        return
    from saerl_zoo.embedded import default_path

    with atomic_folder(folder) as tmp:
        shutil.copytree(default_path("model"), tmp / "model")
        prompts = read_jsonl(default_path("prompts.jsonl"))
        truth = {t["id"]: t for t in read_jsonl(default_path("ground_truth.jsonl"))}
        pool = [{"id": p["id"], "question": p["prompt"], "answer": p["answer"]} for p in prompts[:SMOKE_POOL]]
        write_jsonl(tmp / "pool.jsonl", pool)
        write_jsonl(tmp / "quality_labels.jsonl", _smoke_quality_labels(pool, truth))
        _write_smoke_eval_sets(tmp / "eval", prompts[SMOKE_POOL:])


def _smoke_quality_labels(pool: list[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Ground-truth good/bad labels on 10% of the pool, half of them broken prompts (a logistic probe needs both)."""
    n = len(pool) // 10
    good = [r["id"] for r in pool if truth[r["id"]]["quality"] == 1][: n - n // 2]
    bad = [r["id"] for r in pool if truth[r["id"]]["quality"] == 0][: n // 2]
    return [{"id": i, "quality": truth[i]["quality"]} for i in good + bad]


def _write_smoke_eval_sets(folder: Path, prompts: list[dict[str, Any]]) -> None:
    layouts = {  # name: (question field, answer field, answers as lists)
        "math500": ("problem", "answer", False),
        "aime24": ("problem", "answer", False),
        "amc23": ("question", "answer", False),
        "minerva": ("question", "answer", False),
        "olympiadbench": ("question", "final_answer", True),
    }
    for k, (name, (question, answer, as_list)) in enumerate(layouts.items()):
        rows = prompts[k * SMOKE_EVAL : (k + 1) * SMOKE_EVAL]
        write_jsonl(folder / f"{name}.jsonl",
                    [{question: r["prompt"], answer: [r["answer"]] if as_list else r["answer"]} for r in rows])
