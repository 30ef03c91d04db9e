"""Special tokens are skipped by id, whether the tokenizer added them or the prompt typed them, in featurize and collect_activations alike."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_char_tokenizer, make_tiny_llama, make_tiny_sae

from saerl_zoo.featurizer import featurize
from saerl_zoo.models import special_token_mask
from saerl_zoo.transfer.activations import collect_activations

PLAIN = ["What is 2 + 3?", "gcd(12, 18) = ?"]


@pytest.fixture(scope="module")
def chat():
    """The char tokenizer with a chat-template marker registered as a special token, and a model sized for it."""
    tok = make_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tok, make_tiny_llama(len(tok))


def test_typed_special_strings_are_flagged_by_id(chat):
    tok, _ = chat
    ids = tok(["ab<|im_start|>c<bos>é"])["input_ids"]
    assert len(ids[0]) == 7  # <bos> a b <|im_start|> c <bos> <unk>: each typed marker is one id
    assert tok(["ab<|im_start|>c<bos>é"], return_special_tokens_mask=True)["special_tokens_mask"][0][3] == 0  # what HF flags
    assert special_token_mask(tok, ids) == [[1, 0, 0, 1, 0, 1, 0]]  # unknown text is not a marker


@pytest.mark.parametrize("typed", ["<|im_start|>", "<bos>", "<eos>"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_featurize_skips_typed_special_strings(chat, typed, pooling):
    """A marker typed at the end changes no earlier token (causal model), so skipping it leaves the codes unchanged."""
    tok, model = chat
    sae = make_tiny_sae(32)
    plain = featurize(PLAIN, model, tok, sae, pooling=pooling, progress=False).toarray()
    typed_in = featurize([p + typed for p in PLAIN], model, tok, sae, pooling=pooling, progress=False).toarray()
    np.testing.assert_allclose(typed_in, plain, rtol=1e-5, atol=1e-6)


def test_featurize_keep_policy_keeps_typed_special_strings(chat):
    tok, model = chat
    keep = make_tiny_sae(32)
    keep.cfg.metadata.zoo_preprocessing = {"special_tokens": "keep", "context_length": 64, "outlier_norm_ratio": None}
    plain = featurize(PLAIN, model, tok, keep, progress=False).toarray()
    typed_in = featurize([p + "<|im_start|>" for p in PLAIN], model, tok, keep, progress=False).toarray()
    assert not np.allclose(typed_in, plain)


def test_collect_activations_skips_typed_special_strings(chat):
    tok, model = chat
    plain = collect_activations(model, tok, PLAIN, [1], progress=False)
    typed_in = collect_activations(model, tok, [p + "<|im_start|>" for p in PLAIN], [1], progress=False)
    np.testing.assert_array_equal(typed_in.text_ptr, plain.text_ptr)
    np.testing.assert_allclose(typed_in.layers[1], plain.layers[1], rtol=1e-5, atol=1e-6)
    inside = collect_activations(model, tok, ["ab<|im_start|>cd"], [1], progress=False)
    assert inside.spans.tolist() == [[0, 1], [1, 2], [14, 15], [15, 16]]  # the marker's span is not among the tokens


@pytest.mark.parametrize("run", ["featurize", "collect_activations"])
def test_prompt_of_special_strings_only_is_refused(chat, run):
    tok, model = chat
    with pytest.raises(ValueError, match="1 .* no tokens besides special tokens"):
        if run == "featurize":
            featurize(["x", "<|im_start|><eos>"], model, tok, make_tiny_sae(32), progress=False)
        else:
            collect_activations(model, tok, ["x", "<|im_start|><eos>"], [1], progress=False)
