"""The package's shape: its import graph has no cycles, even counting TYPE_CHECKING imports.

Imports are read with ``ast`` (nothing is imported), so an import under
``if TYPE_CHECKING:`` or inside a function counts like any other: a cycle
hidden there still means two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import runcomfy_async
from runcomfy_async import _errors

PACKAGE = Path(runcomfy_async.__file__).parent
NAME = "runcomfy_async"


def module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a package import counts as its __init__)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for importer, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(importer, is_package, node)
                # "from . import x" may name a submodule.
                targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                if len(targets) < len(node.names):  # some name is defined in base itself
                    targets.append(base)
            for target in targets:
                # "import a.b.c" runs a, a.b and a.b.c: the deepest that is ours counts.
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != importer:
                    graph[importer].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycles() -> None:
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_through_a_type_checking_import() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    tree = ast.parse(source)
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert _resolve(f"{NAME}.a", False, node) == f"{NAME}.b"
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_does_not_import_the_layers_above_it() -> None:
    graph = import_graph()
    core = [f"{NAME}.{m}" for m in ("_retry", "_limits", "_api", "_transport", "_errors")]
    core += [m for m in graph if m.startswith(f"{NAME}._polling")]
    above = (f"{NAME}._client", f"{NAME}.batch", f"{NAME}.cli", f"{NAME}.progress")
    for module in core:
        bad = {t for t in graph[module] if t.startswith(above)}
        assert not bad, f"{module} imports {bad}"


CORE = (
    "_api",
    "_client",
    "_errors",
    "_fanout",
    "_job",
    "_limits",
    "_models",
    "_polling",
    "_retry",
    "_timing",
    "_transport",
)


def test_every_core_exception_is_defined_in_errors_and_drawn_in_its_tree() -> None:
    tree = _errors.__doc__ or ""
    for name, value in vars(_errors).items():
        if (
            inspect.isclass(value)
            and issubclass(value, Exception)
            and value.__module__ == _errors.__name__
        ):
            assert f" {name} " in tree or f" {name}\n" in tree, f"{name} is not in the tree"
    for short in CORE:
        module = importlib.import_module(f"{NAME}.{short}")
        modules = [module]
        if hasattr(module, "__path__"):
            modules += [
                importlib.import_module(f"{module.__name__}.{p.stem}")
                for p in Path(module.__path__[0]).glob("_*.py")
                if p.stem != "__init__"
            ]
        for mod in modules:
            for name, value in vars(mod).items():
                if inspect.isclass(value) and issubclass(value, BaseException):
                    assert value.__module__ in (
                        _errors.__name__,
                        "builtins",
                    ) or not value.__module__.startswith(NAME), (
                        f"{mod.__name__} defines {name}: exceptions belong in _errors.py"
                    )
