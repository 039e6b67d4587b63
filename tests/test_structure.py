"""The shape of the package: no import cycle among wasmudf's modules (counting imports made
only for type checking and inside functions: a cycle held together by them is still one).
The package's ``__init__`` gathers the public names and is imported first by definition, so
edges to a module's own ancestors are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wasmudf"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The wasmudf modules ``path`` imports, wherever in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wasmudf")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("wasmudf"):
                target = node.module
            else:
                continue
            found.add(target)
            # `from . import x` imports the module x when there is one.
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the wasmudf modules it imports. A module's own ancestor packages are left
    out: Python imports them before the module whatever it says (``from . import x``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in modules and m != name and not name.startswith(m + ".")}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_relative_and_type_checking_imports():
    graph = import_graph()
    assert "wasmudf.instance" in graph["wasmudf.functions"]  # under TYPE_CHECKING
    assert "wasmudf.aggregates" in graph["wasmudf.adapters.sqlite_rows"]  # from ..aggregates


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_public_names_are_sorted_and_complete():
    import inspect

    import wasmudf
    from wasmudf import errors

    assert wasmudf.__all__ == sorted(wasmudf.__all__)
    assert all(hasattr(wasmudf, name) for name in wasmudf.__all__)
    error_classes = {n for n, c in vars(errors).items() if inspect.isclass(c) and issubclass(c, errors.WasmUdfError)}
    assert error_classes <= set(wasmudf.__all__)
    assert {"AggregateFunction", "ScalarFunction", "Registration", "register", "unregister", "interrupt"} <= set(
        wasmudf.__all__
    )
