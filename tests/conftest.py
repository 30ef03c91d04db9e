"""Tiny models the tests build themselves: no download, a few KB of weights."""

from __future__ import annotations

import json
import os
import string

import numpy as np
import pytest
import torch


def make_char_tokenizer():
    """A character-level fast tokenizer that prepends BOS and returns no ``token_type_ids``, like real LM tokenizers.

    ``model_input_names`` is explicit because its default differs across transformers versions (4.x adds
    ``token_type_ids``, which a causal LM's ``generate`` refuses).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.printable)
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 3, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def make_tiny_sae(d_in: int, d_sae: int = 64, hook_name: str = "model.layers.1", seed: int = 0):
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae)
    cfg.metadata.hook_name = hook_name
    sae = StandardSAE(cfg)
    with torch.no_grad():  # random directions, no bias: about half the codes fire on a random model
        sae.W_enc.normal_(0, 1.0)
        sae.b_enc.zero_()
        sae.W_dec.copy_(sae.W_enc.T)
    return sae


def make_topk_sae(d_in: int, d_sae: int = 64, k: int = 8, hook_name: str = "model.layers.1"):
    """A sae-lens TopK SAE with random tied weights (exercises featurize's TopK fast path)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)
    cfg.metadata.hook_name = hook_name
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae


def local_sae_entry(folder, model_id: str, files: dict) -> dict:
    """A user-catalog entry for the tiny SAE saved in ``folder`` (a ``local`` source next to the catalog)."""
    return {
        "name": "test/sae", "kind": "sae", "description": "tiny", "model": {"id": model_id},
        "hook": {"module": "model.layers.1", "site": "resid_out", "layer": 1},
        "sae": {"architecture": "standard", "d_in": 32, "d_sae": 64},
        "source": {"type": "local", "format": "sae-lens", "path": folder.name}, "files": files, "license": "apache-2.0",
        "metrics": {"l0": 30.0, "explained_variance": 0.5, "dead_fraction": 0.0, "eval_set": "random"},
        "preprocessing": {"context_length": 64, "special_tokens": "drop"},
    }


def synthetic_curriculum(n: int, dropped: tuple[int, ...], *, data_seed: int = 0, seed: int = 3, mixing: float = 0.0):
    """A curriculum over n synthetic prompts: 3 random clusters, random difficulty, `dropped` filtered out."""
    import numpy as np

    from saerl_zoo.curriculum import Curriculum

    rng = np.random.default_rng(data_seed)
    keep = np.ones(n, dtype=bool)
    keep[list(dropped)] = False
    return Curriculum(
        keep=keep,
        difficulty=rng.normal(size=n),
        quality=None,
        clusters=rng.integers(0, 3, size=n),
        sampler_kwargs={"batch_size": 8, "mixing": mixing, "rotate": True, "seed": seed, "drop_last": False},
        provenance={"test": True},
    )


def save_tiny_llama(folder, layers: int = 3) -> None:
    """A tiny Llama and its char tokenizer saved with save_pretrained into `folder`, as a user's model folder looks."""
    tokenizer = make_char_tokenizer()
    make_tiny_llama(len(tokenizer), layers=layers).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def make_cli_workspace(root):
    """What the CLI tests run on, saved under `root`: a tiny model + SAE, 60 prompts, pass rates and 0/1 labels for 40."""
    save_tiny_llama(root / "model")
    make_tiny_sae(32).save_model(root / "sae")
    rng = np.random.default_rng(0)
    rows = [{"id": f"q{i}", "prompt": f"What is {a} + {b}?"} for i, (a, b) in enumerate(rng.integers(0, 999, (60, 2)))]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pass.jsonl").write_text("".join(json.dumps({"id": r["id"], "pass_rate": float(rng.random())}) + "\n" for r in rows[:40]))
    (root / "quality.jsonl").write_text("".join(json.dumps({"id": r["id"], "label": i % 2}) + "\n" for i, r in enumerate(rows[:40])))
    return rows


@pytest.fixture(scope="session")
def tokenizer():
    return make_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_sae():
    return make_tiny_sae(32)


PROMPTS = [
    "What is 2 + 3?",
    "Compute 17 * 4.",
    "A train leaves at 3pm and travels 60 km per hour; how far has it gone by 5pm?",
    "gcd(12, 18) = ?",
    "Simplify 6/8.",
    "Next in 2, 4, 8, 16, ?",
    "x",
]


@pytest.fixture()
def prompts():
    return list(PROMPTS)


@pytest.fixture(scope="session", autouse=True)
def feature_cache_in_tmp(tmp_path_factory):
    """`curriculum`'s default feature cache ($SAERL_ZOO_CACHE) goes to a temporary folder, never the user's ~/.cache."""
    old = os.environ.get("SAERL_ZOO_CACHE")
    os.environ["SAERL_ZOO_CACHE"] = str(tmp_path_factory.mktemp("saerl-zoo-cache"))
    yield
    if old is None:
        os.environ.pop("SAERL_ZOO_CACHE", None)
    else:
        os.environ["SAERL_ZOO_CACHE"] = old
