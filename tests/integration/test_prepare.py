"""End-to-end tests of `charlm prepare` on the real corpora, and of its error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm.cli import main
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.text import NUM_RESERVED_CHARS, VocabOptions
from data_prep.prepare import PrepareConfig, prepare_corpus

REPO = Path(__file__).resolve().parents[2]


def prepare(output_dir: Path, **options) -> dict:
    """prepare_corpus with keyword options, quietly."""
    return prepare_corpus(PrepareConfig(output_dir=str(output_dir), **options), verbose=False)


def literal_unks(path: Path) -> int:
    return path.read_text(encoding="utf-8").split().count("<unk>")


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary directories left beside an output directory."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture()
def tiny_files(tmp_path: Path) -> dict[str, str]:
    files = {}
    for split, text in {"train": "a b c\nb c\nc\n", "valid": "a c\n", "test": "b\n"}.items():
        files[f"{split}_file"] = str(tmp_path / f"{split}.txt")
        Path(files[f"{split}_file"]).write_text(text, encoding="utf-8")
    return files


# -- PTB ----------------------------------------------------------------------------------------


def test_ptb_with_defaults(prepared_ptb: Path, ptb_files: dict[str, Path]):
    vocab, splits, meta = load_corpus(prepared_ptb)
    assert meta["vocab_size"] == len(vocab) == 10000
    assert {split: meta["splits"][split]["tokens"] for split in splits} == {
        "train": 929589,
        "valid": 73760,
        "test": 82430,
    }
    for split in ("valid", "test"):  # no unknown word beyond the corpus's own <unk>
        assert meta["splits"][split]["unk"] == literal_unks(ptb_files[split])
        assert int((splits[split] == vocab.unk_id).sum()) == meta["splits"][split]["unk"]
    assert all(isinstance(ids, np.memmap) and ids.dtype == np.int32 for ids in splits.values())
    assert vocab.spellings().shape == (10000, meta["max_word_length"]) == (10000, 21)
    assert meta["char_vocab_size"] == len(vocab.chars) == NUM_RESERVED_CHARS + 46
    print(f"PTB preparation took {meta['seconds']:.1f} s")  # a figure for the notes, not a timed test


def test_ptb_sentencepiece_decodes_test_text(tmp_path: Path, ptb_files: dict[str, Path]):
    meta = prepare(
        tmp_path / "ptb-sp",
        **{f"{split}_file": str(path) for split, path in ptb_files.items()},
        tokenizer="sentencepiece",
        vocab_size=4000,
    )
    vocab, splits, _ = load_corpus(tmp_path / "ptb-sp")
    assert meta["vocab_size"] == 4000 and meta["options"]["sp_model_type"] == "unigram"
    assert meta["splits"]["test"]["unk"] == literal_unks(ptb_files["test"])
    decoded = vocab.decode(splits["test"]).splitlines()
    expected = [" ".join(line.split()) for line in ptb_files["test"].read_text().splitlines()]
    assert decoded == expected


# -- German: characters, and the datasets route -----------------------------------------------


@pytest.fixture(scope="module")
def german(shared_data: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The German Data-S files (valid.txt as train, test.txt as valid and test), prepared."""
    de = shared_data / "datas" / "de"
    files = {
        "train_file": str(de / "valid.txt"),
        "valid_file": str(de / "test.txt"),
        "test_file": str(de / "test.txt"),
    }
    output_dir = tmp_path_factory.mktemp("german") / "de"
    prepare(output_dir, **files)
    return output_dir, files


def test_german_umlauts_are_single_characters(german):
    vocab, splits, meta = load_corpus(german[0])
    for char in "äöüß":
        assert vocab.chars.count(char) == 1
    words = [w for w in vocab.words if set(w) & set("äöüß")]
    assert {"überwinden", "müssen", "größte"} <= set(words)
    for word in words:
        spelling = vocab.spell(word)
        assert "".join(vocab.chars[i] for i in spelling if i >= NUM_RESERVED_CHARS) == word
        row = vocab.spellings()[vocab.word_id(word)].tolist()
        assert row == spelling
    assert splits["valid"].tolist() == splits["test"].tolist()


def test_datasets_route_equals_file_route(german, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    output_dir, files = german
    lines = {
        split: Path(files[f"{split}_file"]).read_text(encoding="utf-8").splitlines()
        for split in ("train", "valid", "test")
    }
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": lines["train"]}),
            "validation": datasets.Dataset.from_dict({"text": lines["valid"]}),
            "test": datasets.Dataset.from_dict({"text": lines["test"]}),
        }
    ).save_to_disk(str(saved))
    meta = prepare(tmp_path / "from-dataset", dataset=str(saved))
    assert meta["source"]["kind"] == "dataset" and meta["carved_splits"] == []
    vocab_a, splits_a, _ = load_corpus(output_dir)
    vocab_b, splits_b, _ = load_corpus(tmp_path / "from-dataset")
    assert (vocab_a.words, vocab_a.chars) == (vocab_b.words, vocab_b.chars)
    for split in splits_a:
        assert np.array_equal(splits_a[split], splits_b[split])


def test_local_json_carved_by_fraction(shared_data: Path, tmp_path: Path):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    lines = text.splitlines()[:4000]
    source = tmp_path / "shakespeare.jsonl"
    source.write_text("".join(json.dumps({"line": line}) + "\n" for line in lines))
    options = dict(dataset=str(source), text_column="line", pre_tokenizer="punctuation", valid_fraction=0.1)
    first = prepare(tmp_path / "a", **options)
    prepare(tmp_path / "b", **options)
    prepare(tmp_path / "c", **options, split_seed=1)
    assert first["carved_splits"] == ["valid", "test"]
    non_blank = sum(1 for line in lines if line.strip())
    assert sum(first["splits"][split]["lines"] for split in first["splits"]) == non_blank
    for split, fraction in (("valid", 0.1), ("test", 0.05)):  # each line by a seeded coin: binomial
        spread = 3 * (non_blank * fraction * (1 - fraction)) ** 0.5
        assert abs(first["splits"][split]["lines"] - fraction * non_blank) < spread
    _, a, _ = load_corpus(tmp_path / "a")
    _, b, _ = load_corpus(tmp_path / "b")
    _, c, _ = load_corpus(tmp_path / "c")
    assert all(np.array_equal(a[split], b[split]) for split in a)
    assert not np.array_equal(a["valid"], c["valid"])


def test_plain_text_file_as_dataset(tiny_files, tmp_path: Path):
    meta = prepare(tmp_path / "out", dataset=tiny_files["train_file"], valid_fraction=0.34, test_fraction=0.34)
    lines = {split: stats["lines"] for split, stats in meta["splits"].items()}
    assert lines == {"train": 1, "valid": 1, "test": 1}


# -- demo ---------------------------------------------------------------------------------------


def test_demo_corpus_prepares_offline(tmp_path: Path, capsys):
    assert main(["prepare", "--demo", "--output-dir", str(tmp_path / "demo")]) == 0
    assert "prepared" in capsys.readouterr().out
    vocab, splits, meta = load_corpus(tmp_path / "demo")
    assert meta["source"]["kind"] == "demo"
    assert meta["options"]["pre_tokenizer"] == "punctuation" and meta["options"]["lowercase"] is True
    assert meta["splits"]["train"]["tokens"] > 50_000 and meta["splits"]["train"]["unk"] == 0
    assert 0 < meta["splits"]["test"]["tokens"] < meta["splits"]["train"]["tokens"] / 10
    assert vocab.word_id("statement") != vocab.unk_id


@pytest.mark.slow
def test_script_wrapper(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "scripts/prepare_corpus.py", "--demo", "--output-dir", str(tmp_path / "d")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "meta.json").is_file()


# -- the output directory ---------------------------------------------------------------------


def test_same_corpus_is_replaced_other_content_is_refused(tiny_files, tmp_path: Path):
    out = tmp_path / "out"
    prepare(out, **tiny_files)
    (out / "stale").write_text("from an older run")
    prepare(out, **tiny_files)  # same source and options: replaced
    assert not (out / "stale").exists() and leftovers(tmp_path) == []
    refused = "another source or with other options; choose another --output-dir or delete it"
    with pytest.raises(CharlmError, match=refused):
        prepare(out, **tiny_files, min_freq=2)
    assert (out / "meta.json").is_file()  # the existing corpus is untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = "holds no prepared corpus; choose another --output-dir or delete it"
    with pytest.raises(CharlmError, match=refused):
        prepare(other, **tiny_files)
    assert [p.name for p in other.iterdir()] == ["notes.txt"] and leftovers(tmp_path) == []


# -- bad input: one-line errors, nothing left behind ------------------------------------------


def run_cli(capsys, *argv: str) -> str:
    """Run `charlm prepare ...`; check exit status 2 and a one-line error; return the line."""
    assert main(["prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_cli_missing_file(tmp_path: Path, capsys):
    out = str(tmp_path / "out")
    err = run_cli(capsys, "--train-file", str(tmp_path / "nope.txt"), "--output-dir", out)
    assert "--train-file" in err and "nope.txt does not exist" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_cli_empty_split(tiny_files, tmp_path: Path, capsys):
    Path(tiny_files["test_file"]).write_text("  \n\t\n", encoding="utf-8")
    files = [f"--{name.replace('_', '-')}={path}" for name, path in tiny_files.items()]
    err = run_cli(capsys, *files, "--output-dir", str(tmp_path / "out"))
    assert "test split is empty" in err and "test.txt" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_cli_vocab_size_below_reserved(tiny_files, tmp_path: Path, capsys):
    out = str(tmp_path / "out")
    err = run_cli(capsys, "--train-file", tiny_files["train_file"], "--vocab-size", "1", "--output-dir", out)
    assert "--vocab-size 1 is too small" in err
    assert not (tmp_path / "out").exists()


def test_cli_no_source_and_two_sources(tiny_files, tmp_path: Path, capsys):
    assert "no source given" in run_cli(capsys, "--output-dir", str(tmp_path / "out"))
    out = str(tmp_path / "out")
    err = run_cli(capsys, "--demo", "--train-file", tiny_files["train_file"], "--output-dir", out)
    assert "two sources given (--train-file and --demo)" in err
    with pytest.raises(CharlmError, match="two sources given"):
        PrepareConfig(output_dir=str(tmp_path / "out"), demo=True, dataset="x.jsonl")
    assert not (tmp_path / "out").exists()


def test_not_utf8_names_file_and_offset(tiny_files, tmp_path: Path):
    Path(tiny_files["valid_file"]).write_bytes("gr\u00fc\u00df\n".encode("utf-8") + b"caf\xe9\n")
    message = r"valid\.txt is not UTF-8 text: invalid byte 0xe9 at byte offset 10 \(line 2\)"
    with pytest.raises(CharlmError, match=message):
        prepare(tmp_path / "out", **tiny_files)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_sentencepiece_vocab_size_too_small(tiny_files, tmp_path: Path):
    with pytest.raises(CharlmError, match="sentencepiece could not train with --vocab-size 3"):
        prepare(tmp_path / "out", **tiny_files, tokenizer="sentencepiece", vocab_size=3)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_dataset_errors(tmp_path: Path):
    with pytest.raises(CharlmError, match="no such file or directory"):
        prepare(tmp_path / "out", dataset=str(tmp_path / "missing.jsonl"))
    source = tmp_path / "rows.jsonl"
    source.write_text('{"body": "a b"}\n{"body": "c d"}\n', encoding="utf-8")
    with pytest.raises(CharlmError, match="has no column 'text' \\(columns: body\\)"):
        prepare(tmp_path / "out", dataset=str(source))
    assert not (tmp_path / "out").exists()


def test_load_corpus_errors(tiny_files, tmp_path: Path):
    with pytest.raises(CharlmError, match="does not exist"):
        load_corpus(tmp_path / "absent")
    prepare(tmp_path / "out", **tiny_files)
    (tmp_path / "out" / "test.npy").unlink()
    with pytest.raises(CharlmError, match="test.npy not found: the corpus is incomplete"):
        load_corpus(tmp_path / "out")
    (tmp_path / "out" / "meta.json").unlink()
    with pytest.raises(CharlmError, match="meta.json not found"):
        load_corpus(tmp_path / "out")


def test_options_recorded_and_no_eos(tiny_files, tmp_path: Path):
    meta = prepare(tmp_path / "out", **tiny_files, add_eos=False, vocab_size=3)
    assert meta["options"] == {
        **{k: v for k, v in vars(VocabOptions()).items()},
        "pre_tokenizer": "whitespace",
        "lowercase": False,
        "add_eos": False,
        "vocab_size": 3,
        "valid_fraction": 0.05,
        "test_fraction": 0.05,
        "split_seed": 0,
    }
    assert meta["splits"]["train"]["tokens"] == 6 and meta["splits"]["train"]["unk"] == 3
