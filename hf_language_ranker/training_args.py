"""`RankerTrainingArguments`: every recipe switch of ranker training, the one source of its defaults.

``hf-language-ranker train`` builds its options from these fields with `transformers.HfArgumentParser`, so the
command line, `train_ranker(**overrides)` and `RankerTrainer(args=...)` share one set of names and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from .configuration import HEAD_TYPES, LOSS_TYPES, SELECTION_MODES, RankerConfig
from .losses import LOSSES

_RANKER_FIELDS = {f.name: f for f in fields(RankerConfig)}


def _ranker_default(name: str) -> Any:
    return _RANKER_FIELDS[name].default


@dataclass
class RankerTrainingArguments(TrainingArguments):
    """`TrainingArguments` with ranker options and defaults that suit a tiny model trained on a CPU.

    Every recipe switch lives here, the one source of defaults: ``hf-language-ranker train`` generates its options
    from these fields with `transformers.HfArgumentParser`. The head options (``head``, ``projection_dim``,
    ``num_ranker_layers``, ``dropout``, ``use_prompt_feature``, ``use_mean_log_prob``, ``use_vote_share``,
    ``use_centrality``, ``center_features``) are used only when `RankerTrainer` builds the ranker itself
    (``model=None``); ``loss`` and ``selection`` are written to the ranker's config either way.
    """

    loss: str = field(
        default="listwise",
        metadata={
            "help": "Ranking loss: listwise (paper default), marginal, pairwise or pointwise.",
            "choices": LOSS_TYPES,
        },
    )
    group_size: int | None = field(
        default=8,
        metadata={"help": "Candidates per training group, sampled per prompt at each step; None or 0 = all of them."},
    )
    feature_layer: int | None = field(
        default=None,
        metadata={
            "help": "Hidden-state layer to train on; default: the only collected layer, else the paper's layer at "
            "60 percent of the depth if collected, else the middle collected layer."
        },
    )
    head: str = field(
        default=_ranker_default("head"), metadata={"help": "Ranker head: listwise or pointwise.", "choices": HEAD_TYPES}
    )
    projection_dim: int = field(default=_ranker_default("projection_dim"), metadata={"help": "Projected feature size."})
    num_ranker_layers: int = field(
        default=_ranker_default("num_layers"), metadata={"help": "Transformer layers of the listwise head."}
    )
    dropout: float = field(default=_ranker_default("dropout"), metadata={"help": "Dropout inside the ranker head."})
    use_prompt_feature: bool = field(
        default=_ranker_default("use_prompt_feature"), metadata={"help": "Feed the prompt's feature to the head."}
    )
    use_mean_log_prob: bool = field(
        default=_ranker_default("use_mean_log_prob"),
        metadata={"help": "Also feed each candidate's mean token log-probability to the head."},
    )
    use_vote_share: bool = field(
        default=_ranker_default("use_vote_share"),
        metadata={"help": "Also feed each candidate's answer vote share (from the dataset's parsed answers)."},
    )
    use_centrality: bool = field(
        default=_ranker_default("use_centrality"),
        metadata={"help": "Also feed each candidate's feature centrality among its prompt's candidates."},
    )
    center_features: bool = field(
        default=_ranker_default("center_features"),
        metadata={"help": "Subtract the mean of each prompt's candidate features before the head (task-agnostic)."},
    )
    selection: str = field(
        default=_ranker_default("selection"),
        metadata={
            "help": "How `generate` picks among the scored candidates by default: argmax (best score) or weighted_vote "
            "(softmax weights summed per parsed answer; needs an answer extractor). Written to config.json.",
            "choices": SELECTION_MODES,
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub id of the candidate dataset, recorded in the model card."}
    )

    # TrainingArguments defaults re-tuned for a model of < 0.5M parameters on frozen features
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a ratio of all steps if < 1."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    num_train_epochs: float = field(default=8.0, metadata={"help": "Passes over the training prompts."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Prompts per training batch and device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Prompts per evaluation batch and device."})
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log: no, steps or epoch."})
    save_strategy: str = field(default="no", metadata={"help": "When to checkpoint: no, steps, epoch or best."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the trainer selects the feature columns itself."}
    )
    dataloader_pin_memory: bool = field(default=False, metadata={"help": "Pin batches in memory (for GPUs)."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every ranker parameter takes part in every step, so DDP need not search."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        LOSSES[self.loss]  # an unknown name raises the registry's error
        self._check_ranker_fields()
        if self.group_size is not None and self.group_size < 0:
            raise ValueError(
                f"group_size must be a positive number of candidates or None/0 for all, got {self.group_size}."
            )
        if self.group_size == 1 and self.loss != "pointwise":
            raise ValueError(
                f"group_size=1 leaves nothing to rank for the {self.loss} loss: use group_size >= 2 (or None for all "
                "candidates), or loss='pointwise'."
            )
        if self.remove_unused_columns:
            raise ValueError(
                "RankerTrainingArguments needs remove_unused_columns=False: the feature columns are not arguments of "
                "LanguageRanker.forward, and the trainer picks the columns it needs itself."
            )

    def _check_ranker_fields(self) -> None:
        """Types and ranges of the ranker's own fields (transformers checks the Trainer's)."""

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        checks = {
            "group_size": (self.group_size is None or is_int(self.group_size), "an integer or None"),
            "feature_layer": (self.feature_layer is None or is_int(self.feature_layer), "an integer or None"),
            "head": (self.head in HEAD_TYPES, " or ".join(map(repr, HEAD_TYPES))),
            "selection": (self.selection in SELECTION_MODES, " or ".join(map(repr, SELECTION_MODES))),
            "projection_dim": (is_int(self.projection_dim) and self.projection_dim >= 1, "an integer >= 1"),
            "num_ranker_layers": (is_int(self.num_ranker_layers) and self.num_ranker_layers >= 1, "an integer >= 1"),
            "dropout": (
                isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1,
                "a number in [0, 1)",
            ),
        }
        for flag in ("use_prompt_feature", "use_mean_log_prob", "use_vote_share", "use_centrality", "center_features"):
            checks[flag] = (isinstance(getattr(self, flag), bool), "True or False")
        for name, (valid, expected) in checks.items():
            if not valid:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}.")

    def ranker_options(self) -> dict[str, Any]:
        """The `RankerConfig` head options these arguments describe."""
        return {
            "head": self.head,
            "projection_dim": self.projection_dim,
            "num_layers": self.num_ranker_layers,
            "dropout": self.dropout,
            "use_prompt_feature": self.use_prompt_feature,
            "use_mean_log_prob": self.use_mean_log_prob,
            "use_vote_share": self.use_vote_share,
            "use_centrality": self.use_centrality,
            "center_features": self.center_features,
            "loss": self.loss,
            "selection": self.selection,
        }
