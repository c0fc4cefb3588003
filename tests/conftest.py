"""Tiny random causal LMs built from configs (no Hub access), shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
#: what ``--dtype auto`` resolves to in a test's worker processes (`pin_auto_dtype` reads it there)
AUTO_DTYPE_VARIABLE = "HF_LANGUAGE_RANKER_TEST_AUTO_DTYPE"
#: run a test twice, with ``--dtype auto`` resolving as on a CPU without native bfloat16 and as on one with it
BOTH_AUTO_DTYPES = pytest.mark.parametrize("auto_resolves_to", ["float32", "bfloat16"], indirect=True)
VOCAB_SIZE = 24
PAD, BOS, EOS = 0, 1, 2


def pin_auto_dtype(name: str) -> None:
    """Make ``--dtype auto`` (`embedded.auto_dtype`) resolve to the dtype ``name`` in this process."""
    import hf_language_ranker.embedded as embedded  # here: the custom_generate test imports conftest without it

    dtype = getattr(torch, name)
    embedded.auto_dtype = lambda: dtype


@pytest.fixture(autouse=True)
def auto_resolves_to(request, monkeypatch) -> torch.dtype:
    """What ``--dtype auto`` resolves to in this test, here and in its worker processes: float32 unless the test is
    marked `BOTH_AUTO_DTYPES`. So no test's outcome depends on the CPU it runs on (``auto`` is bfloat16 on a CPU with
    AVX512-BF16 or AMX), and the paths that use ``auto`` are checked both ways on any CPU. The real choice is
    tested in test_dtype.py."""
    import hf_language_ranker.embedded as embedded

    name = getattr(request, "param", "float32")
    monkeypatch.setattr(embedded, "auto_dtype", embedded.auto_dtype)  # restored after the test
    pin_auto_dtype(name)
    monkeypatch.setenv(AUTO_DTYPE_VARIABLE, name)
    return getattr(torch, name)


def _decoder_kwargs(**overrides):
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    kwargs.update(overrides)
    return kwargs


def build_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random model of one family, in eval mode, fp32."""
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**_decoder_kwargs(**overrides)))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**_decoder_kwargs(**overrides)))
    elif family == "gemma3":
        config = Gemma3TextConfig(**_decoder_kwargs(head_dim=8, sliding_window=4, **overrides))
        model = Gemma3ForCausalLM(config)
    elif family == "gpt2":
        kwargs = dict(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=4, n_head=4, n_positions=256)
        kwargs.update(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
        kwargs.update(overrides)
        model = GPT2LMHeadModel(GPT2Config(**kwargs))
    else:
        raise ValueError(family)
    return model.eval()


FAMILIES = ["llama", "qwen2", "gpt2", "gemma3"]


@contextmanager
def forward_input_shapes(model: torch.nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """The ``input_ids`` shape of every forward pass of ``model`` while the context is open, in order."""
    shapes: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        yield shapes
    finally:
        handle.remove()


def left_padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of lengths 5, 2 and 7, left-padded with PAD."""
    rows = [[5, 6, 7, 8, 9], [10, 11], [3, 4, 5, 6, 7, 8, 9]]
    width = max(map(len, rows))
    input_ids = torch.tensor([[PAD] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models and rankers (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): one
    thread is fastest and immune to other processes competing for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama with its tokenizer, loadable by `from_pretrained` and the examples' --model."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    build_model("llama").save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


TOKENIZER_CHARACTERS = "abcdefghij0123456789 "


def build_tokenizer():
    """A character-level tokenizer over the tiny models' 24-token vocabulary (ids 0/1/2 = pad/bos/eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS}
    vocab.update({character: index + 3 for index, character in enumerate(TOKENIZER_CHARACTERS)})
    assert len(vocab) == VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


#: runs a script as ``__main__`` with ``--dtype auto`` pinned as in the test that starts it
PINNED_RUN = (
    "import os, runpy, sys; from conftest import AUTO_DTYPE_VARIABLE, pin_auto_dtype; "
    "pin_auto_dtype(os.environ[AUTO_DTYPE_VARIABLE]); sys.argv = sys.argv[1:]; "
    "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_example(name: str, *args: str, timeout: int = 300) -> str:
    """Run ``examples/<name>`` offline in a subprocess (``--dtype auto`` as in this test); fail with its stderr if it
    fails."""
    result = subprocess.run(
        [sys.executable, "-c", PINNED_RUN, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            AUTO_DTYPE_VARIABLE: os.environ[AUTO_DTYPE_VARIABLE],
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
