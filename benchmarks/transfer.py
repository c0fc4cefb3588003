"""Cross-task transfer (the paper's §3.3): each task's chosen ranker scored on the other task's test split.

    python benchmarks/transfer.py [--work-dir runs/quality]

Needs the test candidates of both presets under ``<work-dir>/<preset>/candidates/test`` (written by
``benchmarks/quality.py --preset <preset>``, or by `experiment.collect_splits`) and each preset's chosen ranker:
arithmetic's is the released one in ``model_cards/``, products' is ``<work-dir>/products/ranker`` by default.
Nothing is trained or chosen here: every ranker keeps the variant, layer and pick rule its own validation
split chose, so the off-diagonal rows are a pure transfer. Writes ``benchmarks/results/transfer/results.md``
and ``results.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets
from _common import write_results

from hf_language_ranker import LanguageRanker
from hf_language_ranker.evaluation import MAJORITY_VOTE, MEAN_LOG_PROB, ORACLE, RankerScorer, evaluate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "transfer"
TASKS = ("arithmetic", "products")
N = 16


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def trained_on(task: str) -> str:
    return f"ranker trained on {task}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/quality", help="where benchmarks/quality.py collected")
    parser.add_argument("--arithmetic-ranker", default=str(ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"))
    parser.add_argument("--products-ranker", default=None, help="default: <work-dir>/products/ranker")
    args = parser.parse_args()
    work = Path(args.work_dir)
    folders = {
        "arithmetic": Path(args.arithmetic_ranker),
        "products": Path(args.products_ranker or work / "products" / "ranker"),
    }
    rankers = {task: LanguageRanker.from_pretrained(folder) for task, folder in folders.items()}

    rows, report = [], {"command": " ".join(["python benchmarks/transfer.py", *sys.argv[1:]]), "n": N, "tests": {}}
    for test_task in TASKS:
        test = datasets.load_from_disk(str(work / test_task / "candidates" / "test" / "dataset"))
        scorers = {trained_on(task): RankerScorer.from_trained(ranker) for task, ranker in rankers.items()}
        selections = {trained_on(task): ranker.config.selection for task, ranker in rankers.items()}
        result = evaluate(test, scorers, ns=(N,), task=test_task, selections=selections)
        in_domain = trained_on(test_task)
        transferred = trained_on(next(task for task in TASKS if task != test_task))
        entry = {"num_prompts": result.num_prompts, "accuracy": {m: a[N] for m, a in result.accuracy.items()}}
        entry["paired"] = {
            f"{transferred} - {MAJORITY_VOTE}": str(result.paired(transferred, MAJORITY_VOTE, N)),
            f"{transferred} - {in_domain}": str(result.paired(transferred, in_domain, N)),
            f"{in_domain} - {MAJORITY_VOTE}": str(result.paired(in_domain, MAJORITY_VOTE, N)),
        }
        report["tests"][test_task] = entry
        accuracy, paired = entry["accuracy"], list(entry["paired"].values())
        numbers = [accuracy[method] for method in (MAJORITY_VOTE, MEAN_LOG_PROB, in_domain, transferred)]
        cells = [f"{value:.3f}" for value in numbers] + paired[2:] + paired[:2] + [f"{accuracy[ORACLE]:.3f}"]
        rows.append(f"| {test_task} ({result.num_prompts}) | " + " | ".join(cells) + " |")
    choices = {
        task: f"{ranker.config.head} head, layer {ranker.config.feature_layer}, "
        f"log-prob {ranker.config.use_mean_log_prob}, vote share {ranker.config.use_vote_share}, "
        f"centrality {ranker.config.use_centrality}, selection {ranker.config.selection}"
        for task, ranker in rankers.items()
    }
    markdown = "\n".join(
        [
            f"# Cross-task transfer at N={N}",
            "",
            "Each task's ranker as chosen on its own validation split, scored on each test split (no retraining).",
            "",
            "| test split (prompts) | majority vote | mean log-prob | in-domain ranker | transferred ranker | "
            "in-domain − majority | transferred − majority | transferred − in-domain | oracle |",
            "|---|---:|---:|---:|---:|---|---|---|---:|",
            *rows,
            "",
            "Paired differences: mean over prompts, bootstrap 95% interval, prompts won / lost.",
            "",
            *[f"- {trained_on(task)} (`{shown(folders[task])}`): {choice}" for task, choice in choices.items()],
            "",
            f"`{report['command']}`",
            "",
        ]
    )
    write_results(RESULTS, "results", markdown, {**report, "rankers": choices})


if __name__ == "__main__":
    main()
