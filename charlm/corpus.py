"""Reading a prepared corpus directory (written by ``charlm prepare``).

A prepared corpus is a directory that explains itself::

    vocab.json        words, characters, spelling length, tokenizer settings (see charlm.vocab)
    tokenizer.json    the word-level tokenizer (word mode), or spm.model (sentencepiece mode)
    train.npy         word ids of the training split, int32, <eos> after each line
    valid.npy         the same for the validation split
    test.npy          the same for the test split
    meta.json         sizes, token and <unk> counts per split, the source and the options used

The arrays hold word ids only; the model spells words through ``Vocabulary.spellings()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from charlm.errors import CharlmError
from charlm.vocab import Vocabulary

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
