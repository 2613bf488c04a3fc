#!/usr/bin/env python
"""Thin entry point for charlm.command_benchmark: training tokens/s of each way of starting it (see --help)."""

import sys

from charlm.command_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
