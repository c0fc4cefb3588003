"""The dtype a model computes in: ``auto``'s choice, and rankers that record the dtype of their training features."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import BOTH_AUTO_DTYPES, build_model, build_tokenizer, left_padded_prompts
from transformers.utils.logging import warning_once

from hf_language_ranker import LanguageRanker, attach_ranker, rank_candidates
from hf_language_ranker.embedded import auto_dtype, load_model_and_tokenizer, resolve_dtype

DRIFT = "trained on features computed in"


@pytest.fixture
def fresh_warnings(caplog):
    """Forget which messages `warning_once` already printed, and capture this test's warnings."""
    warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hf_language_ranker"):
        yield caplog
    warning_once.cache_clear()


def on_cpu_with(monkeypatch, **capabilities):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **capabilities})


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ({"amx_bf16": True}, torch.bfloat16),
        ({"avx512_bf16": True}, torch.bfloat16),
        ({"avx512_f": True, "amx_bf16": False}, torch.float32),  # AVX512 without BF16 emulates it
        ({}, torch.float32),
    ],
)
def test_auto_picks_bfloat16_on_cpus_that_compute_it_natively(monkeypatch, capabilities, expected):
    on_cpu_with(monkeypatch, **capabilities)
    assert auto_dtype() == expected


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_a_gpu_follows_its_bfloat16_support(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: pytest.fail("the CPU was asked, not the GPU"))
    assert auto_dtype() == expected


def test_auto_without_cpu_capabilities_is_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert auto_dtype() == torch.float32


def test_dtype_names_resolve_and_unknown_ones_are_named():
    assert resolve_dtype("float16") == torch.float16 and resolve_dtype(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'half': choose one of auto, float32, bfloat16, float16"):
        resolve_dtype("half")


@BOTH_AUTO_DTYPES
def test_loader_loads_the_chosen_dtype(tiny_model_dir, auto_resolves_to):
    assert load_model_and_tokenizer(tiny_model_dir, dtype="float16")[0].dtype == torch.float16
    assert load_model_and_tokenizer(tiny_model_dir)[0].dtype == auto_resolves_to  # "auto", the default


def test_the_suite_pins_auto_and_leaves_the_real_choice_to_these_tests(monkeypatch):
    """`auto_resolves_to` (conftest) replaces `embedded.auto_dtype` in every test; the function tested above is the
    real one, and a CPU with native bfloat16 does not change what the rest of the suite sees."""
    on_cpu_with(monkeypatch, avx512_bf16=True)
    assert auto_dtype() == torch.bfloat16 and resolve_dtype("auto") == torch.float32


def generate_with(model, ranker):
    input_ids, attention_mask = left_padded_prompts()
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=2, max_new_tokens=3
    )


def test_serving_in_another_dtype_than_the_ranker_was_trained_in_warns_once(fresh_warnings):
    model = attach_ranker(build_model("llama"))
    ranker = LanguageRanker.for_model(model, feature_layer=2, model_dtype="bfloat16")
    tokenizer = build_tokenizer()
    rank_candidates(model, tokenizer, [[5, 6]], [[[7], [8]]], ranker)
    generate_with(model, ranker)
    rank_candidates(model, tokenizer, [[5, 6]], [[[7], [8]]], ranker)
    warnings = [record.getMessage() for record in fresh_warnings.records if DRIFT in record.getMessage()]
    assert len(warnings) == 1
    assert "computed in bfloat16 but the model runs in float32" in warnings[0] and "dtype='bfloat16'" in warnings[0]

    warning_once.cache_clear()  # ranked generate warns as well
    generate_with(model, ranker)
    assert sum(DRIFT in record.getMessage() for record in fresh_warnings.records) == 2


def test_the_same_dtype_and_rankers_that_record_none_do_not_warn(fresh_warnings, tmp_path):
    model = attach_ranker(build_model("llama").to(torch.bfloat16))
    generate_with(model, LanguageRanker.for_model(model, feature_layer=2, model_dtype="bfloat16"))
    # a ranker saved before rankers recorded a dtype: no model_dtype key in its config.json
    LanguageRanker.for_model(model, feature_layer=2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["model_dtype"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = LanguageRanker.from_pretrained(tmp_path)
    assert old.config.model_dtype is None
    generate_with(model, old)
    rank_candidates(model, build_tokenizer(), [[5, 6]], [[[7], [8]]], old)
    assert DRIFT not in fresh_warnings.text


def test_the_shipped_rankers_record_bfloat16():
    from test_agreement import SHIPPED_RANKERS

    for shipped in SHIPPED_RANKERS:
        assert LanguageRanker.from_pretrained(shipped).config.model_dtype == "bfloat16", shipped.name
