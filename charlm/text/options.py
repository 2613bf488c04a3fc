"""How a vocabulary is built: the options of ``charlm prepare`` and their defaults, in one place."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from charlm.errors import CharlmError
from charlm.text.specials import EOS_WORD, SPECIAL_WORDS, UNK_WORD

if TYPE_CHECKING:
    pass

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

TRAIN_BATCH_LINES = 10_000  # lines per step of Vocabulary.train in word mode

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
