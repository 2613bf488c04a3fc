"""Text: the vocabulary, words (or sentencepiece pieces) and the characters that spell them.

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

from charlm.text.backends import lines_text, normalize_text, split_words, text_windows
from charlm.text.options import (
    DEFAULT_MAX_WORD_LENGTH,
    DEFAULT_SENTENCEPIECE_VOCAB_SIZE,
    PRE_TOKENIZERS,
    SENTENCEPIECE_FILE,
    SP_MODEL_TYPES,
    TOKENIZERS,
    VOCAB_FILE,
    WORD_TOKENIZER_FILE,
    VocabOptions,
)
from charlm.text.specials import (
    EOS_WORD,
    NUM_RESERVED_CHARS,
    PAD_CHAR,
    SPECIAL_WORDS,
    UNK_CHAR,
    UNK_WORD,
)
from charlm.text.vocab import Vocabulary, WordCounter

__all__ = [
    "DEFAULT_MAX_WORD_LENGTH",
    "DEFAULT_SENTENCEPIECE_VOCAB_SIZE",
    "EOS_WORD",
    "NUM_RESERVED_CHARS",
    "PAD_CHAR",
    "PRE_TOKENIZERS",
    "SENTENCEPIECE_FILE",
    "SPECIAL_WORDS",
    "SP_MODEL_TYPES",
    "TOKENIZERS",
    "UNK_CHAR",
    "UNK_WORD",
    "VOCAB_FILE",
    "WORD_TOKENIZER_FILE",
    "VocabOptions",
    "Vocabulary",
    "WordCounter",
    "lines_text",
    "normalize_text",
    "split_words",
    "text_windows",
]
