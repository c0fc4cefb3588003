"""Verifiers label sampled answers as correct (1.0) or incorrect (0.0), and parse them for voting.

Built-ins: :class:`MathVerifier` ("math"), :class:`CodeVerifier` ("code", runs code in a sandbox)
and :class:`ToolCallVerifier` ("tools", BFCL-style function calls). Any callable
``fn(prompt_text, candidate_text) -> bool | float`` also works through :func:`as_verifier`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import CallableVerifier, Verifier
from .code import CodeVerifier, extract_code
from .math import MathVerifier, answers_match, extract_answer
from .sandbox import SandboxResult, run_in_sandbox
from .tools import ToolCallVerifier, parse_tool_calls, tool_calls_match

#: the built-in verifiers by name (the registry lives here, above the modules it names, so none imports back)
BUILTIN_VERIFIERS: Registry[type[Verifier]] = Registry(
    "verifier name",
    {"math": MathVerifier, "code": CodeVerifier, "tools": ToolCallVerifier},
    hint="Or pass a Verifier instance, or a callable fn(prompt_text, candidate_text) -> bool | float.",
)


def as_verifier(obj: Verifier | Callable[[str, str], bool | float] | str | type[Verifier]) -> Verifier:
    """Coerce ``obj`` into a Verifier.

    Accepts a Verifier instance (returned unchanged), a Verifier subclass (instantiated with
    defaults), one of the built-in names ``"math"``, ``"code"``, ``"tools"``, or a plain callable
    ``fn(prompt_text, candidate_text) -> bool | float``.
    """
    if isinstance(obj, Verifier):
        return obj
    if isinstance(obj, type) and issubclass(obj, Verifier):
        return obj()
    if isinstance(obj, str):
        return BUILTIN_VERIFIERS[obj.strip().lower()]()
    if callable(obj):
        return CallableVerifier(obj)
    raise ValueError(
        f"Cannot use {type(obj).__name__} ({obj!r:.80}) as a verifier. Pass a built-in verifier name "
        f"({', '.join(sorted(BUILTIN_VERIFIERS))}), a Verifier instance, or a callable "
        "fn(prompt_text, candidate_text) -> bool | float."
    )


__all__ = [
    "BUILTIN_VERIFIERS",
    "CallableVerifier",
    "CodeVerifier",
    "MathVerifier",
    "SandboxResult",
    "ToolCallVerifier",
    "Verifier",
    "answers_match",
    "as_verifier",
    "extract_answer",
    "extract_code",
    "parse_tool_calls",
    "run_in_sandbox",
    "tool_calls_match",
]
