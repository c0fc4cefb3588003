"""Rank a JSON-lines file of candidates sampled elsewhere, at scale: resumable, sharded, split across processes.

`rank_candidates_file` reads the format of ``collect --candidates`` (`hf_language_ranker.candidates_jsonl`), scores
each prompt's candidates with `rank_candidates` and writes per prompt its scores, the best index and the best
text::

    output_dir/manifest.json    the job's settings (a rerun with another file, model, ranker or rule is refused)
    output_dir/shards/          finished shards while the job runs (see `hf_language_ranker.shards`)
    output_dir/dataset/         the result as a `datasets` folder (``load_from_disk``), one row per prompt
    output_dir/ranked.jsonl     the same rows as JSON lines

Kill it at any moment and run it again: finished shards are kept, every prompt ends up exactly once. Under
``accelerate launch`` processes rank their share of the shards on their own device and the main process
merges them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict
from typing import Any

import torch
from datasets import Dataset, DatasetInfo, Features, List, Value
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .agreement import AnswerExtractorLike
from .candidates_jsonl import SampleFile
from .features import ModelFingerprint, text_config
from .modeling import LanguageRanker
from .prompts import resolve_chat_template
from .ranker_set import RankerLike, load_ranker
from .ranking import RankingOptions, rank_with_options
from .shards import Progress, ShardedJob, check_counts

__all__ = ["rank_candidates_file", "RANKED_JSONL"]

RANKED_JSONL = "ranked.jsonl"

FEATURES = Features(
    {
        "prompt_id": Value("int64"),  # 0-based among the file's non-blank lines
        "line": Value("int64"),  # 1-based line number in the file
        "prompt": Value("string"),
        "scores": List(Value("float32")),
        "best_index": Value("int64"),
        "best_text": Value("string"),
    }
)


def rank_candidates_file(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    candidates: str | os.PathLike | SampleFile,
    ranker: RankerLike,
    *,
    output_dir: str | os.PathLike,
    shard_size: int = 256,
    batch_size: int = 8,
    candidate_batch_size: int = 8,
    chat_template: bool | None = None,
    ranker_selection: str | None = None,
    answer_extractor: AnswerExtractorLike | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Rank every prompt's candidates of a JSON-lines file into ``output_dir`` (resumable; see the module docs).

    Args:
        model, tokenizer: the causal LM the ranker was trained on and its tokenizer.
        candidates: the JSON-lines file (``"prompt"``, ``"candidates"`` as texts or token ids, optional
            ``"finished"`` and ``"mean_log_probs"``), as for ``collect --candidates``, or that file already opened
            with `SampleFile.open` (as ``rank`` does before the model loads). Every line is checked before any work.
        ranker: a `LanguageRanker`, Hub id or folder.
        output_dir: folder for the manifest, the shards, ``dataset/`` and ``ranked.jsonl``.
        shard_size: prompts per shard, the unit of resumption and of the split across processes.
        batch_size: prompts per `rank_candidates` call (may change between runs).
        candidate_batch_size: (prompt, candidate) pairs per forward pass; bounds memory (may change between runs).
        chat_template, ranker_selection, answer_extractor: as in `rank_candidates`.
        overwrite: discard whatever ``output_dir`` holds and start over.

    Returns:
        The merged dataset, one row per prompt in file order: ``prompt_id``, ``line``, ``prompt``, ``scores``,
        ``best_index``, ``best_text``.
    """
    check_counts(shard_size=shard_size, batch_size=batch_size, candidate_batch_size=candidate_batch_size)
    options = RankingOptions(chat_template, candidate_batch_size, ranker_selection, answer_extractor)
    ranker = load_ranker(ranker)
    options.rankers(model, ranker, tokenizer)  # fit, selection and extractor checks before the file is read
    use_chat_template = resolve_chat_template(tokenizer, options.chat_template)
    samples = candidates if isinstance(candidates, SampleFile) else SampleFile.open(candidates)
    samples.check_vocabulary(int(text_config(model).vocab_size))
    manifest = {
        "ranking": {
            "candidates_sha256": samples.sha256,
            "num_prompts": len(samples),
            "model": asdict(ModelFingerprint.of(model)),
            "dtype": str(model.dtype),
            "ranker_sha256": _ranker_digest(ranker),
            "ranker_selection": options.ranker_selection,
            "answer_extractor": _describe_extractor(options.answer_extractor),
            "chat_template": use_chat_template,
        },
    }

    outputs = {RANKED_JSONL: _write_jsonl}
    job = ShardedJob(
        "ranking", output_dir, len(samples), shard_size, batch_size, overwrite=overwrite, other_outputs=outputs
    )
    return job.run(
        manifest,
        functools.partial(_rank_batch, model, tokenizer, samples, ranker, options),
        [model, ranker],
        DatasetInfo(features=FEATURES),
        Progress("Ranking candidates", "candidates", lambda row: len(row["scores"])),
    )


def _rank_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: SampleFile,
    ranker: LanguageRanker,
    options: RankingOptions,
    prompt_ids: range,
) -> list[dict[str, Any]]:
    """Rows of the prompts ``prompt_ids``: one `rank_candidates` call."""
    lines = samples.read(prompt_ids)
    result = rank_with_options(
        model,
        tokenizer,
        [line.example["prompt"] for line in lines],
        [line.candidates for line in lines],
        ranker,
        options,
        append_eos=[line.finished for line in lines],
        mean_log_probs=[line.mean_log_probs for line in lines] if samples.has_mean_log_probs else None,
    )
    return [
        {
            "prompt_id": prompt_id,
            "line": line.number,
            "prompt": line.example["prompt"],
            "scores": scores.tolist(),
            "best_index": int(best),
            "best_text": text,
        }
        for prompt_id, line, scores, best, text in zip(
            prompt_ids, lines, result.scores, result.best_indices, result.best_texts
        )
    ]


def _ranker_digest(ranker: LanguageRanker) -> str:
    """A hash of the ranker's config and weights, so a resumed job refuses another ranker."""
    digest = hashlib.sha256(json.dumps(ranker.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(ranker.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


def _describe_extractor(extractor: AnswerExtractorLike | None) -> str | None:
    """The answer extractor as JSON: a built-in name as is, a callable by its qualified name."""
    if extractor is None or isinstance(extractor, str):
        return extractor
    return f"{getattr(extractor, '__module__', '?')}.{getattr(extractor, '__qualname__', type(extractor).__name__)}"


def _write_jsonl(dataset: Dataset, path: str) -> None:
    dataset.to_json(path, lines=True, force_ascii=False)
