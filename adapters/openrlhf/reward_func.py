"""OpenRLHF reward function (``--reward.remote_url adapters/openrlhf/reward_func.py``): math-verify against the label.

OpenRLHF 0.11.2 loads this file in its rollout workers and calls ``reward_func(queries, prompts,
labels)`` with the decoded prompt + completion, the prompt and the row's ``--data.label_key`` value
(here the reference ``answer``). The completion is what follows the prompt; it is scored by
:func:`saerl_zoo.rewards.math_reward` (a ``\\boxed{}`` answer, or the last expression).
"""

from __future__ import annotations

import torch

from saerl_zoo.rewards import math_reward


def completion_of(query: str, prompt: str) -> str:
    """The text generated after ``prompt`` (the query may carry special tokens around it); all of it if absent."""
    return query.rpartition(prompt)[2]


def reward_func(queries: list[str], prompts: list[str], labels: list[str]) -> dict:
    rewards = torch.tensor(
        [math_reward(completion_of(q, p), str(a)) for q, p, a in zip(queries, prompts, labels)], dtype=torch.float32
    )
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"accuracy": rewards}}
