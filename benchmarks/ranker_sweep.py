"""Why does the ranker not beat majority vote on arithmetic? Sweep loss, head, group size and epochs.

    python benchmarks/ranker_sweep.py [--work-dir runs/quality/arithmetic]

Reuses the candidates `benchmarks/quality.py --preset arithmetic` collected (train / validation / test under
<work-dir>/candidates). Every setting is trained on train and scored on VALIDATION at N=16; only the setting
with the best validation accuracy is then scored on test. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from datasets import load_from_disk

from hf_language_ranker.evaluation import RankerScorer, selection_accuracy
from hf_language_ranker.evaluation.baselines import choices_from_scores

GRID = {
    "loss": ["listwise", "pairwise", "pointwise"],
    "head": ["listwise", "pointwise"],
    "group_size": [4, 8],
    "num_train_epochs": [8, 24],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/quality/arithmetic")
    parser.add_argument("--feature-layer", type=int, default=24, help="the layer quality.py chose on validation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    candidates = Path(args.work_dir) / "candidates"
    train, validation, test = (
        load_from_disk(str(candidates / split / "dataset")) for split in ("train", "validation", "test")
    )

    def accuracy(scorer: RankerScorer, dataset) -> float:
        return selection_accuracy(dataset, choices_from_scores(scorer.score(dataset, 16)))

    rows = []
    for values in itertools.product(*GRID.values()):
        setting = dict(zip(GRID, values))
        scorer = RankerScorer(feature_layer=args.feature_layer, seed=0, disable_tqdm=True, **setting)
        scorer.fit(train, validation)
        rows.append((accuracy(scorer, validation), setting, scorer))
        print(f"validation {rows[-1][0]:.3f}  {setting}", flush=True)
    best_accuracy, best_setting, best_scorer = max(rows, key=lambda row: row[0])
    test_accuracy = accuracy(best_scorer, test)
    print(f"best on validation: {best_setting} -> validation {best_accuracy:.3f}, test {test_accuracy:.3f} (N=16)")
    print(
        json.dumps(
            {
                "feature_layer": args.feature_layer,
                "best_setting": best_setting,
                "validation_accuracy": best_accuracy,
                "test_accuracy": test_accuracy,
                "validation_by_setting": [[row[0], row[1]] for row in rows],
            }
        )
    )


if __name__ == "__main__":
    main()
