"""The flow the training examples share: collect candidates on task splits, train a ranker, compare, generate.

Not an example itself: `train_math_ranker.py`, `train_code_ranker.py`, `train_tool_ranker.py` and
`personalization.py` import it (Python puts a script's own folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_language_ranker import (
    LanguageRanker,
    RankedGenerateOutput,
    RankerTrainer,
    RankerTrainingArguments,
    load_model_and_tokenizer,
)
from hf_language_ranker.candidates import CORRECT_THRESHOLD
from hf_language_ranker.configuration import DEFAULT_LAYER_FRACTION, MODEL_DTYPES
from hf_language_ranker.evaluation import FIRST_SAMPLE, ORACLE, EvaluationResult, RankerScorer, evaluate
from hf_language_ranker.evaluation.experiment import Preset, collect_splits, task_splits
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import task_verifier
from hf_language_ranker.verifiers import as_verifier

RANKER = "Language Ranker"
#: Hub ids of the built-in tasks' source datasets, recorded in the rankers' model cards.
HUB_DATASETS = {
    "humaneval": "openai/openai_humaneval",
    "bfcl_simple": "gorilla-llm/Berkeley-Function-Calling-Leaderboard",
}


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the example's docstring as written and shows every option's default."""


def example_parser(description: str, preset: Preset, output_dir: str) -> argparse.ArgumentParser:
    """Command-line options shared by the examples; the defaults come from the example's ``preset``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--model", default=None, help="Hub id or folder of a causal LM; None = embedded SmolLM2")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="auto", help="auto: bfloat16 where native")
    parser.add_argument("--output-dir", default=output_dir, help="where candidates and rankers go (resumable)")
    parser.add_argument("--train-prompts", type=positive_int, default=preset.train_prompts, help="prompts to train on")
    parser.add_argument(
        "--validation-prompts", type=positive_int, default=preset.validation_prompts, help="validation prompts"
    )
    parser.add_argument("--test-prompts", type=positive_int, default=preset.test_prompts, help="held-out prompts")
    parser.add_argument("--num-candidates", type=positive_int, default=preset.eval_candidates, help="per prompt")
    parser.add_argument("--max-new-tokens", type=positive_int, default=preset.max_new_tokens, help="per candidate")
    parser.add_argument("--batch-size", type=positive_int, default=preset.batch_size, help="prompts per sampling call")
    parser.add_argument("--epochs", type=float, default=8.0, help="ranker training epochs")
    parser.add_argument("--seed", type=int, default=preset.seed, help="sampling, splits and training")
    return parser


@dataclass
class Collected:
    """A loaded model and the candidate datasets of the train, validation and test splits of a task."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    preset: Preset
    output_dir: Path
    datasets: dict[str, Dataset]
    test_examples: list[dict[str, Any]]


def collect(args: argparse.Namespace, preset: Preset) -> Collected:
    """Load the model and collect (or resume, or reload) candidates of every split at the paper's feature layer."""
    num_candidates = args.num_candidates
    preset = replace(
        preset,
        train_prompts=args.train_prompts,
        validation_prompts=args.validation_prompts,
        test_prompts=args.test_prompts,
        train_candidates=num_candidates,
        eval_candidates=num_candidates,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        layer_fractions=(DEFAULT_LAYER_FRACTION,),
        ns=tuple(sorted({n for n in (1, 2, 4, 8, 16, 32) if n < num_candidates} | {num_candidates})),
    )
    output_dir = Path(args.output_dir)
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    datasets = collect_splits(model, tokenizer, preset, output_dir / "candidates")
    return Collected(model, tokenizer, preset, output_dir, datasets, task_splits(preset)["test"])


def train(train_dataset: Dataset, validation: Dataset, output_dir: Path, args: argparse.Namespace) -> RankerTrainer:
    """Train a ranker with `RankerTrainer`, reporting validation accuracy after every epoch."""
    arguments = RankerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=8,  # small splits: more optimizer steps per epoch than the default 32 prompts
        eval_strategy="epoch",
        seed=args.seed,
        report_to="none",
    )
    trainer = RankerTrainer(args=arguments, train_dataset=train_dataset, eval_dataset=validation)
    trainer.train()
    trainer.ranker.eval()
    return trainer


def save_ranker(
    trainer: RankerTrainer,
    labels: str,
    datasets: Sequence[str] | None = None,
    evaluation: EvaluationResult | None = None,
) -> Path:
    """Save the trained ranker to the trainer's output folder with a card naming its labels (and test results)."""
    card = trainer.ranker.card_data  # the trainer filled in how it trained
    card.training["labels"] = labels
    if datasets:
        card.datasets = list(datasets)
    if evaluation is not None:
        card.evaluation = evaluation.to_model_card_evaluation()
    output_dir = Path(trainer.args.output_dir)
    trainer.ranker.save_pretrained(output_dir)
    return output_dir


def generate_ranked(
    run: Collected,
    prompts: Sequence[str],
    ranker: LanguageRanker | Mapping[str, LanguageRanker],
) -> tuple[RankedGenerateOutput, list[list[str]]]:
    """One ranked `generate` call on ``prompts`` (formatted as collection does); also every candidate's text."""
    tokenizer, preset = run.tokenizer, run.preset
    use_template = resolve_chat_template(tokenizer, None)
    inputs = encode_prompts(tokenizer, prompts, use_template).to(run.model.device)
    torch.manual_seed(preset.seed)
    output = run.model.generate(
        **inputs,
        ranker=ranker,
        num_candidates=preset.eval_candidates,
        max_new_tokens=preset.max_new_tokens,
        temperature=preset.temperature,
        top_p=preset.top_p,
        return_dict_in_generate=True,
    )
    prompt_length = inputs["input_ids"].shape[1]
    candidates = [
        tokenizer.batch_decode(rows[:, prompt_length:], skip_special_tokens=True) for rows in output.candidate_sequences
    ]
    return output, candidates


def print_outputs(outputs: Mapping[str, Path]) -> None:
    """Tell the user where the example's results went, one line each."""
    print("Results:", *(f"  {name}: {path}" for name, path in outputs.items()), sep="\n")


def verdict(label: float) -> str:
    return "correct" if label >= CORRECT_THRESHOLD else "wrong"


def run_task_example(description: str, preset: Preset, output_dir: str) -> None:
    """Collect candidates for ``preset.task``, train a ranker, compare it with first-sample accuracy on the test
    split, save it, and answer one test prompt with ``model.generate(..., ranker=...)``."""
    args = example_parser(description, preset, output_dir).parse_args()
    start = time.perf_counter()
    run = collect(args, preset)
    task = run.preset.task
    started = time.perf_counter()
    trainer = train(run.datasets["train"], run.datasets["validation"], run.output_dir / "ranker", args)
    ranker, train_seconds = trainer.ranker, time.perf_counter() - started

    n = run.preset.eval_candidates
    result = evaluate(
        run.datasets["test"],
        {RANKER: RankerScorer.from_trained(ranker, train_seconds)},
        ns=run.preset.ns,
        task=task,
        dataset_name=f"{task}, {len(run.datasets['test'])} held-out prompts",
    )
    accuracy = result.accuracy
    print(f"\n{result.to_markdown()}\n")
    print(
        f"Held-out accuracy with N={n}: first sample {accuracy[FIRST_SAMPLE][n]:.3f}, "
        f"{RANKER} {accuracy[RANKER][n]:.3f} (oracle: {accuracy[ORACLE][n]:.3f})"
    )
    hub_dataset = HUB_DATASETS.get(task)
    ranker_dir = save_ranker(
        trainer,
        labels=f"{task_verifier(task)} verifier on {task}",
        datasets=[hub_dataset] if hub_dataset else None,
        evaluation=result,
    )
    result.to_json(run.output_dir / "evaluation.json")

    example = run.test_examples[0]
    output, candidates = generate_ranked(run, [example["prompt"]], ranker)
    best = int(output.best_indices[0])
    answer = candidates[0][best]
    print(f"\nPrompt: {example['prompt']}")
    print(f"model.generate(..., ranker=ranker, num_candidates={n}) chose candidate {best}: ", end="")
    print(f"[{verdict(as_verifier(task_verifier(task))(example, answer))}]\n{answer.strip()}\n")
    print(f"Done in {(time.perf_counter() - start) / 60:.1f} min.")
    print_outputs(
        {
            "ranker": ranker_dir,
            "evaluation": run.output_dir / "evaluation.json",
            "candidates": run.output_dir / "candidates",
        }
    )
