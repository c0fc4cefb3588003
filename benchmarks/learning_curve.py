"""Is the training set the limit? Ranker accuracy against the number of training prompts, by cross-validation.

    python benchmarks/learning_curve.py [--work-dir runs/quality/arithmetic] [--sizes 100 200 400 0]

Reuses the training candidates `benchmarks/quality.py --preset arithmetic` collected (<work-dir>/candidates/train).
The training prompts are split into `--folds` folds; each fold is held out once while rankers train on the first
`size` prompts of the other folds (0 = all of them), and, to see what more candidates per prompt bring, on all of
them with only their first 2 or 4 candidates. Every training prompt is scored once per setting, so
the accuracies below are over all of them (about 4x more prompts than the 200-prompt test split) at N = the
collected candidates per prompt (8). The validation and test splits are not touched. Paired differences with
majority vote and mean log-prob come with their standard errors over prompts. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_language_ranker import load_collection
from hf_language_ranker.candidates import first_candidates, num_candidates
from hf_language_ranker.evaluation import (
    BASELINES,
    MAJORITY_VOTE,
    MEAN_LOG_PROB,
    ORACLE,
    RANKER_VARIANTS,
    ProbeScorer,
    RankerScorer,
    Scorer,
    chosen_correct,
    paired_stderr,
)
from hf_language_ranker.evaluation.baselines import choices_from_scores, oracle_choices

RESULTS = Path(__file__).resolve().parent / "results" / "arithmetic"


def learned_scorers(feature_layer: int, seed: int) -> dict[str, Scorer]:
    training = {"feature_layer": feature_layer, "seed": seed, "report_to": "none", "disable_tqdm": True}
    scorers: dict[str, Scorer] = {name: RankerScorer(**kw, **training) for name, kw in RANKER_VARIANTS.items()}
    scorers["linear probe"] = ProbeScorer(layer=feature_layer, weight_decay=0.1)
    return scorers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/quality/arithmetic")
    parser.add_argument("--feature-layer", type=int, default=24, help="the layer quality.py chose on validation")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 0], help="train prompts; 0 = all")
    parser.add_argument(
        "--fewer-candidates",
        type=int,
        nargs="*",
        default=[2, 4],
        help="also train on all prompts with only their first k candidates",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "learning_curve.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    train = load_collection(Path(args.work_dir) / "candidates" / "train")
    n = num_candidates(train)
    order = np.random.default_rng(args.seed).permutation(len(train))
    folds = np.array_split(order, args.folds)
    pool_size = len(train) - max(len(fold) for fold in folds)
    sizes = sorted({size if 0 < size <= pool_size else pool_size for size in args.sizes})
    settings = [(size, n) for size in sizes] + [(pool_size, k) for k in sorted(set(args.fewer_candidates)) if k < n]

    fixed: dict[str, np.ndarray] = {name: np.zeros(len(train), bool) for name in [*BASELINES, ORACLE]}
    learned: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    for fold in folds:
        held_out = train.select(fold)
        for name, rule in [*BASELINES.items(), (ORACLE, oracle_choices)]:
            fixed[name][fold] = chosen_correct(held_out, rule(held_out, n))
        rest = np.concatenate([other for other in folds if other is not fold])  # shuffled; sizes are nested
        for size, k in settings:
            subset = first_candidates(train.select(rest[:size]), k)
            for name, scorer in learned_scorers(args.feature_layer, args.seed).items():
                scorer.fit(subset, None)
                choices = choices_from_scores(scorer.score(held_out, n))
                learned.setdefault(name, {}).setdefault((size, k), np.zeros(len(train), bool))[fold] = chosen_correct(
                    held_out, choices
                )
            print(f"fold done: {size} prompts x {k} candidates ({time.perf_counter() - started:.0f} s)", flush=True)

    references = {"majority vote": fixed[MAJORITY_VOTE], "mean log-prob": fixed[MEAN_LOG_PROB]}
    lines = [
        f"# Learning curve: {args.folds}-fold cross-validation over {len(train)} arithmetic training prompts, N={n}",
        "",
        f"Command: `python benchmarks/learning_curve.py {' '.join(sys.argv[1:])}` (feature layer "
        f"{args.feature_layer}, linear probe weight decay 0.1, library training defaults)",
        "",
        "Accuracy over all training prompts (each held out once); in brackets, the paired differences with majority "
        "vote and with mean log-prob, ± their standard errors over prompts.",
        "",
        "| method | " + " | ".join(f"{size} train prompts × {k}" for size, k in settings) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for name, values in fixed.items():
        lines.append(f"| {name} | " + " | ".join(f"{values.mean():.3f}" for _ in settings) + " |")
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_size in learned.items():
        cells = []
        for size, k in settings:
            hit = by_size[(size, k)]
            entry = summary.setdefault(name, {}).setdefault(f"{size}x{k}", {"accuracy": float(hit.mean())})
            differences = []
            for reference, values in references.items():
                difference = hit.astype(float) - values
                standard_error = paired_stderr(hit, values)
                entry[f"minus {reference}"] = [float(difference.mean()), standard_error]
                differences.append(f"{difference.mean():+.3f} ± {standard_error:.3f}")
            cells.append(f"{entry['accuracy']:.3f} ({', '.join(differences)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall time: {time.perf_counter() - started:.0f} s on one CPU thread."]
    text = "\n".join(lines) + "\n"
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)
    print(
        json.dumps(
            {
                "prompts": len(train),
                "n": n,
                "settings": [f"{size}x{k}" for size, k in settings],
                "baselines": {name: float(values.mean()) for name, values in fixed.items()},
                "learned": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
