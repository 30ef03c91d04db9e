"""veRL adapter: :class:`SaeRLVerlSampler`, the SaeRL order as veRL's training sampler.

veRL up to 0.7.x takes a sampler class by config (read from veRL 0.7.1's
``create_rl_sampler``): it is built as ``cls(data_source=train_dataset,
data_config=config.data)``, must subclass veRL's ``AbstractSampler``, and —
as an ``AbstractCurriculumSampler`` — gets ``update(batch=...)`` after every
training step; veRL then requires ``data.dataloader_num_workers=0``. Two lines
of config::

    data.sampler.class_path=pkg://saerl_zoo.adapters.verl data.sampler.class_name=SaeRLVerlSampler
    +data.sampler.saerl_curriculum=/path/to/curriculum data.dataloader_num_workers=0

From 0.8 that hook is gone (read from veRL 0.8.0 and 0.9.1): ``create_rl_sampler``
only knows shuffle/sequential and ``RayPPOTrainer(train_sampler=...)`` is the
way in. The launcher runs veRL's own ``verl.trainer.main_ppo`` (hydra flags
unchanged) and, inside its ``TaskRunner`` actor, replaces
``create_rl_sampler`` so it returns a :class:`SaeRLVerlSampler` when
``data.sampler.saerl_curriculum`` is set — for the legacy ``RayPPOTrainer``
(which receives it as ``train_sampler``) and the 0.9 v1 trainers alike::

    python -m saerl_zoo.adapters.verl +data.sampler.saerl_curriculum=/path/to/curriculum <main_ppo overrides>

The sampler (settings under ``data.sampler``):

* ``saerl_curriculum``: directory of a saved Curriculum over exactly the rows
  of ``data.train_files`` as veRL loads them (no ``filter_overlong_prompts``
  dropping rows, ``train_max_samples`` at least their number);
* ``saerl_overrides``: sampler settings (``mixing``, ``rotate``, ``seed``);
* ``saerl_feedback``: ``true`` or a dict of :class:`~saerl_zoo.feedback.OnlineFeedback`
  settings to correct the difficulty from rewards through veRL's
  ``update(batch)`` (veRL <= 0.7 only: later versions never call it);
* ``saerl_index_key``: where each rollout's dataset row is found, in
  ``batch.non_tensor_batch`` or in its ``extra_info`` dicts (default: ``index``,
  which veRL's ``RLHFDataset`` copies from ``extra_info.index``, as veRL's
  preprocessing scripts write it: the row position).

One SaeRL global batch is one step: ``data.train_batch_size`` prompts, the
last short batch dropped as veRL's loader drops it. The sampler lives in the
single-controller process (one replica), advances the SaeRL epoch after each
pass (veRL never calls ``set_epoch``) and its ``state_dict`` rides inside the
``StatefulDataLoader`` state that veRL saves as ``data.pt``, so resuming
continues the order exactly; a checkpoint at an epoch's last step resumes at
the next epoch, matching veRL's step-derived epoch counter.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections import deque
from collections.abc import Sized
from typing import Any

import numpy as np

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.extras import require
from saerl_zoo.feedback import OnlineFeedback, TrainerSampler

__all__ = ["SaeRLVerlSampler", "batch_feedback", "install_create_rl_sampler", "main", "sampler_settings"]

_RESERVED = frozenset({"batch_size", "num_replicas", "rank", "drop_last", "feedback"})
# where veRL defines create_rl_sampler: 0.9 (ppo.utils), up to 0.8 (main_ppo)
_DEFINERS = ("verl.trainer.ppo.utils", "verl.trainer.main_ppo")


def _plain(value: Any) -> Any:
    """OmegaConf containers (or anything dict/list-like) as plain dicts and lists."""
    if isinstance(value, (str, bytes)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def sampler_settings(data_config: Any) -> dict[str, Any] | None:
    """The SaeRL settings under ``data.sampler`` (``None`` when ``saerl_curriculum`` is unset)."""
    sampler = data_config.get("sampler") if hasattr(data_config, "get") else None
    sampler = _plain(sampler) or {}
    if not sampler.get("saerl_curriculum"):
        return None
    feedback = sampler.get("saerl_feedback")
    if feedback not in (None, False, True) and not isinstance(feedback, dict):
        raise ValueError(f"data.sampler.saerl_feedback must be true/false or a dict of OnlineFeedback settings, got {feedback!r}")
    overrides = sampler.get("saerl_overrides") or {}
    reserved = _RESERVED & overrides.keys()
    if reserved:
        raise ValueError(f"the veRL adapter sets {sorted(reserved)} itself; do not put them in data.sampler.saerl_overrides")
    return {
        "curriculum": str(sampler["saerl_curriculum"]),
        "overrides": overrides,
        "feedback": feedback,
        "index_key": sampler.get("saerl_index_key"),
    }


def batch_feedback(batch: Any, index_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-rollout dataset rows and rewards of a veRL ``DataProto`` after a training step.

    Rows come from ``batch.non_tensor_batch[index_key]`` or, failing that, from
    each rollout's ``extra_info[index_key]`` (default key ``index``); rewards
    are the sequence scores ``token_level_scores.sum(-1)`` (before any KL
    penalty; ``token_level_rewards`` if the scores are absent).
    """
    key = index_key or "index"
    non_tensor = batch.non_tensor_batch
    if key in non_tensor:
        values = list(non_tensor[key])
    elif "extra_info" in non_tensor:
        values = [(info or {}).get(key) for info in non_tensor["extra_info"]]
    else:
        raise ValueError(f"the batch has no {key!r} and no extra_info to find the dataset rows in")
    try:
        indices = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(
            f"dataset rows under {key!r} must be integers, got {values[:3]}...: give each row its position in the "
            "training file, e.g. extra_info.index as veRL's preprocessing scripts write it, or name another "
            "column with data.sampler.saerl_index_key"
        ) from None
    tensors = batch.batch
    for name in ("token_level_scores", "token_level_rewards"):
        if name in tensors.keys():
            return indices, tensors[name].sum(-1).detach().cpu().float().numpy()
    raise ValueError("the batch has neither token_level_scores nor token_level_rewards")


class _SaeRLVerlSampler(TrainerSampler):
    """The body of :class:`SaeRLVerlSampler`; see the module docstring."""

    def __init__(self, data_source: Sized, data_config: Any) -> None:
        settings = sampler_settings(data_config)
        if settings is None:
            raise ValueError("set data.sampler.saerl_curriculum to the directory of a saved SaeRL curriculum")
        curriculum = Curriculum.load(settings["curriculum"])
        if len(data_source) != len(curriculum):
            raise ValueError(
                f"veRL loaded {len(data_source)} training prompts but the curriculum scores {len(curriculum)}: build "
                "it from exactly the rows of data.train_files (no filter_overlong_prompts dropping rows, "
                "train_max_samples at least their number)"
            )
        feedback = settings["feedback"]
        online = None
        if feedback:
            if data_config.get("dataloader_num_workers", 0) != 0:
                raise ValueError("online feedback needs data.dataloader_num_workers=0 (workers would draw ahead of it)")
            online = OnlineFeedback(**(feedback if isinstance(feedback, dict) else {}))
        batch_size = int(data_config.get("train_batch_size"))
        saerl = curriculum.sampler(
            num_replicas=1, rank=0, **{**settings["overrides"], "batch_size": batch_size, "drop_last": True, "feedback": online}
        )
        super().__init__(saerl, skip_finished_epoch=True)
        self.index_key = settings["index_key"]
        draw = max(batch_size, int(data_config.get("gen_batch_size") or 0))
        self._drawn: deque[int] = deque(maxlen=4 * draw)

    def __iter__(self):
        for index in super().__iter__():
            self._drawn.append(index)
            yield index

    def update(self, batch: Any) -> None:  # type: ignore[override]
        """veRL's curriculum hook, called after each step: feed the step's rewards back (when feedback is on)."""
        if self.sampler.feedback is None:
            return
        indices, rewards = batch_feedback(batch, self.index_key)
        unknown = set(indices.tolist()) - set(self._drawn)
        if self._drawn and unknown:
            raise ValueError(
                f"rows {sorted(unknown)[:5]} in the batch were not drawn by this sampler recently: the batch's "
                f"{self.index_key or 'index'!r} values are not positions in the training file. Give each row "
                "extra_info.index = its position (or name such a column with data.sampler.saerl_index_key)"
            )
        self.sampler.update(indices, rewards)


def _sampler_class() -> type:
    """``SaeRLVerlSampler``: a veRL ``AbstractCurriculumSampler`` where veRL has one (<= 0.7), else a plain Sampler."""
    try:
        from verl.experimental.dataset.sampler import AbstractCurriculumSampler
    except ImportError:
        bases: tuple[type, ...] = (_SaeRLVerlSampler,)
    else:
        bases = (_SaeRLVerlSampler, AbstractCurriculumSampler)
    namespace = {"__module__": __name__, "__qualname__": "SaeRLVerlSampler", "__doc__": _SaeRLVerlSampler.__doc__}
    return type("SaeRLVerlSampler", bases, namespace)


def __getattr__(name: str) -> Any:
    if name == "SaeRLVerlSampler":  # built on first use, so importing this module never imports veRL
        cls = globals()["SaeRLVerlSampler"] = _sampler_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- veRL >= 0.8: the launcher


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    def create_rl_sampler(data_config: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        sampler = data_config.get("sampler") if hasattr(data_config, "get") else None
        if sampler_settings(data_config) is None or (sampler is not None and sampler.get("class_path")):
            return original(data_config, dataset, *args, **kwargs)
        if sampler_settings(data_config)["feedback"]:
            try:
                importlib.import_module("verl.experimental.dataset.sampler")
            except ImportError:
                print("[saerl] this veRL never calls sampler.update(batch): saerl_feedback has no effect", flush=True)
        return getattr(sys.modules[__name__], "SaeRLVerlSampler")(data_source=dataset, data_config=data_config)

    create_rl_sampler._saerl_original = original  # type: ignore[attr-defined]
    return create_rl_sampler


def install_create_rl_sampler(_actor: Any = None) -> list[str]:
    """Make veRL's ``create_rl_sampler`` return :class:`SaeRLVerlSampler` when ``saerl_curriculum`` is set.

    Patches the function where veRL defines it and in every loaded module that
    imported it by name, in this process (the launcher runs it inside veRL's
    ``TaskRunner`` actor). Returns the patched module names.
    """
    originals = {}
    for name in _DEFINERS:
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module of another veRL version, or one that cannot load here
            continue
        function = vars(module).get("create_rl_sampler")
        if function is not None and not hasattr(function, "_saerl_original"):
            originals[id(function)] = function
    patched = []
    for name, module in list(sys.modules.items()):
        function = getattr(module, "__dict__", {}).get("create_rl_sampler")
        if function is not None and originals.get(id(function)) is function:
            module.create_rl_sampler = _wrap(function)
            patched.append(name)
    return sorted(patched)


class _SaeRLTaskRunner:
    """Stands in for veRL's TaskRunner actor class: creates it, then installs the sampler inside it."""

    def __init__(self, actor_class: Any) -> None:
        self.actor_class = actor_class

    def options(self, **options: Any) -> _SaeRLTaskRunner:
        return _SaeRLTaskRunner(self.actor_class.options(**options))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        import ray

        handle = self.actor_class.remote(*args, **kwargs)
        patched = ray.get(handle.__ray_call__.remote(install_create_rl_sampler))
        if not patched:
            raise RuntimeError("found no veRL create_rl_sampler to replace in the TaskRunner (unknown veRL version?)")
        print(f"[saerl] SaeRL sampler installed in veRL's TaskRunner ({', '.join(patched)})", flush=True)
        return handle


def main() -> None:
    """``python -m saerl_zoo.adapters.verl +data.sampler.saerl_curriculum=DIR <main_ppo overrides>``."""
    require("verl", "python -m saerl_zoo.adapters.verl")
    from verl.trainer import main_ppo

    original = main_ppo.run_ppo

    def run_ppo(config: Any, task_runner_class: Any = None, *args: Any, **kwargs: Any) -> Any:
        if sampler_settings(config.data) is None:
            raise SystemExit("set +data.sampler.saerl_curriculum=DIR (the saved SaeRL curriculum over data.train_files)")
        if task_runner_class is None:  # veRL <= 0.8 builds its default runner like this
            import ray

            task_runner_class = ray.remote(num_cpus=1)(main_ppo.TaskRunner)
        return original(config, _SaeRLTaskRunner(task_runner_class), *args, **kwargs)

    main_ppo.run_ppo = run_ppo
    try:
        main_ppo.main()
    finally:
        main_ppo.run_ppo = original


if __name__ == "__main__":
    main()
