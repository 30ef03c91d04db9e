"""Verifiable rewards for GRPO: ``reward_fn(completion, row) -> float``.

* :func:`math_reward` - general math answers (LaTeX, ``\\boxed{}``, fractions,
  decimals, sets, symbolic expressions) checked for mathematical equivalence
  with `math-verify <https://github.com/huggingface/Math-Verify>`_, the
  verifier of open-r1 and TRL's accuracy reward. It runs offline.
* :func:`task_reward` - the synthetic task pool of :mod:`saerl_zoo.tasks`,
  scored by :func:`saerl_zoo.tasks.score` (first number of the completion,
  fraction answers must be given in the same reduced form).
* :func:`normalize_answer` - the one rewrite of dataset answer forms (escaped
  currency, LaTeX digit-group spaces, a closing full stop, ``°``) that every
  reward above applies to both the reference and the completion.
* :func:`math_row_reward` - :func:`math_reward` with a row's ``"answer"``,
  so it plugs into :func:`saerl_zoo.grpo.train` like :func:`task_reward`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from saerl_zoo.tasks import score

__all__ = ["math_reward", "math_row_reward", "normalize_answer", "task_reward"]


def _math_verify() -> tuple[Any, Any]:
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("math_reward needs the math-verify package: pip install math-verify") from err
    return parse, verify


# What math-verify's own normalisation (``NormalizationConfig``: basic_latex, units,
# malformed_operators, nits) already does, and so is not repeated here: plain ``$`` and
# ``\$`` inside a math group, ``\!``, ``,`` thousands separators (``1,000`` is 1000 while
# ``1,2`` and ``(1,2)`` stay a set and an interval), ``^\circ`` (dropped, never turned
# into radians), trailing ``\text{...}``/``\mbox{...}`` units, ``\dfrac``/``\tfrac``,
# and ``\%``/``percent``/``pct``.
_ESCAPED_DOLLAR = re.compile(r"(?<!\\)\\\$")  # LaTeX's literal dollar sign, never a math delimiter
_GROUP_SPACE = re.compile(r"(?<=\d)(?:(,)\\!|\\[,!])(?=\d{3}(?!\d))")  # 32,\!348 -> 32,348; 3\,000 -> 3000
_CLOSING_PERIOD = re.compile(r"(?<![.\\])\.(?=\}|\$|\\\]|\\\)|\s*$)")  # "17." "\boxed{17.}" "$17.$"


def normalize_answer(text: str) -> str:
    """``text`` with the answer forms of MATH, DeepMath and GSM8K-style sets rewritten where
    math-verify would misread them; everything else is left to math-verify.

    Why each rewrite:

    * ``\\$36``: outside a math group math-verify takes ``$`` as a delimiter and finds no
      answer; ``\\$`` is LaTeX's literal dollar, so it is dropped (``\\$5`` equals ``5``).
    * ``3\\,000``, ``32,\\!348``: a LaTeX space between digit groups is a thousands
      separator, but math-verify reads ``3\\,000`` as ``3 * 000``. Only ``\\,`` and ``\\!``
      followed by exactly three digits are dropped (``,\\!`` keeps its comma, which
      math-verify reads as a thousands separator), so a list ``1,\\ 2`` is never joined.
    * ``17.``, ``\\boxed{17.}``: a full stop closing the answer (not a decimal point, which
      has a digit after it) makes the reference unparseable.
    * ``30°``: the Unicode degree sign becomes ``^{\\circ}``, which math-verify drops.
    """
    text = _ESCAPED_DOLLAR.sub("", text)
    text = _GROUP_SPACE.sub(r"\1", text)
    text = text.replace("°", "^{\\circ}")
    return _CLOSING_PERIOD.sub("", text.strip())


def _without_percent(value: Any) -> Any:
    """A parsed answer with its percent sign dropped: ``50\\%`` is read as ``50``.

    The convention (ours, not math-verify's): a percent sign is a unit label, like
    ``^\\circ`` or ``\\text{ cm}``, so ``50\\%`` equals ``50`` but not ``0.5``, and a
    reference ``0.5`` is not matched by ``50\\%``. Why: a question that asks for a percent
    is answered in percent, and a model that writes the fraction has not done what was
    asked. math-verify alone is inconsistent here: it accepts ``50\\%`` for both ``50`` and
    ``0.5`` but ``12.5\\%`` only for ``0.125``. math-verify marks a percent as a factor
    ``UnevaluatedExpr(1/100)``; substituting 1 for that factor removes it.
    """
    from sympy import Basic, Rational, UnevaluatedExpr

    return value.xreplace({UnevaluatedExpr(Rational(1, 100)): 1}) if isinstance(value, Basic) else value


def _parse_answer(text: str, parse: Any, timeout: int | None) -> list:
    """math-verify's parse of ``text`` (already :func:`normalize_answer`-ed), percent signs dropped."""
    return [_without_percent(value) for value in parse(text, parsing_timeout=timeout)]


def math_reward(completion: str, reference: str) -> float:
    """1.0 if the final answer in ``completion`` equals ``reference`` mathematically, else 0.0.

    Both sides go through :func:`normalize_answer` first, so the way MATH,
    DeepMath and GSM8K write answers (``\\$18.90``, ``32,\\!348``, ``30^\\circ``,
    ``5\\text{ cm}``, ``\\dfrac{3}{4}``, ``17.``) matches the bare value. The
    completion is parsed by math-verify's defaults (a ``\\boxed{}`` answer wins,
    then LaTeX, then the last plain expression, e.g. GSM8K's ``#### 1,234``);
    ``reference`` may be LaTeX or a bare answer such as ``"3/4"`` or ``"x^2+1"``
    (a bare one is read as if it were boxed). ``0.5`` matches ``1/2`` and
    ``\\frac{1}{2}``; ``1,000`` matches ``1000``, while ``1, 2`` and ``(1,2)``
    stay a list and a pair; ``50\\%`` matches ``50``, not ``0.5``. math-verify's
    timeouts use ``signal.alarm``, which works only in the main thread, so in
    other threads it runs without a timeout. A reference math-verify cannot read
    gives 0.0, like a wrong answer.
    """
    parse, verify = _math_verify()
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold: list = []
    reference = normalize_answer(str(reference))
    candidates = [reference] if ("$" in reference or "\\boxed" in reference) else [f"\\boxed{{{reference}}}", reference]
    for text in candidates:
        gold = _parse_answer(text, parse, timeout)
        if gold:
            break
    if not gold:  # an unreadable reference rewards nothing (a broken data row, not a crash)
        return 0.0
    answer = _parse_answer(normalize_answer(completion), parse, timeout)
    if not answer:
        return 0.0
    return 1.0 if verify(gold, answer, timeout_seconds=timeout) else 0.0


def math_row_reward(completion: str, row: dict) -> float:
    """:func:`math_reward` against ``row["answer"]``, in the ``reward_fn(completion, row)`` shape."""
    return math_reward(completion, row["answer"])


def task_reward(completion: str, row: dict) -> float:
    """Reward for a :mod:`saerl_zoo.tasks` row (``{"prompt", "answer", ...}``): :func:`saerl_zoo.tasks.score`
    of the :func:`normalize_answer` forms, so ``\\$1,\\!234`` counts as ``1234`` here as in :func:`math_reward`."""
    return score(normalize_answer(completion), normalize_answer(str(row["answer"])))
