"""Re-featurize committed collections at several layers, for the oracle-levers benchmark (`oracle_levers.py`).

    python benchmarks/multilayer_features.py --output-dir runs/multilayer \\
        [--tasks addition arithmetic number_sequence lcm linear_equations] [--layers 6 9 12 15 18 21 24]
    python benchmarks/multilayer_features.py --output-dir runs/pooling --layers 6 12 18 24 \\
        --answer-poolings mean first [--pooling-layers 18]       # answer poolings too (`oracle_levers --levers`)

The committed collections (`benchmarks/data/mixture`) keep layer 12 only. This reads each split's candidate texts
again with the embedded SmolLM2-135M-Instruct (no sampling: one forward pass per chunk, through
`featurize_token_candidates`, the path ``collect --candidates`` and `rank_candidates` use) and writes the same split
with the features of every layer in ``--layers`` in place of the committed ones. Labels, parsed answers and the mean
log-probabilities stay those of the committed collection (the sampler's own), so every variant of the benchmark is
compared on the same candidates and the same labels. With ``--answer-poolings`` the same pass also keeps those answer
poolings (`hf_language_ranker.pooling`: the mean of the answer tokens' states, the state at the first answer token)
and writes them at ``--pooling-layers`` (``<pooling>_candidate_features.<k>`` columns, as ``collect --answer-poolings``
writes them). Candidates are given as text: an answer that hit the token
budget (length 64) gets no EOS, every other one does (`layout`'s convention for texts).

The written splits (``<output-dir>/<task>/<split>/dataset.parquet``, `save_collection`) are not committed: the
checkout keeps within its size limit, and this command rebuilds them (about 2-4 minutes a split on 2 CPU cores in
bfloat16). A split already written is skipped, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Array2D, Dataset, Features, List, Value
from tqdm.auto import tqdm

from hf_language_ranker import load_collection, load_model_and_tokenizer
from hf_language_ranker.candidates import (
    CANDIDATE_FEATURES,
    PROMPT_FEATURES,
    CollectionInfo,
    candidate_feature_column,
    prompt_feature_column,
    save_collection,
)
from hf_language_ranker.features import dtype_name
from hf_language_ranker.layout import candidate_token_ids, eos_token_ids, featurize_token_candidates
from hf_language_ranker.pooling import ANSWER_POOLINGS

DATA = Path(__file__).parent / "data" / "mixture"
TASKS = ("addition", "arithmetic", "number_sequence", "lcm", "linear_equations")
SPLITS = ("train", "validation", "test")
LAYERS = (6, 9, 12, 15, 18, 21, 24)
#: the committed collections' generation budget: a candidate this long was cut, not finished
MAX_NEW_TOKENS = 64


def featurize_split(
    model,
    tokenizer,
    source: Path,
    target: Path,
    layers: list[int],
    prompts_per_call: int,
    answer_poolings: list[str],
    pooling_layers: list[int],
) -> float:
    """Write ``source``'s split with the features of ``layers`` and the ``answer_poolings`` at ``pooling_layers``;
    return the seconds it took."""
    dataset = load_collection(source)
    info = CollectionInfo.from_dataset(dataset)
    vocab_size = int(model.config.vocab_size)
    finished = [[length < MAX_NEW_TOKENS for length in row] for row in dataset["lengths"]]
    candidate_ids = candidate_token_ids(
        tokenizer, dataset["candidates"], eos_token_ids(model, tokenizer), vocab_size, finished
    )
    # the committed prompt texts are already chat-formatted: tokenized as they stand
    prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in dataset["prompt_text"]]
    prompt_columns = {layer: [] for layer in layers}
    # the candidate features written, as (pooling, layer); "last" is the last token's
    slots = [("last", layer) for layer in layers]
    slots += [(pooling, layer) for pooling in answer_poolings for layer in pooling_layers]
    candidate_columns = {slot: [] for slot in slots}
    started = time.perf_counter()
    for start in tqdm(range(0, len(dataset), prompts_per_call), desc=f"{source.parent.name}/{source.name}"):
        stop = start + prompts_per_call
        with torch.no_grad():
            features = featurize_token_candidates(
                model,
                prompt_ids[start:stop],
                candidate_ids[start:stop],
                layers,
                answer_poolings=answer_poolings,
                candidate_batch_size=prompts_per_call * len(candidate_ids[start]),
                pad_token_id=tokenizer.pad_token_id,
            )
        for layer in layers:
            prompt_columns[layer].extend(features.prompt_features[layer].float().half().numpy())
        for pooling, layer in slots:
            read = features.candidate_features if pooling == "last" else features.pooled_features[pooling]
            candidate_columns[pooling, layer].extend(read[layer].float().half().numpy())
    seconds = time.perf_counter() - started
    kept = [name for name in dataset.column_names if not name.startswith((PROMPT_FEATURES, CANDIDATE_FEATURES))]
    columns = dataset.select_columns(kept).to_dict()
    features = {name: dataset.features[name] for name in kept}
    num_candidates, hidden_size = candidate_columns["last", layers[0]][0].shape
    for pooling, layer in slots:
        if pooling == "last":
            columns[prompt_feature_column(layer)] = prompt_columns[layer]
            features[prompt_feature_column(layer)] = List(Value("float16"), length=hidden_size)
        columns[candidate_feature_column(layer, pooling)] = candidate_columns[pooling, layer]
        features[candidate_feature_column(layer, pooling)] = Array2D((num_candidates, hidden_size), "float16")
    rebuilt = Dataset.from_dict(columns, features=Features(features))
    info.layers = list(layers)
    info.model_dtype = dtype_name(model.dtype)
    info.generation = {**info.generation, "featurized": f"again on a CPU in {dtype_name(model.dtype)}"}
    rebuilt.info.description = info.to_json()
    save_collection(rebuilt, target)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--layers", nargs="+", type=int, default=list(LAYERS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompts-per-call", type=int, default=8)
    parser.add_argument(
        "--answer-poolings", nargs="+", choices=tuple(ANSWER_POOLINGS), default=[], help="answer poolings to write too"
    )
    parser.add_argument("--pooling-layers", nargs="+", type=int, default=[18], help="the layers they are written at")
    args = parser.parse_args()
    if args.answer_poolings and not set(args.pooling_layers) <= set(args.layers):
        parser.error(f"--pooling-layers {args.pooling_layers} must be among --layers {args.layers}.")
    model, tokenizer = load_model_and_tokenizer("embedded", dtype=args.dtype)
    timings = {}
    for task in args.tasks:
        for split in SPLITS:
            source, target = DATA / task / split, args.output_dir / task / split
            if not source.exists() or (target / "dataset.parquet").exists():
                continue
            seconds = featurize_split(
                model,
                tokenizer,
                source,
                target,
                args.layers,
                args.prompts_per_call,
                args.answer_poolings,
                args.pooling_layers,
            )
            timings[f"{task}/{split}"] = round(seconds, 1)
            print(json.dumps({"split": f"{task}/{split}", "seconds": timings[f"{task}/{split}"]}), flush=True)


if __name__ == "__main__":
    main()
