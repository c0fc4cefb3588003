"""More of the oracle per candidate (issue 29): several layers as one input, answer poolings beside the last token,
and fold ensembles, against the current recipe, chosen by cross-validation and scored once on test.

    python benchmarks/multilayer_features.py --output-dir runs/multilayer      # the collections at 7 layers
    python benchmarks/oracle_levers.py --data runs/multilayer [--tasks addition arithmetic ...]
    python benchmarks/multilayer_features.py --output-dir runs/pooling --layers 6 12 18 24 --answer-poolings mean first
    python benchmarks/oracle_levers.py --levers answer_poolings --data runs/pooling    # -> results/answer_pooling/

For each collection (train 200 prompts x 8, validation 100 x 16, test 200 x 16 of the committed mixture tasks,
re-featurized at layers 6, 9, ..., 24 by `multilayer_features.py`):

1. **current**: `select_ranker` as the own-task protocol runs it today, on train + validation (5 folds, serving
   N=16), over the released recipe (`DEFAULT_VARIANT`) at single layers 6, 12, 18 and 24 and both pick rules;
2. **extended**: the same, with the new variants of the levers asked for (``--levers``) added to the grid, fixed
   before any result was seen: ``layers`` (`NEW_VARIANTS`: layers 12+18+24 concatenated, the same three
   softmax-mixed, all seven softmax-mixed) or ``answer_poolings`` (`POOLING_VARIANTS`: the released recipe at layer 18
   reading the answer tokens' mean, the first answer token's state, or both, beside the last token's; collections
   re-featurized with ``--answer-poolings mean first``, which writes them at layer 18);
3. each choice served two ways: the refit ranker (trained on all train + validation prompts, as today) and the
   fold ensemble (`fold_ensemble=True`: the K fold models cross-validation scored, one ranker serving their mean);
4. every new variant also alone (refit, weighted vote), and the released recipe at the layer they start from (12,
   the mixture ranker's layer, for ``layers``; 18 for ``answer_poolings``), so no row is hidden.

Test is read once, at the end, at N = 4, 8, 16 (each prompt's first N candidates). Rows: accuracy at each N; at
N=16 the paired bootstrap difference to majority vote and to the current choice (refit); the share of the majority
-> oracle gap closed. The adoption rule of the issue is applied to the cross-validation outcome and printed.
Trains on one thread, so two runs (``--tasks`` each) can share two cores. Each task's choices, tables and per-prompt
outcomes go to ``<output-dir>/tasks/<task>.json`` (default ``benchmarks/results/oracle_levers/`` for ``layers``,
``benchmarks/results/answer_pooling/`` for ``answer_poolings``); ``--report`` then writes ``results.md`` (and
``results.json``, its summary) from every task evaluated (per-prompt outcomes in the JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_results

from hf_language_ranker import load_collection
from hf_language_ranker.candidates import pool_datasets
from hf_language_ranker.evaluation import paired_bootstrap
from hf_language_ranker.evaluation.baselines import (
    SELECTION_RULES,
    chosen_correct,
    majority_vote_choices,
    oracle_choices,
)
from hf_language_ranker.evaluation.cross_validation import (
    DEFAULT_SELECTION,
    DEFAULT_VARIANT,
    RANKER_VARIANTS,
    fit_setting,
    quiet_training,
    select_ranker,
)
from hf_language_ranker.evaluation.scorers import RankerScorer
from hf_language_ranker.tables import markdown_table

TASKS = ("addition", "arithmetic", "number_sequence", "lcm", "linear_equations")
#: the single layers of the grid (the several-layer variants pin theirs)
LAYERS = [6, 12, 18, 24]
NS = (4, 8, 16)
SERVE_N = 16
SEED = 0
DEFAULT = RANKER_VARIANTS[DEFAULT_VARIANT]
CURRENT_VARIANTS = {DEFAULT_VARIANT: DEFAULT}
NEW_VARIANTS = {
    "layers 12+18+24, concat": {**DEFAULT, "feature_layer": 12, "extra_layers": [18, 24], "layer_mix": "concat"},
    "layers 12+18+24, softmax mix": {**DEFAULT, "feature_layer": 12, "extra_layers": [18, 24], "layer_mix": "softmax"},
    "layers 6-24 (7), softmax mix": {
        **DEFAULT,
        "feature_layer": 12,
        "extra_layers": [6, 9, 15, 18, 21, 24],
        "layer_mix": "softmax",
    },
}
POOLING_VARIANTS = {
    "layer 18 + answer mean": {**DEFAULT, "feature_layer": 18, "answer_poolings": ["mean"]},
    "layer 18 + first answer token": {**DEFAULT, "feature_layer": 18, "answer_poolings": ["first"]},
    "layer 18 + mean + first": {**DEFAULT, "feature_layer": 18, "answer_poolings": ["mean", "first"]},
}


@dataclass(frozen=True)
class Levers:
    """The new variants a run adds to the grid, what they are called in the adoption rule, the layer of the released
    recipe's row beside them, and where the results go by default."""

    variants: dict[str, dict[str, Any]]
    described: str
    baseline_layer: int
    folder: str


LEVERS = {
    "layers": Levers(NEW_VARIANTS, "a several-layer variant", 12, "oracle_levers"),
    "answer_poolings": Levers(POOLING_VARIANTS, "an answer-pooling variant", 18, "answer_pooling"),
}


def test_outcomes(test, ranker, rule: str) -> dict[int, np.ndarray]:
    """0/1 correctness of ``ranker``'s pick under ``rule`` on every test prompt, at each N of `NS`."""
    scorer = RankerScorer.from_trained(ranker)
    return {n: chosen_correct(test, SELECTION_RULES[rule](test, scorer.score(test, n))).astype(float) for n in NS}


def evaluate_task(task: str, data: Path, levers: Levers) -> dict[str, Any]:
    train, validation, test = (load_collection(data / task / split) for split in ("train", "validation", "test"))
    started = time.perf_counter()
    options = {"layers": LAYERS, "serve_n": SERVE_N, "seed": SEED, "fold_ensemble": True}
    current = select_ranker(train, validation, variants=CURRENT_VARIANTS, **options)
    extended = select_ranker(train, validation, variants=CURRENT_VARIANTS | levers.variants, **options)
    pooled, training = pool_datasets([train, validation]), quiet_training(SEED)
    baseline = {f"released recipe, layer {levers.baseline_layer}": {**DEFAULT, "feature_layer": levers.baseline_layer}}
    fixed = {
        f"{name} (refit)": fit_setting(pooled, variant, variant["feature_layer"], DEFAULT_SELECTION, **training).ranker
        for name, variant in {**levers.variants, **baseline}.items()
    }
    rows: dict[str, dict[int, np.ndarray]] = {
        "majority vote": {n: chosen_correct(test, majority_vote_choices(test, n)).astype(float) for n in NS},
        "oracle (pass@N)": {n: chosen_correct(test, oracle_choices(test, n)).astype(float) for n in NS},
    }
    for label, selection in (("current", current), ("extended", extended)):
        rule = selection.chosen.selection
        rows[f"{label} choice (refit)"] = test_outcomes(test, selection.ranker, rule)
        rows[f"{label} choice (fold ensemble)"] = test_outcomes(test, selection.ensemble, rule)
    for name, ranker in fixed.items():
        rows[name] = test_outcomes(test, ranker, DEFAULT_SELECTION)
    return {
        "task": task,
        "seconds": round(time.perf_counter() - started, 1),
        "current": {**current.to_dict(), "table": current.to_markdown()},
        "extended": {**extended.to_dict(), "table": extended.to_markdown()},
        "extended_chose_new_option": extended.chosen.variant in levers.variants,
        "outcomes": {name: {n: values.tolist() for n, values in by_n.items()} for name, by_n in rows.items()},
    }


def task_table(result: dict[str, Any]) -> str:
    outcomes = {name: {int(n): np.asarray(v) for n, v in by_n.items()} for name, by_n in result["outcomes"].items()}
    majority, oracle = outcomes["majority vote"][SERVE_N], outcomes["oracle (pass@N)"][SERVE_N]
    reference = outcomes["current choice (refit)"][SERVE_N]
    gap = oracle.mean() - majority.mean()
    rows = []
    for name, by_n in outcomes.items():
        values = by_n[SERVE_N]
        learned = name not in ("majority vote", "oracle (pass@N)")
        rows.append(
            [
                name,
                *(f"{by_n[n].mean():.3f}" for n in NS),
                str(paired_bootstrap(values, majority)) if learned else "",
                str(paired_bootstrap(values, reference)) if learned and name != "current choice (refit)" else "",
                f"{(values.mean() - majority.mean()) / gap:.0%}" if learned and gap > 0 else "",
            ]
        )
    header = ["method", *(f"N={n}" for n in NS), "− majority (N=16)", "− current choice (N=16)", "gap closed"]
    chosen = (
        f"current choice: {result['current']['chosen']['method']}, layer {result['current']['chosen']['feature_layer']}"
        f"; extended choice: {result['extended']['chosen']['method']}, layer "
        f"{result['extended']['chosen']['feature_layer']}"
    )
    table = "\n".join(markdown_table(header, rows))
    return f"### {result['task']} (test, {len(majority)} prompts)\n\n{chosen}\n\n{table}"


def report(folder: Path, levers: Levers) -> None:
    """The results table of every task evaluated into ``folder/tasks/``, with the adoption rule applied."""
    results = [json.loads(path.read_text()) for path in sorted((folder / "tasks").glob("*.json"))]
    results.sort(key=lambda result: TASKS.index(result["task"]) if result["task"] in TASKS else len(TASKS))
    preferred = [result["task"] for result in results if result["extended_chose_new_option"]]
    rule = (
        f"Cross-validation chose {levers.described} on {len(preferred)} of {len(results)} collections "
        f"({', '.join(preferred) or 'none'}): the issue's rule adds an option to select_ranker's grid only if it is "
        "chosen on at least two."
    )
    sections = [task_table(result) for result in results]
    cv = [f"### {r['task']}: cross-validation, extended grid\n\n{r['extended']['table']}" for r in results]
    markdown = "\n\n".join(["# More of the oracle per candidate (issue 29)", rule, *sections, *cv]) + "\n"
    write_results(folder, "results", markdown, {"rule": rule, "tasks": [result["task"] for result in results]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levers", choices=tuple(LEVERS), default="layers", help="the new variants to add")
    parser.add_argument("--data", type=Path, default=Path("runs/multilayer"))
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), help="tasks to evaluate (none: only --report)")
    parser.add_argument("--output-dir", type=Path, help="default: benchmarks/results/<the levers' folder>")
    parser.add_argument("--report", action="store_true", help="then write results.md from every evaluated task")
    args = parser.parse_args()
    levers = LEVERS[args.levers]
    output_dir = args.output_dir or Path(__file__).parent / "results" / levers.folder
    torch.set_num_threads(1)  # rankers of < 0.5M parameters: one thread is fastest, and two runs share 2 cores
    for task in args.tasks:
        result = evaluate_task(task, args.data, levers)
        (output_dir / "tasks").mkdir(parents=True, exist_ok=True)
        # compact: the per-prompt outcomes are most of it, and the tree has a size limit
        (output_dir / "tasks" / f"{task}.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
        print(task_table(result), flush=True)
    if args.report:
        report(output_dir, levers)


if __name__ == "__main__":
    main()
