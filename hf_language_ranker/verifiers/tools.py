"""Tool calls: parse function calls from model output and check them BFCL-style."""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from .base import Verifier

__all__ = ["ToolCallVerifier", "parse_tool_calls", "tool_calls_match"]

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_MAX_SCAN_STARTS = 200  # JSON start positions tried in prose, to bound the work on long text
_CALL_START_RE = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*\(")
_BFCL_STRIP_RE = re.compile(r"[ ,./\-_*^]")


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _call_from_json(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" not in obj:  # OpenAI {"type": "function", ...}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI encodes arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"name": name, "arguments": args}


def _every_call(items: list[Any], parse: Callable[[Any], dict[str, Any] | None]) -> list[dict[str, Any]] | None:
    """Each item parsed as a call, or ``None`` when there is none or one of them is not a call."""
    calls = [parse(item) for item in items]
    return calls if calls and all(call is not None for call in calls) else None  # type: ignore[return-value]


def _calls_from_json(obj: Any) -> list[dict[str, Any]] | None:
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        obj = obj["tool_calls"]
    return _every_call(obj if isinstance(obj, list) else [obj], _call_from_json)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, complex):
        return str(value)
    return value


def _call_from_ast(node: ast.expr) -> dict[str, Any] | None:
    if not isinstance(node, ast.Call) or node.args:  # BFCL calls use keyword arguments only
        return None
    name = _dotted_name(node.func)
    if name is None:
        return None
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:  # **kwargs
            return None
        try:
            args[kw.arg] = _jsonable(ast.literal_eval(kw.value))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return {"name": name, "arguments": args}


def _calls_from_python(text: str) -> list[dict[str, Any]] | None:
    """``[f(a=1), g(b='x')]``, ``f(a=1)`` or one call per line, parsed with ``ast`` (never evaluated)."""
    try:
        tree = ast.parse(text.strip())
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    nodes: list[ast.expr] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return None
        value = stmt.value
        nodes.extend(value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return _every_call(nodes, _call_from_ast)


def _scan_json(text: str) -> list[dict[str, Any]] | None:
    """The first JSON value embedded in prose that reads as tool calls."""
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:_MAX_SCAN_STARTS]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        calls = _calls_from_json(obj)
        if calls:
            return calls
    return None


def _parse_segment(text: str) -> list[dict[str, Any]] | None:
    stripped = text.strip()
    if not stripped:
        return None
    try:
        calls = _calls_from_json(json.loads(stripped))
        if calls:
            return calls
    except (ValueError, RecursionError):
        pass
    calls = _calls_from_python(stripped) or _scan_json(stripped)
    if calls:
        return calls
    # Python calls with prose around them: the bracketed list, or a single line.
    first, last = stripped.find("["), stripped.rfind("]")
    if 0 <= first < last:
        calls = _calls_from_python(stripped[first : last + 1])
        if calls:
            return calls
    for line in reversed(stripped.splitlines()):
        line = line.strip().strip("`").strip()
        if line and line != stripped:
            calls = _calls_from_python(line)
            if calls:
                return calls
    return _scan_python_call(stripped)


def _scan_python_call(text: str) -> list[dict[str, Any]] | None:
    """A single ``name(arg=...)`` call embedded in prose: try each call start up to each ``)``."""
    closes = [i for i, ch in enumerate(text) if ch == ")"][:_MAX_SCAN_STARTS]
    for m in list(_CALL_START_RE.finditer(text))[:_MAX_SCAN_STARTS]:
        for end in closes:
            if end > m.end():
                calls = _calls_from_python(text[m.start() : end + 1])
                if calls:
                    return calls
    return None


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """Parse tool calls as ``[{"name": str, "arguments": dict}]``; ``[]`` when nothing parses.

    Accepts JSON objects ``{"name", "arguments" | "parameters"}`` or lists of them (also inside
    ```json fences or prose), OpenAI ``tool_calls`` shapes, and BFCL Python syntax such as
    ``[get_weather(city='Paris'), math.factorial(n=5)]``, read with ``ast.literal_eval`` only.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    segments = [m.group(2) for m in _FENCE_RE.finditer(text)][::-1] + [text]
    for segment in segments:
        try:
            calls = _parse_segment(segment)
        except (RecursionError, MemoryError):
            calls = None
        if calls:
            return calls
    return []


# ----------------------------------------------------------------------------------------------
# Matching (BFCL AST checker semantics)
# ----------------------------------------------------------------------------------------------


def _standardize(s: str) -> str:
    """BFCL string normalisation: drop spaces and ``,./-_*^``, lowercase, ``'`` -> ``"``."""
    return _BFCL_STRIP_RE.sub("", s).lower().replace("'", '"')


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _values_equal(value: Any, expected: Any) -> bool:
    """One given value against one allowed value (recursively for lists and dicts)."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and value == expected
    if _is_number(expected) and _is_number(value):
        if value == expected:
            return True
        return math.isclose(float(value), float(expected), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, str) and isinstance(value, str):
        return _standardize(value) == _standardize(expected)
    if isinstance(expected, (list, tuple)) and isinstance(value, (list, tuple)):
        return len(value) == len(expected) and all(_values_equal(v, e) for v, e in zip(value, expected, strict=True))
    if isinstance(expected, dict) and isinstance(value, dict):
        return _dict_matches(value, expected)
    return value == expected


def _allowed(value: Any, options: Any) -> bool:
    """Whether ``value`` is one of ``options`` (BFCL lists the allowed values of each argument)."""
    if not isinstance(options, list):
        return _values_equal(value, options)
    return any(_values_equal(value, option) for option in options)


def _is_optional(options: Any) -> bool:
    return isinstance(options, list) and any(option == "" for option in options)


def _dict_matches(value: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """BFCL nested dicts: each expected key maps to a list of allowed values ("" = optional)."""
    if any(key not in expected for key in value):
        return False
    for key, options in expected.items():
        if key not in value:
            if not _is_optional(options):
                return False
        elif not _allowed(value[key], options):
            return False
    return True


def _names_match(given: str, expected: str) -> bool:
    # BFCL renames dotted functions (math.factorial -> math_factorial) for APIs that forbid dots.
    return given == expected or given.replace(".", "_") == expected.replace(".", "_")


def _call_matches(call: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    if not isinstance(call, Mapping) or len(expected) != 1:
        return False
    ((expected_name, expected_args),) = expected.items()
    name, args = call.get("name"), call.get("arguments")
    if not isinstance(name, str) or not _names_match(name, str(expected_name)):
        return False
    if not isinstance(args, Mapping) or not isinstance(expected_args, Mapping):
        return False
    return _dict_matches(args, expected_args)


def tool_calls_match(calls: list[dict[str, Any]], possible_answer: list[dict[str, Any]]) -> bool:
    """BFCL-style check of parsed ``calls`` against ``possible_answer``.

    ``possible_answer`` is ``[{func_name: {arg: [allowed values...]}}]``. Every call must match a
    distinct expected call (order ignored, same number of calls); arguments must be allowed values
    (numbers with int/float tolerance, strings normalised as BFCL does), required arguments present
    (an argument is optional when ``""`` is among its allowed values), and no unknown arguments.
    """
    try:
        if isinstance(possible_answer, Mapping):
            possible_answer = [possible_answer]
        if not isinstance(calls, list) or not isinstance(possible_answer, list):
            return False
        if len(calls) != len(possible_answer) or not calls:
            return False
        fits = [[j for j, exp in enumerate(possible_answer) if _call_matches(call, exp)] for call in calls]
        owner: dict[int, int] = {}  # expected index -> call index (bipartite matching, Kuhn's algorithm)

        def assign(i: int, seen: set[int]) -> bool:
            for j in fits[i]:
                if j not in seen:
                    seen.add(j)
                    if j not in owner or assign(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        return all(assign(i, set()) for i in range(len(calls)))
    except (TypeError, ValueError, AttributeError, RecursionError):
        return False


def canonical_calls(calls: list[dict[str, Any]]) -> str | None:
    """Order-independent JSON string of ``calls``, sorted by name then arguments (for majority vote)."""
    if not calls:
        return None
    rows = sorted((c["name"], json.dumps(c["arguments"], sort_keys=True)) for c in calls)
    return "[" + ",".join(f'{{"arguments": {args}, "name": {json.dumps(name)}}}' for name, args in rows) + "]"


class ToolCallVerifier(Verifier):
    """1.0 when the parsed tool calls match ``example[answer_key]`` (a BFCL possible answer)."""

    name = "tools"

    def __init__(self, *, answer_key: str = "answer") -> None:
        self.answer_key = answer_key
        self.required_keys = (answer_key,)

    def __call__(self, example: Mapping[str, Any], candidate: str) -> float:
        if self.answer_key not in example:
            raise KeyError(
                f"ToolCallVerifier needs example[{self.answer_key!r}], a BFCL possible answer such as "
                "[{'func': {'arg': [1]}}]; the example only has keys "
                f"{sorted(map(str, example))}. Add the field or pass ToolCallVerifier(answer_key=...)."
            )
        expected = example[self.answer_key]
        if isinstance(expected, str):  # datasets often store the possible answer as a JSON string
            try:
                expected = json.loads(expected)
            except ValueError as exc:
                raise ValueError(
                    f"example[{self.answer_key!r}] is a string that is not JSON ({exc}); pass the BFCL "
                    "possible answer as a list like [{'func': {'arg': [1]}}]."
                ) from exc
        return 1.0 if tool_calls_match(parse_tool_calls(candidate), expected) else 0.0

    def parse(self, candidate: str) -> str | None:
        """Canonical JSON of the sorted calls, so identical call sets group in majority voting."""
        try:
            return canonical_calls(parse_tool_calls(candidate))
        except (TypeError, ValueError):
            return None
