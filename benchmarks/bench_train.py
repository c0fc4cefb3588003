"""Benchmark: train a Language Ranker on the CPU with the library's default `RankerTrainingArguments`.

Synthetic collection of 1,000 prompts x 32 candidates with hidden size 4096 (float16, the layout of
`hf_language_ranker.candidates`), where correct candidates are shifted along a fixed direction plus the
direction of their prompt's feature. 900 prompts train the ranker, 100 held-out prompts evaluate it.
Only ranker construction + `Trainer.train()` is timed (target: <= 15 s on 2 CPU cores), not data generation.

    PYTHONPATH=. python benchmarks/bench_train.py [--threads 1]

The benchmark runs torch on one thread (``--threads 0`` keeps torch's default): for a model this small a
second thread gains little on an idle machine (about 10%), while two spinning OpenMP threads slow training
down by an order of magnitude when other processes compete for the two cores.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset, DatasetInfo

from hf_language_ranker import RankerTrainer, RankerTrainingArguments
from hf_language_ranker.candidates import CollectionInfo, candidate_feature_column, prompt_feature_column

LAYER = 19  # ~60% of a 32-layer, 4096-wide model


def synthetic_collection(prompts: int, candidates: int, hidden_size: int, seed: int = 0) -> Dataset:
    """A candidate dataset whose labels are learnable from the features; per-prompt difficulty varies."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(hidden_size).astype(np.float32)
    direction /= np.linalg.norm(direction)
    prompt_features = rng.standard_normal((prompts, hidden_size), dtype=np.float32)
    prompt_directions = prompt_features / np.linalg.norm(prompt_features, axis=1, keepdims=True)
    solve_rate = rng.beta(1.0, 1.5, size=(prompts, 1))
    labels = (rng.random((prompts, candidates)) < solve_rate).astype(np.float32)
    candidate_features = np.empty((prompts, candidates, hidden_size), dtype=np.float16)
    for start in range(0, prompts, 100):  # chunks keep the float32 peak small
        rows = slice(start, start + 100)
        shift = (2 * labels[rows, :, None] - 1) * (1.5 * direction + prompt_directions[rows, None, :])
        noise = rng.standard_normal(shift.shape[:2] + (hidden_size,), dtype=np.float32)
        candidate_features[rows] = noise + shift
    info = CollectionInfo(
        model="synthetic/llm-4096",
        model_type="llama",
        hidden_size=hidden_size,
        num_hidden_layers=32,
        layers=[LAYER],
        num_candidates=candidates,
        verifier="synthetic",
    )
    return Dataset.from_dict(
        {
            prompt_feature_column(LAYER): prompt_features.astype(np.float16),
            candidate_feature_column(LAYER): candidate_features,
            "labels": labels,
        },
        info=DatasetInfo(description=info.to_json()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=4096)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)

    start = time.perf_counter()
    dataset = synthetic_collection(options.prompts, options.candidates, options.hidden_size)
    split = dataset.train_test_split(test_size=options.held_out, shuffle=False)
    generation_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as output_dir:
        args = RankerTrainingArguments(output_dir=output_dir, disable_tqdm=True)  # library defaults otherwise
        start = time.perf_counter()
        trainer = RankerTrainer(args=args, train_dataset=split["train"], eval_dataset=split["test"])
        trainer.train()
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = trainer.evaluate()
        eval_seconds = time.perf_counter() - start

    held_out_labels = np.asarray(split["test"].with_format("numpy")["labels"])
    result = {
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "data_generation_seconds": round(generation_seconds, 2),
        "prompts": options.prompts,
        "train_prompts": len(split["train"]),
        "held_out_prompts": len(split["test"]),
        "candidates": options.candidates,
        "hidden_size": options.hidden_size,
        "parameters": trainer.ranker.num_parameters,
        "epochs": args.num_train_epochs,
        "batch_size": args.per_device_train_batch_size,
        "group_size": args.group_size,
        "loss": args.loss,
        "torch_threads": torch.get_num_threads(),
        "top1_accuracy": round(metrics["eval_top1_accuracy"], 4),
        "random_pick_accuracy": round(float((held_out_labels >= 0.5).mean()), 4),
        "first_sample_accuracy": round(metrics["eval_first_sample_accuracy"], 4),
        "oracle_accuracy": round(metrics["eval_oracle_accuracy"], 4),
    }
    width = max(map(len, result))
    print("\nLanguage Ranker training benchmark (CPU)")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
