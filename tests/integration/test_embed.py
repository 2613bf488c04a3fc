"""`charlm embed` and `embed_words`: vectors of any word, and the files they are written to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_model import assert_one_line_error, loaded, run_cli, tiny_config, trained  # noqa: F401  (fixtures)

from charlm.checkpoint import export_model
from charlm.corpus import load_corpus
from charlm.embed import embed_words
from charlm.model import CharLM

IN_VOCABULARY = ["trader", "computer", "richard", "."]
UNSEEN = ["tradr", "computer-aided", "looooook"]  # a misspelling, a compound, a stretched word


@pytest.fixture(scope="module")
def word_model(trained, tmp_path_factory):
    """An untrained word-input model: vectors for vocabulary words only."""
    vocab = load_corpus(trained.data_dir)[0]
    torch.manual_seed(1)
    directory = tmp_path_factory.mktemp("word") / "model"
    export_model(CharLM(tiny_config(vocab, input="word", word_embed_dim=12, highway="none"), None), vocab, directory)
    return directory


def read_word2vec(path) -> tuple[list[str], np.ndarray]:
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    n, dim = map(int, header.split())
    rows = [line.split(" ") for line in lines]
    assert len(rows) == n and all(len(row) == dim + 1 for row in rows)
    return [row[0] for row in rows], np.array([row[1:] for row in rows], dtype=np.float32)


def test_an_unseen_word_is_its_spelling(loaded):
    model, vocab = loaded
    for word in UNSEEN:
        assert vocab.word_id(word) == vocab.unk_id
    vectors = embed_words(model, vocab, UNSEEN)
    with torch.no_grad():
        spelled = model.encode_spellings(torch.tensor([vocab.spell(word) for word in UNSEEN]))
    torch.testing.assert_close(vectors, spelled, rtol=0, atol=0)
    assert not torch.equal(vectors[0], embed_words(model, vocab, ["<unk>"])[0])  # not read as <unk>


def test_a_vocabulary_word_is_what_the_lstm_reads(loaded):
    model, vocab = loaded
    ids = torch.tensor([vocab.word_id(word) for word in IN_VOCABULARY])
    with torch.no_grad():
        expected = model.embed(ids)  # [4, input_size]
    torch.testing.assert_close(embed_words(model, vocab, IN_VOCABULARY), expected, rtol=0, atol=0)
    assert embed_words(model, vocab, IN_VOCABULARY).shape == (4, model.config.input_size)


def test_cnn_stage_is_before_the_highway_layers(loaded):
    model, vocab = loaded
    cnn = embed_words(model, vocab, IN_VOCABULARY + UNSEEN, stage="cnn")
    highway = embed_words(model, vocab, IN_VOCABULARY + UNSEEN, stage="highway")
    assert cnn.shape == (7, model.config.cnn_output_size)
    assert cnn.abs().max() <= 1.0  # the char-CNN ends in tanh; the highway layer's ReLU transform need not
    assert not torch.allclose(cnn, highway)


def test_word2vec_file_round_trip(trained, loaded, tmp_path, capsys):
    model, vocab = loaded
    words = [*IN_VOCABULARY, *UNSEEN, "trader"]  # a repeated word is written once
    output = tmp_path / "vectors.txt"
    code, out, err = run_cli(capsys, "embed", "--checkpoint", trained.model_dir, "--words", *words, "--output", output)
    assert code == 0, err
    assert out.startswith(f"7 words (3 not in the vocabulary), {model.config.input_size} dimensions")
    read_words, vectors = read_word2vec(output)
    assert read_words == IN_VOCABULARY + UNSEEN
    np.testing.assert_array_equal(vectors, embed_words(model, vocab, read_words).numpy())  # float32 exactly
    assert not list(tmp_path.glob("*.tmp"))


def test_npy_and_word_list_from_a_words_file(trained, loaded, tmp_path, capsys):
    model, vocab = loaded
    words_file = tmp_path / "words.txt"
    words_file.write_text("trader tradr\n\n  computer-aided\n", encoding="utf-8")
    output = tmp_path / "vectors.npy"
    code, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        trained.model_dir,
        "--words-file",
        words_file,
        "--stage",
        "cnn",
        "--format",
        "npy",
        "--output",
        output,
    )
    assert code == 0, err
    words = (tmp_path / "vectors.words.txt").read_text(encoding="utf-8").splitlines()
    assert words == ["trader", "tradr", "computer-aided"]
    array = np.load(output)
    assert array.dtype == np.float32 and array.shape == (3, model.config.cnn_output_size)
    np.testing.assert_array_equal(array, embed_words(model, vocab, words, stage="cnn").numpy())


def test_word_model_vectors_and_its_unknown_words(word_model, tmp_path, capsys):
    output = tmp_path / "vectors.txt"
    code, _, err = run_cli(
        capsys, "embed", "--checkpoint", word_model, "--words", "trader", "richard", "--output", output
    )
    assert code == 0, err
    assert read_word2vec(output)[1].shape == (2, 12)
    output.unlink()
    code, _, err = run_cli(
        capsys, "embed", "--checkpoint", word_model, "--words", "trader", "tradr", "zyzzyva", "--output", output
    )
    line = assert_one_line_error(code, err)
    assert "not in the vocabulary: tradr, zyzzyva" in line and "only character-input models" in line
    assert not output.exists()


@pytest.mark.parametrize(
    "args, error",
    [
        (["--words", "trader", "--stage", "cnn"], "--stage cnn needs a character-input model"),
        (["--words", "two words"], "'two words' is not a word"),
        (["--words-file", "{tmp}/missing.txt"], "--words-file {tmp}/missing.txt does not exist"),
        (["--words", "trader", "--output", "{tmp}/no/such/folder/v.txt"], "folder {tmp}/no/such/folder does not exist"),
    ],
)
def test_embed_errors_are_one_line(trained, word_model, tmp_path, capsys, args, error):
    checkpoint = word_model if "cnn" in args else trained.model_dir
    args = [a.format(tmp=tmp_path) for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "v.txt")]
    code, _, err = run_cli(capsys, "embed", "--checkpoint", checkpoint, *args)
    assert error.format(tmp=tmp_path) in assert_one_line_error(code, err)
    assert not (tmp_path / "v.txt").exists()


def test_contextual_features_are_the_core_outputs_per_layer(trained, loaded, tmp_path, capsys):
    """--contextual: one vector per token and layer, the state carried through the text; the last
    layer is what the output layer reads when scoring the same stream."""
    import numpy as np

    from charlm.embed import contextual_vectors
    from charlm.inputs import read_text_lines, text_file_ids

    model, vocab = loaded
    lines = read_text_lines(trained.text_file)
    tokens, features = contextual_vectors(model, vocab, lines, chunk_len=7)
    ids = text_file_ids(vocab, trained.text_file)
    assert len(tokens) == len(ids) and features.shape == (len(ids), model.config.core.layers, model.config.hidden_size)
    # the same stream through the model as scoring runs it (inputs: <eos>, then the tokens but the last)
    inputs = torch.tensor([[vocab.eos_id, *ids.tolist()]])
    with torch.inference_mode():
        x = torch.cat([model.embed(inputs[:, :1]), model.embed(inputs[:, 1:])], dim=1)
        out, _ = model.core(x, model.initial_state(1))
    # up to the first unseen word, which the features read from its spelling and scoring as <unk>
    seen = next(i for i, token in enumerate(tokens) if vocab.word_id(token) == vocab.unk_id)
    assert seen > 100
    torch.testing.assert_close(features[:seen, -1], out[0, 1 : seen + 1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features[seen:, -1], out[0, seen + 1 :])
    code, _, _ = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        trained.model_dir,
        "--text-file",
        trained.text_file,
        "--contextual",
        "--format",
        "npy",
        "--output",
        tmp_path / "f.npy",
    )
    assert code == 0
    assert np.load(tmp_path / "f.npy").shape == tuple(features.shape)
    assert (tmp_path / "f.words.txt").read_text(encoding="utf-8").split("\n")[:-1] == tokens
    code, _, err = run_cli(
        capsys,
        "embed",
        "--checkpoint",
        trained.model_dir,
        "--text-file",
        trained.text_file,
        "--contextual",
        "--output",
        tmp_path / "g.txt",
    )
    assert "--format npy" in assert_one_line_error(code, err)
