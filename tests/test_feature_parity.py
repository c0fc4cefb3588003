"""The features `generate` captures equal those of one plain forward pass over prompt + candidate."""

from __future__ import annotations

import pytest
import torch
from conftest import EOS, FAMILIES, PAD, build_model, left_padded_prompts
from transformers import LogitsProcessor, LogitsProcessorList

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates, sample_candidates

TOLERANCE = 1e-4


class ForceEosAt(LogitsProcessor):
    """Forces EOS for chosen rows at chosen generation steps (row -> step), other rows untouched."""

    def __init__(self, prompt_length: int, steps: dict[int, int]) -> None:
        self.prompt_length = prompt_length
        self.steps = steps

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        for row, at in self.steps.items():
            if at == step:
                scores[row] = float("-inf")
                scores[row, EOS] = 0.0
        return scores


class ForbidEos(LogitsProcessor):
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, EOS] = float("-inf")
        return scores


def expected_lengths(generated: torch.Tensor) -> torch.Tensor:
    """Length by the feature convention: up to and including the first EOS, else everything generated."""
    is_eos = generated == EOS
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, torch.full_like(is_eos[..., 0], 0).long())
    return torch.where(is_eos.any(-1), first, torch.full_like(first, generated.shape[-1]))


def check_parity(model, candidates, input_ids, attention_mask, layers):
    lengths = expected_lengths(candidates.generated)
    assert torch.equal(candidates.lengths, lengths)
    reference_prompt, reference_candidates = featurize_candidates(
        model, input_ids, attention_mask, candidates.generated, candidates.lengths, layers
    )
    for layer in layers:
        assert torch.allclose(candidates.prompt_features[layer], reference_prompt[layer], atol=TOLERANCE)
        assert torch.allclose(candidates.candidate_features[layer], reference_candidates[layer], atol=TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_features_match_plain_forward_with_padding_and_mixed_stops(family):
    model = build_model(family)
    input_ids, attention_mask = left_padded_prompts()
    num_candidates, max_new_tokens = 4, 8
    # rows are prompt-major: row = prompt * N + candidate. Row 0 stops at the very first step, row 5 at the
    # very last step, row 9 in the middle; other rows stop whenever they sample EOS or never.
    force = ForceEosAt(input_ids.shape[1], {0: 0, 5: max_new_tokens - 1, 9: 3})
    torch.manual_seed(1)
    candidates = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=num_candidates,
        layers=[0, 2, 4],
        max_new_tokens=max_new_tokens,
        logits_processor=LogitsProcessorList([force]),
    )
    lengths = candidates.lengths.flatten()
    assert lengths[0] == 1 and lengths[5] == max_new_tokens and lengths[9] == 4
    assert len(set(lengths.tolist())) >= 3, "the test needs rows stopping at different steps"
    check_parity(model, candidates, input_ids, attention_mask, [0, 2, 4])


@pytest.mark.parametrize("family", FAMILIES)
def test_features_match_when_no_row_emits_eos(family):
    model = build_model(family, seed=3)
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(2)
    candidates = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=3,
        layers=[1, 4],
        max_new_tokens=6,
        logits_processor=LogitsProcessorList([ForbidEos()]),
    )
    assert (candidates.lengths == 6).all()
    check_parity(model, candidates, input_ids, attention_mask, [1, 4])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_features_match_when_pad_equals_eos_and_all_rows_stop_together(family):
    model = build_model(family, pad_token_id=EOS)
    model.generation_config.pad_token_id = EOS
    input_ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    attention_mask = torch.ones_like(input_ids)
    rows = {row: 2 for row in range(6)}  # every row stops at step 2: the loop ends without feeding the EOS
    torch.manual_seed(0)
    candidates = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=3,
        layers=[2],
        max_new_tokens=10,
        logits_processor=LogitsProcessorList([ForbidEos(), ForceEosAt(3, rows)]),
    )
    assert (candidates.lengths == 3).all()
    assert candidates.sequences.shape[-1] == 3 + 3
    check_parity(model, candidates, input_ids, attention_mask, [2])


def ranked_generate_output(model, ranker, **options):
    """The left-padded prompts and a seeded ranked `generate` of (by default) 5 candidates of up to 7 tokens for
    them; ``options`` are further `generate` arguments."""
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(4)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        ranker=ranker,
        return_dict_in_generate=True,
        **{"num_candidates": 5, "max_new_tokens": 7, **options},
    )
    return input_ids, attention_mask, output


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_scores_equal_ranker_on_plain_forward_features(family):
    model = attach_ranker(build_model(family, seed=5))
    ranker = LanguageRanker.for_model(model, feature_layer=3)
    input_ids, attention_mask, output = ranked_generate_output(model, ranker)
    prompt_length = input_ids.shape[1]
    generated = output.candidate_sequences[:, :, prompt_length:]
    lengths = expected_lengths(generated)
    prompt_features, candidate_features = featurize_candidates(
        model, input_ids, attention_mask, generated, lengths, [3]
    )
    with torch.no_grad():
        reference = ranker(prompt_features[3], candidate_features[3]).scores
    assert torch.allclose(output.candidate_scores, reference, atol=TOLERANCE)
    assert torch.equal(output.best_indices, reference.argmax(-1))
    # layout: prompt columns exactly as passed, then generated tokens, then PAD after the end
    assert torch.equal(output.candidate_sequences[:, :, :prompt_length], input_ids[:, None].expand(-1, 5, -1))
    after_end = torch.arange(generated.shape[-1])[None, None, :] >= lengths[..., None]
    assert (generated[after_end] == PAD).all()


def plain_forward_mean_log_probs(model, input_ids, attention_mask, generated, lengths):
    """``[B, N]`` mean log-probability of each candidate's real tokens under one plain forward pass."""
    batch_size, num_candidates, generated_length = generated.shape
    rows, prompt_length = batch_size * num_candidates, input_ids.shape[1]
    real = torch.arange(generated_length)[None, :] < lengths.reshape(rows, 1)
    full_ids = torch.cat([input_ids.repeat_interleave(num_candidates, 0), generated.reshape(rows, -1)], dim=1)
    full_mask = torch.cat([attention_mask.repeat_interleave(num_candidates, 0), real.long()], dim=1)
    position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids).logits
    log_probs = torch.log_softmax(logits[:, prompt_length - 1 : -1].float(), dim=-1)
    token_log_probs = log_probs.gather(-1, generated.reshape(rows, -1, 1)).squeeze(-1)
    sums = (token_log_probs * real).sum(-1)
    return (sums / lengths.reshape(rows).clamp(min=1)).reshape(batch_size, num_candidates)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_log_prob_ranker_in_generate_equals_plain_forward_reference(family):
    model = attach_ranker(build_model(family, seed=5))
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(model, feature_layer=2, use_mean_log_prob=True)
    input_ids, attention_mask, output = ranked_generate_output(model, ranker)
    generated = output.candidate_sequences[:, :, input_ids.shape[1] :]
    lengths = expected_lengths(generated)
    prompt_features, candidate_features = featurize_candidates(
        model, input_ids, attention_mask, generated, lengths, [2]
    )
    mean_log_probs = plain_forward_mean_log_probs(model, input_ids, attention_mask, generated, lengths)
    with torch.no_grad():
        reference = ranker(prompt_features[2], candidate_features[2], mean_log_probs=mean_log_probs).scores
        without_log_probs = ranker(prompt_features[2], candidate_features[2], mean_log_probs=mean_log_probs * 0).scores
    assert torch.allclose(output.candidate_scores, reference, atol=TOLERANCE)
    assert not torch.allclose(reference, without_log_probs, atol=1e-3)  # the log-probs do reach the scores
