"""What the measuring scripts in this folder share: the options that say which model and which
training chunks to measure, and the way they answer a user mistake (one ``error:`` line and exit
status 2, as the charlm commands do)."""

import argparse
import sys
from collections.abc import Callable

from charlm.errors import CharlmError


def parser(description: str, chunks: int) -> argparse.ArgumentParser:
    """An argument parser with --checkpoint, --data-dir, --chunks, --batch-size and --seq-len."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--checkpoint", required=True)
    result.add_argument("--data-dir", required=True)
    result.add_argument("--chunks", type=int, default=chunks, help="training chunks to measure")
    result.add_argument("--batch-size", type=int, default=20, help="rows, as in training")
    result.add_argument("--seq-len", type=int, default=35, help="steps per chunk, as in training")
    return result


def run(measure: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """``measure(args)``; a CharlmError becomes one line on stderr and exit status 2."""
    try:
        measure(args)
    except CharlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
