"""Every SAE reads exactly the tensor it was trained on, on every architecture family, or is refused.

Tiny random models built from configs. The reference for TransformerLens hook
names is sae-lens's own route: `HookedTransformer.from_pretrained_no_processing`
of the same HF model (what sae-lens tells users to load, with the SAE's
`model_from_pretrained_kwargs`), `run_with_cache`, `sae.encode`, pooled the same
way. Families TransformerLens cannot build here (Gemma-2/3, Falcon, Phi) are
checked against the documented tensors of a full, un-stopped forward pass.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import local_sae_entry, make_char_tokenizer
from sparsify_reference import load_sparsify, save_sparsify_run, sparsify_codes
from test_zoo_support import write_catalog

from saerl_zoo.featurizer import featurize
from saerl_zoo.hooks import HookError, bind, parse_hook
from saerl_zoo.zoo.api import load_sae
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.hub import hash_folder

PROMPTS = ["What is 2 + 3?", "Sort 5, 1, 4.", "x"]
TL_FAMILIES = ["gpt2", "neox", "llama", "mistral", "qwen2", "qwen3", "opt"]  # TransformerLens builds these offline
OTHER_FAMILIES = ["gemma2", "gemma3", "falcon", "phi", "phi3", "neox_seq", "falcon_seq"]
TL_HOOKS = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post",
            "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z"]
PARALLEL = {"neox", "falcon", "phi"}  # attention and MLP read the same residual: no resid_mid


def _config(name: str, vocab: int):
    import transformers as T

    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128)

    def llama_like(cls, **kw):
        return cls(intermediate_size=64, num_key_value_heads=2, **small, **common, **kw)

    return {
        "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, n_ctx=128, **common),
        "neox": lambda: T.GPTNeoXConfig(intermediate_size=64, **small, **common),
        "neox_seq": lambda: T.GPTNeoXConfig(intermediate_size=64, use_parallel_residual=False, **small, **common),
        "llama": lambda: llama_like(T.LlamaConfig),
        "mistral": lambda: llama_like(T.MistralConfig),
        "qwen2": lambda: llama_like(T.Qwen2Config),
        "qwen3": lambda: llama_like(T.Qwen3Config, head_dim=16),  # z is 64 wide on a 32-wide residual
        "gemma2": lambda: llama_like(T.Gemma2Config, head_dim=8),
        "gemma3": lambda: llama_like(T.Gemma3TextConfig, head_dim=8),
        "phi3": lambda: T.Phi3Config(intermediate_size=64, num_key_value_heads=2, **small, **common),
        "phi": lambda: T.PhiConfig(intermediate_size=64, partial_rotary_factor=0.5, **small, **common),
        "opt": lambda: T.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128,
                                   word_embed_proj_dim=32, **common),
        "falcon": lambda: T.FalconConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, **common),
        "falcon_seq": lambda: T.FalconConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, parallel_attn=False, **common),
    }[name]()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops: one torch thread (on a shared machine a second OpenMP thread waiting for a core makes them many times slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


_MODELS: dict[str, torch.nn.Module] = {}


def tiny(name: str, tok) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = AutoModelForCausalLM.from_config(_config(name, len(tok))).eval()
    return _MODELS[name]


@contextmanager
def _local_tl_names():
    """TransformerLens looks a local folder up in its list of official names before reading it; let it read the folder."""
    import transformer_lens.loading_from_pretrained as loading

    official = loading.get_official_model_name
    with mock.patch.object(loading, "get_official_model_name", lambda n: n if os.path.isdir(n) else official(n)):
        yield


_TL: dict[tuple[str, bool], object] = {}


def tl_model(name: str, tok, center: bool = False):
    """sae-lens's route: the HF model in TransformerLens, loaded as sae-lens loads an SAE's model."""
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer

    if (name, center) not in _TL:
        model = tiny(name, tok)
        folder = tempfile.mkdtemp()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        with _local_tl_names(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _TL[name, center] = HookedTransformer.from_pretrained_no_processing(
                folder, hf_model=model, tokenizer=AutoTokenizer.from_pretrained(folder), device="cpu", center_writing_weights=center)
    return _TL[name, center]


def make_sae(d_in: int, hook: str, *, seed: int = 0, z: bool = False, **meta):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=48, reshape_activations="hook_z" if z else "none")
    cfg.metadata.hook_name = hook
    for key, value in meta.items():
        setattr(cfg.metadata, key, value)
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0)
        sae.b_enc.zero_()
    return sae


def pooled(sae, acts_per_prompt: list[torch.Tensor]) -> np.ndarray:
    """Mean of the SAE's codes over each prompt's real tokens (BOS dropped, as featurize drops it)."""
    with torch.no_grad():
        return torch.stack([sae.encode(a[1:]).mean(0) for a in acts_per_prompt]).numpy()


def tl_route(name: str, tok, hook: str, sae, center: bool = False) -> np.ndarray:
    ht = tl_model(name, tok, center)
    acts = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            _, cache = ht.run_with_cache(ids, names_filter=hook)
        acts.append(cache[hook][0])
    return pooled(sae, acts)


def full_forward(model, module: str, read: str, enc: dict) -> torch.Tensor:
    """A module's input or output (batch x tokens x width) on a full forward pass: nothing stopped, the LM head runs."""
    got: list[torch.Tensor] = []
    first = lambda x: (x[0] if isinstance(x, tuple) else x).clone()  # noqa: E731  (Falcon adds into its MLP output in place)
    target = model.get_submodule(module)
    if read == "input":
        handle = target.register_forward_pre_hook(lambda _m, a, kw: got.append(first(a) if a else kw["hidden_states"]), with_kwargs=True)
    else:
        handle = target.register_forward_hook(lambda _m, _i, out: got.append(first(out)))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        handle.remove()
    return got[0].reshape(*enc["input_ids"].shape, -1)


def hf_tensor(model, tok, module: str, read: str) -> list[torch.Tensor]:
    """A module's input or output per prompt (one prompt at a time, no padding), from a full forward pass."""
    return [full_forward(model, module, read, _enc(tok, p))[0] for p in PROMPTS]


def _enc(tok, text: str) -> dict:
    enc = tok(text, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def feats(model, tok, sae, **kw) -> np.ndarray:
    return featurize(PROMPTS, model, tok, sae, batch_size=2, progress=False, **kw).toarray()


def width(model, hook: str) -> int:
    cfg = model.config
    return cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads) if hook.endswith("_z") else cfg.hidden_size


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("hook", TL_HOOKS)
@pytest.mark.parametrize("family", TL_FAMILIES)
def test_featurize_equals_sae_lens_route(family, hook, tok):
    model = tiny(family, tok)
    sae = make_sae(width(model, hook), hook, z=hook.endswith("_z"))
    if family in PARALLEL and hook.endswith("resid_mid"):
        with pytest.raises(HookError, match=f"hook {hook}: gpt_neox has no residual between attention and MLP"):
            feats(model, tok, sae)
        return
    np.testing.assert_allclose(feats(model, tok, sae), tl_route(family, tok, hook, sae), rtol=1e-5, atol=1e-5)


def _arch_sae(arch: str, norm: str, hook: str):
    import sae_lens

    torch.manual_seed(1)
    extra = {"topk": {"k": 8}, "batchtopk": {"k": 8}}.get(arch, {})
    names = {"standard": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE", "gated": "GatedSAE"}
    cfg = getattr(sae_lens, names[arch] + "Config")(d_in=32, d_sae=48, normalize_activations=norm, **extra)
    cfg.metadata.hook_name = hook
    sae = getattr(sae_lens, names[arch])(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0)
    return sae


@pytest.mark.parametrize("arch, norm", [("standard", "constant_norm_rescale"), ("topk", "layer_norm"), ("topk", "none"),
                                        ("jumprelu", "none"), ("gated", "none")])
def test_sae_architectures_and_runtime_normalisation_match_the_route(arch, norm, tok):
    """Every encode step (input normalisation, b_dec, TopK / JumpReLU / gating) is the SAE's own: featurize's TopK fast path included."""
    sae = _arch_sae(arch, norm, "blocks.1.hook_mlp_out")
    got = feats(tiny("qwen2", tok), tok, sae)
    np.testing.assert_allclose(got, tl_route("qwen2", tok, "blocks.1.hook_mlp_out", sae), rtol=1e-5, atol=1e-5)
    assert got.any()


def test_hook_mlp_in_is_transformer_lens_s(tok):
    """TransformerLens's hook_mlp_in (when enabled) is the residual before the pre-MLP norm."""
    for family in ("gpt2", "llama"):
        ht = tl_model(family, tok)
        ht.set_use_hook_mlp_in(True)
        try:
            sae = make_sae(32, "blocks.1.hook_mlp_in")
            np.testing.assert_allclose(feats(tiny(family, tok), tok, sae), tl_route(family, tok, "blocks.1.hook_mlp_in", sae), rtol=1e-5, atol=1e-5)
        finally:
            ht.set_use_hook_mlp_in(False)


@pytest.mark.parametrize("hook", ["hook_embed", "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.hook_attn_out"])
def test_center_writing_weights_is_reproduced(hook, tok):
    """gpt2-small-res-jb & co. were trained on TransformerLens with centred writing weights (a per-release config_override)."""
    model = tiny("gpt2", tok)
    sae = make_sae(32, hook, model_from_pretrained_kwargs={"center_writing_weights": True})
    want = tl_route("gpt2", tok, hook, sae, center=True)
    np.testing.assert_allclose(feats(model, tok, sae), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(feats(model, tok, make_sae(32, hook)), want, atol=1e-3)


@pytest.mark.parametrize("family", TL_FAMILIES + OTHER_FAMILIES)
def test_sites_add_up_to_the_residual_stream(family, tok):
    """On a full forward pass: resid_pre + attn_out (+ mlp_out) = resid_mid (resid_post); resid_pre/post are hidden_states."""
    model = tiny(family, tok)
    enc = _enc(tok, PROMPTS[0])
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states

    def site(hook: str) -> torch.Tensor:
        point = bind(parse_hook(hook), model)
        return full_forward(model, point.module_name, point.read, enc)[0]

    pre, post, attn, mlp = (site(f"blocks.1.hook_{s}") for s in ("resid_pre", "resid_post", "attn_out", "mlp_out"))
    torch.testing.assert_close(pre, hidden[1][0])
    torch.testing.assert_close(post, hidden[2][0])
    torch.testing.assert_close(pre + attn + mlp, post, rtol=1e-5, atol=1e-5)
    if family in PARALLEL:
        with pytest.raises(HookError, match="no residual between attention and MLP"):
            site("blocks.1.hook_resid_mid")
    else:
        torch.testing.assert_close(pre + attn, site("blocks.1.hook_resid_mid"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(site("blocks.0.hook_resid_pre"), hidden[0][0])


@pytest.mark.parametrize("family", OTHER_FAMILIES)
@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z"])
def test_featurize_reads_the_documented_tensor(family, hook, tok):
    """Without TransformerLens: featurize (stopped early, batched, padded) = encode of the tensor on a full forward pass."""
    model = tiny(family, tok)
    sae = make_sae(width(model, hook), hook, z=hook.endswith("_z"))
    point = bind(parse_hook(hook), model)
    want = pooled(sae, [a.reshape(a.shape[0], point.heads or 1, -1) if point.heads else a for a in hf_tensor(model, tok, point.module_name, point.read)])
    np.testing.assert_allclose(feats(model, tok, sae), want, rtol=1e-5, atol=1e-5)


def test_gemma_writes_are_the_post_norm_outputs(tok):
    """Gemma-2/3 normalise each sublayer's output before adding it: attn_out / mlp_out are the post-norms' outputs."""
    for family in ("gemma2", "gemma3"):
        model = tiny(family, tok)
        assert bind(parse_hook("blocks.1.hook_mlp_out"), model).module_name == "model.layers.1.post_feedforward_layernorm"
        assert bind(parse_hook("blocks.1.hook_attn_out"), model).module_name == "model.layers.1.post_attention_layernorm"
        assert bind(parse_hook("hook_embed"), model).describe() == "hook_embed -> model.layers.0 (input)"  # scaled by sqrt(d)


# --------------------------------------------------------------------------- the table, row by row


@pytest.mark.parametrize("hook", ["blocks.1.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid"])
def test_row_sublayer_sae_reads_its_sublayer_not_the_block_output(hook, tok):
    model = tiny("gpt2", tok)
    sae = make_sae(32, hook)
    got = feats(model, tok, sae)
    np.testing.assert_allclose(got, tl_route("gpt2", tok, hook, sae), rtol=1e-5, atol=1e-5)
    block_out = pooled(sae, [a[0] for a in (tl_model("gpt2", tok).run_with_cache(tok(p, return_tensors="pt")["input_ids"],
                                                                                   names_filter="blocks.1.hook_resid_post")[1]["blocks.1.hook_resid_post"] for p in PROMPTS)])
    assert not np.allclose(got, block_out, atol=1e-3)


def test_row_resid_pre_0_is_the_embedding_output_and_block_0_never_runs(tok):
    model = tiny("llama", tok)
    sae = make_sae(32, "blocks.0.hook_resid_pre")
    ran: list[str] = []
    handles = [blk.register_forward_hook(lambda *_a, i=i: ran.append(f"block{i}")) for i, blk in enumerate(model.model.layers)]
    handles.append(model.lm_head.register_forward_hook(lambda *_a: ran.append("lm_head")))
    try:
        got = feats(model, tok, sae)
    finally:
        for h in handles:
            h.remove()
    assert ran == []
    np.testing.assert_allclose(got, tl_route("llama", tok, "blocks.0.hook_resid_pre", sae), rtol=1e-5, atol=1e-5)


def test_forward_stops_right_after_a_sublayer(tok):
    """An mlp_out SAE on block 1: block 2 and the LM head never run, and block 1's MLP is the last module that does."""
    model = tiny("llama", tok)
    ran: list[str] = []
    watched = {"block2": model.model.layers[2], "lm_head": model.lm_head, "norm": model.model.norm, "mlp1": model.model.layers[1].mlp}
    handles = [m.register_forward_hook(lambda *_a, n=n: ran.append(n)) for n, m in watched.items()]
    try:
        feats(model, tok, make_sae(32, "blocks.1.hook_mlp_out"))
    finally:
        for h in handles:
            h.remove()
    assert ran == ["mlp1"] * 2  # two batches; the capture hook raises right after mlp1's output


@pytest.mark.parametrize("hookpoint, module", [("layers.0.mlp", "gpt_neox.layers.0.mlp"), ("layers.0.attention", "gpt_neox.layers.0.attention"),
                                               ("embed_in", "gpt_neox.embed_in"), ("layers.1", "gpt_neox.layers.1")])
def test_row_sparsify_hookpoints_read_the_named_module(tmp_path, hookpoint, module, tok):
    """Codes equal sparsify's own encode (its loader, its encode) on the output of the module the hookpoint names."""
    model = tiny("neox", tok)
    folder = save_sparsify_run(tmp_path, (hookpoint,))[hookpoint]
    ref = load_sparsify(folder)
    want = np.stack([sparsify_codes(ref, a[1:]).mean(0).numpy() for a in hf_tensor(model, tok, module, "output")])
    np.testing.assert_allclose(feats(model, tok, load_sae(folder)), want, rtol=1e-5, atol=1e-5)


def test_row_sparsify_embed_tokens_names_a_hook(tmp_path, tok):
    model = tiny("llama", tok)
    folder = save_sparsify_run(tmp_path, ("embed_tokens",))["embed_tokens"]
    ref = load_sparsify(folder)
    want = np.stack([sparsify_codes(ref, a[1:]).mean(0).numpy() for a in hf_tensor(model, tok, "model.embed_tokens", "output")])
    np.testing.assert_allclose(feats(model, tok, load_sae(folder)), want, rtol=1e-5, atol=1e-5)


def test_row_gemma_scope_2_mlp_output(tok):
    model = tiny("gemma3", tok)
    sae = make_sae(32, "model.layers.1.post_feedforward_layernorm")
    want = pooled(sae, hf_tensor(model, tok, "model.layers.1.post_feedforward_layernorm", "output"))
    np.testing.assert_allclose(feats(model, tok, sae), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats(model, tok, make_sae(32, "blocks.1.hook_mlp_out")), want, rtol=1e-5, atol=1e-5)


def test_row_transcoder_is_refused(tok):
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig

    cfg = JumpReLUTranscoderConfig(d_in=32, d_sae=48, d_out=32, apply_b_dec_to_input=False)
    cfg.metadata.hook_name = "blocks.1.ln2.hook_normalized"
    cfg.metadata.hook_name_out = "blocks.1.hook_mlp_out"
    with pytest.raises(HookError, match=r"^hook blocks.1.ln2.hook_normalized: a transcoder \(it reads the MLP input and writes hook_name_out\)"):
        feats(tiny("gemma2", tok), tok, JumpReLUTranscoder(cfg))


@pytest.mark.parametrize("site, module, read", [("resid_in", "model.layers.1", "input"), ("mlp_out", "model.layers.1.mlp", "output")])
def test_row_catalog_site_is_read_by_featurize_and_verify_alike(tmp_path, site, module, read, tok):
    model = tiny("llama", tok)
    folder = save_sae(make_sae(32, "model.layers.1"), tmp_path / "sae")
    entry = local_sae_entry(folder, "test/tiny", hash_folder(folder))
    entry["hook"] = {"module": module, "site": site, "layer": 1}
    entry["sae"]["d_sae"] = 48
    from saerl_zoo.zoo.registry import Catalog

    catalog = Catalog.load([write_catalog(tmp_path / "catalog.yaml", [entry])], builtin=False, use_env=False, fetch_hub=False)
    sae = load_sae("test/sae", catalog=catalog)
    want = pooled(sae, hf_tensor(model, tok, module, read))
    np.testing.assert_allclose(feats(model, tok, sae), want, rtol=1e-5, atol=1e-5)


def test_row_hook_z_of_a_wider_attention(tok):
    model = tiny("qwen3", tok)  # 4 heads x 16 = 64-wide z on a 32-wide residual
    sae = make_sae(64, "blocks.1.attn.hook_z", z=True)
    np.testing.assert_allclose(feats(model, tok, sae), tl_route("qwen3", tok, "blocks.1.attn.hook_z", sae), rtol=1e-5, atol=1e-5)
    with pytest.raises(HookError, match=r"^hook blocks.1.attn.hook_z: the hooked tensor \(model.layers.1.self_attn.o_proj input\) is 64 wide but the SAE's d_in is 32$"):
        feats(model, tok, make_sae(32, "blocks.1.attn.hook_z"))


def test_row_hook_embed(tok):
    for family in ("gpt2", "llama"):
        model = tiny(family, tok)
        sae = make_sae(32, "hook_embed")
        np.testing.assert_allclose(feats(model, tok, sae), tl_route(family, tok, "hook_embed", sae), rtol=1e-5, atol=1e-5)


def test_row_expected_average_only_in_without_a_scaling_factor_is_refused(tmp_path, tok):
    model = tiny("llama", tok)
    sae = make_sae(32, "blocks.1.hook_resid_post")
    sae.cfg.normalize_activations = "expected_average_only_in"
    folder = save_sae(sae, tmp_path / "sae")
    with pytest.raises(HookError, match=r"cfg normalize_activations='expected_average_only_in' but no scaling factor was saved"):
        feats(model, tok, load_sae(folder))
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5}))  # what sae-lens's trainer saves
    scaled = pooled(sae, [2.5 * a for a in hf_tensor(model, tok, "model.layers.1", "output")])
    np.testing.assert_allclose(feats(model, tok, load_sae(folder)), scaled, rtol=1e-5, atol=1e-5)


def test_prepend_bos_false_is_honoured(tok):
    """sae-lens's prepend_bos=False: the SAE saw sequences without BOS, which changes every later token's activations."""
    model = tiny("llama", tok)
    sae = make_sae(32, "blocks.1.hook_resid_post", prepend_bos=False)
    ht = tl_model("llama", tok)
    with torch.no_grad():
        want = pooled(sae, [torch.cat([torch.zeros(1, 32), ht.run_with_cache(tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"],
                                                                             names_filter="blocks.1.hook_resid_post")[1]["blocks.1.hook_resid_post"][0]])
                            for p in PROMPTS[:2]])  # (a dummy first row: `pooled` skips BOS)
    got = featurize(PROMPTS[:2], model, tok, sae, progress=False).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, feats(model, tok, make_sae(32, "blocks.1.hook_resid_post"))[:2], atol=1e-3)


# --------------------------------------------------------------------------- refusals and --layer


def test_layer_must_agree_with_the_sae_hook(tok):
    model = tiny("llama", tok)
    sae = make_sae(32, "model.layers.2")
    np.testing.assert_array_equal(feats(model, tok, sae, layer=2), feats(model, tok, sae))
    with pytest.raises(ValueError, match=r"^layer 1 disagrees with the SAE's hook model.layers.2 \(block 2\)"):
        feats(model, tok, sae, layer=1)
    with pytest.raises(ValueError, match=r"^layer -1 is out of range: the model has 3 decoder blocks \(0..2\)$"):
        feats(model, tok, sae, layer=-1)
    with pytest.raises(ValueError, match=r"^layer 3 is out of range"):
        feats(model, tok, sae, layer=3)
    from saerl_zoo.transfer.activations import collect_activations

    with pytest.raises(ValueError, match=r"^layer -1 is out of range: the model has 3 decoder blocks \(0..2\)$"):
        collect_activations(model, tok, PROMPTS, [-1], progress=False)


@pytest.mark.parametrize("hook, message", [
    ("blocks.1.hook_q", "not a TransformerLens hook saerl-zoo can place"),
    ("blocks.7.hook_resid_post", "block 7 does not exist; the model has 3 decoder blocks"),
    ("model.layers.1.nonexistent", "the model (LlamaForCausalLM) has no module of that name"),
    ("blocks.1.ln2.hook_normalized", "depends on its weight folding (fold_ln)"),
])
def test_unplaceable_hooks_are_refused_in_one_line(hook, message, tok):
    with pytest.raises(HookError, match=f"^hook {hook.replace('.', '[.]')}: .*") as err:
        feats(tiny("llama", tok), tok, make_sae(32, hook))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_single_head_sae_is_refused(tok):
    with pytest.raises(HookError, match=r"^hook blocks.1.attn.hook_z: the SAE reads attention head 2 alone \(hook_head_index\)"):
        feats(tiny("llama", tok), tok, make_sae(32, "blocks.1.attn.hook_z", hook_head_index=2))


def test_width_mismatch_is_refused_before_any_forward(tok):
    model = tiny("llama", tok)
    ran: list[int] = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *_a: ran.append(1))
    try:
        with pytest.raises(HookError, match=r"^hook blocks.1.hook_mlp_out: the hooked tensor \(model.layers.1.mlp output\) is 32 wide but the SAE's d_in is 16$"):
            feats(model, tok, make_sae(16, "blocks.1.hook_mlp_out"))
    finally:
        handle.remove()
    assert ran == []


def test_cli_layer_errors_are_one_line(tmp_path, tok):
    from click.testing import CliRunner

    from saerl_zoo.cli import main

    tiny("llama", tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    make_sae(32, "blocks.1.hook_mlp_out").save_model(tmp_path / "sae")
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a", "prompt": "What is 2 + 3?"}) + "\n")
    base = ["featurize", "--prompts", str(tmp_path / "p.jsonl"), "--model", str(tmp_path / "model"), "--sae", str(tmp_path / "sae")]
    for layer, message in (("2", "Error: layer 2 disagrees with the SAE's hook blocks.1.hook_mlp_out (block 1); the SAE's hook decides: drop the layer"),
                           ("-1", "Error: layer -1 is out of range: the model has 3 decoder blocks (0..2)")):
        result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / f"x{layer}.safetensors"), "--layer", layer])
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == message, result.output
        assert not (tmp_path / f"x{layer}.safetensors").exists()


# --------------------------------------------------------------------------- the other readers use the same point


def test_verify_reads_the_catalog_site_as_featurize_does(tmp_path, tok):
    from saerl_zoo.zoo.api import reference_activations
    from saerl_zoo.zoo.registry import Catalog

    model = tiny("llama", tok)
    folder = save_sae(make_sae(32, "model.layers.1"), tmp_path / "sae")
    entry = local_sae_entry(folder, "test/tiny", hash_folder(folder))
    entry["hook"] = {"module": "model.layers.1.mlp", "site": "mlp_out", "layer": 1}
    entry["sae"]["d_sae"] = 48
    catalog = Catalog.load([write_catalog(tmp_path / "catalog.yaml", [entry])], builtin=False, use_env=False, fetch_hub=False)
    sae = load_sae("test/sae", catalog=catalog)
    got = reference_activations(model, tok, catalog.get("test/sae"), sae, texts=tuple(PROMPTS))
    want = torch.cat([a[1:] for a in hf_tensor(model, tok, "model.layers.1.mlp", "output")])
    torch.testing.assert_close(got, want)


def test_distributed_featurize_reads_the_same_point(tmp_path, tok):
    from saerl_zoo.distributed import featurize_distributed

    model, sae = tiny("gpt2", tok), make_sae(32, "blocks.1.hook_attn_out")
    got = featurize_distributed(PROMPTS, model, tok, sae, cache_dir=tmp_path, shard_size=2, rank=0, world_size=1, progress=False)
    np.testing.assert_allclose(got.toarray(), tl_route("gpt2", tok, "blocks.1.hook_attn_out", sae), rtol=1e-5, atol=1e-5)


def test_residual_only_readers_refuse_other_sites(tok):
    """Stitches and raw-activation baselines map the residual stream after a block; an mlp_out or resid_pre SAE is refused."""
    from saerl_zoo.featurizer import resolve_layer

    model = tiny("llama", tok)
    assert resolve_layer(model, make_sae(32, "blocks.1.hook_resid_post"), None) == 1
    assert resolve_layer(model, make_sae(32, "model.layers.2"), None) == 2
    for hook in ("blocks.1.hook_mlp_out", "blocks.2.hook_resid_pre", "hook_embed"):
        with pytest.raises(HookError, match=f"^hook {hook}: reads .* not the residual stream after a decoder block"):
            resolve_layer(model, make_sae(32, hook), None)


def test_release_config_overrides_reach_the_hook(tmp_path, tok):
    """sae-lens applies a release's config_overrides (gpt2-small-res-jb: center_writing_weights) when it builds the SAE; so does load_sae."""
    from saerl_zoo.hooks import spec_of
    from saerl_zoo.zoo.formats import load_sae_lens_folder

    folder = save_sae(make_sae(32, "blocks.1.hook_resid_post"), tmp_path / "sae")
    plain = load_sae_lens_folder(folder)
    centred = load_sae_lens_folder(folder, overrides={"model_from_pretrained_kwargs": {"center_writing_weights": True}})
    assert not spec_of(plain).center and spec_of(centred).center
    model = tiny("gpt2", tok)
    np.testing.assert_allclose(feats(model, tok, centred), tl_route("gpt2", tok, "blocks.1.hook_resid_post", centred, center=True), rtol=1e-5, atol=1e-5)
