"""Two rankers from the same candidates: one prefers correct answers, the other correct AND concise ones.

    python examples/personalization.py   # embedded SmolLM2-135M-Instruct: about 10 min on 2 CPU cores
    python examples/personalization.py --model <hub id or folder> --show 5

A ranker learns whatever its labels reward, so one collection serves several preferences. This example collects
arithmetic candidates once, relabels them with `Dataset.map` ("concise": correct and no longer, in tokens, than the
median correct candidate of its prompt), and trains a "correct" and a "concise" ranker on the same features. It
prints, on the held-out candidates, how often each choice is correct and how long it is, then answers a few test
prompts with ONE `model.generate(..., ranker={"correct": ..., "concise": ...})` call (candidates and features are
computed once, each ranker picks its own) and shows both choices side by side.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _common import collect, example_parser, generate_ranked, positive_int, print_outputs, save_ranker, train, verdict
from datasets import Dataset

from hf_language_ranker.candidates import CORRECT_THRESHOLD, per_candidate_values
from hf_language_ranker.evaluation import FIRST_SAMPLE, RankerScorer, selection_accuracy
from hf_language_ranker.evaluation.baselines import choices_from_scores
from hf_language_ranker.evaluation.experiment import Preset
from hf_language_ranker.verifiers import as_verifier

PRESET = Preset(
    task="arithmetic", train_prompts=60, validation_prompts=20, test_prompts=30, eval_candidates=8, max_new_tokens=48
)
LABELS = {
    "correct": "math verifier: the final answer is correct",
    "concise": "correct and no longer (in tokens) than the median correct candidate of its prompt",
}


def concise_labels(labels: list[float], lengths: list[int]) -> dict[str, list[float]]:
    """Correct and no longer than the median correct candidate of the prompt (the shortest correct one stays 1)."""
    correct_lengths = [length for label, length in zip(labels, lengths) if label >= CORRECT_THRESHOLD]
    median = statistics.median(correct_lengths) if correct_lengths else 0
    return {
        "labels": [float(label >= CORRECT_THRESHOLD and length <= median) for label, length in zip(labels, lengths)]
    }


def relabel(dataset: Dataset) -> Dataset:
    return dataset.map(
        concise_labels, input_columns=["labels", "lengths"], features=dataset.features, keep_in_memory=True
    )


def one_line(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> None:
    parser = example_parser(__doc__, PRESET, output_dir="runs/examples/personalization")
    parser.add_argument("--show", type=positive_int, default=3, help="test prompts answered by both rankers")
    args = parser.parse_args()
    start = time.perf_counter()
    run = collect(args, PRESET)
    label_sets = {"correct": run.datasets, "concise": {split: relabel(data) for split, data in run.datasets.items()}}
    rankers, ranker_dirs = {}, {}
    for name, data in label_sets.items():
        print(f"\nTraining the {name!r} ranker ({LABELS[name]})")
        trainer = train(data["train"], data["validation"], run.output_dir / f"ranker-{name}", args)
        rankers[name] = trainer.ranker
        ranker_dirs[f"ranker {name}"] = save_ranker(trainer, labels=LABELS[name])

    test, n = run.datasets["test"], run.preset.eval_candidates
    choices = {FIRST_SAMPLE: np.zeros(len(test), dtype=np.int64)}
    choices.update(
        {name: choices_from_scores(RankerScorer.from_trained(r).score(test, n)) for name, r in rankers.items()}
    )
    lengths = per_candidate_values(test, "lengths", n)
    print(f"\nOn {len(test)} held-out prompts, choosing among {n} candidates each:")
    print("| choice | correct | correct and concise | mean length (tokens) |\n|---|---:|---:|---:|")
    for name, chosen in choices.items():
        correct = selection_accuracy(test, chosen)
        concise = selection_accuracy(label_sets["concise"]["test"], chosen)
        print(f"| {name} | {correct:.3f} | {concise:.3f} | {lengths[np.arange(len(test)), chosen].mean():.1f} |")

    examples = run.test_examples[: args.show]
    output, candidates = generate_ranked(run, [example["prompt"] for example in examples], rankers)
    verifier = as_verifier("math")
    for row, example in enumerate(examples):
        print(f"\n### {one_line(example['prompt'])}   (reference: {example['answer']})")
        picks = {name: int(best[row]) for name, best in output.ranker_best_indices.items()}
        for name, index in picks.items():
            answer = candidates[row][index]
            print(f"  {name:>8} -> candidate {index} [{verdict(verifier(example, answer))}]: {one_line(answer)}")
        print(
            "  (both rankers chose the same candidate)" if len(set(picks.values())) == 1 else "  (the choices differ)"
        )
    print(f"\nDone in {(time.perf_counter() - start) / 60:.1f} min.")
    print_outputs({**ranker_dirs, "candidates": run.output_dir / "candidates"})


if __name__ == "__main__":
    main()
