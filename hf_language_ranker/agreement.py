"""Agreement between the candidates of one prompt: ranker inputs and the ranker-weighted vote.

A candidate's own hidden state says how the model "feels" about it; whether the other samples agree says how
likely it is right. Both signals come from what the sampling pass already holds, with no second pass:

* **answer vote share** — the fraction of the prompt's candidates whose extracted final answer equals this one's
  (0 for a candidate without an answer). Answers come from an *answer extractor*: a callable
  ``str -> hashable | None`` or the name of a built-in verifier (``"math"``), whose ``parse`` is used. They are
  passed around as ``answer_ids`` ``[B, N]``: equal ids within a prompt mean equal answers, ``-1`` means none.
* **feature centrality** — each candidate's mean cosine similarity to the other candidates' features of the same
  prompt, after removing the prompt's mean candidate feature (raw hidden states share a large common direction
  that would put every similarity near 1). Needs no parser, so it serves code and tool calls too.
* **weighted vote** (`weighted_vote_choices`) — sum the ranker's softmax weights per answer, pick the heaviest
  answer and return its best-scored member; candidates without an answer compete alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Union

import torch

from .registry import Registry

AnswerExtractor = Callable[[str], Union[Hashable, None]]
AnswerExtractorLike = Union[AnswerExtractor, str, Any]

NO_ANSWER = -1


def resolve_answer_extractor(extractor: AnswerExtractorLike | None) -> AnswerExtractor | None:
    """A callable ``str -> hashable | None`` from a callable, a built-in verifier name or a `Verifier` (its parse)."""
    if extractor is None:
        return None
    parse = getattr(extractor, "parse", None)
    if isinstance(extractor, str) or callable(parse):
        try:  # imported by name: the Hub custom_generate copy of this module ships without the verifiers
            as_verifier = importlib.import_module(".verifiers", __package__).as_verifier
        except ImportError as error:
            raise ValueError(
                f"answer_extractor={extractor!r} names a built-in verifier, which needs hf-language-ranker installed; "
                "pass a callable str -> hashable | None instead."
            ) from error
        return as_verifier(extractor).parse
    if callable(extractor):
        return extractor
    raise TypeError(
        f"answer_extractor must be a callable str -> hashable | None or a built-in verifier name ('math', 'code', "
        f"'tools'), got {type(extractor).__name__}."
    )


def extract_answers(texts: Sequence[Sequence[str]], extractor: AnswerExtractor) -> list[list[Hashable | None]]:
    """The extractor's answer for every candidate text (``texts[b][n]``), with a clear error for unhashable ones."""
    answers = []
    for row in texts:
        parsed = [extractor(text) for text in row]
        for value in parsed:
            if value is not None and not isinstance(value, Hashable):
                raise TypeError(
                    f"answer_extractor returned an unhashable {type(value).__name__} ({value!r:.60}); return a "
                    "string, number or tuple (or None when a candidate has no answer)."
                )
        answers.append(parsed)
    return answers


def answer_id_rows(answers: Sequence[Sequence[Hashable | None]]) -> list[list[int]]:
    """Each candidate's answer as an id within its prompt (order of first appearance), ``-1`` for None."""
    rows = []
    for row in answers:
        seen: dict[Hashable, int] = {}
        rows.append([NO_ANSWER if answer is None else seen.setdefault(answer, len(seen)) for answer in row])
    return rows


def answer_ids(answers: Sequence[Sequence[Hashable | None]], device: torch.device | str | None = None) -> torch.Tensor:
    """`answer_id_rows` as a ``[B, N]`` tensor; prompts with fewer candidates than the most are padded with -1."""
    rows = answer_id_rows(answers)
    width = max((len(row) for row in rows), default=0)
    padded = [row + [NO_ANSWER] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.long, device=device).reshape(len(answers), width)


def _same_answer(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, N, N]`` true where two real candidates carry the same (non-missing) answer."""
    real = mask & (ids != NO_ANSWER)
    return (ids[:, :, None] == ids[:, None, :]) & real[:, :, None] & real[:, None, :]


def vote_shares(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` fraction of a prompt's real candidates whose answer equals this one's (itself included).

    A candidate without an answer, and a masked slot, get 0.
    """
    counts = _same_answer(ids, mask).sum(-1).float()
    return counts / mask.sum(-1, keepdim=True).clamp_min(1).float()


def feature_centrality(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` mean cosine similarity of each real candidate's centred feature to the other real candidates'.

    Features are centred on the mean of the prompt's real candidates first. A prompt with a single real
    candidate, and masked slots, get 0.
    """
    features = features.float()
    weights = mask.float()[..., None]
    count = mask.sum(-1).float()
    mean = (features * weights).sum(1, keepdim=True) / count.clamp_min(1)[:, None, None]
    centred = torch.nn.functional.normalize((features - mean) * weights, dim=-1)
    similarity = centred @ centred.transpose(1, 2)
    others = similarity.sum(-1) - (centred * centred).sum(-1)
    return (others / (count[:, None] - 1).clamp_min(1)).masked_fill(~mask, 0.0)


def weighted_vote_choices(scores: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]`` index of the best-scored member of the answer with the largest sum of softmax(scores) weights.

    Candidates without an answer (``-1``) form groups of their own. Ties between answers go to the one whose best
    member scores higher, then to the lower index; the result is deterministic.
    """
    if mask is None:
        mask = torch.isfinite(scores)
    scores = scores.float().masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    same = _same_answer(ids, mask) | torch.eye(ids.shape[-1], dtype=torch.bool, device=ids.device)
    group_weight = (same.float() * weights[:, None, :]).sum(-1).masked_fill(~mask, -1.0)  # [B, N]: of its answer
    heaviest = group_weight.max(-1, keepdim=True).values
    # a member of the heaviest answer (with float slack), the best-scored one, the first on ties
    in_heaviest = mask & (group_weight >= heaviest - 1e-6)
    return scores.masked_fill(~in_heaviest, float("-inf")).argmax(-1)


#: the pick rules: how a ranker's ``[B, N]`` scores (and ``[B, N]`` answer ids, for rules that read answers) become
#: ``[B]`` chosen candidates; the values of ``RankerConfig.selection`` and of ``ranker_selection`` on `generate`
PICK_RULES: Registry[Callable[[torch.Tensor, Union[torch.Tensor, None]], torch.Tensor]] = Registry("ranker_selection")


@PICK_RULES.register("argmax")
def pick_argmax(scores: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]`` the best-scored candidate of each prompt."""
    return scores.argmax(-1)


@PICK_RULES.register("weighted_vote")
def pick_weighted_vote(scores: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """`weighted_vote_choices` over the candidates' answer ids, which this rule needs."""
    if ids is None:
        raise ValueError(
            "ranker_selection='weighted_vote' groups candidates by their final answers: pass an "
            "answer_extractor (a callable str -> hashable | None, or 'math')."
        )
    return weighted_vote_choices(scores, ids.to(scores.device))


def select(scores: torch.Tensor, mode: str, ids: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]`` chosen candidates under the pick rule ``mode`` of `PICK_RULES` (``weighted_vote`` needs ``ids``)."""
    return PICK_RULES[mode](scores, ids)
