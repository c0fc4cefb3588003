"""Ranked generation, the transformers integration: ``generate(..., ranker=...)`` samples N candidates per
prompt (`sampling`), scores them with the rankers of the call (`ranker_set`) and returns the best.

`RankedGenerationMixin` and `attach_ranker` add the ranking flags to a transformers causal LM's `generate`;
`ranked_generate` is also the Hub ``custom_generate`` entry point.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .agreement import AnswerExtractorLike
from .configuration import DEFAULT_NUM_CANDIDATES, GENERATION_FLAGS
from .ranker_set import RankersArgument, RankerSet
from .sampling import sample_candidates


@dataclass
class RankedGenerateOutput(ModelOutput):
    """Output of `generate(..., ranker=..., return_dict_in_generate=True)`.

    Args:
        sequences: ``[B, T]`` the best candidate of each prompt (prompt columns included).
        candidate_sequences: ``[B, N, T]`` every candidate: the prompt columns as passed (left padding
            included), the generated tokens, then ``pad_token_id`` after the candidate ends.
        candidate_scores: ``[B, N]`` the ranker's score of each candidate.
        best_indices: ``[B]`` index of the chosen candidate.
        ranker_sequences, ranker_scores, ranker_best_indices: with several rankers, the same per ranker
            name (the unnamed fields then hold the first ranker's).
    """

    sequences: torch.LongTensor | None = None
    candidate_sequences: torch.LongTensor | None = None
    candidate_scores: torch.FloatTensor | None = None
    best_indices: torch.LongTensor | None = None
    ranker_sequences: dict[str, torch.LongTensor] | None = None
    ranker_scores: dict[str, torch.FloatTensor] | None = None
    ranker_best_indices: dict[str, torch.LongTensor] | None = None


# ---------------------------------------------------------------------------------- ranked generate
def _ranking_flag(name: str, explicit: Any, generation_config: GenerationConfig | None, model: Any) -> Any:
    if explicit is not None:
        return explicit
    for config in (generation_config, getattr(model, "generation_config", None)):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _check_config_ranker(value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            "GenerationConfig.ranker must be a Hub id or a local path (a JSON string), got "
            f"{type(value).__name__}. Pass ranker objects to generate(ranker=...) instead."
        )


def requested_rankers(
    model: PreTrainedModel,
    ranker: RankersArgument | None,
    num_candidates: int | None,
    generation_config: GenerationConfig | None,
) -> RankersArgument | None:
    """The rankers a `generate` call asks for: the argument, else ``generation_config.ranker``.

    ``None`` means plain transformers generation; ``num_candidates`` without any ranker is an error.
    """
    config_ranker = _ranking_flag("ranker", None, generation_config, model)
    _check_config_ranker(config_ranker)
    ranker = config_ranker if ranker is None else ranker
    if ranker is None and num_candidates is not None:
        raise ValueError(
            "num_candidates was given without a ranker: pass ranker=... (a LanguageRanker, Hub id or "
            "folder), or use num_return_sequences for plain sampling."
        )
    return ranker


def ranked_generate(
    model: PreTrainedModel,
    rankers: RankersArgument,
    *,
    num_candidates: int | None = None,
    ranker_selection: str | None = None,
    answer_extractor: AnswerExtractorLike | None = None,
    inputs: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.LongTensor | RankedGenerateOutput | dict[str, torch.LongTensor]:
    """Sample candidates, score them with every ranker, return the best (see `RankedGenerationMixin`).

    ``kwargs`` are `generate` arguments; ``None`` values (as transformers passes them to a Hub
    ``custom_generate`` function) are ignored.
    """
    kwargs = {key: value for key, value in kwargs.items() if value is not None and key not in GENERATION_FLAGS}
    generation_config = kwargs.get("generation_config")
    num_candidates = _ranking_flag("num_candidates", num_candidates, generation_config, model)
    num_candidates = DEFAULT_NUM_CANDIDATES if num_candidates is None else num_candidates
    selection = _ranking_flag("ranker_selection", ranker_selection, generation_config, model)
    answer_extractor = _ranking_flag("answer_extractor", answer_extractor, generation_config, model)
    return_dict = kwargs.pop("return_dict_in_generate", None)
    if return_dict is None:
        return_dict = getattr(generation_config or model.generation_config, "return_dict_in_generate", False)

    input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
    if input_ids is None:
        raise ValueError("Ranked generation needs prompt token ids: pass input_ids (e.g. **tokenizer(...)).")
    attention_mask = kwargs.pop("attention_mask", None)
    ranking = RankerSet.resolve(model, rankers, selection, answer_extractor, kwargs.get("tokenizer"))
    candidates = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=num_candidates,
        layers=ranking.layers,
        answer_poolings=ranking.answer_poolings,
        track_token_statistics=ranking.reads_log_probs,
        **kwargs,
    )
    texts = candidates.decode(kwargs["tokenizer"]) if ranking.extractors else []
    all_scores, best = ranking.pick(
        candidates.prompt_features,
        candidates.candidate_features,
        texts,
        mean_log_probs=candidates.mean_log_probs,
        pooled_features=candidates.pooled_features,
    )
    batch_index = torch.arange(candidates.sequences.shape[0], device=candidates.sequences.device)
    best_sequences = {name: candidates.sequences[batch_index, index] for name, index in best.items()}
    first = next(iter(ranking.rankers))
    several = len(ranking.rankers) > 1
    if not return_dict:
        return best_sequences if several else best_sequences[first]
    return RankedGenerateOutput(
        sequences=best_sequences[first],
        candidate_sequences=candidates.sequences,
        candidate_scores=all_scores[first],
        best_indices=best[first],
        ranker_sequences=best_sequences if several else None,
        ranker_scores=all_scores if several else None,
        ranker_best_indices=best if several else None,
    )


class RankedGenerationMixin:
    """Adds ``ranker=`` and ``num_candidates=`` to `generate` of a transformers causal LM.

    Use it as ``class RankedLlama(RankedGenerationMixin, LlamaForCausalLM)`` or turn an instance into a
    ranked one with `attach_ranker`. Without a ranker (argument or ``generation_config.ranker``),
    `generate` is exactly transformers' own.
    """

    def generate(
        self,
        *args: Any,
        ranker: RankersArgument | None = None,
        num_candidates: int | None = None,
        ranker_selection: str | None = None,
        answer_extractor: AnswerExtractorLike | None = None,
        **kwargs: Any,
    ) -> Any:
        """`generate` with best-of-N ranking.

        Args:
            ranker: a `LanguageRanker`, a Hub id or local folder, or a dict/list of them (features are
                computed once and every ranker picks its best). Defaults to ``generation_config.ranker``.
            num_candidates: number of sampled candidates per prompt; defaults to
                ``generation_config.num_candidates``, then 16.
            ranker_selection: ``"argmax"`` returns the best-scored candidate; ``"weighted_vote"`` sums the ranker's
                softmax weights per final answer and returns the best member of the heaviest answer. Defaults to
                ``generation_config.ranker_selection``, then to the ranker's ``config.selection``.
            answer_extractor: reads a candidate's final answer, for vote-share rankers and the weighted vote: a
                callable ``str -> hashable | None`` or a built-in verifier name (``"math"``); defaults to
                ``generation_config.answer_extractor``, then to the one the ranker records. Needs ``tokenizer=``.
            prepack_weights: on a CPU, run the linear layers on weights packed for oneDNN for the call (default
                ``True``: faster, a second copy of those weights in memory meanwhile; see `prepacked_linears`).
            *args, **kwargs: transformers' `generate` arguments (sampling settings, logits processors,
                stopping criteria, ``return_dict_in_generate``, ...).

        Returns:
            The best row per prompt ``[B, T]``, or a `RankedGenerateOutput` with
            ``return_dict_in_generate=True`` (a dict of best rows per ranker name when several rankers).
        """
        bound = inspect.signature(GenerationMixin.generate).bind_partial(self, *args, **kwargs).arguments
        bound.pop("self")
        named = {**bound.pop("kwargs", {}), **bound}
        rankers = requested_rankers(self, ranker, num_candidates, named.get("generation_config"))
        if rankers is None:
            if ranker_selection is not None or answer_extractor is not None:
                raise ValueError("ranker_selection and answer_extractor need a ranker: pass ranker=...")
            return super().generate(*args, **kwargs)
        return ranked_generate(
            self,
            rankers,
            num_candidates=num_candidates,
            ranker_selection=ranker_selection,
            answer_extractor=answer_extractor,
            **named,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Save as the underlying transformers class (``config.architectures`` unchanged), keeping the
        ranking flags of ``generation_config`` in ``generation_config.json``."""
        generation_config = getattr(self, "generation_config", None)
        flags = [getattr(generation_config, flag, None) for flag in GENERATION_FLAGS]
        if generation_config is not None and any(value is not None for value in flags):
            _check_config_ranker(getattr(generation_config, "ranker", None))
            # transformers drops unknown keys of a config marked as derived from the model config on reload
            generation_config._from_model_config = False
        ranked_class = type(self)
        self.__class__ = transformers_class(ranked_class)
        try:
            return self.save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = ranked_class


def transformers_class(cls: type) -> type:
    """The first class of ``cls``'s MRO that is not a ranked class (the model class transformers knows)."""
    for base in cls.__mro__:
        if not issubclass(base, RankedGenerationMixin):
            return base
    raise TypeError(f"{cls.__name__} has no transformers model class among its bases.")


_RANKED_CLASSES: dict[type, type] = {}


def attach_ranker(model: PreTrainedModel) -> PreTrainedModel:
    """Turn a transformers causal LM instance into a ranked one (in place; also returned).

    Its class becomes a subclass of both `RankedGenerationMixin` and the original class, under the original
    class name, so `isinstance` checks, pipelines, saving (``config.architectures`` stays the same) and plain
    `generate` behave as before; ``isinstance(model, RankedGenerationMixin)`` tells a ranked model.
    """
    if isinstance(model, RankedGenerationMixin):
        return model
    if not isinstance(model, PreTrainedModel) or not hasattr(model, "generate"):
        raise TypeError(
            f"attach_ranker needs a transformers causal LM (a PreTrainedModel), got {type(model).__name__}."
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(
            f"{type(model).__name__} is an encoder-decoder model; Language Ranker features are defined for "
            "decoder-only causal LMs."
        )
    original = type(model)
    if original not in _RANKED_CLASSES:
        namespace = {"__module__": original.__module__, "__qualname__": original.__qualname__}
        _RANKED_CLASSES[original] = type(original.__name__, (RankedGenerationMixin, original), namespace)
    model.__class__ = _RANKED_CLASSES[original]
    return model
