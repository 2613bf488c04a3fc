"""Reserved character ids and the special words ``<unk>`` and ``<eos>``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

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
