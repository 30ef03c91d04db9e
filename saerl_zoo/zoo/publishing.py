"""Publishing: build a Hub repo folder (weights, configs, model card) and upload it.

`publish(path, repo_id)` takes a catalog name or a local folder (sae-lens or
sparsify SAE, a probe, or a stitch map), writes the exact folder that goes to the Hub:

    README.md                 model card (YAML metadata + text from a template in cards/)
    <path_in_repo>/cfg.json   SAE in sae-lens format (SAE.from_pretrained(repo_id, path_in_repo) loads it)
    <path_in_repo>/sae_weights.safetensors
    (or probe.safetensors + probe_config.json for a probe,
     stitch.safetensors + stitch_config.json for a stitch)

and uploads it with `create_repo` + `upload_folder` (one commit), unless
`dry_run`. The catalog entry (sha256 of every file; the commit as revision
after a real upload) is returned and, with `catalog=`, written into that file.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from saerl_zoo.zoo.hub import hash_folder, safe_join, safe_relative
from saerl_zoo.zoo.registry import Artifact, upsert_entry, validate_entry

CARDS_DIR = Path(__file__).resolve().parents[2] / "cards"
TEMPLATES = {"sae": "templates/sae.md", "difficulty-probe": "templates/probe.md", "quality-probe": "templates/probe.md", "stitch": "templates/stitch.md"}
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
# An SAE, probe or stitch reads a model's activations and is useless without it, like an adapter;
# declaring it keeps the Hub from inferring (and listing) the artifact as a fine-tune of the LLM.
BASE_MODEL_RELATION = "adapter"


@dataclasses.dataclass
class PublishResult:
    folder: Path  # the exact folder uploaded (or that would be, in a dry run)
    repo_id: str
    entry: Artifact
    operations: list[str]
    commit_url: str | None = None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _derive_entry(folder: Path, fmt: str, sae: Any, features: str | None = None) -> dict[str, Any]:
    """What a folder says about itself (sae-lens metadata, probe or stitch config).

    `features` (a stitch only) is the host SAE's catalog name when the entry
    overrides the one recorded in the stitch config, so the description names it too.
    """
    from saerl_zoo.hooks import layer_from_hook_name
    from saerl_zoo.preprocessing import sae_preprocessing
    from saerl_zoo.storage import read_json

    if fmt == "stitch":
        from saerl_zoo.transfer.maps import StitchMap
        from saerl_zoo.transfer.register import stitch_fields

        return stitch_fields(StitchMap.load(folder).config, sae_name=features)
    if fmt == "probe":
        from saerl_zoo.probe import CONFIG_NAME, ProbeConfig

        cfg = ProbeConfig(**read_json(folder / CONFIG_NAME))  # read as loading reads it (older files: diagnostics leave metrics)
        return {
            "kind": f"{cfg.probe}-probe",
            "metrics": {"heldout": cfg.metrics, "labels": cfg.target, "n_train": cfg.n_train, "n_heldout": cfg.n_heldout},
            "training": {"estimator": cfg.estimator, "hyperparameters": cfg.hyperparameters, "seed": cfg.seed},
        }
    cfg, meta = sae.cfg, sae.cfg.metadata
    hook = meta.get("hook_name")
    out: dict[str, Any] = {
        "kind": "sae",
        "sae": {"architecture": cfg.architecture(), "d_in": int(cfg.d_in), "d_sae": int(cfg.d_sae), **({"k": int(cfg.k)} if hasattr(cfg, "k") else {})},
        "preprocessing": {"normalization_scale": 1.0},
    }
    if hook:
        out["hook"] = {"module": hook, "site": meta.get("hook_site") or "resid_out"}
        layer = layer_from_hook_name(hook)
        if layer is not None:
            out["hook"]["layer"] = layer
    if meta.get("model_name"):
        out["model"] = {"id": meta.get("model_name")}
    pre = sae_preprocessing(sae)  # what featurize / verify / transfer will apply, read where they read it
    out["preprocessing"].update({"special_tokens": pre.special_tokens, "outlier_norm_ratio": pre.outlier_norm_ratio})
    if pre.context_length is not None:
        out["preprocessing"]["context_length"] = pre.context_length
    return out


def _fields_of_sae(features: str, cat: Any, catalog: str | Path | None) -> dict[str, Any]:
    """The model, hook and preprocessing of the SAE `features` names, which a probe on its codes shares: from the
    catalog file being written (where its SAE was just published), else the active catalog; {} when neither knows it."""
    from saerl_zoo.zoo.registry import read_catalog_file

    known = {a.name: a for a in read_catalog_file(catalog)[0]} if catalog is not None and Path(catalog).is_file() else {}
    sae = known.get(features) or (cat.get(features) if features in cat else None)
    if sae is None:
        return {}
    return {key: value for key, value in sae.to_dict().items() if key in ("model", "hook", "preprocessing")}


def _model_index(art: Artifact) -> list[Any]:
    from huggingface_hub import EvalResult

    m = art.metrics
    if art.kind == "sae":
        common = dict(task_type="feature-extraction", task_name="SAE reconstruction", dataset_type="saerl-zoo-eval", dataset_name=m["eval_set"][:120])
        return [EvalResult(metric_type=key, metric_name=label, metric_value=float(m[key]), **common)
                for key, label in (("l0", "L0"), ("explained_variance", "Explained variance"), ("dead_fraction", "Dead-feature fraction"))]
    if art.kind == "stitch":
        common = dict(task_type="feature-extraction", task_name="Stitch map (held-out)", dataset_type="saerl-zoo-stitch-corpus",
                      dataset_name=m.get("eval_set", "held-out texts")[:120])
        return [EvalResult(metric_type=key, metric_name=label, metric_value=float(m[key]), **common)
                for key, label in (("explained_variance", "Explained variance of the host's activations"),
                                   ("identity_explained_variance", "Identity-map explained variance (baseline)"))
                if isinstance(m.get(key), (int, float))]
    task = "text-classification" if art.kind == "quality-probe" else "tabular-regression"
    return [EvalResult(task_type=task, task_name=f"{art.kind} (held-out)", dataset_type="saerl-zoo-labels", dataset_name=m["labels"][:120],
                       metric_type=key, metric_name=f"held-out {key}", metric_value=float(v))
            for key, v in m["heldout"].items() if isinstance(v, (int, float)) and v == v]


def card_data(art: Artifact, repo_id: str | None = None) -> Any:
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        library_name="saelens" if art.kind == "sae" else "saerl-zoo",
        license=art.license,
        tags=sorted({"saerl-zoo", "sparse-autoencoder", "interpretability", art.kind, *(["saelens"] if art.kind == "sae" else []), *art.tags}),
        base_model=art.model.id,
        model_name=art.name,
        eval_results=_model_index(art),
        base_model_relation=BASE_MODEL_RELATION,
    )
    return data


def render_card(art: Artifact, repo_id: str | None = None, *, template_path: str | Path | None = None) -> Any:
    """The model card (huggingface_hub.ModelCard) of an entry, from its template in cards/templates/."""
    from huggingface_hub import ModelCard

    import yaml

    template = Path(template_path) if template_path is not None else CARDS_DIR / TEMPLATES[art.kind]
    if not template.is_file():
        raise FileNotFoundError(f"card template {template} not found (cards/ ships with the source repository)")
    entry = art.to_dict()
    return ModelCard.from_template(
        card_data(art, repo_id),
        template_path=str(template),
        art=entry,
        repo_id=repo_id,
        path_in_repo=art.source.path if repo_id and art.source.repo_id == repo_id else None,
        entry_yaml=yaml.safe_dump(entry, sort_keys=False, width=100).rstrip(),
    )


def validate_card(card_or_text: Any) -> Any:
    """Offline checks of a card's metadata (the Hub's own check needs the network)."""
    from huggingface_hub import ModelCard, ModelCardData

    card = card_or_text if not isinstance(card_or_text, (str, Path)) else ModelCard(Path(card_or_text).read_text() if isinstance(card_or_text, Path) else card_or_text)
    data = card.data.to_dict()
    ModelCardData(**data)  # model-index must parse (raises otherwise)
    for key in ("library_name", "license", "base_model", "tags"):
        if not data.get(key):
            raise ValueError(f"model card metadata lacks {key!r}")
    if data.get("base_model_relation") not in BASE_MODEL_RELATIONS:
        raise ValueError(f"base_model_relation {data.get('base_model_relation')!r} is not one of {BASE_MODEL_RELATIONS}")
    if not data.get("model-index"):
        raise ValueError("model card metadata has no model-index (metrics)")
    return card


def publish(
    path: str | Path,
    repo_id: str,
    *,
    entry: dict[str, Any] | None = None,
    name: str | None = None,
    path_in_repo: str | None = None,
    dry_run: bool = False,
    out_dir: str | Path | None = None,
    commit_message: str | None = None,
    private: bool = False,
    token: str | None = None,
    catalog: str | Path | None = None,
    template_path: str | Path | None = None,
    reference: bool = True,
    echo: Any = print,
) -> PublishResult:
    """Build the Hub repo folder for an artifact and upload it (or, with `dry_run`, only write it).

    `path` is a catalog name or a local folder. `entry` gives (or overrides) catalog
    fields the folder cannot tell: model id/revision, hook site, license, metrics,
    preprocessing, training, limitations... Missing ones are reported by name.
    """
    from saerl_zoo.zoo import formats
    from saerl_zoo.zoo.api import get_catalog, pull

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id {repo_id!r} must be ORG/NAME")
    cat = get_catalog()
    base: dict[str, Any] = {}
    if isinstance(path, str) and path in cat:
        known = cat.get(path)
        base = known.to_dict()
        src_folder = pull(known)
    else:
        src_folder = Path(path)
        if not src_folder.is_dir():
            raise FileNotFoundError(f"{path} is neither a catalog name nor a folder")
    fmt = formats.detect_format(src_folder)
    sae = formats.load_folder(src_folder) if fmt in ("sae-lens", "sparsify") else None
    features = (entry or {}).get("features") or base.get("features")
    derived = _derive_entry(src_folder, fmt, sae, features)
    if fmt == "probe" and features:
        derived = _deep_merge(derived, _fields_of_sae(features, cat, catalog))
    raw = _deep_merge(_deep_merge(derived, base), entry or {})
    raw["name"] = name or raw.get("name") or repo_id.split("/")[1]
    kind = raw.get("kind")
    default_sub = raw.get("hook", {}).get("module", "sae") if kind == "sae" else ""
    sub = safe_relative(path_in_repo if path_in_repo is not None else default_sub, "path_in_repo")
    raw.setdefault("license", "apache-2.0")
    raw.setdefault("description", f"{kind} published with saerl-zoo")

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="saerl-zoo-publish-"))
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; publish writes the exact repo folder there")
    out.mkdir(parents=True, exist_ok=True)
    target = safe_join(out, sub) if sub else out
    copied = {"probe": formats.PROBE_FILES, "stitch": formats.STITCH_FILES}.get(fmt)
    if copied is not None:  # probes and stitches are published byte for byte; SAEs are re-saved in sae-lens format
        target.mkdir(parents=True, exist_ok=True)
        for fname in copied:
            shutil.copy2(safe_join(src_folder, fname), target / fname)
    else:
        formats.save_sae(sae, target)
    raw["files"] = hash_folder(target)
    raw["source"] = {"type": "hub", "format": fmt if copied is not None else "sae-lens", "repo_id": repo_id, "revision": "main", "path": sub}
    raw.pop("card", None)
    art = validate_entry(raw, f"publish {repo_id}")
    if art.kind == "sae" and reference and "reference" not in art.metrics:
        try:
            from saerl_zoo.zoo.api import reference_metrics

            art.metrics["reference"] = reference_metrics(formats.load_folder(target), art)
        except Exception as err:  # the host model may be unavailable offline: verify then uses the eval metrics
            echo(f"note: reference metrics not measured ({type(err).__name__}: {err})")
    card = render_card(art, repo_id, template_path=template_path)
    validate_card(card)
    card.save(str(out / "README.md"))

    message = commit_message or f"saerl-zoo: publish {art.name} ({art.kind})"
    ops = [f"create_repo(repo_id={repo_id!r}, repo_type='model', private={private}, exist_ok=True)",
           f"upload_folder(repo_id={repo_id!r}, folder_path={str(out)!r}, commit_message={message!r})"]
    for rel, digest in sorted(hash_folder(out).items()):
        ops.append(f"  add {rel}  sha256={digest}  {(out / rel).stat().st_size} bytes")
    result = PublishResult(folder=out, repo_id=repo_id, entry=art, operations=ops)
    if dry_run:
        echo(f"dry run: wrote {out}; nothing uploaded. Would run:")
        for op in ops:
            echo(f"  {op}")
    else:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(out), commit_message=message, repo_type="model")
        commit = getattr(info, "oid", None)
        if commit:
            art.source.revision = commit  # pin the entry to the uploaded commit
        result.commit_url = getattr(info, "commit_url", None)
        echo(f"uploaded {repo_id} ({result.commit_url or commit})")
    if catalog is not None:
        upsert_entry(catalog, art)
        echo(f"catalog entry {art.name!r} written to {catalog}")
    return result
