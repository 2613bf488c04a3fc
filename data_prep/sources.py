"""Where corpus text comes from: plain text files or a Hugging Face ``datasets`` source.

Every source ends up as lists of lines per split ("train", "valid", "test"). A line is one
sentence or paragraph; blank lines are skipped everywhere (they would only add <eos> tokens), so
a text file and a dataset with one row per line of that file give the same lines. Rows of a
dataset that contain newlines are split into lines the same way.

A source without a validation or test split gets one carved out of train by
:func:`carve_missing_splits`: a seeded random choice of lines, each split keeping file order.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from charlm.errors import CharlmError

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

ROWS_PER_BATCH = 10_000
PROGRESS_DELAY_S = 3.0  # progress bars appear only for steps that take longer than this


def text_lines(text: str) -> list[str]:
    """The non-blank lines of ``text`` (split at "\\n"; a trailing "\\r" is just whitespace)."""
    return [line for line in text.split("\n") if line.strip()]


def read_text_file(path: str | os.PathLike, split: str | None = None, flag: str | None = None) -> list[str]:
    """The non-blank lines of a UTF-8 file; CharlmError if missing, not UTF-8 or empty.

    ``split`` names the corpus split the file is for (messages then name ``--{split}-file``);
    other callers name their option with ``flag`` (e.g. ``--text-file``).
    """
    path = Path(path)
    flag = flag or f"--{split}-file"
    if not path.exists():
        raise CharlmError(f"{flag} {path} does not exist (not found)")
    if not path.is_file():
        raise CharlmError(f"{flag} {path} is not a file (not found)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CharlmError(
            f"{path} is not UTF-8 text: invalid byte 0x{data[err.start]:02x} at byte offset "
            f"{err.start} (line {line}); convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    lines = text_lines(text)
    if not lines:
        what = f"the {split} split is empty: " if split else ""
        raise CharlmError(f"{what}{path} is empty: it holds no text (only whitespace)")
    return lines


def dataset_source(name: str, config: str | None, text_column: str) -> dict:
    """How a ``--dataset`` source is identified in ``meta.json`` (local paths made absolute)."""
    local = Path(name).expanduser()
    if local.exists() or glob.has_magic(name):
        name = str(local.resolve()) if local.exists() else os.path.abspath(name)
    return {"kind": "dataset", "name": name, "config": config, "text_column": text_column}


def load_dataset_splits(name: str, config: str | None, text_column: str) -> dict[str, list[str]]:
    """Lines per split ("train", maybe "valid", "test") of a ``datasets`` source.

    ``name`` is a directory written by ``save_to_disk``; a directory of data files (split names
    taken from the file names, as ``datasets.load_dataset`` does); a json/jsonl/csv/parquet/txt
    file or glob pattern (a train split only); or else a dataset name on the Hugging Face hub.
    """
    import datasets  # imported here: it is slow to import and only this source needs it

    loaded = _open_dataset(datasets, name, config)
    if isinstance(loaded, datasets.Dataset):
        loaded = {"train": loaded}
    splits = {}
    for split_name, dataset in loaded.items():
        split = SPLIT_ALIASES.get(split_name)
        if split is None:
            continue
        if split in splits:
            raise CharlmError(f"dataset {name} has two {split} splits; keep one of them")
        splits[split] = _dataset_lines(dataset, text_column, f"{name} [{split_name}]")
    if "train" not in splits:
        raise CharlmError(
            f"dataset {name} has no train split (it has: {', '.join(loaded) or 'none'}); "
            "name the training split 'train'"
        )
    return splits


def _open_dataset(datasets, name: str, config: str | None):
    """A Dataset or DatasetDict for ``name`` (see :func:`load_dataset_splits`)."""
    local = Path(name).expanduser()
    try:
        if local.is_dir():
            if any((local / marker).is_file() for marker in SAVED_DATASET_MARKERS):
                return datasets.load_from_disk(str(local))
            return datasets.load_dataset(str(local), config)
        files = sorted(glob.glob(str(local))) if glob.has_magic(name) else [str(local)]
        if files and Path(files[0]).is_file():
            suffix = Path(files[0]).suffix.lower()
            if suffix not in DATA_FILE_BUILDERS:
                raise CharlmError(
                    f"--dataset {name}: unknown file type {suffix!r}; use one of "
                    f"{', '.join(DATA_FILE_BUILDERS)} or a directory"
                )
            builder = DATA_FILE_BUILDERS[suffix]
            return datasets.load_dataset(builder, data_files=files, split="train")
        looks_local = glob.has_magic(name) or name.startswith((".", "/", "~"))
        if looks_local or local.suffix.lower() in DATA_FILE_BUILDERS:
            raise CharlmError(f"--dataset {name}: no such file or directory")
        return datasets.load_dataset(name, config)  # a name on the Hugging Face hub
    except CharlmError:
        raise
    except Exception as err:  # datasets raises many kinds: missing hub name, no network, bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharlmError(
            f"could not load dataset {name!r} ({reason}); give a local directory or data file, "
            "or a hub name with an internet connection"
        ) from None


def _dataset_lines(dataset, text_column: str, where: str) -> list[str]:
    """The non-blank lines of one split's text column."""
    if text_column not in dataset.column_names:
        raise CharlmError(
            f"{where} has no column {text_column!r} (columns: {', '.join(dataset.column_names)}); "
            "choose one with --text-column"
        )
    lines: list[str] = []
    rows = dataset.select_columns([text_column])
    progress = tqdm(total=len(rows), desc=f"reading {where}", unit="rows", delay=PROGRESS_DELAY_S)
    with progress:
        for batch in rows.iter(batch_size=ROWS_PER_BATCH):
            for text in batch[text_column]:
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise CharlmError(
                        f"{where}: column {text_column!r} holds {type(text).__name__}, not text; "
                        "choose a text column with --text-column"
                    )
                lines.extend(text_lines(text))
            progress.update(len(batch[text_column]))
    return lines


def carve_missing_splits(
    splits: dict[str, list[str]], valid_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Carve missing valid/test splits out of train; returns (splits, names of carved splits).

    A seeded random choice of ``round(fraction * len(train))`` lines (at least one) goes to each
    missing split; every split keeps the lines in their original order.
    """
    fractions = {"valid": valid_fraction, "test": test_fraction}
    missing = [split for split in CARVABLE_SPLITS if split not in splits]
    if not missing:
        return splits, []
    for split in missing:
        if fractions[split] <= 0:
            raise CharlmError(
                f"the source has no {split} split: give --{split}-file, or a --{split}-fraction "
                "above 0 to carve it out of train"
            )
    train = splits["train"]
    sizes = {split: max(1, round(fractions[split] * len(train))) for split in missing}
    if sum(sizes.values()) >= len(train):
        raise CharlmError(
            f"the train split has only {len(train)} lines, too few to carve "
            f"{' and '.join(missing)} out of it; give those splits explicitly"
        )
    order = np.random.default_rng(seed).permutation(len(train))
    carved = dict(splits)
    start = 0
    for split in missing:
        chosen = np.sort(order[start : start + sizes[split]])
        carved[split] = [train[i] for i in chosen]
        start += sizes[split]
    carved["train"] = [train[i] for i in np.sort(order[start:])]
    return carved, missing
