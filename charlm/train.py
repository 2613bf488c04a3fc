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
130 or 143; with several processes, an error or a kill on one of them stops the others within
seconds, without saving (:class:`charlm.runtime.StopRequest`). A NaN or infinite loss stops the run
before anything is saved or exported.

Threads and precision (:mod:`charlm.runtime`): each process uses the cores available to it divided
among the processes on the machine (``train.num_threads`` to choose), whatever the launcher set in
``OMP_NUM_THREADS``; ``train.mixed_precision=auto`` times a training step in fp32 and in bf16 (fp16 on
a GPU without bf16) on the device itself and takes the faster (:mod:`charlm.runtime.precision`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, parse_flag_from_env, set_seed
from tqdm.auto import tqdm

from charlm.averaging import WeightAverage
from charlm.checkpoint import export_model, non_finite, recover_export
from charlm.config import RunConfig, TrainConfig, describe_fields, load_config
from charlm.corpus import TextStream, load_corpus
from charlm.errors import CharlmError
from charlm.io import save_json
from charlm.model import CharLM, describe_model
from charlm.nn import detach_state
from charlm.runtime import AUTOCAST_DTYPES, Step, StopRequest, choose_precision, configure_threads, run_record
from charlm.scoring import safe_exp, score_stream
from charlm.state import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    check_same_model,
    complete_checkpoints,
    drop_later_records,
    load_average,
    load_checkpoint,
    prepare_output_dir,
    recover_checkpoints,
    save_checkpoint,
    state_bytes,
)

STOP_CHECK_EVERY = 10  # with several processes, a SIGINT/SIGTERM is agreed on every N updates
TRACKING_PROJECT = "charlm"  # the trackers' project name (TensorBoard: OUTPUT_DIR/charlm/)


def tracker(report_to: str) -> str | None:
    """``train.report_to`` as accelerate's ``log_with``; a tracker that is not installed is a
    one-line error (accelerate would skip it silently)."""
    if report_to == "none":
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    if report_to != "all" and report_to not in LOGGER_TYPE_TO_CLASS:
        raise CharlmError(
            f"train.report_to={report_to!r} is not a tracker accelerate knows; use none, all or one "
            f"of: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}"
        )
    available = {str(t) for t in get_available_trackers()}
    if report_to != "all" and report_to not in available:
        extra = " (pip install charlm[tensorboard])" if report_to == "tensorboard" else f" (pip install {report_to})"
        raise CharlmError(f"train.report_to={report_to} needs the {report_to} package, which is not installed{extra}")
    return report_to


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


def probe_step(model: CharLM, stream: TextStream, batch_size: int, device: torch.device) -> Step:
    """One training step (forward and backward of the first chunk) in a given precision, on a copy
    of ``model`` made at the first call: what ``train.mixed_precision=auto`` times."""
    copies: list[CharLM] = []

    def step(precision: str) -> None:
        if not copies:
            copies.append(copy.deepcopy(model).to(device).train())
        probe = copies[0]
        inputs, targets = (t.to(device) for t in stream.chunk(0))
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "no"):
            nll, _ = probe(inputs, probe.initial_state(batch_size), targets)
        nll.sum().backward()  # the cost of training's loss (its scale does not change the work)
        probe.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def _main_process_decides(processes: PartialState, decide: Callable[[], Any]) -> Any:
    """``decide()`` on the main process, its result (or its CharlmError) on every process; before
    the Accelerator exists (its settings are what is decided)."""
    answer = [None, None]  # result, error message
    if processes.is_main_process:
        try:
            answer[0] = decide()
        except CharlmError as err:
            answer[1] = str(err)
    if processes.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1] is not None:
        raise CharlmError(answer[1])
    return answer[0]


def _forget_earlier_precision(precision: str) -> None:
    """Let a second run in this Python process (a notebook, the tests) use another precision than
    the first: accelerate keeps one state per process and refuses a change. The process group
    (PartialState) is kept; only the AcceleratorState, which a new Accelerator rebuilds, is reset."""
    from accelerate.state import AcceleratorState

    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier is not None and earlier != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


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


@dataclass
class Progress:
    """Where a run stands; saved in every resumable state (``progress.json``) and restored on resume."""

    lr: float
    """The learning rate now."""
    epoch: int = 0
    """Completed epochs."""
    chunk: int = 0
    """Chunks done in the current epoch."""
    global_step: int = 0
    """Optimizer updates so far."""
    valid_history: list[float] = field(default_factory=list)
    """Validation perplexity after each completed epoch."""
    best_valid: float = math.inf
    epoch_nll: list[float] = field(default_factory=list)
    """Each process's summed training NLL in the current epoch (up to the last fold)."""
    epoch_train_seconds: float = 0.0
    """Training time of the current epoch (up to the last fold)."""
    average_since: int | None = None
    """train.average=asgd: the update after which the weights are averaged (None: not yet)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Progress":
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: float
    step: int
    lr: float
    train_ppl: float
    valid_ppl: float
    tokens_per_sec: float
    seconds: float
    averaged_updates: int | None = None
    """train.average=asgd: how many updates the validated weights average (the key is left out before)."""


class Run:
    """One training run's pieces (accelerator, corpus, model, optimizer, stream, progress) and its
    steps: :meth:`update` (one chunk), :meth:`end_epoch` (validate, export, record, learning-rate
    rule), :meth:`checkpoint`. :func:`train` drives them."""

    def __init__(
        self,
        config: RunConfig,
        data_dir: str | Path,
        output_dir: str | Path,
        resume: bool,
        config_name: str | None = None,
    ):
        tc = self.tc = config.train
        self.output_dir, self.resume, self.config_name = Path(output_dir), resume, config_name
        # The process group, as Accelerator below would make it (and then reuses); it may set threads.
        processes = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        self.threads = configure_threads(tc.num_threads)  # whatever OMP_NUM_THREADS the launcher set
        set_seed(tc.seed)  # the same seed everywhere: identical initial weights on every process

        # Everything that reads input comes first, so a bad corpus or config leaves no output folder.
        self.vocab, self.splits, _ = load_corpus(data_dir)
        vocab = self.vocab
        model_config = dataclasses.replace(
            config.model, vocab_size=len(vocab), char_vocab_size=len(vocab.chars), max_word_length=vocab.max_word_length
        )
        self.config = dataclasses.replace(config, model=model_config)
        model = CharLM(model_config, vocab.spellings() if model_config.uses_spellings else None)
        model.set_padding_gradient(tc.clip_padding_gradient)
        self.rows = tc.batch_size * processes.num_processes
        self.stream = TextStream(
            self.splits["train"], self.rows, tc.seq_len, processes.process_index * tc.batch_size, tc.batch_size
        )

        shapes = f"{describe_model(model_config)}, {len(vocab)} words, {tc.batch_size} x {tc.seq_len}"
        self.precision = _main_process_decides(
            processes,
            lambda: choose_precision(
                tc.mixed_precision,
                processes.device.type,
                probe_step(model, self.stream, tc.batch_size, processes.device),
                shapes,
            ),
        )
        _forget_earlier_precision(self.precision.precision)
        self.accelerator = accelerator = Accelerator(
            log_with=tracker(tc.report_to),
            project_dir=str(self.output_dir),
            mixed_precision=self.precision.precision,
            gradient_accumulation_steps=tc.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        optimizer = build_optimizer(model, tc)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.raw_model: CharLM = accelerator.unwrap_model(self.model)
        self.average = WeightAverage(self.raw_model)  # runs only with train.average=asgd, once triggered

        # Whole accumulation groups only, so every epoch ends on an optimizer update.
        self.chunks_per_epoch = self.stream.num_chunks - self.stream.num_chunks % tc.gradient_accumulation_steps
        self.updates_per_epoch = self.chunks_per_epoch // tc.gradient_accumulation_steps
        self.progress = Progress(lr=tc.lr, epoch_nll=[0.0] * accelerator.num_processes)
        self.state = self.raw_model.initial_state(tc.batch_size)  # the core's state, carried between chunks
        # Losses of the chunks since the last finiteness check: (update, loss), checked every log_every
        # updates and before anything is saved, so a NaN never reaches a checkpoint or best/.
        self.recent: list[tuple[int, torch.Tensor]] = []
        self.grad_norm: torch.Tensor | None = None  # of the last update, before clipping

    # ------------------------------------------------------------------ start

    def prepare_output(self) -> None:
        """Check the output folder before any training (writable, room for what the run keeps:
        checkpoints plus the one being written, best/ and its replacement), tidy it after a crash,
        and check that a resumed run has the architecture it was started with."""
        output_dir, tc = self.output_dir, self.tc

        def check() -> None:
            model_bytes, checkpoint_bytes = state_bytes(self.raw_model, tc)
            have = len(complete_checkpoints(output_dir)) if self.resume and output_dir.is_dir() else 0
            needed = max(tc.keep_checkpoints + 1 - have, 1) * checkpoint_bytes + 2 * model_bytes
            prepare_output_dir(output_dir, self.resume, needed)
            recover_checkpoints(output_dir)
            recover_export(output_dir / BEST_DIR)
            if self.resume and complete_checkpoints(output_dir):
                check_same_model(output_dir / RUN_CONFIG_FILE, self.config.model)

        _on_main_process(self.accelerator, check)
        self.accelerator.wait_for_everyone()

    def restore(self) -> None:
        """Continue from the newest complete state when resuming (else start afresh)."""
        accelerator, output_dir = self.accelerator, self.output_dir
        checkpoints = complete_checkpoints(output_dir) if self.resume else []
        if checkpoints:
            values, self.state = load_checkpoint(accelerator, checkpoints[-1], accelerator.device, self.state)
            self.progress = Progress.from_dict(values)
            since, step = self.progress.average_since, self.progress.global_step
            if since is not None and step > since:  # averaged SGD was running: its mean of step - since updates
                self.average.load_state_dict(load_average(checkpoints[-1]), step - since)
            if accelerator.is_main_process:
                print(
                    f"resuming from {checkpoints[-1]} (epoch {self.progress.epoch + 1}, "
                    f"update {self.progress.global_step})"
                )
                drop_later_records(output_dir / METRICS_FILE, self.progress.global_step)
        elif self.resume and accelerator.is_main_process:
            print(f"no complete checkpoint in {output_dir / CHECKPOINTS_DIR}; starting from scratch")
            drop_later_records(output_dir / METRICS_FILE, 0)  # records of a run killed before its first state
        self.set_lr(self.progress.lr)

    def start_tracking(self) -> None:
        """Open the trackers of ``train.report_to`` (after the output folder was checked), with the
        config as hyperparameters (lists written as text: trackers take scalars)."""
        if self.tc.report_to != "none":
            flat = {
                f"{section}.{key}": value if isinstance(value, (int, float, str, bool)) else str(value)
                for section, values in self.config.to_dict().items()
                for key, value in values.items()
            }
            self.accelerator.init_trackers(TRACKING_PROJECT, config=flat)

    def print_summary(self) -> None:
        if not self.accelerator.is_main_process:
            return
        save_json(self.config.to_dict(), self.output_dir / RUN_CONFIG_FILE)
        tc, mc, accelerator = self.tc, self.config.model, self.accelerator
        print(
            f"charlm train: {self.raw_model.num_parameters():,} parameters | {describe_model(mc)} | vocab "
            f"{len(self.vocab):,} words, {len(self.vocab.chars)} chars, spellings of {self.vocab.max_word_length}\n"
            f"  {accelerator.num_processes} process(es) on {accelerator.device}, {self.threads} thread(s) each, "
            f"precision {self.precision.describe()}\n"
            f"  {self.rows} rows x {tc.seq_len} steps = {self.rows * tc.seq_len:,} tokens "
            f"per chunk, {tc.gradient_accumulation_steps} chunk(s) per update | {self.updates_per_epoch:,} updates per "
            f"epoch, {tc.max_epochs} epochs" + (f", at most {tc.max_steps} updates" if tc.max_steps else ""),
            flush=True,
        )

    # ------------------------------------------------------------------ steps

    def set_lr(self, lr: float) -> None:
        self.progress.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, k: int) -> torch.Tensor:
        """Train on chunk ``k`` of the epoch (an optimizer update at the end of each accumulation
        group); returns the chunk's loss (detached)."""
        accelerator, tc = self.accelerator, self.tc
        inputs, targets = (t.to(accelerator.device) for t in self.stream.chunk(k))
        with accelerator.accumulate(self.model):
            nll, state = self.model(inputs, self.state, targets)  # [B, T] per-token losses
            loss = sequence_loss(nll)
            accelerator.backward(loss)
            if accelerator.sync_gradients and tc.grad_clip > 0:
                self.grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad()
            if tc.clip_padding_gradient and accelerator.sync_gradients:
                self.raw_model.zero_padding_embedding()  # the update moved it; the reference resets it
        self.state = detach_state(state)
        loss = loss.detach()
        self.recent.append((self.progress.global_step + 1, loss))
        self.progress.chunk = k + 1
        return loss

    def check_finite(self, epoch: int, weights: bool = False) -> None:
        bad = _first_non_finite(self.recent, self.accelerator)
        bad_weights = non_finite(self.raw_model.state_dict()) if weights and not bad else []
        if bad or bad_weights:
            newest = complete_checkpoints(self.output_dir)
            kept = f"the last good state is {newest[-1]}" if newest else "no state was saved before it"
            what = (
                f"training loss became non-finite at update {bad}"
                if bad
                else f"model weights became non-finite by update {self.progress.global_step}"
            )
            raise CharlmError(
                f"{what} (epoch {epoch}); stopped without saving it, {kept}; lower train.lr "
                "or set train.grad_clip and train again"
            )

    def checkpoint(self, epoch: int) -> None:
        self.check_finite(epoch, weights=True)
        save_checkpoint(
            self.accelerator,
            self.output_dir,
            dataclasses.asdict(self.progress),
            self.state,
            self.tc.keep_checkpoints,
            self.average.mean,
        )

    def fold_counters(self, nll_sum: torch.Tensor, train_start: float) -> None:
        """Add the loss summed since the last fold (from every process) and the time to the
        progress, which is what a checkpoint records, so a resumed epoch reports the same train
        perplexity."""
        everyone = self.accelerator.gather(nll_sum.reshape(1)).cpu().tolist()  # [num_processes]
        self.progress.epoch_nll = [a + b for a, b in zip(self.progress.epoch_nll, everyone)]
        self.progress.epoch_train_seconds += time.time() - train_start

    def after_update(self) -> None:
        """Count the update; with averaged SGD running, add the new weights to the average."""
        self.progress.global_step += 1
        if self.progress.average_since is not None:
            self.average.add()

    def end_epoch(self, epoch: int, epoch_start: float, cut_short: bool) -> bool:
        """Validate, export best/, append the metrics record (with the averaged weights once averaged
        SGD runs), then (for a completed epoch) apply the learning-rate rule and start a fresh epoch.
        Returns whether the run is now cut short (the learning rate fell below train.min_lr)."""
        with self.average.applied():
            valid_ppl = self.validate_and_record(epoch, epoch_start, cut_short)
        if cut_short:
            return True
        tc, progress, accelerator = self.tc, self.progress, self.accelerator
        progress.valid_history.append(valid_ppl)  # a completed epoch: the learning-rate rule, then a fresh epoch
        if should_decay(progress.valid_history, tc) and progress.average_since is None:
            if tc.average == "asgd":
                progress.average_since = progress.global_step  # average from the next update on, at this lr
            else:
                self.set_lr(progress.lr * tc.lr_decay)
        progress.epoch, progress.chunk = epoch, 0
        progress.epoch_nll, progress.epoch_train_seconds = [0.0] * accelerator.num_processes, 0.0
        return bool(tc.min_lr) and progress.lr < tc.min_lr

    def validate_and_record(self, epoch: int, epoch_start: float, cut_short: bool) -> float:
        """Score the validation split with the model's weights as they are, export best/ if it
        improved, append the metrics record; returns the validation perplexity."""
        tc, progress, accelerator = self.tc, self.progress, self.accelerator
        train_tokens = progress.chunk * self.rows * tc.seq_len
        train_ppl = safe_exp(sum(progress.epoch_nll) / max(train_tokens, 1))
        valid_ppl = score_stream(
            self.raw_model,
            self.splits["valid"],
            self.vocab.eos_id,
            tc.eval_chunk_len,
            progress=accelerator.is_local_main_process,
        ).perplexity
        if not math.isfinite(valid_ppl):
            raise CharlmError(f"validation perplexity is not finite in epoch {epoch}; nothing exported. Lower train.lr")
        record = EpochRecord(
            epoch=round(progress.epoch + progress.chunk / self.chunks_per_epoch, 4) if cut_short else epoch,
            step=progress.global_step,
            lr=progress.lr,
            train_ppl=round(train_ppl, 3),
            valid_ppl=round(valid_ppl, 3),
            tokens_per_sec=round(train_tokens / max(progress.epoch_train_seconds, 1e-9), 1),
            seconds=round(time.time() - epoch_start, 1),
            averaged_updates=self.average.count if progress.average_since is not None else None,
        )
        improved = valid_ppl < progress.best_valid
        progress.best_valid = min(progress.best_valid, valid_ppl)
        if tc.report_to != "none":
            self.accelerator.log(
                {"valid/ppl": valid_ppl, "train/epoch_ppl": train_ppl, "epoch": record.epoch}, step=progress.global_step
            )
        if accelerator.is_main_process:
            self.write_record(record, improved)
        return valid_ppl

    def write_record(self, record: EpochRecord, improved: bool) -> None:
        """Main process: export best/ if validation improved, append the record, print it."""
        if improved:
            identity = run_record(
                config=self.config_name,
                parameters=self.raw_model.num_parameters(),
                epoch=record.epoch,
                seed=self.tc.seed,
                precision=self.precision.name,
                device_type=self.accelerator.device.type,
                processes=self.accelerator.num_processes,
            )
            export_model(
                self.raw_model,
                self.vocab,
                self.output_dir / BEST_DIR,
                extra={
                    "train": dataclasses.asdict(self.tc),
                    "valid_ppl": record.valid_ppl,
                    "epoch": record.epoch,
                    "run": identity,
                },
            )
        try:
            with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                values = {key: value for key, value in dataclasses.asdict(record).items() if value is not None}
                f.write(json.dumps(values) + "\n")
        except OSError as err:
            raise CharlmError(
                f"could not write {self.output_dir / METRICS_FILE} ({err.strerror}); is the disk "
                "full? free some space and run again with --resume"
            ) from None
        averaged = f" (weights averaged over {record.averaged_updates:,} updates)" if record.averaged_updates else ""
        tqdm.write(
            f"epoch {record.epoch}: train ppl {record.train_ppl:.2f} | valid ppl {record.valid_ppl:.2f}"
            f"{' (best)' if improved else ''}{averaged} | lr {record.lr:g} | "
            f"{record.tokens_per_sec:,.0f} tok/s | {record.seconds:.0f} s"
        )

    def report(self, bar, k: int, nll_sum: torch.Tensor, train_start: float) -> None:
        """The running train perplexity (this epoch, this process), learning rate and tokens/s: on
        the progress bar, and to the trackers with the last update's gradient norm."""
        tc, progress = self.tc, self.progress
        done_tokens = (k + 1) * tc.batch_size * tc.seq_len
        mean_nll = (progress.epoch_nll[self.accelerator.process_index] + float(nll_sum)) / done_tokens
        elapsed = progress.epoch_train_seconds + time.time() - train_start
        tokens_per_sec = (k + 1) * self.rows * tc.seq_len / max(elapsed, 1e-9)
        bar.set_postfix(
            ppl=f"{safe_exp(min(mean_nll, 50)):.1f}",
            lr=f"{progress.lr:g}",
            tok_s=f"{tokens_per_sec:,.0f}",
            refresh=False,
        )
        if tc.report_to != "none":
            values = {
                "train/loss": mean_nll,
                "train/ppl": safe_exp(mean_nll),
                "train/lr": progress.lr,
                "train/tokens_per_sec": tokens_per_sec,
            }
            if self.grad_norm is not None:
                values["train/grad_norm"] = float(self.grad_norm)
            self.accelerator.log(values, step=progress.global_step)


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
                        stopped_by = _agree(accelerator, stop.signum, "max")
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
                stopped_by = _agree(accelerator, stop.signum, "max")

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
