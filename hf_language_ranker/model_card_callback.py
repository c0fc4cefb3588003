"""`RankerModelCardCallback`: fills a ranker's card data while `RankerTrainer` trains it (setfit's pattern).

A module of its own so that importing the library does not import the Trainer's machinery.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .model_card import is_hub_id
from .modeling import LanguageRanker


class RankerModelCardCallback(TrainerCallback):
    """Writes how ``ranker`` is trained into its `card_data`, which `save_pretrained` renders into the card: the
    settings and data when the trainer is built, the optimizer steps as they are taken, the latest evaluation
    (``eval_top1_accuracy`` with the first-sample and oracle baselines) as it is reported.

    Args:
        ranker: the ranker `RankerTrainer` trains, unwrapped.
        train_prompts: the number of training prompts, if known.
    """

    def __init__(self, ranker: LanguageRanker, train_prompts: int | None = None) -> None:
        self.ranker = ranker
        self.train_prompts = train_prompts

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        card, config = self.ranker.card_data, self.ranker.config
        card.ranker_id = args.hub_model_id or card.ranker_id
        if is_hub_id(args.dataset_name):
            card.datasets = [args.dataset_name]
        card.training = {
            "loss": config.loss,
            "group_size": args.group_size or "all candidates",
            "feature_layer": config.feature_layer,
            "epochs": args.num_train_epochs,
            "learning_rate": args.learning_rate,
            "batch_size (prompts)": args.per_device_train_batch_size * args.world_size,
            "optimizer_steps": state.global_step,
        }
        if self.train_prompts is not None:
            card.training["train_prompts"] = self.train_prompts

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.ranker.card_data.training["optimizer_steps"] = state.global_step

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float],
        **kwargs: Any,
    ):
        if "eval_top1_accuracy" not in metrics:  # another split's prefix, or not a ranking evaluation
            return
        n = int(metrics.get("eval_num_candidates", 0)) or "all"
        self.ranker.card_data.evaluation = {
            "dataset": args.dataset_name or "held-out prompts",
            "accuracy": {
                "Language Ranker": {n: metrics["eval_top1_accuracy"]},
                "first sample": {n: metrics["eval_first_sample_accuracy"]},
                "oracle (pass@N)": {n: metrics["eval_oracle_accuracy"]},
            },
        }
