"""The built-in demo corpus: Python's own documentation, available offline everywhere.

CPython ships the text of its ``help()`` topics in the standard library
(``pydoc_data.topics.topics``: about 80 topics, roughly 465k characters of English prose and
code). The demo corpus takes every topic in sorted order, splits it into paragraphs at blank
lines, drops reStructuredText heading underlines, and writes each paragraph as one line with
its whitespace collapsed. Paragraphs are dealt into splits by position: of every
:data:`SPLIT_PERIOD` consecutive paragraphs, one goes to valid, one to test and the rest to
train (90/5/5).

It is raw text, so ``charlm prepare --demo`` uses the ``punctuation`` pre-tokenizer and
lowercases by default (both can be overridden). The text differs a little between Python
versions, so the version is recorded in the source description.
"""

from __future__ import annotations

import re
import sys

SPLIT_PERIOD = 20  # of every 20 paragraphs: 18 train, 1 valid, 1 test
VALID_SLOT = SPLIT_PERIOD - 2
TEST_SLOT = SPLIT_PERIOD - 1

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_UNDERLINE = re.compile(r"^\s*([*=\-~^#])\1{2,}\s*$")  # "*****", "=====", ... under a heading


def demo_source() -> dict:
    """How the demo corpus is identified in ``meta.json``."""
    return {"kind": "demo", "name": "pydoc_data.topics", "python": sys.version.split()[0]}


def demo_paragraphs() -> list[str]:
    """Every paragraph of every help topic, one line each, in a fixed order."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in _PARAGRAPH_BREAK.split(topics[name]):
            lines = [line for line in block.splitlines() if not _UNDERLINE.match(line)]
            paragraph = " ".join(" ".join(lines).split())
            if paragraph:
                paragraphs.append(paragraph)
    return paragraphs


def demo_splits() -> dict[str, list[str]]:
    """The demo corpus as {"train": lines, "valid": lines, "test": lines}."""
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, paragraph in enumerate(demo_paragraphs()):
        slot = i % SPLIT_PERIOD
        split = "valid" if slot == VALID_SLOT else "test" if slot == TEST_SLOT else "train"
        splits[split].append(paragraph)
    return splits
