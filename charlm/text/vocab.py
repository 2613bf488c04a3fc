"""The vocabulary: words (or pieces), the characters that spell them, and their tokenizer (:mod:`charlm.text`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from charlm.errors import CharlmError
from charlm.io import atomic_write_bytes
from charlm.text.backends import (
    BACKENDS,
    SentencePieceTokenizer,
    WordTokenizer,
    lines_text,
    normalize_text,
    split_words,
    text_windows,
)
from charlm.text.options import (
    MIN_MAX_WORD_LENGTH,
    NORMALIZATION,
    PRE_TOKENIZERS,
    SP_MODEL_TYPES,
    TRAIN_BATCH_LINES,
    VOCAB_FILE,
    VOCAB_FORMAT,
    VOCAB_FORMAT_VERSION,
    VocabOptions,
)
from charlm.text.specials import (
    BOW_CHAR,
    EOS_WORD,
    EOW_CHAR,
    NUM_RESERVED_CHARS,
    PAD_CHAR,
    RESERVED_CHAR_NAMES,
    SPECIAL_WORD_CHARS,
    SPECIAL_WORDS,
    UNK_CHAR,
    UNK_WORD,
)

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# Word mode in one read of the text
# ---------------------------------------------------------------------------------------------


class WordCounter:
    """A word vocabulary in the making, fed the text once.

    Every word gets a provisional id in order of first appearance (<unk> 0, <eos> 1), and the
    words of the training split are counted. ``charlm prepare`` stores the provisional ids of
    every split as it reads them and renumbers them with the table :meth:`vocabulary` returns,
    so the text is tokenized only once. Memory grows with the number of different words only.
    Counters fed different parts of a corpus (in different processes) are combined with
    :meth:`absorb`.
    """

    def __init__(self, options: VocabOptions):
        self.options = options.resolved()
        if self.options.tokenizer != "word":
            raise ValueError(f"WordCounter is for the word tokenizer, not {self.options.tokenizer}")
        self._ids = {word: i for i, word in enumerate(SPECIAL_WORDS)}  # word -> provisional id
        self._counts = np.zeros(1 << 16, dtype=np.int64)  # training count by provisional id

    def encode(self, lines: Sequence[str], train: bool) -> np.ndarray:
        """Provisional ids (int32) of the lines' words, ``<eos>`` after each line if add_eos;
        counted if the lines are training lines."""
        text = lines_text(lines, self.options.lowercase, self.options.add_eos)
        ids = np.concatenate(
            [self._provisional_ids(split_words(window, self.options.pre_tokenizer)) for window in text_windows(text)]
        )
        if train:
            counts = np.bincount(ids)  # [largest id + 1]
            self._grow_counts(len(counts))
            self._counts[: len(counts)] += counts
        return ids

    def words_seen(self) -> tuple[list[str], np.ndarray]:
        """Every word seen, in provisional id order, and its training count."""
        return list(self._ids), self._counts[: len(self._ids)].copy()

    def absorb(self, words: list[str], counts: np.ndarray) -> np.ndarray:
        """Add the :meth:`words_seen` of another counter (fed other batches of the same
        corpus); returns the table from its provisional ids to this counter's."""
        table = np.fromiter(
            (self._ids.setdefault(word, len(self._ids)) for word in words), dtype=np.int32, count=len(words)
        )
        self._grow_counts(len(self._ids))
        self._counts[table] += counts  # table has no repeats: a plain add
        return table

    def _grow_counts(self, size: int) -> None:
        if size > len(self._counts):  # room for twice as many words
            self._counts = np.concatenate([self._counts, np.zeros(2 * size, np.int64)])

    def _provisional_ids(self, words: list[str]) -> np.ndarray:
        """Ids of known words in one C-level sweep; then new words get the next ids."""
        ids = np.fromiter(map(self._ids.get, words, repeat(-1)), dtype=np.int32, count=len(words))
        for i in np.flatnonzero(ids < 0).tolist():
            ids[i] = self._ids.setdefault(words[i], len(self._ids))
        return ids

    def vocabulary(self) -> tuple["Vocabulary", np.ndarray]:
        """The vocabulary of the counted training words, and the table from provisional ids to
        its word ids (``<unk>`` for words it does not keep): int32 [number of words seen]."""
        types = list(self._ids)
        counts = self._counts[: len(types)]
        backend, words, chars = WordTokenizer.from_counts(types, counts, self.options)
        vocab = Vocabulary._assemble(backend, words, chars, self.options)
        final = {word: i for i, word in enumerate(words)}
        table = np.fromiter((final.get(word, 0) for word in types), dtype=np.int32, count=len(types))
        return vocab, table


# ---------------------------------------------------------------------------------------------
# The vocabulary
# ---------------------------------------------------------------------------------------------


class Vocabulary:
    """Words, the characters that spell them, and the tokenizer that finds them in text.

    Build one with :meth:`train` (from the training split) or :meth:`load` (from a prepared
    corpus directory). ``len(vocab)`` is the number of words; word ids index ``spellings()``.
    """

    def __init__(
        self,
        words: list[str],
        chars: list[str],
        max_word_length: int,
        backend: WordTokenizer | SentencePieceTokenizer,
        add_eos: bool = True,
        lowercase: bool = False,
    ):
        if tuple(words[: len(SPECIAL_WORDS)]) != SPECIAL_WORDS:
            raise ValueError(f"the first words must be {SPECIAL_WORDS}, got {words[:2]}")
        if tuple(chars[:NUM_RESERVED_CHARS]) != RESERVED_CHAR_NAMES:
            raise ValueError(f"the first chars must be {RESERVED_CHAR_NAMES}, got {chars[:6]}")
        self.words = words
        self.chars = chars
        self.max_word_length = max_word_length
        self.tokenizer = backend.kind
        self.add_eos = add_eos
        self.lowercase = lowercase
        self._backend = backend
        self._word_ids = {word: i for i, word in enumerate(words)}
        self._char_ids = {char: i for i, char in enumerate(chars) if i >= NUM_RESERVED_CHARS}
        self._spellings: torch.Tensor | None = None

    @classmethod
    def train(cls, lines: Iterable[str], options: VocabOptions | None = None) -> "Vocabulary":
        """Build the vocabulary from the training split's lines (see :class:`VocabOptions`).
        ``lines`` may be a stream: it is read once, and never held whole."""
        options = (options or VocabOptions()).resolved()
        if options.tokenizer == "sentencepiece":
            normalized = (normalize_text(line, options.lowercase) for line in lines)
            return cls._assemble(*SentencePieceTokenizer.train(normalized, options), options)
        counter = WordCounter(options)
        lines = iter(lines)
        while batch := list(islice(lines, TRAIN_BATCH_LINES)):
            counter.encode(batch, train=True)
        return counter.vocabulary()[0]

    @classmethod
    def _assemble(
        cls,
        backend: "WordTokenizer | SentencePieceTokenizer",
        words: list[str],
        chars: set[str],
        options: VocabOptions,
    ) -> "Vocabulary":
        """The vocabulary of a trained back end: characters sorted after the reserved ones, the
        spelling length from the longest word."""
        longest = max((len(word) for word in words[len(SPECIAL_WORDS) :]), default=1)
        max_word_length = max(MIN_MAX_WORD_LENGTH, min(longest + 2, options.max_word_length))
        return cls(
            words=words,
            chars=[*RESERVED_CHAR_NAMES, *sorted(chars)],
            max_word_length=max_word_length,
            backend=backend,
            add_eos=options.add_eos,
            lowercase=options.lowercase,
        )

    # -- sizes and lookups ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return (
            f"Vocabulary({len(self.words)} {self.tokenizer} words, {len(self.chars)} chars, "
            f"max_word_length={self.max_word_length})"
        )

    @property
    def unk_id(self) -> int:
        return self._word_ids[UNK_WORD]

    @property
    def eos_id(self) -> int:
        return self._word_ids[EOS_WORD]

    def normalize(self, text: str) -> str:
        """The normalisation applied to all text: NFC, and lowercasing if this vocabulary does."""
        return normalize_text(text, self.lowercase)

    def word_id(self, word: str) -> int:
        """The id of ``word``, or ``unk_id`` if it is not in the vocabulary."""
        return self._word_ids.get(self.normalize(word), self.unk_id)

    # -- spelling --------------------------------------------------------------------------------

    def spell(self, word: str) -> list[int]:
        """Character ids of any string: ``[BOW, c1, ..., cn, EOW, PAD, ...]``.

        Unseen characters become ``UNK_CHAR``; a word longer than ``max_word_length - 2``
        characters is cut but keeps its EOW. ``<unk>`` and ``<eos>`` are one reserved character.
        """
        word = self.normalize(word)
        if word in SPECIAL_WORD_CHARS:
            inner = [SPECIAL_WORD_CHARS[word]]
        else:
            kept = word[: self.max_word_length - 2]
            inner = [self._char_ids.get(char, UNK_CHAR) for char in kept]
        ids = [BOW_CHAR, *inner, EOW_CHAR]
        return ids + [PAD_CHAR] * (self.max_word_length - len(ids))

    def spellings(self) -> "torch.Tensor":
        """Spelling of every word: LongTensor [len(words), max_word_length]; row i spells word i."""
        if self._spellings is None:
            import torch  # imported here so that `charlm prepare` does not pay for torch

            table = np.array([self.spell(word) for word in self.words], dtype=np.int64)
            self._spellings = torch.from_numpy(table)  # [num_words, max_word_length]
        return self._spellings

    # -- text <-> ids ----------------------------------------------------------------------------

    def tokenize(self, line: str) -> list[str]:
        """Normalise ``line`` and split it into words (or pieces) with this tokenizer; no <eos>."""
        return self._backend.tokenize(self.normalize(line))

    def encode_lines(self, lines: Iterable[str]) -> np.ndarray:
        """Word ids (int32) of all lines, one after the other, ``<eos>`` after each if add_eos.

        Words not in the vocabulary, and a literal ``<unk>`` in the text, become ``unk_id``.
        The lines are encoded as one text, window by window (see :func:`text_windows`), so a
        line of any length takes bounded memory.
        """
        text = lines_text(list(lines), self.lowercase, self.add_eos)
        windows = [np.array(*self._backend.encode_batch([window]), dtype=np.int32) for window in text_windows(text)]
        return np.concatenate(windows)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text: ``<eos>`` ends a line (a newline); words are joined by spaces
        (sentencepiece pieces are detokenised by the sentencepiece model)."""
        lines, line = [], []
        for i in (int(i) for i in ids):
            if i == self.eos_id:
                lines.append(self._backend.decode_line(line, self.words) + "\n")
                line = []
            else:
                line.append(i)
        tail = self._backend.decode_line(line, self.words) if line else ""
        return "".join(lines) + tail

    # -- files -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.json`` and the tokenizer's own file into ``directory``.

        Each file is written under a temporary name and then renamed, so a reader never sees
        half a file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        description = {
            "format": VOCAB_FORMAT,
            "format_version": VOCAB_FORMAT_VERSION,
            "tokenizer": self.tokenizer,
            "tokenizer_file": self._backend.file_name,
            "pre_tokenizer": None,
            "sp_model_type": None,
            **self._backend.describe(),
            "normalization": NORMALIZATION,
            "lowercase": self.lowercase,
            "add_eos": self.add_eos,
            "special_words": {word: self._word_ids[word] for word in SPECIAL_WORDS},
            "vocab_size": len(self.words),
            "char_vocab_size": len(self.chars),
            "max_word_length": self.max_word_length,
            "words": self.words,
            "chars": self.chars,
        }
        atomic_write_bytes(directory / self._backend.file_name, self._backend.to_bytes())
        text = json.dumps(description, indent=1, ensure_ascii=False) + "\n"
        atomic_write_bytes(directory / VOCAB_FILE, text.encode("utf-8"))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`; a missing or broken file is a CharlmError."""
        directory = Path(directory)
        path = directory / VOCAB_FILE
        fix = f"prepare the corpus again with `charlm prepare --output-dir {directory} ...`"
        if not path.is_file():
            raise CharlmError(f"{path} not found: {directory} is not a prepared corpus; {fix}")
        try:
            description = json.loads(path.read_text(encoding="utf-8"))
            words, chars = description["words"], description["chars"]
            backend_class = BACKENDS[description["tokenizer"]]
            if description["tokenizer"] == "word":
                _check_value("pre_tokenizer", description["pre_tokenizer"], PRE_TOKENIZERS)
            else:
                _check_value("sp_model_type", description["sp_model_type"], SP_MODEL_TYPES)
            max_word_length = int(description["max_word_length"])
            add_eos, lowercase = bool(description["add_eos"]), bool(description["lowercase"])
            if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                raise ValueError("'words' is not a list of strings")
            if not (isinstance(chars, list) and all(isinstance(c, str) for c in chars)):
                raise ValueError("'chars' is not a list of strings")
        except (ValueError, KeyError, TypeError) as err:  # json.JSONDecodeError is a ValueError
            raise CharlmError(f"{path} is malformed ({type(err).__name__}: {err}); {fix}") from None
        tokenizer_path = directory / backend_class.file_name
        if not tokenizer_path.is_file():
            raise CharlmError(f"{tokenizer_path} not found (it belongs to {path}); {fix}")
        try:
            backend = backend_class.from_bytes(tokenizer_path.read_bytes(), description)
        except Exception as err:  # each library raises its own kind of error for a bad file
            raise CharlmError(f"{tokenizer_path} is malformed ({err}); {fix}") from None
        if backend.pieces() != words:
            raise CharlmError(f"{tokenizer_path} does not match the words in {path}; {fix}")
        try:
            return cls(words, chars, max_word_length, backend, add_eos=add_eos, lowercase=lowercase)
        except ValueError as err:
            raise CharlmError(f"{path} is malformed ({err}); {fix}") from None


def _check_value(key: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key!r} must be one of {', '.join(choices)}, not {value!r}")
