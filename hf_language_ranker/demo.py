"""``hf-language-ranker demo``: what a Language Ranker is worth, in a few minutes on a CPU.

1. The ranker released for the embedded SmolLM2-135M-Instruct on the committed test collections of five tasks it
   was trained on: its pick against majority vote of the same 16 candidates and the oracle (no LLM, seconds).
2. Your own task, in small: a recipe chosen by cross-validation on a committed collection's train + validation
   splits (a reduced grid), then scored once on its test split (no LLM).
3. Ranked `generate` live on a few fresh prompts: each prompt's distinct answers with their votes and the ranker's
   weight, majority vote's pick and the ranker's, and which is right.

Parts 1 and 2 read the committed collections of a source checkout (``benchmarks/data/mixture``); without them they
say so and part 3 still runs. ``demo --full`` runs the live pipeline instead (collect, train, evaluate on fresh
samples; about half an hour on 2 CPU cores).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import torch
from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

from .candidates import load_collection
from .embedded import embedded_default_ranker, load_model_and_tokenizer, resolve_dtype
from .evaluation.accuracy import evaluate
from .evaluation.baselines import MAJORITY_VOTE, ORACLE
from .evaluation.cross_validation import DEFAULT_VARIANT, RANKER_VARIANTS, select_ranker
from .evaluation.scorers import RankerScorer
from .evaluation.shipped import compare_on_collections, compare_with_majority_vote, fresh_prompts
from .modeling import LanguageRanker

#: the committed candidate collections (a source checkout; `benchmarks/data/mixture/README.md`)
COLLECTIONS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "mixture"
#: the released ranker's training tasks whose test collections are committed (part 1)
DEMO_TASKS = ("addition", "arithmetic", "lcm", "linear_equations", "number_sequence")
#: the collection part 2 treats as "your task", and its reduced grid: the default recipe and two lighter ones
OWN_TASK = "addition"
OWN_TASK_VARIANTS = (DEFAULT_VARIANT, "Language Ranker (listwise + log-prob)", "Language Ranker (pointwise + log-prob)")
OWN_TASK_FOLDS = 3
#: one fresh prompt of each of these tasks per round of part 3 (the released ranker was trained on all three)
LIVE_TASKS = ("addition", "number_sequence", "arithmetic")
SERVE_N = 16


def run_quick_demo(output_dir: str | Path, *, collections: str | Path = COLLECTIONS, live_prompts: int = 3) -> None:
    """Print the three parts, writing their JSON results to ``output_dir``, and the elapsed time."""
    with _without_progress_bars():
        _run_quick_demo(Path(output_dir), Path(collections), live_prompts)


def _run_quick_demo(output_dir: Path, collections: Path, live_prompts: int) -> None:
    start = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    folder = embedded_default_ranker()
    ranker, name = LanguageRanker.from_pretrained(folder), folder.name
    if (collections / OWN_TASK / "test").is_dir():
        _released_ranker_on_collections(ranker, name, collections, output_dir)
        _own_task(collections, output_dir)
    else:
        print(
            f"Parts 1 and 2 skipped: they read the committed collections of a source checkout, not found at "
            f"{collections} (pass --collections).\n"
        )
    if live_prompts:
        _live(ranker, name, live_prompts, output_dir)
    print(f"Demo finished in {time.perf_counter() - start:.0f} s; results in {output_dir}/.")


def _released_ranker_on_collections(ranker: LanguageRanker, name: str, collections: Path, output_dir: Path) -> None:
    print("1. The released ranker on committed test collections (no LLM runs)\n", flush=True)
    tests = {task: load_collection(collections / task / "test") for task in DEMO_TASKS}
    comparison = compare_on_collections(ranker, tests, n=SERVE_N, name=name)
    comparison.to_json(output_dir / "released_ranker.json")
    print(comparison.summary() + "\n", flush=True)


def _own_task(collections: Path, output_dir: Path) -> None:
    folder = collections / OWN_TASK
    print(
        f"2. Your own task, in small: {OWN_TASK}'s committed train + validation collections choose a recipe by "
        f"{OWN_TASK_FOLDS}-fold cross-validation over {len(OWN_TASK_VARIANTS)} variants x 2 pick rules, then its "
        "test split scores the choice once\n",
        flush=True,
    )
    train, validation, test = (load_collection(folder / split) for split in ("train", "validation", "test"))
    variants = {variant: RANKER_VARIANTS[variant] for variant in OWN_TASK_VARIANTS}
    choice = select_ranker(train, validation, variants=variants, folds=OWN_TASK_FOLDS, serve_n=SERVE_N)
    chosen = choice.ranker
    chosen.save_pretrained(output_dir / "own_task_ranker")
    scorers = {"chosen ranker": RankerScorer.from_trained(chosen)}
    result = evaluate(test, scorers, ns=[SERVE_N], selections={"chosen ranker": chosen.config.selection})
    accuracy = {method: result.accuracy[method][SERVE_N] for method in ("chosen ranker", MAJORITY_VOTE, ORACLE)}
    print(
        f"  chosen: {choice.chosen.row}, layer {choice.chosen.feature_layer} "
        f"(cross-validated accuracy {choice.accuracy[choice.chosen]:.3f} on {choice.num_prompts} prompts)\n"
        f"  on {len(test)} test prompts, N={SERVE_N}: chosen ranker {accuracy['chosen ranker']:.3f}, majority vote "
        f"{accuracy[MAJORITY_VOTE]:.3f}, oracle {accuracy[ORACLE]:.3f}\n"
        f"  chosen − majority vote: {result.paired('chosen ranker', MAJORITY_VOTE, SERVE_N)}\n"
        f"  The full protocol (every variant, 5 folds, every baseline, a card): hf-language-ranker evaluate "
        f"--train-dataset {folder}/train --validation-dataset {folder}/validation --test-dataset {folder}/test "
        f"--output-dir runs/{OWN_TASK}\n",
        flush=True,
    )
    result.to_json(output_dir / "own_task.json")


def _live(ranker: LanguageRanker, name: str, count: int, output_dir: Path) -> None:
    trained = ranker.config.model_dtype or "float32"
    native = trained == "float32" or resolve_dtype("auto") == getattr(torch, trained)
    dtype = trained if native else "float32"
    print(f"3. Ranked generate live on {count} fresh prompts (the embedded SmolLM2-135M-Instruct in {dtype})")
    if not native:
        print(
            f"   The ranker was trained on {trained} features, which this CPU does not compute natively, so the model "
            "runs in float32 (benchmarks/results/dtype: 92-96% of picks unchanged).",
            flush=True,
        )
    model, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    rounds = -(-count // len(LIVE_TASKS))
    drawn = {task: fresh_prompts(task, rounds) for task in LIVE_TASKS}
    examples = [drawn[task][round_] for round_ in range(rounds) for task in LIVE_TASKS][:count]
    with _drift_warning_said_above():
        live = compare_with_majority_vote(model, tokenizer, ranker, examples, task=", ".join(LIVE_TASKS), name=name)
    live.to_json(output_dir / "live.json")
    print(live.summary() + "\n", flush=True)


@contextlib.contextmanager
def _without_progress_bars() -> Iterator[None]:
    """The demo prints one line per step instead of transformers' and datasets' bars."""
    bars_were_on = is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars_were_on[0]:
            enable_progress_bar()
        if bars_were_on[1]:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _drift_warning_said_above() -> Iterator[None]:
    """Silence the dtype-drift warning while the demo serves in float32: it said so in a plain sentence."""
    library_logger = logging.getLogger("hf_language_ranker")
    level = library_logger.level
    library_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library_logger.setLevel(level)
