"""Where an SAE reads: from its recorded hook to the exact tensor of a Hugging Face model.

An SAE is only meaningful on the tensor it was trained on. That tensor is a
module of the model, its input or its output, and a shape. This module is the
one place that turns an SAE's metadata into that tensor, in two steps:

* `parse_hook` (model-independent, done once when the SAE is loaded and
  carried on it, see `attach`): the recorded hook name, whatever its dialect
  (TransformerLens / sae-lens `blocks.L.hook_*`, a Hugging Face module path,
  a sparsify hookpoint, a zoo catalog module + site), becomes a `HookSpec`;
* `bind` (per model): the spec becomes a `HookPoint` on one module of one
  model, with the side (input or output) to read.

A module path named by the SAE is authoritative; TransformerLens names are
mapped with a per-architecture table of what each hook *is* in the Hugging
Face model (the tensor TransformerLens's `from_pretrained_no_processing`
exposes). What cannot be placed exactly is refused with a one-line
`HookError` naming the hook and the reason; a layer count is never used to
guess a module.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch

Site = Literal["embed", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_in", "z", "module_out", "module_in"]
Read = Literal["input", "output"]
SPEC_ATTR = "saerl_hook_spec"  # where `attach` keeps the parsed spec on an SAE object

_TL_BLOCK = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out|hook_mlp_in|attn\.hook_z)")
_TL_SITES = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "hook_mlp_in": "mlp_in", "attn.hook_z": "z"}
_MODULE_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)(?:\.|$)")
# Sites whose tensor is a sum of residual writes: TransformerLens's center_writing_weights centres them.
_WRITES = {"embed", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_in"}


def block_path_layer(path: str) -> int | None:
    """N when the module path ends at decoder block N (`model.layers.N`, `transformer.h.N`): that module's output is
    the residual stream after block N, TransformerLens's `blocks.N.hook_resid_post`. None for any other path."""
    found = _MODULE_LAYER.search(path)
    return int(found.group(1)) if found is not None and found.end() == len(path) else None


class HookError(ValueError):
    """An SAE's hook cannot be placed on this model exactly; the message names the hook and why."""


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the hooked tensor is needed."""


@dataclasses.dataclass(frozen=True)
class HookSpec:
    """What an SAE reads, independent of any model instance (parsed once, when the SAE is loaded)."""

    hook: str  # the hook name as the SAE records it (for messages)
    site: Site
    layer: int | None  # decoder block index, from 0; None for the embedding or a module outside the blocks
    module: str | None = None  # an explicit module path (HF / sparsify / catalog): authoritative
    center: bool = False  # TransformerLens center_writing_weights: activations minus their mean over d_model


@dataclasses.dataclass(frozen=True)
class HookPoint:
    """A `HookSpec` placed on one model: the module to hook, which side to read, the expected width."""

    spec: HookSpec
    module_name: str
    read: Read
    width: int | None  # the hooked tensor's last dimension when known from the config (else checked when read)
    n_blocks: int
    module: torch.nn.Module = dataclasses.field(compare=False, repr=False)
    heads: int | None = None  # hook_z: the number of heads the width splits into
    block: int | None = None  # the index of the hooked module when it is a decoder block itself

    @property
    def layer(self) -> int | None:
        return self.spec.layer

    def describe(self) -> str:
        """One line for messages and cache keys: `blocks.1.hook_mlp_out -> model.layers.1.mlp (output)`."""
        return f"{self.spec.hook} -> {self.module_name} ({self.read}{', centred' if self.spec.center else ''})"


# --------------------------------------------------------------------------- parsing (model-independent)


def _meta_get(meta: Any, key: str) -> Any:
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        return meta.get(key)
    return getattr(meta, key, None)


def is_transcoder(sae: Any) -> bool:
    """sae-lens transcoders read one site (the MLP input) and write another; their cfg names `hook_name_out`."""
    cfg = getattr(sae, "cfg", None)
    return "Transcoder" in type(sae).__name__ or bool(_meta_get(getattr(cfg, "metadata", None), "hook_name_out") or getattr(cfg, "hook_name_out", None))


def parse_hook(hook: str, *, hook_site: str | None = None, model_kwargs: Mapping[str, Any] | None = None, transcoder: bool = False) -> HookSpec:
    """Read one recorded hook name; raise `HookError` for anything that cannot be read exactly.

    `hook_site` is the zoo's explicit site for a module path (`resid_in` reads
    the module's input); `model_kwargs` is the SAE's `model_from_pretrained_kwargs`
    (how sae-lens loads the TransformerLens model it was trained on).
    """
    kwargs = dict(model_kwargs or {})
    if transcoder:
        raise HookError(f"hook {hook}: a transcoder (it reads the MLP input and writes hook_name_out); "
                        "saerl-zoo does not read transcoder input sites, only SAEs")
    if hook.endswith("ln2.hook_normalized") or hook.endswith("ln1.hook_normalized"):
        raise HookError(f"hook {hook}: TransformerLens's normalised LayerNorm output depends on its weight folding (fold_ln); "
                        "saerl-zoo cannot reproduce it exactly")
    center = bool(kwargs.get("center_writing_weights"))
    if hook == "hook_embed":
        return HookSpec(hook, "embed", None, center=center)
    tl = _TL_BLOCK.fullmatch(hook)
    if tl is not None:
        site = _TL_SITES[tl.group(2)]
        if site == "z" and kwargs.get("fold_value_biases"):
            raise HookError(f"hook {hook}: the SAE's model_from_pretrained_kwargs fold the value biases out of z (fold_value_biases); "
                            "featurize reads the model's own z")
        return HookSpec(hook, site, int(tl.group(1)), center=center and site in _WRITES)  # type: ignore[arg-type]
    if hook.startswith("blocks.") or ".hook_" in hook or hook.startswith("hook_"):
        raise HookError(f"hook {hook}: not a TransformerLens hook saerl-zoo can place (known: hook_embed, blocks.L.hook_resid_pre/"
                        "resid_mid/resid_post/attn_out/mlp_out/mlp_in, blocks.L.attn.hook_z)")
    if hook_site not in (None, "resid_out", "resid_in", "mlp_out", "attn_out"):
        raise HookError(f"hook {hook}: unknown site {hook_site!r} (known: resid_out, resid_in, mlp_out, attn_out)")
    found = _MODULE_LAYER.search(hook)
    return HookSpec(hook, "module_in" if hook_site == "resid_in" else "module_out", int(found.group(1)) if found else None, module=hook)


_UNFOLDED_NORMALIZATION = {
    "expected_average_only_in": "no scaling factor was saved with it (sae-lens's norm_scaling_factor or activation_scaler.json)",
    "covariance_whitening": "the whitening was never folded into its weights",
}


def _parse_sae(sae: Any) -> HookSpec | None:
    cfg = sae.cfg
    meta = cfg.metadata
    hook = _meta_get(meta, "hook_name")
    norm = getattr(cfg, "normalize_activations", "none")
    if norm in _UNFOLDED_NORMALIZATION:
        raise HookError(f"hook {hook or '(none recorded)'}: the SAE's cfg normalize_activations={norm!r} but {_UNFOLDED_NORMALIZATION[norm]}; "
                        "featurize cannot scale activations as in training")
    if not hook:
        return None
    head = _meta_get(meta, "hook_head_index")
    if head is not None:
        raise HookError(f"hook {hook}: the SAE reads attention head {head} alone (hook_head_index); saerl-zoo reads whole tensors only")
    return parse_hook(str(hook), hook_site=_meta_get(meta, "hook_site"), model_kwargs=_meta_get(meta, "model_from_pretrained_kwargs"),
                      transcoder=is_transcoder(sae))


def spec_of(sae: Any) -> HookSpec | None:
    """The SAE's parsed hook (attached at load, else parsed now); None when it records no hook.

    A hook that cannot be read raises its `HookError` here, whenever a reader asks.
    """
    found = getattr(sae, SPEC_ATTR, None)
    if found is None:
        return _parse_sae(sae)
    if isinstance(found, HookError):
        raise found
    return found


def attach(sae: Any) -> Any:
    """Parse the SAE's hook once and carry the result (the spec, or the reason it cannot be read) on the SAE."""
    try:
        found: HookSpec | HookError | None = _parse_sae(sae)
    except HookError as err:
        found = err
    setattr(sae, SPEC_ATTR, found)
    return sae


# --------------------------------------------------------------------------- placing (per model)


def text_config(model: torch.nn.Module) -> Any:
    config = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder blocks of any HF causal LM (a ModuleList as long as the config's layer count)."""
    n_layers = getattr(text_config(model), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers):
            return module
    raise ValueError(f"could not find the decoder blocks of {type(model).__name__}")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Names, inside one decoder block, of the modules that carry each TransformerLens hook."""

    attn_out: str  # its output is the attention's write into the residual stream (hook_attn_out)
    mlp_out: str  # its output is the MLP's write (hook_mlp_out)
    o_proj: str  # its input is the concatenated per-head z (hook_z)
    mlp_norm: str | None  # its input is the residual after attention (hook_resid_mid); None: no such tensor
    parallel: bool = False  # attention and MLP read the same residual (no resid_mid; mlp_in is resid_pre)
    pos_embed: bool = False  # learned absolute positions are added after the token embedding (hook_embed != resid_pre 0)
    layer_norm: bool = True  # LayerNorm (True) or RMSNorm: center_writing_weights only changes LayerNorm models


def _layout(config: Any) -> _Layout | None:
    kind = getattr(config, "model_type", "")
    if kind == "gpt2":
        return _Layout("attn", "mlp", "attn.c_proj", "ln_2", pos_embed=True)
    if kind == "gpt_neox":
        parallel = bool(getattr(config, "use_parallel_residual", True))
        return _Layout("attention", "mlp", "attention.dense", None if parallel else "post_attention_layernorm", parallel=parallel)
    if kind in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"):
        return _Layout("self_attn", "mlp", "self_attn.o_proj", "post_attention_layernorm", layer_norm=False)
    if kind in ("gemma2", "gemma3", "gemma3_text"):
        # Gemma normalises each sublayer's output before adding it: the write is the post-norm's output.
        return _Layout("post_attention_layernorm", "post_feedforward_layernorm", "self_attn.o_proj", "pre_feedforward_layernorm", layer_norm=False)
    if kind == "phi":
        return _Layout("self_attn", "mlp", "self_attn.dense", None, parallel=True)
    if kind == "opt":
        pre_ln = bool(getattr(config, "do_layer_norm_before", True))
        return _Layout("self_attn", "fc2", "self_attn.out_proj", "final_layer_norm" if pre_ln else None, pos_embed=True)
    if kind == "falcon":
        parallel = bool(getattr(config, "parallel_attn", True) or getattr(config, "new_decoder_architecture", False))
        return _Layout("self_attention", "mlp", "self_attention.dense", None if parallel else "post_attention_layernorm", parallel=parallel)
    return None


def _module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _find_module(model: torch.nn.Module, path: str) -> tuple[str, torch.nn.Module] | None:
    """`path` in the model, or relative to its base model (sparsify names hookpoints of `AutoModel`: `layers.6.mlp`)."""
    roots = [model]
    base = getattr(model, "base_model", None)
    if isinstance(base, torch.nn.Module) and base is not model:
        roots.append(base)
    for root in roots:
        try:
            module = root.get_submodule(path)
        except AttributeError:
            continue
        return _module_name(model, module), module
    return None


def _heads_width(config: Any) -> int | None:
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    return int(heads * head_dim) if heads and head_dim else None


def bind(spec: HookSpec, model: torch.nn.Module) -> HookPoint:
    """Place `spec` on `model`: the module, the side read, and the width to expect; `HookError` if it cannot be placed."""
    blocks = decoder_layers(model)
    n_blocks = len(blocks)
    config = text_config(model)
    hidden = int(config.hidden_size)
    if spec.layer is not None and not 0 <= spec.layer < n_blocks:
        raise HookError(f"hook {spec.hook}: block {spec.layer} does not exist; the model has {n_blocks} decoder blocks (0..{n_blocks - 1})")
    if spec.module is not None:
        found = _find_module(model, spec.module)
        if found is None:
            raise HookError(f"hook {spec.hook}: the model ({type(model).__name__}) has no module of that name")
        name, module = found
        block = next((i for i, b in enumerate(blocks) if b is module), None)
        width = hidden if block is not None else None
        return HookPoint(spec, name, "input" if spec.site == "module_in" else "output", width, n_blocks, module, block=block)
    if spec.site in ("resid_pre", "resid_post") and not spec.center:  # a block's own input / output: no table needed
        site, layer, read = spec.site, spec.layer, "output"
        layout = None
    else:
        layout = _layout(config)
        if layout is None:
            raise HookError(f"hook {spec.hook}: saerl-zoo has no TransformerLens hook table for model type "
                            f"{getattr(config, 'model_type', '?')!r}; name the module (e.g. model.layers.L) in the SAE's hook_name")
        if spec.center and not layout.layer_norm:
            spec = dataclasses.replace(spec, center=False)  # TransformerLens centres writing weights of LayerNorm models only
        if spec.site == "embed":
            if layout.pos_embed:
                emb = model.get_input_embeddings()
                return HookPoint(spec, _module_name(model, emb), "output", hidden, n_blocks, emb)
            site, layer, read = "resid_pre", 0, "input"  # no learned positions: the token embedding is what block 0 reads
        else:
            site, layer, read = spec.site, spec.layer, "output"
    block = blocks[layer]
    block_name = _module_name(model, block)
    if site == "resid_post":
        return HookPoint(spec, block_name, "output", hidden, n_blocks, block, block=layer)
    if site == "resid_pre" or (site == "mlp_in" and layout is not None and layout.parallel):
        return HookPoint(spec, block_name, "input", hidden, n_blocks, block, block=layer)
    assert layout is not None
    if site in ("resid_mid", "mlp_in"):
        if layout.mlp_norm is None:
            why = "attention and MLP read the same residual in parallel" if layout.parallel else "its post-LN blocks normalise it"
            raise HookError(f"hook {spec.hook}: {getattr(config, 'model_type', '?')} has no residual between attention and MLP ({why})")
        sub, read = layout.mlp_norm, "input"
    elif site == "attn_out":
        sub = layout.attn_out
    elif site == "mlp_out":
        sub = layout.mlp_out
    elif site == "z":
        sub, read = layout.o_proj, "input"
    else:  # pragma: no cover - parse_hook produces no other site
        raise HookError(f"hook {spec.hook}: unknown site {site!r}")
    try:
        module = block.get_submodule(sub)
    except AttributeError as err:
        raise HookError(f"hook {spec.hook}: block {layer} of {type(model).__name__} has no {sub!r} module") from err
    width = _heads_width(config) if site == "z" else hidden
    heads = int(config.num_attention_heads) if site == "z" else None
    return HookPoint(spec, f"{block_name}.{sub}", read, width, n_blocks, module, heads)


def resolve(model: torch.nn.Module, sae: Any, layer: int | None = None) -> HookPoint:
    """The point `sae` reads on `model`; `layer` may only repeat the SAE's own block (its recorded hook is authoritative).

    An SAE that records no hook reads the output of decoder block `layer`.
    The hooked tensor's width must equal the SAE's `d_in`. An SAE with a
    `check_model(model)` method (a `StitchedSAE`) is asked first whether this model is its own.
    """
    check = getattr(sae, "check_model", None)
    if callable(check):  # an SAE bound to one model (a StitchedSAE) refuses any other before it is hooked or run
        check(model)
    n_blocks = len(decoder_layers(model))
    if layer is not None and not 0 <= layer < n_blocks:
        raise ValueError(f"layer {layer} is out of range: the model has {n_blocks} decoder blocks (0..{n_blocks - 1})")
    spec = spec_of(sae)
    if spec is None:
        if layer is None:
            raise ValueError("no layer given and the SAE's metadata records no hook_name to read it from")
        spec = HookSpec(f"model.layers.{layer}", "resid_post", layer)
    elif layer is not None and layer != spec.layer:
        trained = f"block {spec.layer}" if spec.layer is not None else "no decoder block"
        raise ValueError(f"layer {layer} disagrees with the SAE's hook {spec.hook} ({trained}); the SAE's hook decides: drop the layer")
    point = bind(spec, model)
    d_in = int(sae.cfg.d_in)
    if point.width is not None and point.width != d_in:
        raise HookError(f"hook {spec.hook}: the hooked tensor ({point.module_name} {point.read}) is {point.width} wide "
                        f"but the SAE's d_in is {d_in}")
    return point


def block_output_layer(point: HookPoint) -> int:
    """The decoder block whose output (the residual stream after it) `point` reads; `HookError` for any other tensor.

    For readers that only handle the residual stream between blocks (stitches across models, raw-activation baselines).
    """
    if point.read == "output" and point.block is not None and not point.spec.center:
        return point.block
    raise HookError(f"hook {point.spec.hook}: reads {point.module_name} ({point.read}{', centred' if point.spec.center else ''}), "
                    "not the residual stream after a decoder block, which is all this reader handles")


# --------------------------------------------------------------------------- reading


def _first_tensor(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def capture(model: torch.nn.Module, point: HookPoint, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            d_in: int | None = None) -> torch.Tensor:
    """The hooked tensor (batch x tokens x width) for one batch; the forward pass stops right there.

    For an input the hooked module never runs; for an output nothing after
    it does (nor the LM head). The tensor is reshaped to batch x tokens (OPT
    flattens tokens inside its blocks) and centred when the SAE's model was.
    """
    captured: list[torch.Tensor] = []
    if point.read == "input":
        def pre_hook(_m: Any, args: Any, kwargs: Any) -> None:
            captured.append(_first_tensor(args) if args else kwargs["hidden_states"])
            raise _StopForward
        handle = point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def hook(_m: Any, _i: Any, output: Any) -> None:
            captured.append(_first_tensor(output))
            raise _StopForward
        handle = point.module.register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"hook {point.spec.hook}: {point.module_name} never ran in the forward pass")
    acts = captured[0].reshape(*input_ids.shape, -1)
    if d_in is not None and acts.shape[-1] != d_in:
        raise HookError(f"hook {point.spec.hook}: the hooked tensor ({point.module_name} {point.read}) is {acts.shape[-1]} wide "
                        f"but the SAE's d_in is {d_in}")
    if point.spec.center:
        acts = acts - acts.mean(-1, keepdim=True)
    return acts


def sae_input(sae: Any, point: HookPoint, tokens: torch.Tensor) -> torch.Tensor:
    """Tokens (n x width) shaped as the SAE's encode takes them: sae-lens hook_z SAEs flatten (n, heads, d_head) themselves."""
    if point.heads and getattr(sae, "hook_z_reshaping_mode", False):
        return tokens.reshape(tokens.shape[0], point.heads, -1)
    return tokens


def layer_from_hook_name(hook_name: str | None) -> int | None:
    """The decoder block a hook name reads (`blocks.6.hook_resid_pre` -> 6: block 6's input); None if none or unreadable."""
    if not hook_name:
        return None
    try:
        return parse_hook(hook_name).layer
    except HookError:
        return None
