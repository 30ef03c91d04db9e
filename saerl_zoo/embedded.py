"""The embedded default: a tiny policy LM, its SAE, probes and prompt set, shipped in the package.

It lets every command run offline on a fresh machine, and it is the policy of
the CPU reproduction. `scripts/build_default.py` regenerates it from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).parent / "default"


def default_path(name: str) -> Path:
    """Path of one embedded artifact: model, sae, difficulty_probe, quality_probe, prompts.jsonl, ..."""
    path = DEFAULT_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"the embedded default has no {name!r} (looked in {DEFAULT_DIR}); regenerate it with scripts/build_default.py"
        )
    return path


def load_default_model(device: str = "cpu") -> tuple[Any, Any]:
    from saerl_zoo.models import load_model

    return load_model(default_path("model"), device=device)
