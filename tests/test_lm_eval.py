"""lm-evaluation-harness with ranked decoding, offline: a local JSON-lines task, a tiny model and ranker.

Needs the ``lm-eval`` extra, which ``[test]`` includes (imported plainly, so a broken install fails instead of
skipping)."""

from __future__ import annotations

import json
import re
import textwrap

import lm_eval
import pytest
import torch
from conftest import build_model, build_tokenizer
from lm_eval.tasks import TaskManager

from hf_language_ranker import LanguageRanker, attach_ranker, sample_candidates
from hf_language_ranker.cli import main
from hf_language_ranker.lm_eval import MODEL_NAME, RankedHFLM, _StopPerCandidate, request_seed

QUESTIONS = ["ab 1", "c2 d", "ee 3 f", "g4", "hi 56", "j 7 8"]
N, MAX_TOKENS, SEED, TEMPERATURE = 4, 6, 11, 0.9


def _task_files(folder, answers: list[str]) -> None:
    """A generate_until task over a JSON-lines file, and the same task sampled 4 times with majority vote."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS, answers)))
    (folder / "toy.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: toy_ranked
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {data}
            test_split: test
            output_type: generate_until
            doc_to_text: "{{{{question}}}}"
            doc_to_target: "{{{{answer}}}}"
            generation_kwargs:
              until: ["\\n\\n"]
              max_gen_toks: {MAX_TOKENS}
              do_sample: false
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
                regexes_to_ignore: [" "]
            """
        )
    )
    (folder / "toy_majority.yaml").write_text(
        textwrap.dedent(
            f"""\
            include: toy.yaml
            task: toy_majority
            repeats: {N}
            generation_kwargs:
              until: ["\\n\\n"]
              max_gen_toks: {MAX_TOKENS}
              do_sample: true
              temperature: {TEMPERATURE}
            filter_list:
              - name: maj@{N}
                filter:
                  - function: majority_vote
                  - function: take_first
            """
        )
    )


def _without_spaces(text: str) -> str:
    return text.replace(" ", "")


@pytest.fixture(scope="module")
def tiny():
    model = attach_ranker(build_model("llama"))
    torch.manual_seed(0)
    return model, build_tokenizer(), LanguageRanker.for_model(model, use_mean_log_prob=True)


def test_ranked_model_answers_with_ranked_generate_picks_and_majority_vote_runs_beside_it(tiny, tmp_path):
    model, tokenizer, ranker = tiny
    lm = RankedHFLM(
        pretrained=model, tokenizer=tokenizer, ranker=ranker, num_candidates=N, temperature=TEMPERATURE, seed=SEED
    )
    # what ranked generate picks for each question with the same seed (lm-eval's encoding, batches of one)
    picks = []
    for question in QUESTIONS:
        input_ids, attention_mask = lm.tok_batch_encode([question])
        torch.manual_seed(request_seed(SEED, input_ids))
        best = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            ranker=ranker,
            num_candidates=N,
            max_new_tokens=MAX_TOKENS,
            temperature=TEMPERATURE,
            pad_token_id=tokenizer.pad_token_id,
        )
        picks.append(tokenizer.decode(best[0, input_ids.shape[1] :], skip_special_tokens=True))
    assert all(_without_spaces(pick) for pick in picks), picks  # the targets below must not be empty
    answers = [pick if index % 2 == 0 else "zz" for index, pick in enumerate(picks)]  # half of them correct
    _task_files(tmp_path, answers)
    tasks = TaskManager(include_path=str(tmp_path), include_defaults=False)  # only our two tasks

    ranked = lm_eval.simple_evaluate(model=lm, tasks=["toy_ranked"], task_manager=tasks, log_samples=True)
    samples = sorted(ranked["samples"]["toy_ranked"], key=lambda sample: sample["doc_id"])
    assert [sample["resps"][0][0] for sample in samples] == picks
    assert ranked["results"]["toy_ranked"]["exact_match,none"] == pytest.approx(0.5)

    plain = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model, "tokenizer": tokenizer},
        tasks=["toy_majority"],
        task_manager=tasks,
        log_samples=True,
    )
    samples = sorted(plain["samples"]["toy_majority"], key=lambda sample: sample["doc_id"])
    assert all(len(sample["resps"][0]) == N for sample in samples)
    voted = [sample["filtered_resps"][0] for sample in samples]
    for sample, vote in zip(samples, voted):  # the filter's pick is the most common of the N answers
        answers_of_doc = sample["resps"][0]
        assert answers_of_doc.count(vote) == max(answers_of_doc.count(answer) for answer in answers_of_doc)
    expected = sum(_without_spaces(v) == _without_spaces(a) for v, a in zip(voted, answers)) / len(QUESTIONS)
    assert plain["results"]["toy_majority"][f"exact_match,maj@{N}"] == pytest.approx(expected)


def test_each_candidate_stops_at_its_own_stop_sequence(tiny):
    """lm-eval's criterion stops a batch when every row has stopped; ranked candidates must stop one by one."""
    model, tokenizer, _ = tiny
    inputs = tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    rows, width = len(QUESTIONS) * N, inputs["input_ids"].shape[1]
    stop = "a"
    torch.manual_seed(0)
    sampled = sample_candidates(
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        num_candidates=N,
        layers=[2],
        max_new_tokens=16,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=[_StopPerCandidate(stop, tokenizer, width, rows)],
    )
    texts = [text for group in sampled.decode(tokenizer) for text in group]
    stopped = [text for text in texts if stop in text]
    assert stopped and len(stopped) < len(texts), texts  # some rows stopped while others ran on
    assert all(text.index(stop) == len(text) - 1 for text in stopped), stopped


def test_registered_name_and_command_line(capsys):
    from lm_eval.api.registry import get_model

    assert get_model(MODEL_NAME) is RankedHFLM
    with pytest.raises(SystemExit) as exit_info:
        main(["lm-eval", "--help"])
    assert exit_info.value.code == 0
    assert re.search(r"run\s+Run the evaluation harness", capsys.readouterr().out)
