#!/usr/bin/env bash
# Each part owning its options (nested config, base: inheritance) changes no number: 150 updates,
# seed 3435, fp32, one thread, on the same CPU, before (BEFORE: a checkout of 3a0a81b, flat configs)
# and after (AFTER: a checkout of this change).  Usage: BEFORE=/path AFTER=/path OUT=/path bash identity.sh
set -u
mkdir -p "$OUT"; : > "$OUT/summary.txt"
for cfg in ptb-char-small ptb-char-small-rhn-depth4 ptb-char-small-rhn-adaptive-wide; do
  for side in before after; do
    src=$AFTER; [ $side = before ] && src=$BEFORE
    (cd /tmp && PYTHONPATH=$src OMP_NUM_THREADS=1 taskset -c 0 /work/venv/bin/python -m charlm.cli train --config $cfg \
      --data-dir /work/data/ptb --output-dir "$OUT/$cfg-$side" train.max_steps=150 train.seed=3435 \
      train.mixed_precision=no train.num_threads=1 > "$OUT/$cfg-$side.log" 2>&1)
    echo "$cfg $side $(tail -1 "$OUT/$cfg-$side/metrics.jsonl")" >> "$OUT/summary.txt"
  done
done
