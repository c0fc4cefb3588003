"""One ranker for SmolLM2 across tasks: mixture training, leave-one-task-out, held-out tasks.

    python benchmarks/mixture.py [--data benchmarks/data/mixture] [--ship <folder>]

(The shipped mixture ranker came from here first; it now comes from `benchmarks/unseen_tasks.py`, which chooses on
leave-one-task-out validation.)

Reads the collections written by `benchmarks/mixture_collect.py` (its ``plan.json`` names the training and the
held-out tasks; every split is 16 candidates per prompt except train, 8) and:

1. trains every variant (head x inputs x layer) on the balanced mixture of the training tasks' train splits and
   scores it on their mixed validation split at N=16 under both pick rules. The best row is chosen, except
   that the default recipe (the shipped arithmetic ranker's: listwise + log-prob + vote share + centrality,
   weighted vote, layer 18) wins any near-tie: a row must beat it by more than one paired standard error;
2. leave-one-task-out: for each training task, the chosen settings trained on the other training tasks only and
   tested on that task, beside the in-domain specialist (the same settings trained on that task alone);
3. measures, on validation data only, whether a flatter weighted vote (scores divided by a temperature) would be
   safer off the training tasks: on each training task's validation split with its leave-one-task-out ranker, and
   on the tasks collected beside the plan (neither trained on nor held out: ``--jobs`` of mixture_collect);
4. scores the mixture ranker on every training task's test split and on the held-out tasks (never trained on, never
   used for a choice), with the shipped arithmetic specialist, majority vote, mean log-prob and the oracle beside it:
   paired bootstrap intervals and prompts won / lost per task, and pooled over the held-out tasks.

Writes ``benchmarks/results/mixture/results.md`` and ``results.json``; ``--ship`` saves the mixture ranker (config,
weights, card) to the given folder. Nothing here samples: it runs in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from _common import ship, write_results

from hf_language_ranker import LanguageRanker, load_collection
from hf_language_ranker.candidates import feature_layers
from hf_language_ranker.evaluation import (
    FIRST_SAMPLE,
    MAJORITY_VOTE,
    MEAN_LOG_PROB,
    ORACLE,
    SELECTION_RULES,
    RankerScorer,
    chosen_correct,
    evaluate,
    paired_stderr,
)
from hf_language_ranker.evaluation.baselines import majority_vote_choices, weighted_vote_from_scores
from hf_language_ranker.mixture import check_disjoint_prompts, mix_tasks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mixture"
SHIPPED_SPECIALIST = ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"
N = 16
NS = (1, 2, 4, 8, 16)
LAYERS = (12, 18)
VARIANTS: dict[str, dict[str, Any]] = {
    "listwise + log-prob + vote share + centrality": {
        "head": "listwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
    "listwise + log-prob + vote share": {"head": "listwise", "use_mean_log_prob": True, "use_vote_share": True},
    "listwise + log-prob": {"head": "listwise", "use_mean_log_prob": True},
    "listwise (hidden states only)": {"head": "listwise"},
    "pointwise + log-prob + vote share + centrality": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
    "pointwise + log-prob + vote share": {"head": "pointwise", "use_mean_log_prob": True, "use_vote_share": True},
}
VOTE_TEMPERATURES = (1, 2, 4, 8, 16)
DEFAULT = ("listwise + log-prob + vote share + centrality", 18, "weighted_vote")
TRAINING = {"seed": 0, "report_to": "none", "disable_tqdm": True}
MIXTURE, SPECIALIST, LOTO, SHIPPED = (
    "mixture ranker",
    "in-domain specialist",
    "leave-one-task-out ranker",
    "arithmetic specialist (shipped)",
)


def row_name(variant: str, layer: int, rule: str) -> str:
    return f"{variant}, layer {layer}, {rule.replace('_', ' ')}"


def fit(variant: str, layer: int, train: datasets.Dataset, validation: datasets.Dataset) -> RankerScorer:
    return RankerScorer(feature_layer=layer, **VARIANTS[variant], **TRAINING).fit(train, validation)


def outcomes(scorer: RankerScorer, dataset: datasets.Dataset, rule: str) -> np.ndarray:
    """Per prompt: whether the candidate chosen among all N by ``rule`` is correct."""
    return chosen_correct(dataset, SELECTION_RULES[rule](dataset, scorer.score(dataset, N)))


def tempered_vote_accuracy(scorer: RankerScorer, dataset: datasets.Dataset) -> dict[str, float]:
    """Accuracy of the weighted vote with the ranker's scores divided by each of ``VOTE_TEMPERATURES`` (a flatter
    vote moves toward majority vote, the "do no harm" direction), beside majority vote itself."""
    scores = np.stack(scorer.score(dataset, N))
    accuracy = {
        f"T={temperature}": float(
            chosen_correct(dataset, weighted_vote_from_scores(dataset, scores / temperature)).mean()
        )
        for temperature in VOTE_TEMPERATURES
    }
    accuracy[MAJORITY_VOTE] = float(chosen_correct(dataset, majority_vote_choices(dataset, N)).mean())
    return accuracy


def tempered_vote_accuracy_pooled(pairs: dict[str, tuple[RankerScorer, datasets.Dataset]]) -> dict[str, float]:
    """`tempered_vote_accuracy` over several (scorer, dataset) pairs, weighted by prompts."""
    total = sum(len(dataset) for _, dataset in pairs.values())
    pooled: dict[str, float] = {}
    for scorer, dataset in pairs.values():
        for key, value in tempered_vote_accuracy(scorer, dataset).items():
            pooled[key] = pooled.get(key, 0.0) + value * len(dataset) / total
    return pooled


def choose(validation_outcomes: dict[tuple[str, int, str], np.ndarray]) -> tuple[tuple[str, int, str], dict]:
    """The best validation row, unless it beats the default recipe by no more than one paired standard error."""
    best = max(validation_outcomes, key=lambda row: validation_outcomes[row].mean())
    difference = validation_outcomes[best].astype(float) - validation_outcomes[DEFAULT].astype(float)
    standard_error = paired_stderr(validation_outcomes[best], validation_outcomes[DEFAULT])
    chosen = DEFAULT if difference.mean() <= standard_error else best
    rule = {"best": row_name(*best), "best_minus_default": float(difference.mean()), "standard_error": standard_error}
    return chosen, rule


def paired(result: Any, method: str, baseline: str) -> str:
    return str(result.paired(method, baseline, N))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "data" / "mixture"))
    parser.add_argument("--ship", default=None, help="folder to save the mixture ranker and its card to")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the rankers are tiny; 1 is enough)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = Path(args.data)
    plan = json.loads((data / "plan.json").read_text())
    training_tasks, held_out = plan["training"], plan["held_out"]

    def load(task: str, split: str) -> datasets.Dataset:
        return load_collection(data / task / split)

    splits = {task: {split: load(task, split) for split in ("train", "validation", "test")} for task in training_tasks}
    tests = {task: splits[task]["test"] for task in training_tasks} | {task: load(task, "test") for task in held_out}
    for task in training_tasks:
        check_disjoint_prompts(splits[task])
    check_disjoint_prompts({"training tasks": mix_tasks({t: s["train"] for t, s in splits.items()}), **tests})

    def mixed(split: str, tasks: list[str]) -> datasets.Dataset:
        return mix_tasks({task: splits[task][split] for task in tasks})

    train, validation = mixed("train", training_tasks), mixed("validation", training_tasks)

    # 1. every variant on the mixed validation split
    fitted: dict[tuple[str, int], RankerScorer] = {}
    validation_outcomes: dict[tuple[str, int, str], np.ndarray] = {}
    for variant in VARIANTS:
        for layer in LAYERS:
            fitted[variant, layer] = fit(variant, layer, train, validation)
            for rule in SELECTION_RULES:
                validation_outcomes[variant, layer, rule] = outcomes(fitted[variant, layer], validation, rule)
            print(
                f"validation: {variant}, layer {layer}: "
                + ", ".join(
                    f"{rule} {validation_outcomes[variant, layer, rule].mean():.3f}" for rule in SELECTION_RULES
                ),
                flush=True,
            )
    chosen, tie_rule = choose(validation_outcomes)
    variant, layer, rule = chosen
    mixture = fitted[variant, layer]
    mixture.ranker.config.selection = rule
    task_column = np.asarray(validation["task"])
    chosen_by_task = {task: float(validation_outcomes[chosen][task_column == task].mean()) for task in training_tasks}

    # 2. specialists and leave-one-task-out rankers with the chosen settings
    shipped = LanguageRanker.from_pretrained(SHIPPED_SPECIALIST)
    specialists, loto = {}, {}
    for task in training_tasks:
        specialists[task] = fit(variant, layer, splits[task]["train"], splits[task]["validation"])
        others = [other for other in training_tasks if other != task]
        loto[task] = fit(variant, layer, mixed("train", others), mixed("validation", others))
        for scorer in (specialists[task], loto[task]):
            scorer.ranker.config.selection = rule

    # robustness off the training tasks, on validation data only: the vote temperature on (a) each training task's
    # validation split scored by its leave-one-task-out ranker, (b) tasks that are neither trained on nor held out
    off_task = sorted(
        folder.name for folder in data.iterdir() if folder.is_dir() and folder.name not in training_tasks + held_out
    )
    robustness = {
        "leave-one-task-out validation": tempered_vote_accuracy_pooled(
            {task: (loto[task], splits[task]["validation"]) for task in training_tasks}
        ),
    }
    if off_task:
        off_task_data = {  # every split collected for them (the committed data keeps their validation split only)
            task: datasets.concatenate_datasets([load(task, folder.name) for folder in sorted((data / task).iterdir())])
            for task in off_task
        }
        robustness["unseen-task validation (" + ", ".join(off_task) + ")"] = tempered_vote_accuracy_pooled(
            {task: (mixture, dataset) for task, dataset in off_task_data.items()}
        )

    # 3. every test split, and the held-out tasks pooled
    held_out_pool = mix_tasks({task: tests[task] for task in held_out})
    report: dict[str, Any] = {"tests": {}}
    for task, test in [*tests.items(), ("held-out tasks, pooled", held_out_pool)]:
        scorers, selections = {MIXTURE: mixture}, {MIXTURE: rule}
        if shipped.config.feature_layer in feature_layers(test):  # the committed data keeps the mixture's layer only
            scorers[SHIPPED], selections[SHIPPED] = RankerScorer.from_trained(shipped), shipped.config.selection
        if task in training_tasks:
            scorers |= {SPECIALIST: specialists[task], LOTO: loto[task]}
            selections |= {SPECIALIST: rule, LOTO: rule}
        result = evaluate(test, scorers, ns=NS, task=task, selections=selections)
        comparisons = {
            f"{MIXTURE} - {MAJORITY_VOTE}": paired(result, MIXTURE, MAJORITY_VOTE),
            f"{MIXTURE} - {MEAN_LOG_PROB}": paired(result, MIXTURE, MEAN_LOG_PROB),
        }
        if SHIPPED in scorers:
            comparisons[f"{SHIPPED} - {MAJORITY_VOTE}"] = paired(result, SHIPPED, MAJORITY_VOTE)
        if task in training_tasks:
            comparisons[f"{MIXTURE} - {SPECIALIST}"] = paired(result, MIXTURE, SPECIALIST)
            comparisons[f"{LOTO} - {MAJORITY_VOTE}"] = paired(result, LOTO, MAJORITY_VOTE)
        report["tests"][task] = {
            "kind": "training task" if task in training_tasks else "held-out",
            "num_prompts": result.num_prompts,
            "accuracy": {method: by_n for method, by_n in result.accuracy.items()},
            "paired_at_16": comparisons,
            "per_prompt_at_16": {method: result.per_prompt[method][N] for method in result.per_prompt},
        }
    report.update(
        command=" ".join(["python benchmarks/mixture.py", *sys.argv[1:]]),
        training_tasks=training_tasks,
        held_out_tasks=held_out,
        chosen={"variant": variant, "layer": layer, "selection": rule, **tie_rule},
        chosen_validation_by_task=chosen_by_task,
        validation={row_name(*row): float(values.mean()) for row, values in validation_outcomes.items()},
        validation_prompts=len(validation),
        vote_temperature_on_validation=robustness,
        train_prompts=len(train),
        collection=plan["settings"],
        wall_seconds=round(time.perf_counter() - started),
    )
    write_results(RESULTS, "results", to_markdown(report), report)
    if args.ship:
        ship(mixture.ranker, Path(args.ship), ranker_card(report), "mixture ranker")


def to_markdown(report: dict[str, Any]) -> str:
    """The held-out table, the per-training-task table (leave-one-task-out, specialist), and the validation grid."""

    def accuracy(entry: dict[str, Any], method: str) -> str:
        value = entry["accuracy"].get(method, {}).get(str(N), entry["accuracy"].get(method, {}).get(N))
        return "—" if value is None else f"{value:.3f}"

    tests = report["tests"]
    chosen = report["chosen"]
    lines = [
        f"# One ranker across tasks: SmolLM2-135M-Instruct, N={N}",
        "",
        f"Training tasks: {', '.join(report['training_tasks'])} ({report['train_prompts']} train prompts x 8 "
        "candidates, balanced). Held-out tasks, never trained on and never used for a choice: "
        f"{', '.join(report['held_out_tasks'])}.",
        f"Chosen on the mixed validation split ({report['validation_prompts']} prompts x 16): {chosen['variant']}, "
        f"layer {chosen['layer']}, {chosen['selection']} (best row: {chosen['best']}, "
        f"{chosen['best_minus_default']:+.3f} over the default recipe; one paired standard error "
        f"{chosen['standard_error']:.3f}).",
        "",
        "## Held-out tasks",
        "",
        "| test split (prompts) | first sample | majority vote | mean log-prob | mixture ranker | arithmetic "
        "specialist | mixture − majority | specialist − majority | oracle |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for task, entry in tests.items():
        if entry["kind"] == "held-out" or task.startswith("held-out"):
            pairs = entry["paired_at_16"]
            lines.append(
                f"| {task} ({entry['num_prompts']}) | {accuracy(entry, FIRST_SAMPLE)} | "
                f"{accuracy(entry, MAJORITY_VOTE)} | {accuracy(entry, MEAN_LOG_PROB)} | {accuracy(entry, MIXTURE)} | "
                f"{accuracy(entry, SHIPPED)} | {pairs[f'{MIXTURE} - {MAJORITY_VOTE}']} | "
                f"{pairs.get(f'{SHIPPED} - {MAJORITY_VOTE}', '—')} | {accuracy(entry, ORACLE)} |"
            )
    lines += [
        "",
        "## Training tasks (test splits)",
        "",
        "| test split (prompts) | majority vote | mean log-prob | mixture ranker | in-domain specialist | "
        "leave-one-task-out | mixture − majority | mixture − specialist | left-out − majority | oracle |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for task, entry in tests.items():
        if entry["kind"] == "training task":
            pairs = entry["paired_at_16"]
            lines.append(
                f"| {task} ({entry['num_prompts']}) | {accuracy(entry, MAJORITY_VOTE)} | "
                f"{accuracy(entry, MEAN_LOG_PROB)} | {accuracy(entry, MIXTURE)} | {accuracy(entry, SPECIALIST)} | "
                f"{accuracy(entry, LOTO)} | {pairs[f'{MIXTURE} - {MAJORITY_VOTE}']} | "
                f"{pairs[f'{MIXTURE} - {SPECIALIST}']} | {pairs[f'{LOTO} - {MAJORITY_VOTE}']} | "
                f"{accuracy(entry, ORACLE)} |"
            )
    lines += [
        "",
        "Paired differences: mean over prompts, bootstrap 95% interval, prompts won / lost. The leave-one-task-out "
        "ranker has the chosen settings, trained on the other training tasks only.",
        "",
        "## Off the training tasks, on validation: a flatter vote?",
        "",
        "Weighted vote with the scores divided by T (T grows: toward majority vote), pooled accuracy at N=16:",
        "",
        "| validation data | " + " | ".join(next(iter(report["vote_temperature_on_validation"].values()))) + " |",
        "|---|" + "---:|" * len(next(iter(report["vote_temperature_on_validation"].values()))),
        *[
            f"| {name} | " + " | ".join(f"{value:.3f}" for value in row.values()) + " |"
            for name, row in report["vote_temperature_on_validation"].items()
        ],
        "",
        "## Validation grid (mixed validation split, N=16; every row reported)",
        "",
        "| variant, layer, selection | accuracy |",
        "|---|---:|",
        *[f"| {row} | {value:.3f} |" for row, value in report["validation"].items()],
        "",
        f"`{report['command']}` ({report['wall_seconds']} s)",
        "",
    ]
    return "\n".join(lines)


def ranker_card(report: dict[str, Any]) -> dict[str, Any]:
    """The mixture ranker's card: training tasks, held-out table, how to reproduce it."""
    pooled = report["tests"]["held-out tasks, pooled"]
    return {
        "training": {
            "training tasks (reasoning-gym, built-in)": ", ".join(report["training_tasks"]),
            "held-out tasks (never trained on)": ", ".join(report["held_out_tasks"]),
            "data": f"{report['train_prompts']} train prompts x 8 candidates, balanced over tasks; sampled from "
            "SmolLM2-135M-Instruct in bfloat16 at temperature 0.8, 64 new tokens",
            "chosen on the mixed validation split": f"{report['chosen']['variant']}, layer "
            f"{report['chosen']['layer']}, {report['chosen']['selection']}",
            "held-out tasks at N=16 (pooled)": f"mixture ranker − majority vote "
            f"{pooled['paired_at_16'][f'{MIXTURE} - {MAJORITY_VOTE}']}",
            "reproduce": "`python benchmarks/mixture_collect.py prepare && python benchmarks/mixture_collect.py "
            "run --output-dir benchmarks/data/mixture && python benchmarks/mixture.py --ship "
            "model_cards/smollm2-135m-instruct-mixture` (tables: benchmarks/results/mixture/results.md)",
        },
        "evaluation": {
            "task": "held-out tasks, pooled: " + ", ".join(report["held_out_tasks"]),
            "dataset": f"{pooled['num_prompts']} test prompts of tasks the ranker never saw",
            "accuracy": pooled["accuracy"],
        },
    }


if __name__ == "__main__":
    main()
