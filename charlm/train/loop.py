"""The training loop and the `charlm train` command.

``train`` sets up a :class:`~charlm.train.trainer.Run` and calls ``fit``: epochs of ``train_epoch``
(updates, progress bar, resumable states every ``train.checkpoint_every_steps``), each followed by
validation, export and a saved state; a stop request (SIGINT, SIGTERM) is agreed on by every
process (``agreed_stop``) and answered after a saved state.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from charlm.config import RunConfig, describe_fields, load_config
from charlm.runtime import StopRequest
from charlm.state import (
    BEST_DIR,
    METRICS_FILE,
    complete_checkpoints,
)
from charlm.train.processes import STOP_CHECK_EVERY, agree
from charlm.train.trainer import Run


def train(
    config: RunConfig,
    data_dir: str | Path,
    output_dir: str | Path,
    resume: bool = False,
    config_name: str | None = None,
) -> dict[str, Any]:
    """Train a model; returns a summary (best validation perplexity, steps, seconds, and
    ``stopped_by``: the number of the signal that stopped the run early, else 0). ``config_name``
    (the ``--config`` given) is recorded with the exported model."""
    run = Run(config, data_dir, output_dir, resume, config_name)
    run.prepare_output()
    run.restore()
    run.print_summary()
    run.start_tracking()
    start_time = time.time()
    with StopRequest(run.accelerator.num_processes, run.accelerator.process_index) as stop:
        stopped_by = fit(run, stop)
    return finish(run, stopped_by, time.time() - start_time)


def fit(run: Run, stop: StopRequest) -> int:
    """Epoch after epoch until ``train.max_epochs``, ``train.max_steps``, ``train.min_lr`` or a stop
    request; returns the signal that stopped the run (0: none). After every epoch: validate, export,
    save the resumable state, then answer a stop request."""
    tc = run.tc
    while run.progress.epoch < tc.max_epochs:
        epoch = run.progress.epoch + 1
        epoch_start = time.time()
        counters = Counters(run)
        cut_short, stopped_by = train_epoch(run, epoch, counters, stop)
        if stopped_by:
            return stopped_by  # the state was saved where the run stopped
        counters.fold()
        run.check_finite(epoch, weights=True)  # before validating and exporting
        cut_short = run.end_epoch(epoch, epoch_start, cut_short)
        run.checkpoint(epoch)
        if cut_short or run.progress.epoch >= tc.max_epochs:
            return 0
        stopped_by = agreed_stop(run, stop)
        if stopped_by:
            return stopped_by
    return 0


def train_epoch(run: Run, epoch: int, counters: "Counters", stop: StopRequest) -> tuple[bool, int]:
    """One pass over the training text, or the rest of one after a resume. Returns whether
    ``train.max_steps`` cut it short and the stop signal agreed on mid-epoch (0: none); a resumable
    state is saved every ``train.checkpoint_every_steps`` updates and where a stop request is met."""
    tc, progress, accelerator = run.tc, run.progress, run.accelerator
    if progress.chunk == 0:
        run.state = run.raw_model.initial_state(tc.batch_size)  # a new pass over the text starts fresh
    run.model.train()
    with progress_bar(run, epoch) as bar:  # closed on an error too: the message gets a line of its own
        for k in range(progress.chunk, run.chunks_per_epoch):
            counters.add(run.update(k))
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            run.after_update()
            step, last = progress.global_step, k + 1 == run.chunks_per_epoch
            if step % tc.log_every == 0 or last:
                run.check_finite(epoch)
                run.report(bar, k, counters.nll_sum, counters.start)
            if tc.max_steps and step >= tc.max_steps:
                return True, 0
            if last:
                return False, 0  # a stop asked for now is answered after the end-of-epoch work
            # With several processes the stop request is agreed on every STOP_CHECK_EVERY updates.
            stopped_by = agreed_stop(run, stop) if accelerator.num_processes == 1 or step % STOP_CHECK_EVERY == 0 else 0
            if stopped_by or (tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0):
                counters.fold()
                run.checkpoint(epoch)
            if stopped_by:
                return False, stopped_by
    return False, 0


class Counters:
    """This process's summed loss and training time since they were last folded into the run's
    progress (which is what a resumable state records)."""

    def __init__(self, run: Run):
        self.run = run
        self.nll_sum = torch.zeros((), dtype=torch.float64, device=run.accelerator.device)
        self.start = time.time()

    def add(self, loss: torch.Tensor) -> None:
        self.nll_sum += loss.double() * self.run.tc.batch_size  # summed over the chunk's B*T tokens

    def fold(self) -> None:
        self.run.fold_counters(self.nll_sum, self.start)
        self.nll_sum.zero_()
        self.start = time.time()


def agreed_stop(run: Run, stop: StopRequest) -> int:
    """The stop signal any process received (0: none), the same answer on every process."""
    return agree(run.accelerator, stop.signum, "max")


def progress_bar(run: Run, epoch: int) -> tqdm:
    return tqdm(
        total=run.chunks_per_epoch,
        initial=run.progress.chunk,
        desc=f"epoch {epoch}/{run.tc.max_epochs}",
        unit="chunk",
        disable=not run.accelerator.is_local_main_process,
        dynamic_ncols=True,
        mininterval=1.0,
    )


def finish(run: Run, stopped_by: int, seconds: float) -> dict[str, Any]:
    """Say how the run ended (main process), close the trackers; the run's summary."""
    progress, output_dir = run.progress, run.output_dir
    summary = {
        "best_valid_ppl": progress.best_valid,
        "updates": progress.global_step,
        "seconds": round(seconds, 1),
        "output_dir": str(output_dir),
        "stopped_by": stopped_by,
    }
    if run.accelerator.is_main_process:
        if stopped_by:
            print(
                f"stopped by {signal.Signals(stopped_by).name} after update {progress.global_step}; state "
                f"saved in {complete_checkpoints(output_dir)[-1]}; to continue, run the same command with --resume",
                file=sys.stderr,
                flush=True,
            )
        else:
            _write_plot(output_dir)
            print(f"done: best valid ppl {summary['best_valid_ppl']:.2f}; model exported to {output_dir / BEST_DIR}")
    run.accelerator.end_training()
    return summary


def _write_plot(output_dir: Path) -> None:
    from charlm.plots import plot_metrics

    if plot_metrics(output_dir / METRICS_FILE, output_dir / "curves.png") is None:
        print("curves.png skipped: install matplotlib (pip install charlm[plot]) for the plot")


# ------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with 'model' and 'train' sections (see configs/)")
    parser.add_argument("--data-dir", required=True, help="a corpus directory written by `charlm prepare`")
    parser.add_argument("--output-dir", required=True, help="where best/, checkpoints/ and metrics.jsonl go")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete state in OUTPUT_DIR/checkpoints (mid-epoch included)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.max_epochs=2 model.dropout=0.3 (a bare key works when unambiguous)",
    )
    parser.epilog = "config keys:\n" + describe_fields()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when done; 128 + the signal's number when SIGINT (130) or SIGTERM (143) stopped
    the run after saving a resumable state, as a shell reports a process killed by that signal."""
    config = load_config(args.config, args.overrides)
    summary = train(config, args.data_dir, args.output_dir, resume=args.resume, config_name=args.config)
    return 128 + summary["stopped_by"] if summary["stopped_by"] else 0
