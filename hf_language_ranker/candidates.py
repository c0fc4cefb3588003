"""The candidate dataset's schema (one row per prompt), owned here: every column name, `CollectionInfo`, and the
helpers that read columns. Collection writes this layout; training, selection and the scorers read it.

Columns:

* `PROMPT_ID` (int), `PROMPT` (str): the prompt as given, `PROMPT_TEXT` (str): as fed to the model;
* `CANDIDATES` (list[str]): the decoded candidates; `LENGTHS` (list[int]): generated tokens each;
* `LABELS` (list[float]): verifier verdicts in ``[0, 1]``; `ANSWERS` (list[str | None]): parsed answers
  for majority vote (``None`` where answers do not compare);
* `MEAN_LOG_PROBS`, `SELF_CERTAINTY` (list[float]): per-candidate token statistics (baselines);
* ``prompt_features.<k>`` (``[H]``) and ``candidate_features.<k>`` (``[N, H]``), float16, for every
  collected layer ``k`` (`prompt_feature_column`, `candidate_feature_column`; the convention of
  `hf_language_ranker.features`);
* only when collected with ``answer_poolings``: ``<pooling>_candidate_features.<k>`` (``[N, H]``, float16), e.g.
  ``mean_candidate_features.18``, each answer pooling of `hf_language_ranker.pooling` at every collected layer
  (`candidate_feature_column` with ``pooling``);
* `GENERATION` (str): the sampling settings as JSON.

The dataset's ``info.description`` holds a JSON `CollectionInfo` (model fingerprint, layers, settings).

On disk a collection is either the ``save_to_disk`` folder `collect` writes (``<output_dir>/dataset/``) or one
compact Parquet file (`save_collection`, ``dataset.parquet``; how the benchmark collections are committed);
`load_collection` reads both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Array2D, Dataset, DatasetInfo, Features, List, concatenate_datasets, load_from_disk
from datasets.table import InMemoryTable, table_cast

from .agreement import answer_id_rows, answer_ids

#: A candidate counts as correct when its label is at least this (labels are verifier scores in [0, 1]).
CORRECT_THRESHOLD = 0.5

PROMPT_ID = "prompt_id"
PROMPT = "prompt"
PROMPT_TEXT = "prompt_text"
CANDIDATES = "candidates"
LENGTHS = "lengths"
LABELS = "labels"
ANSWERS = "answers"
MEAN_LOG_PROBS = "mean_log_probs"
SELF_CERTAINTY = "self_certainty"
GENERATION = "generation"
#: integer answer ids derived from ``answers`` for training (see `hf_language_ranker.agreement.answer_ids`)
ANSWER_IDS = "answer_ids"
PROMPT_FEATURES = "prompt_features"
CANDIDATE_FEATURES = "candidate_features"


def prompt_feature_column(layer: int) -> str:
    return f"{PROMPT_FEATURES}.{layer}"


def candidate_feature_column(layer: int, pooling: str = "last") -> str:
    """The column of the candidates' features at ``layer``: their last token's, or an answer pooling's."""
    return f"{CANDIDATE_FEATURES}.{layer}" if pooling == "last" else f"{pooling}_{CANDIDATE_FEATURES}.{layer}"


def feature_layers(dataset: Dataset, pooling: str = "last") -> list[int]:
    """The layers whose features (the last token's, or those of an answer ``pooling``) a candidate dataset holds."""
    prefix = candidate_feature_column(0, pooling).removesuffix("0")
    return sorted(int(name[len(prefix) :]) for name in dataset.column_names if name.startswith(prefix))


def check_feature_layer(dataset: Dataset, layer: int, pooling: str = "last") -> None:
    """Raise a clear error if ``layer`` (with an answer ``pooling``: its pooled features there) was not collected."""
    layers = feature_layers(dataset, pooling)
    if layer not in layers and pooling != "last":
        raise ValueError(
            f"The candidate dataset has no {pooling!r} answer-pooling features for layer {layer} (column "
            f"{candidate_feature_column(layer, pooling)!r}); it holds them for layers {layers}. Collect again with "
            f"answer_poolings=[{pooling!r}] and that layer, or train without that pooling."
        )
    if layer not in layers:
        raise ValueError(
            f"The candidate dataset has no features for layer {layer}; it holds layers {layers}. "
            "Train on one of those, or collect again with that layer in `layers=`."
        )


# ------------------------------------------------------------------------------------------------- data access
def num_candidates(dataset: Dataset) -> int:
    """The number of candidates every prompt of ``dataset`` has (the smallest count if they differ)."""
    if LABELS not in dataset.column_names:
        raise ValueError(
            f"Not a candidate dataset: no {LABELS!r} column (columns: {dataset.column_names}). "
            "See hf_language_ranker.candidates for the layout."
        )
    if len(dataset) == 0:
        raise ValueError("The candidate dataset is empty.")
    return min(len(labels) for labels in dataset.with_format(None)[LABELS])


def check_num_candidates(dataset: Dataset, n: int) -> None:
    """Raise a clear error unless every prompt has at least ``n >= 1`` candidates."""
    available = num_candidates(dataset)
    if not 1 <= n <= available:
        raise ValueError(f"Cannot select among the first {n} candidates: the dataset has {available} per prompt.")


def _first_n(values: Any, n: int) -> np.ndarray:
    """``[P, n, ...]`` float32 array of the first ``n`` entries of each row of a numpy-formatted column."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values[:, :n].astype(np.float32)
    return np.stack([np.asarray(row, dtype=np.float32)[:n] for row in values])


def per_candidate_values(dataset: Dataset, column: str, n: int) -> np.ndarray:
    """A per-candidate column (``labels``, ``mean_log_probs``, ...) for the first ``n`` candidates: ``[P, n]``."""
    if column not in dataset.column_names:
        raise ValueError(f"The candidate dataset has no {column!r} column (columns: {dataset.column_names}).")
    return _first_n(dataset.with_format("numpy", columns=[column])[:][column], n)


def correct_candidates(dataset: Dataset, n: int) -> np.ndarray:
    """``[P, n]`` booleans: which of the first ``n`` candidates are correct (label >= `CORRECT_THRESHOLD`)."""
    return per_candidate_values(dataset, LABELS, n) >= CORRECT_THRESHOLD


def layer_features(dataset: Dataset, layer: int, n: int, pooling: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """Prompt features ``[P, H]`` and the first ``n`` candidates' features ``[P, n, H]`` of ``layer``, float32: the
    candidates' last token's, or those of an answer ``pooling``."""
    check_feature_layer(dataset, layer, pooling)
    columns = [prompt_feature_column(layer), candidate_feature_column(layer, pooling)]
    values = dataset.with_format("numpy", columns=columns)[:]
    prompts = np.asarray(values[columns[0]], dtype=np.float32)
    return prompts, _first_n(values[columns[1]], n)


def parsed_answers(dataset: Dataset) -> list[list[str | None]]:
    """The ``answers`` column (one list per prompt), with a clear error when the dataset has none."""
    if ANSWERS not in dataset.column_names:
        raise ValueError(
            f"The candidate dataset has no {ANSWERS!r} column (columns: {dataset.column_names}); agreement inputs "
            "need each candidate's parsed answer. Collect with a verifier that parses answers (e.g. 'math')."
        )
    return [list(row) for row in dataset.with_format(None)[ANSWERS]]


def dataset_answer_ids(dataset: Dataset, n: int) -> torch.Tensor:
    """``[P, n]`` answer ids of the first ``n`` candidates of each prompt (see `agreement.answer_ids`)."""
    return answer_ids([row[:n] for row in parsed_answers(dataset)])


def dataset_answer_id_rows(dataset: Dataset) -> list[list[int]]:
    """Answer ids of all candidates of each prompt (prompts may hold different numbers of candidates)."""
    return answer_id_rows(parsed_answers(dataset))


def fixed_candidate_count(dataset: Dataset) -> int | None:
    """The number of candidates every prompt holds when the schema fixes it (a collection does), else ``None``."""
    feature = dataset.features.get(LABELS)
    return feature.length if isinstance(feature, List) and feature.length > 0 else None


def first_candidates(dataset: Dataset, n: int) -> Dataset:
    """``dataset`` with only the first ``n`` candidates of each prompt in every per-candidate column."""
    count = fixed_candidate_count(dataset)
    if count is None or n == count:
        return dataset
    if not 1 <= n <= count:
        raise ValueError(f"Cannot keep the first {n} candidates: the dataset holds {count} per prompt.")
    features, sliced = dataset.features.copy(), []
    for name, feature in dataset.features.items():
        if isinstance(feature, List) and feature.length == count:
            features[name] = List(feature.feature, length=n)
        elif isinstance(feature, Array2D) and feature.shape[0] == count:
            features[name] = Array2D((n, *feature.shape[1:]), feature.dtype)
        else:
            continue
        sliced.append(name)
    return dataset.map(
        lambda batch: {name: [row[:n] for row in batch[name]] for name in sliced}, batched=True, features=features
    )


def pool_datasets(datasets: list[Dataset]) -> Dataset:
    """Candidate datasets concatenated by prompt, each cut to the smallest fixed candidate count among them; the
    result keeps the first dataset's `CollectionInfo` (model fingerprint, verifier)."""
    counts = [fixed_candidate_count(dataset) for dataset in datasets]
    if None not in counts and len(set(counts)) > 1:
        datasets = [first_candidates(dataset, min(counts)) for dataset in datasets]
    pooled = concatenate_datasets(datasets)
    pooled.info.description = datasets[0].info.description
    return pooled


@dataclass
class CollectionInfo:
    """What a candidate dataset was made from, stored with it."""

    model: str | None
    model_type: str | None
    hidden_size: int
    num_hidden_layers: int
    layers: list[int]
    num_candidates: int
    verifier: str
    generation: dict[str, Any] = field(default_factory=dict)
    #: the dtype the model computed the features in ("bfloat16"; they are stored as float16 either way)
    model_dtype: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> CollectionInfo | None:
        """The info stored with ``dataset``, or ``None`` for a dataset made elsewhere."""
        try:
            return cls(**json.loads(dataset.info.description or ""))
        except (json.JSONDecodeError, TypeError):
            return None


# ------------------------------------------------------------------------------------------------- files
#: the file `save_collection` writes in a collection folder (one per split under benchmarks/data)
COLLECTION_FILE = "dataset.parquet"
#: the Parquet key-value metadata key datasets reads features from; the description is kept beside them
_PARQUET_METADATA_KEY = b"huggingface"


def load_collection(path: str | Path) -> Dataset:
    """A candidate dataset from disk, as `save_collection` or ``save_to_disk`` wrote it.

    ``path`` may be a compact file (``dataset.parquet``), a folder holding one (a committed split such as
    ``benchmarks/data/mixture/gcd/test``), a ``save_to_disk`` folder, or `collect`'s output folder (its ``dataset/``
    is read). Columns, feature types, values and ``info.description`` (the `CollectionInfo`) are those written;
    a Parquet collection is read into memory.
    """
    from .shards import DATASET_DIR

    path = Path(path)
    if path.is_dir():
        compact, saved = path / COLLECTION_FILE, path / DATASET_DIR
        if compact.is_file() and saved.is_dir():
            raise ValueError(f"{path} holds both {COLLECTION_FILE} and {DATASET_DIR}/: remove the one not meant.")
        if compact.is_file():
            path = compact
        elif saved.is_dir():
            path = saved
    if path.is_file() and path.suffix == ".parquet":
        table = pq.read_table(path)
        metadata = json.loads((table.schema.metadata or {}).get(_PARQUET_METADATA_KEY, b"{}"))
        info = metadata.get("info", {})
        if "features" not in info:
            raise ValueError(f"{path} was not written by save_collection: its metadata holds no datasets features.")
        features = Features.from_dict(info["features"])
        table = table_cast(table.replace_schema_metadata(None), features.arrow_schema)
        info = DatasetInfo(description=info.get("description", ""), features=features)
        return Dataset(InMemoryTable(table), info=info)
    if not path.is_dir():
        raise FileNotFoundError(
            f"No candidate collection at {path}: pass a {COLLECTION_FILE} file, a save_to_disk folder, or the "
            "--output-dir of `collect`."
        )
    return load_from_disk(str(path))


def save_collection(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as one compact, lossless Parquet file (``path``, or ``path/dataset.parquet`` for a folder)
    that `load_collection` reads back bit for bit, ``info.description`` included.

    Brotli (level 11) over one page per column; float columns (the float16 features above all) are written
    byte-stream-split, so a value's sign-and-exponent bytes, which repeat, compress apart from its mantissa bytes,
    which barely do: about 0.53x of the ``save_to_disk`` size on the benchmark collections, against 0.65x for plain
    zstd Parquet. Otherwise plain Parquet with datasets' own schema metadata: ``datasets.Dataset.from_parquet``
    reads the columns and feature types, only `load_collection` the description. Reading needs pyarrow >= 16.
    The file is read back after writing and compared bit for bit (an error if anything differs).
    """
    path = Path(path)
    if path.suffix != ".parquet":
        path = path / COLLECTION_FILE
    table = dataset.with_format("arrow")[:]  # the rows in the dataset's order (select / shuffle applied)
    split, dictionary = [], []
    for column in table.schema:
        leaf, value_type = column.name, _storage_type(column.type)
        while pa.types.is_list(value_type) or pa.types.is_fixed_size_list(value_type):
            leaf, value_type = f"{leaf}.list.element", value_type.value_type
        (split if pa.types.is_floating(value_type) else dictionary).append(leaf)
    metadata = {"info": {"description": dataset.info.description or "", "features": dataset.features.to_dict()}}
    table = table.replace_schema_metadata({_PARQUET_METADATA_KEY: json.dumps(metadata).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        compression="brotli",
        compression_level=11,
        use_byte_stream_split=split,
        use_dictionary=dictionary,
        data_page_size=1 << 30,  # one page per column: the codec sees the whole column
        row_group_size=max(len(table), 1),
    )
    written = pq.read_table(path)
    if [_storage_type(column.type) for column in written.schema] != [
        _storage_type(column.type) for column in table.schema
    ] or not all(_same_bits(ours, theirs) for ours, theirs in zip(table.columns, written.columns)):
        raise RuntimeError(f"{path} does not read back bit for bit; nothing should be committed from it.")
    return path


def _same_bits(ours: pa.ChunkedArray, theirs: pa.ChunkedArray) -> bool:
    """Two columns hold the same values, floats compared bit for bit (Arrow's own equality has -0.0 == 0.0 and
    NaN != NaN): float leaves are viewed as unsigned integers of their width."""

    def as_bits(value_type: pa.DataType) -> pa.DataType:
        if pa.types.is_fixed_size_list(value_type):
            return pa.list_(as_bits(value_type.value_type), value_type.list_size)
        if pa.types.is_list(value_type):
            return pa.list_(as_bits(value_type.value_type))
        if pa.types.is_floating(value_type):
            return pa.from_numpy_dtype(np.dtype(f"u{value_type.byte_width}"))
        return value_type

    ours, theirs = (_storage(column.combine_chunks()) for column in (ours, theirs))
    bits = as_bits(ours.type)
    return ours.view(bits).equals(theirs.view(bits))


def _storage_type(value_type: pa.DataType) -> pa.DataType:
    """The Arrow type a column is stored as (datasets' `Array2D` is an extension type over nested lists)."""
    return value_type.storage_type if isinstance(value_type, pa.ExtensionType) else value_type


def _storage(array: pa.Array) -> pa.Array:
    return array.storage if isinstance(array.type, pa.ExtensionType) else array
