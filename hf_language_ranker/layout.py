"""The external token layout: (prompt, candidate) pairs as ranked `generate` lays them out, and their features.

Candidates sampled anywhere (vLLM, SGLang, TGI, llama.cpp, a file) are laid out exactly as ranked `generate` does:
the prompt formatted with the same chat template, the candidate's tokens after it, the feature at its last real
token. `featurize_token_candidates` prefills each distinct prompt once and reads the features of its candidates with
one forward pass per chunk on a copy of that cache (as ranked `generate` shares its prefill). `rank_candidates` and
the collection of externally sampled candidates both read features through this module.

Texts and token ids:

* token ids are taken as given, cut after the first EOS (the feature convention). Pass the ids the sampler
  produced, EOS included, for exactly the features ranked `generate` would have read;
* texts are tokenized without special tokens and, with ``append_eos=True`` (default), get the model's EOS
  appended, since samplers strip it from finished answers. Pass ``append_eos=False`` (or per candidate) for
  answers cut at the token budget. A text gives the same features as its ids whenever it re-tokenizes to
  them; it does not when a BPE merge spans the prompt/answer boundary, when the sampler stopped on another
  EOS id than the model's first one, or when decoding dropped special tokens inside the answer.

Memory stays bounded by ``candidate_batch_size``: a chunk holds that many rows of KV cache (prompt and candidate),
hooks keep only the layers the rankers read (no ``output_hidden_states``), and logits are computed only over the
answer positions, and only when a ranker reads mean log-probabilities.

Compute stops where the features do: without token statistics (no ranker reads log-probabilities, or the sampler
reported them) a chunk's forward pass ends at the deepest layer read, skipping the blocks above it, the final norm
and the LM head.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .features import (
    HiddenStateTap,
    cache_argument,
    decoder_layers,
    forward_accepts,
    position_ids_from_attention_mask,
    text_config,
    token_statistics,
)
from .pooling import ANSWER_POOLINGS, check_answer_poolings
from .prepacked_linears import prepacked_linears
from .prompts import format_prompt, padding_tokenizer, tokenize_prompts
from .sampling import prefill_cache

CandidateLike = Union[str, Sequence[int], torch.Tensor]
PromptLike = Union[str, Sequence[int], torch.Tensor]


@dataclass
class CandidateFeatures:
    """Features of ragged candidate lists, padded to the largest ``N`` (``candidate_mask`` marks real ones).

    Args:
        prompt_features: layer -> ``[B, H]``.
        candidate_features: layer -> ``[B, N, H]`` (zeros where masked).
        candidate_mask: ``[B, N]`` true for real candidates.
        lengths: ``[B, N]`` tokens of each candidate (EOS included).
        mean_log_probs, self_certainty: ``[B, N]`` token statistics, with ``token_statistics=True``.
        pooled_features: answer pooling -> layer -> ``[B, N, H]``, the ``answer_poolings`` asked for.
    """

    prompt_features: dict[int, torch.Tensor]
    candidate_features: dict[int, torch.Tensor]
    candidate_mask: torch.Tensor
    lengths: torch.Tensor
    mean_log_probs: torch.Tensor | None = None
    self_certainty: torch.Tensor | None = None
    pooled_features: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- token layout
def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> list[int]:
    """The ids that end a candidate: the model's generation config's EOS ids, else the tokenizer's EOS."""
    value = getattr(model.generation_config, "eos_token_id", None)
    if value is None and tokenizer is not None:
        value = tokenizer.eos_token_id
    if value is None:
        return []
    return [int(token) for token in (value if isinstance(value, (list, tuple)) else [value])]


def _as_id_list(value: Any, what: str) -> list[int] | None:
    """``value`` as a list of ints if it is a token id sequence, ``None`` if it is text."""
    if isinstance(value, str):
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 1:
            raise ValueError(f"{what} is a tensor of shape {list(value.shape)}; pass a 1-D tensor of token ids.")
        value = value.tolist()
    if not isinstance(value, Sequence) or not all(
        isinstance(token, int) and not isinstance(token, bool) for token in value
    ):
        raise TypeError(f"{what} must be a string or a sequence of int token ids, got {describe_value(value)}.")
    return list(value)


def describe_value(value: Any) -> str:
    """``value`` for an error message: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _check_vocabulary(ids: Sequence[int], vocab_size: int, what: str) -> None:
    outside = [token for token in ids if not 0 <= token < vocab_size]
    if outside:
        raise ValueError(
            f"{what} holds token ids outside the model's vocabulary 0..{vocab_size - 1}: {outside[:5]}. Pass ids "
            "from this model's tokenizer (or texts)."
        )


def _cut_after_eos(ids: list[int], eos_ids: Sequence[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in eos_ids:
            return ids[: position + 1]
    return ids


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[PromptLike], use_chat_template: bool, vocab_size: int
) -> list[list[int]]:
    """Each prompt's ids: given ids as is, texts through `format_prompt` and `tokenize_prompts` (as collection)."""
    given = [_as_id_list(prompt, f"prompts[{index}]") for index, prompt in enumerate(prompts)]
    texts = {index: prompt for index, (prompt, ids) in enumerate(zip(prompts, given)) if ids is None}
    if texts:
        formatted = [format_prompt(tokenizer, text, use_chat_template) for text in texts.values()]
        batch = tokenize_prompts(padding_tokenizer(tokenizer), formatted, use_chat_template)
        for index, row, mask in zip(texts, batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
            given[index] = [token for token, real in zip(row, mask) if real]
    for index, ids in enumerate(given):
        if not ids:
            raise ValueError(f"prompts[{index}] is empty: a prompt needs at least one token.")
        _check_vocabulary(ids, vocab_size, f"prompts[{index}]")
    return given


def candidate_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    candidates: Sequence[Sequence[CandidateLike]],
    eos_ids: Sequence[int],
    vocab_size: int,
    append_eos: bool | Sequence[Sequence[bool]] = True,
) -> list[list[list[int]]]:
    """Each candidate's ids by the convention of this module (ids cut after EOS; texts + EOS if finished)."""
    result = []
    for index, group in enumerate(candidates):
        if isinstance(group, (str, torch.Tensor)) or not isinstance(group, Sequence):
            raise TypeError(
                f"candidates[{index}] must be a list of candidates (texts or id lists), got {describe_value(group)}."
            )
        if len(group) == 0:
            raise ValueError(f"candidates[{index}] is empty: every prompt needs at least one candidate to rank.")
        row = []
        for position, candidate in enumerate(group):
            what = f"candidates[{index}][{position}]"
            ids = _as_id_list(candidate, what)
            if ids is None:
                finished = append_eos if isinstance(append_eos, bool) else append_eos[index][position]
                ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
                if finished:
                    if not eos_ids:
                        raise ValueError("append_eos=True but neither the model nor the tokenizer defines an EOS id.")
                    ids = [*ids, eos_ids[0]]
            ids = _cut_after_eos(ids, eos_ids)
            if not ids:
                raise ValueError(
                    f"{what} is empty: there is no token to read a feature from. Drop it, or pass its EOS id (an "
                    "answer that ended at once) or, for a text, append_eos=True."
                )
            _check_vocabulary(ids, vocab_size, what)
            row.append(ids)
        result.append(row)
    return result


def candidate_texts(
    tokenizer: PreTrainedTokenizerBase,
    candidates: Sequence[Sequence[CandidateLike]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
) -> list[list[str]]:
    """Each candidate as text: texts as given, token ids decoded (their `candidate_token_ids`, special tokens
    skipped)."""
    return [
        [
            candidate if isinstance(candidate, str) else tokenizer.decode(ids, skip_special_tokens=True)
            for candidate, ids in zip(group, id_group)
        ]
        for group, id_group in zip(candidates, candidate_ids)
    ]


# ------------------------------------------------------------------------------------------- features
def _left_padded(rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``rows`` left-padded to one width: ``(input_ids, attention_mask)``."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(rows):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _chunk_inputs(
    rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Left-padded prompts followed by right-padded candidates, the layout of ranked `generate`'s sequences."""
    prompt_ids, prompt_mask = _left_padded([prompt for prompt, _ in rows], pad_token_id, device)
    answer_width = max(len(answer) for _, answer in rows)
    answer_ids = torch.full((len(rows), answer_width), pad_token_id, dtype=torch.long)
    answer_mask = torch.zeros_like(answer_ids)
    for row, (_, answer) in enumerate(rows):
        answer_ids[row, : len(answer)] = torch.tensor(answer)
        answer_mask[row, : len(answer)] = 1
    input_ids = torch.cat([prompt_ids, answer_ids.to(device)], dim=1)
    return input_ids, torch.cat([prompt_mask, answer_mask.to(device)], dim=1), prompt_ids.shape[1], answer_width


class _ForwardStopped(Exception):
    """Raised by `_stop_at_block` to end a forward pass once the deepest layer read has been captured."""


@contextlib.contextmanager
def _stop_at_block(model: PreTrainedModel, layer: int) -> Iterator[None]:
    """End forward passes at the input of decoder block ``layer`` (its taps, registered earlier, run first): the
    blocks from ``layer`` on, the final norm and the LM head are skipped. The last layer (``layer == L``) has no
    block to stop at."""
    if layer >= int(text_config(model).num_hidden_layers):
        yield
        return

    def stop(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        raise _ForwardStopped

    handle = decoder_layers(model)[layer].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class _ChunkFeatures:
    prompt_states: dict[int, torch.Tensor]  # layer -> [R, H]
    candidate_states: dict[int, torch.Tensor]  # layer -> [R, H]
    pooled_states: dict[str, dict[int, torch.Tensor]]  # pooling -> layer -> [R, H]
    lengths: torch.Tensor  # [R]
    mean_log_probs: torch.Tensor | None  # [R]
    self_certainty: torch.Tensor | None  # [R]


def _read_chunk(
    model: PreTrainedModel,
    rows: Sequence[tuple[list[int], list[int]]],
    layers: Sequence[int],
    answer_poolings: Sequence[str],
    token_statistics: bool,
    pad_token_id: int,
    cache: Any,
    cached_mask: torch.Tensor,
) -> _ChunkFeatures:
    """One forward pass over (prompt, candidate) rows, keeping the feature positions of the hooked layers.

    ``cache`` holds each row's earlier prompt tokens (attention mask ``cached_mask``, ``[R, 0]`` without a cache) and
    ``rows`` the prompt tokens after them (the last one) and the candidate, as ranked `generate` feeds them on its
    shared prefill.
    """
    device = model.device
    input_ids, attention_mask, prompt_width, answer_width = _chunk_inputs(rows, pad_token_id, device)
    attention_mask = torch.cat([cached_mask, attention_mask], dim=1)
    lengths = torch.tensor([len(answer) for _, answer in rows], device=device)
    last = prompt_width - 1 + lengths
    row_index = torch.arange(len(rows), device=device)
    prompt_states: dict[int, torch.Tensor] = {}
    candidate_states: dict[int, torch.Tensor] = {}
    pooled_states: dict[str, dict[int, torch.Tensor]] = {pooling: {} for pooling in answer_poolings}

    def keep(layer: int, states: torch.Tensor) -> None:
        prompt_states[layer] = states[:, prompt_width - 1].float()
        candidate_states[layer] = states[row_index, last].float()
        for pooling, by_layer in pooled_states.items():
            by_layer[layer] = ANSWER_POOLINGS[pooling].over(states[:, prompt_width:], lengths).float()

    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": cache is not None}
    if cache is not None:
        inputs[cache_argument(model)] = cache
    if forward_accepts(model, "position_ids"):
        inputs["position_ids"] = position_ids_from_attention_mask(attention_mask)[:, -input_ids.shape[1] :]
    keeps_logits = forward_accepts(model, "logits_to_keep")
    if keeps_logits:
        answer_positions = torch.arange(prompt_width - 1, prompt_width + answer_width - 1, device=device)
        inputs["logits_to_keep"] = answer_positions if token_statistics else 1
    if not token_statistics:  # nothing above the deepest layer read is needed
        stopped = contextlib.suppress(_ForwardStopped)
        with HiddenStateTap(model, layers, keep), _stop_at_block(model, max(layers)), stopped:
            model(**inputs)
        return _ChunkFeatures(prompt_states, candidate_states, pooled_states, lengths, None, None)
    with HiddenStateTap(model, layers, keep):
        output = model(**inputs)
    logits = output.logits if keeps_logits else output.logits[:, prompt_width - 1 : -1]
    sum_log_probs, sum_self_certainty = _token_statistic_sums(logits, input_ids[:, prompt_width:], lengths)
    return _ChunkFeatures(
        prompt_states, candidate_states, pooled_states, lengths, sum_log_probs / lengths, sum_self_certainty / lengths
    )


def _prompt_groups(
    prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], candidate_batch_size: int
) -> Iterator[tuple[list[list[int]], list[tuple[int, int, int]]]]:
    """Distinct prompts in groups whose candidates fill at most one chunk (a prompt with more forms a group alone):
    ``(prompts, rows)``, each row ``(index of its prompt in the group, b, n)``."""
    pairs: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for b, group in enumerate(candidate_ids):
        pairs.setdefault(tuple(prompt_ids[b]), []).extend((b, n) for n in range(len(group)))
    prompts: list[list[int]] = []
    rows: list[tuple[int, int, int]] = []
    for prompt, prompt_pairs in pairs.items():
        if prompts and len(rows) + len(prompt_pairs) > candidate_batch_size:
            yield prompts, rows
            prompts, rows = [], []
        rows.extend((len(prompts), b, n) for b, n in prompt_pairs)
        prompts.append(list(prompt))
    yield prompts, rows


def _prefill(model: PreTrainedModel, prompts: Sequence[list[int]], pad_token_id: int) -> tuple[Any, torch.Tensor]:
    """The cache of all but the last token of each prompt (left-padded) and its attention mask; ``(None, [U, 0])``
    when the prompts have one token each or the model's cache cannot be shared (its rows then carry whole prompts)."""
    if max(map(len, prompts)) > 1:
        input_ids, attention_mask = _left_padded([prompt[:-1] for prompt in prompts], pad_token_id, model.device)
        cache = prefill_cache(model, input_ids, attention_mask)
        if cache is not None:
            return cache, attention_mask
    return None, torch.zeros(len(prompts), 0, dtype=torch.long, device=model.device)


@torch.no_grad()
def featurize_token_candidates(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    layers: Sequence[int],
    *,
    answer_poolings: Sequence[str] = (),
    token_statistics: bool = False,
    candidate_batch_size: int = 8,
    pad_token_id: int = 0,
    prepack_weights: bool = True,
) -> CandidateFeatures:
    """Features of every (prompt, candidate) pair, ``candidate_batch_size`` pairs per forward pass.

    Each distinct prompt is prefilled once (all but its last token; prompts whose candidates fit in one chunk
    together, left-padded) and its candidates run on a copy of that cache, chunk by chunk, as ranked `generate`
    shares its prefill: each row feeds the prompt's last token and the candidate's tokens (right-padded), read with
    `HiddenStateTap` at the prompt's last token and the candidate's last token, and over the candidate's tokens for
    the ``answer_poolings`` (`hf_language_ranker.pooling`). Memory is bounded by
    ``candidate_batch_size`` rows. With ``token_statistics`` the logits over the answer positions give each
    candidate's mean token log-probability and self-certainty, as `CandidateFeatureRecorder` sums them. On a CPU
    the linear layers run on weights packed for oneDNN for the call, as in `sample_candidates` (`prepacked_linears`),
    unless ``prepack_weights=False``.
    """
    if not isinstance(candidate_batch_size, int) or isinstance(candidate_batch_size, bool) or candidate_batch_size < 1:
        raise ValueError(f"candidate_batch_size must be an integer >= 1, got {candidate_batch_size!r}.")
    layers, answer_poolings = sorted(set(layers)), check_answer_poolings(answer_poolings)
    device = model.device
    batch_size, width = len(candidate_ids), max(len(group) for group in candidate_ids)
    hidden_size = int(text_config(model).hidden_size)

    def per_candidate() -> dict[int, torch.Tensor]:
        return {layer: torch.zeros(batch_size, width, hidden_size, device=device) for layer in layers}

    features = CandidateFeatures(
        prompt_features={layer: torch.zeros(batch_size, hidden_size, device=device) for layer in layers},
        candidate_features=per_candidate(),
        candidate_mask=torch.zeros(batch_size, width, dtype=torch.bool, device=device),
        lengths=torch.zeros(batch_size, width, dtype=torch.long, device=device),
        mean_log_probs=torch.zeros(batch_size, width, device=device) if token_statistics else None,
        self_certainty=torch.zeros(batch_size, width, device=device) if token_statistics else None,
        pooled_features={pooling: per_candidate() for pooling in answer_poolings},
    )
    with prepacked_linears(model, candidate_batch_size, enabled=prepack_weights):
        for prompts, group_rows in _prompt_groups(prompt_ids, candidate_ids, candidate_batch_size):
            cache, cached_mask = _prefill(model, prompts, pad_token_id)
            for start in range(0, len(group_rows), candidate_batch_size):
                chunk = group_rows[start : start + candidate_batch_size]
                prompt_index = torch.tensor([u for u, _, _ in chunk], device=device)
                chunk_cache = None
                if cache is not None:  # the last chunk may consume the prefill itself
                    chunk_cache = cache if start + candidate_batch_size >= len(group_rows) else copy.deepcopy(cache)
                    chunk_cache.batch_select_indices(prompt_index)
                fed = [prompts[u][-1:] if cache is not None else prompts[u] for u, _, _ in chunk]
                rows = [(prompt, list(candidate_ids[b][n])) for prompt, (_, b, n) in zip(fed, chunk)]
                read = _read_chunk(
                    model,
                    rows,
                    layers,
                    answer_poolings,
                    token_statistics,
                    pad_token_id,
                    chunk_cache,
                    cached_mask[prompt_index],
                )
                _store_chunk(features, chunk, read)
    return features


def _store_chunk(features: CandidateFeatures, chunk: Sequence[tuple[int, int, int]], read: _ChunkFeatures) -> None:
    """Write what `_read_chunk` read for ``chunk``'s ``(prompt, b, n)`` rows into ``features`` at ``[b, n]``."""
    device = features.candidate_mask.device
    b_index = torch.tensor([b for _, b, _ in chunk], device=device)
    n_index = torch.tensor([n for _, _, n in chunk], device=device)
    for layer, states in features.candidate_features.items():
        states[b_index, n_index] = read.candidate_states[layer]
        # the prompt's first candidate gives its prompt feature (other rows only differ by padding)
        first = (n_index == 0).nonzero().squeeze(-1)
        features.prompt_features[layer][b_index[first]] = read.prompt_states[layer][first]
        for pooling, by_layer in features.pooled_features.items():
            by_layer[layer][b_index, n_index] = read.pooled_states[pooling][layer]
    features.candidate_mask[b_index, n_index] = True
    features.lengths[b_index, n_index] = read.lengths
    if features.mean_log_probs is not None:
        features.mean_log_probs[b_index, n_index] = read.mean_log_probs
        features.self_certainty[b_index, n_index] = read.self_certainty


def _token_statistic_sums(
    logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sums over real answer tokens of their log-probability and of the self-certainty."""
    real = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    token_log_probs, self_certainty = token_statistics(logits, tokens)
    return (token_log_probs * real).sum(-1), (self_certainty * real).sum(-1)
