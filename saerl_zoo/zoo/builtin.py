"""The built-in entries: the embedded default (tiny math policy, its SAE and probes) as zoo artifacts.

`default_entries()` reads `saerl_zoo/default/` (configs, metrics, build_info.json),
hashes every file and measures the SAE on the fixed reference text, giving the
entries that `scripts/publish_default.py --update-catalog` writes into the
built-in `catalog.yaml`. Rerun that after `scripts/build_default.py`: a
rebuilt default no longer matches the old sha256s and is refused on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saerl_zoo.zoo.hub import hash_folder, sha256_file
from saerl_zoo.zoo.registry import Artifact, validate_entry

PREFIX = "saerl-tiny-math"
SAE_NAME, DIFFICULTY_NAME, QUALITY_NAME = f"{PREFIX}/sae", f"{PREFIX}/difficulty-probe", f"{PREFIX}/quality-probe"
HOST_MODEL_ID = "saerl-zoo/saerl-tiny-math-policy"
LICENSE = "apache-2.0"
BUILD_COMMAND = "python scripts/build_default.py --reuse-lm"  # on the policy snapshot the recipe in its docstring chooses
ESTIMATORS = {"elasticnet": "ElasticNet", "logistic": "Logistic-regression", "ridge": "Ridge"}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _round(d: dict[str, Any], nd: int = 4) -> dict[str, Any]:
    return {k: round(v, nd) if isinstance(v, float) else v for k, v in d.items()}


def _pool_kind(tasks: str) -> dict[str, str]:
    """What the embedded pool is made of, in words, for the task set its build recorded (build_default's --tasks)."""
    from saerl_zoo.tasks import FAMILIES, WORKED_FAMILIES

    if tasks == "worked":
        return {"texts": "prompt + worked solution", "families": f"{len(WORKED_FAMILIES)} worked-solution arithmetic families "
                f"({', '.join(WORKED_FAMILIES)})"}
    return {"texts": "prompt + answer, reasoning-gym generators", "families": f"{len(FAMILIES)} reasoning-gym arithmetic families"}


def default_entries(default_dir: Path | None = None, *, package_prefix: str = "default", reference: bool = True) -> list[Artifact]:
    """Catalog entries for the embedded default found in `default_dir` (paths stored relative to the package)."""
    from saerl_zoo.embedded import DEFAULT_DIR
    from saerl_zoo.hooks import layer_from_hook_name

    root = Path(default_dir) if default_dir is not None else DEFAULT_DIR
    for sub in ("model", "sae", "difficulty_probe", "quality_probe"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"the embedded default in {root} has no {sub}/; build it with scripts/build_default.py")
    sae_cfg = _json(root / "sae" / "cfg.json")
    meta = sae_cfg.get("metadata", {})
    info = _json(root / "build_info.json")
    args = info.get("args", {})
    sae_metrics = _json(root / "sae_metrics.json") or info.get("sae", {})
    hook_name = meta.get("hook_name", "model.layers.2")
    layer = layer_from_hook_name(hook_name)
    tokenizer_sha = sha256_file(root / "model" / "tokenizer.json") if (root / "model" / "tokenizer.json").is_file() else None
    seed = info.get("seed", args.get("seed", 0))
    n_pool = args.get("n_pool", 2000)
    pool_kind = _pool_kind(args.get("tasks", "reasoning_gym"))
    n_label = int(args.get("label_fraction", 0.1) * n_pool)
    common: dict[str, Any] = {
        "model": {"id": HOST_MODEL_ID, "package_path": f"{package_prefix}/model"},
        "hook": {"module": hook_name, "site": "resid_out", "layer": layer},
        "license": LICENSE,
        "preprocessing": {
            "context_length": int(meta.get("context_size") or args.get("sae_context", 48)),
            "special_tokens": "drop" if meta.get("exclude_special_tokens") not in (None, False, []) else "keep",
            "normalization_scale": 1.0,
            **({"tokenizer_sha256": tokenizer_sha} if tokenizer_sha else {}),
        },
        "tags": ["saerl-zoo", "embedded", "tiny-math"],
    }
    if sae_cfg.get("normalize_activations", "none") != "none":
        raise ValueError(f"the embedded SAE normalises activations ({sae_cfg['normalize_activations']}); record its scale in the catalog")
    eval_set = f"{sae_metrics.get('n_tokens', '?')} held-out tokens: {sae_metrics.get('heldout', 'held-out tiny-math text')}"
    sae_entry: dict[str, Any] = {
        "name": SAE_NAME,
        "kind": "sae",
        "description": (
            f"TopK SAE (k={sae_cfg.get('k')}, {sae_cfg.get('d_sae')} latents) on the residual stream after decoder block {layer} "
            "of the embedded tiny math policy: the feature space in which SaeRL clusters prompts and its probes score them."
        ),
        **common,
        "sae": {"architecture": sae_cfg.get("architecture", "topk"), "d_in": sae_cfg["d_in"], "d_sae": sae_cfg["d_sae"], **({"k": sae_cfg["k"]} if "k" in sae_cfg else {})},
        "source": {"type": "package", "format": "sae-lens", "path": f"{package_prefix}/sae"},
        "files": hash_folder(root / "sae"),
        "metrics": {
            **_round({k: sae_metrics[k] for k in ("l0", "explained_variance", "dead_fraction", "mse", "n_tokens") if k in sae_metrics}),
            "eval_set": eval_set,
        },
        "training": {
            "data": f"clean tiny-math training texts ({pool_kind['texts']}) and the pool's prompts",
            "tokens": args.get("sae_tokens", 1_000_000),
            "steps": int(args.get("sae_tokens", 1_000_000)) // int(args.get("sae_batch", 1024)),
            "batch_tokens": args.get("sae_batch", 1024),
            "lr": args.get("sae_lr", 2e-3),
            "seed": seed,
            "trainer": f"sae-lens {meta.get('sae_lens_training_version', '')} LanguageModelSAETrainingRunner".strip(),
            "command": BUILD_COMMAND,
        },
        "limitations": [
            "Trained on a 4-layer, 128-wide toy policy: it demonstrates the pipeline, it is not a feature dictionary of any real LLM.",
            "Only valid on the embedded policy's residual stream after block 2, with BOS and padding tokens dropped.",
            f"{sae_metrics.get('dead_fraction', 0):.0%} of the latents never fire on the held-out set (dead).",
        ],
        "card": f"{PREFIX}/sae.md",
    }
    sae_entry["metrics"].setdefault("dead_fraction", 0.0)
    entries = [sae_entry]
    probes = info.get("probes", {})
    for name, sub, kind, labels in (
        (DIFFICULTY_NAME, "difficulty_probe", "difficulty-probe",
         f"1 - pass rate of {args.get('k', 8)} sampled rollouts (T=1) of the policy, on {n_label} prompts ({args.get('label_fraction', 0.1):.0%} of the pool)"),
        (QUALITY_NAME, "quality_probe", "quality-probe",
         f"0/1 good/broken labels on {n_label} prompts of a pool with {args.get('bad_fraction', 0.15):.0%} injected broken prompts"),
    ):
        cfg = _json(root / sub / "probe_config.json")
        topic = kind.removesuffix("-probe")
        pool_eval = {k: v for k, v in probes.get("pool_eval", {}).items() if topic in k}
        entries.append({
            "name": name,
            "kind": kind,
            "description": (
                f"{ESTIMATORS.get(cfg.get('estimator'), 'Linear')} probe on mean-pooled codes of {SAE_NAME}: "
                + ("predicted difficulty (1 - pass rate), to order the curriculum easy to hard." if kind == "difficulty-probe"
                   else "P(prompt is well-formed), to filter broken prompts before training.")
            ),
            **common,
            "features": SAE_NAME,
            "source": {"type": "package", "format": "probe", "path": f"{package_prefix}/{sub}"},
            "files": hash_folder(root / sub),
            "metrics": {
                "heldout": _round(cfg.get("metrics", {})),
                "labels": labels,
                "n_train": cfg.get("n_train"),
                "n_heldout": cfg.get("n_heldout"),
                **({"pool_eval": _round(pool_eval)} if pool_eval else {}),
            },
            "training": {
                "data": f"{cfg.get('n_train', '?')} + {cfg.get('n_heldout', '?')} labelled prompts of the embedded pool",
                "features": f"mean-pooled {SAE_NAME} codes (BOS/padding skipped)",
                "estimator": cfg.get("estimator"),
                "hyperparameters": _round(cfg.get("hyperparameters", {}), 6),
                "seed": cfg.get("seed", seed),
                "command": BUILD_COMMAND,
            },
            "limitations": [
                f"Fitted only on the {pool_kind['families']} of the embedded pool; scores on other domains are not meaningful.",
                f"Reads codes of {SAE_NAME} only: features of any other SAE (or layer) make its scores meaningless.",
                "Held-out metrics come from a few dozen labelled prompts and are noisy.",
            ],
            "card": f"{PREFIX}/{kind}.md",
        })
    arts = [validate_entry(e, "built-in") for e in entries]
    if reference:
        _add_reference_metrics(arts[0], root)
    return arts


def _add_reference_metrics(art: Artifact, root: Path) -> None:
    from sae_lens import SAE

    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import reference_metrics

    model, tokenizer = load_model(root / "model")
    # sae-lens's own reader: these are the new files being registered, which the catalog's old sha256s would refuse
    sae = SAE.load_from_disk(str(root / "sae"))
    art.metrics["reference"] = reference_metrics(sae, art, model, tokenizer)
