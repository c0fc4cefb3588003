"""How a ranker reading several hidden-state features turns them into one input: several layers
(``RankerConfig.extra_layers``), answer poolings beside the last token (``RankerConfig.answer_poolings``), or both.

Such a ranker receives each input with a feature axis, ``[..., L, H]``, one entry per ``(pooling, layer)`` pair of
``RankerConfig.input_features`` (called layers below). Every layer is first standardized on its own (a layer norm
without weights: the residual stream's scale grows with depth, so a raw deep layer would drown a shallow one), then
the mix named by ``RankerConfig.layer_mix`` combines them before the ranker's shared projection:

* ``concat``: the standardized layers side by side, ``[..., L * H]``. The projection then learns one map per layer
  and sums them (a per-layer projection, then a sum);
* ``softmax``: their mean under learned softmax weights, ``[..., H]`` (one weight per layer, all equal at the
  start: the plain mean of the standardized layers).

A mix is a class with ``build(ranker, config) -> input width`` (adding its parameters, if any, to the ranker) and
``mix(ranker, features) -> [..., width]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

from .registry import Registry

LAYER_MIXES: Registry[type] = Registry("layer mix")


def standardized(features: torch.Tensor) -> torch.Tensor:
    """Each layer of ``[..., L, H]`` features with zero mean and unit variance over its ``H`` values."""
    return functional.layer_norm(features, features.shape[-1:])


@LAYER_MIXES.register("concat")
class ConcatenatedLayers:
    """The standardized layers side by side: the projection learns one map per layer and sums them."""

    @staticmethod
    def build(ranker: nn.Module, config: Any) -> int:
        return config.hidden_size * len(config.input_features)

    @staticmethod
    def mix(ranker: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return standardized(features).flatten(-2)


@LAYER_MIXES.register("softmax")
class SoftmaxMixedLayers:
    """A learned softmax-weighted mean of the standardized layers (``layer_weights``: one logit per layer)."""

    @staticmethod
    def build(ranker: nn.Module, config: Any) -> int:
        ranker.layer_weights = nn.Parameter(torch.zeros(len(config.input_features)))
        return config.hidden_size

    @staticmethod
    def mix(ranker: nn.Module, features: torch.Tensor) -> torch.Tensor:
        weights = ranker.layer_weights.softmax(-1).to(features.dtype)
        return torch.einsum("...lh,l->...h", standardized(features), weights)
