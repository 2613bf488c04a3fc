"""``charlm embed``: a model's vector for any word, written for other tools.

    charlm embed --checkpoint runs/ptb-char-small/best --words while richard computer-aided looooook \\
        --output vectors.txt
    charlm embed --checkpoint runs/ptb-char-small/best --words-file words.txt --stage cnn --format npy \\
        --output vectors.npy

A word's vector is what the LSTM reads for it (:func:`charlm.analysis.represent_words`): after the
highway layers (``--stage highway``, the default, the representation of the paper's Table 6) or
before them, straight out of the char-CNN (``--stage cnn``). A character-input model reads every
word from its spelling, so a word it never saw (a misspelling, a compound) has a vector too; a
word-input model has vectors for its vocabulary only, and an unknown word is an error naming it.
A model with input ``both`` reads an unknown word as its spelling beside ``<unk>``'s embedding.

Two formats:

* ``word2vec``: word2vec's text format, which gensim reads with
  ``KeyedVectors.load_word2vec_format(path, binary=False)``: a header ``N DIM``, then per word the
  word and its ``DIM`` numbers, separated by spaces (9 significant digits: float32 exactly);
* ``npy``: the ``[N, DIM]`` float32 array in ``PATH`` (numpy's ``.npy``) and the words, one per
  line in the rows' order, in ``PATH`` with ``.words.txt`` for its extension.

Vectors are per word, whatever surrounds it, except with ``--contextual``: ELMo-style features,
one vector per token of a text (``--text-file``) from each stage of the recurrent core (an LSTM's
layers; an RHN is one stage), the state carried from the first token to the last, written as
``npy``: ``[tokens, stages, H]`` and the tokens, one per line (:func:`contextual_vectors`). Each
file is written under a temporary name and renamed.

    charlm embed --checkpoint runs/ptb-char-small/best --text-file notes.txt --contextual \
        --format npy --output features.npy
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from charlm.analysis import CHUNK_WORDS, STAGES, in_vocabulary, represent_words
from charlm.errors import CharlmError
from charlm.inputs import add_model_arguments, load_checkpoint, main_process_only
from charlm.io import atomic_open
from charlm.plots import check_output_path
from charlm.text import Vocabulary

if TYPE_CHECKING:
    from charlm.model import CharLM

FORMATS = ("word2vec", "npy")


@dataclass(frozen=True)
class EmbedDefaults:
    """The defaults of ``charlm embed`` (argparse reads them from here)."""

    stage: str = "highway"
    """'highway' (after the highway layers) or 'cnn' (the char-CNN output, before them)."""
    format: str = "word2vec"
    """'word2vec' (text) or 'npy' (an array and a word list)."""


DEFAULTS = EmbedDefaults()


# ----------------------------------------------------------------------------- vectors


def check_representable(model: CharLM, vocab: Vocabulary, words: list[str], stage: str) -> None:
    """Refuse what the model has no vector for: unknown words and the cnn stage of a word-input model."""
    if stage not in STAGES:
        raise CharlmError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    if not words:
        raise CharlmError("give at least one word")
    if model.config.input != "word":
        return
    if stage == "cnn":
        raise CharlmError(
            "--stage cnn needs a character-input model; this one reads word embeddings (use --stage highway)"
        )
    unknown = [word for word in words if not in_vocabulary(vocab, word)]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise CharlmError(
            f"not in the vocabulary: {shown}; a word-input model has no vector for unknown words "
            "(only character-input models read spellings)"
        )


@torch.inference_mode()
def embed_words(model: CharLM, vocab: Vocabulary, words: list[str], stage: str = DEFAULTS.stage) -> torch.Tensor:
    """The vector ``[len(words), D]`` (float32, on the CPU) the model reads for each of ``words``.

    Any strings for a character-input model (read through their spelling); vocabulary words only
    for a word-input model. ``stage='cnn'`` stops before the highway layers. The model is in eval
    mode for the call and restored to its mode afterwards.
    """
    check_representable(model, vocab, words, stage)
    was_training = model.training
    model.eval()
    try:
        parts = [
            represent_words(model, vocab, words[i : i + CHUNK_WORDS], stage) for i in range(0, len(words), CHUNK_WORDS)
        ]  # each [chunk, D]
    finally:
        model.train(was_training)
    return torch.cat(parts).float().cpu()


@torch.inference_mode()
def contextual_vectors(
    model: CharLM, vocab: Vocabulary, lines: list[str], chunk_len: int = 2048
) -> tuple[list[str], torch.Tensor]:
    """ELMo-style features of a text: its tokens (``<eos>`` after each line, as the corpus has them)
    and ``[tokens, stages, H]`` float32 on the CPU, the output of each stage of the recurrent core at
    each token. The text is read after an ``<eos>`` (as scoring does), the state carried throughout;
    unseen words are read from their spelling (a character-input model). Eval mode for the call."""
    eos = [vocab.words[vocab.eos_id]] if vocab.add_eos else []
    tokens = [token for line in lines for token in (*vocab.tokenize(line), *eos)]
    if not tokens:
        raise CharlmError("the text holds no tokens the model's tokenizer can read")
    words = [vocab.words[vocab.eos_id], *tokens]  # the context before the first token
    was_training = model.training
    model.eval()
    try:
        x = torch.cat(
            [represent_words(model, vocab, words[i : i + CHUNK_WORDS]) for i in range(0, len(words), CHUNK_WORDS)]
        )  # [n + 1, D]
        stages = model.core.stages()
        states = [stage.initial_state(1) for stage in stages]
        outputs: list[list[torch.Tensor]] = [[] for _ in stages]
        for start in range(0, x.size(0), chunk_len):
            h = x[None, start : start + chunk_len]  # [1, T, D]
            for i, stage in enumerate(stages):
                h, states[i] = stage(h, states[i])
                outputs[i].append(h[0])
    finally:
        model.train(was_training)
    features = torch.stack([torch.cat(pieces)[1:] for pieces in outputs], dim=1)  # [n, stages, H]
    return tokens, features.float().cpu()


# ----------------------------------------------------------------------------- files


def words_path(output: str | Path) -> Path:
    """Where ``--format npy`` writes the word list: the array's path with ``.words.txt`` for its extension."""
    return Path(output).with_suffix(".words.txt")


def write_word2vec(path: str | Path, words: list[str], vectors: torch.Tensor) -> None:
    """word2vec's text format: ``N DIM``, then ``word x1 ... xDIM`` per line."""
    with atomic_open(path) as f:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors.tolist()):
            f.write(word + " " + " ".join(format(x, ".9g") for x in row) + "\n")


def write_npy(path: str | Path, words: list[str], vectors: torch.Tensor) -> None:
    """The float32 array in ``path`` (.npy) and the words, one per line, in :func:`words_path`."""
    with atomic_open(path, "wb") as f:
        np.save(f, vectors.numpy().astype(np.float32))
    with atomic_open(words_path(path)) as f:
        f.writelines(word + "\n" for word in words)


def read_words_file(path: str | Path) -> list[str]:
    """The whitespace-separated words of a UTF-8 file (one per line, or several)."""
    from data_prep.sources import read_text_file

    return [word for line in read_text_file(path, flag="--words-file") for word in line.split()]


def check_words(words: list[str]) -> list[str]:
    """The words without repeats (first occurrence kept); each must be one UTF-8 token of a file line."""
    for word in words:
        if not word or any(char.isspace() for char in word):
            raise CharlmError(f"{word!r} is not a word: the output holds one word per token, without spaces")
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach sys.argv as lone surrogates
            raise CharlmError(f"{word!r} is not UTF-8 text; pass the words in UTF-8") from None
    return list(dict.fromkeys(words))


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--words",
        nargs="+",
        metavar="WORD",
        help="the words, in the vocabulary or not (e.g. computer-aided looooook); words that start "
        "with '-' go in --words-file",
    )
    source.add_argument("--words-file", metavar="F", help="a UTF-8 file of words separated by spaces or newlines")
    source.add_argument("--text-file", metavar="F", help="with --contextual: a UTF-8 text, one vector per token")
    parser.add_argument(
        "--contextual",
        action="store_true",
        help="ELMo-style features of --text-file: the recurrent core's output at every token, per "
        "layer, as --format npy [tokens, layers, H] and the tokens beside it",
    )
    parser.add_argument(
        "--stage",
        choices=STAGES,
        default=DEFAULTS.stage,
        help="the vector after the highway layers (what the LSTM reads), or the char-CNN output before them",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=DEFAULTS.format,
        help="word2vec: text, a 'N DIM' header then one word and its numbers per line; npy: the "
        "float32 array [N, DIM] in --output and the words, one per line, beside it "
        "(OUTPUT with .words.txt for its extension)",
    )
    parser.add_argument("--output", required=True, metavar="PATH", help="the file to write (its folder must exist)")


@main_process_only
def run(args: argparse.Namespace) -> int:
    if args.contextual or args.text_file is not None:
        return run_contextual(args)
    words = check_words(args.words if args.words is not None else read_words_file(args.words_file))
    check_output_path(args.output)
    if args.format == "npy":
        check_output_path(words_path(args.output))
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    vectors = embed_words(model, vocab, words, args.stage)
    if args.format == "word2vec":
        write_word2vec(args.output, words, vectors)
        written = [Path(args.output)]
    else:
        write_npy(args.output, words, vectors)
        written = [Path(args.output), words_path(args.output)]
    unknown = sum(not in_vocabulary(vocab, word) for word in words)
    print(
        f"{len(words)} words ({unknown} not in the vocabulary), {vectors.shape[1]} dimensions "
        f"(stage {args.stage}): wrote {', '.join(str(p) for p in written)}"
    )
    return 0


def run_contextual(args: argparse.Namespace) -> int:
    """``--contextual --text-file F --format npy``: per-token features of a text."""
    from charlm.inputs import read_text_lines

    if not (args.contextual and args.text_file is not None):
        raise CharlmError("--contextual and --text-file go together: contextual vectors are those of a text's tokens")
    if args.format != "npy":
        raise CharlmError(
            "--contextual writes [tokens, layers, H]: use --format npy (word2vec holds one vector per word)"
        )
    check_output_path(args.output)
    check_output_path(words_path(args.output))
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    tokens, features = contextual_vectors(model, vocab, read_text_lines(args.text_file))
    with atomic_open(args.output, "wb") as f:
        np.save(f, features.numpy())
    with atomic_open(words_path(args.output)) as f:
        f.writelines(token + "\n" for token in tokens)
    print(
        f"{len(tokens)} tokens x {features.shape[1]} layer(s) x {features.shape[2]} dimensions: wrote "
        f"{args.output}, {words_path(args.output)}"
    )
    return 0
