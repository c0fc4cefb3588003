"""How a prompt is fed to the model: one user turn of the chat template (or the raw text), left-padded.

Shared by collection, ranked generation from the CLI and examples, and `rank_candidates`, so a prompt
becomes the same token ids everywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase


def resolve_chat_template(tokenizer: PreTrainedTokenizerBase, chat_template: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise ValueError(
            "chat_template=True but the tokenizer has no chat template. Set tokenizer.chat_template, or pass "
            "chat_template=False to feed the raw prompt text."
        )
    return has_template if chat_template is None else bool(chat_template)


def padding_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer itself, or a copy padding with EOS when it has no pad token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer
    if tokenizer.eos_token is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token to batch prompts.")
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, or as is."""
    if not use_chat_template:
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], use_chat_template: bool) -> Any:
    """A left-padded batch of `format_prompt` texts (a chat template already holds the special tokens)."""
    return tokenizer(
        texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=not use_chat_template
    )


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], use_chat_template: bool) -> Any:
    """A left-padded batch of ``prompts``, each formatted by `format_prompt`: the ids collection feeds the model."""
    texts = [format_prompt(tokenizer, prompt, use_chat_template) for prompt in prompts]
    return tokenize_prompts(tokenizer, texts, use_chat_template)
