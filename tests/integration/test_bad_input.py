"""Bad input to every command: a correct result or a one-line error, never a traceback or half an output.

Each case runs ``charlm.cli.main([...])`` in-process. "A one-line error" is exit status 2 and exactly
one line, ``error: ...``, on stderr (``helpers_model.assert_one_line_error``); after an error the
output the command was asked for (folder or file) must not exist.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_model import (  # noqa: F401  (trained: a fixture)
    assert_one_line_error,
    prepare,
    run_cli,
    synthetic_lines,
    tiny_config,
    trained,
    write_lines,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from charlm.checkpoint import export_model
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.model import CharLM
from charlm.text import NUM_RESERVED_CHARS, SPECIAL_WORDS, UNK_CHAR
from data_prep.prepare import PrepareConfig, prepare_corpus

TINY_TRAIN = [
    "--config",
    "tiny",
    "model.kernel_widths=[1,2]",
    "model.num_filters=[4,4]",
    "model.hidden_size=8",
    "train.batch_size=2",
    "train.seq_len=4",
    "train.max_steps=2",
]


def _random_bytes() -> bytes:
    rng = random.Random(0)
    return b"\xff\x00" + bytes(rng.randrange(256) for _ in range(4000)) + b"\x00\x00"


# name -> (file content, None if the command must succeed, else a piece of the one-line error)
TEXTS: dict[str, tuple[bytes, str | None]] = {
    "empty": (b"", "empty"),
    "whitespace-only": ("  \n\t\r\n\x0b\x0c\n \u3000\n".encode(), "empty"),
    "invalid-utf8": (b"the trader \xff\xfe bought the stock .\n" * 3, "UTF-8"),
    "binary-with-nuls": (_random_bytes(), "UTF-8"),
    "nul-characters": (b"the\x00trader bought\x00 the stock .\n" * 20, None),
    "enormous-line": ((b"the trader bought the stock . " * 70_000)[:2_000_000], None),
    "10000-character-words": (("a" * 10_000 + " the trader " + "b" * 10_000 + " .\n").encode() * 20, None),
    "control-characters": (
        "the\x01 trader\x1b[31m bought\x7f the\u200b stock\u2028 today\x85 .\x08\n".encode() * 20,
        None,
    ),
    "mixed-scripts-emoji": ("the trader 買った la acción 🚀🔥 ελληνικά مرحبا 👩‍👩‍👧 .\n".encode() * 20, None),
}
GOOD = {name for name, (_, error) in TEXTS.items() if error is None}


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    for name, (data, _) in TEXTS.items():
        (folder / name).write_bytes(data)
    return folder


def check(capsys, argv: list, error: str | None, outputs: list[Path] = ()) -> tuple[str, str]:
    """Run a command; it must succeed (``error`` None) or fail with one line naming ``error``, leaving
    none of ``outputs``. Returns (stdout, stderr)."""
    code, out, err = run_cli(capsys, *argv)
    if error is None:
        assert code == 0, err
        assert "Traceback" not in err
    else:
        line = assert_one_line_error(code, err)
        assert error in line, line
        for path in outputs:
            assert not path.exists(), f"{path} was left behind"
    return out, err


def no_leftovers(folder: Path) -> list[str]:
    """Hidden temporary siblings a failed command could leave (prepare writes .NAME.*.tmp)."""
    return [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old"))]


# ------------------------------------------------------------------------------ text files, every command


@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize("split", ["train", "valid"])
def test_prepare_with_a_bad_text_file(trained, texts, tmp_path, capsys, name, split):
    files = {s: trained.data_dir.parent / f"{s}.txt" for s in ("train", "valid", "test")}
    files[split] = texts / name
    out = tmp_path / "corpus"
    check(
        capsys,
        [
            "prepare",
            "--train-file",
            files["train"],
            "--valid-file",
            files["valid"],
            "--test-file",
            files["test"],
            "--output-dir",
            out,
        ],
        TEXTS[name][1],
        [out],
    )
    assert not no_leftovers(tmp_path)
    if TEXTS[name][1] is None:
        vocab, splits, _ = load_corpus(out)
        assert all(len(ids) > 0 for ids in splits.values())


@pytest.mark.parametrize("name", TEXTS)
def test_perplexity_of_a_bad_text_file(trained, texts, tmp_path, capsys, name):
    per_token = tmp_path / "tokens.tsv"
    out, _ = check(
        capsys,
        ["perplexity", "--checkpoint", trained.model_dir, "--text-file", texts / name, "--per-token", per_token],
        TEXTS[name][1],
        [per_token],
    )
    if TEXTS[name][1] is None:
        assert out.startswith("perplexity ") and "nan" not in out and per_token.is_file()


@pytest.mark.parametrize("name", TEXTS)
def test_gates_of_a_bad_text_file(trained, texts, tmp_path, capsys, name):
    prefix = tmp_path / "gates"
    outputs = [prefix.with_name("gates" + ext) for ext in (".csv", ".json", ".png")]
    check(
        capsys,
        ["gates", "--checkpoint", trained.model_dir, "--text-file", texts / name, "--output", prefix],
        TEXTS[name][1],
        outputs,
    )
    if TEXTS[name][1] is None:
        assert outputs[0].is_file() and outputs[1].is_file()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_train_on_a_corpus_of_odd_text_then_use_the_model(trained, texts, tmp_path, capsys, name):
    """Odd text that prepares fine trains (two updates) and the model reads the same text back."""
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    valid = trained.data_dir.parent / "valid.txt"
    check(
        capsys,
        [
            "prepare",
            "--train-file",
            texts / name,
            "--valid-file",
            valid,
            "--test-file",
            texts / name,
            "--output-dir",
            corpus,
        ],
        None,
    )
    check(capsys, ["train", "--data-dir", corpus, "--output-dir", run, *TINY_TRAIN], None)
    out, _ = check(capsys, ["perplexity", "--checkpoint", run / "best", "--text-file", texts / name], None)
    assert "nan" not in out


@pytest.mark.parametrize("name", sorted(GOOD))
def test_generate_and_neighbors_with_odd_text(trained, name, capsys):
    text = TEXTS[name][0].decode("utf-8")[:3000]
    out, _ = check(
        capsys,
        ["generate", "--checkpoint", trained.model_dir, "--prompt", text, "--seed", "1", "--max-words", "3", "--json"],
        None,
    )
    record = json.loads(out)  # one sample of at most 3 words after the odd prompt, no error
    assert record["prompt"] == text and len(record["samples"]) == 1 and 1 <= record["words"] <= 3, record
    words = text.split()[:3] or [text]
    check(capsys, ["neighbors", "--checkpoint", trained.model_dir, "-k", "2", *words], None)


@pytest.mark.parametrize("prompt", ["Привет мир ☃", "你好，世界", "🚀🔥👩‍👩‍👧", "שלום עולם", "\u0301\u0301", ""])
def test_prompt_in_a_script_never_seen_in_training(trained, capsys, prompt):
    out, _ = check(
        capsys,
        [
            "generate",
            "--checkpoint",
            trained.model_dir,
            "--prompt",
            prompt,
            "--seed",
            "1",
            "--max-words",
            "4",
            "--json",
        ],
        None,
    )
    assert '"samples"' in out
    if prompt:
        check(capsys, ["neighbors", "--checkpoint", trained.model_dir, "-k", "3", prompt], None)


def test_prompt_that_is_not_utf8_is_one_line(trained, capsys):
    """Bytes that are not UTF-8 reach sys.argv as lone surrogates ("surrogateescape")."""
    bad = b"the \xff trader".decode("utf-8", "surrogateescape")
    check(capsys, ["generate", "--checkpoint", trained.model_dir, "--prompt", bad], "--prompt is not UTF-8")


# ------------------------------------------------------------------------------ missing splits, wrong paths


@pytest.fixture(scope="module")
def broken_corpora(trained, tmp_path_factory) -> dict[str, Path]:
    """Copies of the prepared corpus, each damaged one way."""
    base = tmp_path_factory.mktemp("broken")
    damage = {
        "missing-valid-split": lambda d: (d / "valid.npy").unlink(),
        "missing-test-split": lambda d: (d / "test.npy").unlink(),
        "truncated-train-split": lambda d: (d / "train.npy").write_bytes((d / "train.npy").read_bytes()[:150]),
        "binary-meta": lambda d: (d / "meta.json").write_bytes(b"\xff\x00\x01"),
        "missing-vocab": lambda d: (d / "vocab.json").unlink(),
        "binary-tokenizer": lambda d: (d / "tokenizer.json").write_bytes(_random_bytes()),
    }
    dirs = {}
    for name, apply in damage.items():
        dirs[name] = base / name
        shutil.copytree(trained.data_dir, dirs[name])
        apply(dirs[name])
    return dirs


CORPUS_DAMAGE = {
    "missing-valid-split": "valid.npy not found",
    "missing-test-split": "test.npy not found",
    "truncated-train-split": "train.npy is not a readable .npy array",
    "binary-meta": "meta.json is not readable JSON",
    "missing-vocab": "vocab.json not found",
    "binary-tokenizer": "tokenizer.json is malformed",
}


@pytest.mark.parametrize("damage", CORPUS_DAMAGE)
@pytest.mark.parametrize("command", ["train", "perplexity", "gates"])
def test_damaged_corpus(trained, broken_corpora, tmp_path, capsys, damage, command):
    corpus = broken_corpora[damage]
    out = tmp_path / "out"
    argv = {
        "train": ["train", "--data-dir", corpus, "--output-dir", out, *TINY_TRAIN],
        "perplexity": [
            "perplexity",
            "--checkpoint",
            trained.model_dir,
            "--data-dir",
            corpus,
            "--split",
            "test",
            "--per-token",
            out,
        ],
        "gates": ["gates", "--checkpoint", trained.model_dir, "--data-dir", corpus, "--split", "test", "--output", out],
    }[command]
    check(capsys, argv, CORPUS_DAMAGE[damage], [out, out.with_name("out.csv"), out.with_name("out.json")])


WRONG_PATHS = {
    # name: (argv with {corpus} {model} {text} {file} {dir} {missing} {out}, piece of the error)
    "prepare-missing-train": (["prepare", "--train-file", "{missing}", "--output-dir", "{out}"], "does not exist"),
    "prepare-missing-valid": (
        [
            "prepare",
            "--train-file",
            "{text}",
            "--valid-file",
            "{missing}",
            "--test-file",
            "{text}",
            "--output-dir",
            "{out}",
        ],
        "does not exist",
    ),
    "prepare-train-is-a-folder": (["prepare", "--train-file", "{dir}", "--output-dir", "{out}"], "is not a file"),
    "prepare-output-is-a-file": (
        [
            "prepare",
            "--train-file",
            "{text}",
            "--valid-file",
            "{text}",
            "--test-file",
            "{text}",
            "--output-dir",
            "{file}",
        ],
        "is a file",
    ),
    "train-missing-corpus": (["train", "--data-dir", "{missing}", "--output-dir", "{out}"], "does not exist"),
    "train-corpus-is-a-text-file": (["train", "--data-dir", "{text}", "--output-dir", "{out}"], "does not exist"),
    "train-corpus-is-a-model": (["train", "--data-dir", "{model}", "--output-dir", "{out}"], "not a prepared corpus"),
    "train-missing-config": (
        ["train", "--config", "{missing}", "--data-dir", "{corpus}", "--output-dir", "{out}"],
        "not found",
    ),
    "train-output-is-a-file": (["train", "--data-dir", "{corpus}", "--output-dir", "{file}"], "is a file"),
    "train-output-under-a-file": (["train", "--data-dir", "{corpus}", "--output-dir", "{file}/run"], "cannot write"),
    "perplexity-missing-model": (
        ["perplexity", "--checkpoint", "{missing}", "--text-file", "{text}"],
        "does not exist",
    ),
    "perplexity-model-is-a-corpus": (
        ["perplexity", "--checkpoint", "{corpus}", "--text-file", "{text}"],
        "model.safetensors is missing",
    ),
    "perplexity-missing-text": (["perplexity", "--checkpoint", "{model}", "--text-file", "{missing}"], "not found"),
    "perplexity-text-is-a-folder": (["perplexity", "--checkpoint", "{model}", "--text-file", "{dir}"], "not found"),
    "perplexity-other-vocabulary": (
        ["perplexity", "--checkpoint", "{model}", "--data-dir", "{other}"],
        "different vocabulary",
    ),
    "perplexity-per-token-missing-folder": (
        ["perplexity", "--checkpoint", "{model}", "--text-file", "{text}", "--per-token", "{missing}/x.tsv"],
        "does not exist",
    ),
    "generate-missing-model": (["generate", "--checkpoint", "{missing}"], "does not exist"),
    "neighbors-missing-model": (["neighbors", "--checkpoint", "{missing}", "trader"], "does not exist"),
    "gates-missing-text": (
        ["gates", "--checkpoint", "{model}", "--text-file", "{missing}", "--output", "{out}"],
        "not found",
    ),
    "gates-output-under-a-file": (
        ["gates", "--checkpoint", "{model}", "--text-file", "{text}", "--output", "{file}/g"],
        "is a file",
    ),
}


@pytest.mark.parametrize("case", WRONG_PATHS)
def test_wrong_paths(trained, tmp_path, capsys, case):
    argv, error = WRONG_PATHS[case]
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    places = {
        "corpus": trained.data_dir,
        "model": trained.model_dir,
        "text": trained.text_file,
        "other": trained.other_data_dir,
        "file": tmp_path / "a-file",
        "dir": tmp_path / "a-folder",
        "missing": tmp_path / "missing",
        "out": tmp_path / "out",
    }
    check(capsys, [arg.format(**places) for arg in argv], error, [tmp_path / "out", tmp_path / "missing"])
    assert (tmp_path / "a-file").read_text() == "not a folder\n"


# ------------------------------------------------------------------------------ configs


CONFIGS = {
    "unknown-key": (b"model:\n  hiden_size: 30\n", "did you mean model.hidden_size"),
    "unknown-section": (b"optim:\n  lr: 1\n", "unknown config key 'optim'"),
    "mistyped-value": (b"train:\n  lr: fast\n", "train.lr must be of type float"),
    "float-for-int": (b"train:\n  max_epochs: 1.5\n", "train.max_epochs must be of type int"),
    "scalar-for-list": (b"model:\n  kernel_widths: 3\n", "must be a list"),
    "out-of-range": (b"model:\n  dropout: 1.5\n", "model.dropout must be in [0, 1)"),
    "not-finite": (b"train:\n  lr: .nan\n", "finite"),
    "not-a-mapping": (b"- model\n- train\n", "must be a mapping"),
    "section-not-a-mapping": (b"model: [1, 2]\n", "must be a mapping"),
    "invalid-yaml": (b"model: {hidden_size: 3\n", "not valid YAML"),
    "binary": (_random_bytes(), "not valid YAML"),
}
OVERRIDES = {
    "unknown-override": (["train.batchsize=3"], "did you mean train.batch_size"),
    "ambiguous-bare-key": (["nonsense=1"], "unknown config key"),
    "no-equals": (["train.lr"], "not of the form"),
    "mistyped-override": (["train.batch_size=big"], "must be of type int"),
    "unclosed-list": (["model.kernel_widths=[1,2"], "must be a list"),
    "choice": (["train.optimizer=rmsprop"], "train.optimizer must be one of"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_config_file(trained, tmp_path, capsys, name):
    data, error = CONFIGS[name]
    (tmp_path / "config.yaml").write_bytes(data)
    check(
        capsys,
        [
            "train",
            "--config",
            tmp_path / "config.yaml",
            "--data-dir",
            trained.data_dir,
            "--output-dir",
            tmp_path / "run",
        ],
        error,
        [tmp_path / "run"],
    )


@pytest.mark.parametrize("name", OVERRIDES)
def test_bad_override(trained, tmp_path, capsys, name):
    overrides, error = OVERRIDES[name]
    check(
        capsys,
        ["train", "--data-dir", trained.data_dir, "--output-dir", tmp_path / "run", *overrides],
        error,
        [tmp_path / "run"],
    )


@pytest.mark.parametrize(
    "ref, error",
    [
        (
            "ptb-char-smal",
            "unknown config 'ptb-char-smal': pass a YAML file or one of the shipped configs: ptb-char-large",
        ),
        ("missing/char.yaml", "config file missing/char.yaml not found"),
    ],
)
def test_unknown_config(trained, tmp_path, capsys, ref, error):
    check(
        capsys,
        ["train", "--config", ref, "--data-dir", trained.data_dir, "--output-dir", tmp_path / "run"],
        error,
        [tmp_path / "run"],
    )


def test_exponent_without_a_dot_is_a_float(trained, tmp_path, capsys):
    """YAML reads 1e-3 as text; a float field takes it as the number it is."""
    check(
        capsys,
        ["train", "--data-dir", trained.data_dir, "--output-dir", tmp_path / "run", *TINY_TRAIN, "train.lr=1e-3"],
        None,
    )


# ------------------------------------------------------------------------------ damaged model directories


@pytest.fixture(scope="module")
def foreign(trained, tmp_path_factory) -> dict[str, Path]:
    """A corpus whose vocabulary has exactly the model's sizes but other words (a and e swapped
    everywhere), and an export of another architecture on the model's own vocabulary."""
    base = tmp_path_factory.mktemp("foreign")
    swap = str.maketrans("ae", "ea")
    lines = {
        s: (trained.data_dir.parent / f"{s}.txt").read_text().translate(swap).splitlines()
        for s in ("train", "valid", "test")
    }
    same_size = prepare(base / "swapped", lines["train"], lines["valid"], lines["test"])
    vocab = load_corpus(trained.data_dir)[0]
    torch.manual_seed(0)
    export_model(CharLM(tiny_config(vocab, hidden_size=16), vocab.spellings()), vocab, base / "other-arch")
    return {"same-size-vocab": same_size, "other-arch": base / "other-arch"}


def _copy_vocab(source: Path):
    return lambda d: [shutil.copy(source / f, d / f) for f in ("vocab.json", "tokenizer.json")]


MODEL_DAMAGE = {
    # name: (damage(model_dir, trained, foreign), piece of the error)
    "missing-weights": (lambda d, t, f: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    "truncated-weights": (
        lambda d, t, f: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]),
        "truncated or corrupt",
    ),
    "empty-weights": (lambda d, t, f: (d / "model.safetensors").write_bytes(b""), "truncated or corrupt"),
    "binary-weights": (lambda d, t, f: (d / "model.safetensors").write_bytes(_random_bytes()), "truncated or corrupt"),
    "weights-of-another-architecture": (
        lambda d, t, f: shutil.copy(f["other-arch"] / "model.safetensors", d),
        "does not match",
    ),
    "missing-config": (lambda d, t, f: (d / "config.json").unlink(), "config.json is missing"),
    "binary-config": (lambda d, t, f: (d / "config.json").write_bytes(_random_bytes()), "not valid JSON"),
    "config-not-an-object": (lambda d, t, f: (d / "config.json").write_text("[1, 2]"), "not a model config"),
    "config-mistyped-field": (
        lambda d, t, f: (d / "config.json").write_text('{"model": {"hidden_size": "x"}}'),
        "must be of type int",
    ),
    "missing-vocab": (lambda d, t, f: (d / "vocab.json").unlink(), "vocab.json not found"),
    "vocab-of-another-corpus": (lambda d, t, f: _copy_vocab(t.other_data_dir)(d), "do not belong to these weights"),
    "vocab-of-another-corpus-same-sizes": (
        lambda d, t, f: _copy_vocab(f["same-size-vocab"])(d),
        "not the ones these weights were trained with",
    ),
    "vocab-json-without-its-tokenizer": (
        lambda d, t, f: shutil.copy(t.other_data_dir / "vocab.json", d),
        "does not match the words",
    ),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
@pytest.mark.parametrize("command", ["perplexity", "generate", "neighbors", "gates"])
def test_damaged_model_directory(trained, foreign, tmp_path, capsys, damage, command):
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    apply, error = MODEL_DAMAGE[damage]
    apply(model, trained, foreign)
    out = tmp_path / "out"
    argv = {
        "perplexity": ["perplexity", "--checkpoint", model, "--text-file", trained.text_file, "--per-token", out],
        "generate": ["generate", "--checkpoint", model, "--seed", "1", "--max-words", "3"],
        "neighbors": ["neighbors", "--checkpoint", model, "trader"],
        "gates": ["gates", "--checkpoint", model, "--text-file", trained.text_file, "--output", out],
    }[command]
    check(capsys, argv, error, [out, out.with_name("out.csv"), out.with_name("out.json")])


def test_same_size_vocabulary_really_has_the_same_sizes(trained, foreign):
    """The case above is only caught by the digest: every size matches."""
    mine, theirs = load_corpus(trained.data_dir)[0], load_corpus(foreign["same-size-vocab"])[0]
    assert (len(mine), len(mine.chars), mine.max_word_length) == (
        len(theirs),
        len(theirs.chars),
        theirs.max_word_length,
    )
    assert mine.words != theirs.words


# ------------------------------------------------------------------------------ arbitrary Unicode, prepared


@pytest.fixture(scope="module")
def fixed_splits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fixed")
    write_lines(folder / "valid.txt", synthetic_lines(5, 7))
    return folder


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=st.text(min_size=0, max_size=200), lowercase=st.booleans(), tokenizer=st.sampled_from(["word", "punct"]))
# A capital newer than Python's Unicode tables: the tokenizer once lowercased it on its own, and the
# word was then spelled with characters the vocabulary did not have.
@example(text="\u1c89x", lowercase=True, tokenizer="word")
def test_arbitrary_unicode_prepares_and_round_trips(fixed_splits, tmp_path_factory, text, lowercase, tokenizer):
    """Any Unicode text as the training split: ``charlm prepare`` succeeds, or (no non-blank line)
    says the split is empty; the saved vocabulary spells every training word with its own
    characters (or <unkc> past the spelling length), and any text maps to known characters or <unkc>."""
    folder = tmp_path_factory.mktemp("hyp")
    (folder / "train.txt").write_text(text, encoding="utf-8")
    config = PrepareConfig(
        train_file=str(folder / "train.txt"),
        valid_file=str(fixed_splits / "valid.txt"),
        test_file=str(fixed_splits / "valid.txt"),
        output_dir=str(folder / "corpus"),
        lowercase=lowercase,
        pre_tokenizer="whitespace" if tokenizer == "word" else "punctuation",
    )
    lines = [line for line in text.removeprefix("\ufeff").split("\n") if line.strip()]  # read as utf-8-sig
    try:
        prepare_corpus(config, verbose=False)
    except CharlmError as err:
        assert not lines and "empty" in str(err)
        assert not (folder / "corpus").exists()
        return
    vocab, splits, _ = load_corpus(folder / "corpus")
    assert len(splits["train"]) >= len(lines)
    known = set(vocab.chars[NUM_RESERVED_CHARS:])
    for line in lines:
        for word in vocab.tokenize(line):
            if word in SPECIAL_WORDS:
                continue
            kept = word[: vocab.max_word_length - 2]
            assert set(kept) <= known  # a training word is spelled with its own characters
            inner = vocab.spell(word)[1 : 1 + len(kept)]
            assert [vocab.chars[i] for i in inner] == list(kept)
    for char in text:  # any character: spelled as itself or as <unkc>
        normalized = vocab.normalize(char)
        inner = vocab.spell(char)[1 : 1 + min(len(normalized), vocab.max_word_length - 2)]
        for c, i in zip(normalized, inner):
            assert i == UNK_CHAR or vocab.chars[i] == c
    ids = vocab.encode_lines(lines)
    assert ((0 <= ids) & (ids < len(vocab))).all()
    np.testing.assert_array_equal(np.asarray(splits["train"], dtype=np.int32), ids)
