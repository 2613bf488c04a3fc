"""`charlm generate`: seeded sampling, unknown prompt words read from their spelling, bad options."""

import json

import pytest
import torch
from helpers_model import (  # noqa: F401  (loaded, trained: fixtures)
    assert_one_line_error,
    loaded,
    run_cli,
    synthetic_lines,
    tiny_config,
    trained,
)

from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.corpus import load_corpus
from charlm.generate import (
    SamplingOptions,
    filter_logits,
    generate,
    next_word_distribution,
    prompt_vectors,
    sample,
)
from charlm.model import CharLM


def test_same_seed_same_text_different_seeds_differ(loaded):
    model, vocab = loaded
    first = generate(model, vocab, "the trader", num_samples=3, max_words=20, seed=7)
    assert first == generate(model, vocab, "the trader", num_samples=3, max_words=20, seed=7)
    assert first != generate(model, vocab, "the trader", num_samples=3, max_words=20, seed=8)
    assert len(set(first)) > 1  # the samples of one call differ from each other
    assert all(text.startswith("the trader ") for text in first)


def test_cli_is_reproducible_by_seed(trained, capsys):
    argv = [
        "generate",
        "--checkpoint",
        trained.model_dir,
        "--prompt",
        "richard",
        "--num-samples",
        "2",
        "--max-words",
        "12",
        "--json",
    ]
    outputs = [json.loads(run_cli(capsys, *argv, "--seed", seed)[1]) for seed in ("1", "1", "2")]
    assert outputs[0]["samples"] == outputs[1]["samples"] != outputs[2]["samples"]
    assert outputs[0]["seed"] == 1 and outputs[0]["words"] == 24 and outputs[0]["ms_per_word"] > 0
    code, out, err = run_cli(capsys, *argv[:-1], "--seed", "1")
    assert code == 0 and "ms/word" in err
    assert out.split(f"\n{'-' * 40}\n")[0].strip() == outputs[0]["samples"][0].strip()


def test_no_unk_never_emits_unk(trained, capsys):
    model, vocab = load_model(trained.unk_model_dir)  # decoder biased towards <unk>
    with_unk = generate(model, vocab, num_samples=4, max_words=25, seed=0)
    assert sum(text.split().count("<unk>") for text in with_unk) > 50  # the test is meaningful
    without = generate(model, vocab, num_samples=4, max_words=25, seed=0, no_unk=True)
    assert not any("<unk>" in text for text in without)
    code, out, _ = run_cli(
        capsys,
        "generate",
        "--checkpoint",
        trained.unk_model_dir,
        "--no-unk",
        "--max-words",
        "40",
        "--num-samples",
        "3",
        "--seed",
        "5",
        "--top-p",
        "0.95",
        "--json",
    )
    assert code == 0 and not any("<unk>" in text for text in json.loads(out)["samples"])


def test_unknown_prompt_word_is_read_from_its_spelling(loaded):
    model, vocab = loaded
    for word in ("zyzzyva", "flibbertigibbets"):
        assert vocab.word_id(word) == vocab.unk_id
    tokens, vectors = prompt_vectors(model, vocab, "the zyzzyva")
    assert tokens == ["the", "zyzzyva"]
    with torch.inference_mode():
        expected = model.encode_spellings(torch.tensor([vocab.spell("zyzzyva")]))[0]
    torch.testing.assert_close(vectors[-1], expected)

    p1 = next_word_distribution(model, vocab, "the zyzzyva")
    p2 = next_word_distribution(model, vocab, "the flibbertigibbets")
    p_unk = next_word_distribution(model, vocab, "the <unk>")
    assert (p1 - p2).abs().max() > 1e-4
    assert (p1 - p_unk).abs().max() > 1e-4
    assert p1.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_empty_prompt_starts_after_end_of_sentence(loaded):
    model, vocab = loaded
    with torch.inference_mode():
        logits, _ = model(torch.tensor([[vocab.eos_id]]), model.initial_state(1))
    torch.testing.assert_close(next_word_distribution(model, vocab, ""), torch.softmax(logits[0, 0], -1))
    torch.testing.assert_close(next_word_distribution(model, vocab, "   "), torch.softmax(logits[0, 0], -1))


def test_greedy_and_stop_at_eos(loaded):
    model, vocab = loaded
    greedy = [generate(model, vocab, "the", max_words=10, top_k=1, seed=s) for s in (1, 2)]
    assert greedy[0] == greedy[1]  # top-k 1 leaves nothing to chance
    assert generate(model, vocab, "the", max_words=10, top_p=1e-6, seed=3) == greedy[0]
    stopped = sample(model, vocab, "", SamplingOptions(num_samples=5, max_words=200, stop_at_eos=True, seed=0))
    assert all(vocab.eos_id not in row and len(row) < 200 for row in stopped.ids)
    assert not any("\n" in text for text in generate(model, vocab, num_samples=5, stop_at_eos=True, seed=0))


def test_filter_logits_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda **o: torch.isfinite(filter_logits(logits, SamplingOptions(**o), unk_id=0))[0].tolist()  # noqa: E731
    assert keep(top_p=0.5) == [True, False, False, False]
    assert keep(top_p=0.8) == [True, True, False, False]
    assert keep(top_p=0.81) == [True, True, True, False]
    assert keep(top_k=3) == [True, True, True, False]
    assert keep(no_unk=True, top_k=2) == [False, True, True, False]
    halved = filter_logits(logits, SamplingOptions(temperature=2.0), unk_id=0)
    torch.testing.assert_close(halved, logits / 2)


def test_sentencepiece_text_is_detokenised(tmp_path):
    lines = synthetic_lines(200, 9)
    files = []
    for name, part in (("train", lines), ("valid", lines[:20]), ("test", lines[20:40])):
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text("\n".join(part) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "prepare",
                "--train-file",
                str(files[0]),
                "--valid-file",
                str(files[1]),
                "--test-file",
                str(files[2]),
                "--tokenizer",
                "sentencepiece",
                "--vocab-size",
                "60",
                "--output-dir",
                str(tmp_path / "sp"),
            ]
        )
        == 0
    )
    vocab = load_corpus(tmp_path / "sp")[0]
    torch.manual_seed(0)
    model = CharLM(tiny_config(vocab), vocab.spellings()).eval()
    texts = generate(model, vocab, "the traders", num_samples=3, max_words=30, seed=0, no_unk=True)
    assert all(text.startswith("the traders") and "\u2581" not in text for text in texts)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--top-p", "-0.1"),
        ("--temperature", "0"),
        ("--temperature", "-1"),
        ("--top-k", "0"),
        ("--num-samples", "0"),
        ("--max-words", "0"),
    ],
)
def test_bad_sampling_options(trained, capsys, option, value):
    code, out, err = run_cli(capsys, "generate", "--checkpoint", trained.model_dir, option, value)
    assert option in assert_one_line_error(code, err)
    assert out == ""


def test_bad_model_directory(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--checkpoint", tmp_path / "missing")
    assert_one_line_error(code, err)
    with pytest.raises(Exception, match="top-p"):
        generate(*load_model(trained.model_dir), top_p=2.0)


@pytest.mark.parametrize("output", ["char", "adaptive"])
def test_every_output_layer_gives_a_distribution_and_samples(loaded, output):
    """Generation works through the output protocol alone: the next-word distribution of a
    spelling-based or adaptive output sums to one, and seeded top-k / top-p sampling runs."""
    import dataclasses

    model, vocab = loaded
    torch.manual_seed(0)
    other = CharLM(dataclasses.replace(model.config, output=output), vocab.spellings())
    probs = next_word_distribution(other, vocab, "the trader")
    assert probs.shape == (len(vocab),)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)
    options = SamplingOptions(num_samples=2, max_words=8, seed=3, top_k=20, top_p=0.9, stop_at_eos=False)
    ids = sample(other, vocab, "the trader", options).ids
    assert ids == sample(other, vocab, "the trader", options).ids
    assert [len(row) for row in ids] == [8, 8] and all(0 <= i < len(vocab) for row in ids for i in row)
