"""What a model id says about the model: family, size, line and tuning, for matching SAEs across models.

An SAE reads one model's activations. `saerl-zoo find` ranks the SAEs of
*other* models by how close their host is to the user's model, and that needs
ids read the same way whatever their spelling: a Hub id (`Qwen/Qwen2.5-7B-Instruct`),
a TransformerLens alias as sae-lens records it (`qwen3-4b`, `gemma-2-2b`,
`gpt2-small`), upper or lower case. `parse_model_id` is the one place that
reads them.

* family: the pretrained model series, name plus version (`qwen2.5`, `llama-3.1`, `gemma-3`);
* size: parameter count as written (`1.5b`, `270m`; MoE `30b-a3b`; GPT-2's `small`..`xl`);
* line: anything that makes separately (pre)trained weights of the same family and size
  (`math`, `deduped`, `v0.1`); two ids of different lines are different pretrained models;
* tuning: None for a pretrained (base) model, else the post-training applied to it
  (`instruct` for -Instruct / -it / -Chat, `r1-distill` for DeepSeek's R1 distillations).

DeepSeek-R1-Distill-* models are fine-tunes of Llama / Qwen checkpoints (their
model cards name the base, and sae-lens's own Llama Scope R1 loader records
`meta-llama/Llama-3.1-8B` as the host of the R1-Distill-Llama-8B SAEs): their
family is that base's, with tuning `r1-distill`, so base <-> distill pairs rank
like base <-> instruct pairs.
"""

from __future__ import annotations

import dataclasses
import re

_SIZE = re.compile(r"\d+(?:\.\d+)?[bm]")
_ACTIVE = re.compile(r"a\d+(?:\.\d+)?b")  # MoE active parameters: 30B-A3B
_VERSION = re.compile(r"\d+(?:\.\d+)*")
_WORD_SIZES = ("small", "medium", "large", "xl")  # GPT-2's sizes, written as words
_TUNINGS = {"instruct": "instruct", "it": "instruct", "chat": "instruct"}
_BASE_WORDS = {"base", "pt"}  # gemma-3-1b-pt, Qwen3-8B-Base: the pretrained model itself
_ORG_PREFIXES = {"meta"}  # meta-llama's older ids: Meta-Llama-3-8B-Instruct
# DeepSeek-R1-Distill-<X>: the checkpoint each was fine-tuned from (DeepSeek-R1 model card).
_R1_DISTILL_BASES = {
    "qwen-1.5b": "Qwen2.5-Math-1.5B",
    "qwen-7b": "Qwen2.5-Math-7B",
    "qwen-14b": "Qwen2.5-14B",
    "qwen-32b": "Qwen2.5-32B",
    "llama-8b": "Llama-3.1-8B",
    "llama-70b": "Llama-3.3-70B-Instruct",
}


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A model id read into the parts that decide how well an SAE carries over to it."""

    family: str
    size: str | None
    line: str  # "" for the family's main line
    tuning: str | None  # None: the pretrained (base) model

    def same_weights_lineage(self, other: ModelName) -> bool:
        """Same pretrained checkpoint (family, size and line): they differ at most by post-training."""
        return (self.family, self.size, self.line) == (other.family, other.size, other.line)


def parse_model_id(model_id: str) -> ModelName:
    """Read a Hub id or a TransformerLens alias; `ValueError` for an empty one."""
    name = model_id.strip().rsplit("/", 1)[-1].lower()
    if not name:
        raise ValueError(f"model id {model_id!r} is empty")
    distill = re.fullmatch(r"deepseek-r1-distill-(.+)", name)
    if distill is not None and distill.group(1) in _R1_DISTILL_BASES:
        base = parse_model_id(_R1_DISTILL_BASES[distill.group(1)])
        return dataclasses.replace(base, tuning="r1-distill")
    tokens = [t for t in re.split(r"[-_]", name) if t]
    if tokens and tokens[0] in _ORG_PREFIXES and len(tokens) > 1:
        tokens = tokens[1:]
    tuning = next((_TUNINGS[t] for t in tokens if t in _TUNINGS), None)
    tokens = [t for t in tokens if t not in _TUNINGS and t not in _BASE_WORDS]
    size_at = next((i for i, t in enumerate(tokens) if _SIZE.fullmatch(t)), None)
    size: str | None = None
    if size_at is not None:
        size = tokens.pop(size_at)
        if size_at < len(tokens) and _ACTIVE.fullmatch(tokens[size_at]):
            size += "-" + tokens.pop(size_at)
    family_tokens = tokens[:1]
    rest = tokens[1:]
    while rest and _VERSION.fullmatch(rest[0]) and (size_at is None or len(family_tokens) < size_at):
        family_tokens.append(rest.pop(0))
    if size is None:
        word = next((t for t in rest if t in _WORD_SIZES), None)
        if word is not None:
            rest.remove(word)
            size = word
        elif family_tokens == ["gpt2"]:
            size = "small"  # `gpt2` is GPT-2 small (TransformerLens calls it gpt2-small)
    return ModelName("-".join(family_tokens), size, "-".join(rest), tuning)
