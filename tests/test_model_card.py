"""Ranker model cards: Hub metadata that `huggingface_hub.ModelCard` parses, and a usage snippet that runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_model, build_tokenizer
from datasets import Dataset, DatasetInfo
from huggingface_hub import ModelCard

from hf_language_ranker import LanguageRanker, RankerConfig
from hf_language_ranker.candidates import CollectionInfo, candidate_feature_column, prompt_feature_column
from hf_language_ranker.model_card import RankerModelCardData, is_hub_id
from hf_language_ranker.training import RankerTrainer
from hf_language_ranker.training_args import RankerTrainingArguments

BASE_MODEL = "org/tiny-llama"
RANKER_ID = "org/tiny-llama-ranker"
EVALUATION = {
    "task": "arithmetic",
    "dataset": "arithmetic test prompts",
    "accuracy": {
        "Language Ranker": {1: 0.25, 4: 0.5},
        "first sample": {1: 0.25, 4: 0.25},
        "oracle (pass@N)": {4: 0.75},
    },
}


def tiny_ranker(**head_options) -> LanguageRanker:
    model = build_model("llama")
    model.config._name_or_path = BASE_MODEL
    return LanguageRanker.for_model(model, **head_options)


def metrics(card: ModelCard) -> dict[str, float]:
    return {result.metric_name: result.metric_value for result in card.data.eval_results or []}


def assert_common_metadata(card: ModelCard) -> None:
    assert card.data.library_name == "hf-language-ranker"
    assert card.data.pipeline_tag == "text-ranking"
    assert {"language-ranker", "best-of-n"} <= set(card.data.tags)


def test_saved_card_has_hub_metadata_and_the_evaluation(tmp_path):
    ranker = tiny_ranker()
    training = {"train_prompts": 60, "labels": "math verifier"}
    kwargs = {"datasets": ["org/prompts"], "training": training, "evaluation": EVALUATION}
    ranker.save_pretrained(tmp_path, model_card_kwargs=kwargs)
    card = ModelCard.load(tmp_path / "README.md")
    assert_common_metadata(card)
    assert card.data.base_model == BASE_MODEL and card.data.datasets == ["org/prompts"]
    assert metrics(card) == {
        "Language Ranker accuracy@1": 0.25,
        "Language Ranker accuracy@4": 0.5,
        "first sample accuracy@1": 0.25,
        "first sample accuracy@4": 0.25,
        "oracle (pass@N) accuracy@4": 0.75,
    }
    assert {result.dataset_type for result in card.data.eval_results} == {"org/prompts"}
    body = card.text
    layer = ranker.config.feature_layer
    assert f"| feature layer | {layer} " in body and "| head | listwise (projection to 64" in body
    assert "- train_prompts: 60" in body and "- labels: math verifier" in body
    assert "| Language Ranker | 0.250 | 0.500 |" in body and "| oracle (pass@N) | — | 0.750 |" in body
    assert "## Limitations" in body and f"{ranker.num_parameters:,}-parameter" in body


def test_save_pretrained_writes_the_card_data_over_an_earlier_card(tmp_path):
    (tmp_path / "README.md").write_text("a card of other weights")
    ranker = tiny_ranker()
    ranker.card_data = RankerModelCardData(training={"labels": "math verifier"}, evaluation=EVALUATION)
    ranker.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert_common_metadata(card)
    assert "- labels: math verifier" in card.text and metrics(card)["Language Ranker accuracy@4"] == 0.5
    ranker.save_pretrained(tmp_path, model_card_kwargs={"training": {"labels": "unit tests"}})  # for this save only
    assert "- labels: unit tests" in (tmp_path / "README.md").read_text()
    assert ranker.card_data.training == {"labels": "math verifier"}


def test_card_without_hub_base_model_or_evaluation(tmp_path):
    ranker = LanguageRanker(RankerConfig(hidden_size=8, num_hidden_layers=2, feature_layer=1, base_model=str(tmp_path)))
    card = ranker.generate_model_card()
    parsed = ModelCard(str(card))
    assert_common_metadata(parsed)
    assert parsed.data.base_model is None and parsed.data.eval_results is None
    assert "No evaluation results" in parsed.text and "Not recorded" in parsed.text


def test_push_to_hub_uploads_the_card(monkeypatch):
    uploaded: dict[str, str] = {}

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs: object) -> object:
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id: str, folder_path: Path, **kwargs: object) -> str:
            uploaded.update(
                {path.name: path.read_text() for path in Path(folder_path).iterdir() if path.suffix != ".safetensors"}
            )
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    url = tiny_ranker().push_to_hub(RANKER_ID, model_card_kwargs={"ranker_id": RANKER_ID, "evaluation": EVALUATION})
    assert url.endswith("/commit/0") and {"README.md", "config.json"} <= set(uploaded)
    card = ModelCard(uploaded["README.md"])
    assert_common_metadata(card)
    assert card.data.base_model == BASE_MODEL and metrics(card)["Language Ranker accuracy@4"] == 0.5
    assert f'LanguageRanker.from_pretrained("{RANKER_ID}")' in card.text


def candidate_dataset(num_prompts: int = 8, num_candidates: int = 4, hidden: int = 32, layer: int = 2) -> Dataset:
    """A small collected-candidates dataset (layout of hf_language_ranker.candidates) with random features."""
    rng = np.random.default_rng(0)
    info = CollectionInfo(BASE_MODEL, "llama", hidden, 4, [layer], num_candidates, "math")
    return Dataset.from_dict(
        {
            "labels": [[float((row + index) % 2) for index in range(num_candidates)] for row in range(num_prompts)],
            prompt_feature_column(layer): rng.standard_normal((num_prompts, hidden)).astype(np.float16),
            candidate_feature_column(layer): rng.standard_normal((num_prompts, num_candidates, hidden)).astype(
                np.float16
            ),
        },
        info=DatasetInfo(description=info.to_json()),
    )


def test_trainer_save_model_writes_the_card(tmp_path):
    dataset = candidate_dataset()
    arguments = RankerTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=1,
        eval_strategy="epoch",
        dataset_name="org/candidates",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = RankerTrainer(args=arguments, train_dataset=dataset, eval_dataset=dataset)
    trainer.train()
    trainer.save_model()
    card = ModelCard.load(tmp_path / "README.md")
    assert_common_metadata(card)
    assert card.data.base_model == BASE_MODEL and card.data.datasets == ["org/candidates"]
    assert {"Language Ranker accuracy@4", "first sample accuracy@4", "oracle (pass@N) accuracy@4"} <= set(metrics(card))
    assert "- train_prompts: 8" in card.text and "- loss: listwise" in card.text
    card_data = trainer.ranker.card_data  # filled by the trainer's RankerModelCardCallback, typed
    assert card_data.training["optimizer_steps"] == trainer.state.global_step > 0
    last = [entry for entry in trainer.state.log_history if "eval_top1_accuracy" in entry][-1]
    assert card_data.evaluation["accuracy"]["Language Ranker"][4] == last["eval_top1_accuracy"]


@pytest.mark.parametrize(
    ("chat_template", "use_mean_log_prob", "agreement"),
    [
        (None, False, False),
        ("{% for m in messages %}{{ m['content'] }} {% endfor %}", True, False),
        (None, True, True),
    ],
)
def test_usage_snippet_runs(tmp_path, chat_template, use_mean_log_prob, agreement):
    model_dir, ranker_dir = tmp_path / "model", tmp_path / "ranker"
    build_model("llama").save_pretrained(model_dir)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(model_dir)
    options = {"use_vote_share": True, "use_centrality": True, "answer_extractor": "math", "selection": "weighted_vote"}
    ranker = tiny_ranker(use_mean_log_prob=use_mean_log_prob, **(options if agreement else {}))
    ranker.save_pretrained(ranker_dir, model_card_kwargs={"ranker_id": RANKER_ID})
    card = ModelCard.load(ranker_dir / "README.md")
    assert ("mean token log-probability" in card.text) is use_mean_log_prob
    assert ("share of the N answers" in card.text) is agreement and ("ranker-weighted vote" in card.text) is agreement
    snippet = re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1)
    assert f'"{BASE_MODEL}"' in snippet and f'"{RANKER_ID}"' in snippet
    snippet = snippet.replace(f'"{BASE_MODEL}"', repr(str(model_dir))).replace(f'"{RANKER_ID}"', repr(str(ranker_dir)))
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    exec(compile(snippet, "model card snippet", "exec"), namespace)
    assert namespace["best"].shape[0] == 1 and isinstance(namespace["ranker"], LanguageRanker)


def test_is_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ranker").mkdir(parents=True)
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and is_hub_id("gpt2")
    for name in (None, "", "runs/ranker", str(tmp_path), "a/b/c", "org/bad--name", "./model"):
        assert not is_hub_id(name), name


def test_card_lists_every_n_including_labels():
    evaluation = {"accuracy": {"Language Ranker": {8: 0.5, "all": 0.4}, "first sample": {2: 0.1}}}
    card = RankerModelCardData(evaluation=evaluation).to_model_card(
        RankerConfig(hidden_size=8, num_hidden_layers=2, feature_layer=1)
    )
    assert "| method | N=2 | N=8 | N=all |" in card.text
    assert "| Language Ranker | — | 0.500 | 0.400 |" in card.text


def test_shipped_card_reproduces_its_recipe():
    """The shipped card's "Reproduce" commands parse, and train exactly the recipe its config.json records."""
    from hf_language_ranker.cli import build_parser, training_options
    from hf_language_ranker.configuration import default_feature_layer

    folder = Path(__file__).resolve().parents[1] / "model_cards" / "smollm2-135m-instruct-arithmetic"
    card = (folder / "README.md").read_text()
    block = card.split("## Reproduce\n\n```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split()[1:] for line in block.splitlines() if line.startswith("hf-language-ranker ")]
    assert [command[0] for command in commands] == ["collect", "train"]
    collect, train = (build_parser().parse_args(command) for command in commands)
    config = json.loads((folder / "config.json").read_text())
    assert (collect.task, collect.num_candidates, collect.max_new_tokens) == ("arithmetic", 16, 64)
    assert collect.layers is None and default_feature_layer(config["num_hidden_layers"]) == config["feature_layer"]
    assert train.dataset == collect.output_dir
    options = training_options(train)
    ranker_options = RankerTrainingArguments(**options).ranker_options()
    assert options["feature_layer"] == config["feature_layer"]
    saved = RankerConfig(**config).to_dict()  # fields added after the ranker was saved take their defaults
    assert {key: saved[key] for key in ranker_options} == ranker_options


def test_card_renders_the_reproduce_commands():
    config = RankerConfig(hidden_size=8, num_hidden_layers=4, feature_layer=2)
    assert "## Reproduce" not in str(RankerModelCardData().to_model_card(config))
    reproduce = ["hf-language-ranker collect --x", "hf-language-ranker train --y"]
    card = str(RankerModelCardData(reproduce=reproduce).to_model_card(config))
    assert "## Reproduce\n\n```bash\nhf-language-ranker collect --x\nhf-language-ranker train --y\n```" in card
