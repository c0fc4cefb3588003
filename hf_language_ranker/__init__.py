"""hf-language-ranker: best-of-N decoding for transformers with Language Ranker (arXiv 2510.21883)."""

from .configuration import RankerConfig
from .features import featurize_candidates
from .generation import (
    RankedGenerateOutput,
    RankedGenerationMixin,
    SampledCandidates,
    attach_ranker,
    sample_candidates,
)
from .modeling import LanguageRanker, RankerOutput

__version__ = "0.1.0"

__all__ = [
    "LanguageRanker",
    "RankedGenerateOutput",
    "RankedGenerationMixin",
    "RankerConfig",
    "RankerOutput",
    "SampledCandidates",
    "attach_ranker",
    "featurize_candidates",
    "sample_candidates",
]
