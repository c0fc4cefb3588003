"""Ranked generation: sample N candidates per prompt, score them with a ranker, return the best.

`sample_candidates` is the one sampling path, used by ranked `generate` and by candidate collection for
training, so the features a ranker is trained on are exactly those it sees when serving.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .agreement import (
    AnswerExtractorLike,
    answer_ids,
    extract_answers,
    resolve_answer_extractor,
    select,
)
from .configuration import DEFAULT_NUM_CANDIDATES, GENERATION_FLAGS, check_selection_mode
from .features import CandidateFeatureRecorder, forward_accepts, position_ids_from_attention_mask
from .modeling import LanguageRanker

RankerLike = Union[LanguageRanker, str, os.PathLike]
RankersArgument = Union[RankerLike, Mapping[str, RankerLike], Sequence[RankerLike]]

#: `generate` arguments that make no sense when N candidates are sampled and one is picked.
_UNSUPPORTED_WITH_RANKER = {
    "streamer": "the best candidate is only known once all are finished, so nothing can be streamed",
    "assistant_model": "assisted decoding is not a sampling of independent candidates",
    "inputs_embeds": "features are defined on token ids; pass input_ids",
    "cache": "the prompt cache is built and shared by the ranked path itself",
    "past_key_values": "the prompt cache is built and shared by the ranked path itself",
}


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


@dataclass
class SampledCandidates:
    """N sampled candidates per prompt with their features (the output of `sample_candidates`).

    Args:
        sequences: ``[B, N, T]`` prompt columns, generated tokens, then padding.
        lengths: ``[B, N]`` number of real generated tokens (EOS included).
        prompt_length: number of prompt columns ``P`` in ``sequences``.
        prompt_features: layer -> ``[B, H]``.
        candidate_features: layer -> ``[B, N, H]``.
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


def cache_argument(model: PreTrainedModel) -> str:
    """Name of the cache argument of the model's forward (`cache` in recent transformers)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


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


def _feed_last_tokens(
    model: PreTrainedModel, sequences: torch.LongTensor, prompt_mask: torch.Tensor, cache: Any
) -> None:
    """One more forward pass so the hooks see the states of the last sampled tokens."""
    rows, total = sequences.shape
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(rows, total - prompt_mask.shape[1])], dim=1)
    start = cache.get_seq_length() if cache is not None else 0
    inputs: dict[str, Any] = {"input_ids": sequences[:, start:], "attention_mask": mask}
    if cache is not None:
        inputs[cache_argument(model)] = cache
    inputs["use_cache"] = cache is not None
    if forward_accepts(model, "position_ids"):
        inputs["position_ids"] = position_ids_from_attention_mask(mask)[:, start:]
    if forward_accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = 1
    model(**inputs)


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
    track_token_statistics: bool = False,
    **generate_kwargs: Any,
) -> SampledCandidates:
    """Sample ``num_candidates`` continuations of each (left-padded) prompt and capture their features.

    The prompt is prefilled once and its cache shared by its candidates. Sampling itself is transformers'
    own (`generate` with ``do_sample=True``), so every sampling argument, logits processor and stopping
    criterion applies. Hooks keep only the hidden states at the prompt's last token and at each candidate's
    last real token for the requested ``layers``.
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

    use_cache = generate_kwargs.get("use_cache", getattr(generation_config, "use_cache", True)) is not False
    cache_kwargs: dict[str, Any] = {}
    if use_cache and prompt_length > 1:
        cache = prefill_shared_prompt(model, input_ids[:, :-1], attention_mask[:, :-1], num_candidates)
        if cache is not None:
            cache_kwargs[cache_argument(model)] = cache

    recorder = CandidateFeatureRecorder(model, layers, rows, input_ids.device, track_token_statistics)
    with recorder:
        settings = {**generate_kwargs, "do_sample": True, "num_return_sequences": 1, "return_dict_in_generate": True}
        output = GenerationMixin.generate(
            model, input_ids=expanded_ids, attention_mask=expanded_mask, **cache_kwargs, **settings
        )
        if recorder.needs_final_step:
            _feed_last_tokens(model, output.sequences, expanded_mask, _output_cache(output) if use_cache else None)

    sequences = output.sequences
    lengths = recorder.lengths
    pad_token_id = _pad_token_id(model, generate_kwargs)
    if pad_token_id is not None:
        generated_positions = torch.arange(sequences.shape[1] - prompt_length, device=sequences.device)
        after_end = generated_positions[None, :] >= lengths[:, None]
        sequences[:, prompt_length:] = sequences[:, prompt_length:].masked_fill(after_end, pad_token_id)

    def per_prompt(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(batch_size, num_candidates, *tensor.shape[1:])

    token_counts = lengths.clamp(min=1).float()
    return SampledCandidates(
        sequences=per_prompt(sequences),
        lengths=per_prompt(lengths),
        prompt_length=prompt_length,
        prompt_features={layer: states[::num_candidates] for layer, states in recorder.prompt_features.items()},
        candidate_features={layer: per_prompt(states) for layer, states in recorder.candidate_features.items()},
        mean_log_probs=per_prompt(recorder.sum_log_probs / token_counts) if track_token_statistics else None,
        self_certainty=per_prompt(recorder.sum_self_certainty / token_counts) if track_token_statistics else None,
    )


# ------------------------------------------------------------------------------------------ rankers
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
) -> dict[str, torch.Tensor]:
    """Each ranker's ``[B, N]`` scores, all from the same features (layer -> ``[B, H]`` / ``[B, N, H]``;
    ``answer_ids`` per ranker name; masked candidates score ``-inf``)."""
    scores = {}
    for name, ranker in rankers.items():
        layer = ranker.config.feature_layer
        was_training = ranker.training
        ranker.eval()
        try:
            with torch.no_grad():
                output = ranker(
                    prompt_features[layer],
                    candidate_features[layer],
                    candidate_mask=candidate_mask,
                    mean_log_probs=mean_log_probs,
                    answer_ids=(answer_ids or {}).get(name),
                )
        finally:
            ranker.train(was_training)
        scores[name] = output.scores.float().to(candidate_features[layer].device)
    return scores


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
    """The rankers of one call, checked and ready: each one's selection mode and, where it reads final answers,
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
            check_selection_mode(mode)
        return cls(resolved, selections, answer_extractors(resolved, selections, answer_extractor, tokenizer))

    @property
    def layers(self) -> list[int]:
        return sorted({ranker.config.feature_layer for ranker in self.rankers.values()})

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
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each ranker's ``[B, N]`` scores and ``[B]`` chosen candidates (``texts`` are read only for answers)."""
        device = next(iter(candidate_features.values())).device
        ids = answer_ids_per_ranker(self.extractors, texts, device)
        scores = score_candidates(
            self.rankers,
            prompt_features,
            candidate_features,
            mean_log_probs=mean_log_probs,
            answer_ids=ids,
            candidate_mask=candidate_mask,
        )
        best = {name: select(values, self.selections[name], ids.get(name)) for name, values in scores.items()}
        return scores, best


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
        track_token_statistics=ranking.reads_log_probs,
        **kwargs,
    )
    texts = candidates.decode(kwargs["tokenizer"]) if ranking.extractors else []
    all_scores, best = ranking.pick(
        candidates.prompt_features, candidates.candidate_features, texts, mean_log_probs=candidates.mean_log_probs
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
