"""Training with `accelerate`: the paper's recipe, on one process or many.

    accelerate launch scripts/train.py --config configs/ptb-char-small.yaml \\
        --data-dir data/ptb --output-dir runs/ptb-char-small [train.max_epochs=2 ...]

How the text is fed (truncated backpropagation through time). The training split is one long
stream of word ids. It is cut into R = batch_size x num_processes rows of equal length::

    stream: a b c d e f g h i j k l m n o p q r s t u v w x     (R = 4 rows)
    row 0:  a b c d e f      <- process 0 owns rows 0-1
    row 1:  g h i j k l
    row 2:  m n o p q r      <- process 1 owns rows 2-3
    row 3:  s t u v w x

Step k feeds columns [k*T, (k+1)*T) of its rows, so row r of step k+1 continues the text of row r
of step k, and the LSTM state at the end of step k is the right state to start step k+1 from: it is
carried over (detached, so gradients stop at the chunk boundary). Each process owns a fixed block of
rows and the gradients are averaged across processes, so N processes with batch B compute the same
update as one process with batch N*B. We batch the stream ourselves: a DataLoader prepared by
accelerate would shard and reshuffle it.

Interruptions. A resumable state (model, optimizer, RNG states, LSTM state, progress) is saved every
``train.checkpoint_every_steps`` updates and at the end of each epoch: written to
``checkpoints/step-N.tmp``, marked ``COMPLETE``, then renamed, so a crash or a SIGKILL at any moment
leaves the newest complete state intact, and ``--resume`` continues from it to the same weights as an
uninterrupted run. SIGINT or SIGTERM stops after the current update, saves, and exits with status
130 or 143. A NaN or infinite loss stops the run before anything is saved or exported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from charlm.checkpoint import export_model, non_finite, recover_export
from charlm.config import RunConfig, TrainConfig, describe_fields, load_config, save_json
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.model import CharLM, detach_hidden
from charlm.scoring import safe_exp, score_stream
from charlm.state import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    METRICS_FILE,
    complete_checkpoints,
    drop_later_records,
    load_checkpoint,
    prepare_output_dir,
    recover_checkpoints,
    save_checkpoint,
    state_bytes,
)

STOP_CHECK_EVERY = 10  # with several processes, a SIGINT/SIGTERM is agreed on every N updates


class TextStream:
    """This process's rows of the training stream, served as ``[B, T]`` chunks (see module doc)."""

    def __init__(self, ids: np.ndarray, total_rows: int, seq_len: int, first_row: int, num_rows: int):
        cols = (len(ids) - 1) // total_rows  # tokens per row
        self.num_chunks = cols // seq_len
        if self.num_chunks < 1:
            raise CharlmError(
                f"the training split ({len(ids)} tokens) is too short for {total_rows} rows of "
                f"{seq_len} steps; lower train.batch_size or train.seq_len"
            )
        used = total_rows * cols
        data = torch.from_numpy(np.asarray(ids[: used + 1], dtype=np.int64))
        rows = slice(first_row, first_row + num_rows)
        self.inputs = data[:used].view(total_rows, cols)[rows]  # [B, cols]
        self.targets = data[1 : used + 1].view(total_rows, cols)[rows]  # [B, cols], shifted by one
        self.seq_len = seq_len

    def chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols]


def build_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    if tc.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def should_decay(history: list[float], tc: TrainConfig) -> bool:
    """The reference rule: after epoch >= decay_start_epoch, decay unless validation perplexity
    improved by more than ``decay_threshold`` over the previous (or best earlier) epoch."""
    if len(history) < max(tc.decay_start_epoch, 2):
        return False
    reference = history[-2] if tc.decay_compare == "previous" else min(history[:-1])
    return reference - history[-1] <= tc.decay_threshold


def sequence_loss(nll: torch.Tensor) -> torch.Tensor:
    """Per-token losses ``[B, T]`` -> summed over the time steps, averaged over the batch rows:
    the loss whose gradient the paper clips at norm 5 (the per-token mean times seq_len)."""
    return nll.sum(dim=1).mean()


class StopRequest:
    """SIGINT / SIGTERM while training: remember the signal; the loop saves and stops after the
    current update. A second SIGINT a second or more later (a deliberate second Ctrl-C) stops at
    once, without saving; a signal repeated sooner (a launcher forwarding it) counts as the first."""

    def __init__(self):
        self.signum = 0
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if not self.signum:
            self.signum, self._at = signum, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self._at > 1.0:
            raise KeyboardInterrupt


def _agree(accelerator: Accelerator, value: int, reduce: str) -> int:
    """``value`` combined over all processes (``max`` or ``min``); itself with a single process."""
    if accelerator.num_processes == 1:
        return value
    values = accelerator.gather(torch.tensor([value], dtype=torch.long, device=accelerator.device))
    return int(values.max() if reduce == "max" else values.min())


def _on_main_process(accelerator: Accelerator, work) -> None:
    """Run ``work()`` on the main process; a CharlmError there is raised on every process."""
    message = None
    if accelerator.is_main_process:
        try:
            work()
        except CharlmError as err:
            message = str(err)
    if accelerator.num_processes > 1:
        box = [message]
        broadcast_object_list(box)
        message = box[0]
    if message is not None:
        raise CharlmError(message)


def _first_non_finite(recent: list[tuple[int, torch.Tensor]], accelerator: Accelerator) -> int:
    """The first update among ``recent`` (update, loss) pairs whose loss is NaN or infinite, 0 if
    none; the same on every process. Empties ``recent``."""
    never = 2**62
    bad = never
    if recent:
        finite = torch.isfinite(torch.stack([loss.float() for _, loss in recent]))  # [n]
        if not bool(finite.all()):
            bad = recent[int((~finite).nonzero()[0, 0])][0]
    recent.clear()
    bad = _agree(accelerator, bad, "min")
    return 0 if bad == never else bad


def train(config: RunConfig, data_dir: str | Path, output_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train a model; returns a summary (best validation perplexity, steps, seconds, and
    ``stopped_by``: the number of the signal that stopped the run early, else 0)."""
    tc = config.train
    output_dir = Path(output_dir)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision or None,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    set_seed(tc.seed)  # the same seed everywhere: identical initial weights on every process

    # Everything that reads input comes first, so a bad corpus or config leaves no output folder.
    vocab, splits, _ = load_corpus(data_dir)
    model_config = dataclasses.replace(
        config.model,
        vocab_size=len(vocab),
        char_vocab_size=len(vocab.chars),
        max_word_length=vocab.max_word_length,
    )
    config = dataclasses.replace(config, model=model_config)
    model = CharLM(model_config, vocab.spellings() if model_config.input != "word" else None)
    model.set_padding_gradient(tc.clip_padding_gradient)
    optimizer = build_optimizer(model, tc)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: CharLM = accelerator.unwrap_model(model)

    rows = tc.batch_size * accelerator.num_processes
    stream = TextStream(splits["train"], rows, tc.seq_len, accelerator.process_index * tc.batch_size, tc.batch_size)
    # Whole accumulation groups only, so every epoch ends on an optimizer update.
    chunks_per_epoch = stream.num_chunks - stream.num_chunks % tc.gradient_accumulation_steps
    updates_per_epoch = chunks_per_epoch // tc.gradient_accumulation_steps

    def check_output_dir() -> None:
        # Then the output folder, before any training: writable, room for what the run keeps
        # (checkpoints plus the one being written, best/ and its replacement), tidied after a crash.
        model_bytes, checkpoint_bytes = state_bytes(raw_model, tc)
        have = len(complete_checkpoints(output_dir)) if resume and output_dir.is_dir() else 0
        needed = max(tc.keep_checkpoints + 1 - have, 1) * checkpoint_bytes + 2 * model_bytes
        prepare_output_dir(output_dir, resume, needed)
        recover_checkpoints(output_dir)
        recover_export(output_dir / BEST_DIR)

    _on_main_process(accelerator, check_output_dir)
    accelerator.wait_for_everyone()

    progress: dict[str, Any] = {
        "epoch": 0,  # completed epochs
        "chunk": 0,  # chunks done in the current epoch
        "global_step": 0,  # optimizer updates
        "lr": tc.lr,
        "valid_history": [],  # validation perplexity after each completed epoch
        "best_valid": math.inf,
        "epoch_nll": [0.0] * accelerator.num_processes,  # each process's summed training NLL this epoch
        "epoch_train_seconds": 0.0,
    }
    hidden = raw_model.init_hidden(tc.batch_size)
    checkpoints = complete_checkpoints(output_dir) if resume else []
    if checkpoints:
        progress, hidden = load_checkpoint(accelerator, checkpoints[-1], accelerator.device, hidden[0].shape)
        if accelerator.is_main_process:
            print(f"resuming from {checkpoints[-1]} (epoch {progress['epoch'] + 1}, update {progress['global_step']})")
            drop_later_records(output_dir / METRICS_FILE, progress["global_step"])
    elif resume and accelerator.is_main_process:
        print(f"no complete checkpoint in {output_dir / CHECKPOINTS_DIR}; starting from scratch")
        drop_later_records(output_dir / METRICS_FILE, 0)  # records of a run killed before its first state
    for group in optimizer.param_groups:
        group["lr"] = progress["lr"]

    if accelerator.is_main_process:
        save_json(config.to_dict(), output_dir / "config.json")
        highway = "no highway" if model_config.highway == "none" else f"{model_config.highway_layers} {model_config.highway}"
        print(
            f"charlm train: {raw_model.num_parameters():,} parameters | {model_config.input} input, {highway}, "
            f"LSTM {model_config.lstm_layers}x{model_config.hidden_size} | vocab {len(vocab):,} words, "
            f"{len(vocab.chars)} chars, spellings of {vocab.max_word_length}\n"
            f"  {accelerator.num_processes} process(es) on {accelerator.device}, precision "
            f"{accelerator.mixed_precision} | {rows} rows x {tc.seq_len} steps = {rows * tc.seq_len:,} tokens per "
            f"chunk, {tc.gradient_accumulation_steps} chunk(s) per update | {updates_per_epoch:,} updates per "
            f"epoch, {tc.max_epochs} epochs" + (f", at most {tc.max_steps} updates" if tc.max_steps else ""),
            flush=True,
        )

    # Losses of the chunks since the last finiteness check: (update, loss), checked every log_every
    # updates and before anything is saved, so a NaN never reaches a checkpoint or best/.
    recent: list[tuple[int, torch.Tensor]] = []

    def check_finite(epoch: int, weights: bool = False) -> None:
        bad = _first_non_finite(recent, accelerator)
        bad_weights = non_finite(raw_model.state_dict()) if weights and not bad else []
        if bad or bad_weights:
            newest = complete_checkpoints(output_dir)
            kept = f"the last good state is {newest[-1]}" if newest else "no state was saved before it"
            what = (f"training loss became non-finite at update {bad}" if bad else
                    f"model weights became non-finite by update {progress['global_step']}")
            raise CharlmError(f"{what} (epoch {epoch}); stopped without saving it, {kept}; lower train.lr "
                              "or set train.grad_clip and train again")

    def checkpoint(epoch: int) -> None:
        check_finite(epoch, weights=True)
        save_checkpoint(accelerator, output_dir, progress, hidden, tc.keep_checkpoints)

    start_time = time.time()
    cut_short = False
    stopped_by = 0  # the signal (SIGINT, SIGTERM) that stopped the run, agreed by every process
    stop = StopRequest()
    with stop:
        while progress["epoch"] < tc.max_epochs and not cut_short and not stopped_by:
            epoch = progress["epoch"] + 1
            epoch_start = time.time()
            if progress["chunk"] == 0:
                hidden = raw_model.init_hidden(tc.batch_size)  # a new pass over the text starts fresh
            model.train()
            bar = tqdm(total=chunks_per_epoch, initial=progress["chunk"], desc=f"epoch {epoch}/{tc.max_epochs}",
                       unit="chunk", disable=not accelerator.is_local_main_process, dynamic_ncols=True,
                       mininterval=1.0)
            # This process's summed NLL over the chunks trained since the last checkpoint.
            nll_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            train_start = time.time()
            try:
                for k in range(progress["chunk"], chunks_per_epoch):
                    inputs, targets = (t.to(accelerator.device) for t in stream.chunk(k))
                    with accelerator.accumulate(model):
                        nll, hidden = model(inputs, hidden, targets)  # [B, T] per-token losses
                        loss = sequence_loss(nll)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and tc.grad_clip > 0:
                            accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                        optimizer.step()
                        optimizer.zero_grad()
                        if tc.clip_padding_gradient and accelerator.sync_gradients:
                            raw_model.zero_padding_embedding()  # the update moved it; the reference resets it
                    hidden = detach_hidden(hidden)
                    nll_sum += loss.detach().double() * tc.batch_size  # summed over the chunk's B*T tokens
                    recent.append((progress["global_step"] + 1, loss.detach()))
                    progress["chunk"] = k + 1
                    bar.update(1)
                    if not accelerator.sync_gradients:
                        continue
                    progress["global_step"] += 1
                    step = progress["global_step"]
                    if step % tc.log_every == 0 or k + 1 == chunks_per_epoch:
                        check_finite(epoch)
                        done_tokens = (k + 1) * tc.batch_size * tc.seq_len
                        mean_nll = (progress["epoch_nll"][accelerator.process_index] + float(nll_sum)) / done_tokens
                        elapsed = progress["epoch_train_seconds"] + time.time() - train_start
                        bar.set_postfix(ppl=f"{math.exp(min(mean_nll, 50)):.1f}", lr=f"{progress['lr']:g}",
                                        tok_s=f"{(k + 1) * rows * tc.seq_len / max(elapsed, 1e-9):,.0f}", refresh=False)
                    cut_short = bool(tc.max_steps) and step >= tc.max_steps
                    if cut_short:
                        break
                    if k + 1 == chunks_per_epoch:
                        break  # a stop asked for now happens after the end-of-epoch work, with its state
                    # With several processes the stop request is agreed on every STOP_CHECK_EVERY updates.
                    if accelerator.num_processes == 1 or step % STOP_CHECK_EVERY == 0:
                        stopped_by = _agree(accelerator, stop.signum, "max")
                    if stopped_by or (tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0):
                        _fold_counters(progress, nll_sum, train_start, accelerator)
                        nll_sum.zero_()
                        train_start = time.time()
                        checkpoint(epoch)
                    if stopped_by:
                        break
            finally:
                bar.close()  # also on an error: the message then starts on a line of its own
            if stopped_by:
                break
            _fold_counters(progress, nll_sum, train_start, accelerator)
            check_finite(epoch, weights=True)  # before validating and exporting

            # ---- end of the epoch (or of a run cut short by max_steps): validate, export, record
            train_tokens = progress["chunk"] * rows * tc.seq_len
            train_ppl = safe_exp(sum(progress["epoch_nll"]) / max(train_tokens, 1))
            valid_ppl = score_stream(raw_model, splits["valid"], vocab.eos_id, tc.eval_chunk_len,
                                     progress=accelerator.is_local_main_process).perplexity
            if not math.isfinite(valid_ppl):
                raise CharlmError(f"validation perplexity is not finite in epoch {epoch}; nothing exported. "
                                  "Lower train.lr")
            record = {
                "epoch": round(progress["epoch"] + progress["chunk"] / chunks_per_epoch, 4) if cut_short else epoch,
                "step": progress["global_step"],
                "lr": progress["lr"],
                "train_ppl": round(train_ppl, 3),
                "valid_ppl": round(valid_ppl, 3),
                "tokens_per_sec": round(train_tokens / max(progress["epoch_train_seconds"], 1e-9), 1),
                "seconds": round(time.time() - epoch_start, 1),
            }
            improved = valid_ppl < progress["best_valid"]
            progress["best_valid"] = min(progress["best_valid"], valid_ppl)
            if accelerator.is_main_process:
                if improved:
                    export_model(raw_model, vocab, output_dir / BEST_DIR, extra={
                        "train": dataclasses.asdict(tc), "valid_ppl": valid_ppl, "epoch": record["epoch"]})
                try:
                    with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                except OSError as err:
                    raise CharlmError(f"could not write {output_dir / METRICS_FILE} ({err.strerror}); is the disk "
                                      "full? free some space and run again with --resume") from None
                tqdm.write(
                    f"epoch {record['epoch']}: train ppl {train_ppl:.2f} | valid ppl {valid_ppl:.2f}"
                    f"{' (best)' if improved else ''} | lr {progress['lr']:g} | "
                    f"{record['tokens_per_sec']:,.0f} tok/s | {record['seconds']:.0f} s"
                )
            if not cut_short:  # a completed epoch: the learning-rate rule, then a fresh epoch
                progress["valid_history"].append(valid_ppl)
                if should_decay(progress["valid_history"], tc):
                    progress["lr"] *= tc.lr_decay
                    for group in optimizer.param_groups:
                        group["lr"] = progress["lr"]
                progress.update(epoch=epoch, chunk=0, epoch_nll=[0.0] * accelerator.num_processes,
                                epoch_train_seconds=0.0)
                if tc.min_lr and progress["lr"] < tc.min_lr:
                    cut_short = True
            checkpoint(epoch)
            if progress["epoch"] < tc.max_epochs and not cut_short:  # more to do: honour a stop request now
                stopped_by = _agree(accelerator, stop.signum, "max")

    summary = {
        "best_valid_ppl": progress["best_valid"],
        "updates": progress["global_step"],
        "seconds": round(time.time() - start_time, 1),
        "output_dir": str(output_dir),
        "stopped_by": stopped_by,
    }
    if accelerator.is_main_process:
        if stopped_by:
            print(f"stopped by {signal.Signals(stopped_by).name} after update {progress['global_step']}; state "
                  f"saved in {complete_checkpoints(output_dir)[-1]}; to continue, run the same command with --resume",
                  file=sys.stderr, flush=True)
        else:
            _write_plot(output_dir)
            print(f"done: best valid ppl {summary['best_valid_ppl']:.2f}; model exported to {output_dir / BEST_DIR}")
    accelerator.end_training()
    return summary


def _fold_counters(progress: dict[str, Any], nll_sum: torch.Tensor, train_start: float, accelerator) -> None:
    """Add the loss summed since the last fold (from every process) and the time to ``progress``,
    which is what a checkpoint records, so a resumed epoch reports the same train perplexity."""
    everyone = accelerator.gather(nll_sum.reshape(1)).cpu().tolist()  # [num_processes]
    progress["epoch_nll"] = [a + b for a, b in zip(progress["epoch_nll"], everyone)]
    progress["epoch_train_seconds"] += time.time() - train_start


def _write_plot(output_dir: Path) -> None:
    from charlm.plots import plot_metrics

    if plot_metrics(output_dir / METRICS_FILE, output_dir / "curves.png") is None:
        print("curves.png skipped: install matplotlib (pip install charlm[plot]) for the plot")


# ------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with 'model' and 'train' sections (see configs/)")
    parser.add_argument("--data-dir", required=True, help="a corpus directory written by `charlm prepare`")
    parser.add_argument("--output-dir", required=True, help="where best/, checkpoints/ and metrics.jsonl go")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete state in OUTPUT_DIR/checkpoints (mid-epoch included)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_epochs=2 model.dropout=0.3 (a bare key works when unambiguous)")
    parser.epilog = "config keys:\n" + describe_fields()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 when done; 128 + the signal's number when SIGINT (130) or SIGTERM (143) stopped
    the run after saving a resumable state, as a shell reports a process killed by that signal."""
    config = load_config(args.config, args.overrides)
    summary = train(config, args.data_dir, args.output_dir, resume=args.resume)
    return 128 + summary["stopped_by"] if summary["stopped_by"] else 0
