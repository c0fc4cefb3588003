"""Ranking losses over groups of candidates: listwise (the paper's default), marginal, pairwise and pointwise.

All take ``scores`` ``[B, N]`` (masked slots may hold ``-inf``), ``labels`` ``[B, N]`` in ``[0, 1]`` and a
boolean ``mask`` ``[B, N]`` of real candidates. Groups that carry no ranking signal (no correct candidate for
the listwise loss, no correct/incorrect pair for the pairwise loss) are skipped; if no group is left the loss is
an exact zero that still back-propagates, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .registry import Registry

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: the ranking losses by name (``RankerConfig.loss``)
LOSSES: Registry[LossFunction] = Registry("ranking loss")


def _zero(scores: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~torch.isfinite(scores), 0.0).sum() * 0.0


@LOSSES.register("listwise")
def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the softmax over a group and a target spread over its correct candidates."""
    labels = labels.float() * mask
    positives = labels.sum(-1)
    keep = positives > 0
    if not keep.any():
        return _zero(scores)
    log_probs = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).masked_fill(~mask, 0.0)
    target = labels / positives.clamp(min=1e-12)[:, None]
    return -(target * log_probs).sum(-1)[keep].mean()


@LOSSES.register("marginal")
def marginal_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Minus the log of the softmax mass on a group's correct candidates (label-weighted), together.

    Unlike `listwise_loss`, which pulls every correct candidate up equally, it only asks that the correct ones
    hold the mass between them: the quantity the weighted vote sums when all correct candidates share one answer.
    """
    labels = labels.float() * mask
    keep = labels.sum(-1) > 0
    if not keep.any():
        return _zero(scores)
    scores, labels, mask = scores[keep], labels[keep], mask[keep]  # skipped rows would give NaN gradients
    log_probs = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    log_weights = torch.log(labels.clamp_min(1e-12)).masked_fill(labels <= 0, float("-inf"))
    return -torch.logsumexp(log_probs + log_weights, dim=-1).mean()


@LOSSES.register("pairwise")
def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every (better, worse) pair of real candidates within a group."""
    labels = labels.float()
    better = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    if not better.any():
        return _zero(scores)
    finite = scores.masked_fill(~mask, 0.0)
    margins = finite[:, :, None] - finite[:, None, :]
    return F.softplus(-margins)[better].mean()


@LOSSES.register("pointwise")
def pointwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each real candidate's score against its label."""
    if not mask.any():
        return _zero(scores)
    return F.binary_cross_entropy_with_logits(scores[mask], labels.float()[mask])


def ranking_loss(name: str, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Look a loss up by name and apply it."""
    return LOSSES[name](scores, labels, mask)
