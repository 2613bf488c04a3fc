#!/usr/bin/env python
"""A public-domain English corpus of about 1M tokens for the own-corpus comparison: the King James Bible.

Debian ships the text with its ``bible`` reader (``apt-get install bible-kjv``); this script runs
``bible gen1:1-rev22:21``, writes one verse per line (verse numbers and chapter headings dropped)
and splits by chapter: of every 20 chapters in order, the 11th goes to valid, the 16th to test, the
rest to train (5% each, spread over the whole book so that no split is one genre). Then:

    python scripts/experiments/kjv_corpus.py --output-dir data/kjv-text
    charlm prepare --train-file data/kjv-text/train.txt --valid-file data/kjv-text/valid.txt \\
        --test-file data/kjv-text/test.txt --pre-tokenizer punctuation --output-dir data/kjv
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

from charlm.io import atomic_write_text

VERSE = re.compile(r"^\s+\d+ (.*)$")
HEADING = re.compile(r"^(?:[1-3] )?[A-Z][A-Za-z ]* \d+$")


def chapters(text: str) -> list[list[str]]:
    """The verses of each chapter, in order, from the ``bible`` reader's output."""
    result: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if HEADING.match(line):
            result.append([])
        elif (verse := VERSE.match(line)) is not None:
            result[-1].append(verse.group(1).strip())
        else:  # the reader wraps long verses: a continuation line
            result[-1][-1] += " " + line.strip()
    return result


def split_of(chapter_index: int) -> str:
    return {10: "valid", 15: "test"}.get(chapter_index % 20, "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args()
    try:
        text = subprocess.run(["bible", "-l1000", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("kjv_corpus: the `bible` reader is not installed; run `apt-get install bible-kjv`")
    books = chapters(text)
    lines: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for index, verses in enumerate(books):
        lines[split_of(index)].extend(verses)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, verses in lines.items():
        atomic_write_text(args.output_dir / f"{split}.txt", "\n".join(verses) + "\n")
        words = sum(len(verse.split()) for verse in verses)
        print(f"{split}: {len(verses):,} verses, {words:,} words")
    print(f"{len(books)} chapters -> {args.output_dir}")


if __name__ == "__main__":
    main()
