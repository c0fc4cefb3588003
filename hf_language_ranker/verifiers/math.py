"""Math answers: final-answer extraction and tolerant equivalence (numbers, fractions, LaTeX)."""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .base import Verifier

__all__ = ["MathVerifier", "answers_match", "extract_answer", "normalize_answer"]

logger = logging.getLogger(__name__)

# math-verify parses with sympy, which can be very slow on pathological input; we never hand it more.
_MAX_SYMBOLIC_CHARS = 1000

_NUMBER_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+")
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
# Anchors only (the value is read after the anchor), so "Answer: the answer is 5" finds both.
_GSM8K_RE = re.compile(r"####")
_ANSWER_IS_RE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")
_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(-?\d+)\s*\}$")
_PLAIN_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_SLASH_FRAC_RE = re.compile(r"^([-+]?\d+)\s*/\s*([-+]?\d+)$")
_UNIT_SUFFIX_RE = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*((?:[A-Za-z]{2,}\s*)+)$")
_TEXT_UNIT_RE = re.compile(r"^(.*?\d)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z ]*\}$")
_MATH_WORDS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "exp", "inf", "infty", "infinity", "frac"}


def _find_boxed(text: str) -> str | None:
    """Contents of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed)."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    content = text[start:i].strip()
                    if content:
                        return content
                    break
    return None


def _clean(answer: str) -> str:
    """Strip decoration around an extracted answer: ``$``, ``**``, trailing periods, thousands commas."""
    s = answer.strip()
    for _ in range(3):
        before = s
        s = s.strip().strip("*").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = s.replace("\\$", "").strip("$").strip()
        s = s.rstrip(".").rstrip()
        if s == before:
            break
    if not any(c in s for c in "([{"):
        s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
    return s


def _last_number(text: str) -> str | None:
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    if last is None:
        return None
    number = last.group(0)
    start = last.start()
    # A minus sign counts only when it is not a binary minus ("3-4" ends in 4, not -4).
    if (
        start > 0
        and text[start - 1] == "-"
        and (start == 1 or not (text[start - 2].isalnum() or text[start - 2] in ")]}"))
    ):
        number = "-" + number
    return number


def extract_answer(text: str) -> str | None:
    """Extract the final answer from a model response.

    Priority: last ``\\boxed{...}``, then GSM8K ``#### X``, then the last "The answer is X" /
    "answer: X", then the last number in the text. Returns None when nothing is found.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = _find_boxed(text)
    if boxed is not None:
        cleaned = _clean(boxed)
        if cleaned:
            return cleaned
    for pattern in (_GSM8K_RE, _ANSWER_IS_RE):
        for m in reversed(list(pattern.finditer(text))):
            value = text[m.end() :].lstrip().split("\n", 1)[0]
            end = _SENTENCE_END_RE.search(value)
            if end is not None:
                value = value[: end.start()]
            cleaned = _clean(value)
            if cleaned:
                return cleaned
    number = _last_number(text)
    return _clean(number) if number is not None else None


def _to_fraction(value: str | int | float | None) -> Fraction | None:
    """Exact rational value of a plain numeric answer ("3.0", "-7", "1/2", "\\frac{1}{2}", "50%")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value)) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    s = _clean(value)
    s = s.replace("\\!", "").replace("\\,", "").replace("{,}", "").strip()
    text_unit = _TEXT_UNIT_RE.match(s)
    if text_unit:
        s = text_unit.group(1).strip()
    if s.endswith("\\%"):
        s = s[:-2].strip()
    elif s.endswith("%"):
        s = s[:-1].strip()
    unit = _UNIT_SUFFIX_RE.match(s)
    if unit and not (set(unit.group(2).lower().split()) & _MATH_WORDS):
        s = unit.group(1)
    try:
        if _PLAIN_NUMBER_RE.match(s):
            return Fraction(s)
        m = _SLASH_FRAC_RE.match(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _FRAC_RE.match(s)
        if m and int(m.group(3)) != 0:
            frac = Fraction(int(m.group(2)), int(m.group(3)))
            return -frac if m.group(1) else frac
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _format_fraction(frac: Fraction) -> str:
    if frac.denominator == 1:
        return str(frac.numerator)
    den = frac.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating decimal: 1/2 -> "0.5"
        return format(Decimal(frac.numerator) / Decimal(frac.denominator), "f")
    return f"{frac.numerator}/{frac.denominator}"


def _normalize_latex(s: str) -> str:
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    return re.sub(r"\s+", "", s)


def normalize_answer(answer: str | int | float | None) -> str | None:
    """Canonical form of an answer, so equal numbers group together ("12.0" -> "12", "1/2" -> "0.5")."""
    if answer is None:
        return None
    frac = _to_fraction(answer)
    if frac is not None:
        return _format_fraction(frac)
    if not isinstance(answer, str):
        return None
    normalized = _normalize_latex(_clean(answer))
    return normalized or None


def _symbolic_equal_in_process(predicted: str, reference: str, timeout: int | None) -> bool:
    """math-verify equivalence; ``timeout`` is its own SIGALRM-based limit (main thread only)."""
    from math_verify import parse, verify

    def wrap(s: str) -> str:
        return s if "$" in s or "\\(" in s or "\\[" in s else "$" + s + "$"

    gold = parse(wrap(reference), parsing_timeout=timeout)
    target = parse(wrap(predicted), parsing_timeout=timeout)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=timeout))


# The worker runs math-verify in its own process: sympy can spend minutes inside one C call (e.g. a
# power tower) that neither SIGALRM nor a thread join can interrupt, but a process can be killed.
# Protocol: one JSON line in ([predicted, reference, timeout]), one line out ("1" or "0").
_WORKER_MAIN = r"""
import json, logging, os, resource, sys
sys.path[:] = json.loads(sys.stdin.readline())
try:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
except (ValueError, OSError):
    pass
logging.disable(logging.CRITICAL)
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
import math_verify
reply.write("ready\n")
reply.flush()
for line in sys.stdin:
    try:
        ok = _symbolic_equal_in_process(*json.loads(line))
    except BaseException:
        ok = False
    reply.write("1\n" if ok else "0\n")
    reply.flush()
"""


def _worker_source() -> str:
    function = inspect.getsource(_symbolic_equal_in_process)
    main = _WORKER_MAIN.replace("MEMORY", str(_WORKER_MEMORY_BYTES))
    return f"from __future__ import annotations\n{function}\n{main}"


_WORKER_MEMORY_BYTES = 4 * 1024**3
_WORKER_START_TIMEOUT = 60.0


class _SymbolicWorker:
    """A persistent helper process for math-verify calls, killed and restarted when one hangs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.broken = False  # set when the worker cannot start at all: callers fall back to in-process
        if hasattr(os, "register_at_fork"):  # a forked child must not share the parent's worker pipes
            os.register_at_fork(after_in_child=self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._proc = None

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _worker_source()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
        )
        self._send(proc, json.dumps(sys.path))
        if self._readline(proc, _WORKER_START_TIMEOUT) != b"ready":
            self._kill(proc)
            raise RuntimeError("math-verify worker did not start")
        return proc

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], line: str) -> None:
        assert proc.stdin is not None
        data = memoryview((line + "\n").encode())
        while data:
            data = data[proc.stdin.write(data) or 0 :]

    @staticmethod
    def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        return proc.stdout.readline().strip() or None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]

    def compare(self, predicted: str, reference: str, timeout: float) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            request = json.dumps([predicted, reference, max(1, math.ceil(timeout))])
            try:
                self._send(proc, request)
                answer = self._readline(proc, timeout + 1.0)
            except OSError:
                answer = None
            if answer is None:  # hung or died: kill it, the next call starts a fresh one
                logger.warning("math-verify timed out after %.1fs on %r vs %r", timeout, predicted, reference)
                self._kill(proc)
                self._proc = None
                return False
            return answer == b"1"

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._kill(self._proc)
                self._proc = None


_WORKER = _SymbolicWorker()
atexit.register(_WORKER.close)


def _symbolic_equal_fallback(predicted: str, reference: str, timeout: float) -> bool:
    """In-process math-verify: SIGALRM timeout on the main thread, else a daemon thread we stop waiting on."""
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hasattr(signal, "getitimer") and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
        return _symbolic_equal_in_process(predicted, reference, max(1, math.ceil(timeout)))
    result: list[bool] = []

    def work() -> None:
        with contextlib.suppress(Exception):
            result.append(_symbolic_equal_in_process(predicted, reference, None))

    worker = threading.Thread(target=work, name="math-verify", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _symbolic_equal(predicted: str, reference: str, timeout: float) -> bool:
    """math-verify equivalence with a hard ``timeout``; False on any error."""
    if not _WORKER.broken:
        try:
            return _WORKER.compare(predicted, reference, timeout)
        except (OSError, RuntimeError, ValueError) as exc:
            _WORKER.broken = True
            logger.warning("math-verify worker process unavailable (%s); comparing in-process instead", exc)
    try:
        return _symbolic_equal_fallback(predicted, reference, timeout)
    except Exception:  # noqa: BLE001 - junk input must never raise
        return False


def answers_match(predicted: str | None, reference: str | int | float | None, *, timeout: float = 5.0) -> bool:
    """True when ``predicted`` and ``reference`` are the same mathematical answer.

    Plain numbers and fractions are compared exactly ("3.0" == 3, "1/2" == "0.5"); anything else
    goes to math-verify (guarded by ``timeout`` seconds). Never raises: junk input gives False.
    """
    try:
        if predicted is None or reference is None:
            return False
        if not isinstance(predicted, str):
            predicted = str(predicted)
        pred_num = _to_fraction(predicted)
        ref_num = _to_fraction(reference)
        if pred_num is not None and ref_num is not None:
            if pred_num == ref_num:
                return True
            return math.isclose(float(pred_num), float(ref_num), rel_tol=1e-9, abs_tol=1e-12)
        reference_str = reference if isinstance(reference, str) else str(reference)
        pred_norm, ref_norm = normalize_answer(predicted), normalize_answer(reference_str)
        if pred_norm is None or ref_norm is None:
            return False
        if pred_norm == ref_norm:
            return True
        pred_clean, ref_clean = _clean(predicted), _clean(reference_str)
        if max(len(pred_clean), len(ref_clean)) > _MAX_SYMBOLIC_CHARS:
            return False
        return _symbolic_equal(pred_clean, ref_clean, timeout)
    except Exception:  # noqa: BLE001 - a verifier must label junk as wrong, not crash the ranker
        logger.debug("answers_match failed on %r vs %r", predicted, reference, exc_info=True)
        return False


def _reference_answer(reference: Any) -> Any:
    """GSM8K/MATH references hold a whole solution; reduce them to the final answer."""
    if isinstance(reference, str) and ("####" in reference or "\\boxed" in reference or "\\fbox" in reference):
        return extract_answer(reference)
    return reference


class MathVerifier(Verifier):
    """1.0 when the extracted final answer equals ``example[answer_key]``."""

    name = "math"

    def __init__(self, *, answer_key: str = "answer", timeout: float = 5.0) -> None:
        self.answer_key = answer_key
        self.required_keys = (answer_key,)
        self.timeout = timeout

    def __call__(self, example: Mapping[str, Any], candidate: str) -> float:
        if self.answer_key not in example:
            raise KeyError(
                f"MathVerifier needs example[{self.answer_key!r}] (the reference answer); the example only "
                f"has keys {sorted(map(str, example))}. Add the field or pass MathVerifier(answer_key=...)."
            )
        reference = _reference_answer(example[self.answer_key])
        predicted = extract_answer(candidate) if isinstance(candidate, str) else None
        return 1.0 if answers_match(predicted, reference, timeout=self.timeout) else 0.0

    def parse(self, candidate: str) -> str | None:
        """Normalised final answer ("12.0" -> "12"), for majority voting."""
        if not isinstance(candidate, str):
            return None
        return normalize_answer(extract_answer(candidate))
