"""TRL adapter: the SaeRL order through a real GRPOTrainer, TRL's layout, ranks and resume."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from accelerate.data_loader import prepare_data_loader  # noqa: E402
from conftest import synthetic_curriculum, make_char_tokenizer, make_tiny_llama  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import TrainerState  # noqa: E402
from trl.trainer.grpo_trainer import RepeatSampler  # noqa: E402

from saerl_zoo.adapters.trl import (  # noqa: E402
    STATE_NAME,
    SaeRLGRPOTrainer,
    SaeRLRepeatSampler,
    make_trl_trainer,
    repeat_layout,
)
from saerl_zoo.curriculum import Curriculum  # noqa: E402
from saerl_zoo.feedback import OnlineFeedback  # noqa: E402
from saerl_zoo.storage import read_json  # noqa: E402

N_PROMPTS = 13
DROPPED = (4, 9)  # filtered out by the quality mask


def make_curriculum(n: int = N_PROMPTS, seed: int = 3, mixing: float = 0.25) -> Curriculum:
    return synthetic_curriculum(n, DROPPED, data_seed=0, seed=seed, mixing=mixing)


def saerl_order(curriculum: Curriculum, chunk: int, epoch: int = 0) -> list[int]:
    """SaeRL's own unique-prompt order at batch size = one TRL chunk."""
    sampler = curriculum.sampler(batch_size=chunk, drop_last=True)
    sampler.set_epoch(epoch)
    return sampler.order()


# ---------------------------------------------------------------- layout, no trainer


@pytest.mark.parametrize(
    "n, mini, batch, repeat",
    [(7, 2, 3, 4), (12, 3, 4, 2), (10, 1, 10, 1), (9, 2, 2, 3), (5, 2, 6, 1)],
)
def test_repeat_layout_is_trls_repeat_sampler(n, mini, batch, repeat):
    # Given the same unique-prompt order, the layout equals RepeatSampler's, index for index.
    order = np.random.default_rng(n).permutation(n).tolist()
    unshuffled = RepeatSampler(list(range(n)), mini_repeat_count=mini, batch_size=batch, repeat_count=repeat, shuffle=False)
    expected = [order[i] for i in unshuffled]
    got = repeat_layout(order, mini_repeat_count=mini, batch_size=batch, repeat_count=repeat)
    assert got == expected
    assert len(got) == len(unshuffled)

    # ...and with TRL's own shuffle: feed RepeatSampler's permutation to the layout.
    shuffled = RepeatSampler(list(range(n)), mini_repeat_count=mini, batch_size=batch, repeat_count=repeat, seed=11)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(11)).tolist()
    assert repeat_layout(permutation, mini_repeat_count=mini, batch_size=batch, repeat_count=repeat) == list(shuffled)


def test_sampler_lays_out_saerl_order():
    curriculum = make_curriculum()
    sampler = SaeRLRepeatSampler.from_curriculum(
        curriculum, num_generations=2, generation_batch_size=6, steps_per_generation=2, num_iterations=2
    )
    chunk, repeat = 3, 4
    assert (sampler.batch_size, sampler.mini_repeat_count, sampler.repeat_count) == (chunk, 2, repeat)
    order = saerl_order(curriculum, chunk)
    # 11 prompts kept -> 3 full chunks of 3; the short trailing SaeRL batch is dropped, as TRL drops it
    assert len(order) == 9 and sampler.order() == order
    assert sampler.chunks() == curriculum.sampler(batch_size=chunk, drop_last=True).global_batches()
    assert not set(DROPPED) & set(order)
    items = list(sampler)
    assert items == repeat_layout(order, mini_repeat_count=2, batch_size=chunk, repeat_count=repeat)
    assert len(sampler) == len(items) == 9 * 2 * repeat
    assert sampler.position == len(items)
    # no `generator` attribute: accelerate would otherwise install and re-broadcast a random one
    assert not hasattr(sampler, "generator")

    sampler.set_epoch(1)
    assert sampler.epoch == 1
    assert sampler.order() == saerl_order(curriculum, chunk, epoch=1) != order
    assert list(sampler) == repeat_layout(saerl_order(curriculum, chunk, 1), mini_repeat_count=2, batch_size=chunk, repeat_count=repeat)


def test_every_rank_yields_the_same_sequence_and_accelerate_deals_it_like_trl():
    # 2 ranks, per_device_train_batch_size 2, steps_per_generation 2 -> generation_batch_size 8;
    # num_generations 2 -> chunks of 4 unique prompts, each chunk repeated 2 times.
    processes, per_device, steps_per_gen, num_gen = 2, 2, 2, 2
    generation_batch = per_device * processes * steps_per_gen
    curriculum = make_curriculum()
    dataset = list(range(N_PROMPTS))
    per_rank: dict[int, list[list[int]]] = {}
    samplers = []
    for rank in range(processes):
        torch.manual_seed(1000 + rank)  # ranks have different global RNG states
        sampler = SaeRLRepeatSampler.from_curriculum(
            curriculum, num_generations=num_gen, generation_batch_size=generation_batch, steps_per_generation=steps_per_gen
        )
        samplers.append(sampler)
        loader = DataLoader(dataset, batch_size=per_device * steps_per_gen, sampler=sampler)  # as GRPOTrainer builds it
        loader = prepare_data_loader(
            loader, num_processes=processes, process_index=rank, put_on_device=False, rng_types=["generator"]
        )
        batches = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            batches.append([batch.tolist() for batch in loader])
        per_rank[rank] = batches
    assert list(samplers[0]) == list(samplers[1])

    for epoch in range(2):
        order = saerl_order(curriculum, generation_batch // num_gen, epoch)
        layout = repeat_layout(order, mini_repeat_count=num_gen, batch_size=generation_batch // num_gen, repeat_count=steps_per_gen)
        # step t: rank 0 and rank 1 together hold the t-th generation batch of the global layout
        steps = list(zip(per_rank[0][epoch], per_rank[1][epoch]))
        assert [index for pair in steps for batch in pair for index in batch] == layout
        for t, (first, second) in enumerate(steps):
            chunk = order[(t // steps_per_gen) * 4 : (t // steps_per_gen + 1) * 4]
            assert first + second == [i for i in chunk for _ in range(num_gen)]
    assert per_rank[0][0] + per_rank[1][0] != per_rank[0][1] + per_rank[1][1]  # epochs follow SaeRL's per-epoch order


def test_sampler_validation():
    curriculum = make_curriculum()
    with pytest.raises(ValueError, match="divisible by num_generations"):
        SaeRLRepeatSampler.from_curriculum(curriculum, num_generations=4, generation_batch_size=6, steps_per_generation=1)
    with pytest.raises(ValueError, match="fewer than one TRL generation chunk"):
        SaeRLRepeatSampler.from_curriculum(curriculum, num_generations=2, generation_batch_size=24, steps_per_generation=1)
    with pytest.raises(ValueError, match="sets .*batch_size"):
        SaeRLRepeatSampler.from_curriculum(
            curriculum, num_generations=2, generation_batch_size=4, steps_per_generation=1, batch_size=5
        )
    with pytest.raises(ValueError, match="num_replicas=1"):
        SaeRLRepeatSampler(curriculum.sampler(batch_size=2, num_replicas=2), mini_repeat_count=2, batch_size=2)
    with pytest.raises(ValueError, match="chunk size"):
        SaeRLRepeatSampler(curriculum.sampler(batch_size=3), mini_repeat_count=2, batch_size=2)


def test_trainer_refuses_mismatched_datasets_before_building_the_model():
    from datasets import Dataset

    curriculum = make_curriculum()
    short = Dataset.from_dict({"prompt": ["a"] * (N_PROMPTS - 1)})
    # model=None would fail inside GRPOTrainer; the curriculum check must come first
    with pytest.raises(ValueError, match="12 rows but the curriculum scores 13"):
        SaeRLGRPOTrainer(model=None, reward_funcs=None, train_dataset=short, curriculum=curriculum)
    with pytest.raises(TypeError, match="IterableDataset"):
        SaeRLGRPOTrainer(None, None, None, short.to_iterable_dataset(), curriculum=curriculum)
    with pytest.raises(TypeError, match="Curriculum"):
        SaeRLGRPOTrainer(model=None, train_dataset=short, curriculum=42)


def test_importing_saerl_zoo_and_adapters_does_not_import_trl():
    code = (
        "import sys, saerl_zoo, saerl_zoo.adapters, saerl_zoo.sampler, saerl_zoo.curriculum; "
        "assert 'trl' not in sys.modules, 'trl imported eagerly'; "
        "assert 'saerl_zoo.adapters.trl' not in sys.modules; "
        "assert 'SaeRLGRPOTrainer' in dir(saerl_zoo.adapters); "
        "saerl_zoo.adapters.SaeRLGRPOTrainer; assert 'trl' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- a real GRPOTrainer


@pytest.fixture(scope="module")
def tokenizer():
    tok = make_char_tokenizer()
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def dataset():
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"q{i:02d}=" for i in range(N_PROMPTS)], "idx": list(range(N_PROMPTS))})


class Recorder:
    """Reward function that records the prompts TRL generated for, and the sampler's live position.

    ``reward(index, global_step)`` sets the rewards (default: completion length).
    """

    __name__ = "recorder"

    def __init__(self, dataset, reward=None):
        self.text_to_idx = {p: i for i, p in enumerate(dataset["prompt"])}
        self.calls: list[list[int]] = []
        self.positions: list[int] = []
        self.rewards: list[list[float | None]] = []
        self.reward = reward
        self.trainer = None

    def __call__(self, prompts, completions, idx, trainer_state, **kwargs):
        from_text = [self.text_to_idx[p] for p in prompts]
        assert from_text == list(idx)  # the prompts TRL fed to generation are the rows it loaded
        self.calls.append(from_text)
        if self.trainer is not None and self.trainer.saerl_sampler is not None:
            self.positions.append(self.trainer.saerl_sampler.position)
        if self.reward is None:
            out = [float(len(c)) for c in completions]
        else:
            out = [self.reward(i, trainer_state.global_step) for i in from_text]
        self.rewards.append(out)
        return out


def grpo_args(output_dir, **overrides):
    from trl import GRPOConfig

    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=2,
        learning_rate=1e-3,
        report_to=[],
        bf16=False,
        use_vllm=False,
        gradient_checkpointing=False,
        logging_steps=1000,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def train(tokenizer, dataset, curriculum, output_dir, resume=None, *, reward=None, extra_rewards=(), feedback=None,
          **overrides):
    recorder = Recorder(dataset, reward)
    trainer = make_trl_trainer(
        make_tiny_llama(len(tokenizer)),
        [recorder, *extra_rewards] if extra_rewards else recorder,
        grpo_args(output_dir, **overrides),
        dataset,
        curriculum=curriculum,
        processing_class=tokenizer,
        feedback=feedback,
    )
    recorder.trainer = trainer
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return trainer, recorder


def expected_generations(curriculum, chunk, num_generations, epochs):
    """One entry per generation call: each chunk's prompts, each num_generations times in a row."""
    out = []
    for epoch in epochs:
        order = saerl_order(curriculum, chunk, epoch)
        for start in range(0, len(order), chunk):
            out.append([i for i in order[start : start + chunk] for _ in range(num_generations)])
    return out


def test_grpo_trainer_generates_in_saerl_order_and_resumes_exactly(tmp_path, tokenizer, dataset, monkeypatch):
    curriculum = make_curriculum()
    saved = curriculum.save(tmp_path / "curriculum")  # the trainer also takes a saved curriculum's directory
    # chunk = 4 // 2 = 2 unique prompts, repeated steps_per_generation = 2 times; 1 micro-batch per step
    # -> 11 kept prompts give 5 chunks = 10 steps per epoch; 14 steps run into epoch 1.
    layout = dict(gradient_accumulation_steps=1, steps_per_generation=2, max_steps=14)
    run_dir = tmp_path / "run"
    trainer, full = train(tokenizer, dataset, str(saved), run_dir, save_strategy="steps", save_steps=4, **layout)
    expected = expected_generations(curriculum, 2, 2, epochs=(0, 1))
    assert full.calls == expected[:7]  # epoch 0's 5 chunks, then epoch 1's first 2
    assert isinstance(trainer.saerl_sampler, SaeRLRepeatSampler)
    assert trainer.state.epoch == pytest.approx(1.4)  # the trainer's epochs are the sampler's epochs

    # the checkpoint carries the cursor of the last trained chunk, from global_step, not the prefetched position
    state4 = read_json(run_dir / "checkpoint-4" / STATE_NAME)
    assert (state4["epoch"], state4["chunk"], state4["cursor"], state4["partial_micro_batches"]) == (0, 2, 4, 0)
    assert state4["saerl"]["fingerprint"]["batch_size"] == 2
    state12 = read_json(run_dir / "checkpoint-12" / STATE_NAME)
    assert (state12["epoch"], state12["chunk"], state12["cursor"]) == (1, 1, 2)

    # resume mid-epoch 0: TRL's skip_first_batches + the saved state continue the order, nothing skipped twice
    _, resumed = train(tokenizer, dataset, curriculum, tmp_path / "resume4", resume=run_dir / "checkpoint-4", **layout)
    assert resumed.calls == full.calls[2:]

    # ... whatever order the Trainer restores its pieces in: transformers 4.x loads the optimizer (where the
    # adapter restores the SaeRL state) before the trainer state, so the adapter sees step 0 there
    restore = SaeRLGRPOTrainer._load_optimizer_and_scheduler

    def before_trainer_state(self, checkpoint):
        restored, self.state = self.state, TrainerState()
        try:
            restore(self, checkpoint)
        finally:
            self.state = restored

    monkeypatch.setattr(SaeRLGRPOTrainer, "_load_optimizer_and_scheduler", before_trainer_state)
    _, resumed = train(tokenizer, dataset, curriculum, tmp_path / "resume4-early", resume=run_dir / "checkpoint-4",
                       **layout)
    assert resumed.calls == full.calls[2:]
    monkeypatch.undo()
    # a SaeRL state copied from another checkpoint is refused, naming both steps
    mixed = tmp_path / "mixed-checkpoint-4"
    shutil.copytree(run_dir / "checkpoint-4", mixed)
    shutil.copy(run_dir / "checkpoint-12" / STATE_NAME, mixed / STATE_NAME)
    with pytest.raises(ValueError, match=r"is for step 12 but the checkpoint's trainer_state.json is at step 4$"):
        train(tokenizer, dataset, curriculum, tmp_path / "resume-mixed", resume=mixed, **layout)

    # resume mid-epoch 1 when nobody forwards set_epoch to the sampler (accelerate's skipping wrapper on
    # several ranks does not): the saved state alone must select epoch 1
    monkeypatch.setattr(SaeRLRepeatSampler, "set_epoch", lambda self, epoch: None)
    _, resumed = train(tokenizer, dataset, curriculum, tmp_path / "resume12", resume=run_dir / "checkpoint-12", **layout)
    assert resumed.calls == full.calls[6:]

    # a checkpoint without the SaeRL file (e.g. written by plain GRPOTrainer) still resumes, with a warning
    bare = tmp_path / "bare-checkpoint-12"
    shutil.copytree(run_dir / "checkpoint-12", bare)
    (bare / STATE_NAME).unlink()
    with pytest.warns(UserWarning, match="is missing"):
        _, resumed = train(tokenizer, dataset, curriculum, tmp_path / "resume-bare", resume=bare, **layout)
    assert resumed.calls == full.calls[6:]
    monkeypatch.undo()

    # ignore_data_skip=True: TRL restarts the checkpoint's epoch at its first chunk, and so does the order
    with pytest.warns(UserWarning, match="ignore_data_skip"):
        _, replayed = train(tokenizer, dataset, curriculum, tmp_path / "noskip", resume=run_dir / "checkpoint-4",
                            ignore_data_skip=True, **layout)
    assert replayed.calls == full.calls[:5]

    # resuming into a run whose data position or curriculum differs is refused, not silently misordered
    with pytest.raises(ValueError, match="gradient_accumulation_steps changed"):
        train(tokenizer, dataset, curriculum, tmp_path / "bad-ga", resume=run_dir / "checkpoint-4",
              gradient_accumulation_steps=2, steps_per_generation=2, max_steps=14)
    with pytest.raises(ValueError, match="different sampler"):
        train(tokenizer, dataset, make_curriculum(mixing=0.5), tmp_path / "bad-curriculum",
              resume=run_dir / "checkpoint-4", **layout)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_next_chunk_is_drawn_before_current_rewards_exist(tmp_path, tokenizer, dataset, num_workers):
    # default steps_per_generation == gradient_accumulation_steps == 2: each optimiser step is one chunk
    curriculum = make_curriculum()
    _, rec = train(
        tokenizer, dataset, curriculum, tmp_path / "run", gradient_accumulation_steps=2, max_steps=3,
        dataloader_num_workers=num_workers,
    )
    assert rec.calls == expected_generations(curriculum, 2, 2, epochs=(0,))[:3]
    per_chunk = 2 * 2 * 2  # chunk * num_generations * repeat_count
    assert len(rec.positions) == 3
    for k, position in enumerate(rec.positions):
        # when chunk k is scored, the sampler has already handed out indices of chunk k + 1 ...
        assert position > (k + 1) * per_chunk
        if num_workers:  # ... and worker prefetch (2 batches per worker) reaches into chunk k + 2
            assert position > (k + 2) * per_chunk


def test_checkpoint_inside_a_chunk_warns_and_regenerates_that_chunk(tmp_path, tokenizer, dataset):
    # num_iterations 2 * steps_per_generation 2 -> each chunk spans 4 micro-batches = 4 steps;
    # checkpoint-2 falls halfway through chunk 0
    curriculum = make_curriculum()
    layout = dict(gradient_accumulation_steps=1, steps_per_generation=2, num_iterations=2, max_steps=8)
    with pytest.warns(UserWarning, match="falls inside a generation chunk"):
        _, full = train(tokenizer, dataset, curriculum, tmp_path / "run", save_strategy="steps", save_steps=2, **layout)
    assert full.calls == expected_generations(curriculum, 2, 2, epochs=(0,))[:2]
    state = read_json(tmp_path / "run" / "checkpoint-2" / STATE_NAME)
    assert (state["chunk"], state["partial_micro_batches"], state["cursor"]) == (0, 2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, resumed = train(tokenizer, dataset, curriculum, tmp_path / "resume", resume=tmp_path / "run" / "checkpoint-2", **layout)
    # TRL generates again for the interrupted chunk, then continues the order
    assert resumed.calls == [full.calls[0]] + full.calls[1:]


# ---------------------------------------------------------------- online feedback


FEEDBACK = dict(prior_strength=1.0, cluster_rate=0.5, memory=0.5)


class RecordingFeedback(OnlineFeedback):
    """OnlineFeedback that logs each update and checks it leaves the chunks already drawn alone."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.log: list[dict] = []

    def update(self, sampler, indices, rewards):
        drawn = sampler._cursor // sampler.batch_size
        before = sampler.global_batches()
        super().update(sampler, indices, rewards)
        assert sampler.global_batches()[:drawn] == before[:drawn]
        self.log.append(
            {"indices": np.asarray(indices).tolist(), "rewards": np.asarray(rewards, dtype=float).tolist(),
             "drawn": drawn, "epoch": sampler.epoch}
        )


def drifting_reward(index, step):
    """Pass values that ignore the probe and change every step.

    Odd prompts go unscored (None) in epoch 0 (steps 0-4 with one chunk per step): in epoch 1 they have no
    observations of their own, so each update moves them against their cluster's observed prompts and
    re-sorts the chunks not drawn yet (among prompts observed equally often a cluster offset changes nothing).
    """
    if step < 5 and index % 2:
        return None
    return ((3 * index + 6 * step) % 11) / 10


def scored(rollouts, rewards):
    """The rollouts and rewards that feedback gets: unscored (None) ones left out."""
    kept = [(i, r) for i, r in zip(rollouts, rewards) if r is not None]
    return [i for i, _ in kept], [r for _, r in kept]


def simulate(curriculum, reward, *, chunk, num_generations, chunks, steps_per_chunk, ahead):
    """The generation calls of a feedback run, replayed on a plain SaeRLSampler (its own iterator and cursor).

    Chunk k's rewards (at global step ``k * steps_per_chunk``) are fed back once the epoch's chunks up to
    ``k + ahead`` are drawn; ``reward`` may return None (left out, as TRL's unscored completions).
    """
    sampler = curriculum.sampler(batch_size=chunk, drop_last=True, feedback=OnlineFeedback(gather=False, **FEEDBACK))
    per_epoch = len(sampler) // chunk
    calls = []
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        items, drawn = iter(sampler), []
        for k in range(per_epoch):
            while len(drawn) < min(k + 1 + ahead, per_epoch):
                drawn.append(list(itertools.islice(items, chunk)))
            rollouts = [i for i in drawn[k] for _ in range(num_generations)]
            calls.append(rollouts)
            sampler.update(*scored(rollouts, [reward(i, (len(calls) - 1) * steps_per_chunk) for i in rollouts]))
            if len(calls) == chunks:
                return calls


def test_repeat_sampler_draws_chunks_lazily_from_the_live_plan():
    curriculum = make_curriculum()
    feedback = OnlineFeedback(gather=False, **FEEDBACK)
    sampler = SaeRLRepeatSampler.from_curriculum(
        curriculum, num_generations=2, generation_batch_size=4, steps_per_generation=2, feedback=feedback
    )
    per_chunk = 2 * 2 * 2  # chunk * num_generations * repeat_count
    got = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        items = iter(sampler)
        for k in range(sampler.chunks_per_epoch):
            block = list(itertools.islice(items, per_chunk))
            assert sampler.saerl.state_dict()["cursor"] == (k + 1) * 2  # the drawn chunk is marked handed out
            assert block == [i for i in sampler.drawn_chunks[k] for _ in range(2)] * 2
            rollouts = [i for i in sampler.drawn_chunks[k] for _ in range(2)]
            got.append(rollouts)
            sampler.saerl.update(*scored(rollouts, [drifting_reward(i, len(got) - 1) for i in rollouts]))
    assert got == simulate(curriculum, drifting_reward, chunk=2, num_generations=2, chunks=len(got),
                           steps_per_chunk=1, ahead=0)
    assert got != expected_generations(curriculum, 2, 2, epochs=(0, 1))


def test_ranks_draw_chunks_in_step_so_feedback_keeps_them_identical():
    # As GRPOTrainer on 2 ranks: every rank draws the global sequence through accelerate's sharding and, at
    # each generation, feeds the whole chunk's (TRL-gathered) rewards without gathering again. The ranks'
    # cursors must agree at every batch, so the same update re-plans the same chunks everywhere.
    processes, per_device, steps_per_gen, num_gen = 2, 2, 2, 2
    curriculum = make_curriculum()
    traces, states = [], []
    for rank in range(processes):
        sampler = SaeRLRepeatSampler.from_curriculum(
            curriculum, num_generations=num_gen, generation_batch_size=per_device * processes * steps_per_gen,
            steps_per_generation=steps_per_gen, feedback=OnlineFeedback(gather=False, **FEEDBACK),
        )
        loader = DataLoader(list(range(N_PROMPTS)), batch_size=per_device * steps_per_gen, sampler=sampler)
        loader = prepare_data_loader(
            loader, num_processes=processes, process_index=rank, put_on_device=False, rng_types=["generator"]
        )
        trace, step = [], 0
        for epoch in range(3):
            loader.set_epoch(epoch)
            for b, _ in enumerate(loader):
                trace.append(sampler.saerl.state_dict()["cursor"])
                if b % steps_per_gen == 0:  # TRL generates for chunk b // steps_per_gen
                    rollouts = [i for i in sampler.drawn_chunks[b // steps_per_gen] for _ in range(num_gen)]
                    sampler.saerl.update(*scored(rollouts, [drifting_reward(i, step) for i in rollouts]))
                    step += 1
        traces.append(trace)
        states.append(sampler.saerl.state_dict())
    assert traces[0] == traces[1] and len(traces[0]) == 3 * 2 * steps_per_gen
    assert states[0] == states[1] and states[0]["feedback"]["n_updates"] == 6


def test_feedback_gets_trls_rewards_with_the_dataset_indices(tmp_path, tokenizer, dataset):
    # GA 1, steps_per_generation 2: chunks of 2 prompts, 2 steps each; two reward functions weighted 1 and 0.5,
    # both silent (None) on prompts 0, 4, 8, 12, whose completions are then left out of the feedback.
    def reward(index, step):
        return None if index % 4 == 0 else ((5 * index + step) % 7) / 6

    def parity(completions, idx, **kwargs):
        return [None if i % 4 == 0 else float(i % 2) for i in idx]

    curriculum = make_curriculum()
    feedback = RecordingFeedback(gather="auto", **FEEDBACK)
    trainer, rec = train(tokenizer, dataset, curriculum, tmp_path / "run", reward=reward, extra_rewards=[parity],
                         feedback=feedback, reward_weights=[1.0, 0.5], gradient_accumulation_steps=1,
                         steps_per_generation=2, max_steps=14)
    assert feedback.gather is False  # TRL already gathered the rewards: the trainer switched the feedback's off
    assert len(feedback.log) == len(rec.calls) == 7  # one update per generation, epoch 0's 5 chunks + 2
    for k, (update, call, rewards) in enumerate(zip(feedback.log, rec.calls, rec.rewards)):
        indices, weighted = scored(call, [None if r is None else r + 0.5 * (i % 2) for i, r in zip(call, rewards)])
        assert update["indices"] == indices
        assert update["rewards"] == pytest.approx(weighted)
        # horizon: chunk k's rewards arrive before chunk k + 1 is drawn (R = 2 batches per chunk, GA = 1)
        assert update["drawn"] == k % 5 + 1
    assert rec.calls == simulate(curriculum, reward, chunk=2, num_generations=2, chunks=7, steps_per_chunk=2, ahead=0)
    assert trainer.saerl_sampler.saerl.feedback is feedback


FEEDBACK_LAYOUT = dict(gradient_accumulation_steps=2, max_steps=12, save_strategy="steps", save_steps=3)


@pytest.fixture(scope="module")
def feedback_run(tmp_path_factory, tokenizer, dataset):
    """12 steps with feedback and the default steps_per_generation == GA == 2: one chunk per step, 5 per epoch."""
    run_dir = tmp_path_factory.mktemp("feedback") / "run"
    feedback = RecordingFeedback(**FEEDBACK)
    _, rec = train(tokenizer, dataset, make_curriculum(), run_dir, reward=drifting_reward, feedback=feedback,
                   **FEEDBACK_LAYOUT)
    return run_dir, rec, feedback


def test_feedback_reorders_chunks_drawn_after_the_prefetch_horizon(feedback_run):
    _, rec, feedback = feedback_run
    curriculum = make_curriculum()
    assert len(rec.calls) == 12
    # horizon: when chunk k's rewards arrive, chunk k + 1 is drawn already (capped at the epoch's 5 chunks)
    assert [update["drawn"] for update in feedback.log] == [min(k % 5 + 2, 5) for k in range(12)]
    replay = dict(chunk=2, num_generations=2, chunks=12, steps_per_chunk=1)
    assert rec.calls == simulate(curriculum, drifting_reward, ahead=1, **replay)
    # the horizon matters here: feeding chunk k back before chunk k + 1 is drawn would give another order,
    # and so would chunks fixed at the start of each pass (feedback then never reaches the current epoch)
    assert rec.calls != simulate(curriculum, drifting_reward, ahead=0, **replay)
    assert rec.calls != simulate(curriculum, drifting_reward, ahead=5, **replay)
    # ... and the feedback moved the order away from the offline one
    offline = expected_generations(curriculum, 2, 2, epochs=(0, 1, 2))[:12]
    assert rec.calls[5:] != offline[5:]


@pytest.mark.parametrize("step", [3, 6])
def test_feedback_resumes_exactly(feedback_run, tmp_path, tokenizer, dataset, step):
    run_dir, full, full_feedback = feedback_run
    checkpoint = run_dir / f"checkpoint-{step}"
    assert "feedback" in read_json(checkpoint / STATE_NAME)["saerl"]
    feedback = RecordingFeedback(**FEEDBACK)
    _, resumed = train(tokenizer, dataset, make_curriculum(), tmp_path / "resume", resume=checkpoint,
                       reward=drifting_reward, feedback=feedback, **FEEDBACK_LAYOUT)
    assert resumed.calls == full.calls[step:]
    assert feedback.log == full_feedback.log[step:]
    assert feedback.state_dict() == full_feedback.state_dict()


def test_feedback_refuses_loaders_it_cannot_reach(tmp_path):
    from datasets import Dataset

    curriculum = make_curriculum()
    data = Dataset.from_dict({"prompt": ["a"] * N_PROMPTS})
    # all checked before the model is set up (model=None would fail inside GRPOTrainer)
    with pytest.raises(ValueError, match="dataloader_num_workers=0"):
        SaeRLGRPOTrainer(model=None, args=grpo_args(tmp_path, dataloader_num_workers=2), train_dataset=data,
                         curriculum=curriculum, feedback=OnlineFeedback())
    with pytest.raises(ValueError, match="dispatch_batches"):
        SaeRLGRPOTrainer(model=None, args=grpo_args(tmp_path, accelerator_config={"dispatch_batches": True}),
                         train_dataset=data, curriculum=curriculum, feedback=OnlineFeedback())
    with pytest.raises(ValueError, match="feedback=..."):
        SaeRLGRPOTrainer(model=None, train_dataset=data, curriculum=curriculum,
                         saerl_overrides={"feedback": OnlineFeedback()})
    with pytest.raises(TypeError, match="OnlineFeedback"):
        SaeRLGRPOTrainer(model=None, train_dataset=data, curriculum=curriculum, feedback={"prior_strength": 1})
