"""Configuration of a Language Ranker and the generation flags that switch ranked decoding on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .agreement import PICK_RULES
from .heads import HEADS
from .losses import LOSSES

#: Names of the `GenerationConfig` attributes that ranked generation reads.
GENERATION_FLAGS = ("num_candidates", "ranker", "ranker_selection", "answer_extractor")

#: Default number of sampled candidates when a ranker is given without `num_candidates`.
DEFAULT_NUM_CANDIDATES = 16

#: Fraction of the decoder depth used for the default feature layer (the paper's choice).
DEFAULT_LAYER_FRACTION = 0.6

HEAD_TYPES = tuple(HEADS)
#: values of ``RankerConfig.selection`` and of ``ranker_selection`` on `generate`
SELECTION_MODES = tuple(PICK_RULES)
LOSS_TYPES = tuple(LOSSES)
#: dtypes a model can be loaded in (`hf_language_ranker.embedded.load_model_and_tokenizer`, the CLI's ``--dtype``);
#: ``"auto"`` is bfloat16 where the hardware computes it natively, else float32 (`embedded.auto_dtype`)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RankerConfig:
    """Everything needed to rebuild a `LanguageRanker` and to check that it fits a base model.

    The first block is the fingerprint of the LLM whose hidden states the ranker reads; the second
    block describes the ranker head itself.
    """

    hidden_size: int
    num_hidden_layers: int
    feature_layer: int
    model_type: str | None = None
    base_model: str | None = None
    #: the dtype the base model computed the training features in ("bfloat16"); serving in another one warns.
    #: ``None``: not recorded (rankers from before this field, or trained on data that does not say)
    model_dtype: str | None = None

    head: str = "listwise"
    projection_dim: int = 64
    num_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    dropout: float = 0.1
    use_prompt_feature: bool = True
    #: also feed each candidate's mean token log-probability (computed while sampling) to the head
    use_mean_log_prob: bool = False
    #: also feed each candidate's answer vote share (needs an answer extractor; see hf_language_ranker.agreement)
    use_vote_share: bool = False
    #: also feed each candidate's feature centrality among the prompt's candidates (needs no parser)
    use_centrality: bool = False
    #: subtract the mean of the prompt's candidate features from each candidate feature before the projection, so
    #: the head sees how a candidate differs from its siblings rather than which task or prompt it belongs to
    center_features: bool = False
    #: the built-in verifier whose answer parser made the training answers ("math"); `generate` uses it when
    #: no ``answer_extractor`` is passed. ``None``: the answers came from a custom extractor, which must be passed.
    answer_extractor: str | None = None
    #: how `generate` picks by default: "argmax" (best score) or "weighted_vote" (softmax weights summed per answer)
    selection: str = "argmax"
    loss: str = "listwise"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise HEADS.unknown(self.head)
        if self.selection not in PICK_RULES:
            raise PICK_RULES.unknown(self.selection)
        LOSSES[self.loss]  # an unknown name raises the registry's error
        if not 0 <= self.feature_layer <= self.num_hidden_layers:
            raise ValueError(
                f"feature_layer={self.feature_layer} is outside 0..{self.num_hidden_layers} "
                f"(0 = embeddings, {self.num_hidden_layers} = last layer of the base model)."
            )
        if self.projection_dim % self.num_attention_heads:
            raise ValueError(
                f"projection_dim={self.projection_dim} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}."
            )

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


def default_feature_layer(num_hidden_layers: int) -> int:
    """The paper's default: a middle layer at about 60% of the depth (at least 1)."""
    return max(1, round(DEFAULT_LAYER_FRACTION * num_hidden_layers))
