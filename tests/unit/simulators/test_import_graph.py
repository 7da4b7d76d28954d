"""No import cycles inside ``simulators/``: every import counts, lazy (in-function) ones too.

Only imports under ``if TYPE_CHECKING:`` are left out: they are never executed (annotations of
a device seen from its behaviours and its command handler).
"""

from __future__ import annotations

import ast
from pathlib import Path

import simulators

ROOT = Path(simulators.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["simulators", *path.relative_to(ROOT).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_imports(path: Path) -> set[str]:
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                names.update(f"{child.module}.{a.name}" for a in child.names)
                names.add(child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {n for n in _runtime_imports(path) if n in modules and n != name}
        # a package's __init__ only re-exports; importing a submodule never needs it
        graph[name] = set() if name == "simulators" else targets - {"simulators"}
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in path:
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_graph_sees_the_imports():
    graph = _graph()
    assert "simulators.scenario" in graph["simulators.model"]
    assert "simulators.devices.command_handler" in graph["simulators.devices.base"]


def test_no_module_of_simulators_imports_itself_round_a_cycle():
    graph = _graph()
    cycles = [c for m in sorted(graph) if (c := _cycle_from(graph, m)) is not None]
    assert cycles == []


def test_no_private_name_is_imported_from_another_simulators_module():
    private = [
        f"{name}: {alias.name} from {node.module}"
        for name, path in _modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simulators")
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []
