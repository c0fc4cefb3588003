"""Candidate collection: the dataset layout, parity with `sample_candidates`, kill-and-resume, two processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import collection_worker as worker
import numpy as np
import pytest
import torch
from conftest import build_model, build_tokenizer
from datasets import Array2D, Dataset, List, Value

from hf_language_ranker import shards
from hf_language_ranker.candidates import CollectionInfo, candidate_feature_column, prompt_feature_column
from hf_language_ranker.collection import collect_candidates
from hf_language_ranker.sampling import sample_candidates

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "collection_worker.py"
CPU_CONFIG = REPO / "examples" / "accelerate_collect" / "cpu_2_processes.yaml"
NUM_PROMPTS = 24
LAYERS = [2, 4]  # SETTINGS["layers"] = [2, -1] on a 4-layer model
N = worker.SETTINGS["num_candidates"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process collection of all prompts (shards of 4)."""
    return worker.collect(tmp_path_factory.mktemp("reference"), NUM_PROMPTS)


def _subprocess_env() -> dict[str, str]:
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), "HF_HUB_OFFLINE": "1"}


def _assert_same_rows(dataset: Dataset, reference: Dataset) -> None:
    assert dataset["prompt_id"][:] == reference["prompt_id"][:]
    for column in ("prompt", "candidates", "lengths", "labels"):
        assert dataset[column][:] == reference[column][:], column
    for layer in LAYERS:
        for column in (prompt_feature_column(layer), candidate_feature_column(layer)):
            np.testing.assert_allclose(
                np.asarray(dataset[column][:], dtype=np.float32),
                np.asarray(reference[column][:], dtype=np.float32),
                atol=1e-2,
            )


def test_layout_and_parity_with_sample_candidates(tmp_path):
    prompts = worker.make_prompts(3)
    dataset = worker.collect(tmp_path, 3, batch_size=3)

    assert dataset.column_names == [
        "prompt_id",
        "prompt",
        "prompt_text",
        "candidates",
        "lengths",
        "labels",
        "answers",
        "mean_log_probs",
        "self_certainty",
        "prompt_features.2",
        "candidate_features.2",
        "prompt_features.4",
        "candidate_features.4",
        "generation",
    ]
    assert dataset.features[candidate_feature_column(2)] == Array2D((N, 32), "float16")
    assert dataset.features[prompt_feature_column(4)] == List(Value("float16"), length=32)
    assert dataset["prompt_id"][:] == [0, 1, 2] and dataset["prompt"][:] == prompts == dataset["prompt_text"][:]
    info = CollectionInfo.from_dataset(dataset)
    assert (info.layers, info.num_candidates, info.hidden_size, info.verifier) == (LAYERS, N, 32, "contains_a")
    assert info.generation["max_new_tokens"] == 6 and info.generation["do_sample"] is True

    # the same path by hand: one shard seeded with seed + 0, one batch of all three prompts
    tokenizer = build_tokenizer()
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    model = build_model("llama")  # seeds torch itself
    torch.manual_seed(worker.SETTINGS["seed"])
    sampled = sample_candidates(
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        num_candidates=N,
        layers=LAYERS,
        track_token_statistics=True,
        max_new_tokens=6,
    )
    torch_rows = dataset.with_format("torch")
    assert torch.equal(torch_rows["lengths"][:].long(), sampled.lengths)
    for layer in LAYERS:
        assert torch.equal(torch_rows[prompt_feature_column(layer)][:], sampled.prompt_features[layer].half().float())
        candidate = torch_rows[candidate_feature_column(layer)][:]
        assert torch.equal(candidate, sampled.candidate_features[layer].half().float())
    assert torch.allclose(torch_rows["mean_log_probs"][:], sampled.mean_log_probs)
    assert torch.allclose(torch_rows["self_certainty"][:], sampled.self_certainty)
    for row, generated, lengths in zip(dataset, sampled.generated, sampled.lengths):
        tokens = [ids[:length].tolist() for ids, length in zip(generated, lengths)]
        assert row["candidates"] == tokenizer.batch_decode(tokens, skip_special_tokens=True)
        assert row["labels"] == [float("a" in candidate) for candidate in row["candidates"]]
        assert row["answers"] == [None] * N  # a plain callable parses no answers


def test_dataset_prompts_with_chat_template(tmp_path):
    prompts = Dataset.from_dict({"prompt": worker.make_prompts(3), "answer": ["a", "b", "c"]})
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} 9{% endif %}"
    )
    seen = []
    dataset = collect_candidates(
        build_model("llama"),
        tokenizer,
        prompts,
        lambda p, c: seen.append(p) or True,
        output_dir=tmp_path,
        num_candidates=2,
        max_new_tokens=3,
    )
    assert dataset["prompt_text"][:] == [prompt + " 9" for prompt in prompts["prompt"]]
    assert seen == [prompt for prompt in prompts["prompt"] for _ in range(2)]
    assert dataset["labels"][:] == [[1.0, 1.0]] * 3


@pytest.mark.parametrize(
    "prompts, options, message",
    [
        (["ab"], {"chat_template": True}, "has no chat template"),
        (Dataset.from_dict({"question": ["ab"]}), {}, "no 'prompt' column"),
        ([{"question": "ab"}], {}, r"prompts\[0\] is dict without a 'prompt' key"),
        ([], {}, "No prompts"),
        (["ab"], {"num_candidates": 0}, "num_candidates must be an integer >= 1"),
        (["ab"], {"layers": [9]}, "Feature layer 9 does not exist"),
        (["ab"], {"do_sample": False}, "always samples"),
    ],
)
def test_invalid_arguments_are_refused(tmp_path, prompts, options, message):
    with pytest.raises(ValueError, match=message):
        collect_candidates(build_model("llama"), build_tokenizer(), prompts, bool, output_dir=tmp_path, **options)
    assert not tmp_path.joinpath("manifest.json").exists()


def test_do_sample_true_is_accepted_and_changes_nothing(tmp_path):
    model, tokenizer = build_model("llama"), build_tokenizer()
    options = dict(num_candidates=2, max_new_tokens=3, layers=[2])

    def always(prompt: str, candidate: str) -> bool:
        return True

    plain = collect_candidates(model, tokenizer, ["ab", "c1"], always, output_dir=tmp_path / "plain", **options)
    sampled = collect_candidates(
        model, tokenizer, ["ab", "c1"], always, output_dir=tmp_path / "sampled", do_sample=True, **options
    )
    assert sampled["candidates"][:] == plain["candidates"][:]
    manifest = (tmp_path / "plain" / "manifest.json").read_text()
    assert (tmp_path / "sampled" / "manifest.json").read_text() == manifest


def test_finished_run_is_reused_and_changed_settings_are_refused(tmp_path, reference):
    first = worker.collect(tmp_path, 6)
    calls = worker.verifier_calls
    again = worker.collect(tmp_path, 6)
    assert worker.verifier_calls == calls, "a finished collection must not sample again"
    _assert_same_rows(again, reference.select(range(6)))
    _assert_same_rows(first, again)

    for change, name in [({"num_candidates": 2}, "num_candidates"), ({"layers": [1]}, "layers"), ({"seed": 1}, "seed")]:
        with pytest.raises(ValueError, match=f"differing: {name}.*overwrite=True"):
            worker.collect(tmp_path, 6, **change)
    with pytest.raises(ValueError, match="num_prompts, prompts_sha256"):
        worker.collect(tmp_path, 7)
    fresh = worker.collect(tmp_path, 6, num_candidates=2, overwrite=True)
    assert fresh.features["labels"].length == 2 and len(fresh) == 6


def _finished_shards(shards_dir: Path) -> list[Path]:
    return sorted(shards_dir.glob("shard-*")) if shards_dir.exists() else []


def test_kill_and_resume_loses_nothing_and_matches_an_uninterrupted_run(tmp_path, reference, monkeypatch):
    output_dir = tmp_path / "killed"
    command = [
        sys.executable,
        str(WORKER),
        str(output_dir),
        "--num-prompts",
        str(NUM_PROMPTS),
        "--verifier-delay",
        "0.03",
    ]
    process = subprocess.Popen(command, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_finished_shards(output_dir / "shards")) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    finished = _finished_shards(output_dir / "shards")
    assert 2 <= len(finished) < NUM_PROMPTS // 4, stderr.decode()[-2000:]
    snapshot = {path: path.read_bytes() for shard in finished for path in shard.rglob("*")}
    # what a write killed before its os.replace leaves behind
    (output_dir / "shards" / ".shard-000000036.tmp-1").mkdir()
    (output_dir / "shards" / ".shard-000000036.tmp-1" / "data-00000-of-00001.arrow").write_bytes(b"partial")

    merge = shards.merge_shards

    def check_then_merge(*args, **kwargs):
        assert {path: path.read_bytes() for path in snapshot} == snapshot, "a finished shard was rewritten"
        assert not list((output_dir / "shards").glob(".*")), "temporary leftovers were not removed"
        merge(*args, **kwargs)

    monkeypatch.setattr(shards, "merge_shards", check_then_merge)
    calls = worker.verifier_calls
    resumed = worker.collect(output_dir, NUM_PROMPTS)
    assert worker.verifier_calls - calls == (NUM_PROMPTS - 4 * len(finished)) * N, "finished shards were sampled again"
    assert resumed["prompt_id"][:] == list(range(NUM_PROMPTS))
    _assert_same_rows(resumed, reference)
    assert not (output_dir / "shards").exists() and sorted(p.name for p in output_dir.iterdir()) == [
        "dataset",
        "manifest.json",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_with_accelerate_launch(tmp_path, reference):
    output_dir = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG)]
    launch += ["--main_process_port", str(_free_port()), str(WORKER), str(output_dir), "--num-prompts", "10"]
    result = subprocess.run(
        launch, env={**_subprocess_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("collected 10 prompts") == 2  # both processes return the merged dataset
    dataset = Dataset.load_from_disk(str(output_dir / "dataset"))
    assert dataset["prompt_id"][:] == list(range(10))
    _assert_same_rows(dataset, reference.select(range(10)))  # seeds per shard: same samples as one process


def _sampled_token_ids(prompts: list[str]) -> list[list[list[int]]]:
    """The ids `collect_candidates` sampled for `worker.collect(..., batch_size=len(prompts))`, by hand."""
    tokenizer = build_tokenizer()
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    model = build_model("llama")
    torch.manual_seed(worker.SETTINGS["seed"])
    sampled = sample_candidates(
        model, inputs["input_ids"], inputs["attention_mask"], num_candidates=N, layers=LAYERS, max_new_tokens=6
    )
    return [
        [ids[:length].tolist() for ids, length in zip(generated, lengths)]
        for generated, lengths in zip(sampled.generated, sampled.lengths)
    ]


def test_external_candidates_give_the_rows_of_a_self_sampled_collection(tmp_path):
    prompts = worker.make_prompts(3)
    sampled = worker.collect(tmp_path / "sampled", 3, batch_size=3)
    ids = _sampled_token_ids(prompts)

    def collect_external(candidates):
        return collect_candidates(
            build_model("llama"),
            build_tokenizer(),
            prompts,
            worker.contains_a,
            output_dir=tmp_path / "external",
            layers=worker.SETTINGS["layers"],
            batch_size=2,
            shard_size=2,
            candidates=candidates,
        )

    external = collect_external(ids)
    for column in ("prompt_id", "prompt", "prompt_text", "candidates", "lengths", "labels", "answers"):
        assert external[column][:] == sampled[column][:], column
    for column in ("mean_log_probs", "self_certainty"):
        np.testing.assert_allclose(np.asarray(external[column][:]), np.asarray(sampled[column][:]), atol=1e-4)
    for layer in LAYERS:  # features are stored in float16: equal within one float16 step of the stored value
        for column in (prompt_feature_column(layer), candidate_feature_column(layer)):
            np.testing.assert_allclose(
                np.asarray(external[column][:], dtype=np.float32),
                np.asarray(sampled[column][:], dtype=np.float32),
                rtol=1e-3,
                atol=1e-4,
            )
    info = CollectionInfo.from_dataset(external)
    assert info.num_candidates == N and info.generation["sampler"] == "external"
    # the same call resumes (returns the finished collection); other candidates are refused
    assert collect_external(ids)["lengths"][:] == external["lengths"][:]
    with pytest.raises(ValueError, match="other settings"):
        collect_external([group[::-1] for group in ids])


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"candidates": [["a"]]}, ValueError, "2 prompts but 1 candidate lists"),
        ({"candidates": [["a", "b"], ["c"]]}, ValueError, r"candidates\[1\] holds 1 answers.*same number per prompt"),
        ({"candidates": [["a"], ["c"]], "num_candidates": 2}, ValueError, r"candidates\[0\] holds 1 answers"),
        ({"candidates": [["a"], ["c"]], "temperature": 0.5}, ValueError, "drop temperature"),
        ({"candidates": [["a"], ["c"]], "max_new_tokens": 5}, ValueError, "drop max_new_tokens"),
        ({"candidates": [["a"], [[]]]}, ValueError, r"candidates\[1\]\[0\] is empty"),
        ({"candidates": "ab"}, TypeError, "candidates must be a list"),
    ],
)
def test_bad_external_candidates_are_refused(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        collect_candidates(
            build_model("llama"), build_tokenizer(), ["ab", "c1"], bool, output_dir=tmp_path, layers=[2], **options
        )
    assert not tmp_path.joinpath("manifest.json").exists()
