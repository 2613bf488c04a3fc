"""The vocabulary: words (or sentencepiece pieces) and the characters that spell them.

Kim et al. (2016) feed the network characters but predict words. A :class:`Vocabulary` therefore
holds two inventories, both taken from the training split only:

* ``words``: id -> word. Ids 0 and 1 are always ``<unk>`` and ``<eos>``; the other words follow
  by descending training frequency. In sentencepiece mode the "words" are the pieces.
* ``chars``: id -> character (a Unicode code point after NFC normalisation, never a byte). The
  first :data:`NUM_RESERVED_CHARS` ids are reserved markers, named by placeholder strings::

      0 <pad>   padding after the end-of-word marker (the model keeps its embedding at zero)
      1 <bow>   begin of word
      2 <eow>   end of word
      3 <unkc>  a character never seen in the training split
      4 <unk>   the single character that spells the word <unk> ("one reserved symbol")
      5 <eos>   the single character that spells the word <eos>

Every word is spelled as ``[BOW, c1, ..., cn, EOW, PAD, ...]``, ``max_word_length`` ids long.
The model calls :meth:`Vocabulary.spellings` once (a ``[num_words, max_word_length]`` table) and
indexes it by word id, so a corpus is stored as word ids only.

Tokenisation is done by a real tokenizer, saved beside ``vocab.json`` so that a prepared corpus
explains itself and loading it never unpickles anything:

* ``word`` mode: a ``tokenizers`` WordLevel model (``tokenizer.json``). The ``whitespace``
  pre-tokenizer splits on whitespace only (for pre-tokenized corpora such as PTB); the
  ``punctuation`` pre-tokenizer also splits off each punctuation character (for raw text).
* ``sentencepiece`` mode: a unigram or BPE model (``spm.model``) trained in-process.

In both modes a literal ``<unk>`` or ``<eos>`` in the text is that special word, never split.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sentencepiece
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from charlm.errors import CharlmError
from charlm.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------------------------------
# Reserved ids
# ---------------------------------------------------------------------------------------------

PAD_CHAR = 0  # padding; its embedding row is kept at zero by the model
BOW_CHAR = 1  # begin-of-word marker
EOW_CHAR = 2  # end-of-word marker
UNK_CHAR = 3  # a character never seen in the training split
UNK_WORD_CHAR = 4  # the single character that spells the word <unk>
EOS_WORD_CHAR = 5  # the single character that spells the word <eos>
NUM_RESERVED_CHARS = 6
RESERVED_CHAR_NAMES = ("<pad>", "<bow>", "<eow>", "<unkc>", "<unk>", "<eos>")

UNK_WORD = "<unk>"
EOS_WORD = "<eos>"
SPECIAL_WORDS = (UNK_WORD, EOS_WORD)  # word ids 0 and 1, in both tokenizer modes
SPECIAL_WORD_CHARS = {UNK_WORD: UNK_WORD_CHAR, EOS_WORD: EOS_WORD_CHAR}
SPECIALS_RE = re.compile("(<unk>|<eos>)")  # capturing: re.split keeps the specials

# ---------------------------------------------------------------------------------------------
# Options and their defaults (the one place they are set; `charlm prepare` reads them from here)
# ---------------------------------------------------------------------------------------------

TOKENIZERS = ("word", "sentencepiece")
PRE_TOKENIZERS = ("whitespace", "punctuation")
SP_MODEL_TYPES = ("unigram", "bpe")
DEFAULT_MAX_WORD_LENGTH = 65  # the cap used by Kim et al. (their max_word_l)
DEFAULT_SENTENCEPIECE_VOCAB_SIZE = 8000
MIN_VOCAB_SIZE = len(SPECIAL_WORDS) + 1  # <unk>, <eos> and at least one real word
MIN_MAX_WORD_LENGTH = 3  # BOW, one character, EOW

# The punctuation pre-tokenizer keeps the specials whole, then takes runs of word characters
# and single other non-space characters: "don't <unk>." -> don ' t <unk> .
PUNCTUATION_PATTERN = r"<unk>|<eos>|\w+|[^\w\s]"

# sentencepiece training: the result depends on the thread count (not on the machine), so the
# count is fixed to keep training deterministic everywhere.
SENTENCEPIECE_TRAIN_THREADS = 8
# A large training split is sampled: sentencepiece keeps a seeded random sample of this many
# sentences (its reservoir sampling, `input_sentence_size`); smaller splits are used whole.
SENTENCEPIECE_SAMPLE_SENTENCES = 1_000_000
SENTENCEPIECE_SAMPLE_SEED = 0
# Longer training lines are cut at spaces into sentences of at most this many characters (a
# sentencepiece sentence is held whole in memory; sentencepiece cannot break one itself).
SENTENCEPIECE_MAX_SENTENCE_CHARS = 1 << 16

TRAIN_BATCH_LINES = 10_000  # lines per step of Vocabulary.train in word mode

# Streamed text is tokenized in windows of at most this many characters, cut at a space, so that
# a line of any length takes bounded memory (see text_windows).
WINDOW_CHARS = 1 << 22

VOCAB_FILE = "vocab.json"
WORD_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "spm.model"
VOCAB_FORMAT = "charlm-vocabulary"
VOCAB_FORMAT_VERSION = 1
NORMALIZATION = "NFC"


@dataclass(kw_only=True)
class VocabOptions:
    """How to build a vocabulary from the training split (``charlm prepare`` options)."""

    tokenizer: str = field(
        default="word",
        metadata={"help": "word: one id per word (the paper); sentencepiece: subword pieces"},
    )
    pre_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "word mode: 'whitespace' splits on whitespace only (pre-tokenized corpora "
            "such as PTB), 'punctuation' also splits off punctuation (raw text); "
            "unset: punctuation for --demo, whitespace otherwise"
        },
    )
    lowercase: bool | None = field(
        default=None,
        metadata={"help": "lowercase the text before anything else; unset: on for --demo, off otherwise"},
    )
    vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "total vocabulary size including <unk> and <eos>; word mode: keep the most "
            "frequent training words (unset: all of them), sentencepiece: number of pieces "
            f"(unset: {DEFAULT_SENTENCEPIECE_VOCAB_SIZE})"
        },
    )
    min_freq: int = field(
        default=1,
        metadata={"help": "word mode: training words seen fewer times than this become <unk>"},
    )
    sp_model_type: str = field(default="unigram", metadata={"help": "sentencepiece mode: the model type"})
    max_word_length: int = field(
        default=DEFAULT_MAX_WORD_LENGTH,
        metadata={
            "help": "cap on the spelling length (BOW and EOW included); the spelling length is "
            "the longest vocabulary word + 2, at most this; longer words are truncated"
        },
    )
    add_eos: bool = field(
        default=True,
        metadata={
            "help": "append <eos> after each line; --no-eos: do not (for corpora whose lines "
            "already end in an end-of-sentence token)"
        },
    )

    def __post_init__(self) -> None:
        _check_choice("--tokenizer", self.tokenizer, TOKENIZERS)
        if self.pre_tokenizer is not None:
            _check_choice("--pre-tokenizer", self.pre_tokenizer, PRE_TOKENIZERS)
        _check_choice("--sp-model-type", self.sp_model_type, SP_MODEL_TYPES)
        if self.vocab_size is not None and self.vocab_size < MIN_VOCAB_SIZE:
            raise CharlmError(
                f"--vocab-size {self.vocab_size} is too small: it counts the reserved words "
                f"{UNK_WORD} and {EOS_WORD}, so use at least {MIN_VOCAB_SIZE}"
            )
        if self.tokenizer == "sentencepiece" and (
            self.pre_tokenizer is not None or self.min_freq != VocabOptions.min_freq
        ):
            raise CharlmError("--pre-tokenizer and --min-freq apply to --tokenizer word only")
        if self.min_freq < 1:
            raise CharlmError(f"--min-freq must be at least 1, not {self.min_freq}")
        if self.max_word_length < MIN_MAX_WORD_LENGTH:
            raise CharlmError(
                f"--max-word-length must be at least {MIN_MAX_WORD_LENGTH} (BOW, a character, "
                f"EOW), not {self.max_word_length}"
            )

    def resolved(self, raw_text: bool = False) -> "VocabOptions":
        """A copy with every unset option replaced by its concrete value.

        ``raw_text`` (the demo corpus) switches the unset pre-tokenizer to ``punctuation`` and
        the unset ``lowercase`` to on. Sentencepiece mode has no pre-tokenizer.
        """
        sentencepiece_mode = self.tokenizer == "sentencepiece"
        pre_tokenizer = self.pre_tokenizer or ("punctuation" if raw_text else "whitespace")
        vocab_size = self.vocab_size
        if sentencepiece_mode and vocab_size is None:
            vocab_size = DEFAULT_SENTENCEPIECE_VOCAB_SIZE
        return dataclasses.replace(
            self,
            pre_tokenizer=None if sentencepiece_mode else pre_tokenizer,
            lowercase=raw_text if self.lowercase is None else self.lowercase,
            vocab_size=vocab_size,
        )


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CharlmError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")


def normalize_text(text: str, lowercase: bool = False) -> str:
    """NFC-normalise ``text`` (and lowercase it, then NFC again, when asked)."""
    text = unicodedata.normalize(NORMALIZATION, text)
    if lowercase:
        text = unicodedata.normalize(NORMALIZATION, text.lower())
    return text


# ---------------------------------------------------------------------------------------------
# Streamed text: many lines as one string, split into words by Python at the speed of str.split
# ---------------------------------------------------------------------------------------------

EOS_MARK = f" {EOS_WORD} "  # ends each line of lines_text(); a literal <eos> is the same word
# The whitespace of the tokenizers library (Rust's char::is_whitespace) is Python's str.split()
# whitespace without these four separators, which the tokenizers library keeps inside words.
PYTHON_ONLY_WHITESPACE = "\x1c\x1d\x1e\x1f"
_RUST_WHITESPACE_RE = re.compile(r"[^\S\x1c-\x1f]+")
# A <unk> or <eos> touching another character: "a<unk>b" is the three words a, <unk>, b.
_GLUED_SPECIAL_RE = re.compile(r"<(?:unk|eos)>(?:(?=\S)|(?<=\S<unk>)|(?<=\S<eos>))")


def lines_text(lines: Sequence[str], lowercase: bool, add_eos: bool) -> str:
    """Lines as one normalised text for :func:`split_words`: ``" <eos> "`` after each line (or
    a space between lines without ``add_eos``).

    Normalising the joined text equals normalising each line: NFC never composes across a
    space, and ``str.lower`` (its final-sigma rule) never looks past one. Splitting it equals
    splitting each line and appending <eos>, since a literal ``<eos>`` is that word anyway.
    """
    text = EOS_MARK.join([*lines, ""]) if add_eos else " ".join(lines)
    return normalize_text(text, lowercase)


def text_windows(text: str, size: int = WINDOW_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, each cut just after a space (a longer
    word stays whole). No word, <unk> or <eos> spans two pieces, and NFC, lowercasing and every
    tokenizer treat a space as a boundary, so the pieces tokenize exactly like the whole."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + 1, start + size) + 1 or text.find(" ", start + size) + 1
        if not cut:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def split_words(text: str, pre_tokenizer: str) -> list[str]:
    """The words of normalised ``text``, exactly as the word tokenizer (``_WordTokenizer.build``)
    finds them: a literal <unk> or <eos> is a word of its own even inside other characters."""
    if pre_tokenizer == "punctuation":  # the pattern itself keeps <unk> and <eos> whole
        return [word for word, _ in _pre_tokenizer(pre_tokenizer).pre_tokenize_str(text)]
    if not _GLUED_SPECIAL_RE.search(text) and not any(c in text for c in PYTHON_ONLY_WHITESPACE):
        return text.split()  # the common case, several times faster than the general one
    words = []
    for k, part in enumerate(SPECIALS_RE.split(text)):  # [text, special, text, ...]
        if k % 2:
            words.append(part)
        else:
            words.extend(word for word in _RUST_WHITESPACE_RE.split(part) if word)
    return words


# ---------------------------------------------------------------------------------------------
# Tokenizer back ends: each one splits normalised text into words and encodes it to word ids.
# Vocabulary picks one by name; nothing else in charlm looks at the mode.
# ---------------------------------------------------------------------------------------------


class _WordTokenizer:
    """Whole words, with a ``tokenizers`` WordLevel model (Rust, fast batch encoding)."""

    kind = "word"
    file_name = WORD_TOKENIZER_FILE

    def __init__(self, tokenizer: Tokenizer, pre_tokenizer: str):
        self.tokenizer = tokenizer
        self.pre_tokenizer = pre_tokenizer

    @staticmethod
    def build(vocab: dict[str, int], pre_tokenizer: str) -> Tokenizer:
        """A WordLevel tokenizer for ``vocab`` (which must map <unk> to 0 and <eos> to 1).

        It has no normalizer, like the sentencepiece model: :class:`Vocabulary` passes it text
        already normalised by :func:`normalize_text`, the one place that decides what a character
        is. (A ``tokenizers`` Lowercase step here once disagreed with Python's ``str.lower`` on
        letters newer than Python's Unicode tables, and a word's id then disagreed with its
        spelling. Corpora prepared before keep that step in their ``tokenizer.json``; it changes
        nothing for text without such letters.)
        """
        tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_WORD))
        tokenizer.pre_tokenizer = _pre_tokenizer(pre_tokenizer)
        # Special tokens are matched in the raw text before pre-tokenization, so a literal
        # "<unk>" is the <unk> word even where punctuation splitting would cut it up.
        tokenizer.add_special_tokens(list(SPECIAL_WORDS))
        return tokenizer

    @classmethod
    def from_counts(
        cls, types: list[str], counts: np.ndarray, options: VocabOptions
    ) -> tuple["_WordTokenizer", list[str], set[str]]:
        """Keep the frequent training words. ``types[i]`` was seen ``counts[i]`` times in the
        training split (0: only elsewhere); ``types`` starts with <unk> and <eos>.
        Returns (tokenizer, words, chars)."""
        # Specials first, then words by descending count (ties: by code points), limited.
        trained = [i for i in np.flatnonzero(counts).tolist() if i >= len(SPECIAL_WORDS)]
        by_word = sorted(trained, key=types.__getitem__)
        ranked = np.array(by_word, dtype=np.int64)[np.argsort(-counts[by_word], kind="stable")]
        kept = ranked[counts[ranked] >= options.min_freq]
        if options.vocab_size is not None:
            kept = kept[: options.vocab_size - len(SPECIAL_WORDS)]
        words = [*SPECIAL_WORDS, *(types[i] for i in kept.tolist())]
        # Characters: of every training word, including the rare ones that became <unk>.
        chars = set("".join(types[i] for i in trained))
        vocab = {word: i for i, word in enumerate(words)}
        tokenizer = cls.build(vocab, options.pre_tokenizer)
        return cls(tokenizer, options.pre_tokenizer), words, chars

    def describe(self) -> dict:
        return {"pre_tokenizer": self.pre_tokenizer}

    def tokenize(self, text: str) -> list[str]:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return [text[start:end] for start, end in encoding.offsets]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return _encode_batch(self.tokenizer, texts)

    def decode_line(self, ids: Sequence[int], words: list[str]) -> str:
        return " ".join(words[i] for i in ids)

    def to_bytes(self) -> bytes:
        return self.tokenizer.to_str(pretty=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, description: dict) -> "_WordTokenizer":
        return cls(Tokenizer.from_str(data.decode("utf-8")), description["pre_tokenizer"])

    def pieces(self) -> list[str]:
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)


def _pre_tokenizer(name: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer of the word tokenizer: ``whitespace`` or ``punctuation``."""
    if name == "whitespace":
        return pre_tokenizers.WhitespaceSplit()
    # invert=True: the pattern matches the words, everything between them is dropped
    return pre_tokenizers.Split(Regex(PUNCTUATION_PATTERN), behavior="removed", invert=True)


def _encode_batch(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    # encode_batch_fast (tokenizers >= 0.20) skips the offsets, which we do not need here.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]


class _SentencePieceTokenizer:
    """Subword pieces from a sentencepiece model; <unk> and <eos> are its ids 0 and 1."""

    kind = "sentencepiece"
    file_name = SENTENCEPIECE_FILE

    def __init__(self, model_proto: bytes, model_type: str):
        self.model_proto = model_proto
        self.model_type = model_type
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls, lines: Iterable[str], options: VocabOptions
    ) -> tuple["_SentencePieceTokenizer", list[str], set[str]]:
        """Train the model in-process on normalised lines, a stream read once (a large one is
        sampled, see SENTENCEPIECE_SAMPLE_SENTENCES). Returns (tokenizer, pieces, chars)."""
        sentences = _TrainingSentences(lines)
        model = io.BytesIO()
        sentencepiece.set_random_generator_seed(SENTENCEPIECE_SAMPLE_SEED)
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=sentences,
                model_writer=model,
                model_type=options.sp_model_type,
                vocab_size=options.vocab_size,
                character_coverage=1.0,  # every training character is a piece: no unseen chars
                normalization_rule_name="identity",  # the text is already NFC (and lowercased)
                unk_id=0,
                unk_piece=UNK_WORD,
                eos_id=1,
                eos_piece=EOS_WORD,
                bos_id=-1,
                pad_id=-1,
                max_sentence_length=4 * SENTENCEPIECE_MAX_SENTENCE_CHARS + 1,  # in bytes: none skipped
                input_sentence_size=SENTENCEPIECE_SAMPLE_SENTENCES,
                shuffle_input_sentence=True,
                num_threads=SENTENCEPIECE_TRAIN_THREADS,
                minloglevel=2,  # quiet
            )
        except RuntimeError as err:
            if not sentences.count:
                raise CharlmError(
                    "the training split has no text besides <unk>/<eos> to train sentencepiece on"
                ) from None
            reason = str(err).splitlines()[0].split("] ")[-1]
            raise CharlmError(
                f"sentencepiece could not train with --vocab-size {options.vocab_size}: {reason}"
            ) from None
        tokenizer = cls(model.getvalue(), options.sp_model_type)
        pieces = tokenizer.pieces()
        chars = set().union(*pieces[len(SPECIAL_WORDS) :])
        return tokenizer, pieces, chars

    def describe(self) -> dict:
        return {"sp_model_type": self.model_type}

    def _segments(self, text: str) -> list[str]:
        """Alternating [text, special, text, ...]; each text with its whitespace collapsed."""
        parts = SPECIALS_RE.split(text)
        parts[0::2] = [" ".join(part.split()) for part in parts[0::2]]
        return parts

    def _encode(self, texts: list[str], out_type: type) -> list[list]:
        segments = [self._segments(text) for text in texts]
        plain = [part for parts in segments for part in parts[0::2]]
        encoded = iter(self.processor.encode(plain, out_type=out_type))
        special = {UNK_WORD: 0, EOS_WORD: 1} if out_type is int else {w: w for w in SPECIAL_WORDS}
        result = []
        for parts in segments:
            row = []
            for k, part in enumerate(parts):
                if k % 2:
                    row.append(special[part])
                else:
                    row.extend(next(encoded))
            result.append(row)
        return result

    def tokenize(self, text: str) -> list[str]:
        return self._encode([text], str)[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._encode(texts, int)

    def decode_line(self, ids: Sequence[int], words: list[str]) -> str:
        """Detokenise runs of pieces with sentencepiece; <unk> becomes the text "<unk>"."""
        parts, run = [], []
        for i in ids:
            if i < len(SPECIAL_WORDS):
                parts += [self.processor.decode(run), words[i]]
                run = []
            else:
                run.append(i)
        parts.append(self.processor.decode(run))
        return " ".join(part for part in parts if part)

    def to_bytes(self) -> bytes:
        return self.model_proto

    @classmethod
    def from_bytes(cls, data: bytes, description: dict) -> "_SentencePieceTokenizer":
        return cls(data, description["sp_model_type"])

    def pieces(self) -> list[str]:
        return [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]


class _TrainingSentences:
    """The sentences sentencepiece trains on, made from normalised lines as it asks for them:
    literal specials cut out (they must not become pieces), whitespace collapsed, blank ones
    dropped, long ones cut at spaces. ``count`` says how many it has given."""

    def __init__(self, lines: Iterable[str]):
        self._lines = iter(lines)
        self._pending: Iterator[str] = iter(())
        self.count = 0

    def __iter__(self) -> "_TrainingSentences":
        return self

    def __next__(self) -> str:
        while True:
            for window in self._pending:
                sentence = window.strip()
                if sentence:
                    self.count += 1
                    return sentence
            text = " ".join(SPECIALS_RE.sub(" ", next(self._lines)).split())
            self._pending = text_windows(text, SENTENCEPIECE_MAX_SENTENCE_CHARS)


_BACKENDS = {backend.kind: backend for backend in (_WordTokenizer, _SentencePieceTokenizer)}


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
        backend, words, chars = _WordTokenizer.from_counts(types, counts, self.options)
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
        backend: _WordTokenizer | _SentencePieceTokenizer,
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
            return cls._assemble(*_SentencePieceTokenizer.train(normalized, options), options)
        counter = WordCounter(options)
        lines = iter(lines)
        while batch := list(islice(lines, TRAIN_BATCH_LINES)):
            counter.encode(batch, train=True)
        return counter.vocabulary()[0]

    @classmethod
    def _assemble(
        cls,
        backend: "_WordTokenizer | _SentencePieceTokenizer",
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
            backend_class = _BACKENDS[description["tokenizer"]]
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
