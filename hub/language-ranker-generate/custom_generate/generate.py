"""Language Ranker best-of-N decoding as a Hub `custom_generate` function (arXiv 2510.21883).

Load with ``model.generate(**inputs, custom_generate=<this repo>, trust_remote_code=True, ranker=..., ...)``;
see the README. The sibling modules are hf-language-ranker's own, so this repo runs without installing it.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationMixin, PreTrainedModel

from .generation import RankersArgument, ranked_generate, requested_rankers


def generate(
    model: PreTrainedModel, ranker: RankersArgument | None = None, num_candidates: int | None = None, **kwargs: Any
) -> Any:
    """Sample ``num_candidates`` answers per prompt and return the one the ranker scores best.

    Without a ranker (argument or ``generation_config.ranker``) this is transformers' own `generate`.
    """
    rankers = requested_rankers(model, ranker, num_candidates, kwargs.get("generation_config"))
    if rankers is None:
        return GenerationMixin.generate(model, **{key: value for key, value in kwargs.items() if key != "model"})
    return ranked_generate(model, rankers, num_candidates=num_candidates, **kwargs)
