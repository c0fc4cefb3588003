"""The command line: the whole pipeline on a tiny random model and a tiny preset, as a user would run it."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import MISSING, fields

import pytest
from conftest import BOTH_AUTO_DTYPES
from datasets import load_from_disk
from transformers.utils.logging import warning_once

from hf_language_ranker import LanguageRanker
from hf_language_ranker.candidates import CollectionInfo
from hf_language_ranker.cli import build_parser, main, training_options
from hf_language_ranker.evaluation import EvaluationResult
from hf_language_ranker.evaluation.cross_validation import RANKER_VARIANTS
from hf_language_ranker.evaluation.experiment import PRESETS, Preset
from hf_language_ranker.evaluation.report import CHOSEN
from hf_language_ranker.tasks import TASKS
from hf_language_ranker.training_args import RankerTrainingArguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_preset(monkeypatch):
    preset = Preset(
        train_prompts=12,
        validation_prompts=6,
        test_prompts=6,
        train_candidates=4,
        eval_candidates=4,
        max_new_tokens=4,
        layer_fractions=(0.5, 1.0),
        ns=(1, 2, 4),
        reward_model_max_pairs=8,
        folds=2,
        training={"num_train_epochs": 1},
    )
    monkeypatch.setitem(PRESETS, "tiny", preset)
    return preset


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "evaluate", "collect", "train", "generate", "push", "rank", "lm-eval"):
        assert command in text


@pytest.mark.parametrize("command", ["evaluate", "rank", "collect", "generate", "train"])
def test_help_shows_each_default_once_and_never_none(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help at the terminal's width
    assert "(default: None)" not in text
    assert text.count("(default: auto)") == (command in ("rank", "collect", "generate"))  # --dtype states its own
    assert text.count("(default: embedded SmolLM2) (default") == 0 and "(default: the preset's) (default" not in text
    shown = {"evaluate": "(default: arithmetic)", "rank": "(default: 256)", "collect": "(default: 8)"}
    shown |= {"generate": "(default: 16)", "train": "(default: listwise)"}
    assert shown[command] in text  # defaults the help does not state are still appended


def test_collect_train_generate(tiny_model_dir, tiny_preset, tmp_path, capsys, caplog, monkeypatch):
    model = ["--model", str(tiny_model_dir)]
    base = ["--task", "arithmetic", "--preset", "tiny", "--num-candidates", "4", "--max-new-tokens", "3"]
    base += ["--dtype", "bfloat16"]
    assert main(["collect", *model, *base, "--split", "train", "--output-dir", str(tmp_path / "train")]) == 0
    assert main(["collect", *model, *base, "--split", "validation", "--output-dir", str(tmp_path / "val")]) == 0
    train = load_from_disk(str(tmp_path / "train" / "dataset"))
    assert len(train) == 12 and len(train[0]["candidates"]) == 4
    assert CollectionInfo.from_dataset(train).model_dtype == "bfloat16"
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["collection"]["model_dtype"] == "bfloat16"
    status = main(
        ["train", "--dataset", str(tmp_path / "train"), "--eval-dataset", str(tmp_path / "val")]
        + ["--num-train-epochs", "1", "--use-mean-log-prob", "--use-vote-share", "--use-centrality"]
        + ["--selection", "weighted_vote", "--output-dir", str(tmp_path / "ranker")]
    )
    assert status == 0
    config = LanguageRanker.from_pretrained(tmp_path / "ranker").config
    assert config.hidden_size == 32 and config.use_mean_log_prob and config.use_vote_share and config.use_centrality
    assert (config.selection, config.answer_extractor) == ("weighted_vote", "math")
    assert config.model_dtype == "bfloat16"  # collect -> train -> save -> load
    import hf_language_ranker.ranker_set as ranker_set  # the rule `generate` picks with (RankerSet.pick), spied on

    modes = []
    monkeypatch.setattr(ranker_set, "select", lambda values, mode, ids: modes.append(mode) or values.argmax(-1))
    capsys.readouterr()
    warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hf_language_ranker"):
        status = main(
            ["generate", *model, "--ranker", str(tmp_path / "ranker"), "--prompt", "ab 1", "--num-candidates", "3"]
            + ["--dtype", "float32"]
        )
    assert status == 0 and modes == ["weighted_vote"]
    assert "computed in bfloat16 but the model runs in float32" in caplog.text
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:2] in ("->", "+0", "-0")]
    assert len(lines) == 3 and sum(line.startswith("->") for line in lines) == 1


@BOTH_AUTO_DTYPES
def test_generate_serves_in_the_dtype_auto_picks(tiny_model_dir, tmp_path, capsys, monkeypatch, auto_resolves_to):
    import hf_language_ranker.embedded as embedded

    models = []
    load = embedded.load_model_and_tokenizer
    spy = lambda *args, **kwargs: models.append(load(*args, **kwargs)) or models[-1]  # noqa: E731
    monkeypatch.setattr(embedded, "load_model_and_tokenizer", spy)
    model = load(tiny_model_dir, dtype="float32")[0]
    LanguageRanker.for_model(model).save_pretrained(tmp_path / "ranker")
    capsys.readouterr()
    arguments = ["generate", "--model", str(tiny_model_dir), "--ranker", str(tmp_path / "ranker"), "--prompt", "ab"]
    assert main([*arguments, "--num-candidates", "3"]) == 0
    assert models[-1][0].dtype == auto_resolves_to
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:2] in ("->", "+0", "-0")]
    assert len(lines) == 3 and sum(line.startswith("->") for line in lines) == 1


def test_train_options_are_the_training_arguments_with_their_defaults(capsys):
    """`train` is generated from RankerTrainingArguments: every field is a flag, with the dataclass's default."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    options = training_options(build_parser().parse_args(["train", "--dataset", "somewhere", "--output-dir", "o"]))
    for field in fields(RankerTrainingArguments):
        if field.init:
            assert f"--{field.name.replace('_', '-')}" in help_text or f"--{field.name}" in help_text, field.name
    # the fields this package declares or re-tunes keep their exact defaults ...
    for name in RankerTrainingArguments.__annotations__:
        field = RankerTrainingArguments.__dataclass_fields__[name]
        default = field.default_factory() if field.default is MISSING else field.default
        assert options[name] == default or name == "output_dir", name
    # ... and all of them together (argparse passes a few of transformers' string defaults through their type, e.g.
    # include_num_input_tokens_seen "no" -> False, which TrainingArguments reads back as "no") give equal arguments
    assert RankerTrainingArguments(**options) == RankerTrainingArguments(output_dir="o")
    assert "--selection {argmax,weighted_vote}" in help_text and "Written to config.json" in help_text


def check_report(output_dir, printed):
    """What every `evaluate` run writes: summary first, per-prompt results, the choice, a plot, a ranker with a card."""
    assert printed.lstrip().startswith("Best-of-") and f"{CHOSEN} − majority vote" in printed
    assert printed.index("Best-of-") < printed.index("results.md")
    results = json.loads((output_dir / "results.json").read_text())
    assert EvaluationResult.from_json(output_dir / "results.json").accuracy == {
        method: {int(n): value for n, value in by_n.items()} for method, by_n in results["accuracy"].items()
    }
    methods = set(results["accuracy"])
    assert {"first sample", "majority vote", "oracle (pass@N)", "linear probe", "MiniLM reward model"} <= methods
    assert set(RANKER_VARIANTS) <= methods and {f"{name} + weighted vote" for name in RANKER_VARIANTS} <= methods
    assert all(len(values) == results["num_prompts"] for values in results["per_prompt"][CHOSEN].values())
    # the saved ranker is the cross-validated choice (train + validation prompts only), refit on all of them
    chosen = results["chosen"]
    assert chosen["method"] == CHOSEN and chosen["folds"] == 2
    assert chosen["prompts"] == results["split_sizes"]["train"] + results["split_sizes"]["validation"]
    row = chosen["chosen"]["method"]
    options = RANKER_VARIANTS[row.removesuffix(" + weighted vote")]
    saved = LanguageRanker.from_pretrained(output_dir / "ranker").config
    assert saved.feature_layer == chosen["chosen"]["feature_layer"]
    assert (saved.head, saved.use_mean_log_prob) == (options["head"], options.get("use_mean_log_prob", False))
    assert saved.use_vote_share == options.get("use_vote_share", False)
    assert saved.selection == ("weighted_vote" if row.endswith("weighted vote") else "argmax")
    markdown = (output_dir / "results.md").read_text()
    assert "Paired differences" in markdown and "Cross-validated accuracy" in markdown and "| method" in markdown
    assert (output_dir / "accuracy_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (output_dir / "ranker" / "README.md").read_text()
    assert "model-index" in card and "accuracy" in card and "split sizes (prompts)" in card
    assert "cross-validation" in card and "test vs majority vote" in card
    return results


def test_demo_pipeline_writes_results_and_a_ranker(tiny_model_dir, tiny_preset, tmp_path, capsys, monkeypatch):
    output_dir = tmp_path / "demo"
    status = main(["evaluate", "--model", str(tiny_model_dir), "--preset", "tiny", "--output-dir", str(output_dir)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "greedy" in printed and "ranked" in printed
    results = check_report(output_dir, printed)
    assert results["example"]["prompt"] and results["missing"] == []
    assert "built-in task 'arithmetic'" in results["data"]["description"]
    # a second run resumes: the collected candidates are reused, not sampled again
    import hf_language_ranker.collection as collection

    monkeypatch.setattr(collection, "sample_candidates", lambda *args, **kwargs: pytest.fail("sampled again"))
    assert main(["evaluate", "--model", str(tiny_model_dir), "--preset", "tiny", "--output-dir", str(output_dir)]) == 0


def test_evaluate_on_your_prompts_then_on_the_collected_folders(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A user's JSON-lines task end to end, then the same splits' folders again with no LLM at all."""
    import hf_language_ranker.evaluation.experiment as experiment

    monkeypatch.setattr(experiment, "Preset", functools.partial(Preset, training={"num_train_epochs": 1}))
    prompts = tmp_path / "my_task.jsonl"
    lines = [json.dumps({"prompt": f"{a} {b}", "answer": str(a + b)}) for a in range(6) for b in range(5)]
    prompts.write_text("\n".join(lines) + "\n")
    output_dir = tmp_path / "mine"
    sampling = ["--num-candidates", "4", "--max-new-tokens", "3", "--folds", "2"]
    splits = ["--train-prompts", "12", "--validation-prompts", "6", "--test-prompts", "6"]
    argv = ["evaluate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--verifier", "math"]
    assert main([*argv, *sampling, *splits, "--dtype", "bfloat16", "--output-dir", str(output_dir)]) == 0
    results = check_report(output_dir, capsys.readouterr().out)
    # --dtype is what the model ran in, and what results.json and results.md record
    candidates = load_from_disk(str(output_dir / "candidates" / "test" / "dataset"))
    assert CollectionInfo.from_dataset(candidates).model_dtype == "bfloat16"
    assert results["preset"]["dtype"] == "bfloat16"
    assert '"dtype": "bfloat16"' in (output_dir / "results.md").read_text()
    assert results["split_sizes"] == {"train": 12, "validation": 6, "test": 6}
    assert results["greedy_accuracy"] is not None and results["missing"] == []
    digest = hashlib.sha256(prompts.read_bytes()).hexdigest()
    assert results["data"]["files"] == {"my_task.jsonl": digest}
    assert f"my_task.jsonl (sha256 {digest})" in (output_dir / "ranker" / "README.md").read_text()

    import hf_language_ranker.embedded as embedded

    monkeypatch.setattr(embedded, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    folders = [f"--{split}-dataset={output_dir / 'candidates' / split}" for split in ("train", "validation", "test")]
    assert main(["evaluate", *folders, "--folds", "2", "--output-dir", str(tmp_path / "folders")]) == 0
    printed = capsys.readouterr().out
    results = check_report(tmp_path / "folders", printed)
    assert results["greedy_accuracy"] is None and "greedy decoding" in results["missing"][0]
    assert results["preset"]["dtype"] == "bfloat16"  # the dtype `collect` ran in
    assert "Not measured: greedy decoding" in printed
    assert "candidate folders" in (tmp_path / "folders" / "ranker" / "README.md").read_text()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "No candidate dataset" in capsys.readouterr().err


@BOTH_AUTO_DTYPES
def test_collect_external_candidates_from_jsonl(tiny_model_dir, tmp_path, capsys, auto_resolves_to):
    samples = tmp_path / "samples.jsonl"
    records = [
        {
            "prompt": "1 2",
            "candidates": ["3", "the answer is 4", [5, 6, 2]],
            "finished": [True, False, True],
            "answer": "3",
        },
        {"prompt": "ab", "candidates": ["7", "8", "9"], "answer": "9"},
    ]
    samples.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    output = tmp_path / "external"
    arguments = ["collect", "--model", str(tiny_model_dir), "--candidates", str(samples), "--layers", "2"]
    assert main([*arguments, "--verifier", "math", "--output-dir", str(output)]) == 0
    dataset = load_from_disk(str(output / "dataset"))
    assert CollectionInfo.from_dataset(dataset).model_dtype == str(auto_resolves_to).removeprefix("torch.")
    assert dataset["candidates"][:] == [["3", "the answer is 4", "cd"], ["7", "8", "9"]]
    assert dataset["labels"][:] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # "finished": false leaves the EOS off; the ids end with their own EOS (id 2)
    assert dataset["lengths"][0] == [2, 15, 3]
    assert main([*arguments, "--output-dir", str(tmp_path / "unlabelled")]) == 2
    assert "--candidates needs --verifier" in capsys.readouterr().err
    samples.write_text('{"prompt": "ab"}\n')
    assert main([*arguments, "--verifier", "math", "--output-dir", str(tmp_path / "bad")]) == 2
    assert 'samples.jsonl, line 1: missing "candidates"' in capsys.readouterr().err


def _cli_bad_inputs(tmp_path):
    broken = tmp_path / "broken-ranker"
    broken.mkdir()
    (broken / "config.json").write_text("{\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ab", "answer": "3"}\n')
    out = ["--output-dir", str(tmp_path / "out")]
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"prompt": "ab", "answer": "3"}\n\n{"prompt": "cd", "answer": }\n')
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"prompt": "ab", "answer": "3"}\n{"prompt": "cd"}\n')
    no_prompt = tmp_path / "no_prompt.jsonl"
    no_prompt.write_text('{"question": "ab", "answer": "3"}\n')
    not_collected = tmp_path / "not-collected"
    not_collected.mkdir()
    folders = [f"--{split}-dataset={not_collected}" for split in ("train", "validation", "test")]
    evaluate = ["evaluate", "--verifier", "math", "--prompts"]
    return [
        ([*evaluate, str(malformed), *out], "malformed.jsonl, line 3: not valid JSON (Expecting value, column 28)"),
        ([*evaluate, str(no_answer), *out], 'no_answer.jsonl, line 2: missing "answer"'),
        ([*evaluate, str(no_prompt), *out], 'no_prompt.jsonl, line 1: missing "prompt"'),
        ([*evaluate, str(tmp_path / "absent.jsonl"), *out], "No JSON-lines file at"),
        (["evaluate", "--prompts", str(no_answer), *out], "--prompts needs --verifier"),
        (["collect", "--prompts", str(malformed), "--verifier", "math", *out], "malformed.jsonl, line 3: not valid"),
        (["collect", "--prompts", str(no_answer), "--verifier", "math", *out], 'line 2: missing "answer"'),
        (["evaluate", folders[0], *out], "add --validation-dataset and --test-dataset"),
        (["evaluate", *folders, "--prompts", str(no_answer), *out], "either --prompts or --train-dataset"),
        (["evaluate", *folders, *out], "not-collected is not a dataset folder"),
        (["train", "--dataset", str(not_collected), *out], "not-collected is not a dataset folder"),
        (
            ["collect", "--task", "nosuchtask", *out],
            "Unknown task 'nosuchtask'. Known: " + ", ".join(sorted(TASKS)),
        ),
        (["collect", "--prompts", str(prompts), *out], "--prompts needs --verifier"),
        (["collect", "--prompts", str(prompts), "--verifier", "nosuch", *out], "Unknown verifier name 'nosuch'"),
        (["collect", "--candidates", str(tmp_path / "missing.jsonl"), "--verifier", "math", *out], "missing.jsonl"),
        (["generate", "--ranker", str(broken), "--prompt", "x"], "broken-ranker: config.json is not valid JSON"),
        (["generate", "--ranker", str(tmp_path / "nothing"), "--prompt", "x"], "No ranker folder at"),
        (["generate", "--model", str(tmp_path), "--prompt", "x"], "--ranker is needed with --model"),
        (["rank", "--candidates", str(prompts), "--ranker", str(tmp_path / "nothing"), *out], "No ranker folder at"),
        (["train", "--dataset", str(tmp_path / "missing"), *out], "No candidate dataset"),
        (["evaluate", "--preset", "nosuch", *out], "Unknown preset 'nosuch'"),
        (["evaluate", "--task", "nosuchtask", *out], "Unknown task 'nosuchtask'"),
    ]


def test_bad_arguments_are_one_error_line_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import hf_language_ranker.embedded as embedded

    monkeypatch.setattr(embedded, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded the model"))
    for argv, message in _cli_bad_inputs(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(ValueError, match="Unknown task"):  # --debug shows the real exception
        main(["--debug", "collect", "--task", "nosuchtask", "--output-dir", str(tmp_path / "out")])


@pytest.mark.parametrize("flag", ["--num-candidates", "--max-new-tokens", "--batch-size"])
@pytest.mark.parametrize(
    ("value", "shown"), [("0", "got 0"), ("-3", "got -3"), ("2.5", "got '2.5'"), ("four", "got 'four'")]
)
def test_counts_must_be_positive_integers(flag, value, shown, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--task", "arithmetic", flag, value, "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected an integer >= 1, {shown}" in err
