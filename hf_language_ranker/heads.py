"""The ranker heads by name (``RankerConfig.head``): how projected features become one score per candidate.

A head is a class with two static methods: ``build(ranker, config)`` adds its modules to the `LanguageRanker` (under
the names its saved weights carry: ``role_embedding``, ``encoder``, ``score_head``), and ``scores(ranker, prompt,
candidates, mask)`` turns the projected ``[B, D]`` prompt and ``[B, N, D]`` candidate features into ``[B, N]`` scores.
``config`` is the ranker's `RankerConfig` (not imported here: configuration validates its ``head`` against `HEADS`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import Registry

HEADS: Registry[type] = Registry("ranker head")


@HEADS.register("listwise")
class ListwiseHead:
    """A small Transformer over ``[prompt, candidate_1, ..., candidate_N]``: candidates judged against each other."""

    @staticmethod
    def build(ranker: nn.Module, config: Any) -> None:
        dim = config.projection_dim
        ranker.role_embedding = nn.Embedding(2, dim)
        block = nn.TransformerEncoderLayer(
            dim,
            config.num_attention_heads,
            config.intermediate_size,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        ranker.encoder = nn.TransformerEncoder(
            block, config.num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        ranker.score_head = nn.Linear(dim, 1)

    @staticmethod
    def scores(ranker: nn.Module, prompt: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        candidates = candidates + ranker.role_embedding.weight[1]
        if ranker.config.use_prompt_feature:
            tokens = torch.cat([(prompt + ranker.role_embedding.weight[0])[:, None], candidates], dim=1)
            padding = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        else:
            tokens = candidates
            # a group whose slots are all masked would attend to nothing: let it attend to its (ignored) slots
            padding = ~mask & mask.any(-1, keepdim=True)
        encoded = ranker.encoder(tokens, src_key_padding_mask=padding)
        if ranker.config.use_prompt_feature:
            encoded = encoded[:, 1:]
        return ranker.score_head(encoded).squeeze(-1)


@HEADS.register("pointwise")
class PointwiseHead:
    """A shared MLP that scores each candidate alone, on ``[candidate, prompt, candidate * prompt]``."""

    @staticmethod
    def build(ranker: nn.Module, config: Any) -> None:
        inputs = 3 * config.projection_dim if config.use_prompt_feature else config.projection_dim
        ranker.score_head = nn.Sequential(
            nn.Linear(inputs, config.intermediate_size),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.intermediate_size, 1),
        )

    @staticmethod
    def scores(ranker: nn.Module, prompt: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ranker.config.use_prompt_feature:
            prompt = prompt[:, None].expand_as(candidates)
            candidates = torch.cat([candidates, prompt, candidates * prompt], dim=-1)
        return ranker.score_head(candidates).squeeze(-1)
