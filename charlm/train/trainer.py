"""`Run`: one training run's pieces and its steps (an update, an epoch's end, a checkpoint, a record)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed
from tqdm.auto import tqdm

from charlm.averaging import WeightAverage
from charlm.checkpoint import export_model, non_finite, recover_export
from charlm.config import RunConfig, flat_items
from charlm.corpus import TextStream, load_corpus
from charlm.errors import CharlmError
from charlm.io import save_json
from charlm.model import CharLM, describe_model
from charlm.nn import detach_state
from charlm.runtime import choose_precision, configure_threads, run_record, source_commit
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
from charlm.train.processes import (
    first_non_finite,
    forget_earlier_precision,
    main_process_decides,
    on_main_process,
    probe_step,
)
from charlm.train.progress import EpochRecord, Progress
from charlm.train.recipe import TRACKING_PROJECT, build_optimizer, sequence_loss, should_decay, tracker


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
        source_commit()  # read now (then cached): the commit of the code this process loaded
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
        self.precision = main_process_decides(
            processes,
            lambda: choose_precision(
                tc.mixed_precision,
                processes.device.type,
                probe_step(model, self.stream, tc.batch_size, processes.device),
                shapes,
            ),
        )
        forget_earlier_precision(self.precision.precision)
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

        on_main_process(self.accelerator, check)
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
                key: value if isinstance(value, (int, float, str, bool)) else str(value)
                for key, value in flat_items(self.config.to_dict()).items()
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
        bad = first_non_finite(self.recent, self.accelerator)
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
