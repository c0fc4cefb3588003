"""How good is the cross-validated choice? The chosen ranker's test accuracy, and its rank among the grid's rows.

    python benchmarks/choice.py --train runs/t/train --validation runs/t/validation --test runs/t/test \\
        --output benchmarks/results/<task>/choice.md [--folds 5] [--epochs 8]

Takes three folders written by `hf-language-ranker collect` (no LLM is loaded). `select_ranker` chooses a setting
(variant x layer x pick rule) by k-fold cross-validation over train + validation; then every setting of the
grid is trained on train + validation and scored on test at the serving N (the test split's candidates), so the
table shows where the choice lands among all of them, beside the old rule (train on train, pick the best on the
single validation split). Needs a real collection: on 2 CPU cores a few hundred prompts x 16 candidates of the
embedded SmolLM2 take about an hour per 400 prompts to collect; the fits here take minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hf_language_ranker import load_collection, select_ranker
from hf_language_ranker.candidates import feature_layers, num_candidates, pool_datasets
from hf_language_ranker.evaluation import (
    MAJORITY_VOTE,
    RANKER_VARIANTS,
    SELECTION_RULES,
    chosen_correct,
    paired_bootstrap,
)
from hf_language_ranker.evaluation.baselines import majority_vote_choices
from hf_language_ranker.evaluation.cross_validation import Setting, fit_setting, quiet_training


def test_outcomes(scorer, test, n: int) -> dict[str, np.ndarray]:
    """0/1 correctness on every test prompt of a fitted scorer under each pick rule."""
    scores = scorer.score(test, n)
    return {rule: chosen_correct(test, SELECTION_RULES[rule](test, scores)) for rule in SELECTION_RULES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in ("train", "validation", "test"):
        parser.add_argument(f"--{split}", required=True, help=f"folder `collect` wrote for the {split} split")
    parser.add_argument("--output", type=Path, required=True, help="markdown table to write (JSON beside it)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=float, default=8.0, help="num_train_epochs of every fit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, validation, test = (load_collection(folder) for folder in (args.train, args.validation, args.test))
    n = num_candidates(test)
    training = quiet_training(args.seed, num_train_epochs=args.epochs)

    choice = select_ranker(train, validation, folds=args.folds, serve_n=n, seed=args.seed, num_train_epochs=args.epochs)
    pooled = pool_datasets([train, validation])
    on_test: dict[Setting, np.ndarray] = {}
    on_validation: dict[Setting, float] = {}
    for name, options in RANKER_VARIANTS.items():
        for layer in feature_layers(train):
            outcomes = test_outcomes(fit_setting(pooled, options, layer, "argmax", **training), test, n)
            single = fit_setting(train, options, layer, "argmax", **training)  # the old single-split rule
            validation_outcomes = test_outcomes(single, validation, num_candidates(validation))
            for rule in SELECTION_RULES:
                on_test[Setting(name, layer, rule)] = outcomes[rule]
                on_validation[Setting(name, layer, rule)] = float(validation_outcomes[rule].mean())
    single_split = max(on_validation, key=on_validation.get)
    majority = chosen_correct(test, majority_vote_choices(test, n))
    ranking = sorted(on_test, key=lambda setting: -on_test[setting].mean())

    def line(label: str, setting: Setting) -> str:
        rank = 1 + sum(on_test[other].mean() > on_test[setting].mean() for other in on_test)
        versus = paired_bootstrap(on_test[setting], majority)
        return (
            f"| {label} | {setting.row}, layer {setting.feature_layer} | {on_test[setting].mean():.3f} | "
            f"{rank} of {len(on_test)} | {versus} |"
        )

    lines = [
        f"Test accuracy at N={n} on {len(test)} prompts ({MAJORITY_VOTE}: {majority.mean():.3f}); every setting "
        f"trained on the {len(pooled)} train + validation prompts.",
        "",
        f"| rule | setting | test accuracy | rank on test | − {MAJORITY_VOTE} |",
        "|---|---|---:|---:|---|",
        line(f"{args.folds}-fold cross-validation (near-ties to the default)", choice.chosen),
        line("cross-validation, best without the tie rule", choice.best),
        line("single validation split (the old rule)", single_split),
        line("best on test (hindsight, not a rule)", ranking[0]),
        "",
        choice.to_markdown(),
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload = {
        "serve_n": n,
        "choice": choice.to_dict(),
        "single_split": {"method": single_split.row, "feature_layer": single_split.feature_layer},
        "test_accuracy": {f"{s.row} @ layer {s.feature_layer}": float(v.mean()) for s, v in on_test.items()},
    }
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
