"""The evaluation report: accuracy per method and N, paired bootstrap intervals, tables, JSON and the plot."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tables import markdown_table
from .baselines import BASELINES, FIRST_SAMPLE, MAJORITY_VOTE, MEAN_LOG_PROB, ORACLE
from .statistics import PairedDifference, paired_bootstrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GREEDY = "greedy decoding"
#: characters per legend line of `EvaluationResult.plot` (two columns of this fit the canvas)
LEGEND_WIDTH = 36


@dataclass
class MethodCost:
    """What a learned selector costs: parameters, training time, and time to score the test set at the largest N."""

    num_parameters: int | None
    train_seconds: float | None
    score_seconds: float | None


#: The report row of the ranker chosen by cross-validation over train + validation (variant, layer, pick rule).
CHOSEN = "chosen by cross-validation"


def headline_methods(result: EvaluationResult, chosen: str | None = None) -> list[str]:
    """The rows of the headline plot: the chosen ranker, the free baselines, the best other learned row (by test
    accuracy at the largest N, for display only) and the oracle.

    ``chosen`` defaults to `CHOSEN` where the result has that row (the evaluation protocol's), else to the best
    learned row (then the best other one follows the baselines); a result without learned rows leads with the
    baselines.
    """
    largest = max(result.ns)

    def best(methods: list[str]) -> str:
        return max(methods, key=lambda method: result.accuracy[method].get(largest, -1.0))

    learned = [method for method in result.accuracy if method not in {*BASELINES, ORACLE, CHOSEN}]
    if chosen is None:
        chosen = CHOSEN if CHOSEN in result.accuracy else best(learned) if learned else None
    others = [
        method
        for method in learned
        if method != chosen and result.per_prompt.get(method) != result.per_prompt.get(chosen)
    ]
    baselines = [method for method in (MAJORITY_VOTE, MEAN_LOG_PROB, FIRST_SAMPLE) if method in result.accuracy]
    methods = [*([chosen] if chosen else []), *baselines, *([best(others)] if others else [])]
    return [*methods, *([ORACLE] if ORACLE in result.accuracy else [])]


@dataclass
class EvaluationResult:
    """Selection accuracy per method and N (``accuracy[method][n]``), plus the costs of the learned scorers."""

    accuracy: dict[str, dict[int, float]]
    num_prompts: int
    costs: dict[str, MethodCost] = field(default_factory=dict)
    greedy_accuracy: float | None = None
    task: str = "best-of-n selection"
    dataset: str = "held-out prompts"
    #: ``per_prompt[method][n]``: 0/1 correctness of the method's choice for every prompt, in dataset order
    per_prompt: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    def paired(self, method: str, baseline: str, n: int, **bootstrap: Any) -> PairedDifference:
        """`paired_bootstrap` of ``method - baseline`` at ``n`` over the per-prompt outcomes."""
        for name in (method, baseline):
            if n not in self.per_prompt.get(name, {}):
                raise KeyError(f"No per-prompt outcomes for {name!r} at N={n}.")
        return paired_bootstrap(self.per_prompt[method][n], self.per_prompt[baseline][n], **bootstrap)

    def add_alias(self, name: str, method: str) -> None:
        """Report ``method``'s outcomes (and cost) under another row name too, e.g. the method chosen on validation."""
        self.accuracy[name] = dict(self.accuracy[method])
        self.per_prompt[name] = {n: list(values) for n, values in self.per_prompt[method].items()}
        if method in self.costs:
            self.costs[name] = self.costs[method]

    def comparisons_markdown(self, method: str, baselines: Sequence[str]) -> str:
        """A table of paired bootstrap intervals of ``method - baseline`` for every baseline and N."""
        ns = [n for n in self.ns if n > 1]
        lines = [
            f"Paired differences `{method}` − baseline (mean over prompts, bootstrap 95% interval, prompts won / "
            "lost):",
            "",
            *markdown_table(
                ["baseline", *(f"N={n}" for n in ns)],
                ([baseline, *(str(self.paired(method, baseline, n)) for n in ns)] for baseline in baselines),
                numbers=False,
            ),
        ]
        return "\n".join(lines) + "\n"

    @property
    def ns(self) -> list[int]:
        return sorted({n for by_n in self.accuracy.values() for n in by_n})

    # ------------------------------------------------------------------------------------------------- reports
    def to_markdown(self) -> str:
        """An accuracy table (rows: methods, columns: N) and, for learned scorers, a table of their costs."""
        ns = self.ns
        lines = [
            f"Best-of-N selection accuracy on {self.num_prompts} prompts ({self.dataset}):",
            "",
            *markdown_table(
                ["method", *(f"N={n}" for n in ns)],
                ([method, *(_number(by_n.get(n), ".3f") for n in ns)] for method, by_n in self.accuracy.items()),
            ),
        ]
        if self.greedy_accuracy is not None:
            lines += ["", f"Greedy decoding: {self.greedy_accuracy:.3f}."]
        if self.costs:
            rows = (
                [
                    method,
                    _number(cost.num_parameters, ","),
                    _number(cost.train_seconds, ".1f"),
                    _number(cost.score_seconds, ".2f"),
                ]
                for method, cost in self.costs.items()
            )
            lines += ["", *markdown_table(["method", "parameters", "train (s)", f"score (s), N={ns[-1]}"], rows)]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the result as JSON (N keys become strings; `from_json` reads them back)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationResult:
        """Read a result written by `to_json` (other keys, such as the settings a report adds, are ignored)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        data["accuracy"] = {method: {int(n): v for n, v in by_n.items()} for method, by_n in data["accuracy"].items()}
        data["costs"] = {method: MethodCost(**cost) for method, cost in data["costs"].items()}
        data["per_prompt"] = {
            method: {int(n): v for n, v in by_n.items()} for method, by_n in data.get("per_prompt", {}).items()
        }
        return cls(**data)

    def summary(self, method: str, baselines: Sequence[str]) -> str:
        """A few lines at the largest N: ``method``'s accuracy, each baseline's with the paired difference (95%
        interval, prompts won / lost), and the oracle's ceiling."""
        n = max(self.ns)
        lines = [f"Best-of-{n} accuracy on {self.num_prompts} prompts ({self.dataset}):"]
        lines.append(f"  {method}: {self.accuracy[method][n]:.3f}")
        for baseline in baselines:
            paired = self.paired(method, baseline, n)
            lines.append(f"  {baseline}: {self.accuracy[baseline][n]:.3f}   {method} − {baseline}: {paired}")
        if ORACLE in self.accuracy:
            lines.append(f"  {ORACLE}: {self.accuracy[ORACLE][n]:.3f} (the ceiling of any selector)")
        return "\n".join(lines) + "\n"

    def plot(
        self, path: str | Path, methods: Sequence[str] | None = None, interval: tuple[str, str] | None = None
    ) -> Figure:
        """Save a PNG of accuracy against N (log2 axis), one line per method, greedy decoding as a horizontal line.

        ``methods`` picks the lines (default: `headline_methods`, the report's headline rows; pass
        ``list(result.accuracy)`` for every method, though more than 8 lines are hard to read).
        ``interval=(method, baseline)`` shades the paired 95% interval of ``method − baseline`` around ``method``'s
        line. Every label lies inside the saved canvas (the legend sits below the axes).
        """
        try:
            from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's state alone
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError("Plotting needs matplotlib: `pip install matplotlib`.") from error
        from matplotlib import colormaps

        methods = list(methods) if methods is not None else headline_methods(self)
        unknown = [method for method in methods if method not in self.accuracy]
        if unknown:
            raise ValueError(f"No results for {unknown} to plot; the result holds {list(self.accuracy)}.")
        figure = Figure(figsize=(8.0, 5.6), layout="constrained")
        axes = figure.subplots()
        colors = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
        for index, method in enumerate(methods):
            by_n = self.accuracy[method]
            ns = sorted(by_n)
            style = "--" if method == ORACLE else "-"
            width = 2.4 if index == 0 else 1.4
            label = textwrap.fill(
                method, LEGEND_WIDTH, break_on_hyphens=False
            )  # long variant names wrap instead of widening the canvas
            color = colors[index % len(colors)]
            axes.plot(ns, [by_n[n] for n in ns], style, marker="o", color=color, lw=width, label=label)
        if interval is not None:
            method, baseline = interval
            ns = [n for n in self.ns if n in self.per_prompt.get(method, {}) and n in self.per_prompt.get(baseline, {})]
            bounds = [self.paired(method, baseline, n, num_samples=2000) for n in ns]
            base = [self.accuracy[baseline][n] for n in ns]
            axes.fill_between(
                ns,
                [b + d.low for b, d in zip(base, bounds)],
                [b + d.high for b, d in zip(base, bounds)],
                color=colors[0],
                alpha=0.15,
                label=textwrap.fill(f"95% paired interval vs {baseline}", LEGEND_WIDTH, break_on_hyphens=False),
            )
        if self.greedy_accuracy is not None:
            axes.axhline(self.greedy_accuracy, color="gray", linestyle=":", label=GREEDY)
        axes.set_xscale("log", base=2)
        axes.set_xticks(self.ns, [str(n) for n in self.ns])
        axes.set_xlabel("N (sampled candidates)")
        axes.set_ylabel("accuracy")
        axes.set_title(f"Best-of-N accuracy\n{self.dataset} ({self.num_prompts} prompts)", fontsize="medium")
        axes.grid(alpha=0.3)
        figure.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)
        figure.savefig(path, format="png", dpi=150)
        return figure

    def to_model_card_evaluation(self, methods: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``evaluation`` of a ranker's card, `hf_language_ranker.model_card.RankerModelCardData` (``methods``:
        the rows to keep, default all)."""
        methods = list(methods) if methods is not None else list(self.accuracy)
        accuracy = {method: dict(self.accuracy[method]) for method in methods}
        if self.greedy_accuracy is not None:
            accuracy[GREEDY] = {1: self.greedy_accuracy}
        return {"task": self.task, "dataset": self.dataset, "accuracy": accuracy}


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)
