"""Tests for BFCL-style tool-call parsing and matching."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from hf_language_ranker.verifiers import ToolCallVerifier, parse_tool_calls, tool_calls_match

# ---------------------------------------------------------------------------------------------
# parse_tool_calls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
            [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}],
        ),
        (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        ),
        (
            'Sure! I will call two tools:\n```json\n[{"name": "a", "arguments": {"x": 1}},'
            ' {"name": "b", "parameters": {"y": [1, 2]}}]\n```\nLet me know.',
            [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": [1, 2]}}],
        ),
        (
            'I need the weather. {"name": "get_weather", "arguments": {"city": "Oslo"}} is the call.',
            [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
        (
            '{"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\\"k\\": true}"}}]}',
            [{"name": "f", "arguments": {"k": True}}],
        ),
        (
            "[func_name(a=1, b='x'), other(c=[1, 2])]",
            [{"name": "func_name", "arguments": {"a": 1, "b": "x"}}, {"name": "other", "arguments": {"c": [1, 2]}}],
        ),
        ("func_name(a=1)", [{"name": "func_name", "arguments": {"a": 1}}]),
        ("math.factorial(n=5)", [{"name": "math.factorial", "arguments": {"n": 5}}]),
        (
            "f(a=(1, 2), b={'k': -3.5}, c=None, d=True)",
            [{"name": "f", "arguments": {"a": [1, 2], "b": {"k": -3.5}, "c": None, "d": True}}],
        ),
        ("get_time()", [{"name": "get_time", "arguments": {}}]),
        ("```python\n[get_time(tz='UTC')]\n```", [{"name": "get_time", "arguments": {"tz": "UTC"}}]),
        ("Calling now: [get_time(tz='UTC')]", [{"name": "get_time", "arguments": {"tz": "UTC"}}]),
        ("I will call get_time(tz='UTC') for you.", [{"name": "get_time", "arguments": {"tz": "UTC"}}]),
    ],
)
def test_parse_tool_calls(text: str, expected: list[dict]) -> None:
    assert parse_tool_calls(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I don't know which tool to use.",
        "hello",
        "f(1, 2)",  # positional arguments cannot be named
        "f(**kwargs)",
        "f(a=some_variable)",  # not a literal
        '{"name": "f", "arguments": [1, 2]}',
        '{"arguments": {"x": 1}}',
        "[42, 'f']",
        "{" * 5000,
        "[" * 100_000,
    ],
)
def test_parse_tool_calls_returns_empty_on_unparsable(text: str) -> None:
    assert parse_tool_calls(text) == []


def test_parse_tool_calls_never_evaluates_code() -> None:
    marker = os.path.join(tempfile.gettempdir(), f"hflr-tools-eval-{os.getpid()}")
    for text in (
        f"__import__('os').system('touch {marker}')",
        f"f(x=__import__('os').system('touch {marker}'))",
        f"[f(a=open({marker!r}, 'w'))]",
    ):
        assert parse_tool_calls(text) == []
    assert not os.path.exists(marker)


# ---------------------------------------------------------------------------------------------
# tool_calls_match
# ---------------------------------------------------------------------------------------------

AREA = [{"calc_area": {"base": [10], "height": [5, 5.5], "unit": ["units", "cm", ""]}}]


def call(name: str, **arguments: object) -> dict:
    return {"name": name, "arguments": arguments}


def test_match_required_optional_and_numbers() -> None:
    assert tool_calls_match([call("calc_area", base=10, height=5)], AREA)
    assert tool_calls_match([call("calc_area", base=10.0, height=5.5, unit="cm")], AREA)
    assert not tool_calls_match([call("calc_area", base=10)], AREA)  # required height missing
    assert not tool_calls_match([call("calc_area", base=11, height=5)], AREA)  # value not allowed
    assert not tool_calls_match([call("calc_area", base=10, height=5, unit="inch")], AREA)
    assert not tool_calls_match([call("calc_area", base=10, height=5, color="red")], AREA)  # unknown arg
    assert not tool_calls_match([call("calc_volume", base=10, height=5)], AREA)


def test_match_string_normalisation_like_bfcl() -> None:
    expected = [{"get_weather": {"city": ["New York, NY"], "unit": ["celsius"]}}]
    assert tool_calls_match([call("get_weather", city="new york ny", unit="Celsius")], expected)
    assert tool_calls_match([call("get_weather", city="New-York,NY.", unit="CELSIUS")], expected)
    assert not tool_calls_match([call("get_weather", city="Newark", unit="celsius")], expected)


def test_match_types_are_not_confused() -> None:
    expected = [{"f": {"flag": [True], "n": [1], "s": ["1"]}}]
    assert tool_calls_match([call("f", flag=True, n=1, s="1")], expected)
    assert not tool_calls_match([call("f", flag=1, n=1, s="1")], expected)  # bool is not an int
    assert not tool_calls_match([call("f", flag=True, n=True, s="1")], expected)
    assert not tool_calls_match([call("f", flag=True, n=1, s=1)], expected)  # str is not a number


def test_match_lists_and_nested_dicts() -> None:
    expected = [
        {
            "book": {
                "guests": [["Alice", "Bob"], ["alice", "bob", "carol"]],
                "options": [{"room": ["suite", "double"], "breakfast": [True, ""]}],
            }
        }
    ]
    assert tool_calls_match([call("book", guests=["ALICE", "bob"], options={"room": "Suite"})], expected)
    assert tool_calls_match(
        [call("book", guests=["alice", "bob", "carol"], options={"room": "double", "breakfast": True})], expected
    )
    assert not tool_calls_match([call("book", guests=["Bob", "Alice"], options={"room": "suite"})], expected)
    assert not tool_calls_match([call("book", guests=["Alice", "Bob"], options={"breakfast": True})], expected)
    assert not tool_calls_match([call("book", guests=["Alice", "Bob"], options={"room": "suite", "x": 1})], expected)


def test_match_parallel_calls_ignore_order_and_use_each_expected_call_once() -> None:
    expected = [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Oslo"]}}, {"get_time": {}}]
    calls = [call("get_time"), call("get_weather", city="Oslo"), call("get_weather", city="Paris")]
    assert tool_calls_match(calls, expected)
    duplicated = [call("get_time"), call("get_weather", city="Paris"), call("get_weather", city="Paris")]
    assert not tool_calls_match(duplicated, expected)
    assert not tool_calls_match(calls[:2], expected)  # a missing call
    assert not tool_calls_match([*calls, call("get_time")], expected)  # an extra call
    assert not tool_calls_match([], expected)


def test_match_needs_augmenting_assignment() -> None:
    # The first call fits both expected calls; greedy matching it to the first would fail.
    expected = [{"f": {"x": [1, 2]}}, {"f": {"x": [1]}}]
    assert tool_calls_match([call("f", x=1), call("f", x=2)], expected)


def test_match_dotted_names() -> None:
    expected = [{"math.factorial": {"n": [5]}}]
    assert tool_calls_match(parse_tool_calls("math.factorial(n=5)"), expected)
    assert tool_calls_match([call("math_factorial", n=5)], expected)  # BFCL's renamed form
    assert not tool_calls_match([call("math.gamma", n=5)], expected)


@pytest.mark.parametrize("junk", [None, "x", [None], [{"name": 3}], [{"name": "f", "arguments": "x"}]])
def test_match_never_raises_on_junk(junk: object) -> None:
    assert tool_calls_match(junk, [{"f": {}}]) is False  # type: ignore[arg-type]
    assert tool_calls_match([call("f")], junk) is False  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# ToolCallVerifier
# ---------------------------------------------------------------------------------------------


def test_tool_call_verifier_scores_and_parses() -> None:
    verifier = ToolCallVerifier()
    example = {
        "question": "Weather in Paris and Oslo?",
        "answer": [{"w": {"city": ["Paris"]}}, {"w": {"city": ["Oslo"]}}],
    }
    assert verifier.name == "tools"
    assert verifier(example, "[w(city='Oslo'), w(city='Paris')]") == 1.0
    assert verifier(example, "[w(city='Oslo')]") == 0.0
    assert verifier(example, "I cannot help with that.") == 0.0
    assert verifier({"answer": json.dumps(example["answer"])}, "[w(city='Paris'), w(city='Oslo')]") == 1.0


def test_tool_call_verifier_parse_is_order_independent() -> None:
    parse = ToolCallVerifier().parse
    a = parse("[w(city='Oslo', days=2), t(tz='UTC')]")
    b = parse('[{"name": "t", "arguments": {"tz": "UTC"}}, {"name": "w", "arguments": {"days": 2, "city": "Oslo"}}]')
    assert a == b and a is not None
    assert json.loads(a) == [
        {"name": "t", "arguments": {"tz": "UTC"}},
        {"name": "w", "arguments": {"city": "Oslo", "days": 2}},
    ]
    assert parse("[w(city='Bergen')]") != a
    assert parse("no calls here") is None


def test_tool_call_verifier_missing_or_bad_answer_names_the_fix() -> None:
    with pytest.raises(KeyError, match="answer_key"):
        ToolCallVerifier()({"question": "q"}, "f()")
    with pytest.raises(ValueError, match="not JSON"):
        ToolCallVerifier()({"answer": "not json"}, "f()")
