"""Where corpus text comes from: plain text files or a Hugging Face ``datasets`` source.

Every source is read as a stream of batches of lines, each batch a few hundred kilobytes of
text, so no split is ever held whole. A line is one sentence or paragraph; blank lines are
skipped everywhere (they would only add <eos> tokens), so a text file and a dataset with one row
per line of that file give the same lines. Rows of a dataset that contain newlines are split
into lines the same way.

A source without a validation or test split gets one carved out of train by :class:`Carving`:
each training line goes to the missing split with probability ``--valid-fraction`` (or
``--test-fraction``), decided by a seeded hash of the line's number. Every read of the source
therefore splits it the same way, line by line, without knowing its length; each split keeps the
lines in their original order.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from charlm.errors import CharlmError, error_reason

# Split names of datasets -> charlm's names. Other splits (e.g. "unsupervised") are ignored.
SPLIT_ALIASES = {
    "train": "train",
    "validation": "valid",
    "valid": "valid",
    "dev": "valid",
    "test": "test",
}
CARVABLE_SPLITS = ("valid", "test")

# Local data files: extension -> the `datasets` builder that reads them.
DATA_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}
# A directory written by Dataset.save_to_disk has state.json; DatasetDict's has dataset_dict.json.
SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")

BLOCK_BYTES = 1 << 20  # a text file is read in blocks of about this size, cut at a newline
# Longer lines are an error: a line is held whole, a few times over (about 7 bytes of memory per
# byte of the longest line). A 100 MB line (text8) is fine.
MAX_LINE_BYTES = 256 << 20
ROWS_PER_BATCH = 1_000  # dataset rows per batch
LIST_BATCH_LINES = 10_000  # lines per batch of lines already in memory
BYTE_ORDER_MARK = b"\xef\xbb\xbf"  # dropped at the start of a file (as the utf-8-sig codec does)


class LineSource(Protocol):
    """A source of one split's lines (or of train's, to carve the missing splits from)."""

    name: str  # for messages: the file, or the dataset and its split

    def batches(self) -> Iterator[list[str]]:
        """The non-blank lines, in order, a batch at a time; each call reads the source again."""
        ...


class SplitSources:
    """Where each split's lines come from: a source per split given, and the carving of the
    missing valid/test splits out of train (or None when all three are given)."""

    def __init__(self, sources: dict[str, LineSource], carving: "Carving | None"):
        self.sources = sources
        self.carving = carving

    def batches(self) -> Iterator[tuple[str, list[str]]]:
        """(split, lines) batches of every split, each source read once, in order."""
        for split, source in self.sources.items():
            if split == "train" and self.carving is not None:
                yield from self.carving.split(source)
            else:
                yield from ((split, batch) for batch in source.batches())

    def check_lines(self, lines: dict[str, int]) -> None:
        """CharlmError if a split read got no line (``lines``: split -> lines read)."""
        if self.carving is not None:
            carved = ["train", *self.carving.missing]
            total = sum(lines[split] for split in carved)
            if total and not all(lines[split] for split in carved):
                raise CharlmError(
                    f"the train split has only {total} lines, too few to carve "
                    f"{' and '.join(self.carving.missing)} out of it; give those splits explicitly"
                )
        for split, source in self.sources.items():
            if not lines[split]:
                raise empty_split_error(split, source)


def text_lines(text: str) -> list[str]:
    """The non-blank lines of ``text`` (split at "\\n"; a trailing "\\r" is just whitespace)."""
    return [line for line in text.split("\n") if line and not line.isspace()]


# ---------------------------------------------------------------------------------------------
# Text files
# ---------------------------------------------------------------------------------------------


class TextFile:
    """A UTF-8 text file, read in blocks of whole lines. A byte that is not UTF-8 is a
    CharlmError naming the file, the line and the byte offset, whenever the reading gets there."""

    def __init__(self, path: str | os.PathLike, flag: str):
        self.path = Path(path)
        self.name = str(path)
        if not self.path.exists():
            raise CharlmError(f"{flag} {self.path} does not exist (not found)")
        if not self.path.is_file():
            raise CharlmError(f"{flag} {self.path} is not a file (not found)")
        self.flag = flag

    def batches(self) -> Iterator[list[str]]:
        try:
            with open(self.path, "rb") as file:
                for offset, line, block in self._blocks(file):
                    start = len(BYTE_ORDER_MARK) if offset == 0 and block.startswith(BYTE_ORDER_MARK) else 0
                    try:
                        text = block[start:].decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise self._not_utf8(block, offset, start + err.start, line) from None
                    del block  # a block can be one huge line: hold one copy of it at a time
                    lines = text_lines(text)
                    del text
                    yield lines
        except OSError as err:
            raise CharlmError(f"cannot read {self.flag} {self.path} ({err.strerror or err})") from None

    def _blocks(self, file) -> Iterator[tuple[int, int, bytes]]:
        """(byte offset, line number, block) for consecutive blocks of the file, each ending
        just after a newline (the last one at the end of the file). A block holds at least one
        whole line, so a long line makes a block of its own size, up to MAX_LINE_BYTES."""
        offset, line = 0, 1
        pending, pending_bytes = [], 0  # the start of a line that continues in the next read
        while data := file.read(BLOCK_BYTES):
            cut = data.rfind(b"\n") + 1
            if not cut:
                pending.append(data)
                pending_bytes += len(data)
                if pending_bytes > MAX_LINE_BYTES:
                    raise CharlmError(
                        f"line {line} of {self.path} is longer than {MAX_LINE_BYTES >> 20} MiB; "
                        "break it into lines (e.g. `fold -s -w 10000`)"
                    )
                continue
            block = b"".join([*pending, data[:cut]])
            pending = [data[cut:]]
            pending_bytes = len(pending[0])
            yield offset, line, block
            offset += len(block)
            line += block.count(b"\n")
        rest = b"".join(pending)
        if rest:
            yield offset, line, rest

    def _not_utf8(self, block: bytes, offset: int, position: int, line: int) -> CharlmError:
        """The error for the byte at ``block[position]``; the block starts at byte ``offset``
        of the file, on line ``line``."""
        line += block.count(b"\n", 0, position)
        return CharlmError(
            f"{self.path} is not UTF-8 text: invalid byte 0x{block[position]:02x} at byte offset "
            f"{offset + position} (line {line}); convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        )


def read_text_file(path: str | os.PathLike, split: str | None = None, flag: str | None = None) -> list[str]:
    """The non-blank lines of a UTF-8 file; CharlmError if missing, not UTF-8 or empty.

    ``split`` names the corpus split the file is for (messages then name ``--{split}-file``);
    other callers name their option with ``flag`` (e.g. ``--text-file``).
    """
    source = TextFile(path, flag or f"--{split}-file")
    lines = [line for batch in source.batches() for line in batch]
    if not lines:
        raise empty_split_error(split, source)
    return lines


class LineList:
    """Lines already in memory (the demo corpus), served in batches."""

    def __init__(self, lines: list[str], name: str):
        self.lines = lines
        self.name = name

    def batches(self) -> Iterator[list[str]]:
        for start in range(0, len(self.lines), LIST_BATCH_LINES):
            yield self.lines[start : start + LIST_BATCH_LINES]


def empty_split_error(split: str | None, source: LineSource) -> CharlmError:
    """The error for a source without a non-blank line."""
    what = f"the {split} split is empty: " if split else ""
    return CharlmError(f"{what}{source.name} is empty: it holds no text (only whitespace)")


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class DatasetSplit:
    """One split of a ``datasets`` source (a loaded ``Dataset`` or a streamed
    ``IterableDataset``), read a batch of rows at a time."""

    def __init__(self, dataset, text_column: str, name: str):
        self.dataset = dataset
        self.text_column = text_column
        self.name = name

    def batches(self) -> Iterator[list[str]]:
        columns = self.dataset.column_names  # None for some streamed files: checked on the rows
        if columns is not None:
            self._check_column(columns)
        rows = self.dataset.select_columns([self.text_column]) if columns else self.dataset
        try:
            for batch in rows.iter(batch_size=ROWS_PER_BATCH):
                self._check_column(list(batch))
                texts = [text for text in batch[self.text_column] if text is not None]
                wrong = next((text for text in texts if not isinstance(text, str)), None)
                if wrong is not None:
                    raise CharlmError(
                        f"{self.name}: column {self.text_column!r} holds {type(wrong).__name__}, "
                        "not text; choose a text column with --text-column"
                    )
                yield text_lines("\n".join(texts))
        except CharlmError:
            raise
        except Exception as err:  # a streamed file can turn out unreadable only now
            raise CharlmError(f"could not read {self.name} ({error_reason(err)}); check the data files") from None

    def _check_column(self, columns: list[str]) -> None:
        if self.text_column not in columns:
            raise CharlmError(
                f"{self.name} has no column {self.text_column!r} (columns: {', '.join(columns)}); "
                "choose one with --text-column"
            )


def dataset_source(name: str, config: str | None, text_column: str) -> dict:
    """How a ``--dataset`` source is identified in ``meta.json`` (local paths made absolute)."""
    local = Path(name).expanduser()
    if local.exists() or glob.has_magic(name):
        name = str(local.resolve()) if local.exists() else os.path.abspath(name)
    return {"kind": "dataset", "name": name, "config": config, "text_column": text_column}


def dataset_splits(name: str, config: str | None, text_column: str) -> dict[str, DatasetSplit]:
    """The splits ("train", maybe "valid", "test") of a ``datasets`` source.

    ``name`` is a directory written by ``save_to_disk`` (memory-mapped, as ``datasets`` does);
    a directory of data files (split names taken from the file names, as
    ``datasets.load_dataset`` does); a json/jsonl/csv/parquet/txt file or glob pattern (a train
    split only); or else a dataset name on the Hugging Face hub. Data files and hub datasets
    are streamed (``streaming=True``): nothing is copied into a cache first.
    """
    import datasets  # imported here: it is slow to import and only this source needs it

    loaded = _open_dataset(datasets, name, config)
    if not isinstance(loaded, dict):  # a single split (DatasetDict is a dict, Dataset is not)
        loaded = {"train": loaded}
    splits = {}
    for split_name, dataset in loaded.items():
        split = SPLIT_ALIASES.get(split_name)
        if split is None:
            continue
        if split in splits:
            raise CharlmError(f"dataset {name} has two {split} splits; keep one of them")
        splits[split] = DatasetSplit(dataset, text_column, f"{name} [{split_name}]")
    if "train" not in splits:
        raise CharlmError(
            f"dataset {name} has no train split (it has: {', '.join(loaded) or 'none'}); "
            "name the training split 'train'"
        )
    return splits


def _open_dataset(datasets, name: str, config: str | None):
    """A (streamed) dataset or a dict of them for ``name`` (see :func:`dataset_splits`)."""
    local = Path(name).expanduser()
    try:
        if local.is_dir():
            if any((local / marker).is_file() for marker in SAVED_DATASET_MARKERS):
                return datasets.load_from_disk(str(local))
            return datasets.load_dataset(str(local), config, streaming=True)
        files = sorted(glob.glob(str(local))) if glob.has_magic(name) else [str(local)]
        if files and Path(files[0]).is_file():
            suffix = Path(files[0]).suffix.lower()
            if suffix not in DATA_FILE_BUILDERS:
                raise CharlmError(
                    f"--dataset {name}: unknown file type {suffix!r}; use one of "
                    f"{', '.join(DATA_FILE_BUILDERS)} or a directory"
                )
            builder = DATA_FILE_BUILDERS[suffix]
            return datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
        looks_local = glob.has_magic(name) or name.startswith((".", "/", "~"))
        if looks_local or local.suffix.lower() in DATA_FILE_BUILDERS:
            raise CharlmError(f"--dataset {name}: no such file or directory")
        return datasets.load_dataset(name, config, streaming=True)  # a name on the hub
    except CharlmError:
        raise
    except Exception as err:  # datasets raises many kinds: missing hub name, no network, bad file
        raise CharlmError(
            f"could not load dataset {name!r} ({error_reason(err)}); give a local directory or "
            "data file, or a hub name with an internet connection"
        ) from None


# ---------------------------------------------------------------------------------------------
# Carving missing splits out of train
# ---------------------------------------------------------------------------------------------


class Carving:
    """Which training lines go to the missing valid/test splits.

    Line ``i`` (its position among the source's non-blank lines) goes to a missing split when a
    seeded 64-bit hash of ``i``, read as a fraction in [0, 1), falls in that split's interval:
    [0, valid_fraction) for valid, then test_fraction wide for test. The hash (splitmix64)
    makes the choice look random, yet any read of the source gives the same one.
    """

    def __init__(self, missing: list[str], fractions: dict[str, float], seed: int):
        for split in missing:
            if fractions[split] <= 0:
                raise CharlmError(
                    f"the source has no {split} split: give --{split}-file, or a --{split}-fraction "
                    "above 0 to carve it out of train"
                )
        self.missing = missing
        self.splits = ["train", *missing]
        self._bounds = np.cumsum([fractions[split] for split in missing])  # upper ends
        self._key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))

    def assign(self, first: int, count: int) -> np.ndarray:
        """Index into ``splits`` for lines ``first`` .. ``first + count - 1``."""
        numbers = np.arange(first, first + count, dtype=np.uint64)
        fraction = (_splitmix64(numbers ^ self._key) >> np.uint64(11)) * 2.0**-53
        carved = np.searchsorted(self._bounds, fraction, side="right")  # 0: valid, 1: test, ...
        return np.where(carved < len(self.missing), carved + 1, 0)

    def split(self, source: LineSource) -> Iterator[tuple[str, list[str]]]:
        """(split, lines) batches of ``source`` dealt into train and the missing splits."""
        first = 0
        for batch in source.batches():
            chosen = self.assign(first, len(batch)).tolist()
            first += len(batch)
            for k, split in enumerate(self.splits):
                lines = [line for line, c in zip(batch, chosen) if c == k]
                if lines:
                    yield split, lines


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 mix of each element of a uint64 array (arithmetic wraps around)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
