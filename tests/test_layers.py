"""The import direction of docs/architecture.md, read from the source (imports inside functions count; those
under `if TYPE_CHECKING:` do not): no cycle between modules, and no layer importing one above it."""

import ast
from pathlib import Path

from tests.conftest import ROOT

DATA_MODEL = ("nas.arch", "nas.errors", "nas.space")
TORCH_FREE = ("nas.search.study", "nas.search.encoding", "nas.search.outputs", "nas.search.progress",
              "nas.search.backend")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module name `path` imports at run time, relative imports resolved."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(branch.test) for stmt in branch.body for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in ("nas", "supernet") for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(path, name):
            while imported and imported not in files:  # `from pkg import name` names a module or a symbol
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def _within(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def test_no_import_cycle():
    cycle = _cycle_from(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_downwards_only():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if module.startswith("supernet") and target.startswith("nas"):
                upward.append(f"{module} -> {target} (the model library imports the tool)")
            elif _within(module, DATA_MODEL) and target.startswith("nas") and not _within(target, DATA_MODEL):
                upward.append(f"{module} -> {target} (the data model imports a stage)")
            elif target == "nas.cli" and module != "nas.__main__":
                upward.append(f"{module} -> {target} (a stage imports the CLI)")
    assert not upward, "\n".join(sorted(upward))


def test_the_study_has_no_torch():
    heavy = [f"{module} imports {target}" for module in TORCH_FREE
             for target in _imports(ROOT.joinpath(*module.split(".")).with_suffix(".py"), module)
             if target == "torch" or target.startswith(("torch.", "supernet"))]
    assert not heavy, heavy


def test_the_checks_see_cycles_and_imports_inside_functions(tmp_path):
    assert _cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle_from({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "module.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nas.space\n"
                      "def f():\n    from nas.arch import Arch\n")
    found = _imports(source, "supernet.module")
    assert "nas.arch" in found and "nas.space" not in found
