"""Sample with vLLM (or SGLang / TGI), rank with the Hugging Face model. Needs a GPU and `pip install vllm`.

    python examples/vllm_sampling.py --model HuggingFaceTB/SmolLM2-135M-Instruct \
        --ranker model_cards/smollm2-135m-instruct-arithmetic --num-candidates 16

Not run by the tests (no GPU here); the path it feeds, `rank_candidates` with prompt token ids and candidate token
ids, is the one `tests/test_ranking.py` holds equal to ranked `generate`. vLLM's ``CompletionOutput.token_ids``
hold the generated ids; the EOS that ended an answer is appended when vLLM left it out (``finish_reason == "stop"``
with no ``stop_reason``), so the feature sits on EOS as in ranked `generate`. Answers stopped by a stop *string*
end at their last token, as do answers cut by ``max_tokens``. With ``logprobs=0`` vLLM also reports each answer's
``cumulative_logprob`` under the raw distribution (its default ``logprobs_mode``); passed as ``mean_log_probs``, the
ranking pass stops at the ranker's layer instead of running the whole model.

SGLang (``engine.generate(input_ids=..., sampling_params={"n": N, ...})`` returns ``output_ids`` and
``meta_info.finish_reason``) and TGI / OpenAI-compatible servers (texts with ``finish_reason``) fit the same way:
ids where the engine gives them, else texts with ``append_eos=[[reason == "stop" ...]]``.
"""

from __future__ import annotations

import argparse

from hf_language_ranker import LanguageRanker, load_model_and_tokenizer, rank_candidates
from hf_language_ranker.configuration import MODEL_DTYPES
from hf_language_ranker.layout import eos_token_ids
from hf_language_ranker.prompts import format_prompt


def finished_ids(output, eos_ids: list[int]) -> list[int]:
    """One vLLM answer's token ids, ending with EOS when it stopped on EOS."""
    ids = list(output.token_ids)
    stopped_on_eos = output.finish_reason == "stop" and output.stop_reason is None
    if stopped_on_eos and (not ids or ids[-1] not in eos_ids):
        ids.append(eos_ids[0])
    return ids


def main() -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Hub id of the model the ranker was trained on")
    parser.add_argument("--ranker", required=True)
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument(
        "--dtype", choices=MODEL_DTYPES, default="auto", help="dtype of the model (auto: bfloat16 where native)"
    )
    args = parser.parse_args()
    prompts = args.prompt or ["Calculate 53 + 27.\nGive the final answer as 'The answer is N'."]

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    model.to("cuda")
    ranker = LanguageRanker.from_pretrained(args.ranker)
    prompt_ids = [
        tokenizer(format_prompt(tokenizer, prompt, True), add_special_tokens=False)["input_ids"] for prompt in prompts
    ]
    llm = LLM(model=args.model, gpu_memory_utilization=0.5)
    params = SamplingParams(
        n=args.num_candidates, temperature=args.temperature, max_tokens=args.max_new_tokens, logprobs=0
    )
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params)

    eos_ids = eos_token_ids(model, tokenizer)
    candidates = [[finished_ids(answer, eos_ids) for answer in output.outputs] for output in outputs]
    mean_log_probs = [
        [answer.cumulative_logprob / max(len(answer.token_ids), 1) for answer in output.outputs] for output in outputs
    ]
    result = rank_candidates(
        model, tokenizer, prompt_ids, candidates, ranker, candidate_batch_size=32, mean_log_probs=mean_log_probs
    )
    for prompt, text in zip(prompts, result.best_texts):
        print(f"### {prompt}\n-> {text.strip()}\n")


if __name__ == "__main__":
    main()
