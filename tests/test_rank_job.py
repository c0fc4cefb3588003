"""``hf-language-ranker rank``: equal to `rank_candidates`, bad lines named, kill-and-resume, two processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import BOTH_AUTO_DTYPES, EOS, TOKENIZER_CHARACTERS, build_tokenizer
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from hf_language_ranker import LanguageRanker, rank_candidates, rank_job
from hf_language_ranker.candidates_jsonl import read_candidates_jsonl
from hf_language_ranker.cli import main

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "rank_job_worker.py"
CPU_CONFIG = REPO / "examples" / "accelerate_collect" / "cpu_2_processes.yaml"
NUM_PROMPTS = 24
SHARD_SIZE = 4


def _samples(count: int) -> list[dict]:
    """Prompts with 2..5 candidates each: texts (finished or cut) and token id lists."""
    letters = TOKENIZER_CHARACTERS.strip()
    records = []
    for index in range(count):
        prompt = "".join(letters[(5 * index + 3 * position) % len(letters)] for position in range(2 + index % 4))
        candidates = [letters[(index + k) % len(letters)] * (1 + (index + k) % 3) for k in range(1 + index % 3)]
        candidates.append([3 + (index * 7 + k) % 20 for k in range(1 + index % 5)] + [EOS])
        records.append({"prompt": prompt, "candidates": candidates, "id": f"q{index}"})
        if index % 4 == 1:
            records[-1]["finished"] = [k % 2 == 0 for k in range(len(candidates))]
    return records


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    """The samples file (a blank line inside) and a tiny ranker that reads log-probs."""
    folder = tmp_path_factory.mktemp("rank")
    samples = folder / "samples.jsonl"
    lines = [json.dumps(record) for record in _samples(NUM_PROMPTS)]
    samples.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(0)
    LanguageRanker.for_model(model, use_mean_log_prob=True).save_pretrained(folder / "ranker")
    return {"samples": samples, "ranker": folder / "ranker", "model": tiny_model_dir, "references": {}}


def reference(setup, dtype: torch.dtype = torch.float32):
    """`rank_candidates` on the samples with the model in ``dtype``, computed once per dtype."""
    if dtype not in setup["references"]:
        model = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=dtype).eval()
        examples, candidates, append_eos = read_candidates_jsonl(setup["samples"])
        ranker = LanguageRanker.from_pretrained(setup["ranker"])
        setup["references"][dtype] = rank_candidates(
            model, build_tokenizer(), [e["prompt"] for e in examples], candidates, ranker, append_eos=append_eos
        )
    return setup["references"][dtype]


def _arguments(setup, output_dir: Path, *extra: str) -> list[str]:
    return [
        "rank",
        "--model",
        str(setup["model"]),
        "--candidates",
        str(setup["samples"]),
        "--ranker",
        str(setup["ranker"]),
        "--output-dir",
        str(output_dir),
        "--shard-size",
        str(SHARD_SIZE),
        "--batch-size",
        "2",
        *extra,
    ]


def _assert_reference_picks(output_dir: Path, reference) -> None:
    """Every prompt exactly once, in file order, with `rank_candidates`'s scores and picks."""
    dataset = load_from_disk(str(output_dir / "dataset"))
    assert dataset["prompt_id"][:] == list(range(NUM_PROMPTS))
    assert dataset["best_index"][:] == reference.best_indices.tolist()
    assert dataset["best_text"][:] == reference.best_texts
    for scores, expected in zip(dataset["scores"][:], reference.scores):
        torch.testing.assert_close(torch.tensor(scores), expected.float(), atol=1e-5, rtol=1e-5)
    rows = [json.loads(line) for line in (output_dir / rank_job.RANKED_JSONL).read_text().splitlines()]
    assert [row["prompt_id"] for row in rows] == dataset["prompt_id"][:]
    assert [row["best_index"] for row in rows] == dataset["best_index"][:]
    assert [row["best_text"] for row in rows] == dataset["best_text"][:]


@BOTH_AUTO_DTYPES
def test_rank_command_equals_rank_candidates(setup, tmp_path, capsys, monkeypatch, auto_resolves_to):
    """``rank`` loads the model with ``--dtype auto``: its scores are `rank_candidates`'s in the dtype that ran."""
    output_dir = tmp_path / "ranked"
    assert main(_arguments(setup, output_dir, "--candidate-batch-size", "5")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["prompts"] == str(NUM_PROMPTS) and printed["ranked"].endswith("ranked.jsonl")
    manifest = json.loads((output_dir / "manifest.json").read_text())
    assert manifest["ranking"]["dtype"] == str(auto_resolves_to)
    _assert_reference_picks(output_dir, reference(setup, auto_resolves_to))
    dataset = load_from_disk(str(output_dir / "dataset"))
    assert dataset["line"][:5] == [1, 2, 3, 4, 5] and dataset["line"][5] == 7  # line 6 is blank
    assert dataset["prompt"][:] == [record["prompt"] for record in _samples(NUM_PROMPTS)]
    assert sorted(path.name for path in output_dir.iterdir()) == ["dataset", "manifest.json", "ranked.jsonl"]

    # a finished job is returned as it is; another ranker is refused
    monkeypatch.setattr(rank_job, "rank_with_options", lambda *a, **k: pytest.fail("ranked again"))
    assert main(_arguments(setup, output_dir)) == 0
    other = tmp_path / "other-ranker"
    changed = LanguageRanker.from_pretrained(setup["ranker"])
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    changed.save_pretrained(other)
    arguments = _arguments(setup, output_dir)
    arguments[arguments.index("--ranker") + 1] = str(other)
    capsys.readouterr()
    assert main(arguments) == 2
    assert "differing: ranker_sha256" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"prompt": "ab"}', 'line 2: missing "candidates"'),
        ('{"prompt": 3, "candidates": ["a"]}', 'line 2: "prompt" must be a string'),
        ('{"prompt": "ab", "candidates": []}', 'line 2: "candidates" must be a non-empty list'),
        ('{"prompt": "ab", "candidates": ["a", {"text": "b"}]}', 'line 2: "candidates"[1] must be a text or'),
        ('{"prompt": "ab", "candidates": ["a", [3, true]]}', 'line 2: "candidates"[1] must be a text or'),
        ('{"prompt": "ab", "candidates": ["a", [3, 99]]}', 'line 2: "candidates"[1] holds token ids outside'),
        ('{"prompt": "ab", "candidates": ["a", [3, -1]]}', 'line 2: "candidates"[1] holds a negative token id (-1)'),
        (
            '{"prompt": "ab", "candidates": ["a", ""], "finished": [true, false]}',
            'line 2: "candidates"[1] is an empty text',
        ),
        ('{"prompt": "ab", "candidates": ["a"], "finished": [1]}', 'line 2: "finished" must be a list of 1 booleans'),
        (
            '{"prompt": "ab", "candidates": ["a"], "mean_log_probs": [0.5]}',
            'line 2: "mean_log_probs" must be a list of 1 finite numbers <= 0',
        ),
        (
            '{"prompt": "ab", "candidates": ["a"], "mean_log_probs": [-0.5]}',
            'line 2: "mean_log_probs" is given on line 2 but not on line 1',
        ),
    ],
)
def test_bad_lines_are_named_before_any_work(setup, tmp_path, capsys, monkeypatch, line, message):
    """Every check but the vocabulary's fails before the model loads; that one needs the model, not any work."""
    import hf_language_ranker.embedded as embedded

    if "holds token ids outside" not in message:
        monkeypatch.setattr(embedded, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    samples = tmp_path / "bad.jsonl"
    samples.write_text('{"prompt": "ab", "candidates": ["a"]}\n' + line + "\n")
    arguments = _arguments(setup, tmp_path / "out")
    arguments[arguments.index("--candidates") + 1] = str(samples)
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert f"{samples}, {message}" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"), [(None, "No JSON-lines file at {path}."), ("\n\n", "{path} holds no prompts.")]
)
def test_a_missing_or_empty_file_fails_before_the_model_loads(setup, tmp_path, capsys, monkeypatch, content, message):
    import hf_language_ranker.embedded as embedded

    monkeypatch.setattr(embedded, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    samples = tmp_path / "samples.jsonl"
    if content is not None:
        samples.write_text(content)
    arguments = _arguments(setup, tmp_path / "out")
    arguments[arguments.index("--candidates") + 1] = str(samples)
    assert main(arguments) == 2
    assert message.format(path=samples) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mean_log_probs_in_the_file_give_the_same_ranking(setup, tmp_path):
    """The sampler's log-probs (here: those the model itself gives) replace the full pass with the same picks."""
    model = AutoModelForCausalLM.from_pretrained(setup["model"]).eval()
    ranker = LanguageRanker.from_pretrained(setup["ranker"])
    examples, candidates, append_eos = read_candidates_jsonl(setup["samples"])
    features = rank_candidates(
        model,
        build_tokenizer(),
        [example["prompt"] for example in examples],
        candidates,
        ranker,
        append_eos=append_eos,
        return_features=True,
    ).features
    records = _samples(NUM_PROMPTS)
    for record, row in zip(records, features.mean_log_probs):
        record["mean_log_probs"] = row[: len(record["candidates"])].tolist()
    samples = tmp_path / "with_log_probs.jsonl"
    samples.write_text("".join(json.dumps(record) + "\n" for record in records))
    arguments = _arguments(setup, tmp_path / "ranked")
    arguments[arguments.index("--candidates") + 1] = str(samples)
    assert main(arguments) == 0
    _assert_reference_picks(tmp_path / "ranked", reference(setup))


def _subprocess_env() -> dict[str, str]:
    paths = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), "HF_HUB_OFFLINE": "1"}


def _finished_shards(shards_dir: Path) -> list[Path]:
    return sorted(shards_dir.glob("shard-*")) if shards_dir.exists() else []


def test_sigkill_then_rerun_ranks_every_prompt_once_with_the_same_picks(setup, tmp_path, monkeypatch):
    output_dir = tmp_path / "killed"
    command = [sys.executable, str(WORKER), "--delay", "0.4", *_arguments(setup, output_dir)]
    process = subprocess.Popen(command, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_finished_shards(output_dir / "shards")) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    finished = _finished_shards(output_dir / "shards")
    assert 2 <= len(finished) < NUM_PROMPTS // SHARD_SIZE, stderr.decode()[-2000:]
    assert not (output_dir / "dataset").exists()

    ranked_prompts = []
    rank = rank_job.rank_with_options

    def counting(model, tokenizer, prompts, *args, **kwargs):
        ranked_prompts.extend(prompts)
        return rank(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(rank_job, "rank_with_options", counting)
    assert main(_arguments(setup, output_dir)) == 0
    assert len(ranked_prompts) == NUM_PROMPTS - SHARD_SIZE * len(finished), "finished shards were ranked again"
    _assert_reference_picks(output_dir, reference(setup))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_with_accelerate_launch_give_the_picks_of_one(setup, tmp_path):
    output_dir = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG)]
    launch += ["--main_process_port", str(_free_port()), str(WORKER), *_arguments(setup, output_dir)]
    result = subprocess.run(
        launch, env={**_subprocess_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"prompts": "24"') == 2  # both processes return the merged result
    _assert_reference_picks(output_dir, reference(setup))
