"""Verifiers label sampled answers as correct (1.0) or incorrect (0.0), and parse them for voting.

Built-ins: :class:`MathVerifier` ("math"), :class:`CodeVerifier` ("code", runs code in a sandbox)
and :class:`ToolCallVerifier` ("tools", BFCL-style function calls). Any callable
``fn(prompt_text, candidate_text) -> bool | float`` also works through :func:`as_verifier`.
"""

from __future__ import annotations

from .base import CallableVerifier, Verifier, as_verifier
from .code import CodeVerifier, SandboxResult, extract_code, run_in_sandbox
from .math import MathVerifier, answers_match, extract_answer
from .tools import ToolCallVerifier, parse_tool_calls, tool_calls_match

__all__ = [
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
