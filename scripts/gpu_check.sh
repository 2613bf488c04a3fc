#!/usr/bin/env bash
# The GPU record, as one prepared script (run it first when a session is lent a GPU):
#   1. which kernels the paper's model takes on the device (cuDNN LSTM, charlm's fused softmax);
#   2. one epoch of ptb-char-small, its validation perplexity, then exact scoring of the test split;
#   3. ptb-char-large training tokens/s through `charlm train`, 1 process, bf16 and fp32
#      (UPDATES timed updates after WARMUP, default 200 after 20);
#   4. the fused RHN scan on the device: the same outputs and gradients as the step-by-step loop,
#      and the forward+backward time of both for ptb-char-small-rhn-depth4's core (20 x 35, bf16);
#      then that config's tokens/s through `charlm train` (the RHN is launch-bound on a GPU).
# The order puts the correctness checks first: a call cut short loses only timings.
#
# Long runs for a GPU lent with more time than this check (not started by this script; about 48 min
# and 70 min on an H200 at the rates of results/gpu-2026-12-04/), each then scored once on test:
#   charlm train --config ptb-char-large-rhn-asgd --data-dir DATA --output-dir runs/large-rhn-asgd \
#       train.mixed_precision=bf16 train.checkpoint_every_steps=400            # Char-Large budget, RHN
#   charlm train --config ptb-char-small-rhn-char-output --data-dir DATA --output-dir runs/rhn-char-output \
#       train.mixed_precision=bf16 train.checkpoint_every_steps=400            # Char-Small budget, char output
# Everything goes to OUT_DIR (summary.txt, the JSON of each step, the run folders).
#
#   bash scripts/gpu_check.sh DATA_DIR OUT_DIR      # DATA_DIR: PTB prepared by `charlm prepare`
#   SMOKE=1 bash scripts/gpu_check.sh ...            # a few updates of each, to check the script itself
set -euo pipefail
data=${1:?usage: gpu_check.sh DATA_DIR OUT_DIR}
out=${2:?usage: gpu_check.sh DATA_DIR OUT_DIR}
mkdir -p "$out"
updates=${UPDATES:-200}; warmup=${WARMUP:-20}; epoch=(train.max_epochs=1)
if [ "${SMOKE:-0}" = 1 ]; then updates=3; warmup=1; epoch=(train.max_epochs=1 train.max_steps=5); fi
summary=$out/summary.txt
python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (no CUDA)', '| torch', torch.__version__)" | tee "$summary"

# 1. The kernels a training step of ptb-char-small launches on this device.
python - "$data" <<'PY' | tee -a "$summary"
import sys, dataclasses, torch
from charlm.config import load_config
from charlm.corpus import load_corpus
from charlm.model import CharLM
vocab, _, _ = load_corpus(sys.argv[1])
config = dataclasses.replace(load_config("ptb-char-small").model, vocab_size=len(vocab),
                             char_vocab_size=len(vocab.chars), max_word_length=vocab.max_word_length)
device = "cuda" if torch.cuda.is_available() else "cpu"
model = CharLM(config, vocab.spellings()).to(device)
words = torch.randint(0, len(vocab), (20, 36), device=device)
activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
with torch.profiler.profile(activities=activities) as prof:
    with torch.autocast(device, dtype=torch.bfloat16):
        nll, _ = model(words[:, :-1], model.initial_state(20), words[:, 1:])
    nll.sum().backward()
names = {event.key for event in prof.key_averages()}
ops = [n for n in names if not n.startswith("_Z")]  # operator names, not the device's mangled kernel names
print("LSTM kernel:", sorted(n for n in ops if "cudnn" in n.lower() or "rnn" in n.lower() or "lstm" in n.lower())[:6])
print("fused softmax (charlm's _LinearCrossEntropy):", any("LinearCrossEntropy" in n for n in names))
PY

# 2. One epoch of ptb-char-small, then exact test perplexity of its model.
charlm train --config ptb-char-small --data-dir "$data" --output-dir "$out/ptb-char-small-1ep" "${epoch[@]}" \
    > "$out/ptb-char-small-1ep.log" 2>&1
tail -1 "$out/ptb-char-small-1ep/metrics.jsonl" | tee -a "$summary"
device=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
charlm perplexity --checkpoint "$out/ptb-char-small-1ep/best" --data-dir "$data" --split test --device "$device" \
    --json > "$out/test.json"
tee -a "$summary" < "$out/test.json"

# 3. ptb-char-large training speed through the real command, 1 process.
for precision in bf16 no; do
    python scripts/benchmark_commands.py --data-dir "$data" --config ptb-char-large --commands charlm \
        --warmup $warmup --updates $updates --json "$out/large-$precision.json" train.mixed_precision=$precision \
        | tail -3 | tee -a "$summary"
done

# 4. The fused RHN scan against the loop on this device, then the depth-4 recipe through the command.
python - <<'PY' | tee -a "$summary"
import time, torch
from charlm.nn.rhn import RHNCore
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
fused = RHNCore(525, 345, 4, fused=True).to(device)
loop = RHNCore(525, 345, 4, fused=False).to(device)
loop.load_state_dict(fused.state_dict())
x = torch.randn(20, 35, 525, device=device)
def step(core, dtype):
    core.zero_grad()
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        out, _ = core(x, core.initial_state(20))
    out.float().square().mean().backward()
    return out.float(), [p.grad.clone() for p in core.parameters()]
(a, ga), (b, gb) = step(fused, torch.float32), step(loop, torch.float32)
worst = max(float((g1 - g2).abs().max() / (g2.abs().max() + 1e-12)) for g1, g2 in zip(ga, gb))
print(f"fused RHN vs loop, fp32: output max diff {float((a - b).abs().max()):.2e}, worst relative gradient diff {worst:.2e}")
for name, core in (("fused", fused), ("loop", loop)):
    for _ in range(3):
        step(core, torch.bfloat16)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        step(core, torch.bfloat16)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"RHN depth 4 core, {name}, bf16 forward+backward: {(time.perf_counter() - start) / 10 * 1e3:.1f} ms per 20 x 35 chunk")
PY
python scripts/benchmark_commands.py --data-dir "$data" --config ptb-char-small-rhn-depth4 --commands charlm \
    --warmup $warmup --updates $updates --json "$out/rhn-depth4.json" | tail -3 | tee -a "$summary"

