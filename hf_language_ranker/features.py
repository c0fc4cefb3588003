"""Hidden-state features: which layer, where to find it, and how to capture it.

Feature convention (shared by serving and training):

* layer ``k`` is transformers' ``output_hidden_states`` index ``k``: 0 is the embedding output, ``k`` the
  output of decoder block ``k``; for the last layer the final norm is applied;
* a candidate's feature is the state at its last real token: the first EOS if one was generated (EOS
  included), else its last generated token;
* the prompt feature is the state at the prompt's last token;
* on request, answer poolings of the candidate's tokens beside the last one (`hf_language_ranker.pooling`: the mean
  of the answer tokens' states, the state at the first answer token).

`CandidateFeatureRecorder` captures these states while candidates are sampled, with forward hooks that keep only
one vector per row, layer and pooling (memory O(rows x hidden) whatever the answer length).
`featurize_candidates` computes the same features with one plain forward pass; tests hold the two equal.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .configuration import default_feature_layer
from .pooling import ANSWER_POOLINGS, check_answer_poolings


def text_config(model_or_config: PreTrainedModel | PretrainedConfig) -> PretrainedConfig:
    """The decoder (text) config of a model or config, for multimodal wrappers too."""
    config = model_or_config.config if isinstance(model_or_config, PreTrainedModel) else model_or_config
    return config.get_text_config(decoder=True)


@dataclass(frozen=True)
class ModelFingerprint:
    """What a ranker must agree on with the LLM that produces its features."""

    model_type: str | None
    hidden_size: int
    num_hidden_layers: int
    name_or_path: str | None
    #: the dtype the model computes in (``"bfloat16"``); ``None`` for a config, which does not run
    dtype: str | None = None

    @classmethod
    def of(cls, model_or_config: PreTrainedModel | PretrainedConfig) -> ModelFingerprint:
        is_model = isinstance(model_or_config, PreTrainedModel)
        config = model_or_config.config if is_model else model_or_config
        decoder = text_config(config)
        return cls(
            model_type=getattr(config, "model_type", None) or None,
            hidden_size=int(decoder.hidden_size),
            num_hidden_layers=int(decoder.num_hidden_layers),
            name_or_path=getattr(config, "_name_or_path", None) or None,
            dtype=dtype_name(model_or_config.dtype) if is_model else None,
        )


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``, the name `RankerConfig` and `CollectionInfo` record."""
    return str(dtype).removeprefix("torch.")


def stack_layers(by_layer: Mapping[Any, Any], layers: Sequence[Any]) -> Any:
    """A ranker's input from per-layer features (tensors or numpy arrays): the one layer's as is, several stacked on a
    layer axis before the hidden one (``[..., L, H]``), in the order of ``layers`` (``RankerConfig.input_layers``, or
    the ``(pooling, layer)`` slots of ``RankerConfig.input_features``)."""
    if len(layers) == 1:
        return by_layer[layers[0]]
    parts = [by_layer[layer] for layer in layers]
    return torch.stack(parts, dim=-2) if isinstance(parts[0], torch.Tensor) else np.stack(parts, axis=-2)


def stack_inputs(
    slots: Sequence[tuple[str, int]],
    prompt_features: Mapping[int, Any],
    candidate_features: Mapping[int, Any],
    pooled_features: Mapping[str, Mapping[int, Any]] | None = None,
) -> tuple[Any, Any]:
    """A ranker's prompt and candidate inputs for its ``(pooling, layer)`` ``slots`` (``RankerConfig.input_features``)
    from per-layer features: ``candidate_features`` (the last token's) and ``pooled_features`` (pooling -> layer ->
    features). A prompt has no answer to pool: its last token's feature fills every slot of its layer."""
    candidates = {}
    for pooling, layer in slots:
        if pooling == "last":
            candidates[pooling, layer] = candidate_features[layer]
        elif layer in (pooled_features or {}).get(pooling, {}):
            candidates[pooling, layer] = pooled_features[pooling][layer]
        else:
            raise ValueError(
                f"The ranker reads the {pooling!r} answer pooling at layer {layer} (config.answer_poolings), but no "
                f"such features were given: read them with answer_poolings=[{pooling!r}] (ranked generate and "
                "rank_candidates ask for what their rankers read)."
            )
    prompts = {(pooling, layer): prompt_features[layer] for pooling, layer in slots}
    return stack_layers(prompts, slots), stack_layers(candidates, slots)


def resolve_feature_layer(model_or_config: PreTrainedModel | PretrainedConfig, layer: int | None) -> int:
    """Turn ``None`` (paper default, ~60% depth) or a negative index into a valid layer index."""
    num_layers = int(text_config(model_or_config).num_hidden_layers)
    if layer is None:
        return default_feature_layer(num_layers)
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(
            f"Feature layer {layer} does not exist: this model has hidden states 0..{num_layers} "
            f"(0 = embeddings, {num_layers} = last layer). Pass a layer in that range or a negative index."
        )
    return resolved


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (``model.layers``, ``transformer.h``, ...)."""
    num_layers = int(text_config(model).num_hidden_layers)
    for module in model.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(
        f"Could not find the {num_layers} decoder blocks of {type(model).__name__}: feature capture needs a "
        "causal LM whose blocks sit in one nn.ModuleList, as in every transformers decoder."
    )


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows, computed the way `generate` does."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def forward_accepts(model: PreTrainedModel, name: str) -> bool:
    """Whether the model's forward takes an argument ``name``."""
    return name in inspect.signature(model.forward).parameters


def cache_argument(model: PreTrainedModel) -> str:
    """Name of the cache argument of the model's forward (`cache` in recent transformers)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def _hidden_from_layer_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_from_model_output(output: Any) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


class HiddenStateTap:
    """Forward hooks that hand the hidden states of chosen layers to a callback as ``(layer, states)``.

    ``states`` has shape ``[rows, positions, hidden]``. Layer ``k < L`` is the input of block ``k``; layer
    ``L`` is the output of the base model (after its final norm), matching ``output_hidden_states``.
    """

    def __init__(self, model: PreTrainedModel, layers: Iterable[int], callback) -> None:
        self.model = model
        self.layers = sorted(set(layers))
        self.callback = callback
        self._handles: list[Any] = []

    def __enter__(self) -> HiddenStateTap:
        num_layers = int(text_config(self.model).num_hidden_layers)
        blocks = decoder_layers(self.model)
        for layer in self.layers:
            if layer < num_layers:
                hook = self._input_hook(layer)
                self._handles.append(blocks[layer].register_forward_pre_hook(hook, with_kwargs=True))
            else:
                hook = self._output_hook(layer)
                self._handles.append(self.model.base_model.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _input_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.callback(layer, _hidden_from_layer_input(args, kwargs))

        return hook

    def _output_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            self.callback(layer, _hidden_from_model_output(output))

        return hook


def token_statistics(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's log-probability under ``logits`` (the raw model distribution that produced it) and the
    distribution's self-certainty (KL divergence from uniform); ``logits`` ``[..., V]``, ``tokens`` ``[...]``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    token_log_probs = log_probs.gather(-1, tokens[..., None].to(log_probs.device)).squeeze(-1)
    self_certainty = -log_probs.mean(-1) - torch.log(torch.tensor(float(log_probs.shape[-1])))
    return token_log_probs, self_certainty


class CandidateFeatureRecorder:
    """Captures prompt and candidate features of ``num_rows`` sampled rows while a decoding loop runs.

    The loop (`decoding.sample_dropping_finished_rows`) sets `rows` before each forward pass: the sampled row
    that each row of the batch belongs to, as the batch shrinks when rows finish. Every token it feeds is a real
    token of its row (the last one being the row's EOS, or its last token when the length limit stopped it), so
    the state of the last token fed for a row is that row's candidate feature. The first forward pass ends at
    the prompt's last token of every row and also gives the prompt features; every later pass feeds answer tokens,
    which the ``answer_poolings`` (`hf_language_ranker.pooling`) fold in as they come. Forward hooks keep one
    vector per row, layer and pooling: memory O(rows x hidden) whatever the answer length.
    """

    def __init__(
        self, model: PreTrainedModel, layers: Iterable[int], num_rows: int, answer_poolings: Sequence[str] = ()
    ) -> None:
        self.layers = sorted(set(layers))
        self.num_rows = num_rows
        self.answer_poolings = check_answer_poolings(answer_poolings)
        #: ``[batch rows]`` the sampled row of each row of the next forward pass's batch
        self.rows: torch.Tensor | None = None
        self.prompt_features: dict[int, torch.Tensor] = {}
        self.candidate_features: dict[int, torch.Tensor] = {}
        self._pooled: dict[str, dict[int, torch.Tensor]] = {pooling: {} for pooling in self.answer_poolings}
        self._fed: torch.Tensor | None = None  # [num_rows] answer tokens fed so far (with answer poolings)
        self._tap = HiddenStateTap(model, self.layers, self._record)

    def __enter__(self) -> CandidateFeatureRecorder:
        self._tap.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._tap.__exit__(*exc)

    def _record(self, layer: int, states: torch.Tensor) -> None:
        last = states[:, -1].detach()
        if layer not in self.candidate_features:
            if last.shape[0] != self.num_rows:
                raise RuntimeError(f"The first forward pass must cover all {self.num_rows} rows, got {last.shape[0]}.")
            self.prompt_features[layer] = last.clone()
            self.candidate_features[layer] = last.clone()
            if self.answer_poolings:
                self._fed = torch.zeros(self.num_rows, dtype=torch.long, device=last.device)
                for pooling, kept in self._pooled.items():
                    kept[layer] = ANSWER_POOLINGS[pooling].start(self.num_rows, last)
        else:
            self.candidate_features[layer][self.rows] = last
            if self.answer_poolings:
                fed = self._fed[self.rows]
                for pooling, kept in self._pooled.items():
                    ANSWER_POOLINGS[pooling].update(kept[layer], self.rows, last, fed)
                if layer == self.layers[-1]:  # the pass's last hook: its token now counts for every layer
                    self._fed[self.rows] += 1

    @property
    def pooled_features(self) -> dict[str, dict[int, torch.Tensor]]:
        """pooling -> layer -> ``[num_rows, H]`` each answer pooling of the answer tokens fed so far."""
        return {
            pooling: {layer: ANSWER_POOLINGS[pooling].finish(kept, self._fed) for layer, kept in held.items()}
            for pooling, held in self._pooled.items()
        }


def featurize_candidates(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    generated_ids: torch.LongTensor,
    candidate_lengths: torch.LongTensor,
    layers: Iterable[int],
    pooling: str = "last",
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Features by one plain forward pass over prompt + candidate (the reference definition).

    Args:
        input_ids, attention_mask: the left-padded prompts, ``[B, P]``.
        generated_ids: the generated tokens of each candidate, ``[B, N, G]``.
        candidate_lengths: number of real generated tokens of each candidate, ``[B, N]``.
        layers: hidden-state indices to return.
        pooling: the candidate feature: ``"last"`` (the last real token's state) or an answer pooling
            (`hf_language_ranker.pooling`: ``"mean"``, ``"first"``) of the real generated tokens' states.

    Returns:
        ``(prompt_features, candidate_features)``: dicts from layer to ``[B, H]`` and ``[B, N, H]``.
    """
    batch_size, num_candidates, generated_length = generated_ids.shape
    prompt_length = input_ids.shape[1]
    rows = batch_size * num_candidates
    lengths = candidate_lengths.reshape(rows).to(input_ids.device)
    generated_mask = torch.arange(generated_length, device=input_ids.device)[None, :] < lengths[:, None]
    full_ids = torch.cat([input_ids.repeat_interleave(num_candidates, 0), generated_ids.reshape(rows, -1)], dim=1)
    full_mask = torch.cat(
        [attention_mask.repeat_interleave(num_candidates, 0), generated_mask.to(attention_mask.dtype)], dim=1
    )
    inputs: dict[str, Any] = {"input_ids": full_ids, "attention_mask": full_mask}
    if forward_accepts(model, "position_ids"):
        inputs["position_ids"] = position_ids_from_attention_mask(full_mask)
    with torch.no_grad():
        hidden_states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    last_positions = prompt_length - 1 + lengths
    row_index = torch.arange(rows, device=input_ids.device)
    prompt_features, candidate_features = {}, {}
    for layer in sorted(set(layers)):
        states = hidden_states[layer]
        prompt_features[layer] = states[::num_candidates, prompt_length - 1]
        if pooling == "last":
            candidate = states[row_index, last_positions]
        else:
            candidate = ANSWER_POOLINGS[pooling].over(states[:, prompt_length:], lengths)
        candidate_features[layer] = candidate.reshape(batch_size, num_candidates, -1)
    return prompt_features, candidate_features
