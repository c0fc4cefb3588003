"""Verifier interface: label a sampled answer as correct (1.0) or incorrect (0.0)."""

from __future__ import annotations

import abc
import contextlib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Verifier", "CallableVerifier"]


class Verifier(abc.ABC):
    """Scores one candidate answer for one example.

    Subclasses implement ``__call__`` (returns a float in [0, 1], usually 1.0 or 0.0) and may
    implement ``parse`` to return a canonical answer string used for majority voting.
    """

    name: str = "verifier"
    #: keys every example must hold besides "prompt" (checked when prompts are read, before a model loads)
    required_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def __call__(self, example: Mapping[str, Any], candidate: str) -> float:
        """Return 1.0 if ``candidate`` is a correct answer to ``example``, else 0.0."""

    def parse(self, candidate: str) -> str | None:
        """Return a canonical answer for majority voting, or None when answers do not compare."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


class CallableVerifier(Verifier):
    """Wraps a user function ``fn(prompt_text, candidate_text) -> bool | float``."""

    name = "callable"

    def __init__(self, fn: Callable[[str, str], bool | float], *, prompt_key: str = "prompt") -> None:
        if not callable(fn):
            raise TypeError(f"CallableVerifier needs a callable fn(prompt, candidate), got {type(fn).__name__}.")
        self.fn = fn
        self.prompt_key = prompt_key
        self.name = _callable_name(fn)

    def __call__(self, example: Mapping[str, Any], candidate: str) -> float:
        if self.prompt_key not in example:
            raise KeyError(
                f"Verifier {self.name!r} needs example[{self.prompt_key!r}] (the prompt text); the example "
                f"only has keys {sorted(map(str, example))}. Add a {self.prompt_key!r} field to the example."
            )
        result = self.fn(example[self.prompt_key], candidate)
        return _to_score(result, self.name)

    def __repr__(self) -> str:
        return f"CallableVerifier({self.name})"


def _to_score(result: Any, fn_name: str) -> float:
    if not isinstance(result, (bool, numbers.Real)) and hasattr(result, "item"):
        with contextlib.suppress(TypeError, ValueError):  # numpy scalars, 0-d arrays and tensors
            result = result.item()
    if isinstance(result, bool):
        return 1.0 if result else 0.0
    if isinstance(result, numbers.Real):
        score = float(result)
        if math.isnan(score) or not 0.0 <= score <= 1.0:
            raise ValueError(
                f"Verifier callable {fn_name!r} returned {score!r}, outside [0, 1]. Return a bool, or a "
                "float score between 0.0 and 1.0."
            )
        return score
    raise TypeError(
        f"Verifier callable {fn_name!r} returned {type(result).__name__} ({result!r:.80}), not a number. "
        "Make it return a bool (correct or not) or a float score in [0, 1]."
    )
