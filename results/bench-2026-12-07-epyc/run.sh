set -x
cd /work/main; . /work/venv/bin/activate
lscpu | grep 'Model name'
rm -rf /root/.cache/charlm
python scripts/benchmark.py --data-dir /work/data/ptb --configs ptb-char-small ptb-char-small-rhn-depth4 --train-only --json /tmp/bench/inproc-2t.json
python scripts/benchmark_commands.py --data-dir /work/data/ptb --config ptb-char-small --updates 300 --json /tmp/bench/cmd-small.json
python scripts/benchmark_commands.py --data-dir /work/data/ptb --config ptb-char-small-rhn-depth4 --updates 150 --commands charlm launch --json /tmp/bench/cmd-rhn4.json
