"""Do no harm on tasks a ranker never saw: choose a cross-task recipe on leave-one-task-out validation, test once.

    python benchmarks/unseen_tasks.py [--data benchmarks/data/mixture] [--ship <folder>]

`benchmarks/mixture.py` chose the mixture ranker on a validation split of its own training tasks; on the held-out
tasks it then fell below majority vote. What predicts a task the ranker never saw is a task it never saw, so here
every choice is made on **leave-one-task-out validation** over the *pool*: the five training tasks of ``plan.json``
plus every other task of ``--data`` that is not held out (the unseen-task validation tasks of
`benchmarks/mixture_collect.py`). The protocol, fixed before any number was seen:

1. For each pool task t and each recipe: train the recipe without t (early stopping on the other training tasks'
   validation splits) and score t's validation split at N=16. A training task trains on its train split (8
   candidates); an unseen-task validation task, which has only a validation split, trains on its first 8 candidates.
2. Each recipe's scores are turned into choices by each rule: the weighted vote (T=1, or scores divided by T=2 or 4),
   the best-scored candidate, and LiLaVe's conditional majority voting (majority vote when the top answer holds at
   least a share tau of the N answers, else the weighted vote).
3. A row (recipe, rule) is eligible when on no pool task it is significantly below majority vote (paired 95% upper
   bound >= 0). The eligible row with the best pooled accuracy is chosen; it must beat the incumbent row (the
   shipped ranker's recipe and rule, ``--incumbent``) by more than one paired standard error, else that row stays.
4. The chosen recipe is trained on its whole pool and tested once on the held-out tasks (never trained on, never
   used for a choice) and on the training tasks' test splits, beside majority vote, mean log-prob, the oracle and the
   mixture ranker shipped before.

Writes ``benchmarks/results/mixture/unseen_tasks.md`` and ``.json`` (or ``--output-name``); ``--ship`` saves the
chosen ranker (only when its rule is one `generate` can serve). Nothing here samples: it runs in minutes on a CPU.
Earlier rounds had smaller pools, fewer recipes and rules; ``--leave-out``, ``--recipes``, ``--rules`` and
``--incumbent`` rebuild them (the fourth round, with every recipe and rule, is the default)::

    # round 1: eight numeric tasks
    python benchmarks/unseen_tasks.py --leave-out rectangle_count animal_legs largest_island pick_number \
        --recipes "training tasks" pool "pool, centred features" "pool, centred features, no prompt feature" \
        --rules "weighted vote" "weighted vote, T=2" "majority if top share >= 0.25, else weighted vote" \
        "majority if top share >= 0.375, else weighted vote" "majority if top share >= 0.5, else weighted vote" \
        --incumbent "training tasks | weighted vote" --output-name unseen_tasks_round1
    # round 2: with rectangle_count
    python benchmarks/unseen_tasks.py --leave-out animal_legs largest_island pick_number \
        --recipes "training tasks" pool "pool, centred features" "pool, centred features, no prompt feature" \
        --rules <the five rules of round 1> --incumbent "training tasks | weighted vote" \
        --output-name unseen_tasks_round2
    # round 3: with largest_island and pick_number, and the pointwise head
    python benchmarks/unseen_tasks.py --recipes "training tasks" pool "pool, centred features" \
        "pool, centred features, no prompt feature" "pool, pointwise head" --rules <the five rules of round 1> \
        --output-name unseen_tasks_round3

The test table's "shipped before" column reads the mixture ranker shipped when the command runs: rebuilt today,
rounds 1 and 2 compare with the ranker round 2 chose, while their committed tables compare with the one shipped then.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from _common import ship, write_results

from hf_language_ranker import LanguageRanker, load_collection
from hf_language_ranker.agreement import vote_shares
from hf_language_ranker.candidates import dataset_answer_ids, first_candidates
from hf_language_ranker.evaluation import SELECTION_RULES, RankerScorer, chosen_correct, paired_bootstrap, paired_stderr
from hf_language_ranker.evaluation.baselines import (
    majority_vote_choices,
    mean_log_prob_choices,
    oracle_choices,
    weighted_vote_from_scores,
)
from hf_language_ranker.mixture import check_disjoint_prompts, mix_tasks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mixture"
SHIPPED_MIXTURE = ROOT / "model_cards" / "smollm2-135m-instruct-mixture"
N = 16
TRAIN_CANDIDATES = 8
LAYER = 12
BASE = {"head": "listwise", "use_mean_log_prob": True, "use_vote_share": True, "use_centrality": True}
#: recipe name -> (ranker options, which tasks it trains on: "training" = plan.json's, "pool" = all non-held-out)
RECIPES: dict[str, tuple[dict[str, Any], str]] = {
    "training tasks": (BASE, "training"),
    "pool": (BASE, "pool"),
    "pool, centred features": (BASE | {"center_features": True}, "pool"),
    "pool, centred features, no prompt feature": (
        BASE | {"center_features": True, "use_prompt_feature": False},
        "pool",
    ),
    # added for the third round, before its tasks were screened: a head that scores each candidate on its own
    "pool, pointwise head": (BASE | {"head": "pointwise"}, "pool"),
    # added for the fourth round, after the confidence table showed agreement to be mostly a shared error off
    # arithmetic: heads that cannot lean on how many siblings agree
    "pool, no agreement inputs": ({"head": "listwise", "use_mean_log_prob": True}, "pool"),
    "pool, hidden states only": ({"head": "listwise"}, "pool"),
}
#: the row the shipped ranker was chosen as; rounds 1 and 2 ran against "training tasks | weighted vote"
INCUMBENT = "pool | weighted vote, T=2"
#: the thresholds of conditional majority voting (the rules below), also those of the confidence table
CONFIDENCE_TAUS = (0.25, 0.375, 0.5)
TRAINING = {"seed": 0, "report_to": "none", "disable_tqdm": True}
Rule = Callable[[datasets.Dataset, np.ndarray], np.ndarray]


def top_answer_shares(dataset: datasets.Dataset) -> np.ndarray:
    """Per prompt, the share of the first N candidates that carry the most common parsed answer."""
    ids = dataset_answer_ids(dataset, N)
    return vote_shares(ids, torch.ones_like(ids, dtype=torch.bool)).max(-1).values.numpy()


def conditional_majority(tau: float) -> Rule:
    """LiLaVe's conditional majority voting: majority vote where the top answer holds >= ``tau`` of the answers."""

    def choose(dataset: datasets.Dataset, scores: np.ndarray) -> np.ndarray:
        confident = top_answer_shares(dataset) >= tau
        return np.where(confident, majority_vote_choices(dataset, N), weighted_vote_from_scores(dataset, scores))

    return choose


def majority_when_confident(top_shares: np.ndarray, majority_correct: np.ndarray, tau: float) -> dict[str, Any]:
    """How often majority vote is right (``majority_correct`` per prompt) where the top answer holds at least ``tau``
    of the N answers (`top_answer_shares`), and elsewhere: what conditional majority voting, and any self-training on
    majority-vote labels, have to stand on."""
    confident = top_shares >= tau
    return {
        "prompts": int(confident.sum()),
        "share_of_prompts": float(confident.mean()),
        "majority_accuracy": float(majority_correct[confident].mean()) if confident.any() else None,
        "majority_accuracy_elsewhere": float(majority_correct[~confident].mean()) if not confident.all() else None,
    }


def served_rule(selection: str, temperature: float) -> Rule:
    """`generate`'s ``selection`` (`SELECTION_RULES`) on the scores divided by ``temperature``."""
    return lambda dataset, scores: SELECTION_RULES[selection](dataset, scores / temperature)


#: the rules `generate` can serve: its selection, and the vote temperature folded into the scores
#: (`fold_vote_temperature`)
SERVED_RULES = {
    "weighted vote": ("weighted_vote", 1),
    "weighted vote, T=2": ("weighted_vote", 2),
    "weighted vote, T=4": ("weighted_vote", 4),
    "best-scored candidate": ("argmax", 1),
}
RULES: dict[str, Rule] = {
    **{name: served_rule(*served) for name, served in SERVED_RULES.items()},
    **{f"majority if top share >= {tau:g}, else weighted vote": conditional_majority(tau) for tau in CONFIDENCE_TAUS},
}


def fit(options: dict[str, Any], train: datasets.Dataset, validation: datasets.Dataset) -> RankerScorer:
    scorer = RankerScorer(feature_layer=LAYER, **options, **TRAINING).fit(train, validation)
    scorer.ranker.config.selection = "weighted_vote"
    return scorer


def scores_of(scorer: RankerScorer, dataset: datasets.Dataset) -> np.ndarray:
    return np.stack(scorer.score(dataset, N))


def outcome(dataset: datasets.Dataset, choices: np.ndarray) -> np.ndarray:
    return chosen_correct(dataset, choices).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "data" / "mixture"))
    parser.add_argument("--ship", default=None, help="folder to save the chosen ranker to (if generate can serve it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the rankers are tiny; 1 is enough)")
    parser.add_argument("--leave-out", nargs="*", default=[], help="tasks of --data to leave out of the pool")
    parser.add_argument("--output-name", default="unseen_tasks", help="results file stem under " + str(RESULTS))
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="recipes to try")
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES), help="rules to try")
    parser.add_argument("--incumbent", default=INCUMBENT, help="'recipe | rule' a new choice must beat")
    args = parser.parse_args()
    recipes = {name: RECIPES[name] for name in args.recipes}
    rules = {name: RULES[name] for name in args.rules}
    if args.incumbent not in {f"{recipe} | {rule}" for recipe in recipes for rule in rules}:
        parser.error(f"--incumbent {args.incumbent!r} is not a 'recipe | rule' row of the recipes tried")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = Path(args.data)
    plan = json.loads((data / "plan.json").read_text())
    training_tasks, held_out = plan["training"], plan["held_out"]
    unseen_validation = sorted(
        folder.name
        for folder in data.iterdir()
        if folder.is_dir()
        and folder.name not in training_tasks + held_out + args.leave_out
        and (folder / "validation").is_dir()
    )
    pool = training_tasks + unseen_validation

    def load(task: str, split: str) -> datasets.Dataset:
        return load_collection(data / task / split)

    validation = {task: load(task, "validation") for task in pool}
    train = {task: load(task, "train") for task in training_tasks}
    train |= {task: first_candidates(validation[task], TRAIN_CANDIDATES) for task in unseen_validation}
    tests = {task: load(task, "test") for task in training_tasks + held_out}
    for task in training_tasks:
        check_disjoint_prompts({"train": train[task], "validation": validation[task], "test": tests[task]})

    def training_data(tasks: list[str]) -> datasets.Dataset:
        """Balanced within the training tasks and within the unseen-task validation tasks (which hold fewer)."""
        groups = [[task for task in tasks if task in group] for group in (training_tasks, unseen_validation)]
        parts = [mix_tasks({task: train[task] for task in group}) for group in groups if group]
        mixed = datasets.concatenate_datasets(parts).shuffle(seed=0).flatten_indices()
        mixed.info.description = parts[0].info.description  # the collection's settings (CollectionInfo)
        return mixed

    def early_stopping_data(tasks: list[str]) -> datasets.Dataset:
        return mix_tasks({task: validation[task] for task in tasks if task in training_tasks})

    def recipe_tasks(recipe: str) -> list[str]:
        return training_tasks if recipes[recipe][1] == "training" else pool

    # 1-2. leave-one-task-out validation: every recipe without each pool task, every rule on its scores
    majority = {task: outcome(validation[task], majority_vote_choices(validation[task], N)) for task in pool}
    loto: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for task in pool:
        for recipe, (options, _) in recipes.items():
            others = [other for other in recipe_tasks(recipe) if other != task]
            scorer = fit(options, training_data(others), early_stopping_data(others))
            scores = scores_of(scorer, validation[task])
            for rule, choose in rules.items():
                loto.setdefault((recipe, rule), {})[task] = outcome(validation[task], choose(validation[task], scores))
            print(
                f"left out {task}: {recipe}: "
                + ", ".join(f"{rule} {loto[recipe, rule][task].mean():.3f}" for rule in rules)
                + f" (majority {majority[task].mean():.3f})",
                flush=True,
            )

    shares = {task: top_answer_shares(validation[task]) for task in pool}
    confidence = {
        f"{tau:g}": {task: majority_when_confident(shares[task], majority[task], tau) for task in pool}
        for tau in CONFIDENCE_TAUS
    }

    # 3. the choice
    pooled_majority = np.concatenate([majority[task] for task in pool])
    rows: dict[str, dict[str, Any]] = {}
    for (recipe, rule), by_task in loto.items():
        pooled = np.concatenate([by_task[task] for task in pool])
        per_task = {task: paired_bootstrap(by_task[task], majority[task]) for task in pool}
        rows[f"{recipe} | {rule}"] = {
            "recipe": recipe,
            "rule": rule,
            "pooled": float(pooled.mean()),
            "pooled_minus_majority": str(paired_bootstrap(pooled, pooled_majority)),
            "per_task_minus_majority": {task: str(difference) for task, difference in per_task.items()},
            "eligible": all(difference.high >= 0 for difference in per_task.values()),
            "outcomes": pooled,
        }
    incumbent_row = rows[args.incumbent]
    eligible = [name for name, row in rows.items() if row["eligible"]]
    best = max(eligible, key=lambda name: rows[name]["pooled"]) if eligible else None
    chosen = args.incumbent
    if best is not None:
        margin = rows[best]["pooled"] - incumbent_row["pooled"]
        if margin > paired_stderr(rows[best]["outcomes"], incumbent_row["outcomes"]):
            chosen = best
    recipe, rule = rows[chosen]["recipe"], rows[chosen]["rule"]
    print(
        f"chosen on leave-one-task-out validation: {chosen} (best eligible: {best}; incumbent: {args.incumbent})",
        flush=True,
    )

    # 4. the chosen recipe on its whole pool, tested once
    options, _ = recipes[recipe]
    final = fit(options, training_data(recipe_tasks(recipe)), early_stopping_data(recipe_tasks(recipe)))
    shipped = RankerScorer.from_trained(LanguageRanker.from_pretrained(SHIPPED_MIXTURE))
    report_tests: dict[str, Any] = {}
    pooled_held_out: dict[str, list[np.ndarray]] = {}
    for task, test in tests.items():
        methods = {
            "majority vote": outcome(test, majority_vote_choices(test, N)),
            "mean log-prob": outcome(test, mean_log_prob_choices(test, N)),
            "mixture ranker shipped before": outcome(test, weighted_vote_from_scores(test, scores_of(shipped, test))),
            "chosen ranker": outcome(test, RULES[rule](test, scores_of(final, test))),
            "oracle": outcome(test, oracle_choices(test, N)),
        }
        if task in held_out:
            for method, values in methods.items():
                pooled_held_out.setdefault(method, []).append(values)
        report_tests[task] = summarize(task in held_out, methods)
    report_tests["held-out tasks, pooled"] = summarize(
        True, {method: np.concatenate(values) for method, values in pooled_held_out.items()}
    )
    report = {
        "command": " ".join(["python benchmarks/unseen_tasks.py", *(shlex.quote(arg) for arg in sys.argv[1:])]),
        "output_name": args.output_name,
        "pool": pool,
        "training_tasks": training_tasks,
        "unseen_task_validation": unseen_validation,
        "held_out_tasks": held_out,
        "validation": {name: {k: v for k, v in row.items() if k != "outcomes"} for name, row in rows.items()},
        "majority_on_validation": float(pooled_majority.mean()),
        "majority_when_confident": confidence,
        "best_eligible": best,
        "incumbent": args.incumbent,
        "chosen": {"recipe": recipe, "rule": rule, "options": options, "tasks": recipe_tasks(recipe)},
        "tests": report_tests,
        "wall_seconds": round(time.perf_counter() - started),
    }
    write_results(RESULTS, args.output_name, to_markdown(report), report)
    if args.ship:
        if rule not in SERVED_RULES:
            print(f"not shipped: generate cannot serve the rule {rule!r}")
        else:
            selection, temperature = SERVED_RULES[rule]
            final.ranker.config.selection = selection
            ranker = fold_vote_temperature(final.ranker, temperature)
            ship(ranker, Path(args.ship), ranker_card(report), "chosen ranker")


def fold_vote_temperature(ranker: LanguageRanker, temperature: float) -> LanguageRanker:
    """The ranker with its scores divided by ``temperature``: the last linear layer of the score head scaled, so
    `generate`'s weighted vote (a softmax over the scores) is the tempered vote, and argmax picks are unchanged."""
    last = ranker.score_head if isinstance(ranker.score_head, torch.nn.Linear) else ranker.score_head[-1]
    with torch.no_grad():
        last.weight /= temperature
        last.bias /= temperature
    ranker.config.extra["vote_temperature_folded_into_score_head"] = temperature
    return ranker


def ranker_card(report: dict[str, Any]) -> dict[str, Any]:
    """The chosen ranker's card: training tasks, the choice, the held-out table, how to reproduce it."""
    chosen, pooled = report["chosen"], report["tests"]["held-out tasks, pooled"]
    return {
        "training": {
            "training tasks (reasoning-gym, built-in)": ", ".join(chosen["tasks"]),
            "held-out tasks (never trained on, never used for a choice)": ", ".join(report["held_out_tasks"]),
            "data": "train splits (8 candidates per prompt) of the training tasks, balanced, and the first 8 "
            "candidates of the other tasks' validation draws; sampled from SmolLM2-135M-Instruct at temperature "
            "0.8, 64 new tokens (bfloat16 on a GPU; the later rounds' screening draws in float32 on a CPU)",
            "chosen on leave-one-task-out validation": f"{chosen['recipe']}, {chosen['rule']} (the vote "
            "temperature is folded into the score head)",
            "held-out tasks at N=16 (pooled)": f"chosen ranker − majority vote {pooled['chosen_minus_majority']}",
            "reproduce": f"`{report['command']}` on the committed collections (tables: "
            f"benchmarks/results/mixture/{report['output_name']}.md)",
        },
        "evaluation": {
            "task": "held-out tasks, pooled: " + ", ".join(report["held_out_tasks"]),
            "dataset": f"{pooled['num_prompts']} test prompts of tasks the ranker never saw",
            "accuracy": {method: {N: value} for method, value in pooled["accuracy"].items()},
        },
    }


def summarize(is_held_out: bool, methods: dict[str, np.ndarray]) -> dict[str, Any]:
    majority = methods["majority vote"]
    return {
        "kind": "held-out" if is_held_out else "training task",
        "num_prompts": len(majority),
        "accuracy": {method: float(values.mean()) for method, values in methods.items()},
        "chosen_minus_majority": str(paired_bootstrap(methods["chosen ranker"], majority)),
        "shipped_before_minus_majority": str(paired_bootstrap(methods["mixture ranker shipped before"], majority)),
        "chosen_minus_shipped_before": str(
            paired_bootstrap(methods["chosen ranker"], methods["mixture ranker shipped before"])
        ),
    }


def confidence_markdown(confidence: dict[str, dict[str, dict[str, Any]]], pool: list[str]) -> list[str]:
    """The validation table of `majority_when_confident`: one row per threshold, one cell per pool task."""

    def cell(entry: dict[str, Any]) -> str:
        if entry["majority_accuracy"] is None:
            return "0 prompts"
        elsewhere = entry["majority_accuracy_elsewhere"]
        return f"{entry['majority_accuracy']:.2f} on {entry['prompts']} ({entry['share_of_prompts']:.0%}); " + (
            "—" if elsewhere is None else f"{elsewhere:.2f}"
        )

    return [
        "",
        "### Is majority vote right where it is confident? (validation, no ranker)",
        "",
        "Majority-vote accuracy on the prompts whose top answer holds at least tau of the 16 answers (how many, share "
        "of the task's prompts); then its accuracy on the other prompts. Conditional majority voting defers to these "
        "votes, and self-training on majority-vote labels would learn from them.",
        "",
        "| tau | " + " | ".join(pool) + " |",
        "|---|" + "---|" * len(pool),
        *(
            f"| {tau} | " + " | ".join(cell(by_task[task]) for task in pool) + " |"
            for tau, by_task in confidence.items()
        ),
    ]


def to_markdown(report: dict[str, Any]) -> str:
    pool = report["pool"]
    lines = [
        f"# Tasks the ranker never saw: SmolLM2-135M-Instruct, N={N}, layer {LAYER}",
        "",
        f"Pool (leave-one-task-out validation): {', '.join(pool)}. Held-out tasks (tested once, never used for a "
        f"choice): {', '.join(report['held_out_tasks'])}.",
        "",
        "## Leave-one-task-out validation (every row; each task's validation split scored by a ranker trained "
        "without it)",
        "",
        f"Majority vote, pooled: {report['majority_on_validation']:.3f}. Eligible: no task significantly below "
        "majority vote.",
        "",
        "| recipe | rule | pooled | − majority | eligible | "
        + " | ".join(f"{task} − majority" for task in pool)
        + " |",
        "|---|---|---:|---|---|" + "---|" * len(pool),
    ]
    for row in report["validation"].values():
        lines.append(
            f"| {row['recipe']} | {row['rule']} | {row['pooled']:.3f} | {row['pooled_minus_majority']} | "
            f"{'yes' if row['eligible'] else 'no'} | "
            + " | ".join(row["per_task_minus_majority"][task] for task in pool)
            + " |"
        )
    lines += confidence_markdown(report["majority_when_confident"], pool)
    chosen = report["chosen"]
    lines += [
        "",
        f"Chosen: **{chosen['recipe']}, {chosen['rule']}** (best eligible row: {report['best_eligible']}; it had "
        f"to beat the incumbent row {report['incumbent']} by one paired s.e.); trained on "
        f"{', '.join(chosen['tasks'])}.",
        "",
        "## Test splits, once",
        "",
        "| test split (prompts) | majority vote | mean log-prob | mixture shipped before | chosen ranker | oracle | "
        "chosen − majority | shipped before − majority | chosen − shipped before |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for task, entry in report["tests"].items():
        accuracy = entry["accuracy"]
        lines.append(
            f"| {task} ({entry['num_prompts']}, {entry['kind']}) | {accuracy['majority vote']:.3f} | "
            f"{accuracy['mean log-prob']:.3f} | {accuracy['mixture ranker shipped before']:.3f} | "
            f"{accuracy['chosen ranker']:.3f} | {accuracy['oracle']:.3f} | {entry['chosen_minus_majority']} | "
            f"{entry['shipped_before_minus_majority']} | {entry['chosen_minus_shipped_before']} |"
        )
    lines += [
        "",
        "Paired differences: mean over prompts, bootstrap 95% interval, prompts won / lost.",
        "",
        f"`{report['command']}` ({report['wall_seconds']} s)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
