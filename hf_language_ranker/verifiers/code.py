"""Code answers: check generated programs against an example's tests, run in :mod:`.sandbox`.

The sandbox (a fresh unprivileged uid, namespaces, resource limits, bounded output) lives in
``verifiers/sandbox.py``; this module builds the test program for a candidate and reads the outcome.
"""

from __future__ import annotations

import ast
import inspect
import re
import secrets
from collections.abc import Mapping
from typing import Any

from .base import Verifier
from .sandbox import SandboxResult, run_in_sandbox

__all__ = ["CodeVerifier", "extract_code"]

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_OPEN_PYTHON_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)[^\n]*\n", re.IGNORECASE)
_PYTHON_LANGS = {"python", "python3", "py", ""}


def extract_code(candidate: str) -> str:
    """Contents of the last ```python (or plain ```) fenced block, else the text itself."""
    blocks = [m.group(2) for m in _FENCE_RE.finditer(candidate) if m.group(1).lower() in _PYTHON_LANGS]
    if blocks:
        return blocks[-1]
    opened = list(_OPEN_PYTHON_FENCE_RE.finditer(candidate))
    if opened:  # a generation cut off before its closing fence
        return candidate[opened[-1].end() :]
    return candidate


def _defines(code: str, name: str) -> bool:
    """Whether ``code`` defines ``name`` at top level (falls back to a regex if it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    sides = [node.test.left, *node.test.comparators]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return isinstance(node.test.ops[0], ast.Eq) and len(names) == 1 and len(mains) == 1


def _strip_main_guard(code: str) -> str:
    """Drop top-level ``if __name__ == "__main__":`` blocks (demo code that may read stdin)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code
    lines = code.splitlines(keepends=True)
    for node in reversed(tree.body):
        if _is_main_guard(node) and node.end_lineno is not None:
            del lines[node.lineno - 1 : node.end_lineno]
    return "".join(lines)


def _compiles(code: str) -> bool:
    try:
        compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


class CodeVerifier(Verifier):
    """Runs a code answer against the example's tests in :func:`run_in_sandbox`.

    HumanEval-style examples: ``prompt`` (signature + docstring), ``test`` (defines
    ``check(candidate)``) and ``entry_point``. MBPP-style: ``tests`` or ``test_list`` (assert
    strings), optional ``test_setup_code`` / ``test_imports``. Scores 1.0 iff the program exits 0
    within the limits after running every test.
    """

    name = "code"

    def __init__(self, **limits: Any) -> None:
        """``limits``: keyword arguments of :func:`run_in_sandbox` (``timeout``, ``cpu_seconds``, ``memory_mb``,
        ``max_processes``, ``max_file_mb``, ``max_output_bytes``, ``python``); unset ones keep its defaults."""
        options = set(inspect.signature(run_in_sandbox).parameters) - {"program"}
        unknown = sorted(set(limits) - options)
        if unknown:
            raise TypeError(f"Unknown sandbox limit(s) {unknown}; CodeVerifier accepts {sorted(options)}.")
        self.limits: dict[str, Any] = limits

    def build_program(self, example: Mapping[str, Any], candidate: str, marker: str = "") -> str:
        """The test program for one candidate; it prints ``marker`` only after every test passed."""
        code = _strip_main_guard(extract_code(candidate))
        if "test" in example and "entry_point" in example:
            entry = str(example["entry_point"])
            prompt = str(example.get("prompt", ""))
            if _defines(code, entry):
                body = f"{prompt}\n\n{code}" if prompt else code  # prompt first: imports and helpers
            else:  # a completion of the function body
                body = prompt + code
                if not _compiles(body):
                    indented = "\n".join("    " + line if line.strip() else line for line in code.splitlines())
                    if _compiles(prompt + indented):
                        body = prompt + indented
            tests = f"{example['test']}\n\ncheck({entry})\n"
        elif "tests" in example or "test_list" in example:
            raw_tests = example["tests"] if "tests" in example else example["test_list"]
            tests = raw_tests if isinstance(raw_tests, str) else "\n".join(map(str, raw_tests))
            setup = [str(example.get("test_setup_code") or "")]
            imports = example.get("test_imports") or []
            setup.append(imports if isinstance(imports, str) else "\n".join(map(str, imports)))
            body = "\n".join(part for part in setup if part) + "\n\n" + code
            tests += "\n"
        else:
            raise ValueError(
                "CodeVerifier needs a HumanEval-style example (keys 'prompt', 'test', 'entry_point') or an "
                f"MBPP-style one (key 'tests' or 'test_list'); got keys {sorted(map(str, example))}."
            )
        footer = ""
        if marker:  # written straight to fd 1, after everything the tests printed
            footer = (
                "import os as _hflr_os, sys as _hflr_sys\n_hflr_sys.stdout.flush()\n"
                f"_hflr_os.write(1, {(marker + chr(10)).encode()!r})\n"
            )
        return f"{body}\n\n{tests}\n{footer}"

    def run(self, example: Mapping[str, Any], candidate: str) -> SandboxResult:
        """Run the candidate's test program and return the raw sandbox result (for debugging)."""
        marker = f"HFLR-TESTS-PASSED-{secrets.token_hex(16)}"
        result = run_in_sandbox(self.build_program(example, candidate, marker), **self.limits)
        if result.passed and marker not in result.stdout:
            result.passed = False
            if "truncated" in result.reason:
                result.reason = (
                    "exited 0, but its output passed max_output_bytes and hid the end-of-tests marker; "
                    "raise max_output_bytes"
                )
            else:  # exit 0 without reaching the end of the tests: sys.exit(0)/os._exit(0) in the candidate
                result.reason = "exited 0 before the tests finished (e.g. sys.exit(0) in the candidate)"
        result.stdout = result.stdout.replace(marker + "\n", "").replace(marker, "")
        return result

    def __call__(self, example: Mapping[str, Any], candidate: str) -> float:
        return 1.0 if self.run(example, candidate).passed else 0.0
