#!/usr/bin/env python
"""Thin entry point for charlm.benchmark (see --help)."""

import sys

from charlm.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
