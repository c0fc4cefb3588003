"""Tests for the math verifier and the verifier base layer (as_verifier, CallableVerifier)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from hf_language_ranker.verifiers import (
    CallableVerifier,
    CodeVerifier,
    MathVerifier,
    ToolCallVerifier,
    Verifier,
    answers_match,
    as_verifier,
    extract_answer,
)
from hf_language_ranker.verifiers import math as math_module

# ---------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the result is \\boxed{\\frac{1}{\\sqrt{2}}} overall", "\\frac{1}{\\sqrt{2}}"),
        ("first \\boxed{3}, then corrected: \\boxed{4}.", "4"),
        ("complete \\boxed{3} then cut off \\boxed{4", "3"),  # the unfinished box is ignored
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("Natalia sold 48 clips.\n#### 1,234", "1234"),
        ("#### 72\nThe answer is 5", "72"),  # GSM8K marker outranks "the answer is"
        ("The answer is 42. Let me double check: 6 * 7 = 42.", "42"),
        ("the ANSWER is 7.\nWait, no. The answer is 8.", "8"),
        ("**Answer:** $18.", "18"),
        ("The final answer is: \\$1,000,000.", "1000000"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is\n  12.0", "12.0"),
        ("There are 5 apples and 7 pears.", "7"),
        ("The value is x = -7.", "-7"),
        ("pages 3-4", "4"),  # a binary minus is not a sign
        ("we need 2,500 bricks", "2500"),
        ("so the answer is 1/2", "1/2"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("answer: 4 dogs\n", "4 dogs"),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no numbers at all", None, 123])
def test_extract_answer_nothing_found(text: object) -> None:
    assert extract_answer(text) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# answers_match
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("3.0", 3),
        ("3", "3.00"),
        ("-7", -7),
        ("1/2", "0.5"),
        ("0.5", 0.5),
        ("\\frac{1}{2}", "1/2"),
        ("-\\dfrac{3}{4}", -0.75),
        ("1,234", 1234),
        ("50%", 50),
        ("18 dollars", 18),
        ("$18", "18"),
        ("0.1", 0.1),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("x = 5", "5"),
        ("\\pi", "\\pi"),
    ],
)
def test_answers_match_equivalent(predicted: str, reference: str | int | float) -> None:
    assert answers_match(predicted, reference) is True


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("4", 5),
        ("1000001", 1000000),
        ("0.33", "1/3"),
        ("3.14", "\\pi"),
        ("2 pi", 2),
        ("x+1", "x+2"),
        (None, 3),
        ("", 3),
        ("7", None),
    ],
)
def test_answers_match_different(predicted: str | None, reference: object) -> None:
    assert answers_match(predicted, reference) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "junk",
    ["\\frac{", "}}}{{{", "\\boxed{", "$$$", "1/0", "((((((((((", "\\" * 50, "x" * 5000, object(), [], {"a": 1}],
)
def test_answers_match_never_raises_on_junk(junk: object) -> None:
    assert answers_match(junk, "3") is False  # type: ignore[arg-type]
    assert answers_match("3", junk) is False  # type: ignore[arg-type]


# sympy tries to evaluate this power tower inside one uninterruptible C call.
_TOWER = "9^{9^{9^{9^{9}}}}"


def test_pathological_input_times_out_on_main_thread() -> None:
    start = time.monotonic()
    assert answers_match(_TOWER, "3", timeout=1) is False
    assert time.monotonic() - start < 15
    assert answers_match("(x+1)^2", "x^2+2x+1") is True  # the restarted worker still answers


def test_pathological_input_times_out_off_main_thread() -> None:
    results: list[tuple[bool, bool, float]] = []

    def work() -> None:
        start = time.monotonic()
        hung = answers_match(_TOWER, "3", timeout=1)
        results.append((hung, answers_match("\\sqrt{4}", "2"), time.monotonic() - start))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "answers_match hung in a worker thread"
    hung, symbolic, elapsed = results[0]
    assert hung is False and symbolic is True
    assert elapsed < 30


def test_in_process_fallback_works_on_and_off_main_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no worker process can start, math-verify runs in-process (signals, or a daemon thread)."""
    monkeypatch.setattr(math_module._WORKER, "broken", True)
    assert answers_match("(x+1)^2", "x^2+2x+1") is True
    assert answers_match("x+1", "x+2") is False
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(answers_match("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}")))
    thread.start()
    thread.join(60)
    assert results == [True]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_math_verify_worker() -> None:
    assert answers_match("(x+1)^2", "x^2+2x+1")  # the parent's worker is running now
    pid = os.fork()
    if pid == 0:  # child: must not talk over the parent's pipes
        fresh = math_module._WORKER._proc is None
        ok = fresh and answers_match("\\sqrt{4}", "2") and not answers_match("x+1", "x+2")
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("answers_match hung in a forked child")
    assert os.waitstatus_to_exitcode(status) == 0
    assert answers_match("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2")  # the parent's worker still answers


# ---------------------------------------------------------------------------------------------
# MathVerifier
# ---------------------------------------------------------------------------------------------


def test_math_verifier_scores() -> None:
    verifier = MathVerifier()
    assert verifier.name == "math"
    assert verifier({"answer": "72"}, "She sold 48 + 24 = 72 clips. The answer is 72.") == 1.0
    assert verifier({"answer": 72}, "Therefore \\boxed{72.0}") == 1.0
    assert verifier({"answer": "72"}, "The answer is 71.") == 0.0
    assert verifier({"answer": "72"}, "I don't know.") == 0.0


def test_math_verifier_reduces_full_gsm8k_and_math_solutions() -> None:
    verifier = MathVerifier()
    assert verifier({"answer": "48/2 = 24 clips in May.\n48+24 = 72\n#### 72"}, "answer: 72") == 1.0
    assert verifier({"answer": "So the answer is $\\boxed{\\frac{1}{2}}$."}, "0.5") == 1.0


def test_math_verifier_missing_answer_key_names_the_fix() -> None:
    with pytest.raises(KeyError, match="answer_key"):
        MathVerifier()({"question": "1+1?"}, "2")
    assert MathVerifier(answer_key="target")({"target": 2}, "2") == 1.0


def test_math_verifier_parse_groups_equal_answers() -> None:
    parse = MathVerifier().parse
    assert parse("The answer is 12.0.") == "12"
    assert parse("#### 12") == "12"
    assert parse("\\boxed{1/2}") == parse("The answer is 0.5") == parse("\\boxed{\\frac{1}{2}}") == "0.5"
    assert parse("\\boxed{1/3}") == "1/3"
    assert parse("\\boxed{ x^2 + 1 }") == parse("\\boxed{x^2+1}")
    assert parse("no answer here") is None


# ---------------------------------------------------------------------------------------------
# Verifier base layer
# ---------------------------------------------------------------------------------------------


def test_callable_verifier_wraps_bool_and_float() -> None:
    verifier = CallableVerifier(lambda prompt, candidate: candidate.strip() == prompt.upper())
    assert verifier({"prompt": "abc"}, " ABC ") == 1.0
    assert verifier({"prompt": "abc"}, "abc") == 0.0
    assert CallableVerifier(lambda p, c: 0.25)({"prompt": "x"}, "y") == 0.25
    assert verifier.parse("anything") is None


def test_callable_verifier_rejects_non_numbers_with_the_callable_name() -> None:
    def my_checker(prompt: str, candidate: str) -> str:
        return "yes"

    with pytest.raises(TypeError, match=r"my_checker.*bool"):
        CallableVerifier(my_checker)({"prompt": "p"}, "c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        CallableVerifier(lambda p, c: 3.0)({"prompt": "p"}, "c")
    with pytest.raises(KeyError, match="prompt"):
        CallableVerifier(lambda p, c: True)({"question": "p"}, "c")


def test_as_verifier_accepts_documented_forms() -> None:
    math_verifier = MathVerifier()
    assert as_verifier(math_verifier) is math_verifier
    assert isinstance(as_verifier("math"), MathVerifier)
    assert isinstance(as_verifier(" Code "), CodeVerifier)
    assert isinstance(as_verifier("tools"), ToolCallVerifier)
    assert isinstance(as_verifier(MathVerifier), MathVerifier)
    wrapped = as_verifier(lambda prompt, candidate: True)
    assert isinstance(wrapped, CallableVerifier) and isinstance(wrapped, Verifier)


@pytest.mark.parametrize("bad", ["mathematics", 42, None, ["math"]])
def test_as_verifier_rejects_anything_else(bad: object) -> None:
    with pytest.raises(ValueError, match=r"code, math, tools.*callable"):
        as_verifier(bad)  # type: ignore[arg-type]
