#!/usr/bin/env python
"""charlm's adaptive softmax against ``torch.nn.AdaptiveLogSoftmaxWithLoss`` and the full fused
softmax: forward + backward time of the output layer alone for one training chunk (700 rows of
H = 300, Zipfian targets), fp32 and bf16 autocast, at several vocabulary sizes.

    python scripts/experiments/adaptive_speed.py [--vocab 10000 100000 250000] [--repeats 10]
"""

import argparse
import time

import numpy as np
import torch

from charlm.nn import AdaptiveSoftmax, FullSoftmax, default_cutoffs


class TorchAdaptive(torch.nn.Module):
    def __init__(self, hidden, vocab):
        super().__init__()
        self.layer = torch.nn.AdaptiveLogSoftmaxWithLoss(
            hidden, vocab, default_cutoffs(vocab), div_value=4.0, head_bias=True
        )

    def nll(self, hidden, targets):
        return -self.layer(hidden, targets).output.float()


def zipf_targets(vocab: int, n: int, rng) -> torch.Tensor:
    p = 1.0 / np.arange(1, vocab + 1)
    return torch.from_numpy(rng.choice(vocab, size=n, p=p / p.sum()))


def seconds(layer, hidden, targets, dtype, repeats) -> float:
    times = []
    for i in range(repeats + 2):
        h = hidden.clone().requires_grad_()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = layer.nll(h, targets).sum()
        loss.backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
        layer.zero_grad(set_to_none=True)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[10000, 100000, 250000])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    hidden_size, rows = 300, 700
    print(
        f"output layer forward+backward, {rows} rows x H={hidden_size}, median of {args.repeats} (ms); "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"{'V':>8} {'dtype':>5} {'full':>9} {'torch adaptive':>15} {'charlm adaptive':>16} {'full/charlm':>12}")
    for vocab in args.vocab:
        hidden, targets = torch.randn(rows, hidden_size), zipf_targets(vocab, rows, rng)
        layers = {
            "full": FullSoftmax(hidden_size, vocab),
            "torch": TorchAdaptive(hidden_size, vocab),
            "charlm": AdaptiveSoftmax(hidden_size, vocab, [], 4.0),
        }
        for dtype in ("fp32", "bf16"):
            ms = {}
            for name, layer in layers.items():
                try:
                    ms[name] = f"{1000 * seconds(layer, hidden, targets, dtype, args.repeats):.1f}"
                except RuntimeError as err:  # torch's layer fails under bf16 autocast (a dtype mismatch)
                    ms[name] = "fails"
                    print(f"  {name} {dtype}: {str(err).splitlines()[0]}")
            print(
                f"{vocab:>8} {dtype:>5} {ms['full']:>9} {ms['torch']:>15} {ms['charlm']:>16} "
                f"{float(ms['full']) / float(ms['charlm']):>11.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
