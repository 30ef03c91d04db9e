from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_sae

import saerl_zoo.featurizer as fz
from saerl_zoo.featurizer import featurize, residual_stream
from saerl_zoo.hooks import layer_from_hook_name


def reference(prompts, model, tokenizer, sae, layer, pooling):
    """Full forward with output_hidden_states, one prompt at a time (no padding), SAE encode, pool."""
    rows = []
    with torch.no_grad():
        for p in prompts:
            enc = tokenizer(p, return_tensors="pt", return_special_tokens_mask=True)
            hidden = model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states[layer + 1][0]
            codes = sae.encode(hidden[~enc["special_tokens_mask"][0].bool()])
            rows.append(codes.mean(0) if pooling == "mean" else codes.max(0).values)
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("layer", [0, 1])  # not the last block: HF applies the final norm to hidden_states[-1]
def test_matches_full_forward_reference(prompts, tiny_model, tokenizer, pooling, layer):
    sae = make_tiny_sae(32, hook_name=f"model.layers.{layer}")
    got = featurize(prompts, tiny_model, tokenizer, sae, layer=layer, pooling=pooling, batch_size=3, progress=False)
    want = reference(prompts, tiny_model, tokenizer, sae, layer, pooling)
    assert got.shape == (len(prompts), sae.cfg.d_sae)
    np.testing.assert_allclose(got.toarray(), want, rtol=1e-4, atol=1e-5)
    assert got.nnz > 0


def test_forward_stops_after_hooked_layer(prompts, tiny_model, tokenizer):
    ran: list[str] = []
    handles = [blk.register_forward_hook(lambda *_a, i=i: ran.append(f"block{i}")) for i, blk in enumerate(tiny_model.model.layers)]
    handles.append(tiny_model.lm_head.register_forward_hook(lambda *_a: ran.append("lm_head")))
    try:
        featurize(prompts, tiny_model, tokenizer, make_tiny_sae(32, hook_name="model.layers.0"), batch_size=len(prompts), progress=False)
    finally:
        for h in handles:
            h.remove()
    assert set(ran) == {"block0"}


def test_residual_stream_equals_hidden_state(tiny_model, tokenizer):
    enc = tokenizer(["abc def"], return_tensors="pt")
    with torch.no_grad():
        want = tiny_model(**enc, output_hidden_states=True).hidden_states[2]
        got = residual_stream(tiny_model, 1, enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(got, want)


def test_padding_does_not_change_features(tiny_model, tokenizer, tiny_sae):
    short = "2 + 2"
    alone = featurize([short], tiny_model, tokenizer, tiny_sae, progress=False)
    padded = featurize([short, "a much longer prompt " * 5], tiny_model, tokenizer, tiny_sae, batch_size=2, progress=False)
    np.testing.assert_allclose(alone.toarray()[0], padded.toarray()[0], rtol=1e-4, atol=1e-6)


def test_batch_size_and_order_do_not_matter(prompts, tiny_model, tokenizer, tiny_sae):
    a = featurize(prompts, tiny_model, tokenizer, tiny_sae, batch_size=1, progress=False).toarray()
    b = featurize(prompts[::-1], tiny_model, tokenizer, tiny_sae, batch_size=4, progress=False).toarray()[::-1]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_pooling_modes_differ_and_max_dominates_mean(prompts, tiny_model, tokenizer, tiny_sae):
    mean = featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling="mean", progress=False).toarray()
    mx = featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling="max", progress=False).toarray()
    assert np.all(mx >= mean - 1e-6)
    assert not np.allclose(mx, mean)


def test_special_tokens_are_skipped(tiny_model, tokenizer, tiny_sae):
    """BOS is never pooled: a one-character prompt equals that character's code alone."""
    got = featurize(["x"], tiny_model, tokenizer, tiny_sae, pooling="max", progress=False).toarray()[0]
    with torch.no_grad():
        enc = tokenizer("x", return_tensors="pt")
        hidden = tiny_model(**enc, output_hidden_states=True).hidden_states[2][0]
        codes = tiny_sae.encode(hidden)
    np.testing.assert_allclose(got, codes[1].numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, codes.max(0).values.numpy())


def test_sae_loaded_from_folder(tmp_path, prompts, tiny_model, tokenizer, tiny_sae):
    tiny_sae.save_model(tmp_path / "sae")
    a = featurize(prompts, tiny_model, tokenizer, tiny_sae, progress=False)
    b = featurize(prompts, tiny_model, tokenizer, tmp_path / "sae", progress=False)
    np.testing.assert_array_equal(a.toarray(), b.toarray())


def test_layer_defaults_to_sae_hook(prompts, tiny_model, tokenizer):
    sae = make_tiny_sae(32, hook_name="model.layers.2")
    a = featurize(prompts, tiny_model, tokenizer, sae, progress=False)
    b = featurize(prompts, tiny_model, tokenizer, sae, layer=2, progress=False)
    np.testing.assert_array_equal(a.toarray(), b.toarray())
    assert layer_from_hook_name("blocks.6.hook_resid_post") == 6
    assert layer_from_hook_name("blocks.6.hook_resid_pre") == 6  # block 6's input
    assert layer_from_hook_name("transformer.h.3") == 3


def test_cache_resumes_after_interruption(tmp_path, monkeypatch, prompts, tiny_model, tokenizer, tiny_sae):
    full = featurize(prompts, tiny_model, tokenizer, tiny_sae, batch_size=2, progress=False)
    real_encode = fz._encode_batch
    calls = {"n": 0}

    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(fz, "_encode_batch", dies_on_third_batch)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        featurize(prompts, tiny_model, tokenizer, tiny_sae, batch_size=2, shard_size=2, cache_dir=cache, progress=False)
    assert sorted(p.name for p in cache.glob("*/shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not list(cache.glob("*/.*tmp"))

    calls["n"] = -100  # no more failures; count the batches the resumed run computes
    resumed = featurize(prompts, tiny_model, tokenizer, tiny_sae, batch_size=2, shard_size=2, cache_dir=cache, progress=False)
    assert calls["n"] == -100 + 2  # shards 2 (2 prompts) and 3 (1 prompt): one batch each
    np.testing.assert_allclose(resumed.toarray(), full.toarray(), rtol=1e-5, atol=1e-7)


def test_other_inputs_get_their_own_cache_folder(tmp_path, prompts, tiny_model, tokenizer, tiny_sae):
    """One cache root serves every input set: other settings or prompts never meet another set's shards."""
    runs = {"mean": (prompts, "mean"), "max": (prompts, "max"), "fewer prompts": (prompts[:3], "mean")}
    for texts, pooling in runs.values():
        cached = featurize(texts, tiny_model, tokenizer, tiny_sae, pooling=pooling, cache_dir=tmp_path, progress=False)
        fresh = featurize(texts, tiny_model, tokenizer, tiny_sae, pooling=pooling, progress=False)
        np.testing.assert_array_equal(cached.toarray(), fresh.toarray())
    manifests = [json.loads(p.read_text()) for p in tmp_path.glob("*/manifest.json")]
    assert sorted((m["n_prompts"], m["pooling"]) for m in manifests) == [(3, "mean"), (len(prompts), "max"), (len(prompts), "mean")]
    again = featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling="max", cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 3 and again.shape == (len(prompts), tiny_sae.cfg.d_sae)  # a rerun reuses its folder


def test_bad_input_errors(tmp_path, prompts, tiny_model, tokenizer, tiny_sae):
    with pytest.raises(ValueError, match="is 32 wide but the SAE's d_in is 16"):
        featurize(prompts, tiny_model, tokenizer, make_tiny_sae(16), progress=False)
    with pytest.raises(ValueError, match="out of range"):
        featurize(prompts, tiny_model, tokenizer, tiny_sae, layer=3, progress=False)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        featurize(["ok", "  "], tiny_model, tokenizer, tiny_sae, progress=False)
    with pytest.raises(TypeError, match="prompt 1 is a int"):
        featurize(["ok", 3], tiny_model, tokenizer, tiny_sae, progress=False)
    with pytest.raises(ValueError, match="no prompts"):
        featurize([], tiny_model, tokenizer, tiny_sae, progress=False)
    with pytest.raises(ValueError, match="unknown pooling"):
        featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling="sum", progress=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        featurize(prompts, tiny_model, tokenizer, tmp_path / "nope", progress=False)


def test_corrupt_sae_file_is_reported(tmp_path, prompts, tiny_model, tokenizer, tiny_sae):
    tiny_sae.save_model(tmp_path / "sae")
    (tmp_path / "sae" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not load the sae-lens SAE"):
        featurize(prompts, tiny_model, tokenizer, tmp_path / "sae", progress=False)


def test_nan_features_are_reported(prompts, tiny_model, tokenizer):
    sae = make_tiny_sae(32)
    with torch.no_grad():
        sae.W_enc[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        featurize(prompts, tiny_model, tokenizer, sae, progress=False)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_token_chunking_does_not_change_features(monkeypatch, prompts, tiny_model, tokenizer, tiny_sae, pooling):
    whole = featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling=pooling, progress=False).toarray()
    monkeypatch.setattr(fz, "_ENCODE_CHUNK_ELEMENTS", 3 * tiny_sae.cfg.d_sae)  # 3 tokens per SAE call
    chunked = featurize(prompts, tiny_model, tokenizer, tiny_sae, pooling=pooling, progress=False).toarray()
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)


def test_outlier_tokens_are_dropped_per_prompt():
    acts = torch.ones(2, 4, 3)
    acts[0, 1] *= 500.0  # an attention-sink-like token
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    kept = fz.outlier_token_mask(acts, mask, ratio=10.0)
    assert kept[0].tolist()[:3] == [True, False, True]
    assert kept[1].tolist()[:2] == [True, True]


def test_zoo_preprocessing_is_honoured(prompts, tiny_model, tokenizer):
    """An SAE whose entry says keep special tokens / cap the context is featurized that way."""
    plain = make_tiny_sae(32)
    keep = make_tiny_sae(32)
    keep.cfg.metadata.zoo_preprocessing = {"special_tokens": "keep", "context_length": 4, "outlier_norm_ratio": None}
    a = featurize(["x"], tiny_model, tokenizer, keep, pooling="max", progress=False).toarray()[0]
    with torch.no_grad():
        enc = tokenizer("x", return_tensors="pt")
        codes = plain.encode(tiny_model(**enc, output_hidden_states=True).hidden_states[2][0])
    np.testing.assert_allclose(a, codes.max(0).values.numpy(), rtol=1e-4, atol=1e-6)  # BOS included this time
    long = featurize(["abcdefgh"], tiny_model, tokenizer, keep, progress=False).toarray()[0]
    short = featurize(["abc"], tiny_model, tokenizer, keep, progress=False).toarray()[0]
    np.testing.assert_allclose(long, short, rtol=1e-4, atol=1e-6)  # <bos> a b c: the 4-token context cap


def test_raw_activation_sae_codes_are_the_residual_stream(prompts, tiny_model, tokenizer):
    sae = fz.raw_activation_sae(tiny_model.config.hidden_size, layer=1)
    enc = tokenizer(prompts[0], return_tensors="pt", return_special_tokens_mask=True)
    acts = residual_stream(tiny_model, 1, enc["input_ids"], enc["attention_mask"])[0]
    codes = sae.encode(acts)
    assert codes.shape[1] == 2 * tiny_model.config.hidden_size and (codes >= 0).all()
    torch.testing.assert_close(sae.decode(codes), acts)
    pooled = featurize(prompts[:1], tiny_model, tokenizer, sae, progress=False).toarray()[0]
    d = tiny_model.config.hidden_size
    real = acts[~enc["special_tokens_mask"][0].bool()].mean(0)
    np.testing.assert_allclose(pooled[:d] - pooled[d:], real.detach().numpy(), atol=1e-5, rtol=1e-4)


def test_raw_activation_sae_reads_the_tokens_of_the_sae_it_stands_in_for(tiny_model, tokenizer):
    """The raw baseline built `like` an SAE takes its context cap, special-token, sink and BOS policy."""
    from saerl_zoo.preprocessing import record_preprocessing, sae_preprocessing

    sae = make_tiny_sae(32)
    record_preprocessing(sae, context_length=4, special_tokens="keep", outlier_norm_ratio=7.5, prepend_bos=False)
    raw = fz.raw_activation_sae(tiny_model.config.hidden_size, layer=1, like=sae)
    assert sae_preprocessing(raw) == sae_preprocessing(sae)
    assert sae_preprocessing(fz.raw_activation_sae(tiny_model.config.hidden_size, layer=1)).context_length is None
    record_preprocessing(raw, context_length=4, special_tokens="keep")  # the window alone, no sink rule
    long = featurize(["abcdefgh"], tiny_model, tokenizer, raw, progress=False).toarray()[0]
    short = featurize(["abcd"], tiny_model, tokenizer, raw, progress=False).toarray()[0]
    np.testing.assert_allclose(long, short, rtol=1e-4, atol=1e-6)  # both read their first 4 tokens
