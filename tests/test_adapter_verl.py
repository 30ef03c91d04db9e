"""veRL adapter: the sampler contract, veRL's real create_rl_sampler / DataProto / checkpoint, the launcher patch.

Without veRL the contract is tested on stand-ins shaped like veRL's calls
(``cls(data_source=..., data_config=...)``, ``update(batch=DataProto)``). With
veRL installed (``pip install --no-deps verl`` plus tensordict, omegaconf,
hydra-core, ray, torchdata) the same flows run through veRL's own code: for
veRL <= 0.7 ``create_rl_sampler`` building the class from ``data.sampler``
and checking it, ``collate_fn``, ``DataProto`` with ``_get_gen_batch``,
``repeat(interleave=True)`` and a balance-like reorder before ``update``; for
every version, the launcher's replacement of ``create_rl_sampler`` in the
installed modules and inside a Ray actor. veRL's trainer itself (FSDP/Megatron
workers, vLLM/SGLang rollout) needs GPUs and is not run.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from saerl_zoo.adapters import verl as adapter
from conftest import synthetic_curriculum

from saerl_zoo.curriculum import Curriculum

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 23
DROPPED = (4, 9, 17)
BATCH = 4
REPEAT = 3  # rollout.n


def make_curriculum(n: int = N_PROMPTS) -> Curriculum:
    return synthetic_curriculum(n, DROPPED, data_seed=1, seed=5)


def saerl_order(epoch: int, **overrides) -> list[int]:
    sampler = make_curriculum().sampler(batch_size=BATCH, drop_last=True, **overrides)
    sampler.set_epoch(epoch)
    return sampler.order()


@pytest.fixture()
def curriculum_dir(tmp_path):
    return str(make_curriculum().save(tmp_path / "curriculum"))


def data_config(curriculum_dir, workers=0, **sampler):
    return {
        "train_batch_size": BATCH,
        "gen_batch_size": None,
        "dataloader_num_workers": workers,
        "sampler": {"class_path": None, "class_name": None, "saerl_curriculum": curriculum_dir, **sampler},
    }


class StandInBatch:
    """The two fields of veRL's DataProto that the hook reads."""

    def __init__(self, tensors, non_tensors):
        self.batch, self.non_tensor_batch = tensors, non_tensors


def reward_of(index):
    return float(index % 3 == 0)


def stand_in_batch(indices, key="index"):
    rows = np.repeat(indices, REPEAT)[::-1].copy()  # rollouts, reordered as balance_batch would
    scores = torch.zeros(len(rows), 5)
    scores[:, -1] = torch.tensor([reward_of(i) for i in rows])
    non_tensors = {"uid": np.array([str(i) for i in rows], dtype=object)}
    if key == "extra_info":
        non_tensors["extra_info"] = np.array([{"index": int(i), "split": "train"} for i in rows], dtype=object)
    else:
        non_tensors[key] = rows.astype(object)
    return StandInBatch({"token_level_scores": scores}, non_tensors)


# ---------------------------------------------------------------- the contract, no veRL needed


def test_module_imports_without_verl_and_falls_back_to_a_plain_sampler():
    code = (
        "import sys; sys.modules['verl'] = None\n"  # as if veRL were not installed
        "import saerl_zoo.adapters.verl as m\n"
        "import torch.utils.data as d\n"
        "assert issubclass(m.SaeRLVerlSampler, d.Sampler)\n"
        "print(sorted({'verl', 'ray', 'omegaconf', 'trl'} & {k for k, v in sys.modules.items() if v is not None}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_sampler_as_veRL_builds_and_iterates_it(curriculum_dir):
    sampler = adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config=data_config(curriculum_dir, saerl_overrides={"mixing": 0.25}))
    loader = DataLoader(list(range(N_PROMPTS)), batch_size=BATCH, drop_last=True, sampler=sampler)  # as RayPPOTrainer
    assert len(loader) == (N_PROMPTS - len(DROPPED)) // BATCH
    for epoch in range(3):  # veRL iterates the loader once per epoch and never calls set_epoch
        assert [i for b in loader for i in b.tolist()] == saerl_order(epoch, mixing=0.25)
    sampler.update(stand_in_batch([0, 1]))  # feedback off: a no-op


@pytest.mark.parametrize("key", ["index", "extra_info"])
def test_update_feeds_rewards_back_by_dataset_row(curriculum_dir, key):
    sampler = adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config=data_config(curriculum_dir, saerl_feedback={"prior_strength": 0.0}))
    loader = DataLoader(list(range(N_PROMPTS)), batch_size=BATCH, drop_last=True, sampler=sampler)
    seen = []
    for step, batch in enumerate(loader):
        seen += batch.tolist()
        sampler.update(stand_in_batch(batch.tolist(), key))
        if step == 1:
            break
    feedback = sampler.sampler.feedback
    assert feedback.n_updates == 2
    estimates = feedback.estimates(sampler.sampler)
    # prior_strength 0: a served prompt's estimate is its observed failure rate
    assert [estimates[i] for i in seen] == [1 - reward_of(i) for i in seen]
    state = feedback.state_dict()
    assert sorted(state["seen"]) == sorted(seen) and state["count"] == [float(REPEAT)] * len(seen)


def test_update_refuses_rows_that_are_not_positions(curriculum_dir):
    sampler = adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config=data_config(curriculum_dir, saerl_feedback=True))
    batch = next(iter(DataLoader(list(range(N_PROMPTS)), batch_size=BATCH, drop_last=True, sampler=sampler))).tolist()
    missing = sorted(set(range(N_PROMPTS)) - set(batch))[:BATCH]
    with pytest.raises(ValueError, match="not drawn by this sampler"):
        sampler.update(stand_in_batch(missing))
    zeros = stand_in_batch(batch, "extra_info")
    for info in zeros.non_tensor_batch["extra_info"]:
        info.pop("index")
    with pytest.raises(ValueError, match="must be integers"):
        sampler.update(zeros)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(workers=8, saerl_feedback=True), "dataloader_num_workers=0"),
        (dict(saerl_overrides={"batch_size": 2}), "sets"),
        (dict(saerl_feedback="yes"), "saerl_feedback"),
    ],
)
def test_bad_settings_are_refused(curriculum_dir, config, match):
    with pytest.raises(ValueError, match=match):
        adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config=data_config(curriculum_dir, **config))


def test_dataset_must_match_the_curriculum(curriculum_dir):
    with pytest.raises(ValueError, match="curriculum scores 23"):
        adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS - 1)), data_config=data_config(curriculum_dir))
    with pytest.raises(ValueError, match="saerl_curriculum"):
        adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config={"sampler": {"class_path": None}})


@pytest.mark.parametrize("stop", [2, 5, 7])  # mid-epoch, right after an epoch's last step (5 steps per epoch), later
def test_stateful_dataloader_checkpoint_resumes_exactly(curriculum_dir, stop):
    # veRL saves train_dataloader.state_dict() as data.pt and derives the epoch from global_steps // len(loader)
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    config = data_config(curriculum_dir, saerl_feedback=True)

    def loader():
        sampler = adapter.SaeRLVerlSampler(data_source=list(range(N_PROMPTS)), data_config=config)
        return stateful.StatefulDataLoader(list(range(N_PROMPTS)), batch_size=BATCH, drop_last=True, sampler=sampler), sampler

    def run(loader, sampler, epochs, stop_at=None):
        out = []
        for _epoch in epochs:  # RayPPOTrainer.fit: for epoch in range(current_epoch, total_epochs): for batch in loader
            for batch in loader:
                out.append(batch.tolist())
                sampler.update(stand_in_batch(batch.tolist()))
                if len(out) == stop_at:
                    return out, loader.state_dict()
        return out, None

    full_loader, full_sampler = loader()
    uninterrupted, _ = run(full_loader, full_sampler, range(3))
    first_loader, first_sampler = loader()
    head, state = run(first_loader, first_sampler, range(3), stop_at=stop)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    resumed_loader, resumed_sampler = loader()
    resumed_loader.load_state_dict(torch.load(buffer, weights_only=False))
    current_epoch = stop // len(resumed_loader)  # veRL's resume arithmetic: global_steps // len(train_dataloader)
    tail, _ = run(resumed_loader, resumed_sampler, range(current_epoch, 3))
    assert head + tail == uninterrupted
    assert resumed_sampler.state_dict() == full_sampler.state_dict()


def fake_verl_modules(monkeypatch):
    """A definer module and a user of ``create_rl_sampler``, shaped like veRL's."""
    def create_rl_sampler(data_config, dataset):
        return "veRL's own sampler"

    definer = types.ModuleType("fake_verl_utils")
    definer.create_rl_sampler = create_rl_sampler
    user = types.ModuleType("fake_verl_trainer")
    user.create_rl_sampler = create_rl_sampler
    monkeypatch.setitem(sys.modules, "fake_verl_utils", definer)
    monkeypatch.setitem(sys.modules, "fake_verl_trainer", user)
    monkeypatch.setattr(adapter, "_DEFINERS", ("fake_verl_utils", "no_such_module"))
    return definer, user


def test_launcher_patch_replaces_create_rl_sampler_only_for_saerl_configs(monkeypatch, curriculum_dir):
    definer, user = fake_verl_modules(monkeypatch)
    assert adapter.install_create_rl_sampler() == ["fake_verl_trainer", "fake_verl_utils"]
    assert adapter.install_create_rl_sampler() == []  # idempotent
    dataset = list(range(N_PROMPTS))
    sampler = user.create_rl_sampler(data_config(curriculum_dir), dataset)
    assert isinstance(sampler, adapter.SaeRLVerlSampler)
    assert [i for b in DataLoader(dataset, batch_size=BATCH, drop_last=True, sampler=sampler) for i in b.tolist()] == saerl_order(0)
    assert definer.create_rl_sampler({"sampler": None, "shuffle": True}, dataset) == "veRL's own sampler"
    assert definer.create_rl_sampler({"shuffle": True}, dataset) == "veRL's own sampler"


def test_launcher_task_runner_proxy_installs_inside_a_ray_actor(monkeypatch, curriculum_dir):
    ray = pytest.importorskip("ray")

    class Handle:
        class __ray_call__:  # noqa: N801 - mimics the actor handle's method
            @staticmethod
            def remote(fn):
                return fn(None)

    class RunnerClass:
        def options(self, **kw):
            assert kw == {"num_cpus": 1}
            return self

        def remote(self):
            return Handle()

    fake_verl_modules(monkeypatch)
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    handle = adapter._SaeRLTaskRunner(RunnerClass()).options(num_cpus=1).remote()
    assert isinstance(handle, Handle)
    assert isinstance(sys.modules["fake_verl_trainer"].create_rl_sampler(data_config(curriculum_dir), list(range(N_PROMPTS))), adapter.SaeRLVerlSampler)


# ---------------------------------------------------------------- veRL's real code

requires_verl = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("verl", "omegaconf", "tensordict", "torchdata")),
    reason="veRL is not installed (pip install --no-deps verl; pip install tensordict omegaconf hydra-core ray torchdata)",
)


def has_curriculum_hook() -> bool:
    try:
        importlib.import_module("verl.experimental.dataset.sampler")
    except ImportError:
        return False
    return True


@requires_verl
def test_real_verl_version_and_base_class():
    import verl

    from torch.utils.data import Sampler

    if has_curriculum_hook():
        from verl.experimental.dataset.sampler import AbstractCurriculumSampler, AbstractSampler

        assert issubclass(adapter.SaeRLVerlSampler, AbstractCurriculumSampler)
        assert issubclass(adapter.SaeRLVerlSampler, AbstractSampler)
    else:  # veRL >= 0.8 removed the hook; the class is a plain Sampler for RayPPOTrainer(train_sampler=...)
        assert adapter.SaeRLVerlSampler.__mro__[1:3] == (adapter._SaeRLVerlSampler, adapter.TrainerSampler)
    assert issubclass(adapter.SaeRLVerlSampler, Sampler)
    assert verl.__version__


@requires_verl
def test_real_create_rl_sampler_builds_it_from_the_two_config_lines(curriculum_dir):
    if not has_curriculum_hook():
        pytest.skip("this veRL (>= 0.8) has no data.sampler.class_path hook")
    from omegaconf import OmegaConf
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler
    from verl.trainer.main_ppo import create_rl_sampler

    config = OmegaConf.create(
        {"shuffle": True, "seed": None, "train_batch_size": BATCH, "gen_batch_size": None, "dataloader_num_workers": 0,
         "sampler": {"class_path": "pkg://saerl_zoo.adapters.verl", "class_name": "SaeRLVerlSampler", "saerl_curriculum": curriculum_dir}}
    )
    sampler = create_rl_sampler(config, list(range(N_PROMPTS)))
    assert isinstance(sampler, AbstractCurriculumSampler)  # what RayPPOTrainer.fit checks before calling update
    assert [i for b in DataLoader(list(range(N_PROMPTS)), batch_size=BATCH, drop_last=True, sampler=sampler) for i in b.tolist()] == saerl_order(0)
    config.dataloader_num_workers = 8
    with pytest.raises(AssertionError, match="num_workers must be 0"):  # veRL's own check
        create_rl_sampler(config, list(range(N_PROMPTS)))


class RowDataset(torch.utils.data.Dataset):
    """Rows shaped like RLHFDataset's output: tensors plus index / extra_info / data_source."""

    def __len__(self):
        return N_PROMPTS

    def __getitem__(self, i):
        return {
            "input_ids": torch.full((6,), i),
            "attention_mask": torch.ones(6, dtype=torch.long),
            "index": i,
            "extra_info": {"index": i, "split": "train"},
            "data_source": "test",
            "reward_model": {"ground_truth": str(i)},
        }


@requires_verl
def test_real_dataproto_step_feeds_back_and_data_pt_resumes(curriculum_dir):
    from omegaconf import OmegaConf
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl import DataProto
    from verl.utils.dataset.rl_dataset import collate_fn

    config = OmegaConf.create(data_config(curriculum_dir, saerl_feedback={"prior_strength": 0.0}))

    def build():
        sampler = adapter.SaeRLVerlSampler(data_source=RowDataset(), data_config=config.copy())
        return StatefulDataLoader(RowDataset(), batch_size=BATCH, num_workers=0, drop_last=True, collate_fn=collate_fn, sampler=sampler)

    def step(loader, batch_dict):
        # RayPPOTrainer.fit: DataProto, uid, gen batch popped, repeat interleaved, scores, balance-like reorder, update
        batch = DataProto.from_single_dict(batch_dict)
        batch.non_tensor_batch["uid"] = np.array([str(i) for i in range(len(batch))], dtype=object)
        reward_keys = {"data_source", "reward_model", "extra_info", "uid"}
        batch.pop(batch_keys=[], non_tensor_batch_keys=[k for k in batch.non_tensor_batch if k not in reward_keys])
        batch = batch.repeat(repeat_times=REPEAT, interleave=True)
        rows = [info["index"] for info in batch.non_tensor_batch["extra_info"]]
        scores = torch.zeros(len(batch), 5)
        scores[:, -1] = torch.tensor([reward_of(i) for i in rows])
        batch.batch["token_level_scores"] = scores
        batch.reorder(torch.randperm(len(batch), generator=torch.Generator().manual_seed(len(rows))))
        loader.sampler.update(batch=batch)
        return sorted(set(rows))

    loader = build()
    served = [step(loader, b) for _, b in zip(range(2), loader)]
    feedback = loader.sampler.sampler.feedback
    estimates = feedback.estimates(loader.sampler.sampler)
    assert [estimates[i] for b in served for i in b] == [1 - reward_of(i) for b in served for i in b]
    state = loader.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # RayPPOTrainer._save_checkpoint: data.pt
    buffer.seek(0)
    rest = [step(loader, b) for b in loader]
    resumed = build()
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert [step(resumed, b) for b in resumed] == rest
    assert resumed.sampler.state_dict() == loader.sampler.state_dict()


@requires_verl
def test_launcher_patch_against_the_installed_verl(monkeypatch, curriculum_dir):
    from omegaconf import OmegaConf

    users = []
    for name in ("verl.trainer.main_ppo_v0", "verl.trainer.ppo.ray_trainer"):  # veRL 0.9's users of it
        try:
            if "create_rl_sampler" in vars(importlib.import_module(name)):
                users.append(name)
        except Exception:  # noqa: BLE001 - other versions, or GPU-side imports missing here
            pass
    patched = adapter.install_create_rl_sampler()
    try:
        assert patched, "no create_rl_sampler found in the installed veRL"
        assert set(users) <= set(patched)
        config = OmegaConf.create({"shuffle": True, "seed": None, "train_batch_size": BATCH, "dataloader_num_workers": 8,
                                   "sampler": {"saerl_curriculum": curriculum_dir}})
        for name in patched:
            sampler = sys.modules[name].create_rl_sampler(config, list(range(N_PROMPTS)))
            assert isinstance(sampler, adapter.SaeRLVerlSampler), name
        plain = OmegaConf.create({"shuffle": False, "seed": None, "train_batch_size": BATCH, "dataloader_num_workers": 8,
                                  "sampler": {"class_path": None, "class_name": None}})
        assert type(sys.modules[patched[0]].create_rl_sampler(plain, list(range(N_PROMPTS)))).__name__ == "SequentialSampler"
        # modules imported later (veRL 0.9's trainers import it inside TaskRunner.run) get the replacement too
        definer = next(name for name in adapter._DEFINERS if name in patched)
        later = types.ModuleType("later")
        exec(f"from {definer} import create_rl_sampler", later.__dict__)
        assert hasattr(later.create_rl_sampler, "_saerl_original")
    finally:
        for name in patched:
            module = sys.modules[name]
            module.create_rl_sampler = module.create_rl_sampler._saerl_original


@requires_verl
def test_launcher_main_hands_veRLs_main_a_wrapped_task_runner(monkeypatch, curriculum_dir):
    from omegaconf import OmegaConf
    from verl.trainer import main_ppo

    calls = []
    config = OmegaConf.create({"data": {"sampler": {"saerl_curriculum": curriculum_dir}}})
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class=None: calls.append(task_runner_class))
    monkeypatch.setattr(main_ppo, "main", lambda: main_ppo.run_ppo(config, "veRL's runner"))
    fake = main_ppo.run_ppo
    adapter.main()
    assert isinstance(calls[0], adapter._SaeRLTaskRunner) and calls[0].actor_class == "veRL's runner"
    assert main_ppo.run_ppo is fake, "the launcher restores veRL's run_ppo"
    if hasattr(main_ppo, "TaskRunner"):  # veRL <= 0.8: run_ppo(config) builds the default runner
        monkeypatch.setattr(main_ppo, "main", lambda: main_ppo.run_ppo(config))
        adapter.main()
        assert type(calls[1].actor_class).__name__.startswith("ActorClass")
    monkeypatch.setattr(main_ppo, "main", lambda: main_ppo.run_ppo(OmegaConf.create({"data": {"shuffle": True}}), "x"))
    with pytest.raises(SystemExit, match="saerl_curriculum"):
        adapter.main()


@requires_verl
def test_launcher_installs_in_a_real_ray_actor(curriculum_dir):
    """The TaskRunner stand-in on a local CPU Ray cluster: veRL's create_rl_sampler, called inside the actor after
    the proxy created it, returns the SaeRL sampler (saerl_zoo and veRL imported in the worker)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        @ray.remote(num_cpus=1)
        class Runner:  # stands for veRL's TaskRunner: it calls veRL's create_rl_sampler in its run
            def run(self, curriculum_dir):
                import importlib

                from omegaconf import OmegaConf

                config = OmegaConf.create({"shuffle": True, "seed": None, "train_batch_size": 4, "dataloader_num_workers": 0,
                                           "sampler": {"saerl_curriculum": curriculum_dir}})
                for name in ("verl.trainer.ppo.utils", "verl.trainer.main_ppo"):
                    module = importlib.import_module(name)
                    if hasattr(module, "create_rl_sampler"):
                        sampler = module.create_rl_sampler(config, list(range(23)))
                        return type(sampler).__name__, list(sampler)

        handle = adapter._SaeRLTaskRunner(Runner).remote()
        name, order = ray.get(handle.run.remote(curriculum_dir))
    finally:
        ray.shutdown()
    assert name == "SaeRLVerlSampler"
    assert order == saerl_order(0)
