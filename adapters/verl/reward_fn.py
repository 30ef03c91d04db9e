"""veRL reward function (``custom_reward_function.path=adapters/verl/reward_fn.py``): math-verify against the ground truth.

veRL's reward manager calls ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` per rollout, with the decoded response and the row's ``reward_model.ground_truth``
(written by ``prepare_data.py``).
"""

from __future__ import annotations

from typing import Any

from saerl_zoo.rewards import math_reward


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None) -> float:
    return math_reward(solution_str, str(ground_truth))
