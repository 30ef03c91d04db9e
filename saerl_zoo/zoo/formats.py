"""On-disk SAE formats the zoo reads, all converted on load to a sae-lens `SAE`.

* sae-lens (`cfg.json` + `sae_weights.safetensors`): what saerl-zoo saves and
  publishes, so `sae_lens.SAE.load_from_disk(folder)` and
  `SAE.from_pretrained(repo_id, folder)` load it unchanged.
* EleutherAI sparsify (one folder per hookpoint, each with `cfg.json` +
  `sae.safetensors`; the run folder may hold a `config.json`): converted to a
  sae-lens `TopKSAE` that gives the same codes.
* sae-lens's own pretrained registry (`release`, `sae_id`): looked up in
  sae-lens's `pretrained_saes.yaml`; releases that sae-lens would load from a
  pickle file are refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from saerl_zoo.transfer.maps import CONFIG_NAME as STITCH_CONFIG_NAME
from saerl_zoo.transfer.maps import WEIGHTS_NAME as STITCH_WEIGHTS_NAME
from saerl_zoo.zoo.hub import refuse_pickles, safe_join, sae_lens_lookup
from saerl_zoo.zoo.integrity import check_catalog_files

SAE_LENS_FILES = ("cfg.json", "sae_weights.safetensors")
SPARSIFY_FILES = ("cfg.json", "sae.safetensors")
PROBE_FILES = ("probe.safetensors", "probe_config.json")
STITCH_FILES = (STITCH_WEIGHTS_NAME, STITCH_CONFIG_NAME)  # what StitchMap.save writes
# sae-lens converters that call torch.load / pickle (checked again at run time from their source)
_KNOWN_PICKLE_CONVERTERS = {"connor_rob_hook_z", "dictionary_learning_1", "deepseek_r1", "qwen_scope", "goodfire"}


def detect_format(folder: Path) -> str:
    """'sae-lens', 'sparsify', 'probe' or 'stitch' for an artifact folder; a clear error otherwise."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    names = {p.name for p in folder.iterdir()}
    if set(SAE_LENS_FILES) <= names:
        return "sae-lens"
    if set(SPARSIFY_FILES) <= names:
        return "sparsify"
    if set(PROBE_FILES) <= names:
        return "probe"
    if set(STITCH_FILES) <= names:
        return "stitch"
    hookpoints = sorted(p.name for p in folder.iterdir() if p.is_dir() and ({*SPARSIFY_FILES} <= {q.name for q in p.iterdir()} or {*SAE_LENS_FILES} <= {q.name for q in p.iterdir()}))
    if hookpoints:
        shown = ", ".join(hookpoints[:8]) + (", ..." if len(hookpoints) > 8 else "")
        raise ValueError(f"{folder} holds one SAE per hookpoint ({shown}); choose one with subfolder=")
    refuse_pickles(folder, "the SAE")
    raise ValueError(
        f"{folder} is not an SAE folder: expected sae-lens's cfg.json + sae_weights.safetensors "
        "or sparsify's cfg.json + sae.safetensors"
    )


def load_sae_lens_folder(folder: Path, device: str = "cpu", dtype: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """A sae-lens folder as sae-lens loads it: `overrides` are a registry release's `config_overrides`
    (applied to cfg.json before the SAE is built, as `SAE.from_pretrained` does), and a saved
    `activation_scaler.json` scaling factor is folded into the weights, as sae-lens's trainer folds it."""
    from sae_lens import SAE, SAEConfig
    from sae_lens.loading.pretrained_sae_loaders import sae_lens_disk_loader


    for name in SAE_LENS_FILES:
        safe_join(folder, name)
    check_catalog_files(folder)

    def converter(path: Any, device: str, cfg_overrides: dict[str, Any] | None = None) -> Any:
        cfg_dict, state = sae_lens_disk_loader(path, device, cfg_overrides={**(cfg_overrides or {}), **(overrides or {})})
        meta = cfg_dict.get("metadata")
        if isinstance(meta, dict):  # a sae-lens >= 6 cfg.json keeps hook and model kwargs under "metadata": override them there
            top = {f.name for f in dataclasses.fields(SAEConfig)}
            meta.update({k: v for k, v in (overrides or {}).items() if k not in top})
        return cfg_dict, state

    try:
        sae = SAE.load_from_disk(str(folder), device=device, dtype=dtype, converter=converter)
    except Exception as err:  # sae-lens raises many kinds on a damaged folder
        raise ValueError(f"could not load the sae-lens SAE in {folder}: {err}") from err
    scaler = folder / "activation_scaler.json"
    if sae.cfg.normalize_activations == "expected_average_only_in" and scaler.is_file():
        factor = _read_json(scaler).get("scaling_factor")
        if factor is not None:
            sae.fold_activation_norm_scaling_factor(float(factor))
    return sae


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt JSON in {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def sparsify_hook(hookpoint: str) -> tuple[str, int | None, str]:
    """sparsify hookpoints name a module of the base model (`layers.6`, `layers.6.mlp`); return (module, layer, site)."""
    match = re.fullmatch(r"(?:.*\.)?(?:layers|h|blocks)\.(\d+)(\.(mlp|self_attn|attn|attention))?", hookpoint)
    if match is None:
        return hookpoint, None, "resid_out"
    site = {None: "resid_out", "mlp": "mlp_out"}.get(match.group(3), "attn_out")
    return hookpoint, int(match.group(1)), site


def load_sparsify_folder(folder: Path, device: str = "cpu", dtype: str | None = None) -> Any:
    """Convert one sparsify hookpoint folder to a sae-lens `TopKSAE` with identical codes.

    sparsify encodes `topk(relu(W_enc (x - b_dec) + b_enc))` with `encoder.weight`
    (latents x d_in), `encoder.bias`, `W_dec` (latents x d_in) and `b_dec`; sae-lens's
    TopKSAE computes the same with `W_enc` = encoder.weight.T.
    """
    from safetensors.torch import load_file
    from sae_lens import TopKSAE, TopKSAEConfig


    check_catalog_files(folder)
    cfg = _read_json(safe_join(folder, "cfg.json"))
    where = f"sparsify SAE {folder}"
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise ValueError(f"{where} is a transcoder / has a skip connection; only plain SAEs are supported")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{where} uses activation {cfg.get('activation')!r}; only 'topk' converts to sae-lens")
    try:
        d_in = int(cfg["d_in"])
        d_sae = int(cfg.get("num_latents") or d_in * int(cfg["expansion_factor"]))
        k = int(cfg["k"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: cfg.json lacks d_in / num_latents (or expansion_factor) / k: {err}") from err
    try:
        state = load_file(str(safe_join(folder, "sae.safetensors")), device="cpu")
    except Exception as err:
        raise ValueError(f"{where}: unreadable sae.safetensors: {err}") from err
    try:
        enc_w = state["encoder.weight"]
        W_dec = state["W_dec"]
    except KeyError as err:
        raise ValueError(f"{where}: sae.safetensors has no {err}") from err
    b_enc = state.get("encoder.bias", torch.zeros(d_sae, dtype=enc_w.dtype))
    b_dec = state.get("b_dec", torch.zeros(d_in, dtype=enc_w.dtype))
    if tuple(enc_w.shape) != (d_sae, d_in) or tuple(W_dec.shape) != (d_sae, d_in) or tuple(b_dec.shape) != (d_in,) or tuple(b_enc.shape) != (d_sae,):
        raise ValueError(f"{where}: tensor shapes do not match d_in={d_in}, num_latents={d_sae}")
    run_cfg_path = folder.parent / "config.json"
    run_cfg = _read_json(run_cfg_path) if run_cfg_path.is_file() else {}
    hook_name, layer, site = sparsify_hook(folder.name)
    dtype = dtype or str(enc_w.dtype).removeprefix("torch.")
    sae_cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype=dtype, device=device, apply_b_dec_to_input=True)
    sae_cfg.metadata.hook_name = hook_name
    sae_cfg.metadata.model_name = run_cfg.get("model")
    sae_cfg.metadata.context_size = run_cfg.get("ctx_len")
    sae_cfg.metadata.dataset_path = run_cfg.get("dataset")
    sae_cfg.metadata.converted_from = "sparsify"
    sae_cfg.metadata.hook_site = site
    if layer is not None:
        sae_cfg.metadata.hook_layer = layer
    sae = TopKSAE(sae_cfg)
    sae.load_state_dict({"W_enc": enc_w.T.contiguous(), "b_enc": b_enc, "W_dec": W_dec.contiguous(), "b_dec": b_dec})
    from sae_lens.util import str_to_dtype

    return sae.to(device=device, dtype=str_to_dtype(dtype))


def load_folder(folder: Path, *, subfolder: str | None = None, device: str = "cpu", dtype: str | None = None) -> Any:
    """Load an SAE from a local folder in sae-lens or sparsify layout (never from pickle files)."""
    folder = safe_join(folder, subfolder or "")
    fmt = detect_format(folder)
    if fmt == "sae-lens":
        return load_sae_lens_folder(folder, device, dtype)
    if fmt == "sparsify":
        return load_sparsify_folder(folder, device, dtype)
    if fmt == "stitch":
        raise ValueError(f"{folder} holds a stitch map, not an SAE; use saerl_zoo.transfer.StitchMap.load (or load_sae(host_sae, for_model=...))")
    raise ValueError(f"{folder} holds a probe, not an SAE; use load_probe")


def save_sae(sae: Any, path: str | os.PathLike[str]) -> Path:
    """Save in sae-lens's on-disk format (cfg.json + sae_weights.safetensors), atomically per file."""
    import tempfile

    from saerl_zoo.storage import atomic_path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path, prefix=".save-") as tmp:
        weights, cfg = sae.save_model(tmp)
        for src in (weights, cfg):
            with atomic_path(path / Path(src).name) as dst:
                os.replace(src, dst)
    return path


# --------------------------------------------------------------------------- sae-lens registry


def pickle_converters() -> set[str]:
    """sae-lens converters that would unpickle a downloaded file."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS

    found = set(_KNOWN_PICKLE_CONVERTERS)
    for name, fn in NAMED_PRETRAINED_SAE_LOADERS.items():
        try:
            if "torch.load(" in inspect.getsource(fn) or "pickle" in inspect.getsource(fn):
                found.add(name)
        except (OSError, TypeError):
            pass
    return found


def load_sae_lens_release(release: str, sae_id: str, *, device: str = "cpu", dtype: str | None = None, force_download: bool = False) -> Any:
    """Load an SAE of sae-lens's registry; the sae-lens format goes through our safe snapshot path."""
    from saerl_zoo.zoo.hub import download_snapshot

    info = sae_lens_lookup(release, sae_id)
    if info["converter"] in pickle_converters():
        raise ValueError(
            f"sae-lens release {release!r} is stored as pickle files (converter {info['converter']!r}); "
            "saerl-zoo never loads pickle files because they can run code"
        )
    if info["converter"] != "sae_lens":
        from sae_lens import SAE

        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32", force_download=force_download)
    folder = download_snapshot(info["repo_id"], subfolder=info["path"], filenames=SAE_LENS_FILES, force_download=force_download)
    sae = load_sae_lens_folder(folder, device, dtype, overrides=info["config_overrides"])
    scale = info["norm_scaling_factor"]
    if sae.cfg.normalize_activations == "expected_average_only_in" and scale is not None:
        sae.fold_activation_norm_scaling_factor(scale)
    return sae
