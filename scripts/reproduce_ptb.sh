#!/usr/bin/env bash
# Reproduce the Penn Treebank results of Kim et al. (2016): prepare PTB, train each config with the
# full recipe (25 epochs, best-on-validation model), score the exact full-stream test perplexity,
# and write a results table.
#
#   bash scripts/reproduce_ptb.sh PTB_DIR [OUT_DIR] [CONFIG ...]
#
# PTB_DIR holds the standard train.txt / valid.txt / test.txt (Mikolov's 10k-word version).
# CONFIG defaults to: ptb-char-small ptb-word-small ptb-char-small-no-highway ptb-char-small-mlp-1
# Pass others by name: ptb-char-small-highway-2; ptb-char-large and its ablations (~4x longer).
# Extra accelerate flags go in ACCELERATE_ARGS, e.g. ACCELERATE_ARGS="--mixed_precision bf16".
# A run that was interrupted is resumed where it stopped; a finished run is not trained again.
set -euo pipefail
ptb=${1:?usage: bash scripts/reproduce_ptb.sh PTB_DIR [OUT_DIR] [CONFIG ...]}
out=${2:-runs/ptb}
shift $(( $# >= 2 ? 2 : 1 ))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(ptb-char-small ptb-word-small ptb-char-small-no-highway ptb-char-small-mlp-1)
cd "$(dirname "$0")/.."

data="$out/data"
if [ ! -f "$data/meta.json" ]; then
  charlm prepare --train-file "$ptb/train.txt" --valid-file "$ptb/valid.txt" --test-file "$ptb/test.txt" \
    --output-dir "$data"
fi

for name in "${configs[@]}"; do
  run="$out/$name"
  if [ ! -f "$run/test.json" ]; then
    start=$(date +%s)
    resume=(); [ -d "$run/checkpoints" ] && resume=(--resume)
    # shellcheck disable=SC2086
    accelerate launch ${ACCELERATE_ARGS:-} scripts/train.py --config "$name" \
      --data-dir "$data" --output-dir "$run" "${resume[@]}"
    echo $(( $(date +%s) - start )) > "$run/train_seconds.txt"
    charlm perplexity --checkpoint "$run/best" --data-dir "$data" --split test --json > "$run/test.json.tmp"
    mv "$run/test.json.tmp" "$run/test.json"
  fi
done

python - "$out" "${configs[@]}" <<'EOF'
import json, sys
from pathlib import Path

from safetensors.numpy import load_file

PAPER = {"ptb-char-small": 92.3, "ptb-char-large": 78.9, "ptb-word-small": 97.6, "ptb-word-large": 85.4,
         "ptb-char-large-no-highway": 84.6, "ptb-char-large-highway-1": 79.7, "ptb-char-large-mlp-1": 92.6,
         "ptb-char-small-highway-2": 90.1}
out, names = Path(sys.argv[1]), sys.argv[2:]
rows = ["| config | parameters | epochs | best valid ppl | test ppl | paper test ppl | train time |",
        "|---|---|---|---|---|---|---|"]
for name in names:
    run = out / name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test = json.loads((run / "test.json").read_text())
    seconds = int((run / "train_seconds.txt").read_text()) if (run / "train_seconds.txt").exists() else 0
    params = f"{sum(a.size for a in load_file(str(run / 'best' / 'model.safetensors')).values()):,}"
    rows.append(f"| {name} | {params} | {len(records)} | {min(r['valid_ppl'] for r in records):.2f} | "
                f"{test['perplexity']:.2f} | {PAPER.get(name, '')} | {seconds / 60:.0f} min |")
table = "\n".join(rows) + "\n"
(out / "results.md").write_text(table)
print(table)
EOF
