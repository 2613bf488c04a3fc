#!/usr/bin/env bash
# Wall time, CPU time and peak memory of `charlm prepare` on a corpus folder (train/valid/test.txt):
# GNU time for the times and the largest process, `ps` over the process tree every 0.2 s for the
# peak of all processes (the workers included), as recorded in docs/scale.md.
#   bash scripts/experiments/measure_prepare.sh CORPUS_DIR OUTPUT_DIR
C=${1:?usage: measure_prepare.sh CORPUS_DIR OUTPUT_DIR}; OUT=${2:?usage: measure_prepare.sh CORPUS_DIR OUTPUT_DIR}; rm -rf "$OUT"
/usr/bin/time -f "wall %e s user %U s sys %S s maxrss(one process) %M KB" charlm prepare --train-file $C/train.txt --valid-file $C/valid.txt --test-file $C/test.txt --output-dir $OUT > $OUT.log 2>&1 &
pid=$!; peak=0
while kill -0 $pid 2>/dev/null; do
  pids=$(pstree -p $pid 2>/dev/null | grep -o '([0-9]*)' | tr -d '()' | tr '\n' ',' | sed 's/,$//')
  [ -n "$pids" ] && rss=$(ps -o rss= -p $pids 2>/dev/null | awk '{s+=$1} END {print s+0}') && [ "$rss" -gt "$peak" ] && peak=$rss
  sleep 0.2
done
echo "tree peak $((peak/1024)) MB"; grep -E "wall|tokens" $OUT.log | tail -4
