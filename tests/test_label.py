"""`saerl-zoo label --kind pass-rate`: seeded subsets, k rollouts scored by a verifier, resumable shards, one-line refusals.

Models are the tiny char-level Llama of conftest (a 256-token context) and the
embedded default policy, which answers its own prompts. Bad inputs go through
the click group as a shell would, and each asserts exit code, its one line,
and that neither the labels nor a shards folder were left behind.
"""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from click.testing import CliRunner
from conftest import make_char_tokenizer, make_cli_workspace, make_tiny_llama

from saerl_zoo.cli import main
from saerl_zoo.data import load_rows
from saerl_zoo.embedded import default_path
from saerl_zoo.errors import UserError
from saerl_zoo.generation import Generator, has_vllm, resolve_backend
from saerl_zoo.grpo import sample_completions
from saerl_zoo.labelled_subset import choose_subset
from saerl_zoo.pass_rates import label_pass_rates, shards_folder

VERIFIERS = "label_test_verifiers"
VERIFIER_SOURCE = '''
CALLS = 0
KILL_AT = None


def parity(completion, row):
    """Depends on the completion's text, so equal labels mean equal rollouts."""
    global CALLS
    CALLS += 1
    if KILL_AT is not None and CALLS == KILL_AT:
        raise KeyboardInterrupt
    return float(sum(map(ord, completion)) % 2)


def by_id(completion, row):
    return 1.0 if row["id"].endswith("1") else 0.0


def constant(completion, row):
    return 0.0


def raises(completion, row):
    raise ValueError("boom")


def returns_text(completion, row):
    return "yes"


def returns_nan(completion, row):
    return float("nan")


def returns_two(completion, row):
    return 2.0


def returns_none(completion, row):
    return None


def one_argument(completion):
    return 1.0
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The CLI workspace (tiny model, 60 prompts with ids q0..q59) plus the verifier module and odd prompt files."""
    root = tmp_path_factory.mktemp("label")
    rows = make_cli_workspace(root)
    (root / "verifiers").mkdir()
    (root / "verifiers" / f"{VERIFIERS}.py").write_text(VERIFIER_SOURCE)
    (root / "no_ids.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))
    (root / "long.jsonl").write_text("".join(json.dumps({**r, "prompt": r["prompt"] * (1 + 4 * (i == 5))}) + "\n" for i, r in enumerate(rows)))
    return root


@pytest.fixture()
def verifiers(ws, monkeypatch):
    monkeypatch.syspath_prepend(str(ws / "verifiers"))
    module = importlib.import_module(VERIFIERS)
    module.CALLS, module.KILL_AT = 0, None
    yield module
    module.KILL_AT = None


@pytest.fixture()
def generate_calls(monkeypatch):
    """How many times rollouts were generated (one call per shard)."""
    calls = []
    original = Generator.generate_ids

    def counting(self, prompt_ids, **kwargs):
        calls.append(len(prompt_ids))
        return original(self, prompt_ids, **kwargs)

    monkeypatch.setattr(Generator, "generate_ids", counting)
    return calls


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def label_args(ws, out, *extra, verifier=f"{VERIFIERS}:parity"):
    return ["label", "--kind", "pass-rate", "--prompts", ws / "prompts.jsonl", "--model", ws / "model", "--count", 12, "--k", 2,
            "--max-new-tokens", 4, "--shard-size", 4, "--verifier", verifier, "--out", out, *extra]


def assert_refused(result, out, *fragments, code=1):
    """Exit `code`, one `Error:` line last on stderr naming each fragment, no traceback, nothing written."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error")] == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    assert not out.exists() and not shards_folder(out).exists()
    return lines[-1]


# ---------------------------------------------------------------- which prompts


def test_subset_is_ten_percent_by_default_and_seeded():
    pick = lambda n, seed=0, **kw: choose_subset(n, **{"fraction": None, "count": None, **kw}, seed=seed, minimum=8,  # noqa: E731
                                                 source="p.jsonl", purpose="a difficulty probe")
    first = pick(2000)
    assert len(first) == 200 and first == sorted(set(first)) and 0 <= first[0] and first[-1] < 2000
    assert pick(2000) == first and pick(2000, seed=1) != first
    assert len(pick(100, fraction=0.25)) == 25 and len(pick(100, count=30)) == 30
    assert len(pick(90, fraction=0.3)) == 27  # 0.3 * 90 = 26.999999999999996 in floats: still 27
    assert len(pick(89)) == 8  # at most 10%: rounded down
    with pytest.raises(UserError, match="not both"):
        pick(100, fraction=0.1, count=10)
    with pytest.raises(UserError, match="--count 101 is not between 1 and the 100 prompts"):
        pick(100, count=101)
    with pytest.raises(UserError, match=r"--fraction 1.5 is not in \(0, 1\]"):
        pick(100, fraction=1.5)
    with pytest.raises(UserError, match=r"10% of its 60 prompts is 6, fewer than the 8 labels a difficulty probe needs: "
                                        r"give --count 8 \(or --fraction 0.14\)"):
        pick(60)
    assert len(pick(60, fraction=0.14)) == 8  # the suggested fraction is enough
    with pytest.raises(UserError, match="has 5 prompts, fewer than the 8 labels .* label a larger prompt set"):
        pick(5, count=5)


# ---------------------------------------------------------------- labels


def test_embedded_policy_passes_its_own_prompts(tmp_path):
    """Rollouts are scored as completions (not prompt + completion): the embedded policy solves some of its prompts."""
    from saerl_zoo.reproduce import data_max_new_tokens

    out = tmp_path / "rates.jsonl"
    worked, _ = data_max_new_tokens(default_path("model").parent, None)  # long enough for its worked solutions
    summary = label_pass_rates(default_path("model"), default_path("prompts.jsonl"), out, count=8, k=4, verifier="task",
                               max_new_tokens=worked, shard_size=8)
    rows = load_rows(out, prompt_field=None)
    assert summary["labelled"] == len(rows) == 8 and summary["rollouts_generated"] == 32 and summary["chat_template"] is False
    assert all(r["k"] == 4 and len(r["rewards"]) == 4 and r["pass_rate"] == sum(r["rewards"]) / 4 for r in rows)
    assert 0 < summary["mean_pass_rate"] < 1
    assert summary["rollouts_cut"] == sum(r["cut"] for r in rows) < 32
    assert not shards_folder(out).exists()


def test_rollouts_cut_at_max_new_tokens_are_counted_and_warned_about(tmp_path):
    """A worked solution cut after 4 tokens never reaches its answer: every rollout scores 0, and the run says why."""
    out = tmp_path / "rates.jsonl"
    summary = label_pass_rates(default_path("model"), default_path("prompts.jsonl"), out, count=8, k=4, verifier="task",
                               max_new_tokens=4, shard_size=8)
    assert summary["rollouts_cut"] == 32 and all(r["cut"] == 4 for r in load_rows(out, prompt_field=None))
    assert "32 of 32 rollouts reached --max-new-tokens 4 before ending" in summary["note"]


def test_labels_feed_fit_probe(ws, verifiers, tmp_path):
    out = tmp_path / "rates.jsonl"
    result = run(*label_args(ws, out))
    assert result.exit_code == 0, result.output
    assert "labelled 12 of 60 prompts, 2 rollouts each" in result.stdout
    features = tmp_path / "X.safetensors"
    result = run("featurize", "--prompts", ws / "prompts.jsonl", "--out", features, "--model", ws / "model", "--sae", ws / "sae")
    assert result.exit_code == 0, result.output
    result = run("fit-probe", "--kind", "difficulty", "--features", features, "--prompts", ws / "prompts.jsonl", "--labels", out,
                 "--out", tmp_path / "probe")
    assert result.exit_code == 0, result.output
    assert "difficulty probe on 12 labels" in result.stdout and (tmp_path / "probe" / "probe_config.json").exists()


def test_resume_after_a_kill_redoes_only_unfinished_shards(ws, verifiers, generate_calls, tmp_path):
    common = dict(count=12, k=2, verifier=f"{VERIFIERS}:parity", max_new_tokens=4, shard_size=4, seed=3)
    whole = tmp_path / "whole.jsonl"
    label_pass_rates(ws / "model", ws / "prompts.jsonl", whole, **common)
    assert generate_calls == [4, 4, 4]

    generate_calls.clear()
    verifiers.CALLS, verifiers.KILL_AT = 0, 2 * 4 + 3  # killed while scoring the second shard
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **common)
    assert generate_calls == [4, 4] and not out.exists()
    assert sorted(p.name for p in shards_folder(out).iterdir()) == ["settings.json", "shard-00000.jsonl"]

    verifiers.KILL_AT = None
    generate_calls.clear()
    with pytest.raises(UserError, match=r"holds 1 finished shards labelled with k=2, not 3: .* --overwrite"):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **{**common, "k": 3})
    with pytest.raises(UserError, match="labelled with seed=3, not 4"):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **{**common, "seed": 4})
    assert generate_calls == [] and (shards_folder(out) / "shard-00000.jsonl").exists()

    summary = label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **common)
    assert generate_calls == [4, 4] and summary["shards_resumed"] == 1 and summary["rollouts_generated"] == 16
    assert out.read_bytes() == whole.read_bytes()
    assert not shards_folder(out).exists()


def test_overwrite_discards_shards_of_other_settings(ws, verifiers, generate_calls, tmp_path):
    out = tmp_path / "rates.jsonl"
    common = dict(count=12, k=2, verifier=f"{VERIFIERS}:parity", max_new_tokens=4, shard_size=4)
    verifiers.KILL_AT = 2 * 4 + 1
    with pytest.raises(KeyboardInterrupt):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **common)
    verifiers.KILL_AT = None
    generate_calls.clear()
    label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **{**common, "k": 3}, overwrite=True)
    assert generate_calls == [4, 4, 4] and all(r["k"] == 3 for r in load_rows(out, prompt_field=None))


def test_resume_refuses_shards_scored_by_an_edited_verifier(ws, tmp_path, monkeypatch):
    """The verifier's source is part of the settings: shards scored by its old code are not mixed with new ones."""
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "label_edited_verifier.py"
    source.write_text("CALLS = [0]\n\ndef score(completion, row):\n    CALLS[0] += 1\n"
                      "    if CALLS[0] == 9:\n        raise KeyboardInterrupt\n    return 0.5\n")
    out = tmp_path / "rates.jsonl"
    common = dict(count=12, k=2, verifier="label_edited_verifier:score", max_new_tokens=4, shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **common)
    source.write_text(source.read_text() + "# edited\n")
    with pytest.raises(UserError, match="holds 1 finished shards labelled with verifier_source_sha256="):
        label_pass_rates(ws / "model", ws / "prompts.jsonl", out, **common)


def test_user_verifier_from_the_current_folder(ws, tmp_path, monkeypatch):
    """module:function is imported from the current folder (as `python -m` would) and called with the prompt's row."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_label_score.py").write_text("def score(completion, row):\n    return 1.0 if row['id'].endswith('1') else 0.0\n")
    result = run(*label_args(ws, tmp_path / "rates.jsonl", verifier="my_label_score:score"))
    assert result.exit_code == 0, result.output
    rows = load_rows(tmp_path / "rates.jsonl", prompt_field=None)
    assert len(rows) == 12 and all(r["pass_rate"] == float(r["id"].endswith("1")) for r in rows)


def test_all_equal_pass_rates_warn_no_signal(ws, verifiers, tmp_path):
    out = tmp_path / "rates.jsonl"
    result = run(*label_args(ws, out, verifier=f"{VERIFIERS}:constant"))
    assert result.exit_code == 0, result.output
    assert "warning: all 12 pass rates are 0: no signal for a difficulty probe" in result.stderr
    assert "larger --k, another subset (--seed, --count) or another --temperature" in result.stderr
    assert out.exists()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("verifier, fragments", [
    ("raises", ["verifier label_test_verifiers:raises raised ValueError (boom) on prompt 'q", "prompts.jsonl:"]),
    ("returns_text", ["returned 'yes' on prompt 'q", "a score must be a number in [0, 1]"]),
    ("returns_nan", ["returned nan on prompt"]),
    ("returns_two", ["returned 2.0 on prompt"]),
    ("returns_none", ["returned None on prompt"]),
    ("one_argument", ["cannot be called as fn(completion, row)"]),
    ("nothing_here", ["module label_test_verifiers has no function nothing_here"]),
])
def test_bad_verifier_is_refused_naming_the_prompt(ws, verifiers, tmp_path, verifier, fragments):
    out = tmp_path / "rates.jsonl"
    assert_refused(run(*label_args(ws, out, verifier=f"{VERIFIERS}:{verifier}")), out, *fragments)


@pytest.mark.parametrize("case, fragments", [
    ("unknown verifier", ["unknown verifier 'sympy': use math, task, or module:function"]),
    ("missing module", ["module no_such_module_here does not import", "the current folder and PYTHONPATH are searched"]),
    ("no answer field", ["has no 'answer' field, which the math verifier scores against (12 of 12 prompts lack it)"]),
    ("too long", ["prompt 'q5' (", "long.jsonl:6) has", "with 200 new tokens its rollouts would exceed the model's 256-token context: "
                  "lower --max-new-tokens to at most"]),
    ("no chat template", ["has no chat template", "drop --chat-template"]),
    ("too few prompts", ["10% of its 60 prompts is 6, fewer than the 8 labels a difficulty probe needs: give --count 8"]),
    ("both sizes", ["give --fraction or --count, not both"]),
    ("no ids", ["no_ids.jsonl:1 has no 'id' field"]),
    ("not jsonl", ["must be a .jsonl file"]),
])
def test_bad_input_is_refused_before_any_rollout(ws, verifiers, generate_calls, tmp_path, case, fragments):
    out = tmp_path / ("rates.json" if case == "not jsonl" else "rates.jsonl")
    args = label_args(ws, out)
    if case == "unknown verifier":
        args = label_args(ws, out, verifier="sympy")
    elif case == "missing module":
        args = label_args(ws, out, verifier="no_such_module_here:score")
    elif case == "no answer field":
        args = label_args(ws, out, verifier="math")
    elif case == "too long":
        args = [a if a != ws / "prompts.jsonl" else ws / "long.jsonl" for a in args] + ["--max-new-tokens", 200, "--count", 60]
    elif case == "no chat template":
        args += ["--chat-template"]
    elif case == "too few prompts":
        args = [a for i, a in enumerate(args) if a != "--count" and (i == 0 or args[i - 1] != "--count")]
    elif case == "both sizes":
        args += ["--fraction", 0.5]
    elif case == "no ids":
        args = [a if a != ws / "prompts.jsonl" else ws / "no_ids.jsonl" for a in args]
    assert_refused(run(*args), out, *fragments)
    assert generate_calls == []


def test_options_of_the_other_kind_are_refused(ws, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert_refused(run("label", "--kind", "quality", "--out", out, "--k", 4), out, "--k does not apply to --kind quality", code=2)
    assert_refused(run("label", "--kind", "quality", "--out", out, "--no-chat-template"), out,
                   "--chat-template/--no-chat-template does not apply to --kind quality", code=2)
    assert_refused(run("label", "--kind", "pass-rate", "--out", out, "--human-labels", ws / "quality.jsonl"), out,
                   "--human-labels does not apply to --kind pass-rate", code=2)


# ---------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def templated_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "model"
    tokenizer = make_char_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}U: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
    make_tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_chat_template_is_applied_when_the_model_has_one(templated_model, ws, verifiers, tmp_path):
    auto, plain = Generator(templated_model), Generator(templated_model, chat_template=False)
    assert auto.chat_template and not plain.chat_template
    tokenizer = auto.tokenizer
    assert auto.encode(["hi"]) == [tokenizer("U: hi\nA:", add_special_tokens=False)["input_ids"]]  # the template's text, no extra BOS
    assert plain.encode(["hi"]) == [tokenizer("hi")["input_ids"]]
    args = [a if a != ws / "model" else templated_model for a in label_args(ws, tmp_path / "on.jsonl")]
    result = run(*args)
    assert result.exit_code == 0 and "chat template on" in result.stdout, result.output
    result = run(*[a if a != ws / "model" else templated_model for a in label_args(ws, tmp_path / "off.jsonl", "--no-chat-template")])
    assert result.exit_code == 0 and "chat template off" in result.stdout, result.output
    with pytest.raises(UserError, match="has no chat template"):
        Generator(ws / "model", chat_template=True)


def test_token_id_prompts_sample_as_their_text(tiny_model, tokenizer):
    """The labeller hands sample_completions token ids; with the same seed they give what the text gives."""
    torch.manual_seed(0)
    from_text = sample_completions(tiny_model, tokenizer, ["ab", "a longer one"], group_size=3, max_new_tokens=5, temperature=1.0)
    torch.manual_seed(0)
    from_ids = sample_completions(tiny_model, tokenizer, tokenizer(["ab", "a longer one"])["input_ids"], group_size=3,
                                  max_new_tokens=5, temperature=1.0)
    assert from_ids.texts == from_text.texts and torch.equal(from_ids.prompt_ids, from_text.prompt_ids)


def test_backend_choice(ws):
    assert resolve_backend("auto", "cpu") == "transformers"
    with pytest.raises(UserError, match="unknown generation backend 'tgi'"):
        resolve_backend("tgi", "cpu")
    if not has_vllm():  # vLLM's own path needs vLLM and a GPU: not run here
        with pytest.raises(UserError, match="--backend vllm needs the vllm package"):
            Generator(ws / "model", backend="vllm")
