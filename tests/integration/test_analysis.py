"""`charlm neighbors`, `charlm gates` and the training-curve plot."""

import csv
import json
import sys

import numpy as np
import pytest
import torch
from helpers_model import assert_one_line_error, loaded, run_cli, tiny_config, trained  # noqa: F401  (fixtures)

from charlm.analysis import gate_activity, ids_word_counts, nearest_neighbors
from charlm.checkpoint import export_model, load_model
from charlm.corpus import load_corpus
from charlm.model import CharLM
from charlm.plots import plot_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MATPLOTLIB_MODULES = ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg")


@pytest.fixture(scope="module")
def variants(trained, tmp_path_factory):
    """Untrained exports of other architectures: 2 highway layers, a word-input model, no highway."""
    vocab = load_corpus(trained.data_dir)[0]
    base = tmp_path_factory.mktemp("variants")
    dirs = {}
    for name, changes in {
        "two-highway": {"highway_layers": 2},
        "word": {"input": "word", "word_embed_dim": 12, "highway": "none"},
        "no-highway": {"highway": "none"},
    }.items():
        torch.manual_seed(1)
        config = tiny_config(vocab, **changes)
        export_model(CharLM(config, vocab.spellings() if config.uses_spellings else None), vocab, base / name)
        dirs[name] = base / name
    return dirs


def hide_matplotlib(monkeypatch):
    for name in MATPLOTLIB_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError


# ------------------------------------------------------------------------------ neighbours


def test_vocabulary_word_is_its_own_first_neighbour(loaded):
    model, vocab = loaded
    words = ["trader", "computer", "richard", "."]
    for result in nearest_neighbors(model, vocab, words, k=4, stage="both"):
        assert result["in_vocabulary"]
        for stage in ("cnn", "highway"):
            neighbours = result["neighbors"][stage]
            assert len(neighbours) == 4
            assert neighbours[0] == {"word": result["word"], "similarity": 1.0}
            similarities = [n["similarity"] for n in neighbours]
            assert similarities == sorted(similarities, reverse=True)


def test_unknown_words_get_neighbours_from_their_spelling(loaded):
    model, vocab = loaded
    (aided, look) = nearest_neighbors(model, vocab, ["computer-aided", "looooook"], k=3)
    assert not aided["in_vocabulary"] and not look["in_vocabulary"]
    assert "computer" in [n["word"] for n in aided["neighbors"]["highway"]]  # Table 6's kind of result
    assert len(look["neighbors"]["highway"]) == 3 and list(look["neighbors"]) == ["highway"]


def test_neighbors_cli_table_and_json(trained, capsys):
    code, out, _ = run_cli(capsys, "neighbors", "--checkpoint", trained.model_dir, "trader", "zyzzyva", "-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "trader (in vocabulary)" and lines[2].split()[:2] == ["1.", "trader"]
    assert "zyzzyva (not in vocabulary)" in lines
    code, out, _ = run_cli(
        capsys, "neighbors", "--checkpoint", trained.model_dir, "trader", "-k", "2", "--stage", "cnn", "--json"
    )
    (result,) = json.loads(out)
    assert result["neighbors"]["cnn"][0] == {"word": "trader", "similarity": 1.0}


def test_word_input_model_uses_its_word_embedding(variants, capsys):
    code, out, _ = run_cli(capsys, "neighbors", "--checkpoint", variants["word"], "trader", "--json")
    assert code == 0 and json.loads(out)[0]["neighbors"]["highway"][0]["word"] == "trader"
    code, _, err = run_cli(capsys, "neighbors", "--checkpoint", variants["word"], "zyzzyva")
    assert "word-input model" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "neighbors", "--checkpoint", variants["word"], "trader", "-k", "0")
    assert_one_line_error(code, err)


# ------------------------------------------------------------------------------ gates


def test_gates_files_have_the_right_shapes(trained, variants, tmp_path, capsys):
    prefix = tmp_path / "out" / "gates"
    code, out, _ = run_cli(
        capsys,
        "gates",
        "--checkpoint",
        variants["two-highway"],
        "--data-dir",
        trained.data_dir,
        "--split",
        "valid",
        "--output",
        prefix,
    )
    assert code == 0
    layers, dims = 2, 30  # 10 + 10 + 10 filters
    with open(f"{prefix}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dimension", "layer_1", "layer_2"] and len(rows) == dims + 1
    assert all(len(row) == layers + 1 for row in rows)
    summary = json.loads(open(f"{prefix}.json").read())
    assert summary["layers"] == layers and summary["dimensions"] == dims
    assert np.array(summary["mean_gate"]).shape == (layers, dims)
    assert all(0 <= x <= 1 for x in summary["carry_fraction"])
    assert summary["tokens"] == len(load_corpus(trained.data_dir)[1]["valid"])
    with open(f"{prefix}.png", "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    # untrained, the gate bias -2 makes every layer mostly carry
    assert "layer 2:" in out and "100.0% mostly carry" in out
    assert not list(prefix.parent.glob("*.tmp"))


def test_gate_means_are_token_means_over_the_stream(trained, variants):
    model, vocab = load_model(variants["two-highway"])
    ids = np.asarray(load_corpus(trained.data_dir)[1]["test"], dtype=np.int64)
    activity = gate_activity(model, vocab, ids_word_counts(vocab, ids))
    gates = []
    with torch.inference_mode():
        model.embed(torch.from_numpy(ids), gates)  # each [tokens, D]
    expected = torch.stack([g.double().mean(0) for g in gates]).numpy()
    np.testing.assert_allclose(activity.mean, expected, rtol=1e-6, atol=1e-7)
    assert activity.tokens == len(ids)


def test_gates_without_matplotlib_still_write_csv_and_json(trained, tmp_path, capsys, monkeypatch):
    hide_matplotlib(monkeypatch)
    prefix = tmp_path / "gates"
    code, out, _ = run_cli(
        capsys, "gates", "--checkpoint", trained.model_dir, "--text-file", trained.text_file, "--output", prefix
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gates.csv", "gates.json"]
    assert out.strip().splitlines()[-1].startswith("PNG skipped: matplotlib is not installed")
    assert json.loads((tmp_path / "gates.json").read_text())["unknown_tokens"] == 2


def test_gates_bad_input(trained, variants, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("na\u00efve\n".encode("latin-1"))
    prefix = tmp_path / "out" / "gates"
    for checkpoint, source in (
        (trained.model_dir, ["--text-file", empty]),
        (trained.model_dir, ["--text-file", latin]),
        (trained.model_dir, ["--data-dir", trained.other_data_dir]),
        (variants["no-highway"], ["--text-file", trained.text_file]),
        (variants["word"], ["--text-file", trained.text_file]),
        (tmp_path / "missing", ["--text-file", trained.text_file]),
    ):
        code, out, err = run_cli(capsys, "gates", "--checkpoint", checkpoint, *source, "--output", prefix)
        assert_one_line_error(code, err)
    assert not prefix.parent.exists()  # nothing written


# ------------------------------------------------------------------------------ plots


def test_plot_metrics(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    records = [
        {"epoch": e, "lr": 1.0, "train_ppl": 300 / e, "valid_ppl": 320 / e, "tokens_per_sec": 1e4, "seconds": 3.0}
        for e in (1, 2, 3)
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    png = tmp_path / "curves.png"
    assert plot_metrics(metrics, png) == png
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.jsonl"]
    hide_matplotlib(monkeypatch)
    assert plot_metrics(metrics, tmp_path / "other.png") is None
    assert not (tmp_path / "other.png").exists()
