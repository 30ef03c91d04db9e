"""Character-offset alignment of two different tokenizers (byte-level BPE vs character-level)."""

from __future__ import annotations

import pytest
from conftest import make_char_tokenizer

from saerl_zoo.embedded import default_path
from saerl_zoo.transfer.align import align_spans, boundary_tokens

TEXTS = [
    "Q: 12+3=?  é😀 naïve\n\tend  ",  # multi-byte characters, an emoji, doubled spaces, tab, trailing spaces
    "GCD of 1024, 768?\nA:",
    "  leading spaces and 3.14159 digits",
    "ÅΩ≈ç√∫ 東京 9⁄10",
]


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_path("model")), make_char_tokenizer()


def spans(tokenizer, text, **kw):
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True, **kw)
    return [tuple(o) for o, s in zip(enc["offset_mapping"], enc["special_tokens_mask"]) if not s], enc


@pytest.mark.parametrize("text", TEXTS)
def test_pairs_are_the_tokens_completing_the_same_text_prefix(tokenizers, text):
    bpe, char = tokenizers
    s_bpe, _ = spans(bpe, text)
    s_char, _ = spans(char, text)
    pairs = align_spans(s_bpe, s_char)
    assert pairs, "no shared boundaries"
    for i, j in pairs:
        end = s_bpe[i][1]
        assert s_char[j][1] == end  # both tokens end where the same prefix text[:end] ends
        assert all(s[0] >= end for s in s_bpe[i + 1 :])  # nothing later in BPE reaches back into the prefix
        assert all(s[0] >= end for s in s_char[j + 1 :])
    # every character is a boundary of the character tokenizer, so every BPE boundary is shared
    assert [i for i, _ in pairs] == sorted(boundary_tokens(s_bpe).values())
    assert [e for e in sorted(boundary_tokens(s_bpe))] == [s_bpe[i][1] for i, _ in pairs]


def test_byte_pieces_of_one_character_pair_once_at_its_last_piece(tokenizers):
    bpe, char = tokenizers
    text = "é😀x"
    s_bpe, _ = spans(bpe, text)
    s_char, _ = spans(char, text)
    assert len(s_bpe) > len(text)  # é and 😀 are several byte-level pieces each
    pairs = align_spans(s_bpe, s_char)
    assert [(s_bpe[i], s_char[j]) for i, j in pairs] == [((0, 1), (0, 1)), ((1, 2), (1, 2)), ((2, 3), (2, 3))]
    assert [i for i, _ in pairs] == [max(k for k, s in enumerate(s_bpe) if s == (c, c + 1)) for c in range(3)]


def test_truncation_inside_a_character_drops_the_cut_piece(tokenizers):
    bpe, char = tokenizers
    text = "ab😀"
    s_full, _ = spans(bpe, text)
    cut = s_full[:-1]  # as if max_length stopped inside the emoji's bytes
    s_char, _ = spans(char, text)
    pairs = align_spans(cut, s_char, complete_a=False)
    assert [s_char[j][1] for _, j in pairs] == [1, 2]  # "a", "b"; the incomplete emoji is not paired


def test_special_and_zero_width_tokens_are_never_paired():
    assert boundary_tokens([(0, 0), (0, 2), (2, 2), (2, 5)]) == {2: 1, 5: 3}
    assert boundary_tokens([(0, 2), (2, 5)], complete=False) == {2: 0}
    assert align_spans([(0, 0), (0, 3)], [(0, 1), (1, 3)]) == [(1, 1)]
