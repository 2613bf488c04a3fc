"""``charlm prepare``: text in; vocabulary, spellings and word-id arrays out.

Usage (exactly one source)::

    charlm prepare --train-file ptb/train.txt --valid-file ptb/valid.txt --test-file ptb/test.txt \\
        --output-dir data/ptb
    charlm prepare --dataset my_dataset_dir --text-column text --output-dir data/mine
    charlm prepare --demo --output-dir demo/corpus          # offline: Python's own docs

The text is streamed, never held whole: memory does not grow with the corpus, only with its
number of different words. Word mode reads the text once: pass 1 tokenizes every split a batch
of lines at a time, writes provisional word ids straight into the split arrays on disk and
counts the training words; pass 2 builds the :class:`~charlm.text.Vocabulary` from the
training split's counts and renumbers the arrays in place. Sentencepiece mode reads the text
twice: pass 1 trains the model on (a sample of) the training lines, pass 2 encodes every split
into its array. Missing valid/test splits are carved out of train line by line (see
:class:`~data_prep.sources.Carving`); ``<eos>`` follows each line. The result is the directory
described in :mod:`charlm.corpus`, written into a temporary sibling directory that is renamed
into place at the end, so an interrupted or failed run never leaves a half-written corpus
(see :mod:`data_prep.output`).

An existing, non-empty ``--output-dir`` is replaced only if it holds a corpus prepared from the
same source with the same options; anything else is an error (choose another directory, or
delete it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import charlm
from charlm.corpus import (
    CORPUS_FORMAT,
    CORPUS_FORMAT_VERSION,
    META_FILE,
    SPLITS,
    read_meta,
    split_file,
)
from charlm.errors import CharlmError
from charlm.text import PRE_TOKENIZERS, SP_MODEL_TYPES, TOKENIZERS, VocabOptions, Vocabulary
from data_prep.demo import demo_source, demo_splits
from data_prep.output import IdArrayWriter, TemporaryCorpus, disk_errors, renumber
from data_prep.sources import (
    CARVABLE_SPLITS,
    Carving,
    LineList,
    SplitSources,
    TextFile,
    dataset_source,
    dataset_splits,
)
from data_prep.words import WordNumbering

PROGRESS_DELAY_S = 3.0  # progress bars appear only for steps that take longer than this


@dataclass(kw_only=True)
class PrepareConfig(VocabOptions):
    """Options of ``charlm prepare``: the source, the splits, the output (and, inherited from
    :class:`~charlm.text.VocabOptions`, how the vocabulary is built). The defaults here are
    the only ones: the command line reads them from this class."""

    output_dir: str | None = field(default=None, metadata={"help": "directory to write the prepared corpus to"})
    train_file: str | None = field(
        default=None, metadata={"help": "training text, one sentence or paragraph per line (UTF-8)"}
    )
    valid_file: str | None = field(
        default=None,
        metadata={"help": "validation text; if not given, carved out of train by --valid-fraction"},
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "test text; if not given, carved out of train by --test-fraction"},
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "a Hugging Face `datasets` source: a directory written by save_to_disk, a "
            "directory of data files, a json/jsonl/csv/parquet/txt file (or glob), or a hub name"
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name of a --dataset on the hub"})
    text_column: str = field(default="text", metadata={"help": "the --dataset column holding the text"})
    demo: bool = field(
        default=False,
        metadata={"help": "the built-in offline demo corpus (the help texts of Python's docs)"},
    )
    valid_fraction: float = field(
        default=0.05,
        metadata={"help": "share of train lines carved out as the validation split when there is none"},
    )
    test_fraction: float = field(
        default=0.05,
        metadata={"help": "share of train lines carved out as the test split when there is none"},
    )
    split_seed: int = field(default=0, metadata={"help": "random seed of the choice of lines carved out of train"})
    workers: int | None = field(
        default=None,
        metadata={
            "help": "word mode: processes that tokenize and number the words of a large corpus "
            "(the result does not depend on it); unset: one per CPU this process may use"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        kinds = [
            flag
            for flag, given in (
                ("--train-file", self.train_file is not None),
                ("--dataset", self.dataset is not None),
                ("--demo", self.demo),
            )
            if given
        ]
        if len(kinds) != 1:
            problem = f"two sources given ({' and '.join(kinds)})" if kinds else "no source given"
            raise CharlmError(f"{problem}: give exactly one of --train-file, --dataset or --demo")
        if self.train_file is None and (self.valid_file or self.test_file):
            raise CharlmError("--valid-file and --test-file need a --train-file")
        if not self.output_dir:
            raise CharlmError("--output-dir is required")
        fractions = {"--valid-fraction": self.valid_fraction, "--test-fraction": self.test_fraction}
        for flag, fraction in fractions.items():
            if not 0 <= fraction < 1:
                raise CharlmError(f"{flag} must be in [0, 1), not {fraction}")
        if self.workers is not None and self.workers < 1:
            raise CharlmError(f"--workers must be at least 1, not {self.workers}")

    def resolved(self) -> PrepareConfig:
        """A copy with the unset vocabulary options filled in (the demo is raw text)."""
        return super().resolved(raw_text=self.demo)

    def vocab_options(self) -> VocabOptions:
        """Just the vocabulary options."""
        names = [f.name for f in dataclasses.fields(VocabOptions)]
        return VocabOptions(**{name: getattr(self, name) for name in names})


# Fields that say where the text comes from; they are recorded as the "source" in meta.json,
# and all other fields except RUN_FIELDS (where and how to run: no effect on the corpus) as its
# "options".
SOURCE_FIELDS = (
    "train_file",
    "valid_file",
    "test_file",
    "dataset",
    "dataset_config",
    "text_column",
    "demo",
)
RUN_FIELDS = ("output_dir", "workers")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``charlm prepare``; defaults and help come from PrepareConfig."""
    fields = {f.name: f for f in dataclasses.fields(PrepareConfig)}

    def option(flag: str, name: str, group=parser, **kwargs) -> None:
        kwargs.setdefault("default", fields[name].default)
        group.add_argument(flag, dest=name, help=fields[name].metadata["help"], **kwargs)

    source = parser.add_argument_group("source (exactly one of --train-file, --dataset, --demo)")
    option("--train-file", "train_file", source, metavar="PATH")
    option("--valid-file", "valid_file", source, metavar="PATH")
    option("--test-file", "test_file", source, metavar="PATH")
    option("--dataset", "dataset", source, metavar="SOURCE")
    option("--dataset-config", "dataset_config", source, metavar="NAME")
    option("--text-column", "text_column", source, metavar="NAME")
    option("--demo", "demo", source, action="store_true")

    splits = parser.add_argument_group("splits carved out of train when the source has none")
    option("--valid-fraction", "valid_fraction", splits, type=float)
    option("--test-fraction", "test_fraction", splits, type=float)
    option("--split-seed", "split_seed", splits, type=int)

    vocab = parser.add_argument_group("vocabulary")
    option("--tokenizer", "tokenizer", vocab, choices=TOKENIZERS)
    option("--pre-tokenizer", "pre_tokenizer", vocab, choices=PRE_TOKENIZERS)
    option("--lowercase", "lowercase", vocab, action=argparse.BooleanOptionalAction)
    option("--vocab-size", "vocab_size", vocab, type=int)
    option("--min-freq", "min_freq", vocab, type=int)
    option("--sp-model-type", "sp_model_type", vocab, choices=SP_MODEL_TYPES)
    option("--max-word-length", "max_word_length", vocab, type=int)
    option("--no-eos", "add_eos", vocab, action="store_false")

    option("--output-dir", "output_dir", required=True, metavar="DIR")
    option("--workers", "workers", type=int, metavar="N")


def run(args: argparse.Namespace) -> int:
    """Run ``charlm prepare`` with parsed arguments; returns the exit status."""
    names = [f.name for f in dataclasses.fields(PrepareConfig)]
    config = PrepareConfig(**{name: getattr(args, name) for name in names})
    prepare_corpus(config)
    return 0


# ---------------------------------------------------------------------------------------------
# Preparation
# ---------------------------------------------------------------------------------------------


def prepare_corpus(config: PrepareConfig, *, verbose: bool = True) -> dict:
    """Prepare the corpus described by ``config``; returns the ``meta.json`` contents.

    Raises CharlmError for user mistakes (missing or non-UTF-8 file, empty split, bad option,
    an output directory that holds something else, a full disk) and leaves no output behind
    when it fails.
    """
    started = time.perf_counter()
    config = config.resolved()
    output_dir = Path(config.output_dir).expanduser().absolute()
    source = describe_source(config)
    options = {
        name: value
        for name, value in dataclasses.asdict(config).items()
        if name not in SOURCE_FIELDS and name not in RUN_FIELDS
    }
    check_output_dir(output_dir, source, options)  # before any work: fail fast
    splits = open_splits(config)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with TemporaryCorpus(output_dir) as tmp:
        if config.tokenizer == "word":
            vocab, split_stats = prepare_words(splits, config.vocab_options(), tmp.path, config.workers)
        else:
            vocab, split_stats = prepare_pieces(splits, config.vocab_options(), tmp.path)
        with disk_errors(tmp.path):
            vocab.save(tmp.path)
        meta = {
            "format": CORPUS_FORMAT,
            "format_version": CORPUS_FORMAT_VERSION,
            "vocab_size": len(vocab),
            "char_vocab_size": len(vocab.chars),
            "max_word_length": vocab.max_word_length,
            "tokenizer": vocab.tokenizer,
            "splits": split_stats,
            "source": source,
            "carved_splits": splits.carving.missing if splits.carving else [],
            "options": options,
            "charlm_version": charlm.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2),
        }
        text = json.dumps(meta, indent=1, ensure_ascii=False) + "\n"
        with disk_errors(tmp.path / META_FILE):
            (tmp.path / META_FILE).write_text(text, encoding="utf-8")  # last: the corpus is complete
        check_output_dir(output_dir, source, options)  # again: something may have appeared there
        tmp.move_into_place()
    if verbose:
        print_summary(output_dir, meta, time.perf_counter() - started)
    return meta


def describe_source(config: PrepareConfig) -> dict:
    """Where the text comes from, as recorded in meta.json (paths made absolute)."""
    if config.demo:
        return demo_source()
    if config.dataset is not None:
        return dataset_source(config.dataset, config.dataset_config, config.text_column)
    files = {"train": config.train_file, "valid": config.valid_file, "test": config.test_file}
    absolute = {
        split: None if path is None else str(Path(path).expanduser().absolute()) for split, path in files.items()
    }
    return {"kind": "files", **absolute}


def open_splits(config: PrepareConfig) -> SplitSources:
    """The source of every split given, and how the missing ones are carved out of train."""
    if config.demo:
        sources = {split: LineList(lines, f"the demo's {split} split") for split, lines in demo_splits().items()}
    elif config.dataset is not None:
        sources = dataset_splits(config.dataset, config.dataset_config, config.text_column)
    else:
        files = {"train": config.train_file, "valid": config.valid_file, "test": config.test_file}
        sources = {split: TextFile(path, f"--{split}-file") for split, path in files.items() if path}
    missing = [split for split in CARVABLE_SPLITS if split not in sources]
    fractions = {"valid": config.valid_fraction, "test": config.test_fraction}
    carving = Carving(missing, fractions, config.split_seed) if missing else None
    return SplitSources(sources, carving)


def prepare_words(
    splits: SplitSources, options: VocabOptions, directory: Path, workers: int | None = None
) -> tuple[Vocabulary, dict]:
    """Word mode, in one read of the text. Pass 1 tokenizes every split, stores each word's
    provisional id (see :class:`~charlm.text.WordCounter`; :mod:`data_prep.words` for the
    worker processes of a large corpus) in the split's array and counts the training words;
    pass 2 builds the vocabulary from the counts and renumbers the arrays in place. Returns the
    vocabulary and the statistics of each split."""
    with WordNumbering(options, workers) as numbering:
        encoded = numbering.encode(splits.batches())
        lines, tokens = write_splits(encoded, directory, "reading, counting (1/2)")
        splits.check_lines(lines)
        vocab, stretches = numbering.vocabulary()
    with progress_bar("numbering (2/2)", total=sum(tokens.values())) as progress:
        unk = {
            split: renumber(directory / split_file(split), stretches[split], vocab.unk_id, progress) for split in SPLITS
        }
    return vocab, split_statistics(lines, tokens, unk)


def prepare_pieces(splits: SplitSources, options: VocabOptions, directory: Path) -> tuple[Vocabulary, dict]:
    """Sentencepiece mode, in two reads of the text: pass 1 trains the model on (a sample of)
    the training lines and checks the other splits, pass 2 encodes every split into its array.
    Returns the vocabulary and the statistics of each split."""
    lines = dict.fromkeys(SPLITS, 0)

    def training_lines() -> Iterator[str]:
        for split, batch in splits.batches():
            lines[split] += len(batch)
            progress.update(len(batch))
            if split == "train":
                yield from batch

    with progress_bar("training sentencepiece (1/2)", unit="lines") as progress:
        try:
            vocab = Vocabulary.train(training_lines(), options)
        except CharlmError:
            splits.check_lines(lines)  # an empty split is the clearer message
            raise
    splits.check_lines(lines)
    unk = dict.fromkeys(SPLITS, 0)

    def encoded() -> Iterator[tuple[str, int, np.ndarray]]:
        for split, batch in splits.batches():
            ids = vocab.encode_lines(batch)
            unk[split] += int(np.count_nonzero(ids == vocab.unk_id))
            yield split, len(batch), ids

    lines, tokens = write_splits(encoded(), directory, "encoding (2/2)")
    return vocab, split_statistics(lines, tokens, unk)


def write_splits(
    encoded: Iterable[tuple[str, int, np.ndarray]], directory: Path, description: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Write each ``(split, lines, ids)`` batch to the split's array as it comes. Returns the
    lines and the ids written per split."""
    lines = dict.fromkeys(SPLITS, 0)
    with ExitStack() as stack:
        writers = {split: stack.enter_context(IdArrayWriter(directory / split_file(split))) for split in SPLITS}
        progress = stack.enter_context(progress_bar(description))
        for split, count, ids in encoded:
            writers[split].write(ids)
            lines[split] += count
            progress.update(len(ids))
    return lines, {split: writer.length for split, writer in writers.items()}


def split_statistics(lines: dict, tokens: dict, unk: dict) -> dict:
    """The "splits" entry of meta.json."""
    return {
        split: {"file": split_file(split), "lines": lines[split], "tokens": tokens[split], "unk": unk[split]}
        for split in SPLITS
    }


def progress_bar(description: str, unit: str = "tok", total: int | None = None) -> tqdm:
    """A progress bar with the rate in ``unit``/s, shown only if the step takes a while."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, delay=PROGRESS_DELAY_S, leave=False)


def check_output_dir(output_dir: Path, source: dict, options: dict) -> None:
    """CharlmError unless ``output_dir`` is absent, empty, or the same corpus (to be replaced)."""
    if not output_dir.exists():
        return
    fix = "choose another --output-dir or delete it"
    if not output_dir.is_dir():
        raise CharlmError(f"--output-dir {output_dir} is a file, not a directory; {fix}")
    if not any(output_dir.iterdir()):
        return
    try:
        meta = read_meta(output_dir)
    except CharlmError:
        raise CharlmError(f"--output-dir {output_dir} is not empty and holds no prepared corpus; {fix}") from None
    if meta.get("source") != source or meta.get("options") != options:
        raise CharlmError(
            f"--output-dir {output_dir} holds a corpus prepared from another source or with other options; {fix}"
        )


def print_summary(output_dir: Path, meta: dict, seconds: float) -> None:
    """A few lines: where, vocabulary sizes, tokens and <unk> rate per split, time."""
    print(f"prepared {output_dir} in {seconds:.1f} s ({meta['tokenizer']} tokenizer)")
    print(
        f"  vocabulary: {meta['vocab_size']:,} words, {meta['char_vocab_size']:,} characters, "
        f"max word length {meta['max_word_length']}"
    )
    for split, stats in meta["splits"].items():
        rate = stats["unk"] / max(stats["tokens"], 1)
        print(f"  {split:<5} {stats['tokens']:>12,} tokens {stats['unk']:>10,} <unk> ({rate:.2%})")
