"""saerl-zoo: SAE features of the policy model as RL data engineering.

prompts → `featurize` → `DifficultyProbe` / `QualityProbe` / `cluster` →
`SaeRLSampler` (or `build_curriculum` for the whole pipeline in one call).
Names are imported lazily so `import saerl_zoo` stays fast and never imports a
trainer framework.
"""

from __future__ import annotations

from saerl_zoo._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "featurize": "saerl_zoo.featurizer",
    "load_model": "saerl_zoo.models",
    "load_sae": "saerl_zoo.zoo.api",
    "load_probe": "saerl_zoo.zoo.api",
    "list_artifacts": "saerl_zoo.zoo.api",
    "pull": "saerl_zoo.zoo.api",
    "publish": "saerl_zoo.zoo.publishing",
    "DifficultyProbe": "saerl_zoo.difficulty",
    "QualityProbe": "saerl_zoo.quality",
    "cluster": "saerl_zoo.diversity",
    "Clustering": "saerl_zoo.diversity",
    "SaeRLSampler": "saerl_zoo.sampler",
    "quality_mask": "saerl_zoo.quality",
    "Curriculum": "saerl_zoo.curriculum",
    "build_curriculum": "saerl_zoo.curriculum",
    "curriculum_from_features": "saerl_zoo.curriculum",
    "write_ordered_dataset": "saerl_zoo.curriculum",
    "write_report": "saerl_zoo.curriculum",
    "GRPOConfig": "saerl_zoo.grpo",
    "train": "saerl_zoo.grpo",
    "StitchMap": "saerl_zoo.transfer.maps",
    "StitchedSAE": "saerl_zoo.transfer.sae",
    "check_policy": "saerl_zoo.transfer.scorer",
    "scorer_record": "saerl_zoo.transfer.scorer",
    "math_reward": "saerl_zoo.rewards",
    "task_reward": "saerl_zoo.rewards",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
