"""``charlm generate``: sample text from a trained model.

    charlm generate --checkpoint runs/ptb-char-small/best --prompt "the computer-aided" \\
        --num-samples 3 --max-words 30 --top-p 0.9 --seed 1

A prompt may hold words the model never saw: a character-aware model reads every word from its
spelling (``vocab.spell`` -> ``model.encode_spellings``), so an unknown prompt word gets its own
input vector instead of ``<unk>``'s. Generated words are always vocabulary words (the softmax is
over the vocabulary). Sampling starts after an end-of-sentence: ``<eos>`` is the first context,
then the prompt.

Speed: the input vector of every vocabulary word is computed once (``vocabulary_embeddings``);
then each step is one table lookup, one step of the recurrent core for all samples at once (state
carried) and one output layer call (its word table, for the spelling-based output, computed once).
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch

from charlm.errors import CharlmError
from charlm.inputs import add_model_arguments, load_checkpoint, main_process_only
from charlm.model import CharLM
from charlm.nn import State, expand_state
from charlm.scoring import vocabulary_embeddings
from charlm.text import Vocabulary

SENTENCEPIECE_WORD_START = "\u2581"  # "▁": a sentencepiece piece that starts a new word


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; the one place the defaults of ``generate()`` and ``charlm generate`` live."""

    num_samples: int = 1
    """Number of independent samples."""
    max_words: int = 50
    """Words (tokens, <eos> included) to generate per sample."""
    temperature: float = 1.0
    """Divide the logits by this before sampling: < 1 sharper, > 1 flatter."""
    top_k: int | None = None
    """Sample only among the K most likely words (None: all)."""
    top_p: float = 1.0
    """Nucleus sampling: only among the most likely words whose probabilities sum to P (1: all)."""
    seed: int | None = None
    """Random seed: the same seed gives the same text (None: a fresh seed, reported back)."""
    no_unk: bool = False
    """Never emit <unk>."""
    stop_at_eos: bool = False
    """End a sample at its first end-of-sentence."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise CharlmError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.max_words < 1:
            raise CharlmError(f"--max-words must be at least 1, got {self.max_words}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise CharlmError(f"--temperature must be a positive number, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharlmError(f"--top-k must be at least 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise CharlmError(f"--top-p must be in (0, 1], got {self.top_p}")


@dataclass
class Samples:
    """What :func:`sample` returns: generated word ids per sample and how long it took."""

    ids: list[list[int]]
    seed: int
    seconds: float
    """Time of the sampling loop (the per-word cost)."""
    setup_seconds: float
    """Time to embed the vocabulary and read the prompt (once per call)."""

    @property
    def words(self) -> int:
        return sum(len(row) for row in self.ids)

    @property
    def ms_per_word(self) -> float:
        return 1000 * self.seconds / max(self.words, 1)


# ----------------------------------------------------------------------------- the model side


def prompt_vectors(model: CharLM, vocab: Vocabulary, prompt: str) -> tuple[list[str], torch.Tensor]:
    """Tokenize ``prompt`` and read each token as the model would: ``([tokens], [n, D])``.

    ``<eos>`` comes first (the context of a text's first word). Unknown words are read from their
    spelling (see :func:`charlm.analysis.represent_words`).
    """
    from charlm.analysis import represent_words

    tokens = vocab.tokenize(prompt) if prompt else []
    return tokens, represent_words(model, vocab, [vocab.words[vocab.eos_id], *tokens])


@torch.inference_mode()
def prompt_state(model: CharLM, vocab: Vocabulary, prompt: str = "") -> tuple[torch.Tensor, State]:
    """Run ``<eos>`` + prompt through the model: next-word log-probabilities ``[V]`` and the core's state."""
    _, x = prompt_vectors(model, vocab, prompt)  # [n, D]
    log_probs, state = model.log_probs_embedded(x.unsqueeze(0), model.initial_state(1))  # [1, n, V]
    return log_probs[0, -1], state


def next_word_distribution(model: CharLM, vocab: Vocabulary, prompt: str = "") -> torch.Tensor:
    """Probabilities ``[V]`` of the word after ``prompt`` (eval mode, temperature 1)."""
    was_training = model.training
    model.eval()
    try:
        log_probs, _ = prompt_state(model, vocab, prompt)
    finally:
        model.train(was_training)
    return log_probs.exp()


def filter_logits(logits: torch.Tensor, options: SamplingOptions, unk_id: int) -> torch.Tensor:
    """Temperature, then ``<unk>`` removal, top-k and top-p, on logits (or log-probabilities)
    ``[B, V]`` (a new tensor)."""
    logits = logits.float() / options.temperature
    if options.no_unk:
        logits[:, unk_id] = -math.inf
    if options.top_k is not None and options.top_k < logits.size(-1):
        kth = torch.topk(logits, options.top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the words ranked above
        drop = mass_before >= options.top_p  # the first word is always kept
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))
    return logits


@torch.inference_mode()
def sample(model: CharLM, vocab: Vocabulary, prompt: str = "", options: SamplingOptions | None = None) -> Samples:
    """Sample ``options.num_samples`` continuations of ``prompt`` (word ids, prompt excluded)."""
    options = options or SamplingOptions()
    seed = secrets.randbelow(2**31) if options.seed is None else options.seed
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    with model.output.frozen():
        start = time.perf_counter()
        table = vocabulary_embeddings(model)  # [V, D], the input vector of every word, once
        logits, state = prompt_state(model, vocab, prompt)
        setup_seconds = time.perf_counter() - start
        rows, seconds = _sample_rows(model, vocab, options, table, logits, state, generator)
    model.train(was_training)
    ids = []
    for row in rows.tolist():
        if options.stop_at_eos and vocab.eos_id in row:
            row = row[: row.index(vocab.eos_id)]
        ids.append(row)
    return Samples(ids=ids, seed=seed, seconds=seconds, setup_seconds=setup_seconds)


def _sample_rows(
    model: CharLM,
    vocab: Vocabulary,
    options: SamplingOptions,
    table: torch.Tensor,
    logits: torch.Tensor,
    state: State,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """The sampling loop: word ids ``[B, t]`` of every sample, and the seconds it took."""
    start = time.perf_counter()
    batch = options.num_samples
    logits = logits.expand(batch, -1)  # [B, V]
    state = expand_state(model.core, state, batch)
    rows = torch.empty(batch, 0, dtype=torch.long, device=logits.device)  # [B, t]
    finished = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    for _ in range(options.max_words):
        probs = torch.softmax(filter_logits(logits, options, vocab.unk_id), dim=-1)
        words = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
        rows = torch.cat([rows, words], dim=1)
        if options.stop_at_eos:
            finished |= words[:, 0] == vocab.eos_id
            if bool(finished.all()):
                break
        out, state = model.log_probs_embedded(table[words], state)  # [B, 1, V]
        logits = out[:, 0]
    return rows, time.perf_counter() - start


def join_text(vocab: Vocabulary, prompt: str, ids: list[int]) -> str:
    """The prompt followed by the detokenised continuation."""
    prompt = prompt.strip()
    continuation = vocab.decode(ids)
    if not prompt or not continuation or continuation.startswith("\n"):
        return prompt + continuation
    continues_word = vocab.tokenizer == "sentencepiece" and not vocab.words[ids[0]].startswith(SENTENCEPIECE_WORD_START)
    return prompt + ("" if continues_word else " ") + continuation


def generate(model: CharLM, vocab: Vocabulary, prompt: str = "", **options) -> list[str]:
    """Sample texts: the prompt followed by its continuation, one string per sample.

    ``options`` are the fields of :class:`SamplingOptions` (``num_samples``, ``max_words``,
    ``temperature``, ``top_k``, ``top_p``, ``seed``, ``no_unk``, ``stop_at_eos``).
    """
    result = sample(model, vocab, prompt, SamplingOptions(**options))
    return [join_text(vocab, prompt, ids) for ids in result.ids]


# ----------------------------------------------------------------------------- CLI

SAMPLE_SEPARATOR = "-" * 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SamplingOptions()
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt",
        default="",
        help="text to continue; any words, including ones the model never saw (empty: start of a text)",
    )
    parser.add_argument("--num-samples", type=int, default=defaults.num_samples, help="number of independent samples")
    parser.add_argument(
        "--max-words",
        type=int,
        default=defaults.max_words,
        help="words (tokens, <eos> included) to generate per sample",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=defaults.temperature,
        help="divide the logits by this (> 0): below 1 sharper, above 1 flatter",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=defaults.top_k,
        help="sample only among the K most likely words (K >= 1; None: all words)",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=defaults.top_p,
        help="nucleus sampling: only among the most likely words whose probabilities sum to P (0 < P <= 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="random seed: the same seed gives the same text (None: a fresh seed, printed to stderr)",
    )
    parser.add_argument("--no-unk", action="store_true", help="never emit <unk>")
    parser.add_argument("--stop-at-eos", action="store_true", help="end each sample at its first end-of-sentence")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (samples, seed, ms_per_word) instead of the texts"
    )


@main_process_only
def run(args: argparse.Namespace) -> int:
    options = SamplingOptions(**{f.name: getattr(args, f.name) for f in fields(SamplingOptions)})
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as err:  # bytes that are not UTF-8 reach sys.argv as lone surrogates
        raise CharlmError(
            f"--prompt is not UTF-8 text (character {err.object[err.start]!r} at position "
            f"{err.start}); pass the prompt in UTF-8"
        ) from None
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    result = sample(model, vocab, args.prompt, options)
    texts = [join_text(vocab, args.prompt, ids) for ids in result.ids]
    if args.json:
        print(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "samples": texts,
                    **asdict(options),
                    "seed": result.seed,
                    "words": result.words,
                    "ms_per_word": round(result.ms_per_word, 3),
                    "setup_seconds": round(result.setup_seconds, 3),
                },
                ensure_ascii=False,
            )
        )
    else:
        print(f"\n{SAMPLE_SEPARATOR}\n".join(text.rstrip("\n") for text in texts))
        print(
            f"{result.words} words in {result.seconds:.2f} s ({result.ms_per_word:.2f} ms/word; setup "
            f"{result.setup_seconds:.2f} s), seed {result.seed}",
            file=sys.stderr,
        )
    return 0
