"""The ranked path's decoding loop: finished rows leave the batch, processors still see every row, and its
sampler draws from the processed distribution."""

from __future__ import annotations

import pytest
import torch
from conftest import EOS, build_model, build_tokenizer, forward_input_shapes, left_padded_prompts
from test_feature_parity import ForbidEos, ForceEosAt, check_parity
from transformers import LogitsProcessor, LogitsProcessorList

from hf_language_ranker import sample_candidates
from hf_language_ranker.decoding import sample_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def forward_batch_shapes(model, **sampling):
    """The ``input_ids`` shape of every forward pass of one `sample_candidates` call, and its result."""
    with forward_input_shapes(model) as shapes:
        candidates = sample_candidates(model, *left_padded_prompts(), **sampling)
    return shapes, candidates


def test_finished_rows_leave_the_batch_after_their_last_token_is_fed():
    model = build_model("llama")
    prompt_length = left_padded_prompts()[0].shape[1]
    # 3 prompts x 4 candidates: rows 0-5 end at their first token, the others run to the length limit
    force = ForceEosAt(prompt_length, dict.fromkeys(range(6), 0))
    torch.manual_seed(0)
    shapes, candidates = forward_batch_shapes(
        model,
        num_candidates=4,
        layers=[2],
        max_new_tokens=4,
        logits_processor=LogitsProcessorList([ForbidEos(), force]),
    )
    # prefill; every row's last prompt token; the first tokens (rows 0-5 feed their EOS); then only rows 6-11,
    # the last of those passes feeding the tokens sampled at the length limit
    assert shapes == [(3, prompt_length - 1), (12, 1), (12, 1), (6, 1), (6, 1), (6, 1)]
    assert candidates.lengths.flatten().tolist() == [1] * 6 + [4] * 6
    check_parity(model, candidates, *left_padded_prompts(), [2])


class RecordBatch(LogitsProcessor):
    """Records the shape of the scores it is given and the sequences' last column."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.shapes.append(tuple(scores.shape))
        return scores


def test_processors_see_every_row_in_order_while_rows_drop():
    model = build_model("qwen2")
    prompt_length = left_padded_prompts()[0].shape[1]
    record = RecordBatch()
    # row 1 ends at its first token, row 7 at its third: later steps force EOS on row 10 by its index
    force = ForceEosAt(prompt_length, {1: 0, 7: 2})
    late = ForceEosAt(prompt_length, {10: 4})
    torch.manual_seed(0)
    candidates = sample_candidates(
        model,
        *left_padded_prompts(),
        num_candidates=4,
        layers=[1],
        max_new_tokens=6,
        logits_processor=LogitsProcessorList([ForbidEos(), force, late, record]),
    )
    assert all(shape[0] == 12 for shape in record.shapes)
    lengths = candidates.lengths.flatten()
    assert lengths[1] == 1 and lengths[7] == 3 and lengths[10] == 5
    generated = candidates.generated.reshape(12, -1)
    assert generated[10, 4] == EOS  # the processor's row index still named row 10 after rows 1 and 7 left


@pytest.mark.parametrize("where", ["argument", "generation config"])
def test_stop_strings_end_each_candidate(where):
    model = build_model("llama")
    tokenizer = build_tokenizer()
    prompts = tokenizer(["ab", "c"], return_tensors="pt", padding=True)
    if where == "generation config":
        model.generation_config.stop_strings = ["a"]
    torch.manual_seed(0)
    candidates = sample_candidates(
        model,
        prompts["input_ids"],
        prompts["attention_mask"],
        num_candidates=6,
        layers=[2],
        max_new_tokens=12,
        tokenizer=tokenizer,
        **({"stop_strings": ["a"]} if where == "argument" else {}),
    )
    texts = [text for group in candidates.decode(tokenizer) for text in group]
    stopped = [text for text in texts if "a" in text]
    assert stopped and all(text.index("a") == len(text) - 1 for text in stopped), texts


def test_sample_tokens_draws_from_the_softmax_and_never_a_masked_token():
    scores = torch.tensor([[0.0, 1.0, 2.0, float("-inf"), 0.5], [float("-inf")] * 4 + [0.0]])
    torch.manual_seed(0)
    draws = torch.stack([sample_tokens(scores) for _ in range(20_000)])
    frequencies = torch.stack([torch.bincount(draws[:, row], minlength=5) for row in range(2)]).float() / len(draws)
    expected = torch.softmax(scores, dim=-1)
    assert torch.allclose(frequencies, expected, atol=0.015)
    assert (draws[:, 0] != 3).all() and (draws[:, 1] == 4).all()
    torch.manual_seed(0)
    assert torch.equal(torch.stack([sample_tokens(scores) for _ in range(20_000)]), draws)  # seeded


@pytest.mark.parametrize("bad", [float("-inf"), float("nan")])
def test_sample_tokens_refuses_scores_that_leave_nothing_to_draw(bad):
    scores = torch.zeros(2, 5)
    scores[1] = bad
    with pytest.raises(ValueError, match="no token to sample"):
        sample_tokens(scores)
