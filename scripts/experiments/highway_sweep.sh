#!/usr/bin/env bash
# The highway claims measured in Char-Small on PTB (docs/highway-claims.md):
#   depth:     1, 2, 4, 8, 16 layers of each kind (highway, mlp, residual) between char-CNN and LSTM;
#   gate bias: highway depth 8 with transform-gate bias 0, -1, -4 (-2 is the depth run's default).
# Every run is the ptb-char-small recipe for EPOCHS epochs (the same short schedule for all), one
# thread, bf16; the gates analysis (valid split) follows each highway run. A finished run is skipped,
# so rerunning the script continues the sweep.
#
#   bash scripts/experiments/highway_sweep.sh DATA_DIR OUT_DIR [EPOCHS]
set -u
data=${1:?usage: highway_sweep.sh DATA_DIR OUT_DIR [EPOCHS]}
out=${2:?usage: highway_sweep.sh DATA_DIR OUT_DIR [EPOCHS]}
epochs=${3:-1}
mkdir -p "$out"

one() {  # name, then config overrides
    local name=$1; shift
    local dir=$out/$name
    if [ -f "$dir/done" ]; then return; fi
    echo "== $name: $*"
    charlm train --config ptb-char-small --data-dir "$data" --output-dir "$dir" --resume \
        train.max_epochs="$epochs" train.mixed_precision=bf16 train.num_threads=1 "$@" \
        > "$out/$name.log" 2>&1 || echo "   (exit $?: see $out/$name.log)"
    if [ -d "$dir/best" ] && grep -q "highway=highway\|model.highway=highway" <<<"$*"; then
        charlm gates --checkpoint "$dir/best" --data-dir "$data" --split valid --num-threads 1 \
            --output "$dir/gates" >> "$out/$name.log" 2>&1
    fi
    touch "$dir/done"
}

for depth in 16 8 4 2 1; do
    for kind in highway mlp residual; do
        one "$kind-$depth" model.highway="$kind" model.highway_layers="$depth"
    done
done
for bias in 0 -1 -4; do
    one "highway-8-bias$bias" model.highway=highway model.highway_layers=8 model.highway_gate_bias="$bias"
done
