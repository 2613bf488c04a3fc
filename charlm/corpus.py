"""Reading a prepared corpus directory (written by ``charlm prepare``).

A prepared corpus is a directory that explains itself::

    vocab.json        words, characters, spelling length, tokenizer settings (see charlm.text)
    tokenizer.json    the word-level tokenizer (word mode), or spm.model (sentencepiece mode)
    train.npy         word ids of the training split, int32, <eos> after each line
    valid.npy         the same for the validation split
    test.npy          the same for the test split
    meta.json         sizes, token and <unk> counts per split, the source and the options used

The arrays hold word ids only; the model spells words through ``Vocabulary.spellings()``.
:class:`TextStream` serves training chunks straight from the memory-mapped array.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from charlm.errors import CharlmError
from charlm.text import Vocabulary

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
META_FILE = "meta.json"
CORPUS_FORMAT = "charlm-corpus"
CORPUS_FORMAT_VERSION = 1
ID_DTYPE = np.int32


def split_file(split: str) -> str:
    """The file name of a split's word-id array."""
    return f"{split}.npy"


def read_meta(directory: str | os.PathLike) -> dict:
    """The ``meta.json`` of a prepared corpus; CharlmError if it is missing or not a corpus's."""
    path = Path(directory) / META_FILE
    fix = f"prepare it with `charlm prepare --output-dir {directory} ...`"
    if not path.is_file():
        raise CharlmError(f"{path} not found: {directory} is not a prepared corpus; {fix}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise CharlmError(f"{path} is not readable JSON ({err}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != CORPUS_FORMAT:
        raise CharlmError(f"{path} does not describe a charlm corpus; {fix}")
    return meta


def load_corpus(
    directory: str | os.PathLike,
) -> tuple[Vocabulary, dict[str, np.ndarray], dict]:
    """Open a prepared corpus: (vocabulary, {split: memory-mapped int32 ids}, meta).

    The arrays are opened read-only with ``mmap_mode="r"``: nothing is read until used.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CharlmError(
            f"corpus directory {directory} does not exist; prepare it with "
            f"`charlm prepare --output-dir {directory} ...`"
        )
    meta = read_meta(directory)
    vocab = Vocabulary.load(directory)
    splits = {}
    for split in SPLITS:
        path = directory / split_file(split)
        fix = f"prepare the corpus again with `charlm prepare --output-dir {directory} ...`"
        if not path.is_file():
            raise CharlmError(f"{path} not found: the corpus is incomplete; {fix}")
        try:
            ids = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise CharlmError(f"{path} is not a readable .npy array ({err}); {fix}") from None
        expected = meta.get("splits", {}).get(split, {}).get("tokens")
        if ids.dtype != ID_DTYPE or ids.ndim != 1 or len(ids) != expected:
            raise CharlmError(
                f"{path} holds {ids.dtype} {ids.shape}, but {META_FILE} expects {expected} "
                f"{np.dtype(ID_DTYPE)} ids; {fix}"
            )
        splits[split] = ids
    return vocab, splits, meta


class TextStream:
    """One process's rows of a split, served as ``[B, T]`` training chunks (int64).

    The ids are cut into ``total_rows`` rows of ``cols = (len(ids) - 1) // total_rows`` tokens;
    this process owns rows ``first_row`` .. ``first_row + num_rows - 1``. Chunk ``k`` is columns
    ``[k*T, (k+1)*T)`` of those rows, and its targets are the tokens one position later (the
    batching is explained in :mod:`charlm.train`). The stream keeps only views of ``ids``: with
    the memory-mapped arrays of :func:`load_corpus`, a chunk is read from disk (the page cache)
    and converted to int64 when asked for, so memory does not grow with the split.
    """

    def __init__(self, ids: np.ndarray, total_rows: int, seq_len: int, first_row: int, num_rows: int):
        cols = (len(ids) - 1) // total_rows  # tokens per row
        self.num_chunks = cols // seq_len
        if self.num_chunks < 1:
            raise CharlmError(
                f"the training split ({len(ids)} tokens) is too short for {total_rows} rows of "
                f"{seq_len} steps; lower train.batch_size or train.seq_len"
            )
        used = total_rows * cols
        rows = slice(first_row, first_row + num_rows)
        self._inputs = ids[:used].reshape(total_rows, cols)[rows]  # [B, cols], a view
        self._targets = ids[1 : used + 1].reshape(total_rows, cols)[rows]  # [B, cols], shifted by one
        self.seq_len = seq_len

    def chunk(self, k: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(inputs, targets) of chunk ``k``: int64 tensors [B, T], fresh copies."""
        import torch  # imported here so that `charlm prepare` does not pay for torch

        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        inputs = np.asarray(self._inputs[:, cols], dtype=np.int64)  # [B, T]
        targets = np.asarray(self._targets[:, cols], dtype=np.int64)  # [B, T]
        return torch.from_numpy(inputs), torch.from_numpy(targets)
