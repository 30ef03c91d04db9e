"""Verifiers by name, and the one check every score passes: a pass rate is only as good as each reward in it.

A verifier is ``fn(completion: str, row: dict) -> float`` (the shape
:mod:`saerl_zoo.grpo` rewards have), where ``row`` is the prompt's whole row
from the prompt file. Names:

* ``math``: :func:`saerl_zoo.rewards.math_row_reward`, math-verify against the row's ``answer``;
* ``task``: :func:`saerl_zoo.rewards.task_reward`, the project's task scorer against the row's ``answer``;
* ``module:function``: a user callable, imported (the current folder is searched too, as ``python -m`` does).

A score must be a number in [0, 1] (``True``/``False`` count as 1/0). A
verifier that raises, or returns anything else (``None``, a string, NaN, 2.0),
is refused with one line naming the prompt and what came back: a pass rate
averaged over a wrong value would be silently wrong. ``KeyboardInterrupt``
is not caught, so an interrupted run stops as it would anywhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saerl_zoo.errors import UserError, one_line

VerifierFn = Callable[[str, dict[str, Any]], float]
BUILTIN = {  # name -> (callable as module:function, the row field it reads)
    "math": ("saerl_zoo.rewards:math_row_reward", "answer"),
    "task": ("saerl_zoo.rewards:task_reward", "answer"),
}


class VerifierError(UserError):
    """A verifier that cannot be loaded, raised, or returned something that is not a score in [0, 1]."""


@dataclasses.dataclass(frozen=True)
class Verifier:
    """A resolved verifier: its name, the function, the row fields it needs, and a fingerprint of its code.

    ``fingerprint`` changes when a user verifier's source file changes, so a
    resumed labelling run refuses shards scored by an older version of it.
    """

    name: str
    fn: VerifierFn
    needs: tuple[str, ...] = ()
    fingerprint: str = ""

    def check_rows(self, rows: Sequence[dict[str, Any]], name: Callable[[int], str]) -> None:
        """Refuse, before any rollout, a row without a field this verifier reads (``name(i)`` says which row)."""
        for field in self.needs:
            missing = [i for i, row in enumerate(rows) if field not in row]
            if missing:
                raise VerifierError(f"{name(missing[0])} has no {field!r} field, which the {self.name} verifier scores against "
                                    f"({len(missing)} of {len(rows)} prompts lack it)")

    def score(self, completion: str, row: dict[str, Any], where: str) -> float:
        """The verifier's score of one completion, checked; ``where`` names the prompt in a refusal."""
        try:
            value = self.fn(completion, row)
        except Exception as err:  # noqa: BLE001 - any failure of user code is reported as one line naming the prompt
            raise VerifierError(f"verifier {self.name} raised {type(err).__name__} ({one_line(err, 200)}) on {where}; "
                                "fix the verifier (a score is a number in [0, 1])") from err
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 <= value <= 1:
            raise VerifierError(f"verifier {self.name} returned {one_line(repr(value), 80)} on {where}: "
                                "a score must be a number in [0, 1]")
        return float(value)


def resolve_verifier(spec: str | VerifierFn) -> Verifier:
    """``math``, ``task``, ``module:function`` or a callable -> a :class:`Verifier` (refused in one line if it cannot be)."""
    if callable(spec):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', type(spec).__name__)}"
        return Verifier(name, _check_signature(spec, name), fingerprint=_source_fingerprint(spec))
    if spec in BUILTIN:
        target, field = BUILTIN[spec]
        return Verifier(spec, _import_callable(target, spec), needs=(field,))
    if ":" not in spec:
        raise VerifierError(f"unknown verifier {spec!r}: use {', '.join(BUILTIN)}, or module:function for your own")
    fn = _import_callable(spec, spec)
    return Verifier(spec, fn, fingerprint=_source_fingerprint(fn))


def _import_callable(target: str, spec: str) -> VerifierFn:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise VerifierError(f"verifier {spec!r} is not module:function")
    added = os.getcwd() not in sys.path
    if added:  # as `python -m` does: a verifier module beside the user's data imports without PYTHONPATH
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - a missing module or one that fails while importing
        raise VerifierError(f"verifier {spec!r}: module {module_name} does not import ({type(err).__name__}: {one_line(err, 200)}); "
                            "the current folder and PYTHONPATH are searched") from err
    finally:
        if added:
            sys.path.remove(os.getcwd())
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise VerifierError(f"verifier {spec!r}: module {module_name} has no function {attr}")
    return _check_signature(fn, spec)


def _check_signature(fn: VerifierFn, spec: str) -> VerifierFn:
    """``fn`` if it can be called as ``fn(completion, row)``; refused before any rollout otherwise."""
    try:
        inspect.signature(fn).bind("", {})
    except TypeError as err:
        raise VerifierError(f"verifier {spec!r} cannot be called as fn(completion, row): {err}") from err
    except ValueError:  # a builtin without a signature: called as it is
        pass
    return fn


def _source_fingerprint(fn: Any) -> str:
    """sha256 of the file defining ``fn`` ('' when there is none, e.g. a function typed into a REPL)."""
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        return ""
    return hashlib.sha256(Path(source).read_bytes()).hexdigest() if source and Path(source).is_file() else ""
