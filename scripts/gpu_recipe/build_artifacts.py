#!/usr/bin/env python
"""Build the SaeRL artifacts of the GPU recipe: pool, pass-rate labels, SAE, probes, clusters, curriculum.

Stages (each skipped when its output exists, each output written atomically,
so a killed run continues where it stopped):

  pool     the RL prompt pool from the recipe's dataset -> artifacts/pool.jsonl
           (id, question, answer, prompt = the policy's text, sae_text = what the SAE reads)
  labels   a seeded random subset of at most 10% of the pool; each prompt's pass rate over
           k sampled rollouts scored by math_reward (vLLM when installed, else transformers), by
           saerl_zoo.pass_rates (`saerl-zoo label --kind pass-rate`)
           -> artifacts/labels/pass_rates.jsonl (rollouts in resumable shards)
  sae      --sae / sae.pretrained (any saerl_zoo.load_sae spec), or a TopK SAE trained with
           sae-lens on the pool's sae_text at the recipe's layer (what `saerl-zoo train-sae` does)
           -> artifacts/sae/ (+ sae_metrics.json on held-out pool prompts, zoo_entry.yaml, README.md)
  probes   featurize the pool (cached shards), difficulty probe (ElasticNet on 1 - pass rate),
           quality probe (if quality.labels), k-means clusters, the curriculum
           -> artifacts/{difficulty_probe,quality_probe,clusters,curriculum}/

On a GPU run the stages as separate processes (launch.sh does), so that vLLM's
memory is returned before the next stage loads the model.

Run:    python scripts/gpu_recipe/build_artifacts.py --out runs/gpu_recipe [--stage labels] [--sae SPEC]
Smoke:  python scripts/gpu_recipe/build_artifacts.py --smoke --out /tmp/recipe-smoke   (CPU, tiny stand-ins)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_lib as lib  # noqa: E402

STAGES = ("pool", "labels", "sae", "probes")
MAX_LABEL_FRACTION = 0.10  # the paper labels at most 10% of the pool
T = TypeVar("T")


def log(message: str) -> None:
    tqdm.write(f"[build_artifacts] {message}")


# ---------------------------------------------------------------- pool


def stage_pool(recipe: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """The pool as jsonl, prompts rendered once so training, labelling and the SAE read the same text."""
    path = lib.artifacts(out) / "pool.jsonl"
    if not path.exists():
        spec, prompt = recipe["data"], recipe["prompt"]
        fields = [spec["question_field"], spec["answer_field"]] + ([spec["id_field"]] if spec.get("id_field") else [])
        rows = lib.load_table(spec, out, fields)
        pool = []
        for i in lib.subsample(len(rows), spec.get("max_prompts"), recipe["seed"]):
            question = str(rows[i][spec["question_field"]]).strip()
            if not question:
                continue
            pool.append({
                "id": str(rows[i][spec["id_field"]]) if spec.get("id_field") else f"{i:06d}",
                "question": question,
                "answer": lib.reference(rows[i][spec["answer_field"]]),
                "prompt": lib.fill(prompt["template"], question),
                "sae_text": lib.fill(prompt["sae_template"], question),
            })
        lib.write_jsonl(path, pool)
        log(f"pool: {len(pool)} prompts -> {path}")
    return lib.read_jsonl(path)


# ---------------------------------------------------------------- labels


def stage_labels(recipe: dict[str, Any], out: Path) -> Path:
    """Pass rates of a seeded subset of the pool: `saerl-zoo label --kind pass-rate`'s library function (resumable shards)."""
    from saerl_zoo.pass_rates import label_pass_rates

    final = lib.artifacts(out) / "labels" / "pass_rates.jsonl"
    if final.exists():
        return final
    spec = recipe["labels"]
    if not 0 < spec["fraction"] <= MAX_LABEL_FRACTION:
        raise ValueError(f"labels.fraction must be in (0, {MAX_LABEL_FRACTION}] (the paper labels at most 10%), got {spec['fraction']}")
    summary = label_pass_rates(
        lib.model_dir(recipe, out), lib.artifacts(out) / "pool.jsonl", final, fraction=spec["fraction"], k=spec["k"], verifier="math",
        temperature=spec["temperature"], max_new_tokens=spec["max_tokens"], seed=recipe["seed"], shard_size=spec["shard_size"],
        **lib.generation_options(recipe),
    )
    log(f"labels: {summary['labelled']} pass rates ({summary['labelled'] / summary['prompts']:.1%} of the pool), "
        f"mean {summary['mean_pass_rate']:.3f}, {summary['rollouts_generated']} rollouts in {summary['seconds']} s -> {final}"
        + (f"; warning: {summary['note']}" if summary["note"] else ""))
    return final


# ---------------------------------------------------------------- SAE


def sae_source(recipe: dict[str, Any], out: Path, cli_sae: str | None) -> str:
    """The SAE to featurize with: --sae, else sae.pretrained, else the one recorded by an earlier
    invocation, else the one this script trains. A given SAE is recorded, so later stages need not repeat
    --sae, and one that differs from the recorded SAE is refused (the artifacts would mix two SAEs)."""
    from saerl_zoo.storage import read_json, write_json

    record = lib.artifacts(out) / "sae_source.json"
    recorded = read_json(record)["sae"] if record.exists() else None
    given = cli_sae or recipe["sae"].get("pretrained")
    if given and recorded and given != recorded:
        raise ValueError(f"{record} says these artifacts use the SAE {recorded!r}, not {given!r}: use another --out")
    if given and not recorded:
        write_json(record, {"sae": given})
    return given or recorded or str(lib.artifacts(out) / "sae")


def stage_sae(recipe: dict[str, Any], out: Path, pool: list[dict[str, Any]], cli_sae: str | None) -> str:
    """Train the recipe's SAE on the pool's sae_text unless one is given (`saerl-zoo train-sae`'s library function:
    held-out metrics, card and catalog entry come with it)."""
    source = sae_source(recipe, out, cli_sae)
    final = lib.artifacts(out) / "sae"
    if source != str(final) or final.exists():
        return source
    from saerl_zoo.sae_folder import train_sae_folder

    spec = recipe["sae"]
    texts = [row["sae_text"] for row in pool]
    result = train_sae_folder(
        str(lib.model_dir(recipe, out)), texts, final, training_tokens=spec["training_tokens"], hook=f"model.layers.{spec['layer']}",
        arch=spec["arch"], k=spec["k"], d_sae=spec["d_sae"], context=spec["context"],
        heldout_fraction=spec["heldout_prompts"] / len(texts), batch_tokens=spec["batch_tokens"], lr=spec["lr"],
        store_batch_prompts=spec["store_batch_size_prompts"], buffer_batches=spec["n_batches_in_buffer"],
        seed=recipe["seed"], device=spec["device"], model_id=recipe["model"]["id"],
        outlier_norm_ratio=spec.get("outlier_norm_ratio"), echo=log,
    )
    log(f"sae: held-out {result.metrics} -> {final}")
    for note in (result.budget, *result.warnings):
        log(f"sae: {note}")
    return source


# ---------------------------------------------------------------- probes, clusters, curriculum


def cached(path: Path, fit: Callable[[], T], load: Callable[[Path], T]) -> T:
    """``load(path)`` when a previous run finished this artifact, else ``fit()`` saved atomically to ``path``."""
    if path.exists():
        return load(path)
    obj = fit()
    with lib.atomic_folder(path) as tmp:
        obj.save(tmp)  # type: ignore[attr-defined]
    return obj


def featurize_pool(recipe: dict[str, Any], out: Path, pool: list[dict[str, Any]], source: str) -> Any:
    """SAE codes of every pool prompt; the cache refuses shards made with another model, SAE or pool."""
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import load_sae

    device = lib.device()
    model, tokenizer = load_model(lib.model_dir(recipe, out), device=device,
                                  dtype=lib.torch_dtype(recipe["generation"]["dtype"]) if device == "cuda" else None)
    from saerl_zoo.preprocessing import sae_preprocessing

    sae = load_sae(source, device=device)
    ratio, found = recipe["sae"].get("outlier_norm_ratio"), sae_preprocessing(sae).outlier_norm_ratio
    if found != ratio:  # set in memory only, the saved SAE would featurize differently through the CLI: refuse
        raise ValueError(f"the SAE {source} records outlier_norm_ratio {found} but the recipe's sae.outlier_norm_ratio is {ratio}: "
                         "write it into the SAE folder's cfg.json (saerl_zoo.preprocessing.record_preprocessing, then save) "
                         "or set the recipe's value to match")
    spec = recipe["featurize"]
    return featurize([row["sae_text"] for row in pool], model, tokenizer, sae, pooling=spec["pooling"],
                     batch_size=spec["batch_size"], max_length=spec["max_length"],
                     cache_dir=lib.artifacts(out) / "features")


def quality_probe(recipe: dict[str, Any], out: Path, pool: list[dict[str, Any]], X: Any) -> Any:
    """The quality probe on the recipe's quality labels (None without labels: no filter)."""
    from saerl_zoo.data import align_labels
    from saerl_zoo.quality import QualityProbe

    spec = recipe["quality"]
    if not spec.get("labels"):
        log("quality: no quality.labels in the recipe, so no quality probe and no filter")
        return None
    rows, values = align_labels(pool, lib.read_jsonl(lib.resolve(out, spec["labels"])), "quality")
    kind = spec["kind"] if spec["kind"] != "auto" else ("logistic" if np.isin(values, (0, 1)).all() else "ridge")
    return cached(lib.artifacts(out) / "quality_probe",
                  lambda: QualityProbe.fit(X[rows], values, kind=kind, seed=recipe["seed"]), QualityProbe.load)


def stage_probes(recipe: dict[str, Any], out: Path, pool: list[dict[str, Any]], source: str) -> Path:
    """Featurize, fit the probes, cluster and save the curriculum with its report."""
    from saerl_zoo.curriculum import curriculum_from_features, write_report
    from saerl_zoo.data import align_labels
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.diversity import Clustering, cluster

    final = lib.artifacts(out) / "curriculum"
    if final.exists():
        return final
    X = featurize_pool(recipe, out, pool, source)
    rows, rates = align_labels(pool, lib.read_jsonl(lib.artifacts(out) / "labels" / "pass_rates.jsonl"), "pass_rate", bounds=(0, 1))
    difficulty = cached(
        lib.artifacts(out) / "difficulty_probe",
        lambda: DifficultyProbe.fit(X[rows], 1.0 - rates, l1_ratio=recipe["difficulty"]["l1_ratio"], seed=recipe["seed"]),
        DifficultyProbe.load,
    )
    quality = quality_probe(recipe, out, pool, X)
    spec = recipe["curriculum"]
    clustering = cached(lib.artifacts(out) / "clusters", lambda: cluster(X, spec["n_clusters"], seed=recipe["seed"]),
                        Clustering.load)
    curriculum = curriculum_from_features(
        X, difficulty_probe=difficulty, quality_probe=quality, clustering=clustering,
        quality_threshold=recipe["quality"].get("threshold"), keep_fraction=recipe["quality"].get("keep_fraction"),
        batch_size=recipe["train"]["prompts_per_step"], mixing=spec["mixing"], rotate=spec["rotate"], seed=recipe["seed"],
        provenance={"model": recipe["model"]["id"], "sae": source, "pool": str(lib.artifacts(out) / "pool.jsonl"),
                    "labelled_prompts": len(rows)},
    )
    with lib.atomic_folder(final) as tmp:
        curriculum.save(tmp)
        write_report(curriculum, tmp)
    log(f"curriculum: {int(curriculum.keep.sum())} of {len(curriculum)} prompts kept, "
        f"difficulty probe held-out {difficulty.metrics}, quality probe {quality.metrics if quality else None} -> {final}")
    return final


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lib.add_common_args(parser)
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all",
                        help="run the stages up to and including this one (default: all); earlier finished stages are skipped")
    parser.add_argument("--sae", help="use this SAE instead of training one: a zoo name, Hub repo id, sae-lens release or folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    recipe = lib.setup(args)
    last = STAGES.index(args.stage) if args.stage != "all" else len(STAGES) - 1
    pool = stage_pool(recipe, args.out)
    if last >= STAGES.index("labels"):
        stage_labels(recipe, args.out)
    if last >= STAGES.index("sae"):
        source = stage_sae(recipe, args.out, pool, args.sae)
    if last >= STAGES.index("probes"):
        stage_probes(recipe, args.out, pool, source)


if __name__ == "__main__":
    main()
