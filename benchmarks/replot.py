"""Redraw the headline plot of a committed results.json (no model, no data: only the stored per-prompt outcomes).

    python benchmarks/replot.py benchmarks/results/arithmetic/results.json

Writes accuracy_vs_n.png beside the JSON: the chosen ranker, majority vote, mean log-prob, first sample, the best
other learned row, the oracle and greedy decoding, with the chosen ranker's paired 95% interval against majority vote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_language_ranker.evaluation import MAJORITY_VOTE, EvaluationResult
from hf_language_ranker.evaluation.report import CHOSEN, headline_methods

#: the chosen row's name in results written before the choice was cross-validated
LEGACY_CHOSEN = "chosen on validation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results.json written by the evaluation protocol")
    args = parser.parse_args()
    result = EvaluationResult.from_json(args.results)
    chosen = CHOSEN if CHOSEN in result.accuracy else LEGACY_CHOSEN
    output = args.results.with_name("accuracy_vs_n.png")
    result.plot(output, methods=headline_methods(result, chosen), interval=(chosen, MAJORITY_VOTE))
    print(output)


if __name__ == "__main__":
    main()
