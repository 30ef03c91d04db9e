"""`saerl-zoo prepare`: from a policy model and a prompt file to a curriculum, one resumable stage at a time.

The five stages are the five commands a user could run by hand (`train-sae`
or `find`, `label --kind pass-rate`, `label --kind quality`, `featurize` +
`fit-probe`, `curriculum`), calling the same library functions, so the two
paths cannot drift. Each stage writes its output atomically into one folder;
a rerun skips every stage whose output exists, so a killed `prepare` resumes
at the stage it was in (and `label` itself resumes inside its shards).

A finished stage records the settings it ran with in ``prepare.json``; a
rerun with other settings for a finished stage is refused, naming the
folder to remove, because its outputs (and everything downstream) would mix
two configurations.

Layout of ``out``::

    sae/ or sae.json              the SAE trained here (train-sae's folder), or the one chosen
    labels/pass_rates.jsonl       label --kind pass-rate
    labels/quality_labels.jsonl   label --kind quality (prompts and labels in one file)
    features/{pool,quality}.safetensors
    feature_cache/                the featurizer's keyed cache (the curriculum stage reuses the pool's codes)
    probes/{difficulty,quality}/  fit-probe
    curriculum/                   what `saerl-zoo curriculum --out` writes
    prepare.json                  settings and seconds per stage
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saerl_zoo.errors import UserError

__all__ = ["PrepareConfig", "STAGES", "choose_sae", "prepare"]

STAGES = ("sae", "pass_rates", "quality_labels", "features", "probes", "curriculum")


@dataclasses.dataclass
class PrepareConfig:
    """Everything `prepare` needs; the defaults are those of the single commands."""

    model: str
    prompts: str
    out: str
    model_id: str | None = None  # Hub id to look SAEs up by (default: --model when it is not a local folder)
    gguf_file: str | None = None
    device: str = "cpu"
    trust_remote_code: bool = False
    prompt_field: str = "prompt"
    seed: int = 0
    # SAE: "auto" (an SAE on this model or its base/instruct twin, else train one), "train", or a name load_sae reads
    sae: str = "auto"
    sae_hook: str | None = None
    sae_training_tokens: int = 2_000_000
    sae_context: int = 256
    sae_d_sae: int | None = None  # train-sae's default: 8 x d_model
    sae_k: int | None = None  # train-sae's default
    sae_batch_tokens: int | None = None  # train-sae's default
    sae_outlier_norm_ratio: float | str | None = "auto"  # train-sae's attention-sink rule
    corpus: str | None = None
    # labels
    label_fraction: float | None = None
    label_count: int | None = None
    k: int = 8
    verifier: str = "math"
    temperature: float = 1.0
    max_new_tokens: int = 512
    chat_template: bool | None = None
    backend: str = "auto"
    quality_count: int | None = None
    human_labels: str | None = None
    # curriculum
    train_batch_size: int = 8  # prompts per RL step the curriculum is cut for
    stages: int | None = None
    num_steps: int | None = None
    max_length: int = 512

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings a stage's output depends on (upstream stages' settings included, so a change cascades)."""
        own = {
            "sae": ("model", "model_id", "gguf_file", "prompts", "prompt_field", "seed", "sae", "sae_hook",
                    "sae_training_tokens", "sae_context", "sae_d_sae", "sae_k", "sae_batch_tokens", "sae_outlier_norm_ratio",
                    "corpus"),
            "pass_rates": ("model", "gguf_file", "prompts", "prompt_field", "seed", "label_fraction", "label_count", "k",
                           "verifier", "temperature", "max_new_tokens", "chat_template"),
            "quality_labels": ("prompts", "prompt_field", "seed", "quality_count", "human_labels"),
            "features": ("max_length",),
            "probes": (),
            "curriculum": ("train_batch_size", "stages", "num_steps"),
        }
        upstream = {"features": ("sae", "quality_labels"), "probes": ("features", "pass_rates"), "curriculum": ("probes",)}
        settings = {name: getattr(self, name) for name in own[stage]}
        for name in ("model", "prompts", "human_labels", "corpus"):  # edited in place, a file is other input
            if name in settings and settings[name] is not None:
                settings[f"{name}_content"] = _content_digest(Path(settings[name]))
        for before in upstream.get(stage, ()):
            settings[f"<{before}>"] = self.stage_settings(before)
        return settings


def _content_digest(path: Path) -> str | None:
    """sha256 of a file; for a model folder, of its small files and the names and sizes of the rest (hashing
    gigabytes of weights on every run would cost more than the check saves); None for a Hub id."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        size = file.stat().st_size
        digest.update(file.read_bytes() if size < 1 << 20 else str(size).encode())
    return digest.hexdigest()


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Manifest:
    """``prepare.json``: which stages finished, with which settings, in how many seconds."""

    def __init__(self, out: Path) -> None:
        from saerl_zoo.storage import read_json

        self.path = out / "prepare.json"
        self.data: dict[str, Any] = read_json(self.path) if self.path.exists() else {"stages": {}}

    def check(self, stage: str, config: PrepareConfig, output: Path) -> bool:
        """True when `stage` already finished with these settings; refuse when it finished with others.

        A stage is recorded as running (with its settings) before it starts,
        and its output appears whole or not at all, so an output whose running
        entry matches was finished by a run killed before it could say so.
        """
        done = self.data["stages"].get(stage)
        if not output.exists():
            return False
        if done is None:
            raise UserError(f"{output} exists but {self.path} does not record how it was made: remove it, or use another --out")
        if done["key"] != _digest(config.stage_settings(stage)):
            raise UserError(f"{output} was made with other settings ({stage} stage, see {self.path}): remove it and the "
                            "stages after it to redo them, or use another --out")
        return True

    def record(self, stage: str, config: PrepareConfig, seconds: float | None = None,
               summary: dict[str, Any] | None = None) -> None:
        """The stage's settings (before it runs: ``seconds`` None), then its cost and summary (after)."""
        from saerl_zoo.storage import write_json

        entry = {"key": _digest(config.stage_settings(stage)), "settings": config.stage_settings(stage)}
        if seconds is not None:
            entry.update(seconds=round(seconds, 1), summary=summary)
        self.data["stages"][stage] = entry
        write_json(self.path, self.data)


def _model_id(config: PrepareConfig) -> str | None:
    """The Hub id SAEs are looked up by: given, or --model when it names no local folder."""
    if config.model_id:
        return config.model_id
    return None if Path(config.model).exists() else config.model


def choose_sae(config: PrepareConfig, echo: Callable[[str], Any] = print) -> str | None:
    """The SAE `prepare` uses: --sae, or with "auto" the first loadable SAE on this model or the same weights
    post-trained otherwise (find's tiers 1-2); None means: train one here."""
    if config.sae not in ("auto", "train"):
        return config.sae
    model_id = _model_id(config)
    if config.sae == "train" or model_id is None:
        if config.sae == "auto":
            echo("sae: --model is a local folder and no --model-id was given, so no published SAE can be looked up: training one")
        return None
    from saerl_zoo.zoo.find import suggest_saes

    found, _ = suggest_saes(model_id, hook=config.sae_hook)
    close = [s for s in found if s.tier <= 2]
    if not close:
        echo(f"sae: no published SAE on {model_id} or its base/instruct twin: training one "
             f"(`saerl-zoo find --model {model_id}` lists other sizes to carry over with `saerl-zoo transfer`)")
        return None
    best = _middle_layer_choice([s for s in close if s.tier == close[0].tier])
    echo(f"sae: using {best.row.name} ({best.note}); pass --sae train to train one instead")
    return best.row.name


def _middle_layer_choice(suggestions: list[Any]) -> Any:
    """A residual-stream SAE at the middle of the layers on offer (where SaeRL reads), else the first suggestion.

    Why: `find` sorts by release and layer, so its first row is often block 0,
    whose features say little about a prompt's difficulty.
    """
    residual = [s for s in suggestions if s.row.site == "resid_post" and s.row.layer is not None]
    if not residual:
        return suggestions[0]
    layers = sorted({s.row.layer for s in residual})
    middle = layers[len(layers) // 2]
    return min(residual, key=lambda s: (abs(s.row.layer - middle), s.row.source != "zoo"))


def _stage_sae(config: PrepareConfig, out: Path, echo: Callable[[str], Any]) -> tuple[str, dict[str, Any]]:
    from saerl_zoo.data import load_rows, read_texts
    from saerl_zoo.storage import read_json, write_json

    record = out / "sae.json"
    if record.exists():
        return read_json(record)["sae"], {}
    if (out / "sae").exists():
        return str(out / "sae"), {}
    chosen = choose_sae(config, echo)
    if chosen is not None:
        from saerl_zoo.zoo.api import load_sae

        load_sae(chosen, device=config.device)  # fetch and check it now, not three stages later
        write_json(record, {"sae": chosen})
        return chosen, {"chosen": chosen}
    from saerl_zoo.sae_folder import train_sae_folder

    prompts = [r[config.prompt_field] for r in load_rows(config.prompts, config.prompt_field)]
    corpus = read_texts(config.corpus) if config.corpus else ()
    sizes = {name: value for name, value in (("d_sae", config.sae_d_sae), ("k", config.sae_k),
                                             ("batch_tokens", config.sae_batch_tokens)) if value is not None}
    trained = train_sae_folder(config.model, prompts, out / "sae", training_tokens=config.sae_training_tokens, corpus=corpus,
                               hook=config.sae_hook, context=config.sae_context, seed=config.seed, device=config.device,
                               model_id=config.model_id, outlier_norm_ratio=config.sae_outlier_norm_ratio,
                               gguf_file=config.gguf_file, trust_remote_code=config.trust_remote_code, echo=echo, **sizes)
    return str(out / "sae"), {"trained": str(out / "sae"), "metrics": trained.metrics}


def prepare(config: PrepareConfig, *, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the stages not finished yet; return ``prepare.json``'s content (settings, seconds and summary per stage)."""
    from saerl_zoo.curriculum import build_curriculum, write_ordered_dataset, write_report
    from saerl_zoo.data import load_rows
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.models import load_model
    from saerl_zoo.pass_rates import label_pass_rates
    from saerl_zoo.probe_files import fit_probe_files
    from saerl_zoo.quality_labels import label_quality
    from saerl_zoo.storage import atomic_folder, save_csr
    from saerl_zoo.zoo.api import load_sae

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(out)
    labels, features, probes = out / "labels", out / "features", out / "probes"
    quality_file = labels / "quality_labels.jsonl"
    outputs = {"sae": out / ("sae.json" if (out / "sae.json").exists() else "sae"), "pass_rates": labels / "pass_rates.jsonl",
               "quality_labels": quality_file, "features": features, "probes": probes, "curriculum": out / "curriculum"}
    cache = out / "feature_cache"  # keyed by inputs: the curriculum stage reads the pool's codes back from it
    loaded: dict[str, Any] = {}

    def model_and_sae() -> tuple[Any, Any, Any]:
        if not loaded:
            model, tokenizer = load_model(config.model, device=config.device, gguf_file=config.gguf_file,
                                          trust_remote_code=config.trust_remote_code)
            loaded.update(model=model, tokenizer=tokenizer, sae=load_sae(sae_name, device=config.device))
        return loaded["model"], loaded["tokenizer"], loaded["sae"]

    finished = {stage for stage in STAGES if manifest.check(stage, config, outputs[stage])}  # refuse before any work
    for i, stage in enumerate(STAGES):  # a stage to (re)do makes every later output stale
        stale = [later for later in STAGES[i + 1 :] if later in finished]
        if stage not in finished and stale:
            raise UserError(f"the {stage} stage has to run, but later stages are done ({', '.join(stale)}) and would keep "
                            f"outputs made from the old {stage}: remove {', '.join(str(outputs[s]) for s in stale)}")
    sae_name = None
    for stage in STAGES:
        if stage in finished:
            echo(f"{stage}: done before, skipped ({outputs[stage]})")
            if stage == "sae":
                sae_name, _ = _stage_sae(config, out, echo)
            continue
        echo(f"{stage}: running")
        manifest.record(stage, config)
        start = time.time()
        if stage == "sae":
            sae_name, summary = _stage_sae(config, out, echo)
            outputs["sae"] = out / ("sae.json" if (out / "sae.json").exists() else "sae")
        elif stage == "pass_rates":
            summary = label_pass_rates(config.model, config.prompts, outputs[stage], fraction=config.label_fraction,
                                       count=config.label_count, k=config.k, verifier=config.verifier, backend=config.backend,
                                       chat_template=config.chat_template, temperature=config.temperature,
                                       max_new_tokens=config.max_new_tokens, seed=config.seed, prompt_field=config.prompt_field,
                                       device=config.device, gguf_file=config.gguf_file,
                                       trust_remote_code=config.trust_remote_code)
        elif stage == "quality_labels":
            summary = label_quality(Path(config.prompts), quality_file, fraction=None, count=config.quality_count,
                                    seed=config.seed, prompt_field=config.prompt_field,
                                    human_labels=Path(config.human_labels) if config.human_labels else None, overwrite=False)
        elif stage == "features":
            model, tokenizer, sae = model_and_sae()
            summary = {}
            with atomic_folder(features) as tmp:
                for name, path in (("pool", Path(config.prompts)), ("quality", quality_file)):
                    texts = [r[config.prompt_field] for r in load_rows(path, config.prompt_field)]
                    X, info = featurize(texts, model, tokenizer, sae, max_length=config.max_length, cache_dir=cache,
                                        return_info=True)
                    save_csr(tmp / f"{name}.safetensors", X, {"max_length": str(info.max_length), "truncated": str(info.n_truncated)})
                    summary[name] = {"prompts": X.shape[0], "active_per_prompt": round(X.nnz / max(1, X.shape[0]), 1),
                                     "truncated": info.n_truncated}
        elif stage == "probes":
            difficulty = fit_probe_files(features / "pool.safetensors", config.prompts, outputs["pass_rates"], "difficulty",
                                         seed=config.seed)
            quality = fit_probe_files(features / "quality.safetensors", quality_file, quality_file, "quality", seed=config.seed)
            with atomic_folder(probes) as tmp:
                difficulty.save(tmp / "difficulty")
                quality.save(tmp / "quality")
            summary = {"difficulty": difficulty.metrics, "quality": quality.metrics}
        else:
            from saerl_zoo.difficulty import DifficultyProbe
            from saerl_zoo.quality import QualityProbe

            model, tokenizer, sae = model_and_sae()
            rows = load_rows(config.prompts, config.prompt_field)
            result = build_curriculum([r[config.prompt_field] for r in rows], model, tokenizer, sae, max_length=config.max_length,
                                      cache_dir=cache, difficulty_probe=DifficultyProbe.load(probes / "difficulty"),
                                      quality_probe=QualityProbe.load(probes / "quality"), batch_size=config.train_batch_size,
                                      stages=config.stages, num_steps=config.num_steps, seed=config.seed,
                                      provenance={"prompts": str(config.prompts)})
            with atomic_folder(outputs[stage]) as tmp:
                result.save(tmp / "curriculum")
                write_ordered_dataset(rows, result, tmp / "ordered.jsonl")
                write_report(result, tmp)
            summary = {"kept": int(result.keep.sum()), "prompts": len(result)}
        manifest.record(stage, config, time.time() - start, summary)
        echo(f"{stage}: done in {time.time() - start:.0f} s")
        if summary.get("note"):  # a labelling stage's warning (no signal, rollouts cut), also kept in prepare.json
            echo(f"warning: {summary['note']}")
    return manifest.data

