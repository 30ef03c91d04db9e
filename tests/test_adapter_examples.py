"""The runnable examples under adapters/ run as a user would copy them.

TRL and the bundled loop train the embedded default for a step or two, build
their curriculum when it is missing, and resume. OpenRLHF and veRL need GPUs
for anything past their argument handling: their scripts are checked with
``bash -n``, run with a stand-in ``python`` that records the command they
would launch, and that command goes through the SaeRL launcher's own argument
handling (and, when the framework is installed, through its real parser or
config schema); their reward functions and veRL's data preparation run for
real. The launchers themselves are tested in test_adapter_openrlhf.py and
test_adapter_verl.py.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from datetime import datetime
from pathlib import Path

import pytest

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.embedded import default_path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters"
EXAMPLES = {
    "trl": ["train_grpo_saerl.py"],
    "grpo": ["train.py"],
    "openrlhf": ["launch.sh", "reward_func.py"],
    "verl": ["run_verl.sh", "prepare_data.py", "reward_fn.py"],
}
N_ROWS = 24


def load_script(path: Path) -> types.ModuleType:
    """An example file as a module, without putting adapters/ on sys.path (it is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_example_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def prompts(tmp_path) -> Path:
    """The first rows of the embedded pool: small enough to score in a second."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(default_path("prompts.jsonl").read_text().splitlines(keepends=True)[:N_ROWS]))
    return path


# ---------------------------------------------------------------- the folder itself


def test_every_trainer_folder_has_a_readme_and_its_examples():
    for folder, files in EXAMPLES.items():
        for name in ["README.md", *files]:
            assert (ADAPTERS / folder / name).is_file(), f"adapters/{folder}/{name}"


def test_adapters_folder_is_not_a_package_and_not_shipped():
    # `adapters` is a PyPI package's name: the top-level folder must never shadow it or be installed as one
    assert not list(ADAPTERS.rglob("__init__.py"))
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "saerl_zoo.adapters" in packages and not any(p.split(".")[0] == "adapters" for p in packages)


# ---------------------------------------------------------------- TRL


def test_trl_example_builds_its_curriculum_trains_in_saerl_order_and_resumes(tmp_path, prompts, monkeypatch):
    pytest.importorskip("trl")
    from saerl_zoo.adapters.trl import SaeRLGRPOTrainer

    calls = []
    original = SaeRLGRPOTrainer.train

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("resume_from_checkpoint"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SaeRLGRPOTrainer, "train", spy)
    script = load_script(ADAPTERS / "trl" / "train_grpo_saerl.py")
    out, folder = tmp_path / "out", tmp_path / "curriculum"
    flags = ["--prompts", str(prompts), "--curriculum", str(folder), "--output_dir", str(out),
             "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "4",
             "--save_steps", "1", "--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false",
             "--report_to", "none", "--disable_tqdm", "true"]
    first = script.main([*flags, "--max_steps", "1"])
    curriculum = Curriculum.load(folder)  # built from --prompts with the embedded default
    assert len(curriculum) == N_ROWS
    assert first.saerl_sampler.drawn_chunks[0] == curriculum.sampler(batch_size=2).order()[:2]
    assert (out / "checkpoint-1" / "saerl_sampler_state.json").is_file()
    second = script.main([*flags, "--max_steps", "2"])  # the same command, longer: resumes
    assert calls == [None, str(out / "checkpoint-1")]
    assert second.state.global_step == 2 and (out / "model.safetensors").is_file()


# ---------------------------------------------------------------- the bundled loop


def test_grpo_example_arms_differ_only_in_order_and_a_rerun_resumes(tmp_path, prompts):
    script = load_script(ADAPTERS / "grpo" / "train.py")
    folder = tmp_path / "curriculum"
    common = ["--prompts", str(prompts), "--curriculum", str(folder), "--prompts-per-step", "4", "--group-size", "2",
              "--max-new-tokens", "4", "--checkpoint-every", "1"]
    saerl = script.main([*common, "--out", str(tmp_path / "saerl"), "--num-steps", "1"])
    curriculum = Curriculum.load(folder)
    order = curriculum.sampler(batch_size=4, seed=0).order()
    assert saerl["train"][0]["indices"] == order[:4]
    resumed = script.main([*common, "--out", str(tmp_path / "saerl"), "--num-steps", "2"])
    assert [r["step"] for r in resumed["train"]] == [1, 2] and resumed["train"][1]["indices"] == order[4:8]
    vanilla = script.main([*common, "--out", str(tmp_path / "vanilla"), "--num-steps", "1", "--arm", "vanilla"])
    from saerl_zoo.sampler import SaeRLSampler

    assert vanilla["train"][0]["indices"] == SaeRLSampler(N_ROWS, batch_size=4, mixing=1.0, seed=0).order()[:4]


def test_grpo_example_refuses_a_curriculum_of_other_rows_before_loading_the_model(tmp_path, prompts):
    script = load_script(ADAPTERS / "grpo" / "train.py")
    script.main(["--prompts", str(prompts), "--curriculum", str(tmp_path / "c"), "--out", str(tmp_path / "a"),
                 "--num-steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "2"])
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(prompts.read_text().splitlines(keepends=True)[:10]))
    with pytest.raises(SystemExit, match=f"scores {N_ROWS} prompts but --prompts has 10"):
        script.main(["--prompts", str(fewer), "--curriculum", str(tmp_path / "c"), "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- shell scripts: what they would launch

FAKE_PYTHON = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["-c"]:
    print(os.environ.get("FAKE_STDOUT", ""))
"""


def launched(script: Path, tmp_path: Path, **env: str) -> list[list[str]]:
    """Every `python ...` command the script runs, recorded by a stand-in python instead of run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "launched.jsonl"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log), **env},
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("script", ["openrlhf/launch.sh", "verl/run_verl.sh"])
def test_shell_examples_parse_and_refuse_a_missing_curriculum(script, tmp_path):
    subprocess.run(["bash", "-n", str(ADAPTERS / script)], check=True)
    done = subprocess.run(["bash", str(ADAPTERS / script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "CURRICULUM": str(tmp_path / "none")})
    assert done.returncode == 1 and f"no curriculum in {tmp_path / 'none'}" in done.stderr


@pytest.fixture()
def curriculum_dir(tmp_path) -> Path:
    path = tmp_path / "run" / "curriculum"
    path.mkdir(parents=True)
    (path / "curriculum.json").write_text("{}")  # the scripts only check that it is there
    return path


# ---------------------------------------------------------------- OpenRLHF


def train_ppo_ray_args(argv: list[str]) -> types.SimpleNamespace:
    """``argv`` through OpenRLHF's own train_ppo_ray argument parser and checks, stopping where training starts."""
    spec = importlib.util.find_spec("openrlhf")
    package = Path(spec.submodule_search_locations[0])
    source = (package / "cli" / "train_ppo_ray.py").read_text()
    main_block = source.split('if __name__ == "__main__":\n', 1)[1]
    assert main_block.rstrip().endswith("train(args)")
    body = textwrap.dedent(main_block.rstrip()[: -len("train(args)")] + "result['args'] = args\n")
    config_spec = importlib.util.spec_from_file_location("openrlhf_utils_config", package / "utils" / "config.py")
    config = importlib.util.module_from_spec(config_spec)
    config_spec.loader.exec_module(config)  # only hierarchize: openrlhf.utils itself imports GPU packages
    body = body.replace("from openrlhf.utils.config import hierarchize", "hierarchize = _hierarchize")
    result: dict = {}
    old_argv = sys.argv
    sys.argv = ["train_ppo_ray", *argv]
    try:
        exec(compile(body, "train_ppo_ray", "exec"),  # noqa: S102 - OpenRLHF's own code, as python -m would run it
             {"argparse": argparse, "os": os, "datetime": datetime, "_hierarchize": config.hierarchize, "result": result})
    finally:
        sys.argv = old_argv
    return result["args"]


def test_openrlhf_launch_line_goes_through_the_launcher(tmp_path, curriculum_dir):
    from saerl_zoo.adapters.openrlhf import parse_args

    (command,) = launched(ADAPTERS / "openrlhf" / "launch.sh", tmp_path, CURRICULUM=str(curriculum_dir),
                          PROMPTS="pool.jsonl")
    assert command[:2] == ["-m", "saerl_zoo.adapters.openrlhf"]
    ours, rest = parse_args(command[2:])
    assert ours.saerl_curriculum == str(curriculum_dir) and not ours.saerl_preordered
    flags = dict(zip(rest, rest[1:]))
    assert flags["--data.prompt_dataset"] == "pool.jsonl"
    assert Path(flags["--reward.remote_url"]) == ADAPTERS / "openrlhf" / "reward_func.py"
    assert all(not token.startswith("--saerl") for token in rest)
    if importlib.util.find_spec("openrlhf") is None:
        pytest.skip("openrlhf is not installed: its own parser was not run")
    args = train_ppo_ray_args(rest)
    assert args.rollout.batch_size * args.rollout.n_samples_per_prompt == args.train.batch_size  # on-policy GRPO
    assert args.data.label_key == "answer" and args.algo.advantage.estimator == "group_norm"


def test_openrlhf_reward_function_scores_the_completion_after_the_prompt():
    torch = pytest.importorskip("torch")
    reward_func = load_script(ADAPTERS / "openrlhf" / "reward_func.py").reward_func
    prompt = "Q: 2 + 2 = ? Put the answer in \\boxed{}.\nA:"
    out = reward_func([f"<s>{prompt} \\boxed{{4}}</s>", f"{prompt} I think 5", f"{prompt} 2 + 2"], [prompt] * 3, ["4", "4", "2"])
    assert torch.equal(out["rewards"], torch.tensor([1.0, 0.0, 0.0])) and torch.equal(out["scores"], out["rewards"])


# ---------------------------------------------------------------- veRL


def overrides(command: list[str]) -> dict[str, str]:
    return dict(token.split("=", 1) for token in command[2:])


def test_verl_script_uses_the_config_hook_up_to_0_7_and_the_launcher_from_0_8(tmp_path, curriculum_dir):
    from saerl_zoo.adapters.verl import sampler_settings

    env = {"CURRICULUM": str(curriculum_dir), "TRAIN": "train.parquet"}
    version_probe, old = launched(ADAPTERS / "verl" / "run_verl.sh", tmp_path, FAKE_STDOUT="0", **env)
    assert version_probe[0] == "-c" and "verl.__version__" in version_probe[1]
    _, new = launched(ADAPTERS / "verl" / "run_verl.sh", tmp_path, FAKE_STDOUT="1", **env)
    assert old[:2] == ["-m", "verl.trainer.main_ppo"] and new[:2] == ["-m", "saerl_zoo.adapters.verl"]
    old_settings, new_settings = overrides(old), overrides(new)
    module, name = old_settings.pop("data.sampler.class_path"), old_settings.pop("data.sampler.class_name")
    assert old_settings == new_settings, "the same run on either veRL"
    assert module.startswith("pkg://") and isinstance(getattr(importlib.import_module(module[6:]), name), type)
    data = {"sampler": {"saerl_curriculum": new_settings["+data.sampler.saerl_curriculum"]}}
    assert sampler_settings(data)["curriculum"] == str(curriculum_dir)
    assert new_settings["data.dataloader_num_workers"] == "0" and new_settings["data.train_files"] == "train.parquet"
    assert Path(new_settings["custom_reward_function.path"]) == ADAPTERS / "verl" / "reward_fn.py"
    if importlib.util.find_spec("verl") is None:
        pytest.skip("verl is not installed: the keys were not checked against its config")
    import yaml

    package = Path(importlib.util.find_spec("verl").submodule_search_locations[0])
    config = yaml.safe_load((package / "trainer" / "config" / "_generated_ppo_trainer.yaml").read_text())
    for key in (k for k in old_settings | {"data.sampler.class_path": module} if not k.startswith("+")):
        node = config
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"veRL's config has no {key}"
            node = node[part]


def test_verl_data_file_keeps_row_order_and_positions(tmp_path, prompts):
    pq = pytest.importorskip("pyarrow.parquet")
    out = load_script(ADAPTERS / "verl" / "prepare_data.py").main(["--prompts", str(prompts), "--out", str(tmp_path / "t.parquet")])
    rows = pq.read_table(out).to_pylist()
    source = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert [r["extra_info"]["index"] for r in rows] == list(range(N_ROWS))
    assert [r["prompt"][0]["content"] for r in rows] == [s["prompt"] for s in source]
    assert [r["reward_model"]["ground_truth"] for r in rows] == [s["answer"] for s in source]


def test_verl_reward_function():
    compute_score = load_script(ADAPTERS / "verl" / "reward_fn.py").compute_score
    assert compute_score("saerl", "so the answer is \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert compute_score("saerl", "so the answer is \\boxed{3}", "0.5") == 0.0
