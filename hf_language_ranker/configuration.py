"""Configuration of a Language Ranker and the generation flags that switch ranked decoding on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from .agreement import PICK_RULES
from .heads import HEADS
from .layer_mix import LAYER_MIXES
from .losses import LOSSES
from .pooling import ANSWER_POOLING_LIST, is_answer_pooling_list
from .registry import Registry

#: Names of the `GenerationConfig` attributes that ranked generation reads.
GENERATION_FLAGS = ("num_candidates", "ranker", "ranker_selection", "answer_extractor")

#: Default number of sampled candidates when a ranker is given without `num_candidates`.
DEFAULT_NUM_CANDIDATES = 16

#: Fraction of the decoder depth used for the default feature layer (the paper's choice).
DEFAULT_LAYER_FRACTION = 0.6

#: the names of the built-in heads, pick rules (the values of ``RankerConfig.selection`` and of ``ranker_selection``
#: on `generate`) and losses, read from their registries, the one source of each
HEAD_TYPES = tuple(HEADS)
SELECTION_MODES = tuple(PICK_RULES)
LOSS_TYPES = tuple(LOSSES)
#: dtypes a model can be loaded in (`hf_language_ranker.embedded.load_model_and_tokenizer`, the CLI's ``--dtype``);
#: ``"auto"`` is bfloat16 where the hardware computes it natively, else float32 (`embedded.auto_dtype`)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


#: a value test and the words an error uses for what it expects, e.g. ``(lambda v: v >= 1, "a number >= 1")``
Check = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


POSITIVE_INT: Check = (lambda value: _is_int(value) and value >= 1, "an integer >= 1")
OPTIONAL_INT: Check = (lambda value: value is None or _is_int(value), "an integer or None")
SWITCH: Check = (lambda value: isinstance(value, bool), "True or False")
LAYER_LIST: Check = (
    lambda value: isinstance(value, list) and all(_is_int(layer) and layer >= 0 for layer in value),
    "a list of layer indices >= 0",
)
POOLING_LIST: Check = (is_answer_pooling_list, ANSWER_POOLING_LIST)
FRACTION: Check = (
    lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1,
    "a number in [0, 1)",
)


def check_value(name: str, value: Any, check: Check) -> None:
    """Raise ``<name> must be <expected>, got <value>`` unless ``value`` passes ``check``."""
    valid, expected = check
    if not valid(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}.")


def recipe_field(
    default: Any, help: str, *, check: Check | None = None, choices: Registry | None = None, argument: str = ""
) -> Any:
    """A `RankerConfig` field of the recipe (a head, input, loss or pick-rule choice), declared once with its help.

    `RankerTrainingArguments`, and with it ``hf-language-ranker train``, gets one argument per recipe field, named
    ``argument`` (default: the field's own name), with this default and help. Values are validated by ``check`` or,
    for a named choice, by the ``choices`` registry (whose names are the argument's choices).
    """
    metadata = {"help": help, "recipe": True, "check": check, "choices": choices, "argument": argument}
    if isinstance(default, list):  # a fresh list per instance
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RankerConfig:
    """Everything needed to rebuild a `LanguageRanker` and to check that it fits a base model.

    The first block is the fingerprint of the LLM whose hidden states the ranker reads; the second block is the
    recipe of the ranker itself (`recipe_field`: head, inputs, loss and pick rule, the one place they are declared;
    `RankerTrainingArguments` takes its recipe arguments from here), with what training recorded about its data.
    """

    hidden_size: int = field(metadata={"help": "Hidden size of the base model (the width of the features)."})
    num_hidden_layers: int = field(metadata={"help": "Decoder layers of the base model."})
    feature_layer: int = field(
        metadata={"help": "The hidden-state layer the ranker reads (0 = embeddings, num_hidden_layers = the last)."}
    )
    model_type: str | None = field(default=None, metadata={"help": "transformers model type of the base model."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id or path of the base model."})
    model_dtype: str | None = field(
        default=None,
        metadata={
            "help": "The dtype the base model computed the training features in (bfloat16); serving in another one "
            "warns. None: not recorded (rankers from before this field, or trained on data that does not say)."
        },
    )

    head: str = recipe_field("listwise", "Ranker head: listwise or pointwise.", choices=HEADS)
    projection_dim: int = recipe_field(64, "Projected feature size.", check=POSITIVE_INT)
    num_layers: int = recipe_field(
        2, "Transformer layers of the listwise head.", check=POSITIVE_INT, argument="num_ranker_layers"
    )
    num_attention_heads: int = recipe_field(
        4, "Attention heads of the listwise head (they divide projection_dim).", check=POSITIVE_INT
    )
    intermediate_size: int = recipe_field(
        128, "Hidden size of the listwise head's feed-forward blocks and of the pointwise MLP.", check=POSITIVE_INT
    )
    dropout: float = recipe_field(0.1, "Dropout inside the ranker head.", check=FRACTION)
    use_prompt_feature: bool = recipe_field(True, "Feed the prompt's feature to the head.", check=SWITCH)
    use_mean_log_prob: bool = recipe_field(
        False,
        "Also feed each candidate's mean token log-probability (computed while sampling) to the head.",
        check=SWITCH,
    )
    use_vote_share: bool = recipe_field(
        False,
        "Also feed each candidate's answer vote share (from the dataset's parsed answers; serving needs an answer "
        "extractor, see hf_language_ranker.agreement).",
        check=SWITCH,
    )
    use_centrality: bool = recipe_field(
        False,
        "Also feed each candidate's feature centrality among its prompt's candidates (needs no parser).",
        check=SWITCH,
    )
    center_features: bool = recipe_field(
        False,
        "Subtract the mean of each prompt's candidate features before the head (task-agnostic): the head sees how a "
        "candidate differs from its siblings rather than which task or prompt it belongs to.",
        check=SWITCH,
    )
    extra_layers: list[int] = recipe_field(
        [],
        "Further hidden-state layers the ranker reads beside feature_layer, combined by layer_mix (all must be "
        "collected); empty: feature_layer alone.",
        check=LAYER_LIST,
    )
    answer_poolings: list[str] = recipe_field(
        [],
        "Further candidate features the ranker reads beside the last token's, at each of its layers (all must be "
        "collected): mean (the mean of the answer tokens' states) and/or first (the state at the first answer "
        "token), combined by layer_mix; see hf_language_ranker.pooling. Empty: the last token alone.",
        check=POOLING_LIST,
    )
    layer_mix: str = recipe_field(
        "concat",
        "How several features become one input (with extra_layers or answer_poolings): concat (standardized "
        "features side by side, one projection) or softmax (a learned softmax-weighted mean of the standardized "
        "features).",
        choices=LAYER_MIXES,
    )
    ensemble_size: int = field(
        default=1,
        metadata={
            "help": "Members of a fold ensemble whose mean score the ranker serves (`LanguageRanker.ensemble`); 1: "
            "one ranker."
        },
    )
    answer_extractor: str | None = field(
        default=None,
        metadata={
            "help": "The built-in verifier whose answer parser made the training answers (math); `generate` uses it "
            "when no answer_extractor is passed. None: the answers came from a custom extractor, which must be passed."
        },
    )
    selection: str = recipe_field(
        "argmax",
        "How `generate` picks among the scored candidates by default: argmax (best score) or weighted_vote (softmax "
        "weights summed per parsed answer; needs an answer extractor). Written to config.json.",
        choices=PICK_RULES,
    )
    loss: str = recipe_field(
        "listwise", "Ranking loss: listwise (paper default), marginal, pairwise or pointwise.", choices=LOSSES
    )
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Free-form notes kept in config.json, e.g. how the weights were edited after training."},
    )

    def __post_init__(self) -> None:
        check_recipe(self)
        if not 0 <= self.feature_layer <= self.num_hidden_layers:
            raise ValueError(
                f"feature_layer={self.feature_layer} is outside 0..{self.num_hidden_layers} "
                f"(0 = embeddings, {self.num_hidden_layers} = last layer of the base model)."
            )
        for layer in self.extra_layers:
            if layer > self.num_hidden_layers or layer == self.feature_layer or self.extra_layers.count(layer) > 1:
                raise ValueError(
                    f"extra_layers={self.extra_layers} must be distinct layers in 0..{self.num_hidden_layers} other "
                    f"than feature_layer={self.feature_layer}."
                )
        check_value("ensemble_size", self.ensemble_size, POSITIVE_INT)
        if self.projection_dim % self.num_attention_heads:
            raise ValueError(
                f"projection_dim={self.projection_dim} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}."
            )

    @property
    def input_layers(self) -> list[int]:
        """The layers the ranker reads, in the order of its input's layer axis: ``feature_layer``, then
        ``extra_layers``."""
        return [self.feature_layer, *self.extra_layers]

    @property
    def input_features(self) -> list[tuple[str, int]]:
        """The features the ranker reads, as ``(pooling, layer)`` pairs in the order of its input's feature axis
        (`input_slots`): the last token's at every input layer, then each of ``answer_poolings`` at every one."""
        return input_slots(self.input_layers, self.answer_poolings)

    def reads_answers(self, selection: str | None = None) -> bool:
        """Whether ranking reads each candidate's final answer: a vote-share input, or a weighted vote (the
        ``selection`` given, else the config's own), so `generate` needs an answer extractor and ``tokenizer=``."""
        return self.use_vote_share or (selection or self.selection) == "weighted_vote"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        """Dict-style read access, so `ranker.config["feature_layer"]` works too."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def input_slots(layers: Sequence[int], poolings: Sequence[str]) -> list[tuple[str, int]]:
    """``(pooling, layer)`` pairs, ``"last"`` (the last token's feature) first, each pooling at every layer: the order
    of a ranker's feature axis (`RankerConfig.input_features`), which `features.stack_inputs` builds."""
    return [(pooling, layer) for pooling in ("last", *poolings) for layer in layers]


def default_feature_layer(num_hidden_layers: int) -> int:
    """The paper's default: a middle layer at about 60% of the depth (at least 1)."""
    return max(1, round(DEFAULT_LAYER_FRACTION * num_hidden_layers))


#: the recipe fields of `RankerConfig` (declared with `recipe_field`) by name, in declaration order
RECIPE_FIELDS: Registry[Field] = Registry(
    "RankerConfig recipe field",
    {config_field.name: config_field for config_field in fields(RankerConfig) if config_field.metadata.get("recipe")},
)


def recipe_argument(config_field: Field) -> str:
    """The `RankerTrainingArguments` (and CLI) name of a recipe field: ``num_layers`` is ``num_ranker_layers``."""
    return config_field.metadata["argument"] or config_field.name


def check_recipe(source: Any, *, as_arguments: bool = False) -> None:
    """Raise a clear error for any recipe field of ``source`` whose value is not allowed: a `RankerConfig`, or with
    ``as_arguments`` an object naming them by their argument names (`RankerTrainingArguments`)."""
    for config_field in RECIPE_FIELDS.values():
        name = recipe_argument(config_field) if as_arguments else config_field.name
        value = getattr(source, name)
        choices = config_field.metadata["choices"]
        if choices is None:
            check_value(name, value, config_field.metadata["check"])
        elif value not in choices:
            raise choices.unknown(value)
