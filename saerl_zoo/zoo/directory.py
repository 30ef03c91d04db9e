"""Every SAE saerl-zoo can name, as rows: the zoo's catalog and sae-lens's pretrained directory, offline.

sae-lens ships its directory (`pretrained_saes.yaml`, ~170 releases, ~14k SAE
ids) inside its wheel. It names each SAE's host model and Hub folder but not,
for most releases, the hook: that is written in the SAE's own config, which
sae-lens's per-format config getter reads (often from a downloaded file). This
module lists the directory without downloading anything:

* formats whose sae-lens config getter reads no file (gemma_2, qwen_scope,
  deepseek_r1, goodfire, ...; checked on the installed sae-lens's source) are
  asked for the config itself, so hook, width and transcoder-ness are sae-lens's;
* the other formats' hooks follow the naming conventions their getters apply
  (`_CONVENTIONS`, each a mirror of one getter); an id whose hook they cannot
  tell gets no hook (None) rather than a guess.

The hook shown is for finding an SAE; loading it (`load_sae`) re-reads the hook
the SAE records and parses it through `saerl_zoo.hooks`, so a listing can never
make an SAE read the wrong tensor. Every known hook is parsed here with the same
`hooks.parse_hook`, and a row the loader would refuse (pickle files, a
transcoder, a hook the resolver cannot place) carries the reason in `problem`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from saerl_zoo.hooks import HookError, block_path_layer, parse_hook

Source = Literal["zoo", "sae-lens"]
SOURCES: tuple[str, ...] = ("zoo", "sae-lens")
SAE_LENS_PREFIX = "sae-lens:"
# The zoo catalog's sites, in the resolver's words: a decoder block's output is the residual stream after it.
_CATALOG_SITES = {"resid_out": "resid_post", "resid_in": "resid_pre", "mlp_out": "mlp_out", "attn_out": "attn_out"}
_DOWNLOADS = ("hf_hub_download(", "snapshot_download(", "get_safetensors_tensor_shapes(", "_get_with_rate_limit_retry(")


@dataclasses.dataclass(frozen=True)
class SaeRow:
    """One artifact as `saerl-zoo list` / `find` show it; for an SAE, `name` is what `load_sae` takes."""

    name: str
    kind: str  # sae, or (zoo only) difficulty-probe / quality-probe / stitch
    model: str  # the host model id as its source records it
    hook: str | None  # hook name (TransformerLens) or module:site (catalog); None: only the SAE's files say
    site: str | None  # the resolver's site (resid_post, mlp_out, z, ...) when the hook is readable
    layer: int | None
    d_sae: int | None
    source: Source
    where: str  # Hub repo (or the package) holding the files
    release: str | None = None  # sae-lens release
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # catalog metrics; sae-lens: its expected l0 / explained_variance
    refused: Literal["pickle", "transcoder", "hook"] | None = None  # why load_sae would refuse it (None: loadable as far as known)
    problem: str | None = None  # the refusal's one-line reason

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- sae-lens's hooks, offline


def _layer(pattern: str, text: str) -> int | None:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else None


def _gemma_3(sae_id: str, path: str) -> tuple[str | None, bool]:
    """sae-lens get_gemma_3_config_from_hf: the folder's prefix names the site."""
    layer = _layer(r"layer_(\d+)", path)
    if layer is None:
        return None, False
    for key, hook in (("resid_post", "hook_resid_post"), ("attn_out", "attn.hook_z"), ("mlp_out", "hook_mlp_out")):
        if key in path:
            return f"blocks.{layer}.{hook}", False
    if "transcoder" in path or "clt" in path:
        return f"blocks.{layer}.hook_mlp_in", True
    return None, False


def _llama_scope(sae_id: str, path: str) -> tuple[str | None, bool]:
    """Llama Scope folders `...-L{layer}{R|A|M}-...` / `.../L{layer}R`: residual, attention or MLP output (hyperparams.json's hook_point_in)."""
    found = re.search(r"(?:^|[-/])L(\d+)([RAM])(?:-|$)", path)
    if found is None:
        return None, False
    return f"blocks.{found.group(1)}.{ {'R': 'hook_resid_post', 'A': 'hook_attn_out', 'M': 'hook_mlp_out'}[found.group(2)]}", False


def _dictionary_learning(sae_id: str, path: str) -> tuple[str | None, bool]:
    """sae-lens get_dictionary_learning_config_1_from_hf: always the residual after the trainer's layer."""
    layer = _layer(r"resid_post_layer_(\d+)", path)
    return (f"blocks.{layer}.hook_resid_post" if layer is not None else None), False


def _temporal(sae_id: str, path: str) -> tuple[str | None, bool]:
    layer = _layer(r"layer_(\d+)", path)
    return (f"blocks.{layer}.hook_resid_post" if layer is not None else None), False


def _mwhanna(sae_id: str, path: str) -> tuple[str | None, bool]:
    layer = _layer(r"_(\d+)(?:\.safetensors)?$", path)
    return (f"blocks.{layer}.mlp.hook_in" if layer is not None else None), True


def _mntss(sae_id: str, path: str) -> tuple[str | None, bool]:
    return None, True  # the input hook is in the repo's config.yaml


def _id_is_hook(sae_id: str, path: str) -> tuple[str | None, bool]:
    """sae-lens's own releases (and the SAE-Bench ones, `HOOK__trainer_N`) mostly key each SAE by its TransformerLens hook.

    Only an id the resolver reads as a hook is taken for one: `blocks.8.hook_resid_pre_768` (a width
    suffix) or `blocks.0.hook_z` (its cfg says `attn.hook_z`) name the hook only loosely, so theirs stays unknown.
    """
    hook = sae_id.split("__", 1)[0]
    try:
        parse_hook(hook)
    except HookError:
        return None, False
    return hook, False


_CONVENTIONS: dict[str, Callable[[str, str], tuple[str | None, bool]]] = {
    "sae_lens": _id_is_hook,
    "connor_rob_hook_z": _id_is_hook,
    "gemma_3": _gemma_3,
    "llama_scope": _llama_scope,
    "llama_scope_r1_distill": _llama_scope,
    "dictionary_learning_1": _dictionary_learning,
    "temporal": _temporal,
    "mwhanna_transcoder": _mwhanna,
    "mntss_clt_layer_transcoder": _mntss,
}


@functools.cache
def _offline_getters() -> dict[str, Callable[..., dict[str, Any]]]:
    """sae-lens config getters that read no file: calling them is sae-lens's own answer, offline."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_CONFIG_GETTERS

    found = {}
    for name, fn in NAMED_PRETRAINED_SAE_CONFIG_GETTERS.items():
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        if not any(call in source for call in _DOWNLOADS):
            found[name] = fn
    return found


def _hook_of(converter: str, sae_id: str, repo_id: str, path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    getter = _offline_getters().get(converter)
    if getter is not None:
        try:
            cfg = dict(getter(repo_id, path, "cpu", False, overrides))
            return {**cfg, "transcoder": bool(cfg.get("hook_name_out"))}
        except (ValueError, KeyError):  # a folder the getter cannot read: fall back to what the id says
            pass
    hook, transcoder = _CONVENTIONS.get(converter, _id_is_hook)(sae_id, path)
    return {**overrides, "hook_name": overrides.get("hook_name", hook), "transcoder": transcoder}


def _read(hook: str | None, cfg: dict[str, Any]) -> tuple[str | None, int | None, str | None]:
    """(site, layer, problem) of a hook, as `hooks.parse_hook` reads it at load time."""
    if hook is None:
        return None, None, None
    try:
        spec = parse_hook(hook, model_kwargs=cfg.get("model_from_pretrained_kwargs"), transcoder=bool(cfg.get("transcoder")))
    except HookError as err:
        return None, None, str(err)
    return spec.site, spec.layer, None


def _metrics(info: Any, sae_id: str) -> dict[str, Any]:
    found = {"l0": info.expected_l0.get(sae_id), "explained_variance": info.expected_var_explained.get(sae_id)}
    return {k: v for k, v in found.items() if v is not None}


@functools.cache
def sae_lens_rows() -> tuple[SaeRow, ...]:
    """One row per SAE id of the installed sae-lens's directory (read from its wheel; nothing downloaded), cached per process."""
    from sae_lens.loading.pretrained_saes_directory import get_config_overrides, get_pretrained_saes_directory

    from saerl_zoo.zoo.formats import pickle_converters

    pickled = pickle_converters()
    rows = []
    for release, info in get_pretrained_saes_directory().items():
        converter = info.conversion_func or "sae_lens"
        for sae_id, path in info.saes_map.items():
            cfg = _hook_of(converter, sae_id, info.repo_id, path, get_config_overrides(release, sae_id))
            hook = cfg.get("hook_name")
            site, layer, problem = _read(hook, cfg)
            refused = None if problem is None else ("transcoder" if cfg.get("transcoder") else "hook")
            if converter in pickled:
                refused, problem = "pickle", f"stored as pickle files (sae-lens format {converter!r}); saerl-zoo never loads pickle files"
            d_sae = cfg.get("d_sae")
            rows.append(SaeRow(
                name=f"{SAE_LENS_PREFIX}{release}/{sae_id}", kind="sae", model=info.model, hook=hook, site=site, layer=layer,
                d_sae=int(d_sae) if isinstance(d_sae, int) else None, source="sae-lens", where=info.repo_id, release=release,
                metrics=_metrics(info, sae_id), refused=refused, problem=problem,
            ))
    return tuple(rows)


# --------------------------------------------------------------------------- the zoo's catalog


def zoo_rows(kind: str | None = None, catalog: Any = None) -> list[SaeRow]:
    """The catalog's entries as rows (site in the resolver's words: a block's resid_out is its resid_post)."""
    from saerl_zoo.zoo.api import list_artifacts

    rows = []
    for art in list_artifacts(kind=kind, catalog=catalog):
        src = art.source
        rows.append(SaeRow(
            name=art.name, kind=art.kind, model=art.model.id, hook=f"{art.hook.module}:{art.hook.site}", site=_CATALOG_SITES[art.hook.site],
            layer=art.hook.layer, d_sae=art.sae.d_sae if art.sae else None, source="zoo",
            where=src.type if src.type in ("package", "local") else (src.repo_id or f"{SAE_LENS_PREFIX}{src.release}"),
            metrics=dict(art.metrics),
        ))
    return rows


def all_rows(source: str = "all", kind: str | None = "sae", catalog: Any = None) -> list[SaeRow]:
    """The zoo's rows of one kind (None: all kinds), sae-lens's SAEs, or both (zoo first)."""
    if source not in (*SOURCES, "all"):
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}, all")
    rows: list[SaeRow] = []
    if source in ("zoo", "all"):
        rows += zoo_rows(kind, catalog)
    if source in ("sae-lens", "all") and kind in (None, "sae"):
        rows += sae_lens_rows()
    return rows


# --------------------------------------------------------------------------- filters


def model_matches(query: str, model: str) -> bool:
    """Case-insensitive: the whole id, the id without its org, or a substring of it."""
    q, m = query.strip().lower(), model.lower()
    return q == m or q == m.rsplit("/", 1)[-1] or q in m


def hook_matcher(query: str) -> Callable[[SaeRow], bool]:
    """`--hook`: a site (`resid_post`, `mlp_out`, `z`, or the catalog's `resid_out`), a layer (`12`),
    a TransformerLens hook name (same site and layer, read by `hooks.parse_hook`), else whole dotted parts of
    the hook (`model.layers.6` matches `model.layers.6` and `model.layers.6.mlp`, never `model.layers.60`).

    A module path that ends at a decoder block (`model.layers.6`, or the catalog's `model.layers.6:resid_out`)
    names that block's output, the residual stream TransformerLens calls `blocks.6.hook_resid_post`: it
    matches exactly the SAEs on that tensor under either name (not the block's input or its MLP), so
    `prepare --sae-hook model.layers.6` finds what train-sae would otherwise train. Case is ignored.
    """
    q = query.strip().lower()
    sites = {*_CATALOG_SITES.values(), "embed", "resid_mid", "mlp_in", "z"}
    if q in sites or q in _CATALOG_SITES:
        site = _CATALOG_SITES.get(q, q)
        return lambda row: row.site == site
    if q.isdecimal():
        return lambda row: row.layer == int(q)
    module, colon, module_site = q.partition(":")
    block = block_path_layer(module)
    if block is not None and (not colon or module_site == "resid_out"):
        return lambda row: (row.site, row.layer) == ("resid_post", block)
    try:
        spec = parse_hook(q)
    except HookError:
        spec = None
    if spec is not None and spec.module is None:
        return lambda row: (row.site, row.layer) == (spec.site, spec.layer)
    parts = re.compile(rf"(?:^|\.){re.escape(q)}(?:$|[.:])", re.IGNORECASE)
    return lambda row: row.hook is not None and parts.search(row.hook) is not None


def filter_rows(rows: Iterable[SaeRow], *, model: str | None = None, hook: str | None = None) -> list[SaeRow]:
    keep = hook_matcher(hook) if hook else None
    return [r for r in rows if (model is None or model_matches(model, r.model)) and (keep is None or keep(r))]
