"""Trainer adapters: feed a SaeRL curriculum to an RL framework's own training loop.

Each adapter lives in its own submodule and imports its framework when that
submodule is imported, so ``import saerl_zoo.adapters`` stays free of any
trainer framework. Import the one you need explicitly::

    from saerl_zoo.adapters.trl import SaeRLGRPOTrainer, make_trl_trainer
    from saerl_zoo.adapters.verl import SaeRLVerlSampler      # veRL: data.sampler / train_sampler
    python -m saerl_zoo.adapters.openrlhf --saerl-curriculum DIR ...  # OpenRLHF launcher
    python -m saerl_zoo.adapters.verl +data.sampler.saerl_curriculum=DIR ...  # veRL >= 0.8 launcher

The names below are also reachable as attributes of this package; they are
resolved lazily, on first access, and only then import the framework.
"""

from __future__ import annotations

from saerl_zoo._lazy import lazy_exports

_EXPORTS = {
    "SaeRLGRPOTrainer": "saerl_zoo.adapters.trl",
    "SaeRLRepeatSampler": "saerl_zoo.adapters.trl",
    "make_trl_trainer": "saerl_zoo.adapters.trl",
    "repeat_layout": "saerl_zoo.adapters.trl",
    "install_prompt_sampler": "saerl_zoo.adapters.openrlhf",
    "SaeRLVerlSampler": "saerl_zoo.adapters.verl",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
