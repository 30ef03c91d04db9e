"""saerl_zoo's imports run one way: prompts → features → properties → order → trainer.

The graph is read from the source with ``ast`` rather than from ``sys.modules``
so that every import counts: module-level, inside functions (lazy imports that
only run on some paths), and under ``if TYPE_CHECKING:``.  A cycle hidden
behind a function-level import still ties two modules together for a reader
and for the next refactor, so it is a cycle here too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import saerl_zoo

PACKAGE = "saerl_zoo"
ROOT = Path(saerl_zoo.__file__).resolve().parent


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (packages as their ``__init__``)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name a (possibly relative) ``from`` import refers to."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest package module that ``name`` lies in, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the package modules it imports, anywhere in its file."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # `from a.b import c` is an edge to a.b.c when c is a module
                    targets.append(sub if sub in modules else base)
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    graph[name].add(owner)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _cycle_path(group: list[str], graph: dict[str, set[str]]) -> str:
    """One concrete loop through a group, e.g. ``a → b → a``, for the message."""
    members = set(group)
    start = group[0]
    path, seen = [start], {start}
    node = start
    while True:
        nxt = sorted(graph[node] & members)
        back = start in nxt
        if back and len(path) > 1:
            return " → ".join(path + [start])
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return " → ".join(path + [start if back else nxt[0]])
        node = fresh[0]
        path.append(node)
        seen.add(node)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, TYPE_CHECKING, relative and `from pkg import module` all count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from .. import a\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import X\n"
    )
    (pkg / "b.py").write_text("from pkg.sub import leaf\nfrom pkg.sub import nothing\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.leaf"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.leaf", "pkg.sub"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.leaf"]]
    assert _cycle_path(["pkg.a", "pkg.b", "pkg.sub.leaf"], graph) == (
        "pkg.a → pkg.b → pkg.sub.leaf → pkg.a"
    )


def test_saerl_zoo_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20, "the package's modules were not found"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in saerl_zoo/: " + "; ".join(
        _cycle_path(group, graph) for group in cycles
    )


# The data flow, as layers: a module may import its own layer or an earlier one, never a later one.
LAYERS = {
    "features": ["saerl_zoo.featurizer", "saerl_zoo.hooks", "saerl_zoo.models"],
    "properties": ["saerl_zoo.probe", "saerl_zoo.difficulty", "saerl_zoo.quality", "saerl_zoo.diversity"],
    "order": ["saerl_zoo.pacing", "saerl_zoo.sampler", "saerl_zoo.feedback", "saerl_zoo.curriculum"],
    "trainer": ["saerl_zoo.grpo", "saerl_zoo.adapters.trl", "saerl_zoo.adapters.openrlhf", "saerl_zoo.adapters.verl"],
}


def test_imports_follow_the_data_flow() -> None:
    """prompts → features → properties → order → trainer: no module imports a later stage directly."""
    graph = import_graph()
    rank = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
    assert set(rank) <= set(graph), f"LAYERS names modules that do not exist: {sorted(set(rank) - set(graph))}"
    backwards = sorted(
        f"{module} → {target}"
        for module in rank
        for target in graph[module]
        if rank.get(target, -1) > rank[module]
    )
    assert not backwards, "imports against the data flow: " + "; ".join(backwards)
