"""OpenRLHF adapter: the SaeRL order through OpenRLHF's real prompt-loading code, its checkpoint, its Ray actor.

What runs here on CPU, against OpenRLHF's installed source (``pip install --no-deps
openrlhf`` plus ray, deepspeed, peft, torchdata): ``train_ppo_ray``'s real
argument parsing and validation through the launcher, the real ``PPOTrainer``
and ``GenerateSamplesActor`` constructors (``prepare_datasets``,
``blending_datasets``, ``PromptDataset``, ``DeepspeedStrategy.setup_dataloader``,
``SamplesGenerator``), prompts pulled by the real ``_collect_prompt_batch``,
the real ``data_loader_state_dict`` round trip, and the real ``PPOTrainer``
as a Ray actor on a local CPU cluster. Importing ``ppo_trainer`` needs two
GPU-only packages that cannot install here; they get stand-ins that only
provide the names imported at module level (``flash_attn.bert_padding``,
``flash_attn.utils.distributed``; ``vllm.SamplingParams``,
``vllm.inputs.TokensPrompt``, ``vllm.utils.random_uuid``) and are never
called on these paths. Generation (vLLM), the DeepSpeed models and PPO steps
need GPUs and are not run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import synthetic_curriculum

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.feedback import TrainerSampler

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 13
DROPPED = (4, 9)
ROLLOUT_BATCH = 4


def make_curriculum(n: int = N_PROMPTS) -> Curriculum:
    return synthetic_curriculum(n, DROPPED, data_seed=0, seed=3)


def saerl_order(curriculum: Curriculum, epoch: int, **overrides) -> list[int]:
    sampler = curriculum.sampler(batch_size=ROLLOUT_BATCH, **overrides)
    sampler.set_epoch(epoch)
    return sampler.order()


# ---------------------------------------------------------------- without OpenRLHF


def test_adapter_imports_without_any_trainer_framework():
    code = (
        "import sys, saerl_zoo.adapters.openrlhf as m, saerl_zoo.adapters as a; "
        "assert callable(a.install_prompt_sampler); "
        "bad = {'openrlhf', 'ray', 'deepspeed', 'vllm', 'torchdata', 'trl'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_launcher_flags_split_from_train_ppo_ray_flags():
    from saerl_zoo.adapters.openrlhf import parse_args

    ours, rest = parse_args(
        ["--saerl-curriculum", "c", "--actor.model_name_or_path", "m", "--saerl-override", "mixing=0.2",
         "--saerl-override", "rotate=false", "--rollout.batch_size", "4"]
    )
    assert ours.saerl_curriculum == "c" and dict(ours.saerl_override) == {"mixing": 0.2, "rotate": False}
    assert rest == ["--actor.model_name_or_path", "m", "--rollout.batch_size", "4"]
    with pytest.raises(SystemExit):
        parse_args(["--actor.model_name_or_path", "m"])  # neither a curriculum nor --saerl-preordered


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stateful_dataloader_resumes_the_saerl_order_exactly(num_workers):
    # OpenRLHF's loader: torchdata StatefulDataLoader, batch size 1, SaeRL sampler; state saved mid-epoch.
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    curriculum = make_curriculum()

    def loader():
        sampler = TrainerSampler(curriculum.sampler(batch_size=ROLLOUT_BATCH, mixing=0.25))
        return stateful.StatefulDataLoader(list(range(N_PROMPTS)), batch_size=1, sampler=sampler, num_workers=num_workers)

    expected = saerl_order(curriculum, 0, mixing=0.25) + saerl_order(curriculum, 1, mixing=0.25)
    first = loader()
    it = iter(first)
    head = [int(next(it)) for _ in range(6)]
    state = first.state_dict()
    torch.save(state, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    restored = loader()
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    rest = [int(x) for x in restored]  # the rest of epoch 0 ...
    rest += [int(x) for x in restored]  # ... and the next episode gets SaeRL epoch 1
    assert head + rest == expected
    assert head + [int(x) for x in it] == expected[: len(expected) // 2]


# ---------------------------------------------------------------- OpenRLHF's real code

STANDINS = {
    "flash_attn/__init__.py": "",
    "flash_attn/bert_padding.py": "index_first_axis = pad_input = rearrange = unpad_input = None\n",
    "flash_attn/utils/__init__.py": "",
    "flash_attn/utils/distributed.py": "all_gather = None\n",
    "vllm/__init__.py": "class SamplingParams:\n    def __init__(self, **kwargs):\n        self.kwargs = kwargs\n",
    "vllm/inputs.py": "class TokensPrompt(dict):\n    pass\n",
    "vllm/utils.py": "def random_uuid():\n    return '0'\n",
}


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def openrlhf_env(tmp_path_factory):
    """OpenRLHF's trainer modules imported for real, the launcher run on real CLI flags, and the files."""
    for name in ("openrlhf", "ray", "deepspeed", "peft", "torchdata"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (pip install --no-deps openrlhf; pip install ray deepspeed peft torchdata)")
    from conftest import make_char_tokenizer

    base = tmp_path_factory.mktemp("openrlhf")
    standins = base / "standins"
    for rel, text in STANDINS.items():
        (standins / rel).parent.mkdir(parents=True, exist_ok=True)
        (standins / rel).write_text(text)
    added = [m for m in ("flash_attn", "vllm") if importlib.util.find_spec(m) is None]
    if added:
        sys.path.insert(0, str(standins))
    try:
        import openrlhf.trainer.ppo_trainer  # noqa: F401
        import openrlhf.trainer.ppo_trainer_async  # noqa: F401
    finally:
        if added:
            sys.path.remove(str(standins))

    tokenizer_dir = base / "tokenizer"
    make_char_tokenizer().save_pretrained(tokenizer_dir)
    data = base / "prompts.jsonl"
    data.write_text("".join(f'{{"prompt": "question {i}", "label": "{i}"}}\n' for i in range(N_PROMPTS)))
    curriculum_dir = base / "curriculum"
    make_curriculum().save(curriculum_dir)
    yield {"standins": standins, "tokenizer": str(tokenizer_dir), "data": str(data), "curriculum": str(curriculum_dir)}
    # OpenRLHF keeps its references; later imports of flash_attn / vllm must not find the stand-ins
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(standins)):
            del sys.modules[name]


def cli_flags(env, *extra):
    return [
        "--actor.model_name_or_path", env["tokenizer"],
        "--reward.remote_url", "http://127.0.0.1:9/unused",
        "--data.prompt_dataset", env["data"],
        "--data.input_key", "prompt",
        "--data.label_key", "label",
        "--algo.advantage.estimator", "group_norm",
        "--rollout.n_samples_per_prompt", "2",
        "--rollout.batch_size", str(ROLLOUT_BATCH),
        "--train.batch_size", "8",
        "--train.num_episodes", "2",
        "--actor.num_gpus_per_node", "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def launched(openrlhf_env):
    """Run the launcher on real train_ppo_ray flags up to the strategy; keep what train() built."""
    import ray

    import openrlhf.trainer.ppo_trainer as sync_module
    import openrlhf.trainer.ppo_trainer_async as async_module
    import openrlhf.utils as utils
    from saerl_zoo.adapters import openrlhf as adapter

    seen: dict = {}
    original_strategy, original_initialized = utils.get_strategy, ray.is_initialized

    def capture(args):
        seen.update(
            args=args,
            strategy=original_strategy(args),
            bound=(sync_module.PPOTrainer, async_module.PPOTrainerAsync),
        )
        raise _Stop

    originals = (sync_module.PPOTrainer, async_module.PPOTrainerAsync)
    utils.get_strategy, ray.is_initialized = capture, lambda: True
    try:
        with pytest.raises(_Stop):
            adapter.main(["--saerl-curriculum", openrlhf_env["curriculum"], "--saerl-override", "mixing=0.25", *cli_flags(openrlhf_env)])
    finally:
        utils.get_strategy, ray.is_initialized = original_strategy, original_initialized
    assert (sync_module.PPOTrainer, async_module.PPOTrainerAsync) == originals, "the launcher restores OpenRLHF"
    return seen


def real_class(actor_class):
    return actor_class.__ray_metadata__.modified_class.__ray_actor_class__


def make_ppo_trainer(env, strategy):
    """OpenRLHF's own PPOTrainer.__init__, in this process (no model actors: they need GPUs)."""
    import openrlhf.trainer.ppo_trainer as sync_module

    cls = real_class(sync_module.PPOTrainer)
    trainer = cls.__new__(cls)
    cls.__init__(trainer, env["tokenizer"], strategy, None, None, None, None, None, do_sample=True, max_new_tokens=8)
    return trainer


def pull_prompts(loader_owner, batches=None):
    """Prompts as SamplesGenerator draws them: ``_collect_prompt_batch`` of rollout-batch size until exhausted."""
    from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch

    generator = loader_owner.samples_generator
    if generator._dataloader_iter is None:
        generator._dataloader_iter = iter(generator.prompts_dataloader)
    out = []
    while batches is None or len(out) < batches:
        prompts, _, _, exhausted = _collect_prompt_batch(generator._dataloader_iter, ROLLOUT_BATCH)
        if prompts:
            out.append([int(p.split()[-1]) for p in prompts])
        if exhausted:
            generator._dataloader_iter = None
            break
    return out


def test_launcher_runs_real_train_ppo_ray_with_the_trainer_classes_rebound(launched, openrlhf_env):
    from saerl_zoo.adapters.openrlhf import _SaeRLActorClass

    args = launched["args"]
    assert args.rollout.batch_size == ROLLOUT_BATCH and args.data.prompt_dataset == openrlhf_env["data"]
    assert all(isinstance(bound, _SaeRLActorClass) for bound in launched["bound"])
    config = launched["bound"][0].config
    assert config == {"overrides": {"mixing": 0.25}, "preordered": False, "curriculum": openrlhf_env["curriculum"]}


def test_real_ppo_trainer_draws_saerl_order_checkpoints_and_resumes(launched, openrlhf_env):
    from saerl_zoo.adapters.openrlhf import _install_in_actor

    strategy, config = launched["strategy"], launched["bound"][0].config
    curriculum = make_curriculum()
    epochs = [saerl_order(curriculum, e, mixing=0.25) for e in range(2)]

    trainer = make_ppo_trainer(openrlhf_env, strategy)
    assert trainer.max_steps == N_PROMPTS * 2 // 8 * 2  # OpenRLHF's own count over all rows
    summary = _install_in_actor(trainer, config)
    kept = N_PROMPTS - len(DROPPED)
    assert summary == {"prompts": N_PROMPTS, "per_episode": kept, "max_steps": kept * 2 // 8 * 2, "preordered": False}
    assert trainer.max_steps == summary["max_steps"]
    assert trainer.samples_generator.prompts_dataloader is trainer.prompts_dataloader
    assert len(trainer.prompts_dataloader) == kept

    # episode 0 as SamplesGenerator sees it: rollout batches of unique prompts in SaeRL order
    head = pull_prompts(trainer, batches=2)
    assert head == [epochs[0][:4], epochs[0][4:8]]
    # fit() stores this as data_loader_state_dict in the checkpoint
    state = trainer.prompts_dataloader.state_dict()
    uninterrupted = pull_prompts(trainer) + pull_prompts(trainer)
    assert [i for b in head + uninterrupted for i in b] == epochs[0] + epochs[1]

    resumed = make_ppo_trainer(openrlhf_env, strategy)
    _install_in_actor(resumed, config)
    resumed.prompts_dataloader.load_state_dict(state)  # what fit() does on resume
    assert pull_prompts(resumed) + pull_prompts(resumed) == uninterrupted


def test_real_async_generator_actor_draws_saerl_order(launched, openrlhf_env):
    import openrlhf.trainer.ppo_trainer_async as async_module

    from saerl_zoo.adapters.openrlhf import _install_in_actor

    cls = real_class(async_module.GenerateSamplesActor)
    actor = cls.__new__(cls)
    cls.__init__(actor, openrlhf_env["tokenizer"], launched["strategy"], None, vllm_lock=None, rollout_queue=None, rollout_slots=None)
    _install_in_actor(actor, launched["bound"][1].config)
    assert actor.get_max_steps() == (N_PROMPTS - len(DROPPED)) * 2 // 8 * 2
    assert [i for b in pull_prompts(actor) for i in b] == saerl_order(make_curriculum(), 0, mixing=0.25)

    # PPOTrainerAsync holds no loader: the install is forwarded to its generator actor
    calls = []

    class Handle:
        class __ray_call__:  # noqa: N801 - mimics the actor handle's method
            @staticmethod
            def remote(fn, config):
                calls.append(fn(actor, config))
                return calls[-1]

    import ray

    class AsyncTrainer:
        generator_actor = Handle()

    original_get = ray.get
    ray.get = lambda ref: ref
    try:
        assert _install_in_actor(AsyncTrainer(), launched["bound"][1].config) == calls[-1]
    finally:
        ray.get = original_get


def test_preordered_file_is_read_in_order(launched, openrlhf_env, tmp_path):
    from saerl_zoo.adapters.openrlhf import install_prompt_sampler
    from saerl_zoo.curriculum import write_ordered_dataset

    curriculum = make_curriculum()
    rows = [{"prompt": f"question {i}", "label": str(i)} for i in range(N_PROMPTS)]
    ordered = write_ordered_dataset(rows, curriculum, tmp_path / "ordered.jsonl")
    strategy = launched["strategy"]
    old = strategy.args.data.prompt_dataset
    strategy.args.data.prompt_dataset = str(ordered)
    try:
        trainer = make_ppo_trainer(openrlhf_env, strategy)
    finally:
        strategy.args.data.prompt_dataset = old
    install_prompt_sampler(trainer, None, preordered=True)
    assert [i for b in pull_prompts(trainer) for i in b] == curriculum.order()


def test_install_refuses_a_curriculum_of_other_prompts(launched, openrlhf_env):
    from saerl_zoo.adapters.openrlhf import install_prompt_sampler

    trainer = make_ppo_trainer(openrlhf_env, launched["strategy"])
    with pytest.raises(ValueError, match="curriculum scores 14"):
        install_prompt_sampler(trainer, make_curriculum(N_PROMPTS + 1))
    with pytest.raises(ValueError, match="sets"):
        install_prompt_sampler(trainer, make_curriculum(), overrides={"batch_size": 2})


def test_real_ppo_trainer_as_a_ray_actor(launched, openrlhf_env):
    """The rebound class on a local CPU Ray cluster: the actor is created by OpenRLHF's own class, the SaeRL
    loader installed inside it by __ray_call__ (saerl_zoo imported in the worker), prompts drawn there."""
    import ray

    from saerl_zoo.adapters import openrlhf as adapter

    paths = [str(openrlhf_env["standins"]), str(ROOT)]
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}},
    )
    try:
        import openrlhf.trainer.ppo_trainer as sync_module

        with adapter.install(openrlhf_env["curriculum"], overrides={"mixing": 0.25}):
            handle = sync_module.PPOTrainer.remote(
                openrlhf_env["tokenizer"], launched["strategy"], None, None, None, None, None, do_sample=True, max_new_tokens=8
            )

        def first_batches(trainer):
            from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch

            it = iter(trainer.samples_generator.prompts_dataloader)
            return [_collect_prompt_batch(it, 4)[0] for _ in range(2)], type(trainer.prompts_dataloader.sampler).__name__

        batches, sampler_name = ray.get(handle.__ray_call__.remote(first_batches))
        assert ray.get(handle.get_max_steps.remote()) == (N_PROMPTS - len(DROPPED)) * 2 // 8 * 2
    finally:
        ray.shutdown()
    order = saerl_order(make_curriculum(), 0, mixing=0.25)
    assert sampler_name == "TrainerSampler"
    assert [[int(p.split()[-1]) for p in b] for b in batches] == [order[:4], order[4:8]]
