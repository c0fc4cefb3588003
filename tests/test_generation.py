"""Ranked `generate`: outputs, sampling arguments, determinism, configs, refusals, mixin, pipeline."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import EOS, PAD, build_model, forward_input_shapes, left_padded_prompts
from transformers import (
    GenerationConfig,
    LlamaForCausalLM,
    StoppingCriteria,
    StoppingCriteriaList,
    TextStreamer,
)

from hf_language_ranker import LanguageRanker, RankedGenerateOutput, RankedGenerationMixin, attach_ranker


class RankedLlama(RankedGenerationMixin, LlamaForCausalLM):
    pass


@pytest.fixture
def ranked():
    return attach_ranker(build_model("llama"))


@pytest.fixture
def ranker(ranked):
    torch.manual_seed(0)
    return LanguageRanker.for_model(ranked)


def ranked_output(model, ranker, seed=0, **kwargs):
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(seed)
    settings = dict(num_candidates=4, max_new_tokens=6, return_dict_in_generate=True)
    settings.update(kwargs)
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, ranker=ranker, **settings)


def test_returns_one_best_row_per_prompt(ranked, ranker):
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(0)
    best = ranked.generate(input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=4, max_new_tokens=6)
    assert isinstance(best, torch.Tensor) and best.shape[0] == 3
    assert torch.equal(best[:, : input_ids.shape[1]], input_ids)
    output = ranked_output(ranked, ranker)
    assert isinstance(output, RankedGenerateOutput)
    assert torch.equal(best, output.sequences)
    assert output.candidate_sequences.shape[:2] == (3, 4)
    assert output.candidate_scores.shape == (3, 4)
    assert torch.equal(output.best_indices, output.candidate_scores.argmax(-1))
    assert torch.equal(output.sequences, output.candidate_sequences[torch.arange(3), output.best_indices])


def test_same_seed_same_result_and_other_seed_differs(ranked, ranker):
    first = ranked_output(ranked, ranker, seed=7)
    again = ranked_output(ranked, ranker, seed=7)
    other = ranked_output(ranked, ranker, seed=8)
    assert torch.equal(first.candidate_sequences, again.candidate_sequences)
    assert torch.equal(first.candidate_scores, again.candidate_scores)
    assert not torch.equal(first.candidate_sequences, other.candidate_sequences)


def test_prepack_weights_false_keeps_torchs_kernels_and_the_same_answers(ranked, ranker):
    packed = ranked_output(ranked, ranker, seed=3)
    plain = ranked_output(ranked, ranker, seed=3, prepack_weights=False)
    assert torch.equal(packed.candidate_sequences, plain.candidate_sequences)
    torch.testing.assert_close(packed.candidate_scores, plain.candidate_scores)


def test_candidates_are_distinct_samples(ranked, ranker):
    output = ranked_output(ranked, ranker, num_candidates=6, max_new_tokens=8)
    for prompt in output.candidate_sequences:
        assert len({tuple(row.tolist()) for row in prompt}) > 1


def test_plain_generate_unchanged_without_ranker():
    plain = build_model("llama")
    ranked = attach_ranker(build_model("llama"))
    input_ids, attention_mask = left_padded_prompts()
    for kwargs in (dict(do_sample=False), dict(do_sample=True, top_k=5), dict(do_sample=True, num_return_sequences=2)):
        torch.manual_seed(3)
        expected = plain.generate(input_ids, attention_mask=attention_mask, max_new_tokens=5, **kwargs)
        torch.manual_seed(3)
        actual = ranked.generate(input_ids, attention_mask=attention_mask, max_new_tokens=5, **kwargs)
        assert torch.equal(expected, actual)


def test_sampling_arguments_apply(ranked, ranker):
    output = ranked_output(ranked, ranker, max_new_tokens=3, top_k=1, temperature=0.7)
    # top_k=1 makes sampling greedy: every candidate of a prompt is the same
    for prompt in output.candidate_sequences:
        assert all(torch.equal(prompt[0], row) for row in prompt)
    assert output.candidate_sequences.shape[-1] <= left_padded_prompts()[0].shape[1] + 3


class StopAfter(StoppingCriteria):
    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


def test_stopping_criteria_and_special_ids(ranked, ranker):
    prompt_length = left_padded_prompts()[0].shape[1]
    output = ranked_output(
        ranked, ranker, max_new_tokens=20, stopping_criteria=StoppingCriteriaList([StopAfter(prompt_length + 2)])
    )
    assert output.candidate_sequences.shape[-1] == prompt_length + 2
    # a different EOS id: generation stops on it and pads after it
    output = ranked_output(ranked, ranker, max_new_tokens=12, eos_token_id=5, pad_token_id=PAD, num_candidates=8)
    generated = output.candidate_sequences[:, :, prompt_length:]
    for row in generated.reshape(-1, generated.shape[-1]).tolist():
        if 5 in row:
            assert all(token == PAD for token in row[row.index(5) + 1 :])


def test_shared_prefill_runs_prompt_once(ranked, ranker):
    input_ids, attention_mask = left_padded_prompts()
    with forward_input_shapes(ranked) as batch_sizes:
        ranked.generate(input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=4, max_new_tokens=3)
    prompt_length = input_ids.shape[1]
    assert batch_sizes[0] == (3, prompt_length - 1)  # the prefill, once per prompt
    assert batch_sizes[1] == (12, 1)  # then the prompt's last token once per candidate
    assert all(width == 1 for _, width in batch_sizes[2:])  # then one token per candidate still generating


def test_ranker_from_local_folder_and_generation_config_round_trip(ranked, ranker, tmp_path):
    ranker_dir = tmp_path / "ranker"
    ranker.save_pretrained(ranker_dir)
    by_object = ranked_output(ranked, ranker, seed=1)
    by_path = ranked_output(ranked, str(ranker_dir), seed=1)
    assert torch.allclose(by_object.candidate_scores, by_path.candidate_scores)

    assert ranked.generation_config._from_model_config  # the transformers pitfall this round trip guards
    ranked.generation_config.num_candidates = 3
    ranked.generation_config.ranker = str(ranker_dir)
    model_dir = tmp_path / "model"
    ranked.save_pretrained(model_dir)
    saved = json.loads((model_dir / "generation_config.json").read_text())
    assert saved["num_candidates"] == 3 and saved["ranker"] == str(ranker_dir)
    assert json.loads((model_dir / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    reloaded = RankedLlama.from_pretrained(model_dir)
    assert reloaded.generation_config.num_candidates == 3
    assert GenerationConfig.from_pretrained(model_dir).ranker == str(ranker_dir)
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(1)
    output = reloaded.generate(input_ids, attention_mask=attention_mask, max_new_tokens=4, return_dict_in_generate=True)
    assert output.candidate_sequences.shape[1] == 3  # ranker and num_candidates both came from the config


def test_module_in_generation_config_is_refused(ranked, ranker):
    ranked.generation_config.ranker = ranker
    input_ids, attention_mask = left_padded_prompts()
    with pytest.raises(TypeError, match="Hub id or a local path"):
        ranked.generate(input_ids, attention_mask=attention_mask, max_new_tokens=2)


def test_mixin_subclass_loads_plain_checkpoint(tmp_path):
    plain = build_model("llama")
    plain.save_pretrained(tmp_path)
    model = RankedLlama.from_pretrained(tmp_path).eval()
    ranker = LanguageRanker.for_model(model)
    output = ranked_output(model, ranker)
    assert output.candidate_scores.shape == (3, 4)
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(0)
    expected = plain.generate(input_ids, attention_mask=attention_mask, max_new_tokens=4, do_sample=True)
    torch.manual_seed(0)
    assert torch.equal(
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=4, do_sample=True), expected
    )


def test_attach_ranker_is_idempotent_and_keeps_isinstance():
    model = build_model("gpt2")
    original = type(model)
    ranked = attach_ranker(model)
    assert ranked is model and attach_ranker(model) is model
    assert isinstance(model, original) and isinstance(model, RankedGenerationMixin)
    assert type(model) is not original and type(model).__name__ == original.__name__


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_candidates=0), "num_candidates must be an integer >= 1"),
        (dict(num_candidates=2.5), r"num_candidates must be an integer >= 1, got 2\.5"),
        (dict(num_candidates="4"), "num_candidates must be an integer >= 1, got '4'"),
        (dict(do_sample=False), "greedy"),
        (dict(num_beams=2), "beam search"),
        (dict(num_return_sequences=2), "num_return_sequences"),
    ],
)
def test_refusals(ranked, ranker, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ranked_output(ranked, ranker, **kwargs)


def test_streamer_is_refused(ranked, ranker):
    with pytest.raises(ValueError, match="streamer"):
        ranked_output(ranked, ranker, streamer=TextStreamer(tokenizer=None))


def test_num_candidates_without_ranker_is_refused(ranked):
    input_ids, attention_mask = left_padded_prompts()
    with pytest.raises(ValueError, match="without a ranker"):
        ranked.generate(input_ids, attention_mask=attention_mask, num_candidates=4)


def test_ranker_of_another_model_is_refused_or_warned(ranked, caplog):
    other = build_model("llama", hidden_size=48)
    with pytest.raises(ValueError, match="hidden_size: ranker 48 vs model 32"):
        ranked_output(ranked, LanguageRanker.for_model(other))
    gpt2 = LanguageRanker.for_model(build_model("gpt2"))
    with pytest.raises(ValueError, match="model_type: ranker 'gpt2' vs model 'llama'"):
        ranked_output(ranked, gpt2)
    renamed = LanguageRanker.for_model(ranked)
    renamed.config.base_model = "someone/another-model"
    ranked.config._name_or_path = "me/this-model"
    with caplog.at_level(logging.WARNING, logger="hf_language_ranker"):
        ranked_output(ranked, renamed)
    assert "someone/another-model" in caplog.text and "me/this-model" in caplog.text


def test_eos_equal_pad_rows_end_with_eos(ranker):
    model = attach_ranker(build_model("llama", pad_token_id=EOS))
    model.generation_config.pad_token_id = EOS
    output = ranked_output(model, ranker, max_new_tokens=10, num_candidates=6)
    assert output.candidate_scores.isfinite().all()


def test_text_generation_pipeline_accepts_ranker(ranked, ranker):
    from conftest import build_tokenizer
    from transformers import pipeline

    seen_shapes = []
    handle = ranker.register_forward_pre_hook(lambda module, args: seen_shapes.append(tuple(args[1].shape)))
    generator = pipeline("text-generation", model=ranked, tokenizer=build_tokenizer())
    try:
        torch.manual_seed(0)
        result = generator("ab 12", ranker=ranker, num_candidates=5, max_new_tokens=4)
    finally:
        handle.remove()
    assert seen_shapes == [(1, 5, ranked.config.hidden_size)]
    assert len(result) == 1 and result[0]["generated_text"].startswith("ab 12")


def count_forward_calls(model, function):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        result = function()
    finally:
        handle.remove()
    return result, len(calls)


def test_several_rankers_share_one_sampling_pass(ranked):
    torch.manual_seed(0)
    rankers = {
        "math": LanguageRanker.for_model(ranked, feature_layer=1),
        "style": LanguageRanker.for_model(ranked, feature_layer=3, head="pointwise"),
    }
    output, calls_for_two = count_forward_calls(ranked, lambda: ranked_output(ranked, rankers, seed=2))
    for name, ranker in rankers.items():
        single, calls_for_one = count_forward_calls(ranked, lambda ranker=ranker: ranked_output(ranked, ranker, seed=2))
        assert calls_for_two == calls_for_one  # the candidates and their features are computed once
        assert torch.equal(single.candidate_sequences, output.candidate_sequences)
        assert torch.allclose(output.ranker_scores[name], single.candidate_scores, atol=1e-5)
        assert torch.equal(output.ranker_best_indices[name], single.best_indices)
        assert torch.equal(output.ranker_sequences[name], single.sequences)
    assert torch.equal(output.sequences, output.ranker_sequences["math"])
    as_list = ranked_output(ranked, list(rankers.values()), seed=2)
    assert set(as_list.ranker_scores) == {"0", "1"}
    input_ids, attention_mask = left_padded_prompts()
    best = ranked.generate(input_ids, attention_mask=attention_mask, ranker=rankers, num_candidates=4, max_new_tokens=3)
    assert set(best) == {"math", "style"} and best["math"].shape[0] == 3
