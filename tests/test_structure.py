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
    flow = ["experiment", "cross_validation", "accuracy", "scorers", "baselines"]
    for position, module in enumerate(flow):
        imported = {name.rpartition(".")[2] for name in graph[f"hf_language_ranker.evaluation.{module}"]}
        assert not imported & set(flow[:position]), f"{module} imports {imported & set(flow[:position])} upstream of it"


def defined_names(path: Path) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments, guarded imports)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
        elif isinstance(node, ast.Try):  # optional dependencies: `try: import grp ... except ImportError`
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names.update(alias.asname or alias.name for alias in inner.names)
    return names


def test_names_are_imported_from_the_module_that_defines_them():
    """No module hands on another's names: every `from <package module> import name` (in the package, tests,
    examples and benchmarks) names the module that defines it. Package faces (``__init__.py``) are exempt."""
    root = PACKAGE.parent
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    defined = {name: defined_names(path) for name, path in modules.items() if path.name != "__init__.py"}
    readers = [*PACKAGE.rglob("*.py"), *(root / "tests").glob("*.py")]
    readers += [*(root / "examples").glob("*.py"), *(root / "benchmarks").glob("*.py")]
    wrong = []
    for path in readers:
        package = module_name(path).rpartition(".")[0] if path.is_relative_to(PACKAGE) else ""
        if path.name == "__init__.py":
            package = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base not in defined:
                continue
            for alias in node.names:
                if alias.name not in defined[base] and f"{base}.{alias.name}" not in modules:
                    wrong.append(f"{path.relative_to(root)}: {alias.name} from {base}")
    assert wrong == []


def test_benchmarks_and_examples_import_no_cli_and_no_private_names():
    """Benchmarks and examples use the library as a user would: never `hf_language_ranker.cli` (the command line's
    internals), no module path or name that starts with ``_``. Their own helper modules (``_common``) are theirs."""
    root = PACKAGE.parent
    wrong = []
    for path in [*(root / "examples").glob("*.py"), *(root / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                modules, names = [node.module or ""], [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                modules, names = [alias.name for alias in node.names], []
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == PACKAGE.name and ("cli" in parts or any(part.startswith("_") for part in parts)):
                    wrong.append(f"{path.relative_to(root)}: imports {module}")
            wrong += [f"{path.relative_to(root)}: imports {name} from {modules[0]}" for name in names if name[0] == "_"]
    assert wrong == []
