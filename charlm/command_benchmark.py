"""Training speed of the real commands: how fast a run goes depending on how it was started.

    python scripts/benchmark_commands.py --data-dir data/ptb [--config ptb-char-small|ptb-char-large]
        [--warmup 10] [--updates 50] [--commands charlm launch launch-cpu launch-2cpu]
        [--json runs/benchmark-commands.json] [train.mixed_precision=no ...]

``scripts/benchmark.py`` times the model in one process; this times the commands a user types, each
as its own run of the same config on the same corpus:

=============  ==========================================================================
name           command
=============  ==========================================================================
charlm         ``charlm train ...`` (no launcher)
launch         ``accelerate launch --num_processes 1 scripts/train.py ...``
launch-cpu     ``accelerate launch --cpu --num_processes 1 scripts/train.py ...``
launch-2cpu    ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ...``
               (two CPU processes; ``--cpu --num_processes 2`` starts one without mpirun)
=============  ==========================================================================

What is measured. Each process of a run records the time at the end of every optimizer update (a
global ``torch.optim`` step hook, so ``charlm.train`` is run unchanged), and ends itself right after
update ``warmup + updates``. The speed is the tokens of updates ``warmup + 1 .. warmup + updates``
(batch_size x seq_len x gradient_accumulation_steps x processes each, from the config) divided by
the time between the end of update ``warmup`` and the end of the last one, the slowest process's.
So start-up (imports, reading the corpus, building the model, the launcher) and the first
``warmup`` updates (memory pools, oneDNN kernels chosen on first use) are excluded, and so are the
end-of-run validation and export, which never happen. Everything in between is what training
does: forward, backward, clipping, the update, the gradient all-reduce between processes, the
loop's own bookkeeping. The runs go one after the other, so noise from other work on the machine
differs between rows; repeat a run to see how much.

The hook is installed by running the training as ``python -m charlm.command_benchmark --probe ...``
(``accelerate launch -m charlm.command_benchmark --probe ...`` under a launcher): the same
``charlm.cli.main(["train", ...])`` that ``charlm train`` and ``scripts/train.py`` call, in the
environment the launcher makes. The table also shows what each process ended up with: its thread
count, the ``OMP_NUM_THREADS`` its launcher set, and its mixed precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.io import save_json
from charlm.runtime import device_name, source_commit

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_JSON = Path("runs") / "benchmark-commands.json"
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


@dataclass(frozen=True)
class Command:
    """One way of starting training: the launcher's command line before the module, and the
    environment variables a user sets for it."""

    name: str
    shown: str  # the command as a user types it
    launcher: list[str]
    env: dict[str, str] = field(default_factory=dict)


def commands(port: int) -> dict[str, Command]:
    """The ways of starting training that the benchmark compares (``port``: for the 2-process run)."""
    return {
        "charlm": Command("charlm", "charlm train", [sys.executable]),
        "launch": Command(
            "launch", "accelerate launch --num_processes 1", [*ACCELERATE_LAUNCH, "--num_processes", "1"]
        ),
        "launch-cpu": Command(
            "launch-cpu",
            "accelerate launch --cpu --num_processes 1",
            [*ACCELERATE_LAUNCH, "--cpu", "--num_processes", "1"],
        ),
        "launch-2cpu": Command(
            "launch-2cpu",
            "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2",
            [*ACCELERATE_LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(port)],
            {"ACCELERATE_USE_CPU": "true"},
        ),
    }


# ------------------------------------------------------------------------------ inside a training process


def probe_main(argv: list[str]) -> int:
    """``--probe DIR UPDATES train ...``: run ``charlm train ...`` in this process, record the end of
    each optimizer update, and after ``UPDATES`` of them write ``DIR/rank-N.json`` and end the process."""
    directory, total, train_argv = Path(argv[1]), int(argv[2]), argv[3:]
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from charlm.cli import main

    times: list[float] = []

    def after_update(optimizer, args, kwargs) -> None:
        times.append(time.perf_counter())
        if len(times) < total:
            return
        from accelerate.state import AcceleratorState

        state = AcceleratorState()
        record = {
            "rank": state.process_index,
            "processes": state.num_processes,
            "times": times,
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "precision": str(state.mixed_precision),
        }
        (directory / f"rank-{state.process_index}.json").write_text(json.dumps(record))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the updates asked for are done: skip the rest of the run (validation, export)

    register_optimizer_step_post_hook(after_update)
    return main(train_argv)


# ------------------------------------------------------------------------------ the benchmark


def measure(
    command: Command, train_args: list[str], tokens_per_update: int, warmup: int, updates: int, workdir: Path
) -> dict[str, Any]:
    """Run ``command`` on ``train_args`` until ``warmup + updates`` updates are done; its speed over
    the last ``updates`` of them (see the module doc)."""
    probe_dir = workdir / command.name
    probe_dir.mkdir()
    total = warmup + updates
    argv = [
        *command.launcher,
        "-m",
        "charlm.command_benchmark",
        "--probe",
        str(probe_dir),
        str(total),
        "train",
        *train_args,
        "--output-dir",
        str(probe_dir / "run"),
        f"train.max_steps={total + 1}",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **command.env}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "name": command.name,
        "command": command.shown,
        "argv": argv,
        "env": command.env,
        "wall_seconds": round(wall, 1),
    }
    records = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("rank-*.json"))]
    if done.returncode != 0 or not records:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**result, "error": f"exit status {done.returncode}: {tail}"}
    processes = records[0]["processes"]
    seconds = max(r["times"][total - 1] - r["times"][warmup - 1] for r in records)
    tokens = tokens_per_update * processes * updates
    return {
        **result,
        "processes": processes,
        "threads": [r["threads"] for r in records],
        "omp_num_threads": records[0]["omp_num_threads"],
        "precision": records[0]["precision"],
        "updates": updates,
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_sec": round(tokens / seconds, 1),
        "seconds_per_update": round(seconds / updates, 4),
    }


def format_table(results: list[dict[str, Any]]) -> str:
    header = f"{'command':<74} {'proc':>4} {'threads':>7} {'OMP':>4} {'precision':>9} {'tokens/s':>9} {'s/update':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['command']:<74} failed: {r['error']}")
            continue
        threads = "+".join(str(t) for t in r["threads"])
        lines.append(
            f"{r['command']:<74} {r['processes']:>4} {threads:>7} {r['omp_num_threads'] or '-':>4} "
            f"{r['precision']:>9} {r['tokens_per_sec']:>9,.0f} {r['seconds_per_update']:>8.3f}"
        )
    return "\n".join(lines)


def resolve_config(name: str) -> Path:
    """A config name from configs/ (``ptb-char-small``) or a path to a YAML file."""
    path = Path(name)
    if not path.suffix:
        path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise CharlmError(
            f"config {name} not found; give a name from {CONFIG_DIR} (e.g. ptb-char-small) or a YAML path"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Training tokens/s of `charlm train` and `accelerate launch` variants (see the module doc).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="a corpus prepared by `charlm prepare` (e.g. PTB)")
    parser.add_argument("--config", default="ptb-char-small", help="a name from configs/ or a YAML path")
    parser.add_argument("--warmup", type=int, default=10, help="updates run before the timing starts")
    parser.add_argument("--updates", type=int, default=50, help="updates timed")
    parser.add_argument(
        "--commands",
        nargs="+",
        default=list(commands(0)),
        choices=list(commands(0)),
        help="which ways of starting training to run, in this order",
    )
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every run, e.g. train.mixed_precision=no",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CharlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from charlm.config import load_config
    from charlm.corpus import read_meta

    if args.warmup < 1 or args.updates < 1:
        raise CharlmError(f"--warmup and --updates must be at least 1, got {args.warmup} and {args.updates}")
    read_meta(args.data_dir)  # a prepared corpus, or a one-line error now rather than in every run
    config_path = resolve_config(args.config)
    tc = load_config(config_path, args.overrides).train
    tokens_per_update = tc.batch_size * tc.seq_len * tc.gradient_accumulation_steps  # per process
    train_args = ["--config", str(config_path), "--data-dir", str(args.data_dir), *args.overrides]
    available = commands(free_port())
    results = []
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as workdir:
        for name in args.commands:
            print(f"{available[name].shown} ...", file=sys.stderr, flush=True)
            results.append(
                measure(available[name], train_args, tokens_per_update, args.warmup, args.updates, Path(workdir))
            )
    print(format_table(results))
    report = {
        "config": str(config_path),
        "data_dir": str(args.data_dir),
        "overrides": args.overrides,
        "warmup": args.warmup,
        "updates": args.updates,
        "machine": {
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "processor": device_name("cpu"),
            "python": platform.python_version(),
            "torch": _torch_version(),
            "commit": source_commit(),
        },
        "results": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, path)
    print(f"written: {path}")
    return 1 if any("error" in r for r in results) else 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        sys.exit(probe_main(sys.argv[1:]))
    sys.exit(main())
