"""The ranked path's decoding loop: sample every row until it ends, and stop computing a row once it has.

transformers' sampling loop keeps every row in the batch until the longest one ends, so a candidate that ended at
its tenth token still costs a row of every later forward pass; among N=16 candidates of the embedded model, 5 to
12 are still generating on average (`benchmarks/row_dropping.py`). `sample_dropping_finished_rows` is a
``custom_generate`` decoding loop for `GenerationMixin.generate`: transformers prepares the generation config, the
logits processors and the stopping criteria as for its own sampling, and this loop runs the forward passes on the
rows still generating only, dropping a finished row from the batch and its cache after one last pass over its last
token (whose state is its feature).

Logits processors and stopping criteria see every row, in order, as in transformers' loop (finished rows carry
``padding_id`` and zero logits, and nothing is sampled for them), so processors that address rows by their batch
index keep working. Tokens are drawn by `sample_tokens`, from the same distribution as transformers'
``torch.multinomial`` with the global torch generator: the same seed gives the same candidates, though not the same
as those of transformers' plain sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
    StopStringCriteria,
)

from .features import (
    CandidateFeatureRecorder,
    cache_argument,
    forward_accepts,
    position_ids_from_attention_mask,
    token_statistics,
)


@dataclass
class DecodedRows:
    """What `sample_dropping_finished_rows` returns for ``R`` rows.

    Args:
        sequences: ``[R, T]`` the prompt columns, then the sampled tokens; ``padding_id`` after a row ended.
        lengths: ``[R]`` number of real sampled tokens (EOS included).
        sum_log_probs: ``[R]`` sum of the real tokens' log-probabilities under the raw model distribution.
        sum_self_certainty: ``[R]`` sum of their distributions' self-certainty (KL divergence from uniform).
    """

    sequences: torch.LongTensor
    lengths: torch.LongTensor
    sum_log_probs: torch.Tensor | None = None
    sum_self_certainty: torch.Tensor | None = None


def sample_tokens(scores: torch.Tensor) -> torch.LongTensor:
    """One token per row from ``softmax(scores)`` by inverse transform sampling: ``[rows, V]`` -> ``[rows]``.

    The same distribution as ``torch.multinomial(softmax(scores), 1)``, drawn with one uniform number per row from
    the global torch generator; on a CPU about 8x cheaper than ``multinomial`` over a 49k vocabulary, which draws
    a random number per vocabulary entry. A token of probability zero is never drawn: the uniform number is scaled
    below the total mass, and the first index whose cumulative mass exceeds it has mass of its own. Scores that
    leave no token to draw are refused, as ``multinomial`` refuses them.
    """
    cumulative = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
    if not torch.isfinite(cumulative[:, -1]).all():
        raise ValueError(
            "A row's next-token scores leave no token to sample (every score is -inf, or one is nan or +inf): check "
            "the logits processors, e.g. bad_words_ids or a custom processor that masks the whole vocabulary."
        )
    uniform = torch.rand(scores.shape[0], 1, device=scores.device) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(-1).clamp_(max=scores.shape[-1] - 1)


def _model_cache(model_kwargs: dict[str, Any]) -> Any:
    if model_kwargs.get("use_cache") is False:
        return None
    caches = (model_kwargs.get(name) for name in ("cache", "past_key_values"))
    return next((cache for cache in caches if cache is not None), None)


def _next_token_logits(model: PreTrainedModel, cache: Any, padded: bool) -> Callable[..., torch.Tensor]:
    """``logits(new_tokens, attention_mask)``: the next-token logits ``[rows, V]`` after the new tokens, whose
    ``attention_mask`` covers every column. Without padding the mask is not passed (as `generate` drops an all-ones
    mask): attention then needs no mask to be built at each step."""
    cache_name = cache_argument(model)
    takes_positions = forward_accepts(model, "position_ids")
    takes_logits_to_keep = forward_accepts(model, "logits_to_keep")

    def logits(new_tokens: torch.LongTensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inputs: dict[str, Any] = {"input_ids": new_tokens, "use_cache": cache is not None}
        if padded:
            inputs["attention_mask"] = attention_mask
        if cache is not None:
            inputs[cache_name] = cache
        if takes_positions:
            inputs["position_ids"] = position_ids_from_attention_mask(attention_mask)[:, -new_tokens.shape[1] :]
        if takes_logits_to_keep:
            inputs["logits_to_keep"] = 1
        return model(**inputs).logits[:, -1]

    return logits


@torch.no_grad()
def sample_dropping_finished_rows(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    recorder: CandidateFeatureRecorder | None = None,
    padding_id: int = 0,
    track_token_statistics: bool = False,
    **model_kwargs: Any,
) -> DecodedRows:
    """Sample each row of ``input_ids`` until its stopping criteria end it (pass as ``custom_generate``).

    ``model_kwargs`` are those `generate` prepared: the prompts' ``attention_mask`` and the cache, which may
    already hold all but the last prompt token (a shared prefill). Before each forward pass ``recorder.rows`` is
    set to the rows of its batch. ``generation_config`` is `generate`'s (its stopping criteria carry the length
    limit), kept in the signature `generate` calls.
    """
    rows, device = input_ids.shape[0], input_ids.device
    cache = _model_cache(model_kwargs)
    attention_mask = model_kwargs.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    batch_rows = torch.arange(rows, device=device)  # the row of each row of the batch
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    sums = torch.zeros(2, rows, device=device) if track_token_statistics else None
    sequences = input_ids
    new_tokens = input_ids[:, cache.get_seq_length() :] if cache is not None else input_ids
    next_token_logits = _next_token_logits(model, cache, padded=not bool(attention_mask.all()))
    while True:
        if recorder is not None:
            recorder.rows = batch_rows
        logits = next_token_logits(new_tokens, attention_mask)
        sampling = unfinished[batch_rows]
        if not sampling.all():  # rows whose last token was just fed leave the batch
            keep = sampling.nonzero().squeeze(-1)
            if not len(keep):
                break
            batch_rows, logits, attention_mask = batch_rows[keep], logits[keep], attention_mask[keep]
            if cache is not None:
                cache.batch_select_indices(keep)
        raw_logits = logits.float()
        every_row = raw_logits.new_zeros(rows, raw_logits.shape[-1]).index_copy_(0, batch_rows, raw_logits)
        tokens = sample_tokens(logits_processor(sequences, every_row)[batch_rows])
        if sums is not None:
            sums[:, batch_rows] += torch.stack(token_statistics(raw_logits, tokens))
        lengths[batch_rows] += 1
        column = sequences.new_full((rows,), padding_id).index_copy_(0, batch_rows, tokens)
        sequences = torch.cat([sequences, column[:, None]], dim=1)
        done = stopping_criteria(sequences, None).to(device)
        unfinished[batch_rows] &= ~done[batch_rows]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(batch_rows), 1)], dim=1)
        new_tokens = tokens[:, None] if cache is not None else sequences[batch_rows]
    return DecodedRows(
        sequences=sequences,
        lengths=lengths,
        sum_log_probs=sums[0] if sums is not None else None,
        sum_self_certainty=sums[1] if sums is not None else None,
    )


def _stop_strings_as_criterion(model: PreTrainedModel, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``generate_kwargs`` with their stop strings (passed, or in the generation config) as a `StopStringCriteria`
    among the ``stopping_criteria``: with a callable ``custom_generate`` transformers 5 drops ``tokenizer=`` before
    building its own criteria, so it could not build that one. Without a tokenizer they are left to transformers,
    whose error says to pass one."""
    config = generate_kwargs.get("generation_config") or model.generation_config
    stop_strings = generate_kwargs.get("stop_strings", config.stop_strings)
    tokenizer = generate_kwargs.get("tokenizer")
    if not stop_strings or tokenizer is None:
        return generate_kwargs
    criteria = StoppingCriteriaList(generate_kwargs.get("stopping_criteria") or [])
    criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    return {**generate_kwargs, "stop_strings": None, "stopping_criteria": criteria}


def generate_dropping_finished_rows(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    *,
    recorder: CandidateFeatureRecorder | None,
    padding_id: int,
    track_token_statistics: bool,
    **generate_kwargs: Any,
) -> DecodedRows:
    """transformers' `generate` (sampling, one sequence per row of ``input_ids``) with
    `sample_dropping_finished_rows` as its decoding loop; ``generate_kwargs`` are `generate`'s."""
    return GenerationMixin.generate(
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        **{**_stop_strings_as_criterion(model, generate_kwargs), "do_sample": True, "num_return_sequences": 1},
        custom_generate=sample_dropping_finished_rows,
        recorder=recorder,
        padding_id=padding_id,
        track_token_statistics=track_token_statistics,
    )
