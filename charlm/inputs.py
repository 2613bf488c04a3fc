"""What the inference commands share (perplexity, generate, neighbors, gates, embed): their defaults,
the model, the text to read, the device and the main-process rule."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.errors import CharlmError
from charlm.hub import from_pretrained
from charlm.model import CharLM
from charlm.runtime import configure_threads
from charlm.text import Vocabulary

SPLITS = ("test", "valid", "train")


@dataclass(frozen=True)
class EvalDefaults:
    """The defaults of ``charlm perplexity`` (argparse reads them from here)."""

    split: str = "test"
    """Which split of a prepared corpus to score."""
    chunk_len: int = 2048
    """Tokens per LSTM call; speed only, the number does not depend on it."""
    columns: int = 1
    """1: the exact number. N > 1: the approximation of N columns scored side by side."""
    warmup: int = 300
    """With columns > 1: tokens each column reads, unscored, before its piece (README: difference)."""
    device: str = "cpu"
    """Where the model runs: 'cpu', 'cuda' or 'cuda:N'."""
    num_threads: int = 0
    """CPU threads (0: all the cores available to the process)."""


DEFAULTS = EvalDefaults()


# ----------------------------------------------------------------------------- shared inputs


def resolve_device(name: str) -> torch.device:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'``; asking for CUDA where there is none is an error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CharlmError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharlmError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise CharlmError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    return device


def load_checkpoint(directory: str | Path, device: str = DEFAULTS.device) -> tuple[CharLM, Vocabulary]:
    """The exported model in ``directory`` (or behind a hub id) on ``device``, in eval mode."""
    return from_pretrained(directory, resolve_device(device))


def read_text_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, split as ``charlm prepare`` splits them (so a
    file scores the same as the prepared split made from it); one-line errors otherwise."""
    from data_prep.sources import read_text_file

    return read_text_file(path, flag="--text-file")


def text_file_ids(vocab: Vocabulary, path: str | Path) -> np.ndarray:
    """Word ids of a raw text file, tokenized as the model's corpus was (unknown words -> <unk>)."""
    ids = np.asarray(vocab.encode_lines(read_text_lines(path)), dtype=np.int64)
    if ids.size == 0:
        raise CharlmError(f"{path} holds no tokens the model's tokenizer can read")
    return ids


def check_same_vocabulary(model_vocab: Vocabulary, corpus_vocab: Vocabulary, data_dir: str | Path) -> None:
    if list(model_vocab.words) != list(corpus_vocab.words):
        raise CharlmError(
            f"the corpus in {data_dir} has a different vocabulary ({len(corpus_vocab)} words) from the model's "
            f"({len(model_vocab)} words); score a corpus prepared with this model's vocabulary, or use --text-file"
        )


def corpus_split_ids(vocab: Vocabulary, data_dir: str | Path, split: str) -> np.ndarray:
    """Word ids of one split of a prepared corpus, refused if its vocabulary is not ``vocab``."""
    from charlm.corpus import load_corpus  # the corpus reader is only needed for --data-dir

    if split not in SPLITS:
        raise CharlmError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    corpus_vocab, splits, _ = load_corpus(data_dir)
    check_same_vocabulary(vocab, corpus_vocab, data_dir)
    ids = np.asarray(splits[split], dtype=np.int64)
    if ids.size == 0:
        raise CharlmError(f"the {split} split of {data_dir} is empty")
    return ids


def input_ids(vocab: Vocabulary, args: argparse.Namespace) -> np.ndarray:
    """The stream named by ``--text-file`` or ``--data-dir``/``--split``."""
    if args.text_file is not None:
        return text_file_ids(vocab, args.text_file)
    return corpus_split_ids(vocab, args.data_dir, args.split)


def process_state():
    """accelerate's view of this process (a single process unless started by a launcher).

    Processes started on a machine without CUDA (or with ``ACCELERATE_USE_CPU``) join a CPU
    (gloo) group; ``PartialState`` alone would not read that flag, ``Accelerator`` does.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def main_process_only(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command on the main process only; under ``accelerate launch`` the others wait for it.

    Used by every "use a model" command: their results are exact single-stream computations, so
    several processes would only repeat them (and print or write them several times).
    """

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        state = process_state()
        try:
            if not state.is_main_process:
                return 0
            configure_threads(getattr(args, "num_threads", 0), local_processes=1)  # the others only wait
            return run(args)
        finally:
            state.wait_for_everyone()

    return wrapper


def add_source_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--text-file F`` or ``--data-dir D --split S`` (shared with ``charlm gates``)."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument(
        "--text-file", metavar="F", help="a raw UTF-8 text file, tokenized with the model's own tokenizer"
    )
    source.add_argument(
        "--data-dir", metavar="D", help="a corpus prepared by `charlm prepare` with the same vocabulary as the model"
    )
    parser.add_argument("--split", choices=SPLITS, default=DEFAULTS.split, help="which split of --data-dir to read")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="the model: a directory (the best/ folder of a training run) or a Hugging Face hub id (owner/name)",
    )
    parser.add_argument("--device", default=DEFAULTS.device, help="where the model runs: cpu, cuda or cuda:N")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=DEFAULTS.num_threads,
        metavar="N",
        help="CPU threads (0: all the cores available to the process, whatever OMP_NUM_THREADS says)",
    )
