"""Collect training data for a ranker: sample N candidates per prompt, label them, keep their features.

`collect_candidates` runs the same sampling path as ranked `generate` (`sample_candidates`), so a ranker is
trained on exactly the features it sees when serving. With ``candidates=`` it samples nothing and reads the features
of answers sampled elsewhere, laid out as `rank_candidates` lays them out. Either way it writes one row per prompt in
the layout of `hf_language_ranker.candidates`: the two ways differ only in how a batch gets its candidates and
features (`_collect_sampled`, `_collect_given`); labelling, rows and the job are shared (`_Collection`).

The output folder (``manifest.json``, ``shards/``, ``dataset/``) is a resumable sharded job of
`hf_language_ranker.shards`: every shard is written atomically, so a run killed at any moment loses at most
the shards in progress and running the same call again finishes the rest. Started with ``accelerate launch``,
processes split the shards round-robin and the main process merges them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Union

import torch
from datasets import Array2D, Dataset, DatasetInfo, Features, List, Value
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .candidates import (
    ANSWERS,
    CANDIDATES,
    GENERATION,
    LABELS,
    LENGTHS,
    MEAN_LOG_PROBS,
    PROMPT,
    PROMPT_ID,
    PROMPT_TEXT,
    SELF_CERTAINTY,
    CollectionInfo,
    candidate_feature_column,
    prompt_feature_column,
)
from .features import ModelFingerprint, resolve_feature_layer, text_config
from .jsonl import read_jsonl
from .layout import (
    CandidateFeatures,
    CandidateLike,
    candidate_texts,
    candidate_token_ids,
    eos_token_ids,
    featurize_token_candidates,
    prompt_token_ids,
)
from .pooling import check_answer_poolings
from .prompts import format_prompt, padding_tokenizer, resolve_chat_template, tokenize_prompts
from .sampling import SampledCandidates, sample_candidates
from .shards import Progress, ShardedJob, check_counts, json_digest
from .verifiers import Verifier, as_verifier

__all__ = ["collect_candidates"]

DEFAULT_COLLECTED_CANDIDATES = 8
DEFAULT_MAX_NEW_TOKENS = 512

PromptsLike = Union[Sequence[str], Sequence[Mapping[str, Any]], Dataset]
VerifierLike = Union[Verifier, Callable[[str, str], Union[bool, float]], str]
#: how a batch gets its candidates: ``(prompt ids, prompt texts, formatted prompts) -> (candidate texts, features)``
_Reader = Callable[[range, list[str], list[str]], tuple[list[list[str]], Union[SampledCandidates, CandidateFeatures]]]


def collect_candidates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptsLike,
    verifier: VerifierLike,
    *,
    output_dir: str | os.PathLike,
    num_candidates: int | None = None,
    layers: int | Sequence[int] | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    max_new_tokens: int | None = None,
    chat_template: bool | None = None,
    seed: int | None = 0,
    overwrite: bool = False,
    candidates: Sequence[Sequence[CandidateLike]] | None = None,
    append_eos: bool | Sequence[Sequence[bool]] = True,
    answer_poolings: Sequence[str] = (),
    **sampling: Any,
) -> Dataset:
    """Sample, label and featurize ``num_candidates`` answers per prompt into a candidate dataset.

    With ``candidates=`` it samples nothing: it labels and featurizes answers sampled elsewhere (vLLM, SGLang,
    llama.cpp, ...) into the same layout, laid out as `rank_candidates` lays them out.

    Resumable: finished shards in ``output_dir`` are kept and their prompts skipped, so after a crash or a
    kill the same call finishes the job; a finished collection is returned without sampling. Under
    ``accelerate launch`` each process samples its share of the shards on ``PartialState().device``.

    Args:
        model: a causal LM; moved to the process's device (unless it was dispatched with a device map).
        tokenizer: its tokenizer (left padding is used for batches; its pad token, else EOS, pads).
        prompts: strings, or dicts with a ``"prompt"`` string plus the fields the verifier reads (e.g.
            ``"answer"``), or a `datasets.Dataset` with a ``"prompt"`` column. Row ``i`` gets ``prompt_id`` i.
        verifier: a `Verifier`, a built-in verifier name, or a callable ``(prompt, candidate) -> bool | float``.
        output_dir: folder for the manifest, the shards and the merged dataset (``output_dir/dataset``).
        num_candidates: candidates sampled per prompt (default 8; with ``candidates=``, their number).
        layers: feature layer(s) to keep (``output_hidden_states`` indices, negative allowed); default the
            paper's layer. Several layers let one collection serve a layer sweep.
        batch_size: prompts per sampling call (changing it between runs is allowed).
        shard_size: prompts per shard, the unit of resumption.
        max_new_tokens: generation budget per candidate (default 512).
        chat_template: format each prompt as one user message with the tokenizer's chat template; ``None``
            uses it when the tokenizer has one, ``False`` feeds the raw text.
        seed: seeds sampling per shard (``seed + first prompt id``), so a resumed run equals an uninterrupted
            one; ``None`` leaves the random state alone.
        overwrite: discard whatever ``output_dir`` holds and start over.
        candidates: externally sampled answers, ``candidates[i]`` for prompt ``i`` (texts or token ids, the same
            number for every prompt); see `hf_language_ranker.layout` for how texts and ids are read.
        append_eos: for text candidates, whether each ended with EOS (one bool, or one per candidate).
        answer_poolings: also keep these answer poolings (`hf_language_ranker.pooling`: ``"mean"``, ``"first"``) at
            every layer of ``layers``, read in the same pass, for rankers with ``answer_poolings``: one more float16
            column each (``<pooling>_candidate_features.<k>``, ``2 * H`` bytes per candidate and layer). By default
            none, and the layout is that of collections made before they existed.
        **sampling: transformers `generate` arguments (``temperature``, ``top_p``, ``logits_processor``, ...).

    Returns:
        The merged dataset, one row per prompt sorted by ``prompt_id`` (layout: `hf_language_ranker.candidates`).
    """
    examples = _as_examples(prompts)
    check_counts(batch_size=batch_size, shard_size=shard_size)
    job = ShardedJob("collection", output_dir, len(examples), shard_size, batch_size, seed=seed, overwrite=overwrite)
    verifier, layers = as_verifier(verifier), _resolve_layers(model, layers)
    use_chat_template = resolve_chat_template(tokenizer, chat_template)
    collection = _Collection(
        job,
        examples,
        model,
        padding_tokenizer(tokenizer),
        verifier,
        layers,
        use_chat_template,
        check_answer_poolings(answer_poolings),
    )
    if candidates is None:
        return _collect_sampled(collection, num_candidates, max_new_tokens, sampling)
    given = {key for key, value in sampling.items() if value is not None}
    if max_new_tokens is not None:
        given.add("max_new_tokens")
    if given:
        raise ValueError(
            f"candidates= were sampled elsewhere, so sampling settings do not apply: drop {', '.join(sorted(given))}."
        )
    return _collect_given(collection, candidates, num_candidates, append_eos)


def _collect_sampled(
    collection: _Collection, num_candidates: int | None, max_new_tokens: int | None, sampling: dict[str, Any]
) -> Dataset:
    """Sample ``num_candidates`` answers per prompt on ranked `generate`'s path, then label them."""
    num_candidates = DEFAULT_COLLECTED_CANDIDATES if num_candidates is None else num_candidates
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    check_counts(num_candidates=num_candidates, max_new_tokens=max_new_tokens)
    if sampling.pop("do_sample", True) is not True:
        raise ValueError(
            "collect_candidates always samples (do_sample=True); do_sample=False would give N identical greedy "
            "candidates. Drop the argument."
        )
    model, tokenizer = collection.model, collection.tokenizer
    if "pad_token_id" not in sampling and model.generation_config.pad_token_id is None:
        sampling["pad_token_id"] = tokenizer.pad_token_id
    generation = _generation_settings(model, max_new_tokens, sampling)

    def read(prompt_ids: range, prompts: list[str], formatted: list[str]) -> tuple[list[list[str]], SampledCandidates]:
        inputs = tokenize_prompts(tokenizer, formatted, collection.use_chat_template).to(model.device)
        sampled = sample_candidates(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            num_candidates=num_candidates,
            layers=collection.layers,
            answer_poolings=collection.answer_poolings,
            track_token_statistics=True,
            max_new_tokens=max_new_tokens,
            **sampling,
        )
        return sampled.decode(tokenizer), sampled

    return collection.run(num_candidates, generation, read)


def _collect_given(
    collection: _Collection,
    candidates: Sequence[Sequence[CandidateLike]],
    num_candidates: int | None,
    append_eos: bool | Sequence[Sequence[bool]],
) -> Dataset:
    """Label answers sampled elsewhere and read their features as `rank_candidates` does."""
    num_candidates = _given_count(collection.examples, candidates, num_candidates)
    check_counts(num_candidates=num_candidates)
    model, tokenizer = collection.model, collection.tokenizer
    vocab_size = int(text_config(model).vocab_size)
    # tokenized (and checked) up front, so a bad candidate fails before anything is written
    ids = candidate_token_ids(tokenizer, candidates, eos_token_ids(model, tokenizer), vocab_size, append_eos)
    generation = {"sampler": "external", "candidates_sha256": json_digest([candidates, append_eos])}

    def read(prompt_ids: range, prompts: list[str], formatted: list[str]) -> tuple[list[list[str]], CandidateFeatures]:
        batch_ids = [ids[index] for index in prompt_ids]
        features = featurize_token_candidates(
            model,
            prompt_token_ids(tokenizer, prompts, collection.use_chat_template, vocab_size),
            batch_ids,
            collection.layers,
            answer_poolings=collection.answer_poolings,
            token_statistics=True,
            candidate_batch_size=collection.job.batch_size * num_candidates,
            pad_token_id=tokenizer.pad_token_id,
        )
        return candidate_texts(tokenizer, [candidates[index] for index in prompt_ids], batch_ids), features

    return collection.run(num_candidates, generation, read)


@dataclass(frozen=True)
class _Collection:
    """A collection's checked settings and how it labels a batch, however the batch got its candidates."""

    job: ShardedJob
    examples: Sequence[Mapping[str, Any]]
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    verifier: Verifier
    layers: list[int]
    use_chat_template: bool
    answer_poolings: list[str]

    def run(self, num_candidates: int, generation: dict[str, Any], read: _Reader) -> Dataset:
        """Write the collection with the job runner, each batch's candidates and features from ``read``."""
        fingerprint = ModelFingerprint.of(self.model)
        info = CollectionInfo(
            model=fingerprint.name_or_path,
            model_type=fingerprint.model_type,
            hidden_size=fingerprint.hidden_size,
            num_hidden_layers=fingerprint.num_hidden_layers,
            layers=self.layers,
            num_candidates=num_candidates,
            verifier=self.verifier.name,
            generation=generation,
            model_dtype=fingerprint.dtype,
        )
        manifest = {
            "collection": asdict(info),
            "num_prompts": len(self.examples),
            "prompts_sha256": _prompts_digest(self.examples),
            "chat_template": self.use_chat_template,
            "seed": self.job.seed,
            # only when asked: the manifests of collections without poolings stay as they were, so they resume
            **({"answer_poolings": self.answer_poolings} if self.answer_poolings else {}),
        }
        rows = functools.partial(self._rows, read, json.dumps(generation, sort_keys=True))
        features = _features(self.layers, self.answer_poolings, num_candidates, fingerprint.hidden_size)
        shard_info = DatasetInfo(description=info.to_json(), features=features)
        progress = Progress("Collecting candidates", "tokens", lambda row: sum(row[LENGTHS]))
        return self.job.run(manifest, rows, [self.model], shard_info, progress)

    def _rows(self, read: _Reader, generation_json: str, prompt_ids: range) -> list[dict[str, Any]]:
        """The labelled rows of the prompts ``prompt_ids``."""
        examples = [self.examples[index] for index in prompt_ids]
        prompts = [_prompt_text(example, index) for example, index in zip(examples, prompt_ids)]
        formatted = [format_prompt(self.tokenizer, prompt, self.use_chat_template) for prompt in prompts]
        texts, batch = read(prompt_ids, prompts, formatted)
        lengths, mean_log_probs = batch.lengths.tolist(), batch.mean_log_probs.float().tolist()
        self_certainty = batch.self_certainty.float().tolist()
        prompt_features = {layer: _to_float16(batch.prompt_features[layer]) for layer in self.layers}
        candidate_features = {layer: _to_float16(batch.candidate_features[layer]) for layer in self.layers}
        pooled_features = {
            (pooling, layer): _to_float16(batch.pooled_features[pooling][layer])
            for pooling in self.answer_poolings
            for layer in self.layers
        }
        rows = []
        for b, (prompt_id, example, prompt, text) in enumerate(zip(prompt_ids, examples, prompts, formatted)):
            row = {
                PROMPT_ID: prompt_id,
                PROMPT: prompt,
                PROMPT_TEXT: text,
                CANDIDATES: texts[b],
                LENGTHS: lengths[b],
                LABELS: [self.verifier(example, candidate) for candidate in texts[b]],
                ANSWERS: [self.verifier.parse(candidate) for candidate in texts[b]],
                MEAN_LOG_PROBS: mean_log_probs[b],
                SELF_CERTAINTY: self_certainty[b],
            }
            for layer in self.layers:
                row[prompt_feature_column(layer)] = prompt_features[layer][b]
                row[candidate_feature_column(layer)] = candidate_features[layer][b]
            for (pooling, layer), values in pooled_features.items():
                row[candidate_feature_column(layer, pooling)] = values[b]
            row[GENERATION] = generation_json
            rows.append(row)
        return rows


# --------------------------------------------------------------------------------------------- inputs
def read_prompts_jsonl(path: str | os.PathLike, verifier: Verifier) -> list[dict[str, Any]]:
    """Prompts from a JSON-lines file: each line a ``"prompt"`` plus the keys ``verifier`` reads (e.g. ``"answer"``);
    a missing key is an error naming the file, the line and the key."""
    return read_jsonl(path, required=("prompt", *verifier.required_keys))


def _as_examples(prompts: PromptsLike) -> Sequence[Mapping[str, Any]]:
    """Prompts as indexable examples with a ``"prompt"`` string (a Dataset is used as is)."""
    if isinstance(prompts, Dataset):
        if "prompt" not in prompts.column_names:
            raise ValueError(
                f"The prompts dataset has no 'prompt' column (columns: {prompts.column_names}). Rename the "
                "column holding the prompt text, e.g. dataset.rename_column('question', 'prompt')."
            )
        examples = prompts
    elif isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"prompts must be a list of strings, a list of dicts with a 'prompt' key, or a datasets.Dataset; got "
            f"{type(prompts).__name__}."
        )
    else:
        examples = [{"prompt": example} if isinstance(example, str) else example for example in prompts]
        for index, example in enumerate(examples):
            if not isinstance(example, Mapping) or "prompt" not in example:
                raise ValueError(
                    f"prompts[{index}] is {type(example).__name__} without a 'prompt' key: pass strings, or dicts "
                    "like {'prompt': ..., 'answer': ...}."
                )
    if len(examples) == 0:
        raise ValueError("No prompts were given: there is nothing to collect.")
    return examples


def _prompt_text(example: Mapping[str, Any], index: int) -> str:
    prompt = example["prompt"]
    if not isinstance(prompt, str):
        raise TypeError(f"The prompt of example {index} is {type(prompt).__name__}, not a string.")
    return prompt


def _prompts_digest(examples: Sequence[Mapping[str, Any]]) -> str:
    """A hash of all prompt strings, so a rerun on other prompts is refused."""
    digest = hashlib.sha256()
    for index in range(len(examples)):
        digest.update(_prompt_text(examples[index], index).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _given_count(
    examples: Sequence[Mapping[str, Any]], candidates: Sequence[Sequence[CandidateLike]], num_candidates: int | None
) -> int:
    """The number of given candidates per prompt (the same for all)."""
    if isinstance(candidates, (str, Mapping)) or not isinstance(candidates, Sequence):
        raise TypeError(
            f"candidates must be a list with one list of answers per prompt, got {type(candidates).__name__}."
        )
    if len(candidates) != len(examples):
        raise ValueError(
            f"Got {len(examples)} prompts but {len(candidates)} candidate lists: candidates[i] answers prompt i."
        )
    counts = [len(group) if isinstance(group, Sequence) and not isinstance(group, str) else -1 for group in candidates]
    expected, source = (
        (num_candidates, "num_candidates") if num_candidates is not None else (counts[0], "candidates[0]")
    )
    for index, count in enumerate(counts):
        if count != expected:
            held = "no list" if count < 0 else f"{count} answers"
            raise ValueError(
                f"candidates[{index}] holds {held}, but a collection stores the same number per prompt ({expected}, "
                f"from {source}). Pad or subsample the lists to one size, or rank ragged lists with rank_candidates."
            )
    return expected


def _resolve_layers(model: PreTrainedModel, layers: int | Sequence[int] | None) -> list[int]:
    if layers is None:
        return [resolve_feature_layer(model, None)]
    requested = [layers] if isinstance(layers, int) else list(layers)
    if not requested:
        raise ValueError("layers is empty: pass None for the paper's default layer, or at least one layer index.")
    return sorted({resolve_feature_layer(model, layer) for layer in requested})


def _generation_settings(model: PreTrainedModel, max_new_tokens: int, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The effective sampling settings as JSON values (non-JSON arguments are recorded by type name)."""
    config = copy.deepcopy(sampling.get("generation_config") or model.generation_config)
    arguments = {key: value for key, value in sampling.items() if key != "generation_config"}
    unused = config.update(**arguments, max_new_tokens=max_new_tokens, do_sample=True)
    settings = {key: value for key, value in config.to_diff_dict().items() if not key.startswith("_")}
    settings.pop("transformers_version", None)
    settings.update(unused)
    return json.loads(json.dumps(settings, sort_keys=True, default=lambda value: type(value).__name__))


def _features(layers: Sequence[int], answer_poolings: Sequence[str], num_candidates: int, hidden_size: int) -> Features:
    per_candidate = {
        CANDIDATES: Value("string"),
        LENGTHS: Value("int32"),
        LABELS: Value("float32"),
        ANSWERS: Value("string"),
        MEAN_LOG_PROBS: Value("float32"),
        SELF_CERTAINTY: Value("float32"),
    }
    columns: dict[str, Any] = {PROMPT_ID: Value("int64"), PROMPT: Value("string"), PROMPT_TEXT: Value("string")}
    columns.update({name: List(value, length=num_candidates) for name, value in per_candidate.items()})
    for layer in layers:
        columns[prompt_feature_column(layer)] = List(Value("float16"), length=hidden_size)
        columns[candidate_feature_column(layer)] = Array2D((num_candidates, hidden_size), "float16")
    for pooling in answer_poolings:
        for layer in layers:
            columns[candidate_feature_column(layer, pooling)] = Array2D((num_candidates, hidden_size), "float16")
    columns[GENERATION] = Value("string")
    return Features(columns)


def _to_float16(tensor: torch.Tensor) -> Any:
    return tensor.detach().to("cpu", torch.float16).numpy()
