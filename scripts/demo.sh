#!/usr/bin/env bash
# The whole pipeline on built-in data, offline, in a couple of minutes on a CPU:
# install (with the plot extra, for demo/run/curves.png), prepare the demo corpus (CPython's own
# documentation text), train a tiny model, print its test perplexity, a few generated samples, and
# the nearest vocabulary words of two words the model never saw, read from their spelling.
#
#   bash scripts/demo.sh            (writes into ./demo/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python -m pip install -q "torch==2.13.0"   # the CPU build first (see DEVELOPERS.md)
python -m pip install -q -e ".[plot]"
rm -rf demo
charlm prepare --demo --output-dir demo/data
charlm train --config tiny --data-dir demo/data --output-dir demo/run
charlm perplexity --checkpoint demo/run/best --data-dir demo/data --split test
charlm generate --checkpoint demo/run/best --num-samples 3 --max-words 30 --seed 1
charlm generate --checkpoint demo/run/best --prompt "the function returns" --num-samples 2 --max-words 20 --seed 1
# "dictonary": a misspelling of a frequent word of the corpus; "subexpression": a compound it never holds
charlm neighbors --checkpoint demo/run/best dictonary subexpression -k 5
