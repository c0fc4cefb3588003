"""Where the weighted-vote rankers stop: a validation-only ablation and the answer structure that bounds them.

    python benchmarks/ablation.py [--work-dir runs/quality/arithmetic] [--layers 18,24] [--seeds 0,1,2]

Reuses the candidates `benchmarks/quality.py --preset arithmetic` collected. Every setting is trained on the
train split and scored on the VALIDATION split with all of its candidates (N=16); the test split is not read
by the ablation. Reported per setting and layer: the mean over seeds of argmax and weighted-vote accuracy at
softmax temperatures 0.5, 1 and 2, and the weighted vote of the seeds' mean score (a seed ensemble).

The second table counts, per split, where the correct answer sits among the parsed answers of a prompt's
candidates: absent, the most common answer, or a minority answer held by one or by several candidates. A
vote-based rule can only gain on the minority rows; a single correct candidate among many wrong ones is what a
ranker would have to find on its own features. Writes `ablation.md` into benchmarks/results/<task>/.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, load_from_disk

from hf_language_ranker.candidates import CORRECT_THRESHOLD, num_candidates
from hf_language_ranker.evaluation import RankerScorer, selection_accuracy
from hf_language_ranker.evaluation.baselines import (
    choices_from_scores,
    majority_vote_choices,
    oracle_choices,
    weighted_vote_from_scores,
)

RESULTS = Path(__file__).resolve().parent / "results"
#: the released ranker's inputs: listwise head over the prompt and candidate features, mean log-prob, vote share
#: and centrality (what `benchmarks/quality.py` chose on validation)
BASE = {"head": "listwise", "use_mean_log_prob": True, "use_vote_share": True, "use_centrality": True}
#: each setting changes one thing of BASE: one input removed, the other head, the other group size or loss
SETTINGS: dict[str, dict] = {
    "listwise + log-prob + vote share + centrality (groups of 8)": BASE,
    "... without log-prob": {**BASE, "use_mean_log_prob": False},
    "... without vote share": {**BASE, "use_vote_share": False},
    "... without centrality": {**BASE, "use_centrality": False},
    "... without the prompt feature": {**BASE, "use_prompt_feature": False},
    "... pointwise head": {**BASE, "head": "pointwise"},
    "... all 16 candidates per group": {**BASE, "group_size": 0},
    "... marginal loss": {**BASE, "loss": "marginal"},
}
TEMPERATURES = (0.5, 1.0, 2.0)
#: the rows of the answer-structure table, as `answer_structure` names them
STRUCTURE = (
    "no correct candidate",
    "correct answer is (one of) the most common",
    "correct answer held by 2+ candidates, others more common",
    "correct answer held by one candidate, others more common",
)


def answer_structure(dataset: Dataset) -> Counter:
    """Per prompt: where the correct answer sits among the parsed answers of its candidates."""
    counts: Counter = Counter()
    for row in dataset.with_format(None).select_columns(["labels", "answers"]):
        correct = [answer for label, answer in zip(row["labels"], row["answers"]) if label >= CORRECT_THRESHOLD]
        if not correct:
            counts[STRUCTURE[0]] += 1
            continue
        votes = Counter(answer for answer in row["answers"] if answer is not None)
        held = votes[correct[0]] if correct[0] is not None else len(correct)
        if held >= max(votes.values(), default=0):
            counts[STRUCTURE[1]] += 1
        elif held == 1:
            counts[STRUCTURE[3]] += 1
        else:
            counts[STRUCTURE[2]] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/quality/arithmetic")
    parser.add_argument("--layers", default="18,24", help="comma-separated feature layers")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--task", default="arithmetic", help="names the results folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    layers = [int(value) for value in args.layers.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    candidates = Path(args.work_dir) / "candidates"
    train, validation = (load_from_disk(str(candidates / split / "dataset")) for split in ("train", "validation"))
    n = num_candidates(validation)

    columns = ["argmax", *(f"weighted vote T={t}" for t in TEMPERATURES), "seed ensemble, weighted vote T=1"]
    lines = [
        f"# {args.task}: validation-only ablation of the weighted-vote ranker",
        "",
        f"`{' '.join(['python benchmarks/ablation.py', *sys.argv[1:]])}`",
        "",
        f"Trained on train ({len(train)} prompts x {num_candidates(train)}), scored on validation ({len(validation)} "
        f"prompts, N={n}); means over seeds {seeds}. Majority vote "
        f"{selection_accuracy(validation, majority_vote_choices(validation, n)):.3f}, oracle "
        f"{selection_accuracy(validation, oracle_choices(validation, n)):.3f}.",
        "",
        f"| setting | layer | {' | '.join(columns)} |",
        f"|---|---:|{'---:|' * len(columns)}",
    ]
    summary = {}
    for name, options in SETTINGS.items():
        for layer in layers:
            runs, scores = [], []
            for seed in seeds:
                scorer = RankerScorer(feature_layer=layer, seed=seed, report_to="none", disable_tqdm=True, **options)
                values = np.stack(scorer.fit(train).score(validation, n))
                scores.append(values)
                runs.append(
                    [selection_accuracy(validation, choices_from_scores(values))]
                    + [
                        selection_accuracy(validation, weighted_vote_from_scores(validation, values / t))
                        for t in TEMPERATURES
                    ]
                )
            ensemble = selection_accuracy(validation, weighted_vote_from_scores(validation, np.mean(scores, 0)))
            row = [*np.mean(runs, 0), ensemble]
            summary[f"{name} | layer {layer}"] = [round(float(value), 4) for value in row]
            lines.append(f"| {name} | {layer} | {' | '.join(f'{value:.3f}' for value in row)} |")
            print(lines[-1], flush=True)

    lines += [
        "",
        "Where the correct answer sits (prompts per split; the test row only describes, nothing above used it):",
        "",
        f"| split | {' | '.join(STRUCTURE)} |",
        f"|---|{'---:|' * len(STRUCTURE)}",
    ]
    for split in ("train", "validation", "test"):
        path = candidates / split / "dataset"
        if path.exists():
            counts = answer_structure(load_from_disk(str(path)))
            lines.append(f"| {split} | {' | '.join(str(counts[key]) for key in STRUCTURE)} |")
    target = RESULTS / args.task
    target.mkdir(parents=True, exist_ok=True)
    (target / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-5:]))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
