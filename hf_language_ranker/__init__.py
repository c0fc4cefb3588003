"""hf-language-ranker: best-of-N decoding for transformers with Language Ranker (arXiv 2510.21883)."""

from __future__ import annotations

import importlib
from typing import Any

from .configuration import RankerConfig
from .features import featurize_candidates
from .generation import RankedGenerateOutput, RankedGenerationMixin, attach_ranker
from .model_card import RankerModelCardData
from .modeling import LanguageRanker, RankerOutput
from .sampling import SampledCandidates, sample_candidates

__version__ = "0.1.0"

# heavier entry points (transformers.Trainer, datasets, matplotlib) load on first use
_LAZY = {
    "collect_candidates": "collection",
    "load_collection": "candidates",
    "rank_candidates": "ranking",
    "RankedCandidatesOutput": "ranking",
    "featurize_token_candidates": "layout",
    "rank_candidates_file": "rank_job",
    "RankerTrainer": "training",
    "RankerTrainingArguments": "training_args",
    "train_ranker": "training",
    "evaluate": "evaluation",
    "EvaluationResult": "evaluation",
    "select_ranker": "evaluation",
    "load_model_and_tokenizer": "embedded",
}

__all__ = [
    "LanguageRanker",
    "RankedGenerateOutput",
    "RankedGenerationMixin",
    "RankerConfig",
    "RankerModelCardData",
    "RankerOutput",
    "SampledCandidates",
    "attach_ranker",
    "featurize_candidates",
    "sample_candidates",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
