#!/usr/bin/env python
"""Tables and plots of the highway sweep (``highway_sweep.sh``): validation and training
perplexity per depth and kind, the gate-bias runs, and each highway stack's mean transform gate
per layer (from the ``gates`` analysis). Copies every finished run's ``metrics.jsonl`` and
``gates.json`` under ``--record`` (results/highway-sweep/), draws ``--plot`` (PNG) and prints
the Markdown tables.

    python scripts/experiments/highway_sweep_report.py SWEEP_DIR --record results/highway-sweep \
        --plot results/figures/highway-sweep.png
"""

import argparse
import json
import shutil
from pathlib import Path

KINDS = ("highway", "mlp", "residual")
DEPTHS = (1, 2, 4, 8, 16)
BIASES = (0, -1, -2, -4)


def last_record(run: Path) -> dict | None:
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return json.loads(lines[-1]) if lines else None


def run_dir(sweep: Path, kind: str, depth: int, bias: int = -2) -> Path:
    return sweep / (f"{kind}-{depth}" if bias == -2 else f"{kind}-{depth}-bias{bias}")


def cell(record: dict | None, key: str) -> str:
    return f"{record[key]:,.1f}" if record else "not run"


def gate_means(run: Path) -> str:
    gates = run / "gates.json"
    if not gates.exists():
        return ""
    return " ".join(f"{m:.2f}" for m in json.loads(gates.read_text())["mean_per_layer"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--record", type=Path, help="copy metrics.jsonl and gates.json of every run here")
    ap.add_argument("--plot", type=Path, help="write this PNG")
    args = ap.parse_args()

    print("| kind | " + " | ".join(f"depth {d}" for d in DEPTHS) + " |")
    print("|---|" + "---|" * len(DEPTHS))
    for kind in KINDS:
        records = [last_record(run_dir(args.sweep, kind, d)) for d in DEPTHS]
        print(
            f"| {kind} | "
            + " | ".join(f"{cell(r, 'valid_ppl')} ({cell(r, 'train_ppl')})" if r else "not run" for r in records)
            + " |"
        )
    print("\nvalid ppl (train ppl) after the schedule\n")
    print("| gate bias at depth 8 | valid ppl | train ppl | mean transform gate per layer |")
    print("|---|---|---|---|")
    for bias in BIASES:
        run = run_dir(args.sweep, "highway", 8, bias)
        r = last_record(run)
        print(f"| {bias} | {cell(r, 'valid_ppl')} | {cell(r, 'train_ppl')} | {gate_means(run)} |")
    print("\n| highway depth | mean transform gate per layer (valid split) |\n|---|---|")
    for depth in DEPTHS:
        print(f"| {depth} | {gate_means(run_dir(args.sweep, 'highway', depth))} |")

    if args.record:
        for run in sorted(p for p in args.sweep.iterdir() if p.is_dir()):
            for name in ("metrics.jsonl", "gates.json", "config.json"):
                if (run / name).exists():
                    (args.record / run.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(run / name, args.record / run.name / name)
    if args.plot:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4))
        left, right = fig.subplots(1, 2)
        for kind in KINDS:
            points = [(d, r["valid_ppl"]) for d in DEPTHS if (r := last_record(run_dir(args.sweep, kind, d)))]
            if points:
                left.plot(*zip(*points), marker="o", label=kind)
        left.set(
            xscale="log",
            yscale="log",
            xlabel="layers between char-CNN and LSTM",
            ylabel="validation perplexity",
            title="Depth (same short schedule)",
        )
        left.set_xticks(DEPTHS, [str(d) for d in DEPTHS])
        left.legend()
        points = [(b, r["valid_ppl"]) for b in BIASES if (r := last_record(run_dir(args.sweep, "highway", 8, b)))]
        if points:
            right.plot(*zip(*points), marker="o")
        right.set(
            xlabel="transform-gate bias at initialisation",
            ylabel="validation perplexity",
            title="Highway depth 8: gate bias",
        )
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
