"""Synthetic corpora of any size, for tests and for measuring ``charlm prepare`` at scale.

Usage (``scripts/make_synthetic_corpus.py`` is a thin wrapper)::

    python scripts/make_synthetic_corpus.py --tokens 10000000 --vocab-size 100000 --output-dir syn-10m
    python scripts/make_synthetic_corpus.py --tokens 100000000 --output big.txt

The words are random spellings (lowercase ASCII letters, all different); the frequent ranks
tend to get the shorter ones, as in natural language (about 5.4 bytes per token with the
separator, PTB has 5.7). Tokens are drawn with Zipf-Mandelbrot
frequencies, ``p(rank) ~ 1 / (rank + 2.7) ** exponent``; a token ends its line with probability
``1 / mean_line_tokens`` (geometric line lengths). Everything is generated in numpy chunks and
written as it is made, so 100M tokens (about 550 MB of text) take constant memory. The same
options and seed give the same bytes; the word list depends on the seed and vocabulary size
only, so the three files of ``--output-dir`` share it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from charlm.errors import CharlmError
from charlm.io import atomic_open

ZIPF_SHIFT = 2.7  # the Mandelbrot shift: flattens the head of the distribution, as in real text
MIN_WORD_LETTERS = 2
MEAN_WORD_LETTERS = 7.0  # mean spelling length of the word list (types, not tokens)
LENGTH_RANK_NOISE = 3.0  # how loosely frequency follows shortness (sd of the sort key, in letters)
CHUNK_TOKENS = 1 << 20  # tokens generated and written per step
PROGRESS_DELAY_S = 3.0


def random_words(vocab_size: int, seed: int) -> list[str]:
    """``vocab_size`` different random spellings, roughly shortest first (rank 0 is the most
    frequent)."""
    rng = np.random.default_rng([seed, 0])
    words: dict[str, None] = {}
    while len(words) < vocab_size:
        wanted = int(1.2 * (vocab_size - len(words))) + 16
        lengths = MIN_WORD_LETTERS + rng.poisson(MEAN_WORD_LETTERS - MIN_WORD_LETTERS, size=wanted)
        letters = (rng.integers(0, 26, size=int(lengths.sum()), dtype=np.uint8) + ord("a")).tobytes()
        ends = np.cumsum(lengths).tolist()
        text = letters.decode("ascii")
        for start, end in zip([0, *ends[:-1]], ends):
            words[text[start:end]] = None  # a dict keeps the first spelling of each duplicate
    chosen = list(words)[:vocab_size]
    key = np.array([len(word) for word in chosen]) + LENGTH_RANK_NOISE * rng.standard_normal(len(chosen))
    return [chosen[i] for i in np.argsort(key, kind="stable")]


def zipf_cdf(vocab_size: int, exponent: float) -> np.ndarray:
    """Cumulative Zipf-Mandelbrot probabilities of ranks 0..vocab_size-1 (float64, last = 1)."""
    weights = 1.0 / (np.arange(vocab_size) + ZIPF_SHIFT) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def synthetic_text(words: list[str], cdf: np.ndarray, tokens: int, mean_line_tokens: float, rng: np.random.Generator):
    """Yield ``(text, tokens in it)`` chunks: ``tokens`` Zipfian tokens in lines, each line ended
    by a newline."""
    vocabulary = np.array(words, dtype=object)
    for start in range(0, tokens, CHUNK_TOKENS):
        n = min(CHUNK_TOKENS, tokens - start)
        ranks = np.searchsorted(cdf, rng.random(n), side="right").clip(max=len(words) - 1)
        ends_line = rng.random(n) < 1.0 / mean_line_tokens
        ends_line[-1] |= start + n == tokens  # the last line is complete
        pieces = np.empty(2 * n, dtype=object)  # word, separator, word, separator, ...
        pieces[0::2] = vocabulary[ranks]
        pieces[1::2] = np.where(ends_line, "\n", " ")
        yield "".join(pieces.tolist()), n


def write_synthetic_file(
    path: str | os.PathLike,
    words: list[str],
    tokens: int,
    *,
    seed: int,
    stream: int = 0,
    exponent: float = 1.0,
    mean_line_tokens: float = 20.0,
) -> None:
    """Write ``tokens`` tokens to ``path`` (under a temporary name, renamed when complete).
    ``stream`` picks an independent random stream of the same seed (one per file)."""
    path = Path(path)
    rng = np.random.default_rng([seed, 1, stream])
    progress = tqdm(
        total=tokens, desc=f"writing {path.name}", unit="tok", unit_scale=True, delay=PROGRESS_DELAY_S, leave=False
    )
    with atomic_open(path, "w") as out, progress:  # ASCII text: the same bytes in UTF-8
        for text, n in synthetic_text(words, zipf_cdf(len(words), exponent), tokens, mean_line_tokens, rng):
            out.write(text)
            progress.update(n)


def make_synthetic_corpus(
    *,
    tokens: int,
    vocab_size: int = 100_000,
    seed: int = 0,
    output: str | None = None,
    output_dir: str | None = None,
    eval_tokens: int | None = None,
    exponent: float = 1.0,
    mean_line_tokens: float = 20.0,
) -> list[Path]:
    """Write one file (``output``) or train/valid/test.txt (``output_dir``); returns the paths.
    The valid and test files get ``eval_tokens`` tokens each (default: tokens / 20)."""
    if (output is None) == (output_dir is None):
        raise CharlmError("give exactly one of --output or --output-dir")
    for flag, value in (("--tokens", tokens), ("--vocab-size", vocab_size)):
        if value < 1:
            raise CharlmError(f"{flag} must be at least 1, not {value}")
    if exponent <= 0 or mean_line_tokens < 1:
        raise CharlmError("--zipf-exponent must be above 0 and --mean-line-tokens at least 1")
    if output is not None:
        sizes = {Path(output): tokens}
    else:
        eval_tokens = max(1, tokens // 20) if eval_tokens is None else eval_tokens
        if eval_tokens < 1:
            raise CharlmError(f"--eval-tokens must be at least 1, not {eval_tokens}")
        directory = Path(output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        sizes = {
            directory / f"{split}.txt": n
            for split, n in (("train", tokens), ("valid", eval_tokens), ("test", eval_tokens))
        }
    words = random_words(vocab_size, seed)
    for stream, (path, n) in enumerate(sizes.items()):
        if not path.parent.is_dir():
            raise CharlmError(f"{path.parent} does not exist; create it or choose another --output")
        write_synthetic_file(
            path, words, n, seed=seed, stream=stream, exponent=exponent, mean_line_tokens=mean_line_tokens
        )
    return list(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--tokens", type=int, required=True, help="tokens of the (training) text")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=100_000,
        help="number of different words drawn from (the rarest may not occur)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same bytes")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", help="one text file to write")
    where.add_argument("--output-dir", help="a directory to write train.txt, valid.txt and test.txt to")
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        help="--output-dir: tokens of valid.txt and of test.txt (default: tokens / 20)",
    )
    parser.add_argument("--zipf-exponent", type=float, default=1.0, help="exponent of the Zipf law")
    parser.add_argument("--mean-line-tokens", type=float, default=20.0, help="mean tokens per line")
    args = parser.parse_args(argv)
    try:
        paths = make_synthetic_corpus(
            tokens=args.tokens,
            vocab_size=args.vocab_size,
            seed=args.seed,
            output=args.output,
            output_dir=args.output_dir,
            eval_tokens=args.eval_tokens,
            exponent=args.zipf_exponent,
            mean_line_tokens=args.mean_line_tokens,
        )
    except CharlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
