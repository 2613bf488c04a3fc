#!/usr/bin/env python
"""Validation perplexity of several training runs, epoch by epoch: a Markdown table and a plot.

Each run is ``LABEL=PATH`` with PATH a ``metrics.jsonl`` (or the run folder holding one). The
table has one row per run: the validation perplexity at the chosen epochs, the best over the
run and the number of epochs recorded; the plot (``--plot``, PNG) draws every run's validation
perplexity per epoch on a log axis. Used for the recurrence-depth claim and the recipe runs of
docs/highway-claims.md and docs/beyond-the-paper.md:

    python scripts/experiments/compare_runs.py \
        "RHN depth 1=results/ptb-char-small-rhn-depth1.metrics.jsonl" \
        "RHN depth 2=results/ptb-char-small-rhn-lr05.metrics.jsonl" \
        --epochs 1 5 10 15 20 25 --plot results/figures/rhn-depth.png
"""

import argparse
from pathlib import Path

from charlm.plots import new_figure, read_metrics, save_figure


def parse_run(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: give a run as LABEL=PATH")
    path = Path(path)
    return label, path / "metrics.jsonl" if path.is_dir() else path


def table(runs: dict[str, list[dict]], epochs: list[int]) -> str:
    rows = [
        "| run | " + " | ".join(f"epoch {e}" for e in epochs) + " | best valid | epochs |",
        "|---|" + "---|" * (len(epochs) + 2),
    ]
    for label, records in runs.items():
        by_epoch = {int(r["epoch"]): r["valid_ppl"] for r in records}
        cells = [f"{by_epoch[e]:.1f}" if e in by_epoch else "-" for e in epochs]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {min(by_epoch.values()):.2f} | {len(records)} |")
    return "\n".join(rows)


def plot(runs: dict[str, list[dict]], png: Path) -> None:
    from matplotlib.ticker import FuncFormatter

    figure = new_figure(6.4, 4.0)
    ax = figure.add_subplot()
    for label, records in runs.items():
        ax.plot([r["epoch"] for r in records], [r["valid_ppl"] for r in records], "o-", markersize=3, label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if round(value) in (80, 90, 200, 300, 500) else "")
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(figure, png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=parse_run, metavar="LABEL=PATH")
    ap.add_argument("--epochs", nargs="+", type=int, default=[1, 5, 10, 15, 20, 25])
    ap.add_argument("--plot", type=Path, help="write this PNG")
    args = ap.parse_args()
    runs = {label: read_metrics(path) for label, path in args.runs}
    print(table(runs, args.epochs))
    if args.plot:
        plot(runs, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
