"""Serving in another dtype than a ranker was trained on: how much do its picks and accuracy move?

    python benchmarks/dtype_drift.py [--data benchmarks/data/mixture] [--dtype float32] [--prompts 100]

The collections under ``--data`` were sampled in bfloat16 (on a GPU), and the shipped rankers were trained on such
features. This re-reads the features of the same candidates with `rank_candidates` on this machine, in ``--dtype``,
and compares them with the collected ones: the cosine of the two feature vectors, the share of prompts where the
ranker picks the same candidate, and the accuracy of both picks. Candidates are re-tokenized from their text (the
collection kept texts, not ids); the share whose token count matches the collected one is printed, since a text
that re-tokenizes differently is read at another token. Writes ``benchmarks/results/dtype/<dtype>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_results

from hf_language_ranker import LanguageRanker, load_collection, load_model_and_tokenizer, rank_candidates
from hf_language_ranker.candidates import candidate_feature_column, feature_layers
from hf_language_ranker.evaluation import SELECTION_RULES, RankerScorer, chosen_correct

ROOT = Path(__file__).resolve().parents[1]
RANKERS = {
    "smollm2-135m-instruct-arithmetic": ["arithmetic"],
    "smollm2-135m-instruct-mixture": ["arithmetic", "gcd"],
}
N = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "data" / "mixture"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompts", type=int, default=25, help="test prompts per task")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(dtype=getattr(torch, args.dtype))
    max_new_tokens = json.loads((Path(args.data) / "plan.json").read_text())["settings"]["sampling"]["max_new_tokens"]
    rows, report = [], {}
    for name, tasks in RANKERS.items():
        ranker = LanguageRanker.from_pretrained(ROOT / "model_cards" / name)
        layer, rule = ranker.config.feature_layer, ranker.config.selection
        for task in tasks:
            test = load_collection(Path(args.data) / task / "test")
            if layer not in feature_layers(test):
                print(f"skipped {name} on {task}: the data holds no layer {layer}")
                continue
            test = test.select(range(min(args.prompts, len(test))))
            lengths = np.asarray(test["lengths"])
            served = rank_candidates(
                model,
                tokenizer,
                test["prompt"],
                test["candidates"],
                ranker,
                append_eos=(lengths < max_new_tokens).tolist(),
                candidate_batch_size=32,
                return_features=True,
            )
            collected_choice = SELECTION_RULES[rule](test, RankerScorer.from_trained(ranker).score(test, N))
            served_choice = served.best_indices.numpy()
            stored = np.asarray(test.with_format("numpy")[candidate_feature_column(layer)], dtype=np.float32)
            read = served.features.candidate_features[layer].float().numpy()
            cosine = (stored * read).sum(-1) / (np.linalg.norm(stored, axis=-1) * np.linalg.norm(read, axis=-1))
            same_tokens = served.features.lengths.numpy() == lengths
            entry = {
                "prompts": len(test),
                "same_token_count": float(same_tokens.mean()),
                "feature_cosine_mean": float(cosine.mean()),
                "feature_cosine_min": float(cosine.min()),
                "feature_cosine_same_tokens": float(cosine[same_tokens].mean()),
                "same_pick": float((served_choice == collected_choice).mean()),
                "accuracy_collected_bf16": float(chosen_correct(test, collected_choice).mean()),
                f"accuracy_served_{args.dtype}": float(chosen_correct(test, served_choice).mean()),
            }
            report[f"{name} on {task}"] = entry
            rows.append(
                f"| {name} | {task} ({len(test)}) | {entry['same_token_count']:.3f} | "
                f"{entry['feature_cosine_same_tokens']:.4f} | {entry['same_pick']:.3f} | "
                f"{entry['accuracy_collected_bf16']:.3f} | {entry[f'accuracy_served_{args.dtype}']:.3f} |"
            )
            print(rows[-1], flush=True)
    markdown = "\n".join(
        [
            f"# Serving in {args.dtype} a ranker trained on bfloat16 features",
            "",
            f"Candidates collected in bfloat16 (H200), re-read with `rank_candidates` here in {args.dtype}; N={N}.",
            "",
            "| ranker | test task (prompts) | same token count | feature cosine (same tokens) | same pick | "
            f"accuracy, bf16 features | accuracy, {args.dtype} features |",
            "|---|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"`python benchmarks/dtype_drift.py {' '.join(sys.argv[1:])}` ({time.perf_counter() - started:.0f} s)",
            "",
        ]
    )
    write_results(ROOT / "benchmarks" / "results" / "dtype", args.dtype, markdown, report)


if __name__ == "__main__":
    main()
