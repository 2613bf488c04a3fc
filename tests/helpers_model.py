"""A tiny trained model and its corpus, shared by the tests of the "use a model" commands.

``trained_model(tmp_path_factory)`` prepares a corpus of synthetic English-like text with
``charlm prepare``, trains a tiny CharLM for a few dozen Adam steps (so it is not uniform) and
exports it. It is built once per test session (cached under pytest's base temp folder), whichever
test module asks first. Import the fixtures into a test module with
``from helpers_model import trained, loaded``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.checkpoint import export_model, load_model
from charlm.cli import main
from charlm.config import ModelConfig
from charlm.corpus import load_corpus
from charlm.model import CharLM
from charlm.nn import detach_state

SUBJECTS = [
    "the trader",
    "the traders",
    "a computer",
    "the computers",
    "richard",
    "edward",
    "the market",
    "a teacher",
    "the players",
    "gerard",
]
VERBS = [
    "looks at",
    "looked at",
    "is looking at",
    "trades",
    "traded",
    "was trading",
    "buys",
    "bought",
    "performs for",
    "informed",
    "watches",
    "watched",
    "plays with",
    "played with",
]
OBJECTS = [
    "the stock",
    "the stocks",
    "a book",
    "the books",
    "the computer",
    "a trade",
    "the trading floor",
    "the market",
    "new shares",
    "old shares",
    "the teacher",
]
TAILS = ["", "", "today", "yesterday", "while the market fell", "in new york", "again", "on monday"]


@dataclasses.dataclass
class TrainedModel:
    model_dir: Path
    """An exported model (``charlm.checkpoint.export_model``)."""
    data_dir: Path
    """The prepared corpus it was trained on."""
    text_file: Path
    """A raw text file like the test split, with a few words the model never saw."""
    other_data_dir: Path
    """A corpus with a different vocabulary."""
    unk_model_dir: Path
    """The same model with its decoder biased towards <unk> (it emits <unk> most of the time)."""


def synthetic_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)]
        lines.append(" ".join(w for w in words if w) + " .")
    return lines


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def prepare(directory: Path, train: list[str], valid: list[str], test: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = [
        write_lines(directory / f"{name}.txt", lines)
        for name, lines in (("train", train), ("valid", valid), ("test", test))
    ]
    out = directory / "corpus"
    code = main(
        [
            "prepare",
            "--train-file",
            str(files[0]),
            "--valid-file",
            str(files[1]),
            "--test-file",
            str(files[2]),
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    return out


def tiny_config(vocab, **changes) -> ModelConfig:
    config = ModelConfig(
        kernel_widths=[1, 2, 3],
        num_filters=[10, 10, 10],
        hidden_size=32,
        highway_layers=1,
        dropout=0.0,
        vocab_size=len(vocab),
        char_vocab_size=len(vocab.chars),
        max_word_length=vocab.max_word_length,
    )
    return dataclasses.replace(config, **changes)


def train_steps(
    model: CharLM, ids: np.ndarray, steps: int = 150, rows: int = 8, seq_len: int = 20, lr: float = 0.02
) -> CharLM:
    """A hundred-odd Adam steps of truncated BPTT on the stream ``ids``: enough to make the model non-uniform."""
    torch.manual_seed(0)
    data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    cols = (len(data) - 1) // rows
    inputs = data[: rows * cols].view(rows, cols)
    targets = data[1 : rows * cols + 1].view(rows, cols)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    hidden = model.initial_state(rows)
    for step in range(steps):
        start = (step * seq_len) % (cols - seq_len)
        if start < seq_len:  # a new pass over the rows: start from a fresh state
            hidden = model.initial_state(rows)
        logits, hidden = model(inputs[:, start : start + seq_len], hidden)
        hidden = detach_state(hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets[:, start : start + seq_len].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def build(base: Path) -> TrainedModel:
    data_dir = prepare(base / "data", synthetic_lines(200, 1), synthetic_lines(30, 2), synthetic_lines(30, 3))
    vocab, splits, _ = load_corpus(data_dir)
    torch.manual_seed(0)
    model = CharLM(tiny_config(vocab), vocab.spellings())
    train_steps(model, splits["train"])
    model_dir = base / "model"
    export_model(model, vocab, model_dir)

    with torch.no_grad():
        model.output.decoder.bias[vocab.unk_id] += 30.0  # <unk> dominates every sample
    unk_model_dir = base / "unk-model"
    export_model(model, vocab, unk_model_dir)

    text_file = write_lines(base / "text.txt", synthetic_lines(20, 4) + ["the zyzzyva traded flibbertigibbets ."])
    other = [line.replace("the", "one") + " extra" for line in synthetic_lines(40, 5)]
    other_data_dir = prepare(base / "other", other, other[:5], other[5:10])
    return TrainedModel(model_dir, data_dir, text_file, other_data_dir, unk_model_dir)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``charlm.cli.main`` in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str) -> str:
    """A user mistake: exit status 2 and exactly one line, ``error: ...``, on stderr."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


_BUILT: dict[Path, TrainedModel] = {}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedModel:
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = build(tmp_path_factory.mktemp("trained"))
    return _BUILT[base]


@pytest.fixture(scope="session")
def loaded(trained):
    """(model, vocab) of the trained model, loaded on CPU."""
    return load_model(trained.model_dir)
