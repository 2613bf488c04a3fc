#!/usr/bin/env bash
# The first GPU call of 2026-12-04, as run: BUDGET=525 bash .gpu/session.sh data/ptb (data/ptb carried).
# Its step (c) failed at once: the `python` it linked into /tmp/bin was the venv's python3 reached through a
# symbolic link, which does not see the venv's packages (No module named 'torch'); check.sh fixed that.
# One GPU call: (a) the plain depth-4 RHN (ptb-char-small-rhn-depth4, seed 3435) trained for BUDGET
# seconds, its last state packed into <=15 MiB parts to continue on the CPU; (b) the Char-Large RHN
# (ptb-char-large-rhn-asgd) for the same time, for its epoch time on this GPU; (c) scripts/gpu_check.sh.
# All three run at once on the one GPU. Usage: BUDGET=480 OUT=... bash .gpu/session.sh DATA_DIR
set -u
t0=$(date +%s)
budget=${BUDGET:-480}; ckpt=${CKPT:-400}; data=${1:?data dir}
work=${WORK:-/tmp/gpuwork}; mkdir -p "$work" "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p /tmp/bin
ln -sf "$(command -v python3)" /tmp/bin/python
printf '#!/bin/sh\nexec python3 -c "import sys; from charlm.cli import main; sys.exit(main())" "$@"\n' > /tmp/bin/charlm
chmod +x /tmp/bin/charlm; export PATH=/tmp/bin:$PATH
{ date; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"; nproc; } > "$work/env.txt" 2>&1
cat "$work/env.txt"
charlm train --config ptb-char-small-rhn-depth4 --data-dir "$data" --output-dir "$work/rhn-depth4-plain" \
    train.mixed_precision=bf16 train.checkpoint_every_steps=$ckpt ${EXTRA_D4:-} > "$work/d4.log" 2>&1 &
p1=$!
charlm train --config ptb-char-large-rhn-asgd --data-dir "$data" --output-dir "$work/large-rhn-asgd" \
    train.mixed_precision=bf16 train.checkpoint_every_steps=100000 ${EXTRA_LARGE:-} > "$work/large.log" 2>&1 &
p2=$!
timeout $(( budget - 90 )) bash scripts/gpu_check.sh "$data" "$work/gpu-check" > "$work/gpu_check.log" 2>&1
echo "gpu_check rc=$? after $(( $(date +%s) - t0 )) s"
while [ $(( $(date +%s) - t0 )) -lt "$budget" ] && kill -0 $p1 2>/dev/null; do sleep 5; done
kill -INT $p1 $p2 2>/dev/null; sleep 8; kill $p1 $p2 2>/dev/null; wait
echo "stopped after $(( $(date +%s) - t0 )) s"
tail -n 3 "$work/d4.log" "$work/large.log"
cat "$work/rhn-depth4-plain/metrics.jsonl" "$work/large-rhn-asgd/metrics.jsonl" 2>/dev/null
# records: small files in one archive
tar -C "$work" -czf "$OUT/records.tgz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pkl' \
    --exclude=checkpoints --exclude=best --exclude='ptb-char-small-1ep' . 2>&1 | tail -2
# the depth-4 state: run config, records, the newest complete checkpoint and best/
last=$(python3 -c "import sys; from pathlib import Path; from charlm.state import complete_checkpoints; c=complete_checkpoints(Path(sys.argv[1])); print(c[-1].relative_to(Path(sys.argv[1]).parent) if c else '')" "$work/rhn-depth4-plain")
echo "newest state: $last"
if [ -n "$last" ]; then
    (cd "$work" && tar -cf "$work/d4.tar" rhn-depth4-plain/config.json rhn-depth4-plain/metrics.jsonl "$last" $(ls -d rhn-depth4-plain/best 2>/dev/null))
    split -b 15m -d "$work/d4.tar" "$OUT/d4.tar.part"
    sha256sum "$work/d4.tar" | tee "$OUT/d4.tar.sha256"
fi
ls -la "$OUT"
