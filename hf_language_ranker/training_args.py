"""`RankerTrainingArguments`: the training loop's options and the ranker recipe, the one source of their defaults.

``hf-language-ranker train`` builds its options from these fields with `transformers.HfArgumentParser`, so the
command line, `train_ranker(**overrides)` and `RankerTrainer(args=...)` share one set of names and defaults. The recipe
arguments (head, inputs, loss, pick rule) are not declared here: each is a `RankerConfig` field (`recipe_field`),
added by `with_recipe_arguments` with its default and help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, get_type_hints

from transformers import TrainingArguments

from .configuration import (
    OPTIONAL_INT,
    RECIPE_FIELDS,
    RankerConfig,
    check_recipe,
    check_value,
    recipe_argument,
)


def with_recipe_arguments(cls: type) -> type:
    """Give the class ``cls`` (before `dataclass` reads it) one field per recipe field of `RankerConfig`, first: its
    argument name (`recipe_argument`), type, default and help, and a named choice's names as the CLI's choices."""
    types = get_type_hints(RankerConfig)
    recipe = {}
    for config_field in RECIPE_FIELDS.values():
        name = recipe_argument(config_field)
        metadata = {"help": config_field.metadata["help"]}
        if config_field.metadata["choices"] is not None:
            metadata["choices"] = config_field.metadata["choices"]
        recipe[name] = types[config_field.name]
        default = {"default_factory": config_field.default_factory} if config_field.default is MISSING else {}
        setattr(cls, name, field(**(default or {"default": config_field.default}), metadata=metadata))
    cls.__annotations__ = {**recipe, **cls.__annotations__}
    return cls


def recipe_as_arguments(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The `RankerTrainingArguments` fields of a recipe written as `RankerConfig` overrides, e.g. ``{"head":
    "pointwise", "num_layers": 1}`` -> ``{"head": "pointwise", "num_ranker_layers": 1}``. A name that is not a recipe
    field of `RankerConfig` raises `RECIPE_FIELDS`' error, which names the closest field."""
    return {recipe_argument(RECIPE_FIELDS[name]): value for name, value in recipe.items()}


@dataclass
@with_recipe_arguments
class RankerTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the ranker recipe and defaults that suit a tiny model trained on a CPU.

    Every recipe switch is an argument here, the one source of defaults: ``hf-language-ranker train`` generates its
    options from these fields with `transformers.HfArgumentParser`. The recipe arguments are `RankerConfig`'s recipe
    fields under the same names (``num_layers`` is ``num_ranker_layers``); `ranker_options` maps them back. The head
    and input options are used only when `RankerTrainer` builds the ranker itself (``model=None``); ``loss`` and
    ``selection`` are written to the ranker's config either way.
    """

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
        check_recipe(self, as_arguments=True)
        check_value("group_size", self.group_size, OPTIONAL_INT)
        check_value("feature_layer", self.feature_layer, OPTIONAL_INT)
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

    def ranker_options(self) -> dict[str, Any]:
        """The `RankerConfig` recipe fields these arguments describe, by their config names."""
        return {
            config_field.name: getattr(self, recipe_argument(config_field)) for config_field in RECIPE_FIELDS.values()
        }
