"""The zoo's Python API: list, pull and load SAEs and probes by name, repo id or folder.

    from saerl_zoo.zoo import list_artifacts, load_sae, load_probe, pull
    sae = load_sae("saerl-tiny-math/sae")                 # catalog name (embedded: offline)
    sae = load_sae("org/repo", subfolder="model.layers.12")  # any Hub repo (sae-lens or sparsify layout)
    sae = load_sae("path/to/folder")                      # a local folder
    sae = load_sae("gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre")  # sae-lens's registry

Catalog entries are checked file by file against their sha256 before use; a
changed file raises `IntegrityError` and is not loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from saerl_zoo.errors import UserError
from saerl_zoo.zoo.hub import (
    IntegrityError,
    UnsafePathError,
    download_snapshot,
    safe_join,
    safe_relative,
    sae_lens_lookup,
    sha256_file,
    storage_folder,
    verify_files,
)
from saerl_zoo.zoo.integrity import check_catalog_files, local_copy, package_folder, repair_advice
from saerl_zoo.zoo.registry import (
    Artifact,
    Catalog,
    UnknownArtifactError,
    get_catalog,
    unknown_name_message,
)

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class VerificationError(UserError):
    """The SAE's L0 / explained variance on the reference text do not match its catalog entry."""


def _catalog(catalog: Catalog | None) -> Catalog:
    return catalog if catalog is not None else get_catalog()


def list_artifacts(kind: str | None = None, model: str | None = None, *, catalog: Catalog | None = None) -> list[Artifact]:
    """Catalog entries, optionally of one kind and for models whose id contains `model`."""
    return _catalog(catalog).filter(kind=kind, model=model)


def get_artifact(name: str, *, catalog: Catalog | None = None) -> Artifact:
    return _catalog(catalog).get(name)


# --------------------------------------------------------------------------- files


def pull(name: str | Artifact, *, force: bool = False, catalog: Catalog | None = None) -> Path:
    """Make a catalog artifact's files available locally and check every sha256; return its folder.

    Hub artifacts go into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE;
    with HF_HUB_OFFLINE=1 only the cache is read). Embedded artifacts are
    served from inside the package.
    """
    art = name if isinstance(name, Artifact) else _catalog(catalog).get(name)
    src = art.source
    where, advice = f"artifact {art.name!r}", repair_advice(art)
    if src.type in ("package", "local"):
        folder, within = local_copy(art)
        if not folder.is_dir():
            raise FileNotFoundError(f"{where}: {folder} is missing; {advice}")
        verify_files(folder, art.files, where=where, advice=advice, within=within)
        return folder
    if src.type == "hub":
        folder = download_snapshot(src.repo_id, revision=src.revision, subfolder=src.path, filenames=list(art.files), force_download=force)
        verify_files(folder, art.files, where=where, advice=advice, within=storage_folder(_snapshot_of(folder, src.path)))
        return folder
    # sae-lens registry entries: the files are sae-lens's business, only fetched here
    from saerl_zoo.zoo.formats import SAE_LENS_FILES

    info = sae_lens_lookup(src.release, src.sae_id)
    folder = download_snapshot(info["repo_id"], subfolder=info["path"], filenames=list(art.files) or SAE_LENS_FILES, force_download=force)
    if art.files:
        verify_files(folder, art.files, where=where, advice=advice, within=storage_folder(_snapshot_of(folder, info["path"])))
    return folder


def _snapshot_of(folder: Path, subfolder: str) -> Path:
    depth = len([p for p in subfolder.split("/") if p])
    return folder.parents[depth - 1] if depth else folder


# --------------------------------------------------------------------------- SAEs


def _is_sae(obj: Any) -> bool:
    try:
        from sae_lens import SAE
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, SAE)


def _refuse_empty_name(name: Any, caller: str) -> None:
    """An empty name would be read as the current folder, or fail deep inside a loader: refuse it first."""
    if isinstance(name, str) and not name.strip():
        raise ValueError(f"{caller} got an empty name; give a catalog name, a Hub repo id or a folder")


def load_sae(
    name_or_path: Any,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    sae_id: str | None = None,
    verify: bool = False,
    device: str = "cpu",
    dtype: str | None = None,
    force_download: bool = False,
    catalog: Catalog | None = None,
    for_model: str | None = None,
    force_stitch: bool = False,
) -> Any:
    """A sae-lens `SAE` from a catalog name, a local folder, a Hub repo id or sae-lens's registry.

    - catalog name (`saerl-tiny-math/sae`): files checked against their sha256;
      the entry's activation normalisation is folded into the weights, and its
      hook / preprocessing are written into `sae.cfg.metadata`;
    - local folder (`Path` or an existing directory), in sae-lens or sparsify
      layout, with `subfolder` for one hookpoint of a multi-SAE folder;
    - Hub repo id (`org/name`), with `subfolder` and `revision`, fetched
      through the Hugging Face cache (safetensors and JSON only);
    - sae-lens registry: `load_sae(release, sae_id=...)` or `"sae-lens:RELEASE/ID"`.

    Whatever the route, the SAE's recorded hook is parsed once here and carried
    on the SAE (`saerl_zoo.hooks.attach`): every reader places the same tensor,
    and a hook that cannot be placed exactly is refused when read.

    `verify=True` (catalog entries) runs the fixed reference text through the
    host model and the SAE and raises `VerificationError` when L0 or explained
    variance are off the entry's metrics: a wrong hook, architecture or
    normalisation shows up there instead of silently.

    `for_model` (a catalog SAE name only) asks for the SAE as read from another
    model: when the catalog has a `stitch` entry from that model into the SAE's
    host, the result is a `saerl_zoo.transfer.StitchedSAE` that hooks
    `for_model` at the stitch's layer and maps its activations into the host's
    residual stream before encoding (it works with `featurize` as any SAE).
    Featurizing with it refuses a model other than the one the stitch was
    fitted on (width, block, fingerprint); `force_stitch=True` skips the
    fingerprint check, for a model you know to be the same or close enough.
    """
    from saerl_zoo.hooks import attach

    return attach(_load_sae(name_or_path, subfolder=subfolder, revision=revision, sae_id=sae_id, verify=verify, device=device, dtype=dtype,
                            force_download=force_download, catalog=catalog, for_model=for_model,
                            force_stitch=force_stitch))


def _load_sae(name_or_path: Any, *, subfolder: str | None, revision: str | None, sae_id: str | None, verify: bool, device: str,
              dtype: str | None, force_download: bool, catalog: Catalog | None, for_model: str | None,
              force_stitch: bool) -> Any:
    from saerl_zoo.zoo import formats

    _refuse_empty_name(name_or_path, "load_sae")
    if _is_sae(name_or_path) or _is_stitched(name_or_path):
        return name_or_path
    if for_model is not None:
        return _load_for_model(name_or_path, for_model, device=device, dtype=dtype, verify=verify,
                               force_download=force_download, cat=_catalog(catalog), force_stitch=force_stitch)
    if subfolder is not None:
        safe_relative(subfolder, "subfolder")
    cat = _catalog(catalog)
    if isinstance(name_or_path, os.PathLike):
        return formats.load_folder(Path(name_or_path), subfolder=subfolder, device=device, dtype=dtype)
    if not isinstance(name_or_path, str):
        raise TypeError(f"load_sae takes a name, repo id or folder, not {type(name_or_path).__name__}")
    name = name_or_path
    if sae_id is not None:
        return formats.load_sae_lens_release(name, sae_id, device=device, dtype=dtype, force_download=force_download)
    if name.startswith("sae-lens:"):
        release, _, sid = name.removeprefix("sae-lens:").partition("/")
        if not sid:
            raise ValueError(f"{name!r}: write sae-lens:RELEASE/SAE_ID")
        return formats.load_sae_lens_release(release, sid, device=device, dtype=dtype, force_download=force_download)
    if name in cat:
        art = cat.get(name)
        if art.kind != "sae":
            raise ValueError(f"{name!r} is a {art.kind}, not an SAE; use load_probe" if "probe" in art.kind else f"{name!r} is a {art.kind}, not an SAE")
        return _load_catalog_sae(art, device=device, dtype=dtype, verify=verify, force_download=force_download)
    if Path(name).expanduser().is_dir():
        return formats.load_folder(Path(name).expanduser(), subfolder=subfolder, device=device, dtype=dtype)
    if _REPO_ID_RE.match(name) and not name.startswith("."):
        with _suggest_on_failure(name, cat):
            folder = download_snapshot(name, revision=revision, subfolder=subfolder or "", force_download=force_download)
        return formats.load_folder(folder, device=device, dtype=dtype)
    if ".." in name.split("/") or name.startswith("/") or "\\" in name:
        raise UnsafePathError(f"{name!r} is not a catalog name, Hub repo id or existing folder; refusing a path that leaves its folder")
    raise UnknownArtifactError(unknown_name_message(name, cat.names()))


def _is_stitched(obj: Any) -> bool:
    from saerl_zoo.transfer.sae import StitchedSAE

    return isinstance(obj, StitchedSAE)


def stitches_for(sae_name: str, model_id: str | None = None, *, catalog: Catalog | None = None) -> list[Artifact]:
    """Catalog stitches into the SAE `sae_name` (from `model_id` only, if given), best held-out explained variance first."""
    found = [a for a in _catalog(catalog).filter(kind="stitch") if a.features == sae_name and (model_id is None or a.model.id == model_id)]
    return sorted(found, key=lambda a: (-float(a.metrics.get("explained_variance", float("-inf"))), a.name))


def _load_for_model(name: Any, for_model: str, *, device: str, dtype: str | None, verify: bool, force_download: bool, cat: Catalog,
                    force_stitch: bool) -> Any:
    """The catalog SAE `name` for use on `for_model`: itself on its own host, else through the catalog's best stitch."""
    from saerl_zoo.transfer.maps import StitchMap
    from saerl_zoo.transfer.sae import StitchedSAE

    if not isinstance(name, str) or name not in cat or cat.get(name).kind != "sae":
        raise ValueError(f"for_model= needs the catalog name of an SAE (stitches are looked up in the catalog), not {name!r}; "
                         "wrap a local stitch with saerl_zoo.transfer.StitchedSAE(sae, StitchMap.load(folder))")
    art = cat.get(name)
    sae = _load_catalog_sae(art, device=device, dtype=dtype, verify=verify, force_download=force_download)
    if for_model == art.model.id:
        return sae
    found = stitches_for(name, for_model, catalog=cat)
    if not found:
        others = sorted({a.model.id for a in stitches_for(name, catalog=cat)})
        known = f"; it has stitches from {', '.join(others)}" if others else ""
        raise ValueError(
            f"{name!r} reads {art.model.id}, and the catalog has no stitch from {for_model} into it{known}. "
            f"Fit one with `saerl-zoo transfer fit --sae {name} --to {for_model} --corpus FILE`, or score the prompts on the "
            f"SAE's host and train {for_model} on that curriculum (scorer transfer)"
        )
    stitch_art = found[0]
    stitch = StitchMap.load(pull(stitch_art, force=force_download))
    return StitchedSAE(sae, stitch, name=stitch_art.name, force=force_stitch).to(device)


@contextlib.contextmanager
def _suggest_on_failure(name: str, cat: Catalog):
    """A repo-id-like name that cannot be fetched but is close to catalog names: say both."""
    import difflib

    try:
        yield
    except (UnsafePathError, IntegrityError):
        raise
    except Exception as err:
        if difflib.get_close_matches(name, cat.names(), n=1, cutoff=0.5):
            raise UnknownArtifactError(
                f"{unknown_name_message(name, cat.names())}; as a Hub repo id it could not be fetched either "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err
        raise


def _load_catalog_sae(art: Artifact, *, device: str, dtype: str | None, verify: bool, force_download: bool) -> Any:
    from saerl_zoo.zoo import formats

    if art.source.type == "sae-lens" and not art.files:
        sae = formats.load_sae_lens_release(art.source.release, art.source.sae_id, device=device, dtype=dtype, force_download=force_download)
    else:
        folder = pull(art, force=force_download)
        sae = formats.load_folder(folder, device=device, dtype=dtype)
    spec = art.sae
    if spec is not None and (int(sae.cfg.d_in) != spec.d_in or int(sae.cfg.d_sae) != spec.d_sae):
        raise ValueError(
            f"artifact {art.name!r}: the weights are d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae} but the catalog says "
            f"d_in={spec.d_in}, d_sae={spec.d_sae}"
        )
    scale = art.preprocessing.normalization_scale
    if scale != 1.0:
        sae.fold_activation_norm_scaling_factor(scale)  # the SAE now takes raw activations
    meta = sae.cfg.metadata
    meta.hook_name = art.hook.module
    meta.hook_site = art.hook.site
    meta.hook_layer = art.hook.layer
    meta.model_name = art.model.id
    meta.zoo_name = art.name
    meta.zoo_preprocessing = {
        "context_length": art.preprocessing.context_length,
        "special_tokens": art.preprocessing.special_tokens,
        "outlier_norm_ratio": art.preprocessing.outlier_norm_ratio,
        "normalization_scale_folded": scale,
    }
    if verify:
        check_sae(sae, art)
    return sae


# --------------------------------------------------------------------------- probes


def load_probe(name_or_path: Any, *, subfolder: str | None = None, revision: str | None = None, force_download: bool = False, catalog: Catalog | None = None) -> Any:
    """A `DifficultyProbe` or `QualityProbe` from a catalog name, a local folder or a Hub repo id."""
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.probe import CONFIG_NAME, WEIGHTS_NAME, LinearProbe
    from saerl_zoo.quality import QualityProbe
    from saerl_zoo.storage import read_json

    _refuse_empty_name(name_or_path, "load_probe")
    if isinstance(name_or_path, LinearProbe):
        return name_or_path
    classes = {"difficulty": DifficultyProbe, "quality": QualityProbe}
    cat = _catalog(catalog)
    name = name_or_path
    if isinstance(name, str) and name in cat:
        art = cat.get(name)
        if art.kind not in ("difficulty-probe", "quality-probe"):
            raise ValueError(f"{name!r} is a {art.kind}, not a probe" + ("; use load_sae" if art.kind == "sae" else ""))
        folder = pull(art, force=force_download)
        return classes[art.kind.removesuffix("-probe")].load(folder)
    if isinstance(name, os.PathLike) or (isinstance(name, str) and Path(name).expanduser().is_dir()):
        folder = safe_join(Path(name).expanduser(), subfolder or "")
    elif isinstance(name, str) and _REPO_ID_RE.match(name):
        with _suggest_on_failure(name, cat):
            folder = download_snapshot(name, revision=revision, subfolder=subfolder or "", filenames=[WEIGHTS_NAME, CONFIG_NAME], force_download=force_download)
    elif isinstance(name, str):
        if ".." in name.split("/") or name.startswith("/"):
            raise UnsafePathError(f"{name!r} is not a catalog name, Hub repo id or existing folder; refusing a path that leaves its folder")
        raise UnknownArtifactError(unknown_name_message(name, cat.names()))
    else:
        raise TypeError(f"load_probe takes a name, repo id or folder, not {type(name).__name__}")
    check_catalog_files(folder)  # before its config is read to pick the class
    kind = read_json(folder / CONFIG_NAME).get("probe")
    if kind not in classes:
        raise ValueError(f"{folder / CONFIG_NAME} names probe kind {kind!r}, not difficulty or quality")
    return classes[kind].load(folder)


# --------------------------------------------------------------------------- verification

REFERENCE_TEXTS = (
    "What is 17 + 25? Answer with a number.",
    "Compute 3 * 14 - 9.",
    "A box holds 12 red and 8 blue marbles. How many marbles are in the box?",
    "Simplify the fraction 18/24 to lowest terms.",
    "What is the greatest common divisor of 84 and 36?",
    "Find the next number in the sequence 3, 6, 12, 24, ?",
    "The quick brown fox jumps over the lazy dog, then rests in the shade of an old oak tree.",
    "def add(a, b):\n    return a + b",
)
"""The fixed reference text of `verify=True`: short math prompts, prose and code."""

L0_REL_TOL, EV_ABS_TOL = 0.10, 0.05  # against metrics.reference (measured on REFERENCE_TEXTS)
L0_FACTOR_LOOSE, EV_ABS_LOOSE = 2.0, 0.25  # against the eval-set metrics when no reference metrics exist


def reference_activations(model: Any, tokenizer: Any, art: Artifact, sae: Any, texts: tuple[str, ...] = REFERENCE_TEXTS) -> torch.Tensor:
    """The SAE's hook point (resolved as featurize resolves it) on the reference texts, after the SAE's token policies
    (`sae_preprocessing`, as featurize applies them; tokens x d)."""
    from saerl_zoo.hooks import capture, resolve
    from saerl_zoo.models import special_token_mask
    from saerl_zoo.preprocessing import sae_preprocessing

    pre = sae_preprocessing(sae)
    point = resolve(model, sae)
    rows = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=pre.token_limit(art.preprocessing.context_length),
                        add_special_tokens=pre.prepend_bos)
        with torch.no_grad():
            acts = capture(model, point, enc["input_ids"], enc["attention_mask"], int(sae.cfg.d_in))[0]
        keep = enc["attention_mask"][0].bool()
        if pre.special_tokens == "drop":
            keep &= ~torch.tensor(special_token_mask(tokenizer, enc["input_ids"].tolist())[0], dtype=torch.bool)
        rows.append(acts[keep])
    acts = torch.cat(rows).float()
    if pre.outlier_norm_ratio is not None and len(acts):
        norms = acts.norm(dim=-1)
        acts = acts[norms <= pre.outlier_norm_ratio * norms.median()]
    return acts


@torch.no_grad()
def sae_metrics(sae: Any, acts: torch.Tensor) -> dict[str, float]:
    """L0, explained variance, MSE and dead fraction (latents that never fire on
    these activations) of an SAE on activations (tokens x d_in)."""
    acts = acts.to(sae.W_enc.device, sae.W_enc.dtype)
    feats = sae.encode(acts)
    recon = sae.decode(feats)
    resid = ((acts - recon) ** 2).sum(-1)
    total = ((acts - acts.mean(0)) ** 2).sum(-1)
    return {
        "l0": float((feats > 0).float().sum(-1).mean()),
        "explained_variance": float(1 - resid.sum() / total.sum()),
        "mse": float(resid.mean() / acts.shape[1]),
        "dead_fraction": float(1 - (feats > 0).any(0).float().mean()),
        "n_tokens": int(acts.shape[0]),
        "d_sae": int(feats.shape[1]),
    }


def load_host_model(art: Artifact, device: str = "cpu") -> tuple[Any, Any]:
    from saerl_zoo.models import load_model

    if art.model.package_path is not None:
        return load_model(package_folder(art.model.package_path), device=device)
    return load_model(art.model.id, revision=art.model.revision, device=device)


def _tokenizer_file(art: Artifact) -> Path | None:
    if art.model.package_path is not None:
        path = package_folder(art.model.package_path) / "tokenizer.json"
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(art.model.id, "tokenizer.json", revision=art.model.revision))
    except Exception:
        return None


def reference_metrics(sae: Any, art: Artifact, model: Any = None, tokenizer: Any = None) -> dict[str, float]:
    """L0 / explained variance of the SAE on the fixed reference text (what `metrics.reference` records)."""
    if model is None:
        model, tokenizer = load_host_model(art, device=str(sae.W_enc.device))
    model.eval()
    m = sae_metrics(sae, reference_activations(model, tokenizer, art, sae))
    return {"l0": round(m["l0"], 3), "explained_variance": round(m["explained_variance"], 4), "n_tokens": m["n_tokens"]}


def check_sae(sae: Any, art: Artifact, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Run the reference text through host model + SAE; raise `VerificationError` if off the catalog metrics."""
    problems = []
    expected_tok = art.preprocessing.tokenizer_sha256
    tok_file = _tokenizer_file(art) if expected_tok else None
    if expected_tok and tok_file is not None and sha256_file(tok_file) != expected_tok:
        problems.append(f"the host tokenizer ({tok_file}) is not the one the SAE was trained with (tokenizer sha256 differs)")
    got = reference_metrics(sae, art, model, tokenizer)
    ref = art.metrics.get("reference")
    if isinstance(ref, dict) and "l0" in ref and "explained_variance" in ref:
        want, strict = ref, True
        l0_ok = abs(got["l0"] - want["l0"]) <= L0_REL_TOL * max(want["l0"], 1.0) + 0.5
        ev_ok = abs(got["explained_variance"] - want["explained_variance"]) <= EV_ABS_TOL
    else:
        want, strict = {"l0": art.metrics["l0"], "explained_variance": art.metrics["explained_variance"]}, False
        l0_ok = want["l0"] / L0_FACTOR_LOOSE <= got["l0"] <= want["l0"] * L0_FACTOR_LOOSE
        ev_ok = got["explained_variance"] >= want["explained_variance"] - EV_ABS_LOOSE
    if not l0_ok:
        problems.append(f"L0 on the reference text is {got['l0']:.2f}, expected {want['l0']:.2f}")
    if not ev_ok:
        problems.append(f"explained variance on the reference text is {got['explained_variance']:.3f}, expected {want['explained_variance']:.3f}")
    report = {"name": art.name, "measured": got, "expected": dict(want), "against": "reference" if strict else "eval-set", "ok": not problems}
    if problems:
        raise VerificationError(
            f"artifact {art.name!r} failed verification on the reference text: {'; '.join(problems)}. "
            "Check the host model and revision, the hook (module and site), the layer and the activation normalisation."
        )
    return report


def verify_cache(names: list[str] | None = None, *, catalog: Catalog | None = None) -> list[dict[str, str]]:
    """Re-hash the local copies (package or HF cache) of catalog artifacts; nothing is downloaded.

    Each row: name, status ('ok', 'not cached', 'MISMATCH', 'missing file', 'no sha256'), detail, and
    advice (how to get a clean copy).
    """
    cat = _catalog(catalog)
    arts = [cat.get(n) for n in names] if names else list(cat.filter())
    rows = []
    for art in arts:
        row = {"name": art.name, "advice": repair_advice(art)}
        if not art.files:
            rows.append({**row, "status": "no sha256", "detail": "the catalog lists no file hashes"})
            continue
        copy = local_copy(art)
        if copy is None:
            src = art.source
            where = f"{src.repo_id}@{src.revision or 'main'}" if src.type == "hub" else f"sae-lens:{src.release}/{src.sae_id}"
            rows.append({**row, "status": "not cached", "detail": where})
            continue
        folder, within = copy
        try:
            verify_files(folder, art.files, where=f"artifact {art.name!r}", advice=row["advice"], within=within)
            rows.append({**row, "status": "ok", "detail": str(folder)})
        except IntegrityError as err:
            rows.append({**row, "status": "MISMATCH", "detail": str(err)})
        except FileNotFoundError as err:
            rows.append({**row, "status": "missing file", "detail": str(err)})
    return rows
