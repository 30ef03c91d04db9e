"""The bundled GRPO loop: each algorithm step by hand, then learning and exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from saerl_zoo.grpo import (
    GRPOConfig,
    PromptStream,
    _load_weights,
    completion_logprobs,
    group_advantages,
    grpo_loss,
    informative_groups,
    latest_checkpoint,
    sample_completions,
    train,
    train_step,
)
from saerl_zoo.feedback import OnlineFeedback
from saerl_zoo.sampler import SaeRLSampler

from conftest import make_char_tokenizer, make_tiny_llama


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: exact replays need a fixed thread count, and tiny models run fastest on one
    (two OpenMP threads on a 2-core machine with another busy process ran ~40x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def digit_first(completion: str, row: dict) -> float:
    """A trivially learnable verifier: reward 1 when the completion starts with a digit (~10% at init)."""
    return 1.0 if completion[:1].isdigit() else 0.0


def rows_(n: int) -> list[dict]:
    return [{"prompt": f"Q{i}:", "id": i} for i in range(n)]


# ---------------------------------------------------------------- advantages


def test_group_advantages_standard_and_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    std = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    adv = group_advantages(rewards)
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(adv[1], torch.zeros(4))  # equal rewards: no signal, no NaN
    assert torch.allclose(adv[2], torch.tensor([2.25, -0.75, -0.75, -0.75]) / (1.5 + 1e-4))
    dr = group_advantages(rewards, dr_grpo=True)  # no std normalisation
    assert torch.allclose(dr, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4, [2.25, -0.75, -0.75, -0.75]]))
    assert torch.allclose(adv.sum(1), torch.zeros(3), atol=1e-5) and torch.allclose(dr.sum(1), torch.zeros(3))


def test_informative_groups_drops_equal_reward_groups():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.3]])
    assert informative_groups(rewards).tolist() == [False, False, True, True]


# ---------------------------------------------------------------- loss


def _loss_example():
    # ratios: seq 0 = (1.5, 0.5, pad), seq 1 = (0.5, 1.5, 1.0); A = (+1, -1); eps = 0.2
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [0.5, 1.5, 1.0]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old, adv, mask


def test_grpo_loss_clipped_ratio_by_hand():
    logp, old, adv, mask = _loss_example()
    per_seq, stats = grpo_loss(logp, old, adv, mask, clip_eps=0.2)
    # A=+1: -min(1.5, 1.2) = -1.2 ; -min(0.5, 0.8) = -0.5   -> mean over 2 tokens = -0.85
    # A=-1: -min(-0.5, -0.8) = 0.8 ; -min(-1.5, -1.2) = 1.5 ; -min(-1, -1) = 1 -> mean over 3 = 1.1
    assert torch.allclose(per_seq, torch.tensor([-0.85, 1.1]))
    # clipped (the min picks the clipped term): seq 0 token 0 and seq 1 token 0, of 5 real tokens
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    per_seq.mean().backward()
    grad = logp.grad
    # clipped tokens get no gradient; the others d(-A * ratio)/dlogp = -A * ratio / n_tokens / n_seqs
    assert grad[0, 0] == 0 and grad[1, 0] == 0 and grad[0, 2] == 0  # clipped, clipped, padding
    assert grad[0, 1] == pytest.approx(-1 * 0.5 / 2 / 2)
    assert grad[1, 1] == pytest.approx(1 * 1.5 / 3 / 2)
    assert grad[1, 2] == pytest.approx(1 * 1.0 / 3 / 2)


def test_grpo_loss_clip_higher_and_dr_grpo_and_kl():
    logp, old, adv, mask = _loss_example()
    # clip-higher: ratio 1.5 with A=+1 is clipped at 1.3 instead of 1.2
    per_seq, _ = grpo_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.3)
    assert per_seq[0].item() == pytest.approx((-1.3 - 0.5) / 2)
    # Dr. GRPO: token sum divided by the constant max length, not the sequence length
    per_seq, _ = grpo_loss(logp, old, adv, mask, clip_eps=0.2, dr_grpo=True, max_len=4)
    assert torch.allclose(per_seq, torch.tensor([-1.7 / 4, 3.3 / 4]))
    with pytest.raises(ValueError, match="max_len"):
        grpo_loss(logp, old, adv, mask, dr_grpo=True)
    # k3 KL: exp(d) - d - 1 with d = ref - logp, per token, weighted by kl_coef
    ref = torch.zeros(2, 3)
    per_seq, stats = grpo_loss(logp, old, adv, mask, clip_eps=0.2, ref_logp=ref, kl_coef=0.1)
    d = ref - logp.detach()
    k3 = torch.exp(d) - d - 1
    assert torch.allclose(per_seq, torch.tensor([-0.85, 1.1]) + 0.1 * torch.stack(
        [k3[0, :2].mean(), k3[1].mean()]))
    assert stats["kl"] == pytest.approx(float((k3 * mask).sum() / 5))
    assert (k3 >= 0).all()


def test_grpo_loss_first_pass_is_plain_policy_gradient():
    """ratio = 1 (old = current): loss value is -mean(A) and the gradient is -A per token."""
    logp = torch.randn(3, 4, requires_grad=True)
    adv = torch.tensor([0.5, -1.0, 2.0])
    per_seq, stats = grpo_loss(logp, logp.detach(), adv, torch.ones(3, 4))
    assert torch.allclose(per_seq, -adv) and stats["clip_frac"] == 0
    per_seq.sum().backward()
    assert torch.allclose(logp.grad, -adv[:, None].expand(3, 4) / 4)


# ---------------------------------------------------------------- sampling and log-probs


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


def test_sampling_groups_and_masks(tok):
    model = make_tiny_llama(len(tok), seed=1)
    torch.manual_seed(0)
    r = sample_completions(model, tok, ["a", "hello there"], group_size=3, max_new_tokens=6, temperature=1.0)
    assert r.prompt_ids.shape[0] == r.completion_ids.shape[0] == len(r.texts) == 6
    assert (r.prompt_mask[:3, 0] == 0).all() and (r.prompt_mask[3:] == 1).all()  # left padding
    # the mask is 1 up to and including the first EOS and 0 after it
    for ids, m in zip(r.completion_ids, r.completion_mask):
        eos = (ids == tok.eos_token_id).nonzero()
        end = int(eos[0]) + 1 if len(eos) else len(ids)
        assert m.tolist() == [1] * end + [0] * (len(ids) - end)


def test_sampling_ignores_the_models_saved_generation_defaults(tok):
    """A saved top_k=1 would make sampling greedy and the log-probs wrong; the loop must not use it."""
    model = make_tiny_llama(len(tok), seed=1)
    model.generation_config.top_k = 1
    torch.manual_seed(0)
    r = sample_completions(model, tok, ["x"], group_size=8, max_new_tokens=5, temperature=1.0)
    assert len(set(r.texts)) > 1
    assert model.generation_config.top_k == 1  # restored


def make_tiny_gpt2(vocab_size: int, seed: int = 0):
    """Absolute position embeddings: wrong positions under left padding would change the log-probs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_completion_logprobs_equal_an_unpadded_forward(tok, arch):
    model = make_tiny_llama(len(tok), seed=2) if arch == "llama" else make_tiny_gpt2(len(tok), seed=2)
    torch.manual_seed(0)
    r = sample_completions(model, tok, ["a", "a much longer prompt"], group_size=2, max_new_tokens=8, temperature=1.0)
    T = 0.7
    batch = completion_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, T)
    for i in range(len(r)):
        prompt = r.prompt_ids[i][r.prompt_mask[i].bool()]
        n = int(r.completion_mask[i].sum())
        completion = r.completion_ids[i, :n]
        ids = torch.cat([prompt, completion])[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / T
        ref = torch.log_softmax(logits, -1).gather(-1, completion[:, None]).squeeze(-1)
        assert torch.allclose(batch[i, :n], ref, atol=1e-5)
        assert (batch[i, n:] == 0).all()


# ---------------------------------------------------------------- one step


def _counter_reward():
    calls = [0]

    def reward(completion: str, row: dict) -> float:
        calls[0] += 1
        return {"one": 1.0, "zero": 0.0}.get(row["kind"], float(calls[0]))  # "vary": all different

    return reward


def test_dynamic_sampling_drops_equal_reward_groups(tok):
    model = make_tiny_llama(len(tok), seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rows = [{"prompt": "a", "kind": k} for k in ("one", "vary", "zero", "vary")]
    config = GRPOConfig(group_size=4, max_new_tokens=3, dynamic_sampling=True, log=False)
    stats = train_step(model, tok, opt, rows, _counter_reward(), config)
    assert stats["groups_kept"] == 2 and stats["loss"] is not None
    # without dynamic sampling every group is kept
    stats = train_step(model, tok, opt, rows, _counter_reward(), GRPOConfig(group_size=4, max_new_tokens=3, log=False))
    assert stats["groups_kept"] == 4
    # all groups uninformative: no update at all
    before = [p.detach().clone() for p in model.parameters()]
    rows = [{"prompt": "a", "kind": "one"}, {"prompt": "b", "kind": "zero"}]
    stats = train_step(model, tok, opt, rows, _counter_reward(), config)
    assert stats["groups_kept"] == 0 and stats["loss"] is None
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_oversampling_fills_the_batch_with_the_first_informative_groups(tok):
    model = make_tiny_llama(len(tok), seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    kinds = ("one", "vary", "zero", "vary", "vary", "one")
    rows = [{"prompt": "a", "kind": k} for k in kinds]
    config = GRPOConfig(prompts_per_step=2, oversample=3, group_size=4, max_new_tokens=3, dynamic_sampling=True, log=False)
    stats = train_step(model, tok, opt, rows, _counter_reward(), config)
    assert stats["groups_kept"] == 2 and stats["rollouts"] == 24  # all six groups cost rollouts, two train
    with pytest.raises(ValueError, match="dynamic_sampling"):
        GRPOConfig(oversample=2)


@pytest.mark.parametrize("extra", [{}, {"dr_grpo": True, "kl_coef": 0.1}])
def test_gradient_accumulation_matches_one_big_batch(tok, extra):
    rows = [{"prompt": p} for p in ("a", "bb", "ccc")]
    results = []
    for accum in (1, 4):
        model = make_tiny_llama(len(tok), seed=4)
        ref = make_tiny_llama(len(tok), seed=5) if extra.get("kl_coef") else None
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        config = GRPOConfig(group_size=4, max_new_tokens=5, grad_accum_steps=accum, max_grad_norm=0, log=False, **extra)
        torch.manual_seed(0)
        reward = digit_first if not extra else (lambda c, r: float(len(c)))
        stats = train_step(model, tok, opt, rows, reward, config, ref)
        results.append((stats, [p.detach().clone() for p in model.parameters()]))
    (s1, w1), (s4, w4) = results
    assert s1["loss"] == pytest.approx(s4["loss"], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w1, w4))


def test_num_iterations_reuses_the_batch_with_clipping(tok):
    model = make_tiny_llama(len(tok), seed=6)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-2)
    config = GRPOConfig(group_size=8, max_new_tokens=4, num_iterations=3, clip_eps=0.05, log=False)
    torch.manual_seed(0)
    stats = train_step(model, tok, opt, [{"prompt": "a"}, {"prompt": "b"}], lambda c, r: float(len(c)), config)
    assert stats["clip_frac"] > 0  # later passes see ratio != 1 and get clipped


def test_config_validation():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=0)
    with pytest.raises(ValueError, match="temperature"):
        GRPOConfig(temperature=0)


# ---------------------------------------------------------------- prompt stream


@pytest.mark.parametrize("kind", ["saerl", "random"])
def test_prompt_stream_resumes_mid_epoch_and_across_epochs(kind):
    def make():
        if kind == "saerl":
            return SaeRLSampler(10, batch_size=3, clusters=[0, 1] * 5, difficulty=list(range(10)), seed=1)
        return RandomSampler(range(10), generator=torch.Generator().manual_seed(1))

    full = PromptStream(make())
    expected = [full.take(4) for _ in range(8)]  # 32 indices: crosses three epoch boundaries
    assert sorted(sum(expected[:2], []) + expected[2][:2]) == list(range(10))  # epoch 0 is a permutation
    for cut in (1, 2, 5):
        first = PromptStream(make())
        for _ in range(cut):
            first.take(4)
        state = first.state_dict()
        torch.manual_seed(123)  # the global RNG moved on since: the replay must not depend on it
        resumed = PromptStream(make())
        resumed.load_state_dict(state)
        assert [resumed.take(4) for _ in range(8 - cut)] == expected[cut:]


# ---------------------------------------------------------------- the loop: learning


def _digit_run(seed: int, lr: float, **extra):
    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok), seed=seed)
    rows = rows_(32)
    config = GRPOConfig(prompts_per_step=4, group_size=8, max_new_tokens=4, lr=lr, num_steps=40, seed=seed,
                        **{"log": False, **extra})
    sampler = RandomSampler(rows, generator=torch.Generator().manual_seed(seed))
    history = train(model, tok, rows, sampler, digit_first, config, eval_rows=[{"prompt": f"E{i}:"} for i in range(16)])
    rewards = [r["reward"] for r in history["train"]]
    return sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10, history


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_raises_reward_on_an_easy_task(seed):
    first, last, _ = _digit_run(seed, lr=3e-3)
    assert last > first + 0.15, (first, last)
    control_first, control_last, _ = _digit_run(seed, lr=0.0)  # same prompts and seeds, no update
    assert last > control_last + 0.15, (last, control_last)


def test_training_logs_evaluates_and_checkpoints(tmp_path, capsys):
    _, _, history = _digit_run(0, lr=3e-3, eval_every=20, out_dir=str(tmp_path), log=True)
    # greedy evaluation before, during and after training, logged to log.jsonl and stdout
    assert [e["step"] for e in history["eval"]] == [0, 20, 40]
    assert history["eval"][-1]["accuracy"] > history["eval"][0]["accuracy"]
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["type"] == "train"] == list(range(1, 41))
    in_order = sorted(history["train"] + history["eval"], key=lambda r: (r["step"], r["type"] == "eval"))
    assert logged == in_order
    out = capsys.readouterr().out
    assert "step    40/40 | reward" in out and "eval step    40/40 | accuracy" in out
    assert latest_checkpoint(tmp_path).name == "checkpoint-0000040"
    assert (latest_checkpoint(tmp_path) / "model" / "model.safetensors").is_file()


def _learns_on_level_one(model_dir, prompts_path, truth_path, steps: int = 30) -> tuple[float, float]:
    """GRPO on 16 fixed clean level-1 prompts of the task pool; mean reward of the first and last 10 steps."""
    from saerl_zoo.models import load_model
    from saerl_zoo.reproduce import data_max_new_tokens
    from saerl_zoo.rewards import task_reward

    items = [json.loads(line) for line in open(prompts_path)]
    truth = {t["id"]: t for t in map(json.loads, open(truth_path))}
    rows = [i for i in items if truth[i["id"]]["quality"] == 1 and truth[i["id"]]["level"] == 1][:16]
    model, tokenizer = load_model(model_dir)
    max_new_tokens, _ = data_max_new_tokens(Path(model_dir).parent, None)  # long enough for a worked solution
    config = GRPOConfig(prompts_per_step=8, group_size=8, max_new_tokens=max_new_tokens, lr=3e-4, num_steps=steps,
                        seed=0, log=False)
    sampler = RandomSampler(rows, generator=torch.Generator().manual_seed(0))
    rewards = [r["reward"] for r in train(model, tokenizer, rows, sampler, task_reward, config)["train"]]
    return sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10


def test_embedded_policy_improves_on_its_easiest_level():
    from saerl_zoo.embedded import DEFAULT_DIR

    paths = [DEFAULT_DIR / name for name in ("model", "prompts.jsonl", "ground_truth.jsonl")]
    if not all(p.exists() for p in paths):
        pytest.skip("the embedded default is not built (scripts/build_default.py)")
    first, last = _learns_on_level_one(*paths)
    assert last > first + 0.1, (first, last)


# ---------------------------------------------------------------- the loop: exact resume


class Killed(Exception):
    pass


def _run(tmp_path, make_sampler, num_steps, kill_at=None, make_model=make_tiny_llama, **extra):
    tok = make_char_tokenizer()
    model = make_model(len(tok), seed=0)
    rows = rows_(10)

    def callback(record):
        if record["type"] == "train" and record["step"] == kill_at:
            raise Killed

    settings = dict(prompts_per_step=4, group_size=4, max_new_tokens=4, lr=1e-2, num_steps=num_steps,
                    checkpoint_every=2, seed=0, out_dir=str(tmp_path), log=False)
    config = GRPOConfig(**{**settings, **extra})
    history = train(model, tok, rows, make_sampler(), digit_first, config, eval_rows=rows[:3], callback=callback)
    return history, model


@pytest.mark.parametrize(
    ("make_sampler", "extra"),
    [
        (lambda: RandomSampler(range(10), generator=torch.Generator().manual_seed(0)), {}),
        (lambda: SaeRLSampler(10, batch_size=4, clusters=[0, 1] * 5, difficulty=list(range(10)), seed=0),
         {"kl_coef": 0.1, "num_iterations": 2, "eval_every": 3}),
        (lambda: SaeRLSampler(10, batch_size=4, clusters=[0, 1] * 5, difficulty=[i / 10 for i in range(10)], seed=0,
                              feedback=OnlineFeedback()), {}),
    ],
    ids=["random-sampler", "saerl-sampler-kl", "saerl-sampler-online-feedback"],
)
def test_killed_run_resumes_with_the_same_next_batch_and_loss(tmp_path, make_sampler, extra):
    full, full_model = _run(tmp_path / "full", make_sampler, 7, **extra)
    with pytest.raises(Killed):  # dies after step 5; the last checkpoint is step 4
        _run(tmp_path / "cut", make_sampler, 7, kill_at=5, **extra)
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-0000004"
    resumed, resumed_model = _run(tmp_path / "cut", make_sampler, 7, **extra)

    keys = ("step", "indices", "loss", "reward", "kl", "grad_norm", "sample")
    expect = [{k: r[k] for k in keys} for r in full["train"]]
    assert [{k: r[k] for k in keys} for r in resumed["train"]] == expect  # steps 1-4 from the log, 5-7 re-run
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()))
    logged = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["type"] == "train"] == list(range(1, 8))  # the lost step 5 logged once
    assert len(list((tmp_path / "cut").glob("checkpoint-*"))) == 1  # keep_checkpoints=1


def make_tiny_lora(vocab_size: int, seed: int = 0):
    """A peft LoRA adapter on the tiny llama: only the adapter's weights are trained and checkpointed."""
    from peft import LoraConfig, get_peft_model

    base = make_tiny_llama(vocab_size, seed=seed)
    torch.manual_seed(seed + 1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, config)


def _optimizer_state(folder):
    return torch.load(next(folder.glob("checkpoint-*")) / "optimizer.pt", weights_only=True)


def test_killed_lora_run_resumes_bit_identically(tmp_path):
    """Kill a peft LoRA run after step 5, resume from step 4: weights, optimizer and batches equal a straight run."""
    pytest.importorskip("peft")
    make_sampler = lambda: RandomSampler(range(10), generator=torch.Generator().manual_seed(0))  # noqa: E731
    full, full_model = _run(tmp_path / "full", make_sampler, 7, make_model=make_tiny_lora)
    with pytest.raises(Killed):
        _run(tmp_path / "cut", make_sampler, 7, kill_at=5, make_model=make_tiny_lora)
    saved = latest_checkpoint(tmp_path / "cut") / "model"
    assert not list(saved.glob("model*.safetensors")), "a LoRA checkpoint holds the adapter only"
    resumed, resumed_model = _run(tmp_path / "cut", make_sampler, 7, make_model=make_tiny_lora)

    keys = ("step", "indices", "loss", "reward", "grad_norm", "sample")
    assert [{k: r[k] for k in keys} for r in resumed["train"]] == [{k: r[k] for k in keys} for r in full["train"]]
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    a, b = _optimizer_state(tmp_path / "full"), _optimizer_state(tmp_path / "cut")
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])
    assert len(a["state"]) == sum(p.requires_grad for p in full_model.parameters())  # Adam moments for the adapter only


def test_lora_weights_for_another_adapter_are_refused(tmp_path):
    """Adapter weights that do not fit the model's adapter are a one-line refusal, not a silent partial load."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    make_tiny_lora(40).save_pretrained(tmp_path, safe_serialization=True)
    other = get_peft_model(make_tiny_llama(40), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"]))
    with pytest.raises(ValueError, match=r"does not match the model: missing \[.*k_proj.*\], unexpected \[.*v_proj.*\]"):
        _load_weights(other, tmp_path)


def test_resume_refuses_a_lora_checkpoint_on_another_base(tmp_path):
    """The checkpoint holds only the adapter: resuming it on other base weights would silently be another run."""
    pytest.importorskip("peft")
    make_sampler = lambda: RandomSampler(range(10), generator=torch.Generator().manual_seed(0))  # noqa: E731
    _run(tmp_path, make_sampler, 2, make_model=make_tiny_lora)
    with pytest.raises(ValueError, match=r"^checkpoint \S+ was trained on other frozen base weights than the model passed in"):
        _run(tmp_path, make_sampler, 3, make_model=lambda vocab_size, seed=0: make_tiny_lora(vocab_size, seed=1))
    history, _ = _run(tmp_path, make_sampler, 3, make_model=make_tiny_lora)  # the same base resumes
    assert [r["step"] for r in history["train"]] == [1, 2, 3]


def test_resume_refuses_a_changed_config(tmp_path):
    make = lambda: RandomSampler(range(10), generator=torch.Generator().manual_seed(0))  # noqa: E731
    _run(tmp_path, make, 1)
    with pytest.raises(ValueError, match=r"lr: 0\.01 -> 0\.02"):
        _run(tmp_path, make, 2, lr=0.02)
    history, _ = _run(tmp_path, make, 2, eval_every=1)  # num_steps / eval_every may change
    assert [r["step"] for r in history["train"]] == [1, 2]


def test_rewards_reach_the_sampler_as_online_feedback(tmp_path):
    """Each step hands the sampler one reward per rollout, G per prompt, in the order trained."""
    calls = []

    class Recording(SaeRLSampler):
        def update(self, indices, rewards):
            calls.append((list(indices), list(rewards)))
            super().update(indices, rewards)

    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok))
    rows = [{"prompt": f"Q{i}:"} for i in range(10)]
    config = GRPOConfig(prompts_per_step=4, group_size=3, max_new_tokens=3, num_steps=2, log=False, seed=0)
    history = train(model, tok, rows, Recording(10, batch_size=4, seed=0), digit_first, config)
    assert len(calls) == 2
    for (indices, rewards), record in zip(calls, history["train"]):
        assert indices == [i for i in record["indices"] for _ in range(3)]
        assert rewards == [r for group in record["group_rewards"] for r in group]
