"""Rank candidates from any sampler: vLLM, SGLang, TGI, llama.cpp, or samples already on disk.

`rank_candidates` takes prompts and their candidates as texts or token ids, lays them out exactly as ranked
`generate` does and reads their features (`hf_language_ranker.layout`: the token layout, texts versus token ids,
the shared prefill and the memory bound), then scores them with one or several rankers and picks the best of each
prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from .agreement import AnswerExtractorLike
from .features import text_config
from .layout import (
    CandidateFeatures,
    CandidateLike,
    PromptLike,
    candidate_texts,
    candidate_token_ids,
    describe_value,
    eos_token_ids,
    featurize_token_candidates,
    prompt_token_ids,
)
from .prompts import padding_tokenizer, resolve_chat_template
from .ranker_set import RankersArgument, RankerSet


@dataclass
class RankedCandidatesOutput(ModelOutput):
    """Output of `rank_candidates`.

    Args:
        scores: per prompt, the ``[N_i]`` scores of its candidates.
        best_indices: ``[B]`` index of the chosen candidate of each prompt.
        best_candidates: the chosen candidate of each prompt, as it was passed (text or ids).
        best_texts: the chosen candidate of each prompt as text (decoded when ids were passed).
        features: the `CandidateFeatures` read, with ``return_features=True``.
        ranker_scores, ranker_best_indices: with several rankers, the same per ranker name (the unnamed
            fields then hold the first ranker's).
    """

    scores: list[torch.FloatTensor] | None = None
    best_indices: torch.LongTensor | None = None
    best_candidates: list[CandidateLike] | None = None
    best_texts: list[str] | None = None
    features: CandidateFeatures | None = None
    ranker_scores: dict[str, list[torch.FloatTensor]] | None = None
    ranker_best_indices: dict[str, torch.LongTensor] | None = None


@dataclass(frozen=True)
class RankingOptions:
    """How `rank_candidates` lays out, reads and picks candidates, as one value: `rank_candidates_file` builds it
    once from its arguments and ranks every batch with it.

    Args:
        chat_template, candidate_batch_size, ranker_selection, answer_extractor, prepack_weights: as in
            `rank_candidates`.
    """

    chat_template: bool | None = None
    candidate_batch_size: int = 8
    ranker_selection: str | None = None
    answer_extractor: AnswerExtractorLike | None = None
    prepack_weights: bool = True

    def rankers(self, model: PreTrainedModel, ranker: RankersArgument, tokenizer: PreTrainedTokenizerBase) -> RankerSet:
        """The rankers, loaded and checked against ``model``, each with its pick rule and answer extractor."""
        return RankerSet.resolve(model, ranker, self.ranker_selection, self.answer_extractor, tokenizer)


# ------------------------------------------------------------------------------------------------ ranking
def rank_candidates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptLike],
    candidates: Sequence[Sequence[CandidateLike]],
    ranker: RankersArgument,
    *,
    chat_template: bool | None = None,
    append_eos: bool | Sequence[Sequence[bool]] = True,
    candidate_batch_size: int = 8,
    ranker_selection: str | None = None,
    answer_extractor: AnswerExtractorLike | None = None,
    mean_log_probs: Sequence[Sequence[float]] | None = None,
    return_features: bool = False,
    prepack_weights: bool = True,
) -> RankedCandidatesOutput:
    """Score candidates sampled anywhere with the model's own hidden states and pick the best of each prompt.

    Args:
        model, tokenizer: the causal LM the ranker was trained on, and its tokenizer.
        prompts: prompt texts (formatted like ranked `generate`'s collection: one user turn of the chat template)
            or the exact prompt token ids the sampler was given.
        candidates: ``candidates[i]`` lists the answers to ``prompts[i]`` (any number, at least one), each a text
            or its token ids (see `hf_language_ranker.layout` for when the two agree).
        ranker: a `LanguageRanker`, Hub id or folder, or a dict/list of them (features are read once).
        chat_template: for text prompts, ``None`` uses the tokenizer's chat template when it has one, ``False``
            feeds the raw text.
        append_eos: for text candidates, whether each ended with EOS (the sampler stripped it): one bool for
            all, or one per candidate. Ignored for ids.
        candidate_batch_size: (prompt, candidate) pairs per forward pass; bounds memory.
        ranker_selection, answer_extractor: as in ranked `generate` (default: what each ranker records).
        mean_log_probs: ``mean_log_probs[i][j]``, the mean token log-probability of ``candidates[i][j]`` as the
            sampler reported it: over the candidate's tokens (EOS included when it ended on one), under the model's
            raw distribution (before temperature or top-p), e.g. vLLM's ``cumulative_logprob / len(token_ids)``
            with its default ``logprobs_mode="raw_logprobs"``. Rankers that read log-probabilities then use these,
            and the pass stops at the deepest layer the rankers read instead of running the whole model.
        return_features: also return the `CandidateFeatures` that were read.
        prepack_weights: on a CPU, run the linear layers on weights packed for oneDNN for the call, as ranked
            `generate` does (`prepacked_linears`: faster; a second copy of those weights in memory meanwhile).
    """
    options = RankingOptions(chat_template, candidate_batch_size, ranker_selection, answer_extractor, prepack_weights)
    return rank_with_options(
        model,
        tokenizer,
        prompts,
        candidates,
        ranker,
        options,
        append_eos=append_eos,
        mean_log_probs=mean_log_probs,
        return_features=return_features,
    )


def rank_with_options(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[PromptLike],
    candidates: Sequence[Sequence[CandidateLike]],
    ranker: RankersArgument,
    options: RankingOptions,
    *,
    append_eos: bool | Sequence[Sequence[bool]] = True,
    mean_log_probs: Sequence[Sequence[float]] | None = None,
    return_features: bool = False,
) -> RankedCandidatesOutput:
    """`rank_candidates` with its options as one `RankingOptions` (what `rank_candidates_file` calls per batch)."""
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of prompts (texts or token id lists), got {describe_value(prompts)}.")
    if isinstance(candidates, (str, torch.Tensor)) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"candidates must be a list with one list of candidates per prompt, got {describe_value(candidates)}."
        )
    if len(prompts) != len(candidates):
        raise ValueError(
            f"Got {len(prompts)} prompts but {len(candidates)} candidate lists: candidates[i] lists the answers to "
            "prompts[i]."
        )
    if not prompts:
        raise ValueError("No prompts were given: there is nothing to rank.")
    ranking = options.rankers(model, ranker, tokenizer)
    vocab_size = int(text_config(model).vocab_size)
    use_chat_template = resolve_chat_template(tokenizer, options.chat_template)
    prompt_ids = prompt_token_ids(tokenizer, prompts, use_chat_template, vocab_size)
    ids = candidate_token_ids(tokenizer, candidates, eos_token_ids(model, tokenizer), vocab_size, append_eos)
    reported = None if mean_log_probs is None else _reported_log_probs(mean_log_probs, candidates, model.device)
    features = featurize_token_candidates(
        model,
        prompt_ids,
        ids,
        ranking.layers,
        answer_poolings=ranking.answer_poolings,
        token_statistics=ranking.reads_log_probs and reported is None,
        candidate_batch_size=options.candidate_batch_size,
        pad_token_id=padding_tokenizer(tokenizer).pad_token_id,
        prepack_weights=options.prepack_weights,
    )
    if reported is not None:
        features.mean_log_probs = reported
    texts = candidate_texts(tokenizer, candidates, ids)
    all_scores, best = ranking.pick(
        features.prompt_features,
        features.candidate_features,
        texts,
        mean_log_probs=features.mean_log_probs,
        candidate_mask=features.candidate_mask,
        pooled_features=features.pooled_features,
    )
    per_prompt = {
        name: [scores[b, : len(group)] for b, group in enumerate(candidates)] for name, scores in all_scores.items()
    }
    first = next(iter(ranking.rankers))
    several = len(ranking.rankers) > 1
    chosen = best[first].tolist()
    return RankedCandidatesOutput(
        scores=per_prompt[first],
        best_indices=best[first],
        best_candidates=[group[index] for group, index in zip(candidates, chosen)],
        best_texts=[group[index] for group, index in zip(texts, chosen)],
        features=features if return_features else None,
        ranker_scores=per_prompt if several else None,
        ranker_best_indices=best if several else None,
    )


def _reported_log_probs(
    mean_log_probs: Sequence[Sequence[float]], candidates: Sequence[Sequence[CandidateLike]], device: torch.device
) -> torch.Tensor:
    """The sampler's mean log-probabilities as ``[B, N]`` (zeros where a prompt has fewer candidates), checked
    against the candidates they belong to."""
    if isinstance(mean_log_probs, (str, torch.Tensor)) or not isinstance(mean_log_probs, Sequence):
        raise TypeError(
            "mean_log_probs must be a list with one list of floats per prompt (mean_log_probs[i][j] for "
            f"candidates[i][j]), got {describe_value(mean_log_probs)}."
        )
    lengths = [len(group) for group in candidates]
    given = [len(row) if isinstance(row, Sequence) else None for row in mean_log_probs]
    if given != lengths:
        raise ValueError(
            f"mean_log_probs must hold one value per candidate: candidates have {lengths} per prompt, mean_log_probs "
            f"{given}."
        )
    values = torch.zeros(len(lengths), max(lengths), dtype=torch.float32)
    for row, group in enumerate(mean_log_probs):
        values[row, : len(group)] = torch.tensor([float(value) for value in group], dtype=torch.float32)
    if not torch.isfinite(values).all() or (values > 0).any():
        raise ValueError(
            "mean_log_probs must be finite and <= 0 (a mean of token log-probabilities): pass the sampler's "
            "cumulative log-probability divided by the number of tokens."
        )
    return values.to(device)
