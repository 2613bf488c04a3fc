"""Streamed `charlm prepare`: the corpus it wrote before streaming, in memory that does not grow
with the text; bad input at scale gives one line or a clean restart, never half a corpus."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data_prep.output
import data_prep.sources
import data_prep.words
from charlm.cli import main
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.text import EOS_WORD, VocabOptions, Vocabulary, lines_text, normalize_text, split_words, text_windows
from charlm.text.backends import WordTokenizer
from data_prep.prepare import PrepareConfig, prepare_corpus
from data_prep.sources import Carving
from data_prep.synthetic import make_synthetic_corpus

REPO = Path(__file__).resolve().parents[2]
SPLIT_NAMES = ("train", "valid", "test")


def prepare(output_dir: Path, **options) -> dict:
    return prepare_corpus(PrepareConfig(output_dir=str(output_dir), **options), verbose=False)


def one_line_error(capsys, *argv) -> str:
    """Run `charlm prepare ...`: exit status 2 and exactly one line, ``error: ...``; returns it."""
    assert main(["prepare", *map(str, argv)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def synthetic(path: Path, tokens: int, vocab_size: int, seed: int = 0) -> Path:
    make_synthetic_corpus(tokens=tokens, vocab_size=vocab_size, seed=seed, output=str(path))
    return path


# -- the same corpus as before streaming ----------------------------------------------------
#
# The digests below were taken from `charlm prepare` as it was before streaming (commit
# 7eae6b5: every split held as lists, the vocabulary counted by the tokenizers trainer),
# run on the same inputs: the first 16 hex digits of each file's sha256, and (lines, tokens,
# <unk>) per split. spm.model is not compared: it records the training options, and streaming
# adds two (the sample size and shuffling); its pieces are in vocab.json, which is compared.
# tokenizer.json is not compared byte for byte either: it is the tokenizers library's own
# serialization, which a release of that library may change; what it does is checked instead
# (it encodes each split's text to the ids prepared for that split).


def tricky_lines() -> list[str]:
    """Lines that tell tokenizers apart: Unicode whitespace, separators \\x1c-\\x1f (not
    whitespace to the tokenizers library), glued specials, combining marks, final sigma, ..."""
    base = [
        "the cat sat",
        "  leading and trailing  ",
        "tab\tseparated\twords",
        "a<unk>b and x<eos> and <eos>y",
        "<unk> <eos> <UNK> <Eos>",
        "file\x1cgroup\x1drecord\x1eunit\x1fsep",
        "ideographic\u3000space and\u00a0nbsp",
        "line\u2028separator and next\x85line",
        "cafe\u0301 caf\u00e9 \u212b \u1e9b\u0323",
        "ΟΔΥΣΣΕΥΣ ΣΑΣ σας Σ",
        "İstanbul DŽ ǅ ß ẞ ﬁ",
        "nul\x00char and \x01ctrl \x1b[31m",
        "emoji 🚀🔥 👩‍👩‍👧 family",
        "don't stop-me now... (ok)!",
        "a_b c__d 3.14 1,000 x²",
        "क्षत्रिय हिन्दी",
        "مرحبا بالعالم",
        "\u200bzero\u200bwidth \ufeffbom inside",
        "carriage\rreturn inside",
        "trailing cr\r",
        "word " * 50,
        "\u1c89x",
        "x" * 300,
    ]
    return [f"{line} {i % 7}" for i in range(40) for line in base]


def write_lines(path: Path, lines: list[str], bom: bool = False, crlf: bool = False) -> str:
    text = "\n".join(lines) + "\n\n  \n\t\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


@pytest.fixture(scope="module")
def sources(shared_data: Path, tmp_path_factory) -> dict[str, dict]:
    """Source options of each pinned case, by name of its input."""
    folder = tmp_path_factory.mktemp("sources")
    ptb = {f"{split}_file": str(shared_data / "ptb" / f"{split}.txt") for split in SPLIT_NAMES}
    lines = tricky_lines()
    tricky = {
        "train_file": write_lines(folder / "tricky-train.txt", lines, bom=True),
        "valid_file": write_lines(folder / "tricky-valid.txt", lines[::3] + ["unseen words here", "x<unk>"], crlf=True),
        "test_file": write_lines(folder / "tricky-test.txt", lines[1::5]),
    }
    datasets = pytest.importorskip("datasets")
    shake = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()
    datasets.DatasetDict(
        {  # a directory written by save_to_disk: memory-mapped, not streamed
            "train": datasets.Dataset.from_dict({"text": shake[:36000]}),
            "validation": datasets.Dataset.from_dict({"text": shake[36000:38000]}),
            "test": datasets.Dataset.from_dict({"text": shake[38000:]}),
        }
    ).save_to_disk(str(folder / "shake-saved"))
    de = shared_data / "datas" / "de"
    (folder / "de-dir").mkdir()  # a directory of data files: streamed
    for split, name in (("train", "valid.txt"), ("validation", "test.txt"), ("test", "test.txt")):
        rows = (de / name).read_text(encoding="utf-8").splitlines()
        (folder / "de-dir" / f"{split}.jsonl").write_text("".join(json.dumps({"body": r}) + "\n" for r in rows))
    return {
        "ptb": ptb,
        "tricky": tricky,
        "shake-saved": {"dataset": str(folder / "shake-saved")},
        "de-dir": {"dataset": str(folder / "de-dir"), "text_column": "body"},
    }


PINNED = {
    "ptb-word": (
        "ptb",
        {},
        {
            "test.npy": "c9e386f81e86f490",
            "train.npy": "4440f908035d5f0e",
            "valid.npy": "9c802f61a14d4139",
            "vocab.json": "b0a19cf626ef965b",
        },
        {"train": (42068, 929589, 45020), "valid": (3370, 73760, 3485), "test": (3761, 82430, 4794)},
    ),
    "ptb-word-min3-vocab5000": (
        "ptb",
        {"min_freq": 3, "vocab_size": 5000},
        {
            "test.npy": "3dacb0a9969c448a",
            "train.npy": "0bb983883d9e7475",
            "valid.npy": "2b886044dcde13b5",
            "vocab.json": "556a691869b37031",
        },
        {"train": (42068, 929589, 87733), "valid": (3370, 73760, 7485), "test": (3761, 82430, 8197)},
    ),
    "ptb-sp-4000": (
        "ptb",
        {"tokenizer": "sentencepiece", "vocab_size": 4000},
        {
            "test.npy": "afcb25c080f15f79",
            "train.npy": "e0c3a2f1387a764b",
            "valid.npy": "85cba48ac86fe1a0",
            "vocab.json": "d899a60cdf2dd212",
        },
        {"train": (42068, 1151631, 45020), "valid": (3370, 91979, 3485), "test": (3761, 100769, 4794)},
    ),
    "ptb-sp-bpe-2000-noeos": (
        "ptb",
        {"tokenizer": "sentencepiece", "vocab_size": 2000, "sp_model_type": "bpe", "add_eos": False},
        {
            "test.npy": "450cd6686f014a2c",
            "train.npy": "fd26326809924af4",
            "valid.npy": "0ac81a3cc6c02bcc",
            "vocab.json": "8323431bbedef350",
        },
        {"train": (42068, 1302104, 45020), "valid": (3370, 101779, 3485), "test": (3761, 112951, 4794)},
    ),
    "shake-saved-punct": (
        "shake-saved",
        {"pre_tokenizer": "punctuation", "lowercase": True, "min_freq": 2, "vocab_size": 5000},
        {
            "test.npy": "bbc80a7f0c60bfbd",
            "train.npy": "f22ceb40be5a34f3",
            "valid.npy": "3908343ce2a8e658",
            "vocab.json": "6136994c560689cb",
        },
        {"train": (29618, 268675, 7043), "valid": (1582, 14168, 735), "test": (1577, 12861, 893)},
    ),
    "de-dir-jsonl": (
        "de-dir",
        {},
        {
            "test.npy": "74d4face1236ce42",
            "train.npy": "74bb36f547a20af5",
            "valid.npy": "74d4face1236ce42",
            "vocab.json": "95b5078ef7b5ae78",
        },
        {"train": (3003, 76766, 10288), "valid": (3003, 76407, 14788), "test": (3003, 76407, 14788)},
    ),
    "tricky-whitespace": (
        "tricky",
        {"pre_tokenizer": "whitespace", "lowercase": False},
        {
            "test.npy": "00b335e76b2d655f",
            "train.npy": "b201427ffc0e5be1",
            "valid.npy": "885eccecb24f4794",
            "vocab.json": "fc2eb305f877aab6",
        },
        {"train": (920, 6920, 80), "valid": (309, 2302, 30), "test": (184, 1384, 16)},
    ),
    "tricky-whitespace-lowercase": (
        "tricky",
        {"pre_tokenizer": "whitespace", "lowercase": True},
        {
            "test.npy": "393c4ff26e8ca769",
            "train.npy": "86b567f63c237225",
            "valid.npy": "7e8f7c2711c735b1",
            "vocab.json": "2d02b7271dee3b68",
        },
        {"train": (920, 6920, 120), "valid": (309, 2302, 43), "test": (184, 1384, 24)},
    ),
    "tricky-punctuation": (
        "tricky",
        {"pre_tokenizer": "punctuation", "lowercase": False},
        {
            "test.npy": "db5f141098fafd63",
            "train.npy": "d08b268c7e16e9d5",
            "valid.npy": "305b465f216227ae",
            "vocab.json": "e0c03ed15a687430",
        },
        {"train": (920, 8520, 80), "valid": (309, 2827, 30), "test": (184, 1704, 16)},
    ),
    "tricky-punctuation-lowercase": (
        "tricky",
        {"pre_tokenizer": "punctuation", "lowercase": True},
        {
            "test.npy": "8685c30273e64686",
            "train.npy": "d65bd407d713bdad",
            "valid.npy": "e657f43036b0a3a4",
            "vocab.json": "a605fc8ee3320af6",
        },
        {"train": (920, 8360, 120), "valid": (309, 2775, 43), "test": (184, 1672, 24)},
    ),
    "tricky-sentencepiece": (
        "tricky",
        {"tokenizer": "sentencepiece", "vocab_size": 140},
        {
            "test.npy": "abfde91ffdd00d72",
            "train.npy": "2c85e3b0d3644f74",
            "valid.npy": "724d15c43b454ab6",
            "vocab.json": "7bad03e76a412500",
        },
        {"train": (920, 17426, 120), "valid": (309, 5814, 41), "test": (184, 3486, 24)},
    ),
    "tricky-noeos-vocab50": (
        "tricky",
        {"add_eos": False, "vocab_size": 50},
        {
            "test.npy": "52bb347b9c206681",
            "train.npy": "ce818e9df2f566b6",
            "valid.npy": "77f60f4cd78fffeb",
            "vocab.json": "19d7f0843db86969",
        },
        {"train": (920, 6000, 1000), "valid": (309, 1993, 339), "test": (184, 1200, 200)},
    ),
}


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in directory.iterdir()
        if path.name not in ("meta.json", "spm.model", "tokenizer.json")
    }


def assert_tokenizer_encodes_the_splits(directory: Path, source: dict) -> None:
    """The saved word tokenizer, loaded as scoring loads it, gives each split's prepared ids."""
    vocab, *_ = load_corpus(directory)
    for split in SPLIT_NAMES:
        lines = Path(source[f"{split}_file"]).read_text(encoding="utf-8").splitlines()
        assert np.array_equal(vocab.encode_lines(lines), np.load(directory / f"{split}.npy")), split


@pytest.mark.parametrize("case", PINNED)
def test_same_files_as_before_streaming(case, sources, tmp_path: Path):
    source, options, files, stats = PINNED[case]
    meta = prepare(tmp_path / case, **sources[source], **options)
    assert {split: (s["lines"], s["tokens"], s["unk"]) for split, s in meta["splits"].items()} == stats
    assert digests(tmp_path / case) == files
    if (tmp_path / case / "tokenizer.json").is_file() and source == "ptb":
        assert_tokenizer_encodes_the_splits(tmp_path / case, sources[source])


def test_block_and_window_sizes_change_nothing(sources, tmp_path: Path, monkeypatch):
    """Blocks of 4 KiB and windows of 64 characters cut lines and batches everywhere: same files."""
    source, options, files, _ = PINNED["tricky-punctuation-lowercase"]
    monkeypatch.setattr(data_prep.sources, "BLOCK_BYTES", 4096)
    monkeypatch.setattr("charlm.text.backends.WINDOW_CHARS", 64)
    prepare(tmp_path / "small-steps", **sources[source], **options)
    assert digests(tmp_path / "small-steps") == files


# -- the pieces of streaming: words as the tokenizer finds them, however the text is cut ------

TRICKY_PIECES = [
    "a",
    "B",
    "é",
    "e\u0301",
    "Σ",
    "ς",
    "ß",
    "İ",
    "\u0301",
    "3",
    "_",
    "'",
    ".",
    "-",
    "🚀",
    "\u200b",
    "\x00",
    " ",
    "  ",
    "\t",
    "\x1c",
    "\x1f",
    "\x85",
    "\xa0",
    "\u2028",
    "\u3000",
    "<unk>",
    "<eos>",
    "<",
    ">",
    "unk",
    "eos",
    "<un",
    "k>",
]
texts = st.lists(st.sampled_from(TRICKY_PIECES), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(text=texts, pre_tokenizer=st.sampled_from(["whitespace", "punctuation"]))
def test_split_words_is_the_word_tokenizer(text, pre_tokenizer):
    """split_words (Python's str.split in the common case) finds exactly the words of the
    tokenizers-library tokenizer that the corpus keeps as tokenizer.json."""
    tokenizer = WordTokenizer(WordTokenizer.build({"<unk>": 0, "<eos>": 1}, pre_tokenizer), pre_tokenizer)
    assert split_words(text, pre_tokenizer) == tokenizer.tokenize(text)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(texts, max_size=6),
    lowercase=st.booleans(),
    add_eos=st.booleans(),
    pre_tokenizer=st.sampled_from(["whitespace", "punctuation"]),
    window=st.integers(1, 30),
)
def test_lines_as_one_text_cut_anywhere_tokenize_like_each_line(lines, lowercase, add_eos, pre_tokenizer, window):
    """Normalising and tokenizing the joined lines, window by window, equals doing it line by
    line and appending <eos> (what charlm prepare did before streaming)."""
    tokenizer = WordTokenizer(WordTokenizer.build({"<unk>": 0, "<eos>": 1}, pre_tokenizer), pre_tokenizer)
    expected = []
    for line in lines:
        expected += tokenizer.tokenize(normalize_text(line, lowercase)) + ([EOS_WORD] if add_eos else [])
    text = lines_text(lines, lowercase, add_eos)
    assert "".join(text_windows(text, window)) == text
    assert [w for piece in text_windows(text, window) for w in split_words(piece, pre_tokenizer)] == expected


def test_vocabulary_train_reads_a_stream_once():
    lines = ["the cat sat", "the dog", "<unk> cat"]
    options = VocabOptions(min_freq=1)
    streamed = Vocabulary.train(iter(lines), options)
    assert streamed.words == ["<unk>", "<eos>", "cat", "the", "dog", "sat"]
    assert streamed.encode_lines(["the bird sat"]).tolist() == [3, 0, 5, 1]


def test_worker_processes_change_nothing(tmp_path: Path, monkeypatch):
    """Batches numbered by two worker processes (after the first three, numbered here) give the
    files one process gives, carved splits included."""
    train = synthetic(tmp_path / "train.txt", tokens=300_000, vocab_size=20_000)
    monkeypatch.setattr(data_prep.sources, "BLOCK_BYTES", 50_000)  # about 35 batches
    monkeypatch.setattr(data_prep.words, "IN_PROCESS_BATCHES", 3)
    alone = prepare(tmp_path / "alone", train_file=str(train), workers=1)
    shared = prepare(tmp_path / "shared", train_file=str(train), workers=2)
    assert alone["splits"] == shared["splits"]
    assert digests(tmp_path / "alone") == digests(tmp_path / "shared")


# -- carving by a hash of the line number ---------------------------------------------------


def test_carving_depends_on_the_line_number_only():
    carving = Carving(["valid", "test"], {"valid": 0.1, "test": 0.05}, seed=7)
    whole = carving.assign(0, 200_000)
    pieces = np.concatenate([carving.assign(start, 1000) for start in range(0, 200_000, 1000)])
    assert np.array_equal(whole, pieces)  # any batching gives the same choice
    shares = np.bincount(whole, minlength=3) / len(whole)
    assert np.allclose(shares, [0.85, 0.1, 0.05], atol=0.005)
    assert not np.array_equal(
        whole, Carving(["valid", "test"], {"valid": 0.1, "test": 0.05}, seed=8).assign(0, 200_000)
    )


def test_carved_splits_do_not_depend_on_the_batch_size(tmp_path: Path, monkeypatch):
    text = synthetic(tmp_path / "text.txt", tokens=60_000, vocab_size=2000)
    first = prepare(tmp_path / "a", train_file=str(text))
    monkeypatch.setattr(data_prep.sources, "BLOCK_BYTES", 1000)
    second = prepare(tmp_path / "b", train_file=str(text))
    assert first["splits"] == second["splits"] and first["carved_splits"] == ["valid", "test"]
    a, b = load_corpus(tmp_path / "a")[1], load_corpus(tmp_path / "b")[1]
    assert all(np.array_equal(a[split], b[split]) for split in SPLIT_NAMES)


def test_too_few_lines_to_carve(tmp_path: Path, capsys):
    (tmp_path / "one.txt").write_text("just one line\n")
    err = one_line_error(capsys, "--train-file", tmp_path / "one.txt", "--output-dir", tmp_path / "out")
    assert "the train split has only 1 lines, too few to carve valid and test out of it" in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()


# -- memory ---------------------------------------------------------------------------------

MEMORY_CHILD = """
import resource, sys
from data_prep.prepare import PrepareConfig, prepare_corpus

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) << 10

headroom = int(sys.argv[1])
limit = status("VmSize") + headroom  # virtual memory after the imports, plus the headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
rss = status("VmRSS")
prepare_corpus(PrepareConfig(train_file=sys.argv[2], valid_file=sys.argv[3], test_file=sys.argv[3],
                             output_dir=sys.argv[4], workers=1), verbose=False)
print(status("VmHWM") - rss)
"""


@pytest.mark.slow
def test_a_corpus_larger_than_the_memory_limit_prepares(tmp_path: Path):
    """64 MiB of address space beyond what the imports take, for 75 MB of text (12M tokens),
    in one process: the preparation before streaming needed 1.8 GB here and failed with a
    MemoryError."""
    headroom = 64 << 20
    train = synthetic(tmp_path / "train.txt", tokens=12_000_000, vocab_size=5000)
    held_out = synthetic(tmp_path / "held-out.txt", tokens=20_000, vocab_size=5000, seed=1)
    assert train.stat().st_size > headroom
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(headroom), str(train), str(held_out), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rss_growth = int(result.stdout.split()[-1])
    assert rss_growth < headroom
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] > 12_000_000


# -- bad input ------------------------------------------------------------------------------


def file_with_a_bad_byte(path: Path, bad_line: int, lines: int) -> tuple[int, int]:
    """``lines`` lines of synthetic text with byte 0xff in line ``bad_line``; returns (line,
    byte offset) of the bad byte."""
    text = synthetic(path, tokens=20 * lines, vocab_size=3000).read_bytes().split(b"\n")[:lines]
    text[bad_line - 1] = b"caf\xff " + text[bad_line - 1]
    path.write_bytes(b"\n".join(text) + b"\n")
    return bad_line, sum(len(line) + 1 for line in text[: bad_line - 1]) + 3


@pytest.mark.parametrize("split", ["train", "valid"])
def test_not_utf8_deep_in_a_file(tmp_path: Path, capsys, split):
    """A file that stops being UTF-8 at line 30,000 (past several read blocks): one line naming
    the file, the line and the byte offset; nothing left behind."""
    files = {
        s: str(synthetic(tmp_path / f"{s}.txt", tokens=2000, vocab_size=300, seed=i)) for i, s in enumerate(SPLIT_NAMES)
    }
    line, offset = file_with_a_bad_byte(tmp_path / f"{split}.txt", bad_line=30_000, lines=40_000)
    assert (tmp_path / f"{split}.txt").stat().st_size > 3 * data_prep.sources.BLOCK_BYTES
    err = one_line_error(capsys, *[f"--{s}-file={files[s]}" for s in SPLIT_NAMES], "--output-dir", tmp_path / "out")
    assert f"{split}.txt is not UTF-8 text: invalid byte 0xff at byte offset {offset} (line {line})" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_line_longer_than_the_limit(tmp_path: Path, capsys, monkeypatch):
    """Lines up to MAX_LINE_BYTES (256 MiB) are prepared (a 100 MB one is tested below); a
    longer one is one line naming the file and the line."""
    monkeypatch.setattr(data_prep.sources, "BLOCK_BYTES", 1000)
    monkeypatch.setattr(data_prep.sources, "MAX_LINE_BYTES", 10_000)
    (tmp_path / "train.txt").write_text("a short line\n" + "word " * 3000 + "\nend\n")
    err = one_line_error(capsys, "--train-file", tmp_path / "train.txt", "--output-dir", tmp_path / "out")
    assert "line 2 of" in err and "train.txt is longer than" in err and "break it into lines" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


HUGE_LINE_CHILD = """
import sys
from data_prep.prepare import PrepareConfig, prepare_corpus
meta = prepare_corpus(PrepareConfig(train_file=sys.argv[1], valid_file=sys.argv[2], test_file=sys.argv[2],
                                    output_dir=sys.argv[3]), verbose=False)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print(meta["splits"]["train"]["tokens"], int(line.split()[1]) << 10)
"""


@pytest.mark.slow
def test_a_100_megabyte_line_prepares(tmp_path: Path):
    """One line of 100 MB (like text8): prepared, in memory a few times its size."""
    words = [f"w{i}" for i in range(1000)]
    unit = (" ".join(words) + " ").encode()
    repeats = 100_000_000 // len(unit) + 1
    with open(tmp_path / "train.txt", "wb") as out:
        for _ in range(repeats):
            out.write(unit)
        out.write(b"\n")
    (tmp_path / "held-out.txt").write_text("w1 w2 w3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            HUGE_LINE_CHILD,
            str(tmp_path / "train.txt"),
            str(tmp_path / "held-out.txt"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokens, peak_rss = map(int, result.stdout.split())
    assert tokens == 1000 * repeats + 1  # the words and one <eos>
    assert peak_rss < 1.5e9
    vocab, splits, _ = load_corpus(tmp_path / "out")
    assert len(vocab) == 1002 and splits["train"][:3].tolist() == [vocab.word_id(w) for w in words[:3]]


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.file.write(data)

    def seek(self, *args) -> int:
        return self.file.seek(*args)

    def close(self) -> None:
        self.file.close()


@pytest.mark.parametrize("room", [0, 200, 1_000_000])
def test_full_disk(tmp_path: Path, capsys, monkeypatch, room):
    """The disk fills up while the arrays are written: one line naming the file and the reason."""
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FullDisk(file, room) if mode == "wb" else file

    monkeypatch.setattr(data_prep.output, "open", open_on_a_full_disk, raising=False)
    train = synthetic(tmp_path / "train.txt", tokens=600_000, vocab_size=2000)
    err = one_line_error(capsys, "--train-file", train, "--output-dir", tmp_path / "out")
    assert "train.npy (No space left on device); free some disk space or choose another --output-dir" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_killed_run_leaves_no_corpus_and_the_next_run_cleans_up(tmp_path: Path):
    """SIGKILL in the middle of writing: no output directory, only the hidden temporary one,
    which the next run into the same place deletes before preparing the same corpus."""
    train = synthetic(tmp_path / "train.txt", tokens=8_000_000, vocab_size=20_000)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "charlm.cli",
        "prepare",
        "--train-file",
        str(train),
        "--output-dir",
        str(out),
        "--workers",
        "2",
    ]  # worker processes whatever the machine's core count
    child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        written = [p for p in tmp_path.glob(".out.*.tmp/train.npy") if p.stat().st_size > 16 << 20]
        if written:  # past the first 32 batches: worker processes number the words
            workers = children(child.pid)
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert child.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert workers and all(gone(pid, timeout=10) for pid in workers)  # they leave on their own
    abandoned = leftovers(tmp_path)
    assert not out.exists() and len(abandoned) == 1 and abandoned[0].endswith(".tmp")
    assert main(["prepare", "--train-file", str(train), "--output-dir", str(out)]) == 0
    assert leftovers(tmp_path) == []
    prepare(tmp_path / "again", train_file=str(train))
    first, second = load_corpus(out)[1], load_corpus(tmp_path / "again")[1]
    assert all(np.array_equal(first[split], second[split]) for split in SPLIT_NAMES)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]:
            return True
        time.sleep(0.1)
    return False


def test_a_running_preparation_is_not_cleaned_up(tmp_path: Path):
    """Another run's temporary directory is deleted only once its run is gone (its lock free)."""
    out = tmp_path / "out"
    with data_prep.output.TemporaryCorpus(out) as running:
        data_prep.output.remove_abandoned(out)
        assert running.path.is_dir()
    assert not running.path.exists()


def test_unreadable_rows_of_a_streamed_dataset(tmp_path: Path, capsys):
    pytest.importorskip("datasets")
    rows = "".join(json.dumps({"text": f"line {i} of text"}) + "\n" for i in range(5000))
    (tmp_path / "rows.jsonl").write_text(rows + '{"text": "broken\n')
    err = one_line_error(capsys, "--dataset", tmp_path / "rows.jsonl", "--output-dir", tmp_path / "out")
    assert "could not read" in err and "rows.jsonl" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# -- sentencepiece on a sample ----------------------------------------------------------------


def test_sentencepiece_trains_on_a_seeded_sample(tmp_path: Path, monkeypatch):
    """Above SENTENCEPIECE_SAMPLE_SENTENCES training lines, sentencepiece trains on a seeded
    random sample of them: the same model every time, another one than on all lines."""
    train = synthetic(tmp_path / "train.txt", tokens=40_000, vocab_size=3000)
    options = dict(train_file=str(train), tokenizer="sentencepiece", vocab_size=300)
    prepare(tmp_path / "all", **options)
    monkeypatch.setattr("charlm.text.backends.SENTENCEPIECE_SAMPLE_SENTENCES", 200)
    prepare(tmp_path / "sample-1", **options)
    prepare(tmp_path / "sample-2", **options)
    words = {name: load_corpus(tmp_path / name)[0].words for name in ("all", "sample-1", "sample-2")}
    assert words["sample-1"] == words["sample-2"] != words["all"]


# -- the synthetic corpora ------------------------------------------------------------------


def test_synthetic_corpus(tmp_path: Path, capsys):
    paths = make_synthetic_corpus(tokens=50_000, vocab_size=800, seed=3, output_dir=str(tmp_path / "syn"))
    assert [p.name for p in paths] == ["train.txt", "valid.txt", "test.txt"]
    text = paths[0].read_text()
    words = text.split()
    assert len(words) == 50_000 and text.endswith("\n") and 0 < len(set(words)) <= 800
    assert len(paths[1].read_text().split()) == 2500
    counts = sorted(np.unique(words, return_counts=True)[1], reverse=True)
    assert 0.06 < counts[0] / len(words) < 0.12  # Zipf-Mandelbrot head: 1 / (2.7 * H(800))
    again = make_synthetic_corpus(tokens=50_000, vocab_size=800, seed=3, output=str(tmp_path / "again.txt"))
    other = make_synthetic_corpus(tokens=50_000, vocab_size=800, seed=4, output=str(tmp_path / "other.txt"))
    assert again[0].read_bytes() == text.encode() != other[0].read_bytes()
    with pytest.raises(CharlmError, match="exactly one of --output or --output-dir"):
        make_synthetic_corpus(tokens=10)
    script = REPO / "scripts" / "make_synthetic_corpus.py"
    result = subprocess.run(
        [sys.executable, script, "--tokens", "0", "--output", str(tmp_path / "x.txt")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2 and result.stderr == "error: --tokens must be at least 1, not 0\n"
