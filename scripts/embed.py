#!/usr/bin/env python
"""Thin entry point: the same as `charlm embed ...` (see `--help`)."""

import sys

from charlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
