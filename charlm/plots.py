"""Figures and result files: training curves, and atomic writes for everything the commands output.

Matplotlib is an optional extra (``pip install charlm[plot]``). It is imported inside the functions
that draw, through its object-oriented API with the Agg canvas, so importing this module never
needs it and never changes the backend of a program that already uses pyplot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.io import atomic_open

MATPLOTLIB_MISSING = "matplotlib is not installed (pip install 'charlm[plot]')"


def check_output_path(path: str | Path) -> Path:
    """Fail early (before any work) if ``path`` cannot be written: its folder must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CharlmError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise CharlmError(f"cannot write {path}: it is a folder")
    return path


def new_figure(width: float, height: float):
    """A matplotlib Figure drawn on the Agg canvas (no pyplot, no global backend switch).

    Raises ImportError when matplotlib is not installed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, png_path: str | Path) -> Path:
    """Write ``figure`` as PNG under a temporary name, then rename it onto ``png_path``."""
    png_path = Path(png_path)
    with atomic_open(png_path, "wb") as f:
        figure.savefig(f, format="png", bbox_inches="tight")
    return png_path


def read_metrics(metrics_jsonl: str | Path) -> list[dict[str, Any]]:
    """The records of a training run's ``metrics.jsonl``, one per epoch, sorted by epoch.

    A resumed run may have written an epoch twice; the later record wins.
    """
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise CharlmError(f"metrics file {path} not found; it is written by `charlm train` in its output folder")
    by_epoch: dict[float, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_epoch[float(record["epoch"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CharlmError(f"{path}:{number} is not a metrics record with an 'epoch' field") from None
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def plot_metrics(metrics_jsonl: str | Path, png_path: str | Path) -> Path | None:
    """Plot train and validation perplexity per epoch (log y-axis) from ``metrics.jsonl``.

    Records look like ``{"epoch", "lr", "train_ppl", "valid_ppl", "tokens_per_sec", "seconds"}``.
    Returns the PNG's path, or None (and writes nothing) when matplotlib is not installed or the
    file holds no records yet. The PNG is written atomically.
    """
    records = read_metrics(metrics_jsonl)
    if not records:
        return None
    try:
        figure = new_figure(6.4, 4.0)
    except ImportError:
        return None
    ax = figure.add_subplot()
    epochs = [r["epoch"] for r in records]
    for key, label, style in (("train_ppl", "train", "o-"), ("valid_ppl", "valid", "s-")):
        points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=4)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 100, 200, 500, 1000, ...
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity (log scale)")
    valid = [r["valid_ppl"] for r in records if r.get("valid_ppl") is not None]
    if valid:
        ax.set_title(f"best valid perplexity {min(valid):.2f}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(figure, png_path)
