#!/usr/bin/env bash
# The paper's configs give the same numbers before and after the redesign: 150 updates, seed 3435,
# fp32, one thread, the same CPU; "before" is 5e7c45b (the start of this session), "after" the checkout.
set -u
out=/work/runs/identity; mkdir -p $out
cd /work/runs
for cfg in ptb-char-small ptb-char-small-rhn-depth4 "ptb-char-small-rhn-adaptive-wide"; do
  for side in before after; do
    src=/work/main; [ $side = before ] && src=/tmp/before
    PYTHONPATH=$src OMP_NUM_THREADS=1 taskset -c 0 /work/venv/bin/python -m charlm.cli train --config $cfg \
      --data-dir /work/data/ptb --output-dir $out/$cfg-$side train.max_steps=150 train.seed=3435 \
      train.mixed_precision=no train.num_threads=1 > $out/$cfg-$side.log 2>&1
    echo "$cfg $side $(tail -1 $out/$cfg-$side/metrics.jsonl)" >> $out/summary.txt
  done
done
