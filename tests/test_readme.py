"""The README runs as written: its Python blocks execute, and every CLI line names real commands and options.

A README that rots is the first thing a new user meets, so the docs are tested
like code:

* every ```python block of README.md runs verbatim, in order, in one fresh
  interpreter per block, in a folder where the README's main job has already
  written `runs/demo` (the blocks may use its output, as a reader would);
* every command line in the other blocks of README.md and adapters/*/README.md (`saerl-zoo ...`, `python -m ...`,
  `python scripts/...`, `python adapters/...`, `torchrun ... -m ...`) is resolved to its command, runs
  with `--help`, and each `--option` the line uses must be one that command
  accepts;
* every `from saerl_zoo... import name` written in the README, a docstring or a
  card imports the object it names, and no package exports a name that one of
  its own submodules shadows (`from saerl_zoo import featurize` once gave the
  module, not the function).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SETUP_MAIN_JOB = "saerl-zoo curriculum --out runs/demo"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def command_lines(text: str) -> list[str]:
    """Every shell command in the non-Python blocks: continuation lines joined, `&&` chains split, comments dropped."""
    commands: list[str] = []
    for lang, body in blocks(text):
        if lang not in ("", "bash", "sh", "console"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _click_command(tokens: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a `saerl-zoo ...` line invokes, and the subcommand path to it."""
    from saerl_zoo.cli import main

    command: click.Command = main
    path: list[str] = []
    for token in tokens:
        if not isinstance(command, click.Group) or token not in command.commands:
            break
        command = command.commands[token]
        path.append(token)
    return command, path


def _options_used(tokens: list[str]) -> set[str]:
    return {t.split("=", 1)[0] for t in tokens if t.startswith("--")}


def _accepted_options(command: click.Command) -> set[str]:
    ctx = click.Context(command)
    return {opt for param in command.get_params(ctx) for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}


def test_readme_has_the_two_setup_commands() -> None:
    lines = command_lines(README.read_text())
    install = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0"
    text = README.read_text()
    assert f"{install} && pip install -e . && {SETUP_MAIN_JOB}" in text
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(line for line in text.splitlines() if line.startswith(install) and "pytest" in line)
    assert test_line in ci, "CI must run exactly the README's test command"
    assert SETUP_MAIN_JOB in lines


@pytest.fixture(scope="module")
def readme_workdir(tmp_path_factory) -> Path:
    """A folder where the README's main job has run, as a reader who followed the set-up would have."""
    work = tmp_path_factory.mktemp("readme")
    done = _run([sys.executable, "-m", "saerl_zoo.cli", *shlex.split(SETUP_MAIN_JOB)[1:]], work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "runs/demo/ordered.jsonl").is_file()
    return work


PYTHON_BLOCKS = [body for lang, body in blocks(README.read_text()) if lang == "python"]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index: int, readme_workdir: Path) -> None:
    script = readme_workdir / f"readme_block_{index}.py"
    script.write_text(PYTHON_BLOCKS[index])
    done = _run([sys.executable, script.name], readme_workdir)
    assert done.returncode == 0, f"README python block {index} failed:\n{PYTHON_BLOCKS[index]}\n{done.stderr[-3000:]}"


def _is_python(token: str) -> bool:
    return token in ("python", "python3") or token.endswith("/python")


def _helpable(command: str) -> tuple[str, list[str]] | None:
    """('click', tokens after saerl-zoo) or ('argv', argv to run with --help); None for lines that are not ours to run."""
    if not re.match(r"(?:[A-Z_]+=\S*\s+)*(?:saerl-zoo|python3?|torchrun|accelerate)\s", command):
        return None
    tokens = shlex.split(command)
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # leading VAR=value assignments
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "saerl-zoo":
        return "click", tokens[1:]
    if tokens[0] in ("torchrun", "accelerate") and "-m" in tokens:
        module = tokens[tokens.index("-m") + 1]
        return "argv", [sys.executable, "-m", module, *tokens[tokens.index("-m") + 2 :]]
    if tokens[:2] == ["accelerate", "launch"] and len(tokens) > 2 and tokens[2].endswith(".py"):
        return "argv", [sys.executable, *tokens[2:]]
    if _is_python(tokens[0]) and len(tokens) > 2 and tokens[1] == "-m" and tokens[2].split(".")[0] in ("saerl_zoo", "benchmarks"):
        return "argv", [sys.executable, *tokens[1:]]
    if _is_python(tokens[0]) and len(tokens) > 1 and tokens[1].startswith(("scripts/", "adapters/")):
        return "argv", [sys.executable, *tokens[1:]]
    return None


# the README and each trainer's README under adapters/ (their examples are what users copy)
CLI_DOCS = [README, *sorted(ROOT.glob("adapters/*/README.md"))]
CLI_LINES = sorted({line for doc in CLI_DOCS for line in command_lines(doc.read_text()) if _helpable(line) is not None})


def test_readme_has_cli_lines() -> None:
    assert any(line.startswith("saerl-zoo ") for line in CLI_LINES)


@pytest.mark.parametrize("line", CLI_LINES)
def test_readme_cli_line_is_real(line: str, tmp_path: Path) -> None:
    kind, tokens = _helpable(line)
    if kind == "click":
        from click.testing import CliRunner

        from saerl_zoo.cli import main

        command, path = _click_command(tokens)
        assert path or not tokens, f"unknown command in README line: {line}"
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        unknown = _options_used(tokens[len(path) :]) - _accepted_options(command)
        assert not unknown, f"README line uses options `saerl-zoo {' '.join(path)}` does not have: {sorted(unknown)}"
        return
    # a module or script: split its own arguments off and ask for its help
    argv = tokens
    head = argv[: 3 if argv[1] == "-m" else 2]
    done = _run([*head, "--help"], tmp_path if argv[1] == "-m" else ROOT, timeout=300)
    if done.returncode != 0 and "pip install" in (done.stdout + done.stderr):
        pytest.skip(f"{' '.join(head[1:])} needs an optional extra: {(done.stdout + done.stderr).strip().splitlines()[-1]}")
    assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    help_text = done.stdout + done.stderr
    own_options = {o for o in _options_used(argv[len(head) :]) if not o.startswith(("--data.", "--rollout.", "--actor."))}
    missing = {o for o in own_options if o not in help_text}
    assert not missing, f"README line uses options its --help does not list: {sorted(missing)}"


IMPORT = re.compile(r"^\s*(?:>>>\s*)?from (saerl_zoo[\w.]*) import ([\w, ()]+?)\s*(?:#.*)?$", re.M)
DOC_FILES = [README, *sorted(ROOT.glob("cards/**/*.md")), *sorted((ROOT / "saerl_zoo").rglob("*.py"))]


def _documented_imports() -> list[tuple[str, str, str]]:
    found = []
    for path in DOC_FILES:
        for module, names in IMPORT.findall(path.read_text()):
            for item in names.strip("() ").split(","):
                name = item.split(" as ")[0].strip()
                if name and name != "annotations":
                    found.append((str(path.relative_to(ROOT)), module, name))
    return sorted(set(found))


OPTIONAL = ("trl", "openrlhf", "verl", "ray", "deepspeed", "vllm")


@pytest.mark.parametrize(("where", "module", "name"), _documented_imports())
def test_documented_import_is_the_named_object(where: str, module: str, name: str) -> None:
    try:
        mod = importlib.import_module(module)
        obj = getattr(mod, name) if hasattr(mod, name) else importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{module} needs {err.name}")
        raise
    except ImportError as err:  # a trainer framework that is installed but cannot import here
        if any(f in str(err) for f in OPTIONAL):
            pytest.skip(str(err))
        raise
    if isinstance(obj, type(sys)):
        assert obj.__name__ == f"{module}.{name}", f"{where}: `from {module} import {name}` gives module {obj.__name__}"


PACKAGES = ["saerl_zoo", "saerl_zoo.zoo", "saerl_zoo.transfer", "saerl_zoo.adapters"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_export_is_shadowed_by_a_submodule(package: str) -> None:
    pkg = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(pkg.__path__)}
    exports = set(getattr(pkg, "_EXPORTS", {}))
    assert exports, f"{package} has no lazy exports"
    clash = exports & submodules
    assert not clash, f"{package} exports {sorted(clash)}, which its submodules of the same name shadow once imported"


@pytest.mark.parametrize("package", ["saerl_zoo", "saerl_zoo.zoo", "saerl_zoo.transfer"])
def test_exports_survive_importing_every_submodule(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg:
            importlib.import_module(f"{package}.{info.name}")
    for name, module in pkg._EXPORTS.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), name), f"{package}.{name}"
