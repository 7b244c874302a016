"""The public surface: one sorted, complete ``__all__``, and a docstring on every public name."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import typing
from typing import Any

import pytest

import runcomfy_async


def isort_key(name: str) -> tuple[int, list[Any]]:
    """The order of ruff's RUF022 ("isort-style"), which ``ruff check`` enforces on ``__all__``.

    SCREAMING_SNAKE_CASE constants first, then CamelCase classes, then every
    other name; within each group a natural sort (digit runs compare as numbers,
    everything else case-sensitively by code point).
    """
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return group, parts


def public_objects() -> dict[str, Any]:
    """Classes and functions defined in runcomfy_async and bound to a public package name."""
    return {
        name: value
        for name, value in vars(runcomfy_async).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").split(".")[0] == "runcomfy_async"
    }


def test_all_is_sorted_isort_style() -> None:
    names = list(runcomfy_async.__all__)
    assert names == sorted(names, key=isort_key)


def test_all_has_no_duplicates() -> None:
    assert len(set(runcomfy_async.__all__)) == len(runcomfy_async.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [n for n in runcomfy_async.__all__ if not hasattr(runcomfy_async, n)]
    assert missing == []


def test_all_lists_every_public_class_and_function_of_the_package() -> None:
    unlisted = sorted(set(public_objects()) - set(runcomfy_async.__all__))
    assert unlisted == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from runcomfy_async import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(runcomfy_async.__all__)


def _own_doc(obj: Any) -> str | None:
    # A class's own docstring, not one inherited from a base.
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


EXPORTED = [n for n in runcomfy_async.__all__ if n in public_objects()]


@pytest.mark.parametrize("name", EXPORTED)
def test_every_public_class_and_function_has_a_docstring(name: str) -> None:
    assert _own_doc(getattr(runcomfy_async, name)), f"{name} has no docstring"


@pytest.mark.parametrize(
    "name", [n for n in EXPORTED if inspect.isclass(getattr(runcomfy_async, n))]
)
def test_every_public_method_and_property_has_a_docstring(name: str) -> None:
    cls = getattr(runcomfy_async, name)
    undocumented = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if (isinstance(value, property) or inspect.isfunction(target)) and not _own_doc(target):
            undocumented.append(attr)
    assert undocumented == [], f"{name}: {undocumented}"


def test_the_package_docstring_and_version_exist() -> None:
    assert _own_doc(runcomfy_async)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", runcomfy_async.__version__)


# -- every type a user meets is exported ----------------------------------------------


def _own_classes(annotation: Any) -> set[type]:
    """The runcomfy_async classes named anywhere inside ``annotation``."""
    found: set[type] = set()
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and item.__module__.split(".")[0] == "runcomfy_async":
            found.add(item)
        stack.extend(typing.get_args(item))
    return found


def _public_callables() -> list[tuple[str, Any]]:
    """(qualified name, function) for every public function, method and property getter."""
    out: list[tuple[str, Any]] = []
    for name in runcomfy_async.__all__:
        value = getattr(runcomfy_async, name)
        if inspect.isfunction(value):
            out.append((name, value))
        elif inspect.isclass(value) and value.__module__.split(".")[0] == "runcomfy_async":
            for attr, member in vars(value).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, property):
                    member = member.fget
                member = getattr(member, "__func__", member)  # static and class methods
                if inspect.isfunction(member):
                    out.append((f"{name}.{attr}", member))
    return out


def _hints(func: Any) -> dict[str, Any]:
    module = sys.modules[func.__module__]
    # Names imported only under TYPE_CHECKING resolve through the package.
    localns = {**vars(runcomfy_async), **vars(module)}
    return typing.get_type_hints(func, globalns=vars(module), localns=localns)


def _raised_classes(func: Any) -> set[type]:
    """Exception classes a function raises by name (``raise Name(...)``)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return set()
    module = vars(sys.modules[func.__module__])
    found: set[type] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            target = node.exc.func
            if isinstance(target, ast.Name):
                value = module.get(target.id)
                if isinstance(value, type) and issubclass(value, BaseException):
                    found |= _own_classes(value)
    return found


def test_every_type_a_public_method_takes_returns_or_raises_is_exported() -> None:
    exported = {id(getattr(runcomfy_async, n)) for n in runcomfy_async.__all__}
    missing: dict[str, set[str]] = {}
    for qualname, func in _public_callables():
        classes = _raised_classes(func)
        for annotation in _hints(func).values():
            classes |= _own_classes(annotation)
        unexported = {c.__qualname__ for c in classes if id(c) not in exported}
        if unexported:
            missing[qualname] = unexported
    assert missing == {}


def test_the_introspection_sees_returns_and_raises() -> None:
    # A guard for the test above: it must find what is there.
    submit = runcomfy_async.RunComfyClient.submit
    assert runcomfy_async.Job in _own_classes(_hints(submit)["return"])
    assert runcomfy_async.ClientStateError in _raised_classes(submit)


def test_test_helpers_live_in_the_testing_namespace() -> None:
    import runcomfy_async.testing as testing

    for name in ("MockTransport", "Emulator", "Faults"):
        assert hasattr(testing, name), name
        assert name not in runcomfy_async.__all__
    assert sorted(testing.__all__) == sorted(set(testing.__all__))


@pytest.mark.parametrize("name", ["PollScheduler", "RequestBudget", "SubmitResponse"])
def test_internals_are_not_exported(name: str) -> None:
    assert name not in runcomfy_async.__all__
