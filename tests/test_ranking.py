"""`rank_candidates`: candidates from any sampler get the scores ranked `generate` gives them."""

from __future__ import annotations

import pytest
import torch
from conftest import BOS, EOS, FAMILIES, PAD, VOCAB_SIZE, build_model, build_tokenizer
from test_feature_parity import TOLERANCE, expected_lengths, ranked_generate_output
from transformers import LogitsProcessor, LogitsProcessorList

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates, rank_candidates
from hf_language_ranker.features import cache_argument, decoder_layers


class ForbidSpecialTokens(LogitsProcessor):
    """Keeps PAD and BOS out of the answers, so their decoded texts re-tokenize to the same ids."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, [PAD, BOS]] = float("-inf")
        return scores


def sampled_by_generate(model, ranker, **options):
    """Ranked `generate`'s output with each prompt's real ids and each candidate's real ids (EOS included)."""
    input_ids, attention_mask, output = ranked_generate_output(
        model, ranker, logits_processor=LogitsProcessorList([ForbidSpecialTokens()]), **options
    )
    prompt_length = input_ids.shape[1]
    prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
    generated = output.candidate_sequences[:, :, prompt_length:]
    lengths = expected_lengths(generated)
    candidates = [
        [generated[b, n, : lengths[b, n]].tolist() for n in range(generated.shape[1])] for b in range(len(prompts))
    ]
    return prompts, candidates, output


def texts_of(tokenizer, candidates):
    return [[tokenizer.decode(ids, skip_special_tokens=True) for ids in group] for group in candidates]


def ended_with_eos(candidates):
    return [[ids[-1] == EOS for ids in group] for group in candidates]


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_and_texts_sampled_by_generate_get_generates_scores(family):
    model = attach_ranker(build_model(family, seed=5))
    tokenizer = build_tokenizer()
    ranker = LanguageRanker.for_model(model, feature_layer=3, use_mean_log_prob=True)
    prompts, candidates, output = sampled_by_generate(model, ranker)
    assert any(ids[-1] != EOS for group in candidates for ids in group), "the test needs some unfinished candidates"

    by_ids = rank_candidates(model, tokenizer, prompts, candidates, ranker, candidate_batch_size=3)
    texts = texts_of(tokenizer, candidates)
    by_texts = rank_candidates(model, tokenizer, prompts, texts, ranker, append_eos=ended_with_eos(candidates))
    for result in (by_ids, by_texts):
        assert torch.allclose(torch.stack(result.scores), output.candidate_scores, atol=TOLERANCE)
        assert torch.equal(result.best_indices, output.best_indices)
    assert by_ids.best_candidates == [group[index] for group, index in zip(candidates, output.best_indices)]
    assert by_texts.best_texts == by_ids.best_texts == [group[i] for group, i in zip(texts, output.best_indices)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pad_equal_to_eos(family):
    model = attach_ranker(build_model(family, seed=2, pad_token_id=EOS))
    tokenizer = build_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    ranker = LanguageRanker.for_model(model, feature_layer=2)
    prompts, candidates, output = sampled_by_generate(model, ranker, pad_token_id=EOS)
    result = rank_candidates(model, tokenizer, prompts, candidates, ranker)
    assert torch.allclose(torch.stack(result.scores), output.candidate_scores, atol=TOLERANCE)
    assert torch.equal(result.best_indices, output.best_indices)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("candidate_batch_size", [2, 8])  # 2: a prompt per prefill; 8: all three prefilled together
def test_ragged_candidates_equal_the_plain_forward_of_each_prompt_alone(family, candidate_batch_size):
    model = build_model(family, seed=3)
    tokenizer = build_tokenizer()
    ranker = LanguageRanker.for_model(model, feature_layer=2, head="listwise", use_mean_log_prob=True)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4]]
    candidates = [
        [[3, 4, EOS]],
        [[6, 7, 8, 9], [10, EOS], [11, 12, 13, 14, 15, 16, 17]],
        [[EOS], [9, 9], [20, 21, EOS]],
    ]
    result = rank_candidates(
        model, tokenizer, prompts, candidates, ranker, candidate_batch_size=candidate_batch_size, return_features=True
    )
    assert [len(scores) for scores in result.scores] == [1, 3, 3]
    assert result.features.candidate_mask.tolist() == [[True, False, False], [True] * 3, [True] * 3]
    for b, (prompt, group) in enumerate(zip(prompts, candidates)):
        width = max(map(len, group))
        generated = torch.tensor([[ids + [PAD] * (width - len(ids)) for ids in group]])
        lengths = torch.tensor([[len(ids) for ids in group]])
        prompt_features, candidate_features = featurize_candidates(
            model, torch.tensor([prompt]), torch.ones(1, len(prompt)), generated, lengths, [2]
        )
        assert torch.allclose(result.features.prompt_features[2][b], prompt_features[2][0], atol=TOLERANCE)
        assert torch.allclose(
            result.features.candidate_features[2][b, : len(group)], candidate_features[2][0], atol=TOLERANCE
        )
        alone = rank_candidates(model, tokenizer, [prompt], [group], ranker)
        assert torch.allclose(result.scores[b], alone.scores[0], atol=TOLERANCE)
    assert result.features.lengths[1].tolist() == [4, 2, 7]


def test_ids_after_the_first_eos_are_ignored():
    model = build_model("llama")
    ranker = LanguageRanker.for_model(model, feature_layer=2)
    tokenizer = build_tokenizer()
    cut = rank_candidates(model, tokenizer, [[5, 6]], [[[7, EOS, 9, 9], [8]]], ranker, return_features=True)
    clean = rank_candidates(model, tokenizer, [[5, 6]], [[[7, EOS], [8]]], ranker)
    assert torch.allclose(cut.scores[0], clean.scores[0])
    assert cut.features.lengths.tolist() == [[2, 1]]


def test_prefills_each_prompt_once_and_reads_only_the_ranker_layers_and_answer_logits_in_chunks():
    model = build_model("llama")  # 4 decoder blocks
    tokenizer = build_tokenizer()
    calls, block_runs = [], [0] * 4
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    for index, block in enumerate(decoder_layers(model)):
        block.register_forward_hook(  # after the block ran
            lambda module, args, output, index=index: block_runs.__setitem__(index, block_runs[index] + 1)
        )
    candidates = [[[3 + n] * (n + 1) for n in range(5)]]
    plain = LanguageRanker.for_model(model, feature_layer=2)
    twice = rank_candidates(model, tokenizer, [[5, 6, 7]] * 2, candidates * 2, plain, candidate_batch_size=2)
    assert torch.allclose(twice.scores[0], twice.scores[1], atol=TOLERANCE)
    prefill, *chunks = calls
    assert prefill["input_ids"].tolist() == [[5, 6]]  # the shared prompt, all but its last token, once
    assert len(chunks) == 5  # 10 candidates, 2 per forward pass, each on its copy of the prompt's cache
    for kwargs in chunks:
        assert kwargs["input_ids"][:, 0].tolist() == [7] * 2  # the prompt's last token, then the candidate
        cache = kwargs[cache_argument(model)]  # grown by the chunk's columns in the forward pass
        assert cache.get_seq_length() == 2 + kwargs["input_ids"].shape[1] and cache.layers[0].keys.shape[0] == 2
    assert all(not kwargs.get("output_hidden_states") for kwargs in calls)
    # no ranker reads log-probs: the chunks stop at block 2, whose input is the feature (no LM head either)
    assert block_runs == [6, 6, 1, 1]
    calls.clear()
    outputs = []
    model.register_forward_hook(lambda module, args, output: outputs.append(output))
    with_log_prob = LanguageRanker.for_model(model, feature_layer=2, use_mean_log_prob=True)
    rank_candidates(model, tokenizer, [[5, 6, 7]], candidates, with_log_prob, candidate_batch_size=5)
    assert [tuple(out.logits.shape) for out in outputs[1:]] == [(5, 5, VOCAB_SIZE)]  # answer positions only


def _tensors(value):
    """The tensors in a module's output (nested tuples, lists, dicts and `ModelOutput`s)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def _shared_prefix_pass_sizes(model, num_candidates: int, candidate_batch_size: int) -> dict[str, int]:
    """One prompt and ``num_candidates`` distinct candidates of 32 tokens through `rank_candidates`: the largest
    tensor any module returned, the largest KV cache a forward pass ended with (elements), the most rows in one
    forward pass and the number of forward passes."""
    sizes = {"largest_output": 0, "largest_cache": 0, "rows": 0, "forwards": 0}

    def module_output(module, args, output):
        sizes["largest_output"] = max([sizes["largest_output"], *(t.numel() for t in _tensors(output))])

    def model_forward(module, args, kwargs, output):
        cache = kwargs.get(cache_argument(model))
        if cache is not None:
            held = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
            sizes["largest_cache"] = max(sizes["largest_cache"], held)
        sizes["rows"] = max(sizes["rows"], kwargs["input_ids"].shape[0])
        sizes["forwards"] += 1

    ranker = LanguageRanker.for_model(model, feature_layer=2, use_mean_log_prob=True)  # logits too: the whole model
    candidates = [[3 + (n + 7 * k) % 20 for k in range(32)] for n in range(num_candidates)]
    hooks = [
        torch.nn.modules.module.register_module_forward_hook(module_output),
        model.register_forward_hook(model_forward, with_kwargs=True),
    ]
    try:
        prompts, chunk = [[5, 6, 7, 8, 9, 10]], candidate_batch_size
        result = rank_candidates(model, build_tokenizer(), prompts, [candidates], ranker, candidate_batch_size=chunk)
    finally:
        for hook in hooks:
            hook.remove()
    assert result.scores[0].shape == (num_candidates,)
    return sizes


def test_peak_memory_of_the_shared_prefix_pass_does_not_grow_with_the_number_of_candidates():
    """The memory bound of the second pass: what a forward pass holds (activations, logits over the answer, the KV
    cache of the prompt and the candidates) is set by ``candidate_batch_size``, not by N; only the returned
    ``[B, N, H]`` features grow with N. The prompt is prefilled once, then N / candidate_batch_size chunks run."""
    model = build_model("llama")
    few, many = (_shared_prefix_pass_sizes(model, n, candidate_batch_size=8) for n in (8, 64))
    assert many["forwards"] == 1 + 64 // 8 and few["forwards"] == 1 + 1
    assert many["rows"] == few["rows"] == 8
    assert many["largest_output"] == few["largest_output"] and many["largest_cache"] == few["largest_cache"]
    # the measure does see the batch: 64 candidates in one forward pass hold 8 times as much
    unchunked = _shared_prefix_pass_sizes(model, 64, candidate_batch_size=64)
    assert unchunked["forwards"] == 2 and unchunked["rows"] == 64
    assert unchunked["largest_output"] == 8 * few["largest_output"]
    assert unchunked["largest_cache"] == 8 * few["largest_cache"]


@pytest.mark.parametrize("family", FAMILIES)
def test_log_probs_reported_by_the_sampler_give_the_same_scores_without_the_blocks_above_the_feature(family):
    model = build_model(family, seed=4)
    tokenizer = build_tokenizer()
    ranker = LanguageRanker.for_model(model, feature_layer=2, use_mean_log_prob=True)
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    candidates = [[[3, 4, EOS], [9, 9, 9, 9]], [[6, EOS], [10, 11, 12], [13]]]
    computed = rank_candidates(model, tokenizer, prompts, candidates, ranker, return_features=True)
    reported = [row[: len(group)].tolist() for row, group in zip(computed.features.mean_log_probs, candidates)]
    last_block = decoder_layers(model)[-1]
    runs = []
    handle = last_block.register_forward_hook(lambda module, args, output: runs.append(1))
    given = rank_candidates(model, tokenizer, prompts, candidates, ranker, mean_log_probs=reported)
    handle.remove()
    assert len(runs) == 1  # the prompts' shared prefill only; no candidate reached the last block
    for by_sampler, by_model in zip(given.scores, computed.scores):
        assert torch.allclose(by_sampler, by_model, atol=TOLERANCE)
    assert torch.equal(given.best_indices, computed.best_indices)


def test_several_rankers_share_one_read_and_text_prompts_use_the_chat_template():
    model = build_model("qwen2")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}<s>"
    first = LanguageRanker.for_model(model, feature_layer=1)
    second = LanguageRanker.for_model(model, feature_layer=4, head="pointwise")
    candidates = [["12", "3 4", "5"], ["aa", "b"]]
    both = rank_candidates(model, tokenizer, ["1+1", "c d"], candidates, {"a": first, "b": second})
    for name, ranker in {"a": first, "b": second}.items():
        alone = rank_candidates(model, tokenizer, ["1+1", "c d"], candidates, ranker)
        templated_ids = [[BOS, *tokenizer("1+1", add_special_tokens=False)["input_ids"], EOS, BOS]]
        by_ids = rank_candidates(model, tokenizer, templated_ids, candidates[:1], ranker)
        assert all(torch.allclose(x, y) for x, y in zip(both.ranker_scores[name], alone.scores))
        assert torch.allclose(by_ids.scores[0], alone.scores[0], atol=TOLERANCE)
        assert torch.equal(both.ranker_best_indices[name], alone.best_indices)
    raw = rank_candidates(model, tokenizer, ["1+1", "c d"], candidates, first, chat_template=False)
    assert not torch.allclose(raw.scores[0], both.ranker_scores["a"][0])


def test_weighted_vote_needs_and_uses_an_answer_extractor():
    model = build_model("llama")
    tokenizer = build_tokenizer()
    ranker = LanguageRanker.for_model(model, feature_layer=2)
    candidates = [["a 7", "b 7", "c 3", "d 7"]]
    with pytest.raises(ValueError, match="answer_extractor"):
        rank_candidates(model, tokenizer, [[5]], candidates, ranker, ranker_selection="weighted_vote")
    result = rank_candidates(
        model, tokenizer, [[5]], candidates, ranker, ranker_selection="weighted_vote", answer_extractor=lambda t: t[-1]
    )
    assert result.best_texts[0].endswith("7")
    expected = max((0, 1, 3), key=lambda index: result.scores[0][index])
    assert int(result.best_indices[0]) == expected


BAD_INPUTS = [
    ({"prompts": "5 6"}, TypeError, "prompts must be a list"),
    ({"candidates": [["a"]]}, ValueError, "2 prompts but 1 candidate lists"),
    ({"prompts": [], "candidates": []}, ValueError, "No prompts"),
    ({"candidates": [["a"], []]}, ValueError, r"candidates\[1\] is empty"),
    ({"candidates": [["a"], "b"]}, TypeError, r"candidates\[1\] must be a list"),
    ({"candidates": [["a"], [[]]]}, ValueError, r"candidates\[1\]\[0\] is empty"),
    ({"candidates": [["a"], [""]], "append_eos": False}, ValueError, r"candidates\[1\]\[0\] is empty"),
    ({"candidates": [["a"], [[3, 99]]]}, ValueError, r"candidates\[1\]\[0\].*outside the model's vocabulary"),
    ({"candidates": [["a"], [[3, -1]]]}, ValueError, "outside the model's vocabulary"),
    ({"candidates": [["a"], [[3.0]]]}, TypeError, r"candidates\[1\]\[0\] must be a string or a sequence of int"),
    ({"candidates": [["a"], [torch.ones(2, 2, dtype=torch.long)]]}, ValueError, "1-D tensor"),
    ({"prompts": [[5], [200]]}, ValueError, r"prompts\[1\].*outside"),
    ({"prompts": [[5], []]}, ValueError, r"prompts\[1\] is empty"),
    ({"candidate_batch_size": 0}, ValueError, "candidate_batch_size must be an integer >= 1, got 0"),
    ({"candidate_batch_size": "8"}, ValueError, "candidate_batch_size must be an integer >= 1, got '8'"),
    ({"ranker_selection": "best"}, ValueError, "Unknown ranker_selection 'best'"),
    ({"ranker": 3}, TypeError, "ranker must be a LanguageRanker"),
    ({"mean_log_probs": [[-0.5]]}, ValueError, r"one value per candidate: candidates have \[1, 1\] per prompt"),
    ({"mean_log_probs": [[-0.5], [0.5]]}, ValueError, "finite and <= 0"),
    ({"mean_log_probs": [[-0.5], [float("nan")]]}, ValueError, "finite and <= 0"),
    ({"mean_log_probs": torch.zeros(2, 1)}, TypeError, "one list of floats per prompt"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_INPUTS)
def test_bad_inputs_are_named(overrides, error, message):
    model = build_model("llama")
    arguments = {
        "prompts": [[5, 6], [7]],
        "candidates": [["a"], ["b"]],
        "ranker": LanguageRanker.for_model(model, feature_layer=2),
        **overrides,
    }
    with pytest.raises(error, match=message):
        rank_candidates(model, build_tokenizer(), **arguments)


def test_a_ranker_of_another_model_is_refused():
    model = build_model("llama")
    other = LanguageRanker.for_model(build_model("llama", hidden_size=64), feature_layer=2)
    with pytest.raises(ValueError, match="does not fit"):
        rank_candidates(model, build_tokenizer(), [[5]], [["a"]], other)
