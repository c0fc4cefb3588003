"""Train a `LanguageRanker` on a collected candidate dataset with `transformers.Trainer`.

The dataset has the layout of `hf_language_ranker.candidates` (one row per prompt). Training follows the paper:
each step scores, for every prompt in the batch, a group of ``group_size`` of its candidates holding at least one
correct and (when there is one) one incorrect candidate; evaluation ranks all candidates of every prompt.
``accelerate launch`` runs the same code on several processes.

    from hf_language_ranker.training import train_ranker

    ranker = train_ranker(train_dataset, eval_dataset, output_dir="my-ranker")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from transformers import EvalPrediction, PrinterCallback, Trainer, set_seed
from transformers.utils import logging

from .candidates import (
    ANSWER_IDS,
    CORRECT_THRESHOLD,
    LABELS,
    MEAN_LOG_PROBS,
    CollectionInfo,
    candidate_feature_column,
    check_feature_layer,
    dataset_answer_id_rows,
    feature_layers,
    prompt_feature_column,
)
from .configuration import RankerConfig, default_feature_layer, input_slots
from .features import stack_layers
from .model_card_callback import RankerModelCardCallback
from .modeling import LanguageRanker
from .training_args import RankerTrainingArguments
from .verifiers import BUILTIN_VERIFIERS

logger = logging.get_logger(__name__)


# ------------------------------------------------------------------------------------------------ dataset helpers
def resolve_training_layer(dataset: Dataset, feature_layer: int | None = None) -> int:
    """The layer to train on: ``feature_layer`` if collected, else the only, the paper's, or the middle layer."""
    return _training_layer(dataset, feature_layer, CollectionInfo.from_dataset(dataset))


def _training_layer(dataset: Dataset, feature_layer: int | None, info: CollectionInfo | None) -> int:
    """`resolve_training_layer` with the dataset's `CollectionInfo` already read."""
    layers = feature_layers(dataset)
    if not layers:
        raise ValueError(
            f"The dataset has no '{candidate_feature_column('<layer>')}' columns (columns: {dataset.column_names}). "
            "Train on a candidate dataset made by hf_language_ranker's collection (see hf_language_ranker.candidates)."
        )
    if feature_layer is not None:
        check_feature_layer(dataset, feature_layer)
        return feature_layer
    if len(layers) == 1:
        return layers[0]
    if info is not None and default_feature_layer(info.num_hidden_layers) in layers:
        return default_feature_layer(info.num_hidden_layers)
    return layers[len(layers) // 2]


def _stored_float_dtype(dataset: Dataset, column: str) -> np.dtype:
    """The float type a (nested) feature column stores, e.g. float16; float32 if it is not a float column."""
    arrow_type = dataset.data.schema.field(column).type
    while True:
        if isinstance(arrow_type, pa.ExtensionType):  # datasets' Array2D
            arrow_type = arrow_type.storage_type
        elif not pa.types.is_floating(arrow_type) and hasattr(arrow_type, "value_type"):
            arrow_type = arrow_type.value_type
        else:
            break
    return np.dtype(arrow_type.to_pandas_dtype()) if pa.types.is_floating(arrow_type) else np.dtype(np.float32)


def feature_dataset(
    dataset: Dataset,
    layers: int | Sequence[int],
    mean_log_probs: bool = False,
    answer_ids: bool = False,
    answer_poolings: Sequence[str] = (),
) -> Dataset:
    """``dataset`` viewed as numpy arrays of only the columns training reads, in the features' stored precision.

    ``layers``: the layer, or the layers (``RankerConfig.input_layers``), whose features the ranker reads, also in
    each of the ``answer_poolings`` (``RankerConfig.answer_poolings``) beside the last token's. Keeping
    float16 features in float16 (datasets would widen them to float32) halves the reading time; labels share that
    type, which is exact for 0, 0.5 and 1. ``mean_log_probs`` adds that column and ``answer_ids`` an ``answer_ids``
    column built from the parsed ``answers`` (small integers, exact in float16), for rankers that read them.
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    feature_columns = [prompt_feature_column(layer) for layer in layers]
    slots = input_slots(layers, answer_poolings)
    feature_columns += [candidate_feature_column(layer, pooling) for pooling, layer in slots]
    columns = [*feature_columns, LABELS]
    columns += [MEAN_LOG_PROBS] if mean_log_probs else []
    if answer_ids:
        ids = dataset_answer_id_rows(dataset)
        dataset = dataset.remove_columns([ANSWER_IDS]) if ANSWER_IDS in dataset.column_names else dataset
        dataset = dataset.add_column(ANSWER_IDS, ids)
        columns.append(ANSWER_IDS)
    missing = [name for name in columns if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The candidate dataset lacks the column(s) {missing} needed to train on layer(s) {layers}"
            f"{' with mean log-probs' if mean_log_probs else ''}; it has {dataset.column_names}. Collect the dataset "
            "with `collect_candidates`, which writes labels, token statistics and the features of the chosen layers."
        )
    dtype = np.result_type(*(_stored_float_dtype(dataset, column) for column in feature_columns))
    return dataset.with_format("numpy", columns=columns, dtype=dtype)


def _hidden_size(features: Dataset, feature_layer: int) -> int | None:
    """Width of the prompt features of a `feature_dataset` view (None when it is empty)."""
    return len(features[0][prompt_feature_column(feature_layer)]) if len(features) else None


def ranker_for_dataset(dataset: Dataset, feature_layer: int | None = None, **head_options: Any) -> LanguageRanker:
    """An untrained ranker sized for a candidate dataset, with the model fingerprint from its `CollectionInfo`.

    ``head_options`` are `RankerConfig` fields such as ``head="pointwise"``.
    """
    return _ranker_for(dataset, feature_layer, CollectionInfo.from_dataset(dataset), head_options)


def _ranker_for(
    dataset: Dataset, feature_layer: int | None, info: CollectionInfo | None, head_options: dict[str, Any]
) -> LanguageRanker:
    """`ranker_for_dataset` with the dataset's `CollectionInfo` already read."""
    layer = _training_layer(dataset, feature_layer, info)
    read_layers = [layer, *(head_options.get("extra_layers") or [])]
    for pooling, read_layer in input_slots(read_layers, head_options.get("answer_poolings") or []):
        check_feature_layer(dataset, read_layer, pooling)
    hidden_size = _hidden_size(feature_dataset(dataset, layer), layer)
    if hidden_size is None:
        raise ValueError("The candidate dataset is empty: there is nothing to size or train a ranker on.")
    if info is None:
        logger.warning(
            "The candidate dataset carries no CollectionInfo, so the ranker cannot record which model it fits. "
            "To record it, pass `model=LanguageRanker.for_model(base_model_config, feature_layer=...)` to the trainer."
        )
    config = RankerConfig(
        hidden_size=hidden_size,
        num_hidden_layers=info.num_hidden_layers if info else max(feature_layers(dataset)),
        feature_layer=layer,
        model_type=info.model_type if info else None,
        base_model=info.model if info else None,
        **head_options,
    )
    return LanguageRanker(config)


def _builtin_answer_parser(info: CollectionInfo | None) -> str | None:
    """The built-in verifier whose parser made the dataset's answers (from its `CollectionInfo`), recorded so
    `generate` can use it."""
    return info.verifier if info is not None and info.verifier in BUILTIN_VERIFIERS else None


# ------------------------------------------------------------------------------------------------------ collator
@dataclass
class CandidateGroupCollator:
    """Batches candidate-dataset rows into the arguments of `LanguageRanker.forward`.

    With ``group_size`` set, each prompt contributes a random group of that many of its candidates (without
    replacement) that holds at least one correct candidate and one incorrect candidate whenever the prompt has
    them; groups are padded to ``group_size`` and masked when a prompt has fewer candidates. With ``group_size``
    ``None`` or 0, every candidate is kept in its original order (evaluation), padded to the batch's largest count.
    Randomness comes from torch's global generator, which `Trainer` seeds (and DataLoader workers re-seed).
    """

    #: the layer, or the layers in the order of ``RankerConfig.input_layers``, whose features are batched
    layers: int | Sequence[int]
    group_size: int | None = None
    #: also batch each candidate's mean log-probability (``mean_log_probs``), for rankers that read it
    mean_log_probs: bool = False
    #: also batch each candidate's answer id (``answer_ids``, -1 for none and padding), for vote-share rankers
    answer_ids: bool = False
    #: the answer poolings (``RankerConfig.answer_poolings``) batched beside the last token's features, at every layer
    answer_poolings: Sequence[str] = ()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        layers = [self.layers] if isinstance(self.layers, int) else list(self.layers)
        slots = input_slots(layers, self.answer_poolings)  # the order of RankerConfig.input_features
        prompt_by_layer = {
            layer: np.stack([np.asarray(row[prompt_feature_column(layer)]) for row in features]) for layer in layers
        }
        prompts = stack_layers({(pooling, layer): prompt_by_layer[layer] for pooling, layer in slots}, slots)
        hidden = prompts.shape[-1]
        labels = [np.asarray(row[LABELS], dtype=np.float32).reshape(-1) for row in features]
        picks = [self._pick(row_labels) for row_labels in labels]
        width = self.group_size or max((len(pick) for pick in picks), default=0)
        candidates = np.zeros((len(features), width, *prompts.shape[1:]), dtype=prompts.dtype)
        group_labels = np.zeros((len(features), width), dtype=np.float32)
        mask = np.zeros((len(features), width), dtype=bool)
        log_probs = np.zeros((len(features), width), dtype=np.float32)
        ids = np.full((len(features), width), -1, dtype=np.int64)
        for row, (feature_row, row_labels, pick) in enumerate(zip(features, labels, picks, strict=True)):
            by_slot = {
                slot: np.asarray(feature_row[candidate_feature_column(slot[1], slot[0])]).reshape(-1, hidden)[pick]
                for slot in slots
            }
            candidates[row, : len(pick)] = stack_layers(by_slot, slots)
            group_labels[row, : len(pick)] = row_labels[pick]
            mask[row, : len(pick)] = True
            if self.mean_log_probs:
                log_probs[row, : len(pick)] = np.asarray(feature_row[MEAN_LOG_PROBS], dtype=np.float32)[pick]
            if self.answer_ids:
                ids[row, : len(pick)] = np.asarray(feature_row[ANSWER_IDS], dtype=np.float32)[pick].astype(np.int64)
        batch = {
            "prompt_features": torch.from_numpy(prompts),
            "candidate_features": torch.from_numpy(candidates),
            "candidate_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(group_labels),
        }
        if self.mean_log_probs:
            batch["mean_log_probs"] = torch.from_numpy(log_probs)
        if self.answer_ids:
            batch["answer_ids"] = torch.from_numpy(ids)
        return batch

    def _pick(self, labels: np.ndarray) -> np.ndarray:
        """Indices of the candidates to score for one prompt."""
        if not self.group_size:
            return np.arange(len(labels))
        order = torch.randperm(len(labels)).numpy()
        correct = labels[order] >= CORRECT_THRESHOLD
        anchors = [int(np.argmax(kind)) for kind in (correct, ~correct) if kind.any()]
        group = np.concatenate([order[anchors], np.delete(order, anchors)])[: self.group_size]
        return group[torch.randperm(len(group)).numpy()]


# ------------------------------------------------------------------------------------------------------- metrics
def ranking_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Best-of-N accuracies over ALL evaluated prompts (a prompt without a correct candidate counts as a miss).

    ``top1_accuracy``: the ranker's highest-scored candidate is correct (label >= 0.5); ``oracle_accuracy``: some
    candidate is correct (the ceiling of any selector); ``first_sample_accuracy``: the first sampled candidate is
    correct (plain sampling, no ranking); ``num_candidates``: the most candidates any prompt has. Padded slots
    (score ``-inf`` or label ``-100``) are ignored.
    """
    scores = np.asarray(prediction.predictions, dtype=np.float64)
    labels = np.asarray(prediction.label_ids, dtype=np.float64)
    valid = np.isfinite(scores) & (labels >= 0)
    correct = valid & (labels >= CORRECT_THRESHOLD)
    best = np.where(valid, scores, -np.inf).argmax(-1)
    rows = np.arange(len(scores))
    return {
        "top1_accuracy": float((correct[rows, best] & valid.any(-1)).mean()),
        "oracle_accuracy": float(correct.any(-1).mean()),
        "first_sample_accuracy": float(correct[:, 0].mean()),
        "num_candidates": float(valid.sum(-1).max(initial=0)),
    }


# -------------------------------------------------------------------------------------------------------- trainer
class RankerTrainer(Trainer):
    """`transformers.Trainer` for a `LanguageRanker` on candidate datasets (see `hf_language_ranker.candidates`).

    With ``model=None`` the ranker is built from the data (`ranker_for_dataset`) and the head options of ``args``;
    ``args.loss`` becomes the ranker's loss either way. The collator (`CandidateGroupCollator`) and the metrics
    (`ranking_metrics`, reported as ``eval_top1_accuracy`` and so on) are set automatically. `save_model` writes
    ``config.json``, ``model.safetensors`` and a ``README.md`` card that `LanguageRanker.from_pretrained` reads.
    """

    def __init__(
        self,
        model: LanguageRanker | None = None,
        args: RankerTrainingArguments | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        args = args if args is not None else RankerTrainingArguments()
        if not isinstance(args, RankerTrainingArguments):
            raise TypeError(f"RankerTrainer needs RankerTrainingArguments, got {type(args).__name__}.")
        reference = train_dataset if train_dataset is not None else eval_dataset
        if isinstance(reference, dict):
            reference = next(iter(reference.values()), None)
        if reference is None:
            raise ValueError("RankerTrainer needs a train_dataset or an eval_dataset (a candidate dataset).")
        info = CollectionInfo.from_dataset(reference)  # read once: model fingerprint, verifier, feature dtype
        if model is None:
            set_seed(args.seed)  # a reproducible initialisation, as Trainer gives a model built by `model_init`
            model = _ranker_for(reference, args.feature_layer, info, args.ranker_options())
        elif args.feature_layer is not None and args.feature_layer != model.config.feature_layer:
            raise ValueError(
                f"args.feature_layer={args.feature_layer} but the given ranker reads layer "
                f"{model.config.feature_layer}. "
                "Leave feature_layer unset to train on the ranker's layer, or build a ranker for that layer."
            )
        model.config.loss = args.loss
        model.config.selection = args.selection
        if model.config.use_vote_share and model.config.answer_extractor is None:
            model.config.answer_extractor = _builtin_answer_parser(info)
        if info is not None and info.model_dtype is not None:  # the dtype of the features it now learns from
            model.config.model_dtype = info.model_dtype
        self.ranker_config = model.config
        self.eval_data_collator = CandidateGroupCollator(
            model.config.input_layers,
            mean_log_probs=model.config.use_mean_log_prob,
            answer_ids=model.config.use_vote_share,
            answer_poolings=model.config.answer_poolings,
        )
        trainer_kwargs.setdefault("compute_metrics", ranking_metrics)
        train_prompts = len(train_dataset) if train_dataset is not None else None
        trainer_kwargs["callbacks"] = [
            *(trainer_kwargs.get("callbacks") or []),
            RankerModelCardCallback(model, train_prompts),
        ]
        super().__init__(
            model=model,
            args=args,
            data_collator=replace(self.eval_data_collator, group_size=args.group_size),
            train_dataset=self._features(train_dataset),
            eval_dataset=self._features(eval_dataset),
            **trainer_kwargs,
        )
        if args.logging_strategy == "no":  # no logs asked for: Trainer would still print its closing summary
            self.remove_callback(PrinterCallback)

    def _features(self, dataset: Dataset | dict[str, Dataset] | str | None) -> Any:
        """Candidate datasets viewed as the columns of the ranker's layer; anything else passes through."""
        if isinstance(dataset, dict):
            return {name: self._features(split) for name, split in dataset.items()}
        if not isinstance(dataset, Dataset):
            return dataset
        config = self.ranker_config
        features = feature_dataset(
            dataset, config.input_layers, config.use_mean_log_prob, config.use_vote_share, config.answer_poolings
        )
        hidden_size = _hidden_size(features, config.feature_layer)
        if hidden_size not in (None, self.ranker_config.hidden_size):
            raise ValueError(
                f"The dataset's features have hidden size {hidden_size} but the ranker reads "
                f"{self.ranker_config.hidden_size}. Train on features of the ranker's base model, or pass model=None."
            )
        return features

    # ------------------------------------------------------------------------------------------- data loading
    @contextmanager
    def _collating_all_candidates(self) -> Iterator[None]:
        """Evaluation and prediction rank every candidate of every prompt."""
        training_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            yield
        finally:
            self.data_collator = training_collator

    def get_eval_dataloader(self, eval_dataset: str | Dataset | None = None) -> torch.utils.data.DataLoader:
        with self._collating_all_candidates():
            return super().get_eval_dataloader(self._features(eval_dataset))

    def get_test_dataloader(self, test_dataset: Dataset) -> torch.utils.data.DataLoader:
        with self._collating_all_candidates():
            return super().get_test_dataloader(self._features(test_dataset))

    # ------------------------------------------------------------------------------------------------ saving
    @property
    def ranker(self) -> LanguageRanker:
        """The trained ranker, unwrapped from any distributed wrapper."""
        return self.accelerator.unwrap_model(self.model)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the ranker with `LanguageRanker.save_pretrained` (config.json, model.safetensors, README.md)."""
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        if self.args.should_save:
            self.ranker.save_pretrained(output_dir)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Write the ranker's own card (`Trainer.push_to_hub` calls this before uploading)."""
        if self.args.should_save:
            self.ranker.generate_model_card().save(Path(self.args.output_dir) / "README.md")


def train_ranker(
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    output_dir: str = "language-ranker",
    model: LanguageRanker | None = None,
    **argument_overrides: Any,
) -> LanguageRanker:
    """Train a ranker with `RankerTrainer`, evaluate it on ``eval_dataset``, save it to ``output_dir`` and return it.

    ``argument_overrides`` are `RankerTrainingArguments` fields, e.g. ``loss="pairwise"`` or ``num_train_epochs=4``.
    """
    args = RankerTrainingArguments(output_dir=output_dir, **argument_overrides)
    trainer = RankerTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset)
    trainer.train()
    if eval_dataset is not None:
        trainer.evaluate()
    trainer.save_model()
    return trainer.ranker.eval()
