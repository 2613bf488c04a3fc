#!/usr/bin/env bash
# The second GPU call of 2026-12-04, as run (from .gpu/ in the checkout, with data/ptb carried):
#   LIMIT=125 bash .gpu/check.sh
# .gpu/gpu_check_short.sh was scripts/gpu_check.sh as committed after that day (epoch first, UPDATES/WARMUP),
# with the older kernel-name filter. The 125 s limit ended it during the fp32 benchmark.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
rm -rf /tmp/bin; mkdir -p /tmp/bin "$OUT"
py=$(python3 -c "import sys; print(sys.executable)"); printf '#!/bin/sh\nexec %s "$@"\n' "$py" > /tmp/bin/python
printf '#!/bin/sh\nexec python3 -c "import sys; from charlm.cli import main; sys.exit(main())" "$@"\n' > /tmp/bin/charlm
chmod +x /tmp/bin/python /tmp/bin/charlm; export PATH=/tmp/bin:$PATH
python -c "import torch; print(torch.__version__, torch.cuda.is_available())"
UPDATES=${UPDATES:-60} WARMUP=${WARMUP:-10} timeout ${LIMIT:-165} bash .gpu/gpu_check_short.sh data/ptb $OUT/gc > $OUT/gc.log 2>&1
echo "rc=$?"; cat $OUT/gc/summary.txt; rm -rf $OUT/gc/ptb-char-small-1ep/best $OUT/gc/ptb-char-small-1ep/checkpoints
tar -C $OUT -czf $OUT/gc.tgz gc && rm -rf $OUT/gc; ls -la $OUT
