"""The training loop (`train`) and the `charlm train` command."""

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
    tc, progress, accelerator = run.tc, run.progress, run.accelerator
    output_dir = run.output_dir

    start_time = time.time()
    cut_short = False
    stopped_by = 0  # the signal (SIGINT, SIGTERM) that stopped the run, agreed by every process
    stop = StopRequest(accelerator.num_processes, accelerator.process_index)
    with stop:
        while run.progress.epoch < tc.max_epochs and not cut_short and not stopped_by:
            progress = run.progress
            epoch = progress.epoch + 1
            epoch_start = time.time()
            if progress.chunk == 0:
                run.state = run.raw_model.initial_state(tc.batch_size)  # a new pass over the text starts fresh
            run.model.train()
            bar = tqdm(
                total=run.chunks_per_epoch,
                initial=progress.chunk,
                desc=f"epoch {epoch}/{tc.max_epochs}",
                unit="chunk",
                disable=not accelerator.is_local_main_process,
                dynamic_ncols=True,
                mininterval=1.0,
            )
            # This process's summed NLL over the chunks trained since the last checkpoint.
            nll_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            train_start = time.time()
            try:
                for k in range(progress.chunk, run.chunks_per_epoch):
                    loss = run.update(k)
                    nll_sum += loss.double() * tc.batch_size  # summed over the chunk's B*T tokens
                    bar.update(1)
                    if not accelerator.sync_gradients:
                        continue
                    run.after_update()
                    step = progress.global_step
                    if step % tc.log_every == 0 or k + 1 == run.chunks_per_epoch:
                        run.check_finite(epoch)
                        run.report(bar, k, nll_sum, train_start)
                    cut_short = bool(tc.max_steps) and step >= tc.max_steps
                    if cut_short:
                        break
                    if k + 1 == run.chunks_per_epoch:
                        break  # a stop asked for now happens after the end-of-epoch work, with its state
                    # With several processes the stop request is agreed on every STOP_CHECK_EVERY updates.
                    if accelerator.num_processes == 1 or step % STOP_CHECK_EVERY == 0:
                        stopped_by = agree(accelerator, stop.signum, "max")
                    if stopped_by or (tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0):
                        run.fold_counters(nll_sum, train_start)
                        nll_sum.zero_()
                        train_start = time.time()
                        run.checkpoint(epoch)
                    if stopped_by:
                        break
            finally:
                bar.close()  # also on an error: the message then starts on a line of its own
            if stopped_by:
                break
            run.fold_counters(nll_sum, train_start)
            run.check_finite(epoch, weights=True)  # before validating and exporting
            cut_short = run.end_epoch(epoch, epoch_start, cut_short)
            run.checkpoint(epoch)
            if run.progress.epoch < tc.max_epochs and not cut_short:  # more to do: honour a stop request now
                stopped_by = agree(accelerator, stop.signum, "max")

    progress = run.progress
    summary = {
        "best_valid_ppl": progress.best_valid,
        "updates": progress.global_step,
        "seconds": round(time.time() - start_time, 1),
        "output_dir": str(output_dir),
        "stopped_by": stopped_by,
    }
    if accelerator.is_main_process:
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
    accelerator.end_training()
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
