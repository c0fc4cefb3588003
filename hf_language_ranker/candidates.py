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
* `GENERATION` (str): the sampling settings as JSON.

The dataset's ``info.description`` holds a JSON `CollectionInfo` (model fingerprint, layers, settings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Dataset, List, concatenate_datasets

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


def candidate_feature_column(layer: int) -> str:
    return f"{CANDIDATE_FEATURES}.{layer}"


def feature_layers(dataset: Dataset) -> list[int]:
    """The layers whose features a candidate dataset holds."""
    prefix = f"{CANDIDATE_FEATURES}."
    return sorted(int(name[len(prefix) :]) for name in dataset.column_names if name.startswith(prefix))


def check_feature_layer(dataset: Dataset, layer: int) -> None:
    """Raise a clear error if ``layer`` was not collected."""
    layers = feature_layers(dataset)
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


def layer_features(dataset: Dataset, layer: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt features ``[P, H]`` and the first ``n`` candidates' features ``[P, n, H]`` of ``layer``, float32."""
    check_feature_layer(dataset, layer)
    columns = [prompt_feature_column(layer), candidate_feature_column(layer)]
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


def load_collection(path: str | Path) -> Dataset:
    """A candidate dataset from a ``save_to_disk`` folder, or from `collect`'s output folder (its ``dataset/``)."""
    import datasets

    path = Path(path)
    return datasets.load_from_disk(str(path / "dataset" if (path / "dataset").is_dir() else path))
