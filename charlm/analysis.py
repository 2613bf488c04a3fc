"""What the character-aware word representation has learned: nearest neighbours and highway gates.

    charlm neighbors --checkpoint runs/ptb-char-large/best while richard computer-aided looooook
    charlm gates --checkpoint runs/ptb-char-large/best --data-dir data/ptb --split valid --output runs/gates

*Neighbours* (the paper's Table 6): the vocabulary words whose representation is closest, by
cosine similarity, to a word's -- after the highway layers (``stage='highway'``, the paper's
choice) or straight out of the char-CNN (``'cnn'``). Any string has a representation, because a
character-aware model reads a word from its spelling; that is how the paper finds neighbours of
``looooook``. For a word-input model the representation is the word embedding (vocabulary words
only); for ``input='both'`` an unknown word is its spelling plus ``<unk>``'s embedding.

*Gates*: each highway layer mixes its transform and its input, ``z = t * H(y) + (1 - t) * y``.
The mean transform gate ``t`` per layer and dimension over the tokens of a text shows which
dimensions the layer mostly carries (mean t < 0.5) and which it mostly transforms. Gates depend
only on the word, so each distinct word is encoded once and weighted by its count.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.inputs import (
    add_model_arguments,
    add_source_arguments,
    corpus_split_ids,
    load_checkpoint,
    main_process_only,
    read_text_lines,
)
from charlm.io import atomic_open
from charlm.model import CharLM
from charlm.plots import MATPLOTLIB_MISSING, new_figure, save_figure
from charlm.text import EOS_WORD, UNK_WORD, Vocabulary

STAGES = ("cnn", "highway")
CHUNK_WORDS = 4096  # words encoded per call when going through the whole vocabulary


@dataclass(frozen=True)
class AnalysisDefaults:
    """The defaults of ``charlm neighbors`` and ``charlm gates`` (argparse reads them from here)."""

    k: int = 5
    """Neighbours listed per word."""
    stage: str = "highway"
    """Representation compared: 'cnn' (char-CNN output), 'highway' (after the highway layers) or 'both'."""


DEFAULTS = AnalysisDefaults()


# ----------------------------------------------------------------------------- representations


def in_vocabulary(vocab: Vocabulary, word: str) -> bool:
    return word == UNK_WORD or vocab.word_id(word) != vocab.unk_id


def represent_words(
    model: CharLM,
    vocab: Vocabulary,
    words: list[str],
    stage: str = "highway",
    gates: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The input vector ``[n, D]`` the model reads for each of ``words`` (any strings).

    Character input: the word's spelling through the char-CNN, whether or not it is in the
    vocabulary. Word input: the word embedding (an unknown word is ``<unk>``, as the model reads
    it). ``stage='cnn'`` stops before the highway layers; ``gates``, if a list, receives each
    highway layer's transform gate ``[n, D]``.
    """
    if stage not in STAGES:
        raise CharlmError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    device = model.device
    chars = ids = None
    if model.encoder.char_cnn is not None:
        chars = torch.tensor([vocab.spell(word) for word in words], dtype=torch.long, device=device)  # [n, L]
    if model.encoder.word_embedding is not None:
        ids = torch.tensor([vocab.word_id(word) for word in words], dtype=torch.long, device=device)  # [n]
    x = model.encoder.read(chars, ids)  # [n, filters (+ word_embed_dim)]
    return x if stage == "cnn" else model.highway(x, gates)


@torch.inference_mode()
def vocabulary_representations(model: CharLM, vocab: Vocabulary, stage: str = "highway") -> torch.Tensor:
    """:func:`represent_words` of every vocabulary word, ``[V, D]``, in vocabulary order."""
    return torch.cat(
        [
            represent_words(model, vocab, vocab.words[i : i + CHUNK_WORDS], stage)
            for i in range(0, len(vocab), CHUNK_WORDS)
        ]
    )


# ----------------------------------------------------------------------------- neighbours


def stages_of(stage: str) -> tuple[str, ...]:
    if stage == "both":
        return STAGES
    if stage not in STAGES:
        raise CharlmError(f"--stage must be cnn, highway or both; got {stage!r}")
    return (stage,)


@torch.inference_mode()
def nearest_neighbors(
    model: CharLM, vocab: Vocabulary, words: list[str], k: int = DEFAULTS.k, stage: str = DEFAULTS.stage
) -> list[dict[str, Any]]:
    """The ``k`` vocabulary words most cosine-similar to each of ``words``.

    Returns one record per word: ``{"word", "in_vocabulary", "neighbors": {stage: [{"word",
    "similarity"}, ...]}}`` with one list per stage asked for (``'both'``: cnn and highway). A
    vocabulary word is its own first neighbour, with similarity 1.
    """
    if k < 1:
        raise CharlmError(f"-k must be at least 1, got {k}")
    if not words:
        raise CharlmError("give at least one word")
    stages = stages_of(stage)
    known = [in_vocabulary(vocab, word) for word in words]
    if model.encoder.char_cnn is None:
        unknown = [word for word, ok in zip(words, known) if not ok]
        if unknown:
            raise CharlmError(
                f"{', '.join(unknown)}: not in the vocabulary, and a word-input model has no representation "
                "for unknown words (only character-input models read spellings)"
            )
    was_training = model.training
    model.eval()
    k = min(k, len(vocab))
    results = [{"word": word, "in_vocabulary": ok, "neighbors": {}} for word, ok in zip(words, known)]
    for name in stages:
        table = F.normalize(vocabulary_representations(model, vocab, name).float(), dim=-1)  # [V, D]
        queries = F.normalize(represent_words(model, vocab, words, name).float(), dim=-1)  # [n, D]
        similarity = (queries @ table.T).clamp(-1.0, 1.0)  # [n, V]
        for row, result, word, ok in zip(similarity, results, words, known):
            if ok:  # exactly 1 by definition; rounding must not put a look-alike first
                row[vocab.word_id(word)] = 2.0
            values, ids = torch.topk(row, k)
            result["neighbors"][name] = [
                {"word": vocab.words[i], "similarity": round(min(v, 1.0), 4)}
                for v, i in zip(values.tolist(), ids.tolist())
            ]
    model.train(was_training)
    return results


def format_neighbors(results: list[dict[str, Any]]) -> str:
    """A readable table: one block per word, one column per stage."""
    blocks = []
    for result in results:
        stages = list(result["neighbors"])
        columns = [[f"{n['word']}  {n['similarity']:.3f}" for n in result["neighbors"][s]] for s in stages]
        widths = [max(len(s), *(len(cell) for cell in column)) for s, column in zip(stages, columns)]
        status = "in vocabulary" if result["in_vocabulary"] else "not in vocabulary"
        lines = [f"{result['word']} ({status})", "     " + "   ".join(s.ljust(w) for s, w in zip(stages, widths))]
        for rank, cells in enumerate(zip(*columns), start=1):
            lines.append(f"{rank:>3}. " + "   ".join(cell.ljust(w) for cell, w in zip(cells, widths)))
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks)


def add_neighbors_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "words",
        nargs="+",
        metavar="WORD",
        help="words to look up, in the vocabulary or not (e.g. computer-aided, looooook)",
    )
    parser.add_argument("-k", type=int, default=DEFAULTS.k, help="neighbours listed per word")
    parser.add_argument(
        "--stage",
        choices=(*STAGES, "both"),
        default=DEFAULTS.stage,
        help="compare representations after the highway layers (the paper's Table 6), "
        "straight from the char-CNN, or show both",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


@main_process_only
def run_neighbors(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise CharlmError(f"-k must be at least 1, got {args.k}")
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    results = nearest_neighbors(model, vocab, args.words, args.k, args.stage)
    print(json.dumps(results, ensure_ascii=False) if args.json else format_neighbors(results))
    return 0


# ----------------------------------------------------------------------------- gates


@dataclass
class GateActivity:
    """Mean highway transform gate per layer and dimension over the tokens of a text."""

    mean: np.ndarray
    """``[layers, dimensions]``: the token-weighted mean of t."""
    tokens: int
    """Tokens averaged over (<eos> included where the vocabulary adds it)."""
    distinct_words: int
    unknown_tokens: int = 0
    """Tokens not in the vocabulary (read from their spelling by a character-input model)."""
    carry_fraction: list[float] = field(init=False)
    """Per layer: share of dimensions with mean t < 0.5 (mostly carry the input)."""

    def __post_init__(self) -> None:
        self.carry_fraction = [float(x) for x in (self.mean < 0.5).mean(axis=1)]

    def to_json(self) -> dict[str, Any]:
        layers, dims = self.mean.shape
        return {
            "tokens": self.tokens,
            "distinct_words": self.distinct_words,
            "unknown_tokens": self.unknown_tokens,
            "layers": layers,
            "dimensions": dims,
            "mean_per_layer": [float(x) for x in self.mean.mean(axis=1)],
            "carry_fraction": self.carry_fraction,
            "transform_fraction": [1.0 - x for x in self.carry_fraction],
            "mean_gate": self.mean.round(6).tolist(),  # [layers][dimensions]
        }


def check_has_gates(model: CharLM) -> None:
    if not model.highway.gate_biases():
        raise CharlmError(
            f"this model has no highway gates (highway={model.config.highway!r}, "
            f"{model.config.highway_layers} layers); gate activity needs highway layers"
        )


@torch.inference_mode()
def gate_activity(model: CharLM, vocab: Vocabulary, counts: dict[str, int]) -> GateActivity:
    """Mean transform gate over a text given as ``{word: number of tokens}`` (see :func:`text_word_counts`)."""
    check_has_gates(model)
    words = [word for word, n in counts.items() if n > 0]
    if not words:
        raise CharlmError("the text has no tokens")
    was_training = model.training
    model.eval()
    weights = torch.tensor([counts[w] for w in words], dtype=torch.float64)  # [U]
    total = None
    for i in range(0, len(words), CHUNK_WORDS):
        gates: list[torch.Tensor] = []
        represent_words(model, vocab, words[i : i + CHUNK_WORDS], "highway", gates)  # each gate [u, D]
        w = weights[i : i + CHUNK_WORDS].to(gates[0].device)
        part = torch.stack([(g.double() * w[:, None]).sum(0) for g in gates])  # [layers, D]
        total = part if total is None else total + part
    model.train(was_training)
    mean = (total / weights.sum()).cpu().numpy()
    unknown = sum(counts[w] for w in words if not in_vocabulary(vocab, w))
    return GateActivity(mean=mean, tokens=int(weights.sum()), distinct_words=len(words), unknown_tokens=unknown)


def text_word_counts(vocab: Vocabulary, lines: list[str]) -> Counter:
    """Token counts of raw text lines, tokenized as the model's corpus was (<eos> per line if the
    vocabulary adds it). Unknown words are kept as themselves: their spelling is what a
    character-input model can read."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(vocab.tokenize(line))
    if vocab.add_eos:
        counts[EOS_WORD] += len(lines)
    return counts


def ids_word_counts(vocab: Vocabulary, ids: np.ndarray) -> dict[str, int]:
    """Token counts of a stream of word ids."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(vocab))
    return {vocab.words[i]: int(counts[i]) for i in np.flatnonzero(counts)}


def gates_figure(activity: GateActivity):
    """Heatmap of mean t: dimensions (rows) x layers (columns). Raises ImportError without matplotlib."""
    layers, dims = activity.mean.shape
    figure = new_figure(2.2 + 0.9 * layers, 6.0)
    ax = figure.add_subplot()
    image = ax.imshow(activity.mean.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(layers), [str(i + 1) for i in range(layers)])
    ax.set_xlabel("highway layer")
    ax.set_ylabel(f"dimension (of {dims})")
    ax.set_title(f"mean transform gate t\n({activity.tokens:,} tokens)", fontsize=9)
    figure.colorbar(image, ax=ax, label="mean t (0 carry, 1 transform)")
    return figure


def write_gate_files(activity: GateActivity, prefix: str | Path) -> list[Path]:
    """``PREFIX.csv`` (dimension x layers), ``PREFIX.json`` and, with matplotlib, ``PREFIX.png``.

    Each file is written atomically. Returns the paths written (no PNG without matplotlib).
    """
    prefix = Path(prefix)
    try:
        figure = gates_figure(activity)
    except ImportError:
        figure = None
    prefix.parent.mkdir(parents=True, exist_ok=True)
    layers, dims = activity.mean.shape
    csv_path, json_path, png_path = (prefix.with_name(prefix.name + ext) for ext in (".csv", ".json", ".png"))
    with atomic_open(csv_path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["dimension", *(f"layer_{i + 1}" for i in range(layers))])
        for d in range(dims):
            writer.writerow([d, *(f"{x:.6f}" for x in activity.mean[:, d])])
    with atomic_open(json_path) as f:
        json.dump(activity.to_json(), f)
        f.write("\n")
    written = [csv_path, json_path]
    if figure is not None:
        written.append(save_figure(figure, png_path))
    return written


def format_gates(activity: GateActivity) -> str:
    dims = activity.mean.shape[1]
    lines = []
    for i, (mean, carry) in enumerate(zip(activity.mean.mean(axis=1), activity.carry_fraction), start=1):
        lines.append(
            f"layer {i}: mean t {mean:.3f} | of {dims} dimensions {carry:.1%} mostly carry (mean t < 0.5), "
            f"{1 - carry:.1%} mostly transform"
        )
    return "\n".join(lines)


def add_gates_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_source_arguments(parser)
    parser.add_argument(
        "--output",
        required=True,
        metavar="PREFIX",
        help="writes PREFIX.png (heatmap), PREFIX.csv (dimension x layer) and PREFIX.json",
    )


def check_output_prefix(prefix: str | Path) -> None:
    """Fail before any work if ``PREFIX.{csv,json,png}`` cannot be written (missing folders are made)."""
    prefix = Path(prefix)
    existing = next(p for p in (prefix.parent, *prefix.parent.parents) if p.exists())
    if not existing.is_dir():
        raise CharlmError(f"cannot write {prefix}.csv/.json/.png: {existing} is a file, not a folder")
    for ext in (".csv", ".json", ".png"):
        if prefix.with_name(prefix.name + ext).is_dir():
            raise CharlmError(f"cannot write {prefix}{ext}: it is a folder")


@main_process_only
def run_gates(args: argparse.Namespace) -> int:
    check_output_prefix(args.output)
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    check_has_gates(model)
    if args.text_file is not None:
        counts = text_word_counts(vocab, read_text_lines(args.text_file))
    else:
        counts = ids_word_counts(vocab, corpus_split_ids(vocab, args.data_dir, args.split))
    activity = gate_activity(model, vocab, counts)
    written = write_gate_files(activity, args.output)
    print(
        f"{activity.tokens:,} tokens, {activity.distinct_words:,} distinct words "
        f"({activity.unknown_tokens:,} tokens not in the vocabulary)"
    )
    print(format_gates(activity))
    print("wrote " + ", ".join(str(p) for p in written))
    if not any(p.suffix == ".png" for p in written):
        print(f"PNG skipped: {MATPLOTLIB_MISSING}")
    return 0
