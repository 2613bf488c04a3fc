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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from accelerate.utils import load as accelerate_load
from accelerate.utils.constants import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from charlm.checkpoint import export_model, non_finite, recover_export
from charlm.config import RunConfig, TrainConfig, describe_fields, load_config, save_json
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.model import CharLM, detach_hidden
from charlm.scoring import score_stream

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.json"
COMPLETE_MARKER = "COMPLETE"


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


# ------------------------------------------------------------------------------ checkpoints


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Resumable states, oldest first; only those whose writing finished (marker present)."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and "." not in p.name and (p / COMPLETE_MARKER).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


def recover_checkpoints(output_dir: Path) -> None:
    """Tidy ``checkpoints/`` after a crash (main process, before resuming).

    ``step-N.tmp`` with its marker is a state whose writing finished but whose rename was cut:
    it is put in place if ``step-N`` is missing. Every other ``.tmp`` or ``.old`` folder, and any
    ``step-N`` without its marker (a deletion cut short), is removed.
    """
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        final = root / path.name.split(".")[0]
        if path.name.endswith(".tmp") and (path / COMPLETE_MARKER).is_file() and not final.exists():
            path.rename(final)
    for path in root.iterdir():
        if path.is_dir() and ("." in path.name or not (path / COMPLETE_MARKER).is_file()):
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, progress: dict[str, Any], hidden, keep: int) -> None:
    """Write a resumable state: to ``step-N.tmp``, then a completeness marker, then rename.

    A crash at any moment leaves the newest complete state readable (see :func:`recover_checkpoints`);
    a failed write (a full disk) is a CharlmError that leaves the previous states as they were.
    """
    root = output_dir / CHECKPOINTS_DIR
    final = root / f"step-{progress['global_step']:09d}"
    tmp = root / (final.name + ".tmp")
    old = root / (final.name + ".old")
    try:
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)  # model, optimizer, RNG of each process
        save_file({"h": hidden[0].detach().cpu().contiguous(), "c": hidden[1].detach().cpu().contiguous()},
                  str(tmp / f"hidden_{accelerator.process_index}.safetensors"))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_json(progress, tmp / PROGRESS_FILE)
            (tmp / COMPLETE_MARKER).write_text("complete\n")
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save reports a failed write as RuntimeError
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        newest = complete_checkpoints(output_dir)
        kept = f"the newest complete state, {newest[-1]}, is intact" if newest else "no earlier state was saved"
        raise CharlmError(f"could not write the checkpoint {tmp} ({_first_line(err)}); is the disk full? {kept}; "
                          "free some space and run again with --resume") from None
    if accelerator.is_main_process:
        if final.exists():  # the same update saved again (a resumed run): swap, never delete first
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        for stale in complete_checkpoints(output_dir)[:-keep]:
            (stale / COMPLETE_MARKER).unlink(missing_ok=True)  # first: a deletion cut short leaves no "complete" state
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, directory: Path, device, hidden_shape=None) -> tuple[dict[str, Any], tuple]:
    """Restore model, optimizer and RNG states from a checkpoint; returns (progress, hidden state).

    Nothing is unpickled beyond tensors: the weights and hidden states are safetensors, and
    accelerate reads the optimizer and RNG files with ``torch.load(weights_only=True)``. A missing,
    corrupt or planted file is a one-line CharlmError.
    """
    rank = accelerator.process_index
    hidden_file = directory / f"hidden_{rank}.safetensors"
    if not hidden_file.is_file():
        raise CharlmError(f"{directory} was saved by a run with fewer processes; resume with the same number of processes")
    rng_file = directory / f"{RNG_STATE_NAME}_{rank}.pkl"
    needed = [directory / f"{SAFE_WEIGHTS_NAME}", directory / f"{OPTIMIZER_NAME}.bin", rng_file, directory / PROGRESS_FILE]
    missing = [p.name for p in needed if not p.is_file()]
    fix = f"delete {directory} to resume from the state before it, or start a new run"
    if missing:
        raise CharlmError(f"checkpoint {directory} is incomplete (no {', '.join(missing)}); {fix}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the way to refusing a file
            warnings.simplefilter("ignore")
            # accelerate skips an unreadable RNG file with a log message; a resumed run would then
            # differ from an uninterrupted one, so read it first (the same safe way) to refuse it.
            rng = accelerate_load(rng_file)
            if not isinstance(rng, dict) or "torch_manual_seed" not in rng:
                raise ValueError(f"{rng_file.name} does not hold random-number-generator states")
            accelerator.load_state(str(directory))
        progress = json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8"))
        if not isinstance(progress, dict) or not {"epoch", "chunk", "global_step", "lr"} <= set(progress):
            raise ValueError(f"{PROGRESS_FILE} is not a training progress record")
        state = load_file(str(hidden_file))
        hidden = (state["h"].to(device), state["c"].to(device))
    except pickle.UnpicklingError:
        raise CharlmError(f"refusing to load checkpoint {directory}: a file in it holds pickled objects other than "
                          f"tensors, which could run code; {fix}") from None
    except Exception as err:  # each reader raises its own kind of error for a truncated or foreign file
        raise CharlmError(f"cannot load checkpoint {directory} ({_first_line(err)}); {fix}") from None
    if hidden_shape is not None and tuple(hidden[0].shape) != tuple(hidden_shape):
        raise CharlmError(f"checkpoint {directory} was saved with another train.batch_size or model size (hidden state "
                          f"{tuple(hidden[0].shape)}, this run {tuple(hidden_shape)}); resume with the same config")
    return progress, hidden


def _first_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def drop_later_records(metrics: Path, step: int) -> None:
    """Forget metrics records written after the state we resume from (a run killed between
    writing an epoch's record and saving its state redoes that epoch and writes it again)."""
    if not metrics.is_file():
        return
    lines = metrics.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _record_step(line) <= step]
    if len(kept) != len(lines):
        tmp = metrics.with_name(metrics.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(metrics)


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line torn by a kill mid-write
        return math.inf


# ------------------------------------------------------------------------------ the run


def prepare_output_dir(output_dir: Path, resume: bool) -> None:
    """Fail before any work if the output directory is unusable."""
    if output_dir.exists() and any(output_dir.iterdir()) and not resume:
        raise CharlmError(
            f"output directory {output_dir} already holds files; pass --resume to continue that run "
            "or choose another --output-dir"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise CharlmError(f"cannot write to output directory {output_dir} ({err.strerror}); choose another --output-dir") from None


def train(config: RunConfig, data_dir: str | Path, output_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train a model; returns a summary (best validation perplexity, steps, seconds)."""
    tc = config.train
    output_dir = Path(output_dir)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision or None,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, resume)
    accelerator.wait_for_everyone()
    set_seed(tc.seed)  # the same seed everywhere: identical initial weights on every process

    vocab, splits, _ = load_corpus(data_dir)
    model_config = dataclasses.replace(
        config.model,
        vocab_size=len(vocab),
        char_vocab_size=len(vocab.chars),
        max_word_length=vocab.max_word_length,
    )
    config = dataclasses.replace(config, model=model_config)
    model = CharLM(model_config, vocab.spellings() if model_config.input != "word" else None)
    optimizer = build_optimizer(model, tc)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: CharLM = accelerator.unwrap_model(model)

    rows = tc.batch_size * accelerator.num_processes
    stream = TextStream(splits["train"], rows, tc.seq_len, accelerator.process_index * tc.batch_size, tc.batch_size)
    # Whole accumulation groups only, so every epoch ends on an optimizer update.
    chunks_per_epoch = stream.num_chunks - stream.num_chunks % tc.gradient_accumulation_steps
    updates_per_epoch = chunks_per_epoch // tc.gradient_accumulation_steps

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
        progress, hidden = load_checkpoint(accelerator, checkpoints[-1], accelerator.device)
        if accelerator.is_main_process:
            print(f"resuming from {checkpoints[-1]} (epoch {progress['epoch'] + 1}, update {progress['global_step']})")
            drop_later_records(output_dir / METRICS_FILE, progress["global_step"])
    elif resume and accelerator.is_main_process:
        print(f"no complete checkpoint in {output_dir / CHECKPOINTS_DIR}; starting from scratch")
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
            f"epoch, {tc.max_epochs} epochs" + (f", at most {tc.max_steps} updates" if tc.max_steps else "")
        )

    start_time = time.time()
    cut_short = False
    while progress["epoch"] < tc.max_epochs and not cut_short:
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
            hidden = detach_hidden(hidden)
            nll_sum += loss.detach().double() * tc.batch_size  # summed over the chunk's B*T tokens
            progress["chunk"] = k + 1
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            progress["global_step"] += 1
            step = progress["global_step"]
            if step % tc.log_every == 0 or k + 1 == chunks_per_epoch:
                done_tokens = (k + 1) * tc.batch_size * tc.seq_len
                mean_nll = (progress["epoch_nll"][accelerator.process_index] + float(nll_sum)) / done_tokens
                if not math.isfinite(mean_nll):
                    raise CharlmError(
                        f"training loss became non-finite at update {step} (epoch {epoch}); the last good state is "
                        f"in {output_dir / CHECKPOINTS_DIR}: lower train.lr or train.grad_clip and --resume"
                    )
                elapsed = progress["epoch_train_seconds"] + time.time() - train_start
                bar.set_postfix(ppl=f"{math.exp(min(mean_nll, 50)):.1f}", lr=f"{progress['lr']:g}",
                                tok_s=f"{(k + 1) * rows * tc.seq_len / max(elapsed, 1e-9):,.0f}", refresh=False)
            cut_short = bool(tc.max_steps) and step >= tc.max_steps
            if cut_short:
                break
            if tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0 and k + 1 < chunks_per_epoch:
                _fold_counters(progress, nll_sum, train_start, accelerator)
                nll_sum.zero_()
                train_start = time.time()
                save_checkpoint(accelerator, output_dir, progress, hidden, tc.keep_checkpoints)
        bar.close()
        _fold_counters(progress, nll_sum, train_start, accelerator)

        # ---- end of the epoch (or of a run cut short by max_steps): validate, export, record
        train_tokens = progress["chunk"] * rows * tc.seq_len
        train_ppl = math.exp(sum(progress["epoch_nll"]) / max(train_tokens, 1))
        valid_ppl = score_stream(raw_model, splits["valid"], vocab.eos_id, tc.eval_chunk_len,
                                 progress=accelerator.is_local_main_process).perplexity
        if not math.isfinite(valid_ppl):
            raise CharlmError(f"validation perplexity is not finite in epoch {epoch}; nothing exported. Lower train.lr")
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
                export_model(raw_model, vocab, output_dir / BEST_DIR,
                             extra={"train": dataclasses.asdict(tc), "valid_ppl": valid_ppl, "epoch": record["epoch"]})
            with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(
                f"epoch {record['epoch']}: train ppl {train_ppl:.2f} | valid ppl {valid_ppl:.2f}"
                f"{' (best)' if improved else ''} | lr {progress['lr']:g} | {record['tokens_per_sec']:,.0f} tok/s | "
                f"{record['seconds']:.0f} s"
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
        save_checkpoint(accelerator, output_dir, progress, hidden, tc.keep_checkpoints)

    summary = {
        "best_valid_ppl": progress["best_valid"],
        "updates": progress["global_step"],
        "seconds": round(time.time() - start_time, 1),
        "output_dir": str(output_dir),
    }
    if accelerator.is_main_process:
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
    config = load_config(args.config, args.overrides)
    train(config, args.data_dir, args.output_dir, resume=args.resume)
    return 0
