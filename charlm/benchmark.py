"""Speed benchmark: charlm against a plain PyTorch implementation of the same model, in one run.

    python scripts/benchmark.py --data-dir data/ptb [--configs ptb-char-small ptb-char-large]
    python scripts/benchmark.py --data-dir data/ptb --configs ptb-char-small ptb-char-small-rhn \
        ptb-char-small-char-output          # every core and output
    python scripts/benchmark.py --data-dir data/big --train-only \
        --configs ptb-char-small ptb-char-small:model.output=adaptive     # NAME:KEY=VALUE,KEY=VALUE

Configs that are not the paper's model (another core or output layer) have no plain twin: for them
charlm's own training step and scoring are timed, through the core and output protocols, and the
scoring speed-ups are against charlm's sequential (unpipelined) scoring.

For each config it builds the model on the corpus's real vocabulary and spellings and times, on
the same batches (batch 20 x 35 steps, Zipf-like word ids drawn from the training split):

* a training step (forward, backward, gradient clipping, SGD update) of
  - ``plain``: the reference written below (a Conv1d per width over every token's spelling,
    tanh, max, highway, ``nn.LSTM``, ``nn.Linear`` + ``F.cross_entropy``, fp32, no caching);
  - ``charlm fp32`` and ``charlm bf16``: :class:`charlm.model.CharLM` as ``charlm train`` runs
    it (char-CNN once per distinct word, fused softmax layer), in fp32 and under bf16 autocast;
* exact full-stream evaluation of the test split (state carried from the first token to the
  last) by the plain reference (35-step chunks, encoder run per token) and by
  :func:`charlm.scoring.score_stream` (each way warmed up untimed on the first 4,096 tokens, then
  timed once on the whole split); both numbers are printed, they must agree; and the time of
  the opt-in approximation :func:`charlm.scoring.score_columns` (``charlm perplexity --columns``;
  its difference from the exact number is only meaningful for trained weights, see the README);
* generation (ms per word) with :func:`charlm.generate.generate`.

It prints tokens/s, the speed-up ratios, the achieved fraction of this machine's matrix-multiply
rate (measured in the same run), the peak resident memory, and the implied time per PTB epoch.
Timings are medians over repeats, interleaved between implementations so that noise from other
processes on the machine hits them alike.

Like the ``charlm`` commands, the benchmark first applies :func:`charlm.memory.keep_freed_memory`
(no page faults for memory freed by the previous step). The setting is process-wide, so the plain
reference gets it too and the ratios measure the code alone; ``--default-allocator`` leaves glibc's
defaults, to measure what the setting is worth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig, load_config
from charlm.corpus import load_corpus
from charlm.generate import SamplingOptions, sample
from charlm.inputs import DEFAULTS as EVAL_DEFAULTS
from charlm.memory import keep_freed_memory
from charlm.model import CharLM
from charlm.nn import CORES, OUTPUTS, detach_state
from charlm.plain_model import PlainCharLM, plain_model_copy, plain_stream_score, zero_state
from charlm.runtime import device_name, source_commit
from charlm.scoring import score_columns, score_stream

IMPLEMENTATIONS = ("plain fp32", "charlm fp32", "charlm bf16")
EVAL_WARMUP_TOKENS = 4096  # untimed tokens each scoring way reads before it is timed


def flops_per_token(c: ModelConfig) -> float:
    """Forward multiply-adds x 2 per token (char-CNN counted once per token, as the plain path; the
    spelling-based output's per-update word table not counted; the adaptive softmax's head only,
    its tails depend on how many tokens fall into them)."""
    L = c.max_word_length
    cnn = sum(2 * c.char_embed_dim * w * n * (L - w + 1) for w, n in zip(c.kernel_widths, c.num_filters))
    d, h = c.input_size, c.hidden_size
    highway = c.highway_layers * 2 * d * 2 * d
    core = CORES[c.core.name].flops_per_token(c, d)
    return cnn + highway + core + OUTPUTS[c.output.name].flops_per_token(c, h)


def has_plain_twin(c: ModelConfig) -> bool:
    """Whether :class:`PlainCharLM` implements this config (the paper's model: char input, LSTM, full softmax)."""
    return c.input == "char" and c.core.name == "lstm" and c.output.name == "full" and c.highway in ("highway", "none")


def matmul_rate(dtype: torch.dtype, m=700, k=300, n=10000, repeats=10) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start)


def make_batches(train_ids: np.ndarray, n: int, batch: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(train_ids) - steps - 2, size=(n, batch))
    return [
        torch.from_numpy(np.stack([np.asarray(train_ids[s : s + steps + 1], dtype=np.int64) for s in row]))
        for row in starts
    ]


def train_stepper(model: nn.Module, batches: list[torch.Tensor], fused: bool, bf16: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    hidden = [None]
    model.train()

    def step(i: int) -> None:
        data = batches[i % len(batches)]
        x, y = data[:, :-1], data[:, 1:]
        h = hidden[0] if hidden[0] is not None else zero_state(model, x.size(0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if fused:
                nll, h = model(x, h, y)
                loss = nll.sum(1).mean()
            else:
                logits, h = model(x, h)
                loss = (
                    F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
                    .view_as(y)
                    .sum(1)
                    .mean()
                )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        hidden[0] = detach_state(h) if isinstance(h, dict) else (h[0].detach().float(), h[1].detach().float())

    return step


def timed(fn, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def load_config_ref(ref: str) -> ModelConfig:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (a config with overrides, as on the train command line)."""
    name, _, overrides = ref.partition(":")
    return load_config(name, [o for o in re.split(r",(?![^\[]*\])", overrides) if o]).model  # no split inside [...]


def benchmark_config(name: str, vocab, splits, args) -> dict:
    config = load_config_ref(name)
    config = dataclasses.replace(
        config, vocab_size=len(vocab), char_vocab_size=len(vocab.chars), max_word_length=vocab.max_word_length
    )
    spellings = vocab.spellings()
    torch.manual_seed(0)
    charlm_model = CharLM(config, spellings)
    comparable = has_plain_twin(config)  # else charlm alone is timed, every core and output through its protocol
    plain_model = PlainCharLM(config, spellings) if comparable else None
    batches = make_batches(splits["train"], 8, args.batch_size, args.seq_len)
    steppers = {
        "plain fp32": lambda: train_stepper(plain_model, batches, fused=False, bf16=False),
        "charlm fp32": lambda: train_stepper(charlm_model, batches, fused=True, bf16=False),
        "charlm bf16": lambda: train_stepper(CharLM(config, spellings), batches, fused=True, bf16=True),
    }
    steppers = {
        k: make()
        for k, make in steppers.items()
        if k in args.implementations and (comparable or not k.startswith("plain"))
    }
    for step in steppers.values():  # warm-up
        for i in range(args.warmup):
            step(i)
    samples = {k: [] for k in steppers}
    for r in range(args.repeats):  # interleaved rounds
        for k, step in steppers.items():
            samples[k] += timed(lambda i, s=step: s(i + r), args.steps)
    tokens = args.batch_size * args.seq_len
    result = {
        "config": name,
        "parameters": charlm_model.num_parameters(),
        "flops_per_token_fwd": flops_per_token(config),
        "core": config.core.name,
        "output": config.output.name,
    }
    train_tok_s = {k: tokens / statistics.median(v) for k, v in samples.items()}
    result["train_tokens_per_sec"] = {k: round(v) for k, v in train_tok_s.items()}
    if args.train_only:
        return result

    # Exact full-stream evaluation, every way, on the test split. Each way is first run untimed on
    # the split's first tokens (one-time kernel set-up, first bf16 calls), then timed on the whole split.
    test = splits["test"][: args.eval_tokens] if args.eval_tokens else splits["test"]
    ways = {
        "sequential": lambda ids: score_stream(charlm_model, ids, vocab.eos_id, pipeline=False),
        "charlm": lambda ids: score_stream(charlm_model, ids, vocab.eos_id),  # pipelined where threads > 1
        "bf16": lambda ids: score_stream(charlm_model, ids, vocab.eos_id, bf16=True),
        "columns": lambda ids: score_columns(charlm_model, ids, vocab.eos_id, args.eval_columns, EVAL_DEFAULTS.warmup),
        "columns_bf16": lambda ids: score_columns(
            charlm_model, ids, vocab.eos_id, args.eval_columns, EVAL_DEFAULTS.warmup, bf16=True
        ),
    }
    if comparable:
        plain_copy = plain_model_copy(plain_model, charlm_model)
        ways["plain"] = lambda ids: plain_stream_score(plain_copy, ids, vocab.eos_id)
    seconds, scores = {}, {}
    for way, run in ways.items():
        run(test[:EVAL_WARMUP_TOKENS])
        start = time.perf_counter()
        scores[way] = run(test)
        seconds[way] = time.perf_counter() - start
    n = scores["sequential"].tokens
    reference = "plain" if comparable else "sequential"  # what the speed-ups are relative to
    result["eval"] = {
        "tokens": n,
        "reference": reference,
        "plain_seconds": round(seconds["plain"], 2) if comparable else None,
        "charlm_sequential_seconds": round(seconds["sequential"], 2),
        "charlm_seconds": round(seconds["charlm"], 2),
        "charlm_bf16_seconds": round(seconds["bf16"], 2),
        "columns": args.eval_columns,
        "warmup": EVAL_DEFAULTS.warmup,
        "charlm_columns_seconds": round(seconds["columns"], 2),
        "charlm_columns_bf16_seconds": round(seconds["columns_bf16"], 2),
        "plain_ppl": round(math.exp(scores["plain"][0] / n), 4) if comparable else None,
        "charlm_sequential_ppl": round(scores["sequential"].perplexity, 4),
        "charlm_ppl": round(scores["charlm"].perplexity, 4),
        "charlm_bf16_ppl": round(scores["bf16"].perplexity, 4),
        "charlm_columns_ppl": round(scores["columns"].perplexity, 4),
        # From the unrounded times: a tiny corpus can score in under 5 ms, which rounds to 0.00 s.
        "charlm_speedup": round(seconds[reference] / seconds["charlm"], 4),
        "charlm_bf16_speedup": round(seconds[reference] / seconds["bf16"], 4),
    }
    samples = sample(charlm_model, vocab, "", SamplingOptions(num_samples=1, max_words=200, seed=0))
    result["generate_ms_per_word"] = round(samples.ms_per_word, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="a prepared corpus (PTB for the README's table)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["ptb-char-small", "ptb-char-large"],
        help="shipped config names (charlm/configs/) or YAML files, each optionally followed by "
        ":KEY=VALUE,KEY=VALUE overrides",
    )
    parser.add_argument("--batch-size", type=int, default=20, help="rows per training step")
    parser.add_argument("--seq-len", type=int, default=35, help="time steps per training step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per implementation")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation per round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--eval-tokens", type=int, default=0, help="score only the first N test tokens (0: all)")
    parser.add_argument(
        "--eval-columns",
        type=int,
        default=20,
        help="columns of the timed approximation (charlm perplexity --columns N)",
    )
    parser.add_argument(
        "--implementations",
        nargs="+",
        default=list(IMPLEMENTATIONS),
        choices=IMPLEMENTATIONS,
        metavar="NAME",
        help=f"training steps to time, of: {', '.join(map(repr, IMPLEMENTATIONS))}",
    )
    parser.add_argument(
        "--train-only", action="store_true", help="time the training steps only (no evaluation, no generation)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc settings alone (the charlm commands apply memory.keep_freed_memory)",
    )
    args = parser.parse_args(argv)
    allocator = "glibc defaults" if args.default_allocator else f"freed memory kept: {keep_freed_memory()}"

    vocab, splits, _ = load_corpus(args.data_dir)
    machine = {
        "cpu": device_name("cpu"),
        "commit": source_commit(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allocator": allocator,
        "matmul_gflops_fp32": round(matmul_rate(torch.float32) / 1e9, 1),
        "matmul_gflops_bf16": round(matmul_rate(torch.bfloat16) / 1e9, 1),
    }
    print(f"machine: {machine}")
    results = {"machine": machine, "configs": []}
    for name in args.configs:
        r = benchmark_config(name, vocab, splits, args)
        results["configs"].append(r)
        tps = r["train_tokens_per_sec"]
        train_flops = 3 * r["flops_per_token_fwd"]
        print(f"\n{name} ({r['parameters']:,} parameters, {r['flops_per_token_fwd'] / 1e6:.1f} MFLOP/token forward)")
        print(f"  {'training step':<14} {'tokens/s':>9} {'vs plain':>9} {'% of matmul peak':>17} {'PTB epoch':>10}")
        for k, v in tps.items():
            peak = machine["matmul_gflops_bf16" if "bf16" in k else "matmul_gflops_fp32"] * 1e9
            epoch_min = len(splits["train"]) / v / 60
            ratio = f"{v / tps['plain fp32']:.2f}x" if "plain fp32" in tps else "-"
            print(f"  {k:<14} {v:>9,} {ratio:>9} {100 * v * train_flops / peak:>16.0f}% {epoch_min:>8.1f} min")
        if args.train_only:
            continue
        e = r["eval"]
        plain = f"plain {e['plain_seconds']:.2f} s (ppl {e['plain_ppl']}), " if e["plain_seconds"] is not None else ""
        print(
            f"  exact test perplexity ({e['tokens']:,} tokens, untrained weights; speed-ups against "
            f"{e['reference']}): {plain}charlm without pipelining {e['charlm_sequential_seconds']:.2f} s "
            f"(ppl {e['charlm_sequential_ppl']}), charlm {e['charlm_seconds']:.2f} s (ppl {e['charlm_ppl']}, "
            f"{e['charlm_speedup']:.1f}x), charlm --bf16 {e['charlm_bf16_seconds']:.2f} s "
            f"(ppl {e['charlm_bf16_ppl']}, {e['charlm_bf16_speedup']:.1f}x)"
        )
        print(
            f"  approximation, {e['columns']} columns with {e['warmup']} warm-up tokens (not exact): "
            f"charlm {e['charlm_columns_seconds']:.2f} s, charlm --bf16 {e['charlm_columns_bf16_seconds']:.2f} s"
        )
        print(f"  generation: {r['generate_ms_per_word']:.2f} ms per word (one sample of 200 words)")
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"\npeak resident memory: {results['peak_rss_mb']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
