"""Text to words: normalisation, streamed text, and the two tokenizer back ends (word, sentencepiece)."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import sentencepiece
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from charlm.errors import CharlmError
from charlm.text.options import NORMALIZATION, SENTENCEPIECE_FILE, WORD_TOKENIZER_FILE, VocabOptions
from charlm.text.specials import EOS_WORD, SPECIAL_WORDS, SPECIALS_RE, UNK_WORD

if TYPE_CHECKING:
    pass

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


# Streamed text is tokenized in windows of at most this many characters, cut at a space, so that
# a line of any length takes bounded memory (see text_windows).
WINDOW_CHARS = 1 << 22


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


def text_windows(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, each cut just after a space (a longer
    word stays whole). No word, <unk> or <eos> spans two pieces, and NFC, lowercasing and every
    tokenizer treat a space as a boundary, so the pieces tokenize exactly like the whole."""
    size = WINDOW_CHARS if size is None else size  # read here, so that a test can make it small
    start = 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + 1, start + size) + 1 or text.find(" ", start + size) + 1
        if not cut:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def split_words(text: str, pre_tokenizer: str) -> list[str]:
    """The words of normalised ``text``, exactly as the word tokenizer (``WordTokenizer.build``)
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


class WordTokenizer:
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
    ) -> tuple["WordTokenizer", list[str], set[str]]:
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
    def from_bytes(cls, data: bytes, description: dict) -> "WordTokenizer":
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


class SentencePieceTokenizer:
    """Subword pieces from a sentencepiece model; <unk> and <eos> are its ids 0 and 1."""

    kind = "sentencepiece"
    file_name = SENTENCEPIECE_FILE

    def __init__(self, model_proto: bytes, model_type: str):
        self.model_proto = model_proto
        self.model_type = model_type
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, lines: Iterable[str], options: VocabOptions) -> tuple["SentencePieceTokenizer", list[str], set[str]]:
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
    def from_bytes(cls, data: bytes, description: dict) -> "SentencePieceTokenizer":
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


BACKENDS = {backend.kind: backend for backend in (WordTokenizer, SentencePieceTokenizer)}
