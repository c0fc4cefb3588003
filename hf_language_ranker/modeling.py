"""`LanguageRanker`: a tiny head that scores sampled candidates from the LLM's own hidden states."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from huggingface_hub import ModelCard, ModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .agreement import feature_centrality, vote_shares
from .configuration import RankerConfig
from .features import ModelFingerprint, resolve_feature_layer
from .heads import HEADS
from .layer_mix import LAYER_MIXES
from .losses import ranking_loss
from .model_card import RankerModelCardData, is_hub_id
from .shipped_rankers import shipped_ranker_folder, shipped_ranker_names

logger = logging.get_logger(__name__)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
#: Mean log-probabilities below this are clipped before the ranker embeds them (keeps outliers bounded).
MIN_LOG_PROB = -20.0


@dataclass
class RankerOutput(ModelOutput):
    """Output of `LanguageRanker.forward`.

    Args:
        loss: the ranking loss, when labels were given.
        scores: one score per candidate, ``[B, N]``; masked slots hold ``-inf``.
    """

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None


class LanguageRanker(
    nn.Module,
    ModelHubMixin,
    library_name="hf-language-ranker",
    tags=["language-ranker", "best-of-n"],
    repo_url="https://github.com/hf-language-ranker/hf-language-ranker",
    paper_url="https://arxiv.org/abs/2510.21883",
    pipeline_tag="text-ranking",
):
    """Scores N candidate answers from hidden states of the LLM that sampled them (arXiv 2510.21883).

    Both the prompt feature and the candidate features are projected to ``projection_dim`` by one shared
    linear layer. The ``listwise`` head (default) runs a small Transformer over
    ``[prompt, candidate_1, ..., candidate_N]`` so candidates are judged against each other; the
    ``pointwise`` head scores each candidate alone with an MLP on ``[candidate, prompt, candidate * prompt]``
    (`hf_language_ranker.heads`).
    With ``use_mean_log_prob`` each candidate's mean token log-probability, and its difference from the mean over
    the prompt's candidates, are embedded and added to the candidate's projected feature; ``use_vote_share`` and
    ``use_centrality`` do the same with the agreement inputs of `hf_language_ranker.agreement` (each value and its
    gap to the prompt's largest value, so "the most common answer" is one input away). With ``center_features`` the
    candidate features are centred on their prompt's mean candidate before the projection. With ``extra_layers`` or
    ``answer_poolings`` it reads several features, each input carrying a feature axis in the order of
    ``config.input_features`` (``[B, S, H]``, ``[B, N, S, H]``), combined by ``layer_mix``
    (`hf_language_ranker.layer_mix`) before everything else. With ``ensemble_size`` K > 1 it is a fold
    ensemble (`ensemble`): K member rankers of one recipe, whose mean score it serves.
    """

    def __init__(self, config: RankerConfig | dict[str, Any]) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = RankerConfig(**config)
        self.config = config
        #: what `save_pretrained` writes into the card beyond the config (training, evaluation); a loaded ranker's
        #: is empty: the card on disk is for people and is not read back
        self.card_data = RankerModelCardData()
        if config.ensemble_size > 1:
            member = replace(config, ensemble_size=1)
            self.members = nn.ModuleList(LanguageRanker(member) for _ in range(config.ensemble_size))
            return
        dim = config.projection_dim
        several = len(config.input_features) > 1
        width = LAYER_MIXES[config.layer_mix].build(self, config) if several else config.hidden_size
        self.projection = nn.Sequential(nn.Linear(width, dim), nn.LayerNorm(dim))
        if config.use_mean_log_prob:
            self.log_prob_embedding = nn.Linear(2, dim)
        if config.use_vote_share:
            self.vote_share_embedding = nn.Linear(2, dim)
        if config.use_centrality:
            self.centrality_embedding = nn.Linear(2, dim)
        HEADS[config.head].build(self, config)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def for_model(
        cls,
        model_or_config: PreTrainedModel | PretrainedConfig,
        feature_layer: int | None = None,
        **head_options: Any,
    ) -> LanguageRanker:
        """An untrained ranker sized for a model (or its config), recording the model's fingerprint.

        Like a loaded ranker it starts in eval mode; training switches it to train mode.

        ``feature_layer`` defaults to the paper's middle layer (about 60% of the depth); ``head_options``
        are `RankerConfig` fields such as ``head="pointwise"`` or ``projection_dim=32``.
        """
        fingerprint = ModelFingerprint.of(model_or_config)
        config = RankerConfig(
            hidden_size=fingerprint.hidden_size,
            num_hidden_layers=fingerprint.num_hidden_layers,
            feature_layer=resolve_feature_layer(model_or_config, feature_layer),
            model_type=fingerprint.model_type,
            base_model=fingerprint.name_or_path,
            **head_options,
        )
        return cls(config).eval()

    @classmethod
    def ensemble(cls, rankers: list[LanguageRanker]) -> LanguageRanker:
        """One ranker serving the mean score of ``rankers`` (e.g. the K fold models of a cross-validation): one
        folder, one config (``ensemble_size`` = K, the members' recipe), loaded as strictly as any ranker. The members
        must share their config, apart from ``extra`` notes; the first member's ``extra`` is kept."""
        if len(rankers) < 2:
            raise ValueError(f"An ensemble needs at least 2 rankers, got {len(rankers)}.")
        first = rankers[0].config
        for index, ranker in enumerate(rankers[1:], start=1):
            if replace(ranker.config, extra=first.extra) != first or first.ensemble_size != 1:
                raise ValueError(
                    f"rankers[{index}] has another config than rankers[0] (or one is an ensemble already): an "
                    "ensemble's members share one recipe, layer and base model. Compare their `config.to_dict()`."
                )
        ensemble = cls(replace(first, ensemble_size=len(rankers)))
        for member, ranker in zip(ensemble.members, rankers):
            member.load_state_dict(ranker.state_dict())
        parameter = next(rankers[0].parameters())
        return ensemble.to(parameter.device, parameter.dtype).eval()

    @property
    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def check_fits(self, model_or_config: PreTrainedModel | PretrainedConfig) -> None:
        """Raise if this ranker cannot read the hidden states of ``model_or_config``; warn (once) on another model id
        or on a model computing in another dtype than the one the training features came from."""
        fingerprint = ModelFingerprint.of(model_or_config)
        expected = {
            "hidden_size": self.config.hidden_size,
            "num_hidden_layers": self.config.num_hidden_layers,
            "model_type": self.config.model_type,
        }
        actual = {
            "hidden_size": fingerprint.hidden_size,
            "num_hidden_layers": fingerprint.num_hidden_layers,
            "model_type": fingerprint.model_type,
        }
        mismatches = [
            f"{key}: ranker {expected[key]!r} vs model {actual[key]!r}"
            for key in expected
            if expected[key] is not None and actual[key] is not None and expected[key] != actual[key]
        ]
        if mismatches:
            raise ValueError(
                f"This ranker was trained on {self.config.base_model or 'another model'} and does not fit "
                f"{fingerprint.name_or_path or type(model_or_config).__name__} ({'; '.join(mismatches)}). "
                "Use a ranker trained on this model, or train one with `LanguageRanker.for_model(model)`."
            )
        if self.config.base_model and fingerprint.name_or_path and self.config.base_model != fingerprint.name_or_path:
            logger.warning_once(
                f"This ranker was trained on {self.config.base_model!r} but is used with "
                f"{fingerprint.name_or_path!r}; the shapes fit, but scores are only meaningful for the model "
                "that produced the training features."
            )
        trained, served = self.config.model_dtype, fingerprint.dtype
        if trained and served and trained != served:
            logger.warning_once(
                f"This ranker was trained on features computed in {trained} but the model runs in {served}: the "
                "hidden states differ by rounding, so scores drift and near ties can flip. Load the model in "
                f"{trained} to serve as trained (load_model_and_tokenizer(..., dtype={trained!r}), CLI --dtype "
                f"{trained}, or model.to(torch.{trained}))."
            )

    # ------------------------------------------------------------------------------------------ scoring
    def forward(
        self,
        prompt_features: torch.Tensor,
        candidate_features: torch.Tensor,
        candidate_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mean_log_probs: torch.Tensor | None = None,
        answer_ids: torch.Tensor | None = None,
    ) -> RankerOutput:
        """Score candidates.

        Args:
            prompt_features: ``[B, H]`` hidden state of each prompt's last token.
            candidate_features: ``[B, N, H]`` hidden state of each candidate's last real token.
            candidate_mask: ``[B, N]``, true for real candidates (default: all real).
            labels: ``[B, N]`` correctness in ``[0, 1]``; when given, the output carries the loss.
            mean_log_probs: ``[B, N]`` mean token log-probability of each candidate under the model; needed by
                rankers with ``config.use_mean_log_prob`` and ignored by the others.
            answer_ids: ``[B, N]`` answer of each candidate as an id within its prompt (``-1``: none; see
                `hf_language_ranker.agreement.answer_ids`); needed by rankers with ``config.use_vote_share``.
        """
        self._check_feature_shapes(prompt_features, candidate_features, candidate_mask)
        if self.config.ensemble_size > 1:
            return self._ensemble_forward(
                labels,
                prompt_features=prompt_features,
                candidate_features=candidate_features,
                candidate_mask=candidate_mask,
                mean_log_probs=mean_log_probs,
                answer_ids=answer_ids,
            )
        parameter = self.projection[0].weight
        if len(self.config.input_features) > 1:
            mix = LAYER_MIXES[self.config.layer_mix].mix
            prompt_features = mix(self, prompt_features.to(parameter.device, parameter.dtype))
            candidate_features = mix(self, candidate_features.to(parameter.device, parameter.dtype))
        prompt = self.projection(prompt_features.to(parameter.device, parameter.dtype))
        if candidate_mask is None:
            mask = torch.ones(candidate_features.shape[:2], dtype=torch.bool, device=parameter.device)
        else:
            mask = candidate_mask.to(parameter.device, torch.bool)
        projected = candidate_features.to(parameter.device, parameter.dtype)
        if self.config.center_features:
            projected = _centered(projected, mask)
        candidates = self.projection(projected)
        if self.config.use_mean_log_prob:
            candidates = candidates + self.log_prob_embedding(self._log_prob_inputs(mean_log_probs, mask))
        if self.config.use_vote_share:
            shares = vote_shares(self._checked_answer_ids(answer_ids, mask), mask)
            candidates = candidates + self.vote_share_embedding(_with_gap_to_max(shares, mask).to(parameter.dtype))
        if self.config.use_centrality:
            centrality = feature_centrality(candidate_features.to(candidates.device), mask)
            candidates = candidates + self.centrality_embedding(_with_gap_to_max(centrality, mask).to(parameter.dtype))
        scores = HEADS[self.config.head].scores(self, prompt, candidates, mask).masked_fill(~mask, float("-inf"))
        loss = None
        if labels is not None:
            loss = ranking_loss(self.config.loss, scores, labels.to(scores.device), mask)
        return RankerOutput(loss=loss, scores=scores)

    def _ensemble_forward(self, labels: torch.Tensor | None, **inputs: Any) -> RankerOutput:
        """The members' mean score (masked slots stay ``-inf``), and the loss of that mean when labels are given."""
        scores = torch.stack([member(**inputs).scores for member in self.members]).mean(0)
        loss = None
        if labels is not None:
            mask = torch.isfinite(scores)
            loss = ranking_loss(self.config.loss, scores, labels.to(scores.device), mask)
        return RankerOutput(loss=loss, scores=scores)

    def _log_prob_inputs(self, mean_log_probs: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """``[B, N, 2]``: each candidate's mean log-prob and its difference from the mean of the prompt's candidates."""
        if mean_log_probs is None:
            raise ValueError(
                "This ranker reads each candidate's mean token log-probability (config.use_mean_log_prob=True): "
                "pass mean_log_probs [B, N]. Ranked generate computes them; collected datasets hold them in the "
                "'mean_log_probs' column."
            )
        if tuple(mean_log_probs.shape) != tuple(mask.shape):
            raise ValueError(f"mean_log_probs must have shape {list(mask.shape)}, got {list(mean_log_probs.shape)}.")
        parameter = self.log_prob_embedding.weight
        values = mean_log_probs.to(parameter.device, parameter.dtype)
        values = torch.nan_to_num(values, nan=0.0).clamp(MIN_LOG_PROB, 0.0).masked_fill(~mask, 0)
        mean = values.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
        return torch.stack([values, (values - mean).masked_fill(~mask, 0)], dim=-1)

    def _checked_answer_ids(self, answer_ids: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        if answer_ids is None:
            raise ValueError(
                "This ranker reads each candidate's answer vote share (config.use_vote_share=True): pass answer_ids "
                "[B, N]. Ranked generate builds them with answer_extractor= (the ranker records "
                f"{self.config.answer_extractor!r}); collected datasets hold the parsed answers in 'answers'."
            )
        if tuple(answer_ids.shape) != tuple(mask.shape):
            raise ValueError(f"answer_ids must have shape {list(mask.shape)}, got {list(answer_ids.shape)}.")
        return answer_ids.to(mask.device, torch.long)

    def _check_feature_shapes(self, prompt: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor | None) -> None:
        slots = self.config.input_features
        # one feature: [B, H] and [B, N, H]; several: a feature axis before H, in the order of config.input_features
        feature = [self.config.hidden_size] if len(slots) == 1 else [len(slots), self.config.hidden_size]
        if list(prompt.shape[1:]) != feature or list(candidates.shape[2:]) != feature:
            described = ", ".join(map(str, feature))
            pooled = bool(self.config.answer_poolings)
            named = f" ((pooling, layer) {slots})" if pooled else f" (layers {self.config.input_layers})"
            raise ValueError(
                f"Expected prompt_features [B, {described}] and candidate_features [B, N, {described}]"
                f"{named if len(slots) > 1 else ''}, got {list(prompt.shape)} and {list(candidates.shape)}."
            )
        if prompt.shape[0] != candidates.shape[0]:
            raise ValueError(
                f"prompt_features has {prompt.shape[0]} rows but candidate_features has {candidates.shape[0]}."
            )
        if mask is not None and tuple(mask.shape) != tuple(candidates.shape[:2]):
            raise ValueError(f"candidate_mask must have shape {list(candidates.shape[:2])}, got {list(mask.shape)}.")

    # ---------------------------------------------------------------------------------------- Hub I/O
    # A ranker folder is config.json + model.safetensors + the README.md card: `save_pretrained` / `_save_pretrained`
    # write them, `from_pretrained` / `_from_pretrained` read the first two back, strictly.
    def save_pretrained(
        self, save_directory: str | Path, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> str | None:
        """Write the ranker folder: ``config.json``, ``model.safetensors`` and the card ``README.md``, rendered from
        `card_data` (``model_card_kwargs``: `RankerModelCardData` fields that replace its own for this save). The card
        replaces any card already in the folder: it describes these weights. ``kwargs`` go to huggingface_hub's
        `ModelHubMixin.save_pretrained` (``push_to_hub=True``, ``repo_id``, ...)."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.generate_model_card(**(model_card_kwargs or {})).save(save_directory / CARD_NAME)
        return super().save_pretrained(save_directory, model_card_kwargs=model_card_kwargs, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """``config.json`` from `self.config` as it is now (the mixin's own copy is the config the ranker was built
        with, which misses later changes such as a loaded ranker's new ``selection``), then the weights."""
        config = json.dumps(self.config.to_dict(), sort_keys=True, indent=2)
        (save_directory / constants.CONFIG_NAME).write_text(config, encoding="utf-8")
        safetensors.torch.save_model(self, str(save_directory / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> LanguageRanker:
        """Load a ranker from a local folder (``config.json`` + ``model.safetensors``), the short name of a ranker
        released with this package (`shipped_ranker_names`, e.g. ``"smollm2-135m-instruct-mixture"``) or a Hub id,
        looked up in that order.

        Loading is strict and never runs code: only safetensors weights are read, and every tensor must
        match the config's architecture exactly. ``kwargs`` are huggingface_hub's download options (``revision``,
        ``token``, ...), ``map_location`` (default ``"cpu"``) and `RankerConfig` fields that replace the saved ones
        (e.g. ``selection="argmax"``).
        """
        name = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(name) and name in shipped_ranker_names():
            pretrained_model_name_or_path = name = str(shipped_ranker_folder(name))
        if not os.path.isdir(name) and not is_hub_id(name):
            raise OSError(
                f"No ranker folder at {name!r}, and it is not a Hub repo id: pass the folder written by `train` / "
                "`LanguageRanker.save_pretrained` (config.json + model.safetensors), an id like 'user/ranker' or a "
                f"ranker released with this package ({', '.join(shipped_ranker_names())})."
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{pretrained_model_name_or_path}: config.json is not valid JSON ({error}). Fix or re-save the ranker "
                "with `LanguageRanker.save_pretrained`."
            ) from error

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | RankerConfig | None = None,
        map_location: str = "cpu",
        **config_overrides: Any,
    ) -> LanguageRanker:
        """The mixin's hook, given the folder's config.json as ``config``: build the ranker, then load its weights."""
        if config is None:
            raise OSError(
                f"No config.json for a Language Ranker found at {model_id!r}. A ranker folder or Hub repo holds "
                "config.json and model.safetensors, as written by `LanguageRanker.save_pretrained`."
            )
        if isinstance(config, dict):
            try:
                config = RankerConfig(**config)
            except TypeError as error:
                raise ValueError(
                    f"{model_id}'s config.json is not a Language Ranker config ({error}). "
                    "Save rankers with `LanguageRanker.save_pretrained`."
                ) from error
        with torch.random.fork_rng(devices=[]):  # loading must not move the caller's sampling RNG
            model = cls(replace(config, **config_overrides))
        weights = _weights_file(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
        _check_weights_fit(model, weights, source=model_id)
        safetensors.torch.load_model(model, weights, strict=True, device=map_location)
        return model.eval()

    def generate_model_card(self, *args: Any, **card_fields: Any) -> ModelCard:
        """This ranker's card: `card_data`, with ``card_fields`` (`RankerModelCardData` fields) replacing its own."""
        return replace(self.card_data, **card_fields).to_model_card(self.config, num_parameters=self.num_parameters)

    def push_to_hub(self, repo_id: str, *args: Any, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        """Upload to the Hub (config.json, model.safetensors, card); the card's usage snippet names ``repo_id``."""
        model_card_kwargs = {"ranker_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, *args, model_card_kwargs=model_card_kwargs, **kwargs)


def _centered(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, N, H]`` features minus the mean of each prompt's real candidates (masked slots become zeros)."""
    weights = mask[..., None].to(features.dtype)
    mean = (features * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1)
    return (features - mean) * weights


def _with_gap_to_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, N, 2]``: each value and its gap to the largest value among the prompt's real candidates."""
    largest = values.masked_fill(~mask, float("-inf")).max(-1, keepdim=True).values.clamp_min(-1e4)
    return torch.stack([values, (values - largest).masked_fill(~mask, 0)], dim=-1)


def _weights_file(model_id: str, **download: Any) -> str:
    """Path of ``model.safetensors`` in a folder or Hub repo (``download``: `hf_hub_download` options); a folder or
    repo offering only pickle weights is refused."""
    refusal = (
        f"{model_id!r} has no {WEIGHTS_NAME}. Rankers load from safetensors only: pickle checkpoints "
        f"({', '.join(PICKLE_SUFFIXES)}) can execute code when loaded and are refused. Convert one with "
        "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')` if you trust it."
    )
    if os.path.isdir(model_id):
        path = os.path.join(model_id, WEIGHTS_NAME)
        if not os.path.isfile(path):
            pickles = [name for name in os.listdir(model_id) if name.endswith(PICKLE_SUFFIXES)]
            raise OSError(refusal + (f" Found: {', '.join(sorted(pickles))}." if pickles else ""))
        return path
    try:
        return hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, **download)
    except EntryNotFoundError as error:
        raise OSError(refusal) from error


def _check_weights_fit(ranker: LanguageRanker, weights: str, source: str) -> None:
    """Refuse, in one message, weights whose tensor names or shapes differ from those the ranker's config builds
    (read from the safetensors header, before any tensor loads)."""
    with safetensors.safe_open(weights, framework="pt") as file:
        names = file.keys()  # a list: safe_open is not iterable
        stored = {name: file.get_slice(name).get_shape() for name in names}
    own = {name: list(tensor.shape) for name, tensor in ranker.state_dict().items()}
    missing, unexpected = sorted(own.keys() - stored.keys()), sorted(stored.keys() - own.keys())
    wrong_shapes = [
        f"{name}: checkpoint {stored[name]} vs ranker {own[name]}"
        for name in sorted(own.keys() & stored.keys())
        if stored[name] != own[name]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong_shapes:
        problems.append(f"wrong shapes {wrong_shapes}")
    if problems:
        raise ValueError(
            f"The weights in {source} do not match the ranker described by its config.json: "
            f"{'; '.join(problems)}. Re-save the ranker with `save_pretrained`, or fix config.json."
        )
