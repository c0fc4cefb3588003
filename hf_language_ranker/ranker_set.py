"""The rankers of one call: load them, check they fit the model, settle each one's pick rule and answer
extractor, score candidates from their features and pick. Shared by ranked `generate` and `rank_candidates`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from transformers import PreTrainedModel

from .agreement import (
    PICK_RULES,
    AnswerExtractorLike,
    answer_ids,
    extract_answers,
    resolve_answer_extractor,
    select,
)
from .features import stack_inputs
from .modeling import LanguageRanker
from .pooling import ANSWER_POOLINGS

RankerLike = Union[LanguageRanker, str, os.PathLike]
RankersArgument = Union[RankerLike, Mapping[str, RankerLike], Sequence[RankerLike]]


def load_ranker(ranker: RankerLike) -> LanguageRanker:
    """A `LanguageRanker` as is, or loaded from a Hub id or local folder."""
    # duck-typed, so a ranker of the installed library also serves this module's Hub `custom_generate` copy
    if isinstance(ranker, LanguageRanker) or (isinstance(ranker, torch.nn.Module) and hasattr(ranker, "check_fits")):
        return ranker
    if isinstance(ranker, (str, os.PathLike)):
        return LanguageRanker.from_pretrained(os.fspath(ranker))
    raise TypeError(
        f"ranker must be a LanguageRanker, a Hub id or a local folder, got {type(ranker).__name__}. "
        "Load one with LanguageRanker.from_pretrained(...)."
    )


def resolve_rankers(rankers: RankersArgument) -> dict[str, LanguageRanker]:
    """Normalise ``ranker=`` (one ranker, a list, or a dict of named rankers) to a dict."""
    if isinstance(rankers, Mapping):
        resolved = {str(name): load_ranker(ranker) for name, ranker in rankers.items()}
    elif isinstance(rankers, Sequence) and not isinstance(rankers, str):
        resolved = {str(index): load_ranker(ranker) for index, ranker in enumerate(rankers)}
    else:
        resolved = {"ranker": load_ranker(rankers)}
    if not resolved:
        raise ValueError("ranker= was given an empty collection; pass at least one ranker.")
    return resolved


def score_candidates(
    rankers: Mapping[str, LanguageRanker],
    prompt_features: Mapping[int, torch.Tensor],
    candidate_features: Mapping[int, torch.Tensor],
    *,
    mean_log_probs: torch.Tensor | None = None,
    answer_ids: Mapping[str, torch.Tensor | None] | None = None,
    candidate_mask: torch.Tensor | None = None,
    pooled_features: Mapping[str, Mapping[int, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Each ranker's ``[B, N]`` scores, all from the same features (layer -> ``[B, H]`` / ``[B, N, H]``; answer
    pooling -> layer -> ``[B, N, H]``; ``answer_ids`` per ranker name; masked candidates score ``-inf``)."""
    scores = {}
    for name, ranker in rankers.items():
        inputs = stack_inputs(ranker.config.input_features, prompt_features, candidate_features, pooled_features)
        was_training = ranker.training
        ranker.eval()
        try:
            with torch.no_grad():
                output = ranker(
                    *inputs,
                    candidate_mask=candidate_mask,
                    mean_log_probs=mean_log_probs,
                    answer_ids=(answer_ids or {}).get(name),
                )
        finally:
            ranker.train(was_training)
        scores[name] = output.scores.float().to(candidate_features[ranker.config.feature_layer].device)
    return scores


def answer_extractors(
    rankers: Mapping[str, LanguageRanker],
    selections: Mapping[str, str],
    answer_extractor: AnswerExtractorLike | None,
    tokenizer: Any,
) -> dict[str, AnswerExtractorLike]:
    """The answer extractor of every ranker that reads final answers (vote-share input or weighted vote): the
    call's ``answer_extractor``, else the built-in one the ranker's config records. Checked before sampling."""
    needs_answers = [name for name, ranker in rankers.items() if ranker.config.reads_answers(selections[name])]
    extractors = {name: answer_extractor or rankers[name].config.answer_extractor for name in needs_answers}
    missing = [name for name, extractor in extractors.items() if extractor is None]
    if missing:
        raise ValueError(
            f"Ranker(s) {missing} need each candidate's final answer (vote-share input or "
            "ranker_selection='weighted_vote'), but no answer_extractor was given and the ranker records none: pass "
            "answer_extractor= (a callable str -> hashable | None, or a built-in verifier name such as 'math'), the "
            "same one that parsed the training answers."
        )
    if extractors and tokenizer is None:
        raise ValueError(
            "Reading the candidates' final answers needs their text: pass tokenizer= to generate (the model's "
            "tokenizer)."
        )
    return {name: resolve_answer_extractor(extractor) for name, extractor in extractors.items()}


def answer_ids_per_ranker(
    extractors: Mapping[str, Any], texts: Sequence[Sequence[str]], device: torch.device
) -> dict[str, torch.Tensor]:
    """``[B, N]`` answer ids of the candidate texts per ranker name, parsed once per distinct extractor (ragged
    rows are padded with -1)."""
    by_extractor: dict[Any, torch.Tensor] = {}
    for extractor in extractors.values():
        if extractor not in by_extractor:
            by_extractor[extractor] = answer_ids(extract_answers(texts, extractor), device=device)
    return {name: by_extractor[extractor] for name, extractor in extractors.items()}


@dataclass
class RankerSet:
    """The rankers of one call, checked and ready: each one's pick rule and, where it reads final answers,
    its answer extractor. Shared by ranked `generate` and `rank_candidates`."""

    rankers: dict[str, LanguageRanker]
    selections: dict[str, str]
    extractors: dict[str, Any]

    @classmethod
    def resolve(
        cls,
        model: PreTrainedModel,
        rankers: RankersArgument,
        selection: str | None,
        answer_extractor: AnswerExtractorLike | None,
        tokenizer: Any,
    ) -> RankerSet:
        """Load the rankers, check they fit ``model``, and settle selections and extractors (before any work)."""
        resolved = resolve_rankers(rankers)
        for ranker in resolved.values():
            ranker.check_fits(model)
        # the call's (or generation config's) selection, else each ranker's recommended one; unknown modes fail here
        selections = {name: selection or ranker.config.selection for name, ranker in resolved.items()}
        for mode in selections.values():
            if mode not in PICK_RULES:
                raise PICK_RULES.unknown(mode)
        return cls(resolved, selections, answer_extractors(resolved, selections, answer_extractor, tokenizer))

    @property
    def layers(self) -> list[int]:
        return sorted({layer for ranker in self.rankers.values() for layer in ranker.config.input_layers})

    @property
    def answer_poolings(self) -> list[str]:
        """The answer poolings any ranker reads (`hf_language_ranker.pooling`), in the registry's order."""
        read = {pooling for ranker in self.rankers.values() for pooling in ranker.config.answer_poolings}
        return [pooling for pooling in ANSWER_POOLINGS if pooling in read]

    @property
    def reads_log_probs(self) -> bool:
        return any(ranker.config.use_mean_log_prob for ranker in self.rankers.values())

    def pick(
        self,
        prompt_features: Mapping[int, torch.Tensor],
        candidate_features: Mapping[int, torch.Tensor],
        texts: Sequence[Sequence[str]],
        *,
        mean_log_probs: torch.Tensor | None = None,
        candidate_mask: torch.Tensor | None = None,
        pooled_features: Mapping[str, Mapping[int, torch.Tensor]] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each ranker's ``[B, N]`` scores and ``[B]`` chosen candidates (``texts`` are read only for answers;
        ``pooled_features``: the `answer_poolings`, pooling -> layer -> ``[B, N, H]``)."""
        device = next(iter(candidate_features.values())).device
        ids = answer_ids_per_ranker(self.extractors, texts, device)
        scores = score_candidates(
            self.rankers,
            prompt_features,
            candidate_features,
            mean_log_probs=mean_log_probs,
            answer_ids=ids,
            candidate_mask=candidate_mask,
            pooled_features=pooled_features,
        )
        best = {name: select(values, self.selections[name], ids.get(name)) for name, values in scores.items()}
        return scores, best
