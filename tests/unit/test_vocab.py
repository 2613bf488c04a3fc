"""Unit tests of charlm.text: spelling, normalisation, tokenizers, files."""

from __future__ import annotations

import functools
import json
import unicodedata

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.errors import CharlmError
from charlm.text import NUM_RESERVED_CHARS, PAD_CHAR, UNK_CHAR, VOCAB_FILE, VocabOptions, Vocabulary
from charlm.text.specials import BOW_CHAR, EOS_WORD_CHAR, EOW_CHAR, RESERVED_CHAR_NAMES, UNK_WORD_CHAR
from data_prep.demo import demo_splits

LINES = [
    " the cat sat on the mat ",
    " the dog ate the <unk> ",
    " a cafe\u0301 in köln ",  # decomposed é: stored composed after NFC
    " the dog and the cat ",
]


def vocab_of(lines=LINES, **options) -> Vocabulary:
    return Vocabulary.train(lines, VocabOptions(**options))


def spelled(vocab: Vocabulary, word: str) -> str:
    """The characters of a spelling, read back through ``vocab.chars``."""
    return "".join(vocab.chars[i] for i in vocab.spell(word) if i >= NUM_RESERVED_CHARS)


@functools.cache
def demo_train() -> list[str]:
    return demo_splits()["train"]


@functools.cache
def sentencepiece_vocab(model_type: str = "bpe") -> Vocabulary:
    options = VocabOptions(tokenizer="sentencepiece", vocab_size=600, sp_model_type=model_type)
    return Vocabulary.train(demo_train(), options)


@functools.cache
def raw_text_vocab() -> Vocabulary:
    return Vocabulary.train(demo_train(), VocabOptions(pre_tokenizer="punctuation", lowercase=True))


# -- layout and order -------------------------------------------------------------------------


def test_reserved_ids_and_word_order():
    vocab = vocab_of()
    assert vocab.words[:2] == ["<unk>", "<eos>"] and (vocab.unk_id, vocab.eos_id) == (0, 1)
    assert tuple(vocab.chars[:NUM_RESERVED_CHARS]) == RESERVED_CHAR_NAMES
    # descending frequency, ties in code-point order; the literal <unk> is the special word
    assert vocab.words[2:6] == ["the", "cat", "dog", "a"]
    assert vocab.words.count("<unk>") == 1
    assert len(vocab) == len(vocab.words) == 2 + len(set(" ".join(LINES).split()) - {"<unk>"})
    # characters: code points of the training words only (no "<", ">" from the literal <unk>)
    assert "é" in vocab.chars and "<" not in vocab.chars and " " not in vocab.chars


def test_vocab_size_and_min_freq_limit_words():
    assert vocab_of(vocab_size=4).words == ["<unk>", "<eos>", "the", "cat"]
    assert vocab_of(min_freq=2).words == ["<unk>", "<eos>", "the", "cat", "dog"]
    # characters still come from every training word, kept or not
    assert "ö" in vocab_of(vocab_size=4).chars
    assert vocab_of(vocab_size=4).encode_lines([" the köln "]).tolist() == [2, 0, 1]


def test_bad_options_are_errors():
    with pytest.raises(CharlmError, match="--vocab-size 2 is too small"):
        VocabOptions(vocab_size=2)
    with pytest.raises(CharlmError, match="apply to --tokenizer word only"):
        VocabOptions(tokenizer="sentencepiece", pre_tokenizer="punctuation")
    with pytest.raises(CharlmError, match="--tokenizer must be one of word, sentencepiece"):
        VocabOptions(tokenizer="bytes")


# -- spelling ---------------------------------------------------------------------------------


def test_spell_pads_and_marks():
    vocab = vocab_of()
    c = vocab.chars.index
    assert vocab.max_word_length == len("köln") + 2
    assert vocab.spell("cat") == [BOW_CHAR, c("c"), c("a"), c("t"), EOW_CHAR, PAD_CHAR]
    assert vocab.spell("<unk>") == [BOW_CHAR, UNK_WORD_CHAR, EOW_CHAR, PAD_CHAR, PAD_CHAR, PAD_CHAR]
    assert vocab.spell("<eos>") == [BOW_CHAR, EOS_WORD_CHAR, EOW_CHAR, PAD_CHAR, PAD_CHAR, PAD_CHAR]
    assert vocab.spell("") == [BOW_CHAR, EOW_CHAR] + [PAD_CHAR] * 4


def test_spell_truncates_long_words_but_keeps_eow():
    vocab = vocab_of(max_word_length=4)
    assert vocab.max_word_length == 4
    c = vocab.chars.index
    assert vocab.spell("cafe") == [BOW_CHAR, c("c"), c("a"), EOW_CHAR]
    assert all(len(vocab.spell(word)) == 4 for word in ["", "a", "abcdefghij", "<unk>"])


def test_unseen_characters_become_unk_char():
    vocab = vocab_of()
    c = vocab.chars.index
    assert vocab.spell("cQt") == [BOW_CHAR, c("c"), UNK_CHAR, c("t"), EOW_CHAR, PAD_CHAR]
    assert vocab.spell("日本") == [BOW_CHAR, UNK_CHAR, UNK_CHAR, EOW_CHAR, PAD_CHAR, PAD_CHAR]


def test_nfc_composed_and_decomposed_are_the_same():
    vocab = vocab_of()
    assert "e\u0301" != "\u00e9"
    assert "\u00e9" in vocab.chars and "\u0301" not in vocab.chars
    assert vocab.spell("cafe\u0301") == vocab.spell("caf\u00e9")
    assert spelled(vocab, "cafe\u0301") == "caf\u00e9"
    assert vocab.word_id("cafe\u0301") == vocab.word_id("caf\u00e9") != vocab.unk_id
    assert vocab.encode_lines(["cafe\u0301"]).tolist() == vocab.encode_lines(["caf\u00e9"]).tolist()
    assert vocab.tokenize("a cafe\u0301") == ["a", "caf\u00e9"]


def test_spellings_table():
    vocab = vocab_of()
    table = vocab.spellings()
    assert table.dtype == torch.long and table.shape == (len(vocab), vocab.max_word_length)
    for i, word in enumerate(vocab.words):
        assert table[i].tolist() == vocab.spell(word)
    assert vocab.spellings() is table  # built once


# -- tokenizing, encoding, decoding -----------------------------------------------------------


def test_encode_appends_eos_and_maps_unknown_words_to_unk():
    vocab = vocab_of()
    ids = vocab.encode_lines([" the cat ", " the zebra <unk> "])
    assert ids.dtype == np.int32
    w = vocab.word_id
    assert ids.tolist() == [w("the"), w("cat"), 1, w("the"), 0, 0, 1]
    no_eos = vocab_of(add_eos=False).encode_lines([" the cat ", " dog "])
    assert no_eos.tolist() == [w("the"), w("cat"), w("dog")]


def test_decode_inverts_encode():
    vocab = vocab_of()
    lines = [" the cat sat ", " a café in köln <unk> "]
    assert vocab.decode(vocab.encode_lines(lines)) == "the cat sat\na café in köln <unk>\n"
    assert vocab.decode([2, 3]) == "the cat"  # no <eos>: no newline


def test_punctuation_pre_tokenizer_and_lowercase():
    vocab = vocab_of(["Hello, World! It's <unk>."], pre_tokenizer="punctuation", lowercase=True)
    words = ["hello", ",", "<unk>", ".", ".", ".", "it", "'", "s"]
    assert vocab.tokenize("Hello, <unk>... It's") == words
    assert vocab.word_id("HELLO") == vocab.word_id("hello") != vocab.unk_id
    assert vocab.encode_lines(["a<unk>b"]).tolist() == [0, 0, 0, 1]  # the literal <unk> stays whole
    assert "H" not in vocab.chars and "h" in vocab.chars and "<unk>" not in vocab.words[2:]


@pytest.mark.parametrize("pre_tokenizer", ["whitespace", "punctuation"])
def test_lowercase_is_one_implementation_for_ids_and_spellings(pre_tokenizer):
    """Letters newer than some Unicode tables (U+1C89 and U+A7CB, capitals added in Unicode 16)
    and the final sigma are lowercased the same way for a word's id and for its spelling: the
    tokenizer does not lowercase again with rules of its own (it once did, and these words got an
    id but were spelled with <unkc>)."""
    line = "\u1c89ab x\ua7cb \u0391\u03a3 Plain"
    vocab = vocab_of([line], pre_tokenizer=pre_tokenizer, lowercase=True)
    words = vocab.tokenize(line)
    assert words == unicodedata.normalize("NFC", line.lower()).split()
    assert vocab.encode_lines([line]).tolist() == [*map(vocab.word_id, words), vocab.eos_id]
    for word in words:
        assert vocab.word_id(word) != vocab.unk_id
        assert UNK_CHAR not in vocab.spell(word) and spelled(vocab, word) == word


def test_sentencepiece_literal_unk_and_round_trip():
    vocab = sentencepiece_vocab()
    assert vocab.tokenizer == "sentencepiece" and len(vocab) == 600
    assert vocab.words[:2] == ["<unk>", "<eos>"] and "\u2581" in vocab.chars
    ids = vocab.encode_lines([" the <unk> statement "])
    assert ids.tolist().count(vocab.unk_id) == 1 and ids[-1] == vocab.eos_id
    assert "<unk>" in vocab.tokenize("the <unk> statement")
    text = ["The function returns <unk> a value.", "Each object has an identity"]
    decoded = vocab.decode(vocab.encode_lines(text)).splitlines()
    assert decoded == [vocab.normalize(line) for line in text]


def test_sentencepiece_training_is_deterministic():
    options = VocabOptions(tokenizer="sentencepiece", vocab_size=400, sp_model_type="unigram")
    first = Vocabulary.train(demo_train()[:400], options)
    second = Vocabulary.train(demo_train()[:400], options)
    assert first.words == second.words


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [vocab_of, sentencepiece_vocab], ids=["word", "sentencepiece"])
def test_save_load_round_trip(tmp_path, make):
    vocab = make()
    vocab.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [VOCAB_FILE, "tokenizer.json" if vocab.tokenizer == "word" else "spm.model"]
    )
    description = json.loads((tmp_path / VOCAB_FILE).read_text(encoding="utf-8"))
    assert description["normalization"] == "NFC" and description["words"] == vocab.words
    loaded = Vocabulary.load(tmp_path)
    for name in ("words", "chars", "max_word_length", "tokenizer", "add_eos", "lowercase"):
        assert getattr(loaded, name) == getattr(vocab, name)
    assert torch.equal(loaded.spellings(), vocab.spellings())
    text = [" the cat sat on the mat ", " köln <unk> "]
    assert loaded.encode_lines(text).tolist() == vocab.encode_lines(text).tolist()


def test_load_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(CharlmError, match="vocab.json not found"):
        Vocabulary.load(tmp_path)
    vocab_of().save(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CharlmError, match="tokenizer.json is malformed.*charlm prepare"):
        Vocabulary.load(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(CharlmError, match="tokenizer.json not found"):
        Vocabulary.load(tmp_path)
    (tmp_path / VOCAB_FILE).write_text('{"words": 3}')
    with pytest.raises(CharlmError, match="vocab.json is malformed"):
        Vocabulary.load(tmp_path)


# -- arbitrary text ---------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_text(vocab: Vocabulary, text: str) -> None:
    """tokenize / encode / spell never fail, and every character round-trips or is UNK_CHAR."""
    words = vocab.tokenize(text)
    ids = vocab.encode_lines([text])
    assert ids.dtype == np.int32 and ((0 <= ids) & (ids < len(vocab))).all()
    assert ids[-1] == vocab.eos_id
    for word in [*words, text]:
        spelling = vocab.spell(word)
        assert len(spelling) == vocab.max_word_length
        normalized = vocab.normalize(word)
        if normalized in ("<unk>", "<eos>"):
            continue
        inner = spelling[1 : 1 + min(len(normalized), vocab.max_word_length - 2)]
        for char, char_id in zip(normalized, inner):
            assert char_id == UNK_CHAR or vocab.chars[char_id] == char
            assert char_id != UNK_CHAR or char not in vocab.chars[NUM_RESERVED_CHARS:]
    assert unicodedata.is_normalized("NFC", vocab.decode(ids))


@PROPERTY_SETTINGS
@given(st.text())
def test_arbitrary_text_word_mode(text):
    check_text(raw_text_vocab(), text)


@PROPERTY_SETTINGS
@given(st.text() | st.sampled_from(["<unk>", "a<unk>b<eos>", " \t\n"]))
def test_arbitrary_text_sentencepiece_mode(text):
    check_text(sentencepiece_vocab(), text)
