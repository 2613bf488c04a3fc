#!/usr/bin/env python
"""Thin entry point for data_prep.synthetic: Zipfian synthetic corpora of any size (see --help)."""

import sys

from data_prep.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
