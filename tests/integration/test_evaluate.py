"""`charlm perplexity`: the exact full-stream number, its outputs, and every bad input."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_model import assert_one_line_error, loaded, run_cli, trained  # noqa: F401  (fixtures)

from charlm.evaluate import perplexity
from charlm.inputs import text_file_ids
from charlm.nn import CharOutputOptions
from charlm.scoring import score_columns, score_stream

REPO = Path(__file__).resolve().parents[2]


@torch.inference_mode()
def token_by_token_perplexity(model, ids, start_id) -> float:
    """The plainest possible loop: one token per call, hidden state carried."""
    hidden = model.initial_state(1)
    previous, nll = start_id, 0.0
    for target in ids.tolist():
        logits, hidden = model(torch.tensor([[previous]]), hidden)  # [1, 1, V]
        nll -= F.log_softmax(logits[0, 0].double(), dim=-1)[target].item()
        previous = target
    return math.exp(nll / len(ids))


def test_batched_scoring_equals_token_by_token_loop(trained, loaded):
    model, vocab = loaded
    from charlm.corpus import load_corpus

    ids = np.asarray(load_corpus(trained.data_dir)[1]["test"], dtype=np.int64)
    expected = token_by_token_perplexity(model, ids, vocab.eos_id)
    for chunk_len in (1, 7, 2048):
        for pipeline in (False, True):
            got = score_stream(model, ids, vocab.eos_id, chunk_len=chunk_len, pipeline=pipeline).perplexity
            assert got == pytest.approx(expected, rel=1e-4)
    result = perplexity(model, vocab, ids, chunk_len=50)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert result["tokens"] == len(ids)
    assert result["perplexity"] == pytest.approx(math.exp(result["nll"] / result["tokens"]))
    assert 1.0 < result["perplexity"] < len(vocab)  # trained: better than uniform


@pytest.mark.parametrize("layers", [1, 3])
def test_pipelined_scoring_equals_sequential_scoring(layers):
    """Layers and softmax of consecutive chunks on a thread pool: the same log-probabilities."""
    model = _random_model(layers).train()
    ids = np.random.default_rng(0).integers(0, 300, 1000)
    threads = torch.get_num_threads()
    sequential = score_stream(model, ids, 1, chunk_len=64, per_token=True, pipeline=False)
    pipelined = score_stream(model, ids, 1, chunk_len=64, per_token=True, pipeline=True)
    np.testing.assert_allclose(pipelined.logprobs, sequential.logprobs, rtol=1e-5, atol=1e-6)
    assert pipelined.tokens == sequential.tokens == len(ids)
    assert pipelined.perplexity == pytest.approx(sequential.perplexity, rel=1e-6)
    assert torch.get_num_threads() == threads  # the pool's one-thread setting is undone
    assert model.training  # the mode is restored too


def _random_model(layers=2):
    from charlm.config import ModelConfig
    from charlm.model import CharLM
    from charlm.nn import LSTMOptions

    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=300,
        char_vocab_size=30,
        max_word_length=7,
        kernel_widths=[1, 2],
        num_filters=[8, 16],
        hidden_size=32,
        core=LSTMOptions(layers=layers),
    )
    return CharLM(config, torch.randint(4, 30, (300, 7)))


@pytest.mark.parametrize("n, columns, warmup", [(1000, 4, 30), (1003, 7, 50), (999, 3, 0), (100, 4, 500)])
def test_column_approximation_is_exact_scoring_of_each_warmed_up_piece(n, columns, warmup):
    """Column j scores its piece exactly as a stream that starts `warmup` tokens earlier would."""
    model = _random_model()
    ids = np.random.default_rng(1).integers(0, 300, n)
    exact = score_stream(model, ids, 1, chunk_len=64, per_token=True, pipeline=False)
    approx = score_columns(model, ids, 1, columns, warmup, chunk_len=64, per_token=True)
    assert approx.tokens == len(approx.logprobs) == n  # every token scored once
    assert approx.nll == pytest.approx(-approx.logprobs.astype(np.float64).sum(), rel=1e-6)
    piece = -(-n // columns)
    w = min(warmup, piece)
    np.testing.assert_allclose(approx.logprobs[:piece], exact.logprobs[:piece], rtol=1e-5, atol=1e-5)  # column 0
    for start in range(piece, n, piece):
        # the substream from start - w, read after the token before it, from a zero state
        window = score_stream(
            model, ids[start - w : start + piece], int(ids[start - w - 1]), per_token=True, pipeline=False
        )
        np.testing.assert_allclose(approx.logprobs[start : start + piece], window.logprobs[w:], rtol=1e-5, atol=1e-5)
    if warmup == 0:  # a cold start: the second piece's first token sees no context at all
        assert abs(approx.logprobs[piece] - exact.logprobs[piece]) > 1e-4


def test_one_column_is_the_exact_number():
    model = _random_model(layers=1)
    ids = np.random.default_rng(2).integers(0, 300, 500)
    exact = score_stream(model, ids, 1, chunk_len=50, per_token=True, pipeline=False)
    one = score_columns(model, ids, 1, 1, 100, chunk_len=50, per_token=True)
    np.testing.assert_allclose(one.logprobs, exact.logprobs, rtol=1e-6, atol=1e-6)


def test_perplexity_columns_flag_says_it_is_approximate(trained, capsys):
    base = ["perplexity", "--checkpoint", trained.model_dir, "--data-dir", trained.data_dir, "--split", "test"]
    _, out_exact, _ = run_cli(capsys, *base, "--json")
    code, out, _ = run_cli(capsys, *base, "--json", "--columns", "3", "--warmup", "20")
    exact, approx = json.loads(out_exact), json.loads(out)
    assert code == 0 and exact["exact"] is True and approx["exact"] is False
    assert (approx["columns"], approx["warmup"], approx["tokens"]) == (3, 20, exact["tokens"])
    assert approx["perplexity"] == pytest.approx(exact["perplexity"], rel=0.05)
    code, out, _ = run_cli(capsys, *base, "--columns", "3")
    assert code == 0 and "approximate: 3 columns, 300 warm-up tokens each" in out
    _, out, _ = run_cli(capsys, *base)
    assert "approximate" not in out
    for bad in (["--columns", "0"], ["--warmup", "-1"]):
        code, _, err = run_cli(capsys, *base, *bad)
        assert "--columns must be at least 1" in assert_one_line_error(code, err)


def test_text_file_counts_unknown_words_and_matches_the_prepared_split(trained, loaded, capsys):
    model, vocab = loaded
    ids = text_file_ids(vocab, trained.text_file)
    result = perplexity(model, vocab, ids)
    assert result["unk"] == 2  # "zyzzyva" and "flibbertigibbets" are not in the vocabulary
    assert result["tokens"] == len(ids)

    # The raw test file scores exactly like the test split prepared from it.
    test_txt = trained.data_dir.parent / "test.txt"
    _, out_text, _ = run_cli(capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", test_txt, "--json")
    _, out_data, _ = run_cli(
        capsys,
        "perplexity",
        "--checkpoint",
        trained.model_dir,
        "--data-dir",
        trained.data_dir,
        "--split",
        "test",
        "--json",
    )
    from_text, from_data = json.loads(out_text), json.loads(out_data)
    assert from_text["perplexity"] == pytest.approx(from_data["perplexity"], rel=1e-9)
    assert from_text["tokens"] == from_data["tokens"]


@pytest.mark.parametrize("name", ["tokens.tsv", "tokens.jsonl"])
def test_json_output_and_per_token_file(trained, tmp_path, capsys, name):
    out_file = tmp_path / name
    code, out, err = run_cli(
        capsys,
        "perplexity",
        "--checkpoint",
        trained.model_dir,
        "--text-file",
        trained.text_file,
        "--json",
        "--per-token",
        out_file,
    )
    assert code == 0
    result = json.loads(out)
    assert {"perplexity", "nll", "tokens", "unk", "seconds"} <= set(result)
    lines = out_file.read_text(encoding="utf-8").splitlines()
    if name.endswith(".jsonl"):
        rows = [json.loads(line) for line in lines]
        tokens, logprobs = [r["token"] for r in rows], [r["logprob"] for r in rows]
    else:
        assert lines[0] == "token\tlogprob"
        tokens, logprobs = zip(*(line.split("\t") for line in lines[1:]))
        logprobs = [float(x) for x in logprobs]
    assert len(tokens) == result["tokens"]
    assert tokens.count("<unk>") == result["unk"] == 2
    assert -sum(logprobs) == pytest.approx(result["nll"], rel=1e-5)
    assert not list(tmp_path.glob("*.tmp"))

    code, out, _ = run_cli(capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", trained.text_file)
    assert code == 0 and out.startswith(f"perplexity {result['perplexity']:.3f}")


@pytest.mark.slow
def test_same_number_from_one_and_two_processes(trained, capsys):
    """Two processes through the real launcher print one result: the same number as one process.

    On a machine without CUDA, `accelerate launch --cpu --num_processes 2` starts a single process
    (its CPU launcher needs mpirun for more); `--multi_gpu` starts two through torchrun, and
    ACCELERATE_USE_CPU makes them a CPU (gloo) group.
    """
    args = ["--checkpoint", str(trained.model_dir), "--data-dir", str(trained.data_dir), "--split", "valid", "--json"]
    code, out, _ = run_cli(capsys, "perplexity", *args)
    single = json.loads(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONWARNINGS": "ignore"}
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
            str(REPO / "scripts" / "perplexity.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    printed = [line for line in launched.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, launched.stdout  # only the main process prints
    multi = json.loads(printed[0])
    assert multi["processes"] == 2
    assert multi["perplexity"] == pytest.approx(single["perplexity"], rel=1e-9)
    assert multi["tokens"] == single["tokens"]


# ------------------------------------------------------------------------------ bad input


def test_missing_and_incomplete_model_directory(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "perplexity", "--checkpoint", tmp_path / "nope", "--text-file", trained.text_file)
    assert "does not exist" in assert_one_line_error(code, err)
    for missing in ("model.safetensors", "vocab.json", "config.json"):
        broken = tmp_path / f"without-{missing}"
        shutil.copytree(trained.model_dir, broken)
        (broken / missing).unlink()
        code, _, err = run_cli(capsys, "perplexity", "--checkpoint", broken, "--text-file", trained.text_file)
        assert missing in assert_one_line_error(code, err)


def test_vocabulary_mismatch_is_refused(trained, tmp_path, capsys):
    per_token = tmp_path / "tokens.tsv"
    code, out, err = run_cli(
        capsys,
        "perplexity",
        "--checkpoint",
        trained.model_dir,
        "--data-dir",
        trained.other_data_dir,
        "--per-token",
        per_token,
    )
    assert "different vocabulary" in assert_one_line_error(code, err)
    assert out == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"  \n\t\n   \n", "empty"),
        ("caf\u00e9 au lait\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_text_files(trained, tmp_path, capsys, content, message):
    text = tmp_path / "input.txt"
    text.write_bytes(content)
    per_token = tmp_path / "tokens.tsv"
    code, out, err = run_cli(
        capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", text, "--per-token", per_token
    )
    assert message in assert_one_line_error(code, err)
    assert out == "" and not per_token.exists() and not list(tmp_path.glob("*.tmp"))


def test_bad_options(trained, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", trained.text_file, "--chunk-len", "0"
    )
    assert "--chunk-len" in assert_one_line_error(code, err)
    code, _, err = run_cli(
        capsys,
        "perplexity",
        "--checkpoint",
        trained.model_dir,
        "--text-file",
        trained.text_file,
        "--per-token",
        tmp_path / "no" / "such" / "dir.tsv",
    )
    assert "does not exist" in assert_one_line_error(code, err)
    code, _, err = run_cli(
        capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", tmp_path / "missing.txt"
    )
    assert "not found" in assert_one_line_error(code, err)
    if not torch.cuda.is_available():
        code, _, err = run_cli(
            capsys,
            "perplexity",
            "--checkpoint",
            trained.model_dir,
            "--text-file",
            trained.text_file,
            "--device",
            "cuda",
        )
        assert "CUDA" in assert_one_line_error(code, err)


def test_oov_words_scored_by_spelling_are_reported_apart(trained, tmp_path, capsys):
    """A spelling-based output scores the text's unseen words itself; the perplexity is unchanged."""
    import dataclasses

    from helpers_model import tiny_config

    from charlm.checkpoint import export_model
    from charlm.corpus import load_corpus
    from charlm.model import CharLM

    vocab = load_corpus(trained.data_dir)[0]
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(vocab), output=CharOutputOptions(num_filters=[4, 4, 4], correction_dim=4))
    export_model(CharLM(config, vocab.spellings()), vocab, tmp_path / "char-output")
    common = ["perplexity", "--checkpoint", tmp_path / "char-output", "--text-file", trained.text_file, "--json"]
    code, plain, _ = run_cli(capsys, *common)
    assert code == 0
    code, spelled, _ = run_cli(capsys, *common, "--oov-by-spelling")
    assert code == 0
    plain, spelled = json.loads(plain), json.loads(spelled)
    assert spelled["perplexity"] == plain["perplexity"]  # never mixed into the standard number
    assert spelled["oov_tokens"] == 2  # "zyzzyva" and "flibbertigibbets"
    assert spelled["oov_tokens"] <= plain["unk"]
    assert spelled["oov_ppl_by_spelling"] > 1 and spelled["oov_ppl_as_unk"] > 1
    code, _, err = run_cli(
        capsys, "perplexity", "--checkpoint", trained.model_dir, "--text-file", trained.text_file, "--oov-by-spelling"
    )
    assert "model.output: char" in assert_one_line_error(code, err)
