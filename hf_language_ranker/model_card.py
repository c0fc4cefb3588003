"""Model cards for rankers, rendered from the template in ``model_cards/``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration import RankerConfig

LIBRARY_NAME = "hf-language-ranker"
REPO_URL = "https://github.com/hf-language-ranker/hf-language-ranker"
TAGS = ["language-ranker", "best-of-n", "reranking"]
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _template() -> str:
    return resources.files(__package__).joinpath("model_cards/ranker_card.md").read_text(encoding="utf-8")


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` looks like a Hub repo id (not a local path)."""
    return bool(name) and bool(_HUB_ID.match(name)) and not name.startswith((".", "/"))


def _eval_results(evaluation: Mapping[str, Any], model_name: str) -> list[EvalResult]:
    """``evaluation``: ``{"task": ..., "dataset": ..., "accuracy": {method: {n: value}}}``."""
    results = []
    for method, by_n in evaluation.get("accuracy", {}).items():
        for num_candidates, value in by_n.items():
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name=evaluation.get("task", "best-of-n selection"),
                    dataset_type=evaluation.get("dataset", "custom"),
                    dataset_name=evaluation.get("dataset", "custom"),
                    metric_type="accuracy",
                    metric_name=f"{method} accuracy@{num_candidates}",
                    metric_value=float(value),
                )
            )
    return results


def ranker_model_card(
    config: RankerConfig,
    *,
    ranker_id: str | None = None,
    num_parameters: int | None = None,
    datasets: Sequence[str] | None = None,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    **_: Any,
) -> ModelCard:
    """Render a ranker's README card with Hub metadata (base model, tags, datasets, model-index)."""
    base_model = config.base_model if is_hub_id(config.base_model) else None
    model_name = f"Language Ranker for {config.base_model or config.model_type or 'a causal LM'}"
    eval_results = _eval_results(evaluation, model_name) if evaluation else None
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=base_model,
        tags=TAGS,
        datasets=list(datasets) if datasets else None,
        pipeline_tag="text-ranking",
        license="apache-2.0",
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )
    training_summary = (
        "\n".join(f"- {key}: {value}" for key, value in training.items())
        if training
        else "Not recorded (the ranker was saved without training metadata)."
    )
    evaluation_summary = (
        "\n".join(
            f"- {method}: " + ", ".join(f"N={n}: {float(v):.3f}" for n, v in by_n.items())
            for method, by_n in evaluation.get("accuracy", {}).items()
        )
        if evaluation
        else "No evaluation results were recorded with this ranker."
    )
    return ModelCard.from_template(
        card_data,
        template_str=_template(),
        model_name=model_name,
        base_model_name=config.base_model or "<base model>",
        ranker_id=ranker_id or "<user>/<this-ranker>",
        repo_url=REPO_URL,
        num_parameters=f"{num_parameters:,}" if num_parameters is not None else "small",
        training_summary=training_summary,
        evaluation_summary=evaluation_summary,
        **config.to_dict(),
    )
