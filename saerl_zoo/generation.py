"""Batched sampling of k completions per prompt: the rollouts that pass-rate labels and evaluations are made of.

Two backends, one contract: :class:`Generator` turns prompts into token ids
itself (chat template or not, checked against the model's context), then
samples exactly softmax(logits / temperature), no top-k/top-p, the
distribution GRPO trains on; temperature 0 decodes greedily.

* ``transformers``: :func:`saerl_zoo.grpo.sample_completions`, the bundled
  GRPO loop's own sampler, on a model from :func:`saerl_zoo.models.load_model`
  (a folder, a Hub id or a GGUF file).
* ``vllm``: vLLM's documented offline API, ``LLM.generate`` of token-id
  prompts with ``SamplingParams(n=..., temperature=..., top_p=1.0, max_tokens=..., seed=...)``.
  ``auto`` picks it only when vLLM is importable and CUDA is present.

Why prompts are tokenized here for both backends: one place decides the chat
template and refuses a prompt whose rollout would not fit the context, so
neither backend silently truncates a completion (a cut completion would score
as a wrong answer, and the pass rate would be silently low).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from saerl_zoo.errors import UserError

BACKENDS = ("auto", "transformers", "vllm")


class Completion(NamedTuple):
    """One sampled completion, and whether it was cut at max_new_tokens before it ended (its score may be wrong)."""

    text: str
    cut: bool


class ContextError(UserError):
    """A prompt whose rollout (prompt + max_new_tokens) does not fit the model's context."""


def has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> vLLM when it is installed, CUDA is present and ``device`` is a CUDA one, else transformers."""
    if backend not in BACKENDS:
        raise UserError(f"unknown generation backend {backend!r}: use {', '.join(BACKENDS)}")
    if backend == "auto":
        import torch

        return "vllm" if has_vllm() and torch.cuda.is_available() and str(device).startswith("cuda") else "transformers"
    if backend == "vllm" and not has_vllm():
        raise UserError("--backend vllm needs the vllm package (not installed): pip install vllm, or use --backend transformers")
    return backend


class Generator:
    """``n`` sampled completions per prompt from one model, by transformers or vLLM.

    ``chat_template``: None applies the tokenizer's chat template when it has
    one; True requires one (refused in one line when the tokenizer has none);
    False uses the prompt text as it is. ``batch_size`` is the number of
    completions per ``generate`` call (transformers only; vLLM batches
    itself). ``vllm_options`` go to ``vllm.LLM`` as they are (for example
    ``max_model_len``, ``gpu_memory_utilization``).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        backend: str = "auto",
        chat_template: bool | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 64,
        seed: int = 0,
        vllm_options: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        self.model_path, self.batch_size = str(model_path), batch_size
        self.backend = resolve_backend(backend, device)
        if self.backend == "vllm":
            if gguf_file is not None:
                raise UserError("--backend vllm does not read --gguf-file here: use --backend transformers for a GGUF model")
            from vllm import LLM

            self.llm = LLM(model=self.model_path, dtype=dtype or "auto", seed=seed, trust_remote_code=trust_remote_code,
                           **(vllm_options or {}))
            self.tokenizer = self.llm.get_tokenizer()
            self.context: int | None = self.llm.llm_engine.model_config.max_model_len
        else:
            import torch

            from saerl_zoo.featurizer import model_context
            from saerl_zoo.models import load_model

            self.model, self.tokenizer = load_model(model_path, device=device, dtype=getattr(torch, dtype) if dtype else None,
                                                    gguf_file=gguf_file, trust_remote_code=trust_remote_code)
            self.context = model_context(self.model, self.tokenizer)
        self.chat_template = self._use_chat_template(chat_template)

    def _use_chat_template(self, asked: bool | None) -> bool:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if asked and not has_template:
            raise UserError(f"model {self.model_path} has no chat template (its tokenizer defines none): "
                            "drop --chat-template, or give prompts already in the model's format")
        return has_template if asked is None else asked

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as the model will read it: chat-templated as a user turn, or the text as it is."""
        if not self.chat_template:
            return [list(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]  # the template holds them

    def check_context(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                      name: Callable[[int], str] = lambda i: f"prompt #{i + 1}") -> None:
        """Refuse, before any sampling, prompts whose prompt + ``max_new_tokens`` tokens exceed the model's context.

        ``name(i)`` says which prompt ``i`` is in the message (an id, a file line).
        """
        if max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, got {max_new_tokens}")
        if self.context is None:
            return
        over = [i for i, ids in enumerate(prompt_ids) if len(ids) + max_new_tokens > self.context]
        if over:
            i = max(over, key=lambda j: len(prompt_ids[j]))
            room = self.context - len(prompt_ids[i])
            more = f" ({len(over)} prompts in all are too long)" if len(over) > 1 else ""
            fix = f"lower --max-new-tokens to at most {room}, or leave out the longest prompts" if room > 0 else "leave out prompts this long"
            raise ContextError(
                f"{name(i)} has {len(prompt_ids[i])} tokens, and with {max_new_tokens} new tokens its rollouts would exceed "
                f"the model's {self.context}-token context{more}: {fix}"
            )

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[list[str]]:
        """``n`` completion texts for each prompt, in prompt order (prompts encoded and checked against the context first)."""
        ids = self.encode(prompts)
        self.check_context(ids, max_new_tokens)
        completions = self.generate_ids(ids, n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        return [[c.text for c in group] for group in completions]

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], *, n: int, temperature: float, max_new_tokens: int,
                     seed: int) -> list[list[Completion]]:
        """``n`` completions for each encoded prompt; the same ``seed`` and batches give the same texts."""
        if n < 1 or temperature < 0:
            raise UserError(f"need at least 1 completion per prompt and a temperature >= 0, got {n} and {temperature}")
        if self.backend == "vllm":
            from vllm import SamplingParams

            params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, seed=seed)
            requests = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
            return [[Completion(c.text, c.finish_reason == "length") for c in request.outputs] for request in requests]
        return self._generate_transformers(prompt_ids, n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)

    def _generate_transformers(self, prompt_ids: Sequence[Sequence[int]], *, n: int, temperature: float, max_new_tokens: int,
                               seed: int) -> list[list[Completion]]:
        import torch

        from saerl_zoo.grpo import sample_completions

        torch.manual_seed(seed)
        per_call = max(1, self.batch_size // n)
        out: list[list[Completion]] = []
        for start in range(0, len(prompt_ids), per_call):
            chunk = prompt_ids[start : start + per_call]
            rollout = sample_completions(self.model, self.tokenizer, chunk, group_size=n, max_new_tokens=max_new_tokens,
                                         temperature=temperature if temperature > 0 else None)
            done = [Completion(text, not ended) for text, ended in zip(rollout.texts, rollout.ended.tolist())]
            out += [done[i * n : (i + 1) * n] for i in range(len(chunk))]
        return out
