"""Model cards for rankers, rendered from the template in ``templates/ranker_card.md``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .configuration import RankerConfig
from .tables import markdown_table

LIBRARY_NAME = "hf-language-ranker"
REPO_URL = "https://github.com/hf-language-ranker/hf-language-ranker"
TAGS = ["language-ranker", "best-of-n", "reranking"]
PIPELINE_TAG = "text-ranking"


def _template() -> str:
    return resources.files(__package__).joinpath("templates/ranker_card.md").read_text(encoding="utf-8")


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` is a valid Hub repo id and not an existing local path."""
    if not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _candidate_counts(accuracy: Mapping[str, Mapping[Any, float]]) -> list[Any]:
    """Every N of the evaluation, numbers ascending (a label such as ``"all"`` last)."""
    counts = dict.fromkeys(n for by_n in accuracy.values() for n in by_n)
    return sorted(counts, key=lambda n: (0, n) if isinstance(n, int) else (1, str(n)))


def _eval_results(evaluation: Mapping[str, Any], dataset_type: str) -> list[EvalResult]:
    """One model-index metric per method and N."""
    return [
        EvalResult(
            task_type="text-generation",
            task_name=evaluation.get("task", "best-of-n selection"),
            dataset_type=dataset_type,
            dataset_name=evaluation.get("dataset", "held-out prompts"),
            metric_type="accuracy",
            metric_name=f"{method} accuracy@{num_candidates}",
            metric_value=float(value),
        )
        for method, by_n in evaluation.get("accuracy", {}).items()
        for num_candidates, value in by_n.items()
    ]


def _evaluation_table(evaluation: Mapping[str, Any]) -> str:
    """A markdown table: one row per method, one column per N."""
    accuracy = evaluation.get("accuracy", {})
    counts = _candidate_counts(accuracy)
    task, dataset = evaluation.get("task", "best-of-n selection"), evaluation.get("dataset", "held-out prompts")
    lines = [
        f"Task: {task}; data: {dataset}. Selection accuracy: the fraction of prompts whose chosen candidate is "
        "correct, choosing among the first N sampled candidates.",
        "",
        *markdown_table(
            ["method", *(f"N={n}" for n in counts)],
            (
                [method, *(f"{float(by_n[n]):.3f}" if n in by_n else "—" for n in counts)]
                for method, by_n in accuracy.items()
            ),
        ),
    ]
    return "\n".join(lines)


@dataclass
class RankerModelCardData:
    """What a ranker's card says beyond its config, typed: `LanguageRanker.card_data` holds one, `RankerTrainer` fills
    it while training (`hf_language_ranker.model_card_callback`), `LanguageRanker.save_pretrained` renders it into
    ``README.md``.

    Args:
        ranker_id: the ranker's Hub id, used in the usage snippet.
        datasets: Hub ids of the datasets whose prompts it was trained on.
        training: training settings and data, listed as they are given (one ``- name: value`` line each).
        evaluation: ``{"task": ..., "dataset": ..., "accuracy": {method: {n: value}}}``, the selection accuracy of
            the ranker and its baselines at each N; it becomes the card's ``model-index``.
        reproduce: the command lines that rebuild the ranker (``hf-language-ranker collect ...``, ``train ...``),
            shown in a "Reproduce" section.
    """

    ranker_id: str | None = None
    datasets: list[str] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] | None = None
    reproduce: list[str] | None = None

    def to_model_card(self, config: RankerConfig, num_parameters: int | None = None) -> ModelCard:
        """The README card of a ranker with ``config`` (base model, feature layer, head) and ``num_parameters``, with
        Hub metadata (base model, tags, datasets, model-index)."""
        base_model = config.base_model if is_hub_id(config.base_model) else None
        model_name = f"Language Ranker for {config.base_model or config.model_type or 'a causal LM'}"
        datasets = list(self.datasets) if self.datasets else None
        evaluation, eval_results = self.evaluation, None
        if evaluation and evaluation.get("accuracy"):
            eval_results = _eval_results(evaluation, datasets[0] if datasets else evaluation.get("dataset", "custom"))
        card_data = ModelCardData(
            library_name=LIBRARY_NAME,
            base_model=base_model,
            tags=TAGS,
            datasets=datasets,
            pipeline_tag=PIPELINE_TAG,
            license="apache-2.0",
            model_name=model_name if eval_results else None,
            eval_results=eval_results,
        )
        training_summary = (
            "\n".join(f"- {key}: {value}" for key, value in self.training.items())
            if self.training
            else "Not recorded (the ranker was saved without training metadata)."
        )
        evaluation_summary = (
            _evaluation_table(evaluation) if eval_results else "No evaluation results were recorded with this ranker."
        )
        return ModelCard.from_template(
            card_data,
            template_str=_template(),
            model_name=model_name,
            base_model_name=config.base_model or "<base model>",
            ranker_id=self.ranker_id or "<user>/<this-ranker>",
            repo_url=REPO_URL,
            num_parameters=f"{num_parameters:,}" if num_parameters is not None else None,
            training_summary=training_summary,
            evaluation_summary=evaluation_summary,
            reads_answers=config.reads_answers(),
            reproduce="\n".join(self.reproduce) if self.reproduce else None,
            **config.to_dict(),
        )
