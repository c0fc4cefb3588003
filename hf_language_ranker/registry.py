"""`Registry`: every named choice of the package (losses, heads, pick rules, baselines, verifiers, tasks, presets) is
a name -> object mapping with one error for a name it does not hold: what was asked, what exists, the closest name.

    LOSSES = Registry("ranking loss")

    @LOSSES.register("listwise")
    def listwise_loss(scores, labels, mask): ...

    LOSSES["listwse"]  # UnknownNameError: Unknown ranking loss 'listwse'. Known: listwise. Did you mean 'listwise'?
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that a `Registry` does not hold: a `ValueError` (a bad argument) that is also a `KeyError` (a failed
    lookup), so either ``except`` clause catches it."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return str(self.args[0])


class Registry(dict[str, T], Generic[T]):
    """Named objects of one ``kind`` ("ranking loss", "task"), in registration order.

    A `dict` in every other way (``in``, iteration, ``get``, ``|``, ``registry[name] = obj``); only a lookup of a name
    it does not hold differs: it raises `UnknownNameError` with the known names and the closest one, then ``hint``
    (what else the caller may pass, say) when given.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None, *, hint: str = "") -> None:
        super().__init__(entries or {})
        self.kind = kind
        self.hint = hint

    def register(self, name: str, obj: T | None = None) -> Any:
        """Add ``obj`` under ``name``, once; without ``obj``, a decorator that registers what it decorates."""
        if name in self:
            raise ValueError(f"The {self.kind} {name!r} is already registered.")
        if obj is not None:
            self[name] = obj
            return obj

        def decorator(decorated: Callable[..., Any]) -> Callable[..., Any]:
            self[name] = decorated  # type: ignore[assignment]
            return decorated

        return decorator

    def unknown(self, name: Any) -> UnknownNameError:
        """The error for a name not held: ``Unknown <kind> 'x'. Known: a, b, c. Did you mean 'y'? <hint>``."""
        known = sorted(self)
        message = f"Unknown {self.kind} {name!r}. Known: {', '.join(known) or 'none'}."
        closest = difflib.get_close_matches(str(name), known, n=1)
        if closest:
            message += f" Did you mean {closest[0]!r}?"
        return UnknownNameError(f"{message} {self.hint}".rstrip())

    def __missing__(self, name: str) -> T:
        raise self.unknown(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {dict.__repr__(self)})"
