"""The resumable state of a training run, and the output directory that holds it.

    OUTPUT_DIR/
      checkpoints/step-N/   accelerate's save_state (model.safetensors, optimizer.bin, RNG states
                            random_states_R.pkl), hidden_R.safetensors (each process's carried core
                            state: its named tensors), progress.json (epoch, chunk, update, learning rate, history),
                            average.safetensors (the weight average of train.average=asgd, once it runs)
                            and the COMPLETE marker, written last
      best/                 the exported model (charlm.checkpoint)
      metrics.jsonl         one record per epoch

A state is written to ``step-N.tmp``, marked complete, then renamed; :func:`recover_checkpoints`
tidies what a kill in the middle of that left behind, and :func:`complete_checkpoints` only ever
returns finished states. Nothing here unpickles code: the pickled optimizer and RNG files are read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils.constants import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from charlm.config import ModelConfig, TrainConfig, config_from_dict, flat_items
from charlm.errors import CharlmError, error_reason
from charlm.io import atomic_write_text, save_json

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.json"
RUN_CONFIG_FILE = "config.json"  # the run's whole config (model and train), as it was started
COMPLETE_MARKER = "COMPLETE"
AVERAGE_FILE = "average.safetensors"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Resumable states, oldest first; only those whose writing finished (marker present)."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
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


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    progress: dict[str, Any],
    state: dict[str, torch.Tensor],
    keep: int,
    average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a resumable state: to ``step-N.tmp``, then a completeness marker, then rename.
    ``average``: the weight average to keep with it (the same on every process; empty: none).

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
        _save_tensors(state, tmp / f"hidden_{accelerator.process_index}.safetensors")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if average:
                _save_tensors(average, tmp / AVERAGE_FILE)
            save_json(progress, tmp / PROGRESS_FILE)
            (tmp / COMPLETE_MARKER).write_text("complete\n")
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save reports a failed write as RuntimeError
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        newest = complete_checkpoints(output_dir)
        kept = f"the newest complete state, {newest[-1]}, is intact" if newest else "no earlier state was saved"
        raise CharlmError(
            f"could not write the checkpoint {tmp} ({error_reason(err)}); is the disk full? {kept}; "
            "free some space and run again with --resume"
        ) from None
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


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(path))


def read_data_pickle(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``, also allowing the numpy arrays and dtypes of RNG
    states: data only, never code. A pickle that references anything else (a planted file) raises
    ``pickle.UnpicklingError``."""
    if not hasattr(torch.serialization, "safe_globals"):
        raise CharlmError(
            f"resuming needs torch >= 2.5 to read {path.name} without running code from it "
            f"(installed: {torch.__version__}); upgrade torch"
        )
    np_core = getattr(np, "_core", None) or np.core
    allowed = [
        np_core.multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        codecs.encode,
        *{type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.uint8)},
    ]
    with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
        warnings.simplefilter("ignore")  # torch warns about pickle protocols on the way to refusing a file
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(
    accelerator: Accelerator, directory: Path, device, expected_state: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model, optimizer and RNG states from a checkpoint; returns (progress, core state).

    ``expected_state`` (the model's initial state) gives the names and shapes the saved state must have.

    Nothing that could run code is unpickled: the weights and hidden states are safetensors, and
    the two pickled files accelerate reads (optimizer, RNG states) are first read here with
    ``torch.load(weights_only=True)``, which allows tensors, numbers and numpy arrays only, whatever
    the accelerate version does next. A missing, corrupt or planted file is a one-line CharlmError.
    """
    rank = accelerator.process_index
    hidden_file = directory / f"hidden_{rank}.safetensors"
    if not hidden_file.is_file():
        raise CharlmError(
            f"{directory} was saved by a run with fewer processes; resume with the same number of processes"
        )
    rng_file = directory / f"{RNG_STATE_NAME}_{rank}.pkl"
    needed = [directory / SAFE_WEIGHTS_NAME, directory / f"{OPTIMIZER_NAME}.bin", rng_file, directory / PROGRESS_FILE]
    missing = [p.name for p in needed if not p.is_file()]
    fix = f"delete {directory} to resume from the state before it, or start a new run"
    if missing:
        raise CharlmError(f"checkpoint {directory} is incomplete (no {', '.join(missing)}); {fix}")
    try:
        # (accelerate also skips an unreadable RNG file with a mere log message, and a resumed run
        # would then differ from an uninterrupted one: reading it here first refuses it.)
        read_data_pickle(directory / f"{OPTIMIZER_NAME}.bin")
        rng = read_data_pickle(rng_file)
        if not isinstance(rng, dict) or "torch_manual_seed" not in rng:
            raise ValueError(f"{rng_file.name} does not hold random-number-generator states")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            accelerator.load_state(str(directory))
        progress = json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8"))
        if not isinstance(progress, dict) or not {"epoch", "chunk", "global_step", "lr"} <= set(progress):
            raise ValueError(f"{PROGRESS_FILE} is not a training progress record")
        state = {name: tensor.to(device) for name, tensor in load_file(str(hidden_file)).items()}
    except pickle.UnpicklingError:
        raise CharlmError(
            f"refusing to load checkpoint {directory}: a file in it holds pickled objects other than "
            f"tensors, which could run code; {fix}"
        ) from None
    except Exception as err:  # each reader raises its own kind of error for a truncated or foreign file
        raise CharlmError(f"cannot load checkpoint {directory} ({error_reason(err)}); {fix}") from None
    if expected_state is not None and _shapes(state) != _shapes(expected_state):
        raise CharlmError(
            f"checkpoint {directory} was saved with another train.batch_size or model (core state "
            f"{_shapes(state)}, this run {_shapes(expected_state)}); resume with the same config"
        )
    return progress, state


def load_average(directory: Path) -> dict[str, torch.Tensor]:
    """The weight average saved in a resumable state (see :func:`save_checkpoint`)."""
    path = directory / AVERAGE_FILE
    try:
        return load_file(str(path))
    except Exception as err:  # missing, truncated or foreign
        raise CharlmError(
            f"cannot load the weight average {path} ({error_reason(err)}); delete {directory} to resume "
            "from the state before it, or start a new run"
        ) from None


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in sorted(state.items())}


def check_same_model(run_config: Path, model: ModelConfig) -> None:
    """A resumed run must build the model its states were saved from: name the first field that
    differs, and the run's own config to resume with."""
    try:
        saved = config_from_dict(json.loads(run_config.read_text(encoding="utf-8"))).model
    except (OSError, ValueError, CharlmError):
        return  # no readable record of the old config: the state's own checks still apply
    saved_items, asked = flat_items(dataclasses.asdict(saved)), flat_items(dataclasses.asdict(model))
    differ = [key for key in {**saved_items, **asked} if saved_items.get(key) != asked.get(key)]
    if differ:
        name = differ[0]
        raise CharlmError(
            f"cannot resume: the run in {run_config.parent} was trained with "
            f"model.{name}={saved_items.get(name)!r}, this command asks for {asked.get(name)!r}"
            + (f" ({len(differ) - 1} more field(s) differ)" if len(differ) > 1 else "")
            + f"; resume with the run's own config (--config {run_config}) or start a new --output-dir"
        )


def drop_later_records(metrics: Path, step: int) -> None:
    """Forget metrics records written after the state we resume from (a run killed between
    writing an epoch's record and saving its state redoes that epoch and writes it again)."""
    if not metrics.is_file():
        return
    lines = metrics.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _record_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write_text(metrics, "".join(line + "\n" for line in kept))


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line torn by a kill mid-write
        return math.inf


# ------------------------------------------------------------------------------ the run


def prepare_output_dir(output_dir: Path, resume: bool, needed_bytes: int = 0) -> None:
    """Fail before any work if the output directory is unusable: not writable, or too little free
    space for ``needed_bytes`` (the checkpoints and exports the run will keep)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise CharlmError(f"output directory {output_dir} is a file; choose another --output-dir")
    if output_dir.exists() and any(output_dir.iterdir()) and not resume:
        raise CharlmError(
            f"output directory {output_dir} already holds files; pass --resume to continue that run "
            "or choose another --output-dir"
        )
    existing = next(p for p in (output_dir, *output_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free if existing.is_dir() else None
    if free is not None and free < needed_bytes:
        raise CharlmError(
            f"not enough free space for {output_dir}: its checkpoints and exported model need about "
            f"{needed_bytes / 1e6:,.1f} MB, {free / 1e6:,.1f} MB are free; free some space, lower "
            "train.keep_checkpoints or choose another --output-dir"
        )
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise CharlmError(
            f"cannot write to output directory {output_dir} ({err.strerror}); choose another --output-dir"
        ) from None


def state_bytes(model: torch.nn.Module, tc: TrainConfig) -> tuple[int, int]:
    """Approximate sizes of (an exported model, a checkpoint): the weights, and the weights with the
    optimizer's per-parameter buffers (Adam: two; SGD: one with momentum, else none)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    slots = 2 if tc.optimizer in ("adam", "adamw") else int(tc.momentum > 0)
    return weights, weights * (1 + slots) + (1 << 16)
