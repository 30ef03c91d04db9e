"""OpenRLHF adapter: ``train_ppo_ray`` unchanged, with its prompts drawn in SaeRL order.

Usage — the normal OpenRLHF command with this module in front and one flag::

    python -m saerl_zoo.adapters.openrlhf --saerl-curriculum runs/curriculum \\
        --actor.model_name_or_path ... --data.prompt_dataset prompts.jsonl ...   # any train_ppo_ray flags

How it plugs in (read from OpenRLHF 0.11.2). The prompt loader is built inside
the trainer, a Ray actor: ``PPOTrainer.__init__`` (or, with
``--train.async_enable``, the ``GenerateSamplesActor`` that ``PPOTrainerAsync``
starts) calls ``prepare_datasets``, which calls ``strategy.setup_dataloader(ds,
1, True, True, ...)``: a torchdata ``StatefulDataLoader`` of batch size 1 with
``shuffle=True`` and no ``sampler=``. ``SamplesGenerator`` pulls prompts from
it one at a time (``n_samples_per_prompt`` is expanded inside vLLM, so the
loader yields unique prompts), ``fit`` checkpoints it as
``data_loader_state_dict`` and restores it on resume. The launcher

1. rebinds ``openrlhf.trainer.ppo_trainer.PPOTrainer`` and
   ``openrlhf.trainer.ppo_trainer_async.PPOTrainerAsync`` in the driver to a
   stand-in whose ``.remote(...)`` creates OpenRLHF's own actor with the same
   arguments and then runs :func:`_install_in_actor` inside it (Ray's
   ``__ray_call__``), before anything else is asked of the actor;
2. runs ``openrlhf.cli.train_ppo_ray`` as ``__main__``, unchanged.

Inside the actor, :func:`install_prompt_sampler` rebuilds the loader through
OpenRLHF's own ``setup_dataloader`` with ``sampler=`` a SaeRL sampler (one SaeRL
global batch = ``--rollout.batch_size`` prompts, one replica: the trainer is a
single controller), puts it in both places that hold it
(``trainer.prompts_dataloader`` and ``trainer.samples_generator.prompts_dataloader``)
and recomputes ``max_steps`` for the prompts the quality filter keeps. The
sampler implements ``state_dict``/``load_state_dict``, which the
``StatefulDataLoader`` stores inside its own state, so OpenRLHF's
``data_loader_state_dict`` resumes the SaeRL order exactly; each episode gets
the next SaeRL epoch (OpenRLHF never calls ``set_epoch``).

Requirements: ``saerl-zoo`` installed wherever Ray may place the trainer actor
(as ``openrlhf`` is); the curriculum directory readable there (like
``--data.prompt_dataset``); the curriculum built from exactly the rows
``prepare_datasets`` loads, in order — one prompt dataset, no
``--data.prompt_probs`` blending, ``--data.max_samples`` no smaller than it.

Fallback without the sampler: write the prompts in SaeRL order with
:func:`saerl_zoo.curriculum.write_ordered_dataset` and train on that file with
shuffling off. OpenRLHF 0.11.2 has no flag for that (``prepare_datasets``
passes ``shuffle=True``); ``--saerl-preordered`` here reads the file in order
(no curriculum needed), or change that ``True`` (the 4th argument of the
prompts' ``setup_dataloader`` call) to ``False`` in your OpenRLHF copy. The
file fixes one epoch's order, repeated every episode.

Online reward feedback is not wired into OpenRLHF (its rollouts carry prompt
texts, not dataset indices).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.extras import require
from saerl_zoo.feedback import TrainerSampler

__all__ = ["install", "install_prompt_sampler", "main"]

TRAINER_MODULES = {
    "openrlhf.trainer.ppo_trainer": "PPOTrainer",
    "openrlhf.trainer.ppo_trainer_async": "PPOTrainerAsync",
}
# The adapter sets these itself: one SaeRL global batch is one rollout batch of a single controller.
_RESERVED = frozenset({"batch_size", "num_replicas", "rank", "drop_last", "feedback"})


def _arg(args: Any, *paths: str) -> Any:
    """The first of ``paths`` ("rollout.batch_size", ...) present in OpenRLHF's (nested) args."""
    for path in paths:
        value: Any = args
        try:
            for part in path.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError(f"OpenRLHF args have none of {paths}")


def _max_steps(args: Any, n_prompts: int) -> int:
    """``prepare_datasets``'s step count, for ``n_prompts`` prompts per episode."""
    return (
        n_prompts
        * _arg(args, "rollout.n_samples_per_prompt", "n_samples_per_prompt")
        // _arg(args, "train.batch_size", "train_batch_size")
        * _arg(args, "train.num_episodes", "num_episodes")
        * _arg(args, "train.max_epochs", "max_epochs")
    )


def install_prompt_sampler(
    trainer: Any,
    curriculum: Curriculum | str | os.PathLike[str] | None,
    *,
    overrides: dict[str, Any] | None = None,
    preordered: bool = False,
) -> dict[str, Any]:
    """Swap the prompt loader of an OpenRLHF trainer object for one in SaeRL order.

    ``trainer`` is what holds ``prompts_dataloader`` and ``samples_generator``
    (``PPOTrainer`` or ``GenerateSamplesActor``), in this process. The new
    loader comes from the trainer's own ``strategy.setup_dataloader`` with the
    old loader's dataset, batch size, collate function, pinning and workers.
    ``overrides`` go to :meth:`Curriculum.sampler` (``mixing``, ``rotate``,
    ``seed``). With ``preordered=True`` the rows are read in file order
    instead (for a file from ``write_ordered_dataset``; ``curriculum`` unused).
    Returns a summary for the log.
    """
    from torch.utils.data import SequentialSampler

    generator = trainer.samples_generator
    old = trainer.prompts_dataloader
    dataset = old.dataset
    args = generator.strategy.args
    if preordered:
        sampler: Any = SequentialSampler(dataset)  # torchdata fast-forwards it on resume
    else:
        if curriculum is None:
            raise ValueError("a curriculum is needed unless preordered=True")
        curriculum = curriculum if isinstance(curriculum, Curriculum) else Curriculum.load(curriculum)
        overrides = dict(overrides or {})
        reserved = _RESERVED & overrides.keys()
        if reserved:
            raise ValueError(f"the OpenRLHF adapter sets {sorted(reserved)} itself; do not override them")
        if len(dataset) != len(curriculum):
            raise ValueError(
                f"OpenRLHF loaded {len(dataset)} prompts but the curriculum scores {len(curriculum)}: build the "
                "curriculum from exactly the rows of --data.prompt_dataset, in order (one dataset, no "
                "--data.prompt_probs, --data.max_samples at least its size)"
            )
        batch = _arg(args, "rollout.batch_size", "rollout_batch_size")
        saerl = curriculum.sampler(num_replicas=1, rank=0, **{**overrides, "batch_size": batch, "drop_last": False})
        sampler = TrainerSampler(saerl)
    loader = generator.strategy.setup_dataloader(
        dataset,
        old.batch_size,
        old.pin_memory,
        False,
        old.collate_fn,
        drop_last=old.drop_last,
        sampler=sampler,
        num_workers=old.num_workers,
    )
    trainer.prompts_dataloader = loader
    generator.prompts_dataloader = loader
    generator._dataloader_iter = None
    trainer.max_steps = _max_steps(args, len(sampler))
    return {"prompts": len(dataset), "per_episode": len(sampler), "max_steps": trainer.max_steps, "preordered": preordered}


def _install_in_actor(actor: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Runs inside OpenRLHF's trainer actor: install the SaeRL loader where the prompts are drawn."""
    generator_actor = getattr(actor, "generator_actor", None)
    if generator_actor is not None:  # PPOTrainerAsync: the loader lives in its GenerateSamplesActor
        import ray

        return ray.get(generator_actor.__ray_call__.remote(_install_in_actor, config))
    return install_prompt_sampler(actor, config.get("curriculum"), overrides=config.get("overrides"), preordered=config.get("preordered", False))


class _SaeRLActorClass:
    """Stands in for OpenRLHF's trainer actor class in the launcher's process.

    ``.remote(...)`` creates OpenRLHF's actor with the same arguments, then
    installs the SaeRL loader inside it before returning the handle.
    """

    def __init__(self, actor_class: Any, config: dict[str, Any]) -> None:
        self.actor_class = actor_class
        self.config = config

    def options(self, **options: Any) -> _SaeRLActorClass:
        return _SaeRLActorClass(self.actor_class.options(**options), self.config)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        import ray

        handle = self.actor_class.remote(*args, **kwargs)
        summary = ray.get(handle.__ray_call__.remote(_install_in_actor, self.config))
        print(f"[saerl] prompt order installed in the OpenRLHF trainer: {summary}", flush=True)
        return handle


@contextlib.contextmanager
def install(
    curriculum: str | os.PathLike[str] | None,
    *,
    overrides: dict[str, Any] | None = None,
    preordered: bool = False,
) -> Iterator[dict[str, Any]]:
    """Within the block, OpenRLHF's trainer actor classes (sync and async) install the SaeRL loader.

    For scripts that start OpenRLHF's trainer themselves; :func:`main` wraps
    ``train_ppo_ray`` in it. The curriculum is loaded here once to fail early.
    """
    import importlib

    require("openrlhf", "the OpenRLHF adapter")
    config: dict[str, Any] = {"overrides": dict(overrides or {}), "preordered": bool(preordered)}
    if not preordered:
        if curriculum is None:
            raise ValueError("give a curriculum directory (or preordered=True)")
        Curriculum.load(curriculum)
        config["curriculum"] = os.path.abspath(curriculum)
        reserved = _RESERVED & config["overrides"].keys()
        if reserved:
            raise ValueError(f"the OpenRLHF adapter sets {sorted(reserved)} itself; do not override them")
    saved = []
    try:
        for module_name, attribute in TRAINER_MODULES.items():
            module = importlib.import_module(module_name)
            original = getattr(module, attribute)
            saved.append((module, attribute, original))
            setattr(module, attribute, _SaeRLActorClass(original, config))
        yield config
    finally:
        for module, attribute, original in saved:
            setattr(module, attribute, original)


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's own flags, and the rest for ``train_ppo_ray``."""
    parser = argparse.ArgumentParser(
        prog="python -m saerl_zoo.adapters.openrlhf",
        description="Run openrlhf.cli.train_ppo_ray with its prompts in SaeRL order; other flags go to train_ppo_ray.",
    )
    parser.add_argument("--saerl-curriculum", help="directory of a saved Curriculum over --data.prompt_dataset")
    parser.add_argument(
        "--saerl-override", action="append", type=_parse_override, default=[], metavar="KEY=VALUE",
        help="sampler setting (mixing, rotate, seed), JSON value; repeatable",
    )
    parser.add_argument(
        "--saerl-preordered", action="store_true",
        help="read --data.prompt_dataset in file order (a file from write_ordered_dataset); no curriculum",
    )
    ours, rest = parser.parse_known_args(list(argv))
    if ours.saerl_preordered == bool(ours.saerl_curriculum):
        parser.error("give exactly one of --saerl-curriculum or --saerl-preordered")
    return ours, rest


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m saerl_zoo.adapters.openrlhf [--saerl-...] <train_ppo_ray flags>``."""
    ours, rest = parse_args(sys.argv[1:] if argv is None else argv)
    with install(ours.saerl_curriculum, overrides=dict(ours.saerl_override), preordered=ours.saerl_preordered):
        old_argv = sys.argv
        sys.argv = ["openrlhf.cli.train_ppo_ray", *rest]
        try:
            runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
        finally:
            sys.argv = old_argv


if __name__ == "__main__":
    main()
