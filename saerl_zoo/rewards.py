"""Verifiable rewards for GRPO: ``reward_fn(completion, row) -> float``.

* :func:`math_reward` - general math answers (LaTeX, ``\\boxed{}``, fractions,
  decimals, sets, symbolic expressions) checked for mathematical equivalence
  with `math-verify <https://github.com/huggingface/Math-Verify>`_, the
  verifier of open-r1 and TRL's accuracy reward. It runs offline.
* :func:`task_reward` - the synthetic task pool of :mod:`saerl_zoo.tasks`,
  scored by :func:`saerl_zoo.tasks.score` (first number of the completion,
  fraction answers must be given in the same reduced form).
* :func:`math_row_reward` - :func:`math_reward` with a row's ``"answer"``,
  so it plugs into :func:`saerl_zoo.grpo.train` like :func:`task_reward`.
"""

from __future__ import annotations

import threading
from typing import Any

from saerl_zoo.tasks import score

__all__ = ["math_reward", "math_row_reward", "task_reward"]


def _math_verify() -> tuple[Any, Any]:
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("math_reward needs the math-verify package: pip install math-verify") from err
    return parse, verify


def math_reward(completion: str, reference: str) -> float:
    """1.0 if the final answer in ``completion`` equals ``reference`` mathematically, else 0.0.

    The completion is parsed by math-verify's defaults (a ``\\boxed{}``
    answer wins, then LaTeX, then the last plain expression); ``reference``
    may be LaTeX or a bare answer such as ``"3/4"`` or ``"x^2+1"`` (a bare
    one is read as if it were boxed). ``0.5`` matches ``1/2`` and
    ``\\frac{1}{2}``; ``1,000`` matches ``1000``. math-verify's timeouts use
    ``signal.alarm``, which works only in the main thread, so in other
    threads it runs without a timeout. A reference math-verify cannot read
    gives 0.0, like a wrong answer.
    """
    parse, verify = _math_verify()
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold: list = []
    reference = str(reference).strip()
    candidates = [reference] if ("$" in reference or "\\boxed" in reference) else [f"\\boxed{{{reference}}}", reference]
    for text in candidates:
        gold = parse(text, parsing_timeout=timeout)
        if gold:
            break
    if not gold:  # an unreadable reference rewards nothing (a broken data row, not a crash)
        return 0.0
    answer = parse(completion, parsing_timeout=timeout)
    if not answer:
        return 0.0
    return 1.0 if verify(gold, answer, timeout_seconds=timeout) else 0.0


def math_row_reward(completion: str, row: dict) -> float:
    """:func:`math_reward` against ``row["answer"]``, in the ``reward_fn(completion, row)`` shape."""
    return math_reward(completion, row["answer"])


def task_reward(completion: str, row: dict) -> float:
    """Reward for a :mod:`saerl_zoo.tasks` row (``{"prompt", "answer", ...}``): :func:`saerl_zoo.tasks.score`."""
    return score(completion, row["answer"])
