"""Collections on disk: the compact Parquet file (`save_collection`) reads back bit for bit, `load_collection` also
reads ``save_to_disk`` folders, and the committed benchmark collections load with their `CollectionInfo`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_evaluation import NOISE_LAYER, SIGNAL_LAYER, synthetic_dataset

from hf_language_ranker.candidates import (
    COLLECTION_FILE,
    CollectionInfo,
    _same_bits,
    candidate_feature_column,
    load_collection,
    prompt_feature_column,
    save_collection,
)

MIXTURE = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "mixture"
SPLITS = sorted(path.parent.relative_to(MIXTURE) for path in MIXTURE.glob(f"*/*/{COLLECTION_FILE}"))
COLUMNS = [
    "prompt_id",
    "prompt",
    "prompt_text",
    "candidates",
    "lengths",
    "labels",
    "answers",
    "mean_log_probs",
    "self_certainty",
    "prompt_features.12",
    "candidate_features.12",
    "generation",
]


def collection_info(layers: list[int]) -> CollectionInfo:
    return CollectionInfo("m", "llama", 16, 4, layers, 8, "math", {"temperature": 0.8}, model_dtype="bfloat16")


def awkward_collection():
    """A synthetic collection whose float16 features hold the values a lossy or NaN-blind copy would get wrong
    (signed zeros, NaN, infinities, subnormals, the largest half), rows reordered by an indices mapping."""
    dataset = synthetic_dataset(12, n=4, seed=3)
    column = candidate_feature_column(SIGNAL_LAYER)
    specials = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 6e-8, -6e-8, 65504.0], dtype=np.float16)

    def plant(row, index):
        features = np.asarray(row[column], dtype=np.float16)
        features[index % 4, : len(specials)] = specials
        return {column: features}

    dataset = dataset.map(plant, with_indices=True, features=dataset.features)
    dataset.info.description = collection_info(sorted([NOISE_LAYER, SIGNAL_LAYER])).to_json()
    return dataset.shuffle(seed=0)


def storage_bits(dataset, column: str) -> np.ndarray:
    """A column's leaf values as stored, floats as their bit patterns."""
    values = dataset.with_format("arrow")[:][column].combine_chunks()
    if isinstance(values.type, pa.ExtensionType):
        values = values.storage
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    values = values.to_numpy(zero_copy_only=False)
    return values.view(f"u{values.dtype.itemsize}") if values.dtype.kind == "f" else values


def test_the_compact_file_reads_back_bit_for_bit(tmp_path):
    dataset = awkward_collection()
    written = save_collection(dataset, tmp_path / "split")
    assert written == tmp_path / "split" / COLLECTION_FILE
    loaded = load_collection(tmp_path / "split")
    assert loaded.column_names == dataset.column_names
    assert loaded.features == dataset.features
    assert loaded.info.description == dataset.info.description
    assert CollectionInfo.from_dataset(loaded) == CollectionInfo.from_dataset(dataset)
    for column in dataset.column_names:
        expected, got = storage_bits(dataset, column), storage_bits(loaded, column)
        assert expected.dtype == got.dtype and np.array_equal(expected, got), column
    features = np.asarray(loaded.with_format("numpy")[prompt_feature_column(SIGNAL_LAYER)])
    assert features.shape == (12, 16)
    assert loaded[0]["answers"] == dataset[0]["answers"]  # None answers stay None
    assert load_collection(written)[0]["prompt"] == dataset[0]["prompt"]  # the file itself, in shuffled order


def test_a_copy_that_changes_a_bit_is_caught():
    zeros = pa.chunked_array([pa.array([[0.0, 1.0]], type=pa.list_(pa.float16(), 2))])
    negative_zeros = pa.chunked_array([pa.array([[-0.0, 1.0]], type=pa.list_(pa.float16(), 2))])
    nans = pa.chunked_array([pa.array([float("nan")], type=pa.float32())])
    assert zeros.equals(negative_zeros)  # what Arrow's own equality would let through
    assert not _same_bits(zeros, negative_zeros)
    assert _same_bits(nans, nans)


def test_save_to_disk_folders_and_collect_outputs_still_load(tmp_path):
    dataset = synthetic_dataset(6, n=4)
    dataset.info.description = collection_info([SIGNAL_LAYER]).to_json()
    dataset.save_to_disk(str(tmp_path / "run" / "dataset"))  # the layout `collect --output-dir run` writes
    for path in (tmp_path / "run", tmp_path / "run" / "dataset"):
        loaded = load_collection(path)
        assert loaded.features == dataset.features and loaded.info.description == dataset.info.description
        assert loaded["prompt"] == dataset["prompt"]
    save_collection(dataset, tmp_path / "run")
    with pytest.raises(ValueError, match="holds both"):
        load_collection(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="No candidate collection"):
        load_collection(tmp_path / "missing")


def test_a_parquet_file_from_elsewhere_is_refused_clearly(tmp_path):
    pq.write_table(pa.table({"labels": [[1.0, 0.0]]}), tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="not written by save_collection"):
        load_collection(tmp_path / "bare.parquet")


def test_the_committed_collections_are_compact_files():
    assert len(SPLITS) == 24
    assert not list(MIXTURE.glob("*/*/dataset")), "an old save_to_disk folder is left beside the compact files"
    plan = json.loads((MIXTURE / "plan.json").read_text())
    for task in plan["training"]:
        assert {Path(task, split) for split in ("train", "validation", "test")} <= set(SPLITS)
    for task in plan["held_out"]:
        assert Path(task, "test") in SPLITS


@pytest.mark.parametrize(
    ("split", "prompts", "candidates", "dtype"),
    [
        ("gcd/test", 200, 16, "bfloat16"),
        ("arithmetic/train", 200, 8, "bfloat16"),
        ("pick_number/validation", 64, 16, "float32"),
    ],
)
def test_a_committed_split_loads_with_its_columns_and_collection_info(split, prompts, candidates, dtype):
    dataset = load_collection(MIXTURE / split)
    assert dataset.column_names == COLUMNS
    assert len(dataset) == prompts
    assert dataset.features["candidate_features.12"].shape == (candidates, 576)
    assert dataset.features["candidate_features.12"].dtype == "float16"
    info = CollectionInfo.from_dataset(dataset)
    assert info.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.layers == [12] and info.hidden_size == 576 and info.model_dtype == dtype
