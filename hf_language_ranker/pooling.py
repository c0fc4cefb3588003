"""Answer poolings: candidate features read beside the last token's (``RankerConfig.answer_poolings``).

A candidate's answer tokens are its real generated tokens, EOS included: the tokens whose last one gives the
feature of `hf_language_ranker.features`. At a layer ``k`` (``output_hidden_states[k]``):

* ``mean``: the mean of the answer tokens' states;
* ``first``: the state at the first answer token.

Each pooling has two forms that tests hold equal: `over`, its definition on the states of every answer position (a
plain forward pass, or a chunk of `featurize_token_candidates`), and a running form for the decoding loop, which
feeds each row's answer tokens one pass at a time (`CandidateFeatureRecorder`): `start` allocates what is kept per
row, `update` folds in one pass, `finish` reads the feature. What is kept is one vector per row and layer, whatever
the answer length; per candidate and layer that is, for hidden size ``H``:

* ``mean``: ``4 * H`` bytes (a float32 running sum; 2,304 bytes for SmolLM2-135M's ``H = 576``);
* ``first``: ``H`` values in the model's dtype (``2 * H`` bytes in bfloat16: 1,152 for SmolLM2-135M);
* either or both: an 8-byte count of the answer tokens fed.

A collection stores each pooling as float16: ``2 * H`` bytes more per candidate and layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .registry import Registry

ANSWER_POOLINGS: Registry[type] = Registry("answer pooling")


def answer_mask(answer_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[R, T]`` true at each row's real answer positions (the first ``lengths`` of the ``T``)."""
    positions = torch.arange(answer_states.shape[1], device=answer_states.device)
    return positions[None, :] < lengths.to(answer_states.device)[:, None]


@ANSWER_POOLINGS.register("mean")
class MeanOfAnswer:
    """The mean of the answer tokens' states, kept while decoding as a float32 running sum."""

    @staticmethod
    def over(answer_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[R, H]`` from the states of the answer positions ``[R, T, H]`` and the answer lengths ``[R]``."""
        real = answer_mask(answer_states, lengths)[..., None]
        return (answer_states.float() * real).sum(1) / lengths.to(real.device)[:, None]

    @staticmethod
    def start(num_rows: int, states: torch.Tensor) -> torch.Tensor:
        return states.new_zeros(num_rows, states.shape[-1], dtype=torch.float32)

    @staticmethod
    def update(kept: torch.Tensor, rows: torch.Tensor, states: torch.Tensor, fed: torch.Tensor) -> None:
        """Fold in the states ``[batch, H]`` of the answer tokens just fed to ``rows`` (``fed``: answer tokens each
        row had been fed before)."""
        kept.index_add_(0, rows, states.float())

    @staticmethod
    def finish(kept: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
        return kept / fed.clamp_min(1)[:, None]


@ANSWER_POOLINGS.register("first")
class FirstAnswerToken:
    """The state at the first answer token: the state of the decoding loop's first pass after the prompt."""

    @staticmethod
    def over(answer_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return answer_states[:, 0]

    @staticmethod
    def start(num_rows: int, states: torch.Tensor) -> torch.Tensor:
        return states.new_zeros(num_rows, states.shape[-1])

    @staticmethod
    def update(kept: torch.Tensor, rows: torch.Tensor, states: torch.Tensor, fed: torch.Tensor) -> None:
        first = fed == 0
        kept[rows[first]] = states[first]

    @staticmethod
    def finish(kept: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
        return kept


#: what ``answer_poolings`` must be, in words (the last token's feature is always read, so it is not one of them)
ANSWER_POOLING_LIST = f"a list of distinct answer poolings among {', '.join(ANSWER_POOLINGS)}"


def is_answer_pooling_list(value: Any) -> bool:
    """Whether ``value`` is `ANSWER_POOLING_LIST` (``RankerConfig.answer_poolings`` validates with it too)."""
    return (
        isinstance(value, list)
        and all(isinstance(name, str) and name in ANSWER_POOLINGS for name in value)
        and len(set(value)) == len(value)
    )


def check_answer_poolings(poolings: Sequence[str]) -> list[str]:
    """``poolings`` (any sequence of names but a string) as a list, or an error naming what is expected."""
    names = poolings if isinstance(poolings, str) else list(poolings)
    if not is_answer_pooling_list(names):
        raise ValueError(f"answer_poolings must be {ANSWER_POOLING_LIST}, got {poolings!r}.")
    return names
