"""Sampling: N candidates per prompt from one shared prefill, with their features.

`sample_candidates` is the one sampling path, used by ranked `generate` and by candidate collection for
training, so the features a ranker is trained on are exactly those it sees when serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel

from .decode_attention import grouped_query_decode_attention
from .decoding import generate_dropping_finished_rows
from .features import CandidateFeatureRecorder, cache_argument, forward_accepts, position_ids_from_attention_mask
from .prepacked_linears import prepacked_linears

#: `generate` arguments that make no sense when N candidates are sampled and one is picked.
_UNSUPPORTED_WITH_RANKER = {
    "streamer": "the best candidate is only known once all are finished, so nothing can be streamed",
    "assistant_model": "assisted decoding is not a sampling of independent candidates",
    "inputs_embeds": "features are defined on token ids; pass input_ids",
    "cache": "the prompt cache is built and shared by the ranked path itself",
    "past_key_values": "the prompt cache is built and shared by the ranked path itself",
}


@dataclass
class SampledCandidates:
    """N sampled candidates per prompt with their features (the output of `sample_candidates`).

    Args:
        sequences: ``[B, N, T]`` prompt columns, generated tokens, then padding.
        lengths: ``[B, N]`` number of real generated tokens (EOS included).
        prompt_length: number of prompt columns ``P`` in ``sequences``.
        prompt_features: layer -> ``[B, H]``.
        candidate_features: layer -> ``[B, N, H]``.
        pooled_features: answer pooling -> layer -> ``[B, N, H]`` (the ``answer_poolings`` asked for; float32 means).
        mean_log_probs: ``[B, N]`` mean token log-probability under the model (with token statistics).
        self_certainty: ``[B, N]`` mean self-certainty of the token distributions (with token statistics).
    """

    sequences: torch.LongTensor
    lengths: torch.LongTensor
    prompt_length: int
    prompt_features: dict[int, torch.Tensor]
    candidate_features: dict[int, torch.Tensor]
    mean_log_probs: torch.Tensor | None = None
    self_certainty: torch.Tensor | None = None
    pooled_features: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)

    @property
    def generated(self) -> torch.LongTensor:
        """``[B, N, G]`` only the generated columns."""
        return self.sequences[:, :, self.prompt_length :]

    def decode(self, tokenizer: Any) -> list[list[str]]:
        """Each candidate's generated text (its real tokens, special tokens skipped): ``texts[b][n]``."""
        generated, lengths = self.generated.tolist(), self.lengths.tolist()
        return [
            tokenizer.batch_decode([row[:length] for row, length in zip(rows, row_lengths)], skip_special_tokens=True)
            for rows, row_lengths in zip(generated, lengths)
        ]


def _output_cache(output: Any) -> Any:
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def _check_sampling_arguments(
    num_candidates: int, generate_kwargs: Mapping[str, Any], generation_config: GenerationConfig
) -> None:
    if not isinstance(num_candidates, int) or isinstance(num_candidates, bool) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an integer >= 1, got {num_candidates!r}.")
    if generate_kwargs.get("do_sample") is False:
        raise ValueError(
            "A ranker picks among sampled candidates, but do_sample=False asks for greedy decoding, which would "
            "produce N identical candidates. Drop do_sample=False (ranked generation always samples)."
        )
    num_beams = generate_kwargs.get("num_beams", getattr(generation_config, "num_beams", 1)) or 1
    if num_beams > 1:
        raise ValueError(
            f"A ranker cannot be combined with beam search (num_beams={num_beams}): ranked generation samples "
            "independent candidates. Use num_beams=1."
        )
    num_return_sequences = generate_kwargs.get("num_return_sequences") or 1
    if num_return_sequences > 1:
        raise ValueError(
            "num_return_sequences cannot be combined with a ranker, which returns one best row per prompt. "
            "Use num_candidates=N to sample N candidates, and return_dict_in_generate=True to see them all."
        )
    for name, why in _UNSUPPORTED_WITH_RANKER.items():
        if generate_kwargs.get(name) is not None:
            raise ValueError(f"`{name}` is not supported with a ranker: {why}.")


def prefill_cache(model: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> Any:
    """Run left-padded ``input_ids`` once and return the model's cache of them, or ``None`` when the model gives no
    cache whose rows can be repeated and selected (``batch_repeat_interleave``, ``batch_select_indices``)."""
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True}
    if forward_accepts(model, "position_ids"):
        inputs["position_ids"] = position_ids_from_attention_mask(attention_mask)
    if forward_accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = 1
    cache = _output_cache(model(**inputs))
    if cache is None or not all(hasattr(cache, name) for name in ("batch_repeat_interleave", "batch_select_indices")):
        return None
    return cache


def prefill_shared_prompt(
    model: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.Tensor, num_candidates: int
) -> Any:
    """Run the prompt (all but its last token) once and repeat its cache for the N candidates."""
    cache = prefill_cache(model, input_ids, attention_mask)
    if cache is not None:
        cache.batch_repeat_interleave(num_candidates)
    return cache


def _shared_prompt_cache(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    num_candidates: int,
    generation_config: GenerationConfig,
    generate_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """`generate`'s cache argument holding the shared prefill of the prompts, or nothing without a cache."""
    use_cache = generate_kwargs.get("use_cache", getattr(generation_config, "use_cache", True)) is not False
    if not use_cache or input_ids.shape[1] < 2:
        return {}
    cache = prefill_shared_prompt(model, input_ids[:, :-1], attention_mask[:, :-1], num_candidates)
    return {} if cache is None else {cache_argument(model): cache}


def _pad_token_id(model: PreTrainedModel, generate_kwargs: Mapping[str, Any]) -> int | None:
    """The pad id `generate` uses: from the call, its generation config or the model's; else the first EOS."""
    configs = [generate_kwargs.get("generation_config"), model.generation_config]
    sources = [generate_kwargs, *(vars(config) for config in configs if config is not None)]
    for name in ("pad_token_id", "eos_token_id"):
        value = next((source[name] for source in sources if source.get(name) is not None), None)
        if value is not None:
            return int(value[0] if isinstance(value, (list, tuple)) else value)
    return None


@torch.no_grad()
def sample_candidates(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    num_candidates: int,
    layers: Sequence[int],
    answer_poolings: Sequence[str] = (),
    track_token_statistics: bool = False,
    prepack_weights: bool = True,
    **generate_kwargs: Any,
) -> SampledCandidates:
    """Sample ``num_candidates`` continuations of each (left-padded) prompt and capture their features.

    The prompt is prefilled once and its cache shared by its candidates. transformers' `generate` prepares the
    sampling (``do_sample=True``), so every sampling argument, logits processor and stopping criterion applies;
    its decoding loop is `decoding.sample_dropping_finished_rows`, which stops computing a candidate once it has
    ended. Hooks keep only the hidden states at the prompt's last token and at each candidate's last real token
    for the requested ``layers``, and the running ``answer_poolings`` (`hf_language_ranker.pooling`) there.
    On a CPU the model's linear layers run on weights packed for oneDNN for the call (`prepacked_linears`: a
    second copy of them in memory meanwhile); ``prepack_weights=False`` keeps torch's own kernels. On a CPU the
    one-token attention steps of grouped queries call torch's kernel in the layout it runs fastest for the dtype
    (`grouped_query_decode_attention`).
    """
    generation_config = generate_kwargs.get("generation_config") or model.generation_config
    _check_sampling_arguments(num_candidates, generate_kwargs, generation_config)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, prompt_length], got shape {list(input_ids.shape)}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batch_size, prompt_length = input_ids.shape
    rows = batch_size * num_candidates
    expanded_ids = input_ids.repeat_interleave(num_candidates, dim=0)
    expanded_mask = attention_mask.repeat_interleave(num_candidates, dim=0)

    pad_token_id = _pad_token_id(model, generate_kwargs)
    recorder = CandidateFeatureRecorder(model, layers, rows, answer_poolings)
    with prepacked_linears(model, rows, enabled=prepack_weights), grouped_query_decode_attention(model):
        cache_kwargs = _shared_prompt_cache(
            model, input_ids, attention_mask, num_candidates, generation_config, generate_kwargs
        )
        with recorder:
            decoded = generate_dropping_finished_rows(
                model,
                expanded_ids,
                expanded_mask,
                recorder=recorder,
                padding_id=0 if pad_token_id is None else pad_token_id,
                track_token_statistics=track_token_statistics,
                **cache_kwargs,
                **generate_kwargs,
            )

    sequences, lengths = decoded.sequences, decoded.lengths

    def per_prompt(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(batch_size, num_candidates, *tensor.shape[1:])

    token_counts = lengths.clamp(min=1).float()
    return SampledCandidates(
        sequences=per_prompt(sequences),
        lengths=per_prompt(lengths),
        prompt_length=prompt_length,
        prompt_features={layer: states[::num_candidates] for layer, states in recorder.prompt_features.items()},
        candidate_features={layer: per_prompt(states) for layer, states in recorder.candidate_features.items()},
        mean_log_probs=per_prompt(decoded.sum_log_probs / token_counts) if track_token_statistics else None,
        self_certainty=per_prompt(decoded.sum_self_certainty / token_counts) if track_token_statistics else None,
        pooled_features={
            pooling: {layer: per_prompt(states) for layer, states in by_layer.items()}
            for pooling, by_layer in recorder.pooled_features.items()
        },
    )
