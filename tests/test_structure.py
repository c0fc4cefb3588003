"""The house stays readable: no module of the package imports a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_language_ranker"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (module level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the list of modules on it (found by depth-first search)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_import_graph_sees_the_package():
    graph = import_graph()
    assert "hf_language_ranker.verifiers.math" in graph["hf_language_ranker.verifiers"]
    assert "hf_language_ranker.verifiers.base" in graph["hf_language_ranker.verifiers.math"]


def test_no_module_imports_a_module_that_imports_it_back():
    graph = {name: targets - {"hf_language_ranker"} for name, targets in import_graph().items()}
    assert cycles(graph) == []


def test_evaluation_modules_flow_one_way():
    graph = import_graph()
    flow = ["experiment", "choice", "accuracy", "scorers", "selection"]
    for position, module in enumerate(flow):
        imported = {name.rpartition(".")[2] for name in graph[f"hf_language_ranker.evaluation.{module}"]}
        assert not imported & set(flow[:position]), f"{module} imports {imported & set(flow[:position])} upstream of it"
