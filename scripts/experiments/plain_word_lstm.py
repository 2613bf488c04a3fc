#!/usr/bin/env python
"""The plain peer for a user's own corpus: a word-level LSTM as a user would write it first.

The recipe of PyTorch's ``examples/word_language_model`` (a word embedding, a 2-layer LSTM,
dropout 0.5 on its input and output, a full softmax, untied; SGD at lr 20 with the gradient norm
clipped at 0.25, the learning rate divided by 4 when validation does not improve; batch 20 x 35,
the state carried between chunks), written here from scratch on a corpus prepared by `charlm
prepare`, in fp32. It writes a ``metrics.jsonl`` in charlm's record format (epoch, lr, train_ppl,
valid_ppl, tokens_per_sec, seconds), so `compare_runs.py` puts it beside a charlm run, and after
the last epoch scores the test split once (``test.json``). Used for the own-corpus recipe of
docs/beyond-the-paper.md:

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/experiments/plain_word_lstm.py \
        --data-dir data/shakespeare --output-dir runs/shakespeare/plain --epochs 3
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from charlm.corpus import load_corpus
from charlm.io import atomic_write_text
from charlm.runtime import run_record, source_commit


class WordLSTM(nn.Module):
    def __init__(self, vocab_size: int, size: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, size)
        self.lstm = nn.LSTM(size, size, layers, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(size, vocab_size)
        for weight in (self.embed.weight, self.out.weight):  # as the example initialises them
            nn.init.uniform_(weight, -0.1, 0.1)
        nn.init.zeros_(self.out.bias)

    def forward(self, words, state):
        hidden, state = self.lstm(self.drop(self.embed(words)), state)
        return self.out(self.drop(hidden)), state


def batchify(ids, rows: int) -> torch.Tensor:
    ids = torch.from_numpy(ids.astype("int64"))
    cols = len(ids) // rows
    return ids[: rows * cols].view(rows, cols)


def chunks(data: torch.Tensor, seq_len: int):
    for start in range(0, data.size(1) - 1, seq_len):
        length = min(seq_len, data.size(1) - 1 - start)
        yield data[:, start : start + length], data[:, start + 1 : start + 1 + length]


def detach(state):
    return tuple(s.detach() for s in state)


def evaluate(model, data: torch.Tensor, seq_len: int) -> float:
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets in chunks(data, seq_len):
            logits, state = model(inputs, state)
            total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a corpus prepared by `charlm prepare`")
    parser.add_argument("--output-dir", required=True, help="where metrics.jsonl and test.json go")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=300, help="embedding and LSTM size")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=35)
    parser.add_argument("--seed", type=int, default=1111, help="the example's default seed")
    args = parser.parse_args()

    source_commit()  # read at the start, as charlm's training does
    torch.manual_seed(args.seed)
    vocab, splits, _ = load_corpus(args.data_dir)
    train = batchify(splits["train"], args.batch_size)
    valid, test = batchify(splits["valid"], 10), batchify(splits["test"], 1)  # the example's eval batches
    model = WordLSTM(len(vocab), args.size, args.layers, args.dropout)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"plain word LSTM: {parameters:,} parameters, vocabulary {len(vocab):,}", flush=True)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    metrics = output / "metrics.jsonl"
    metrics.write_text("")
    lr, best, step = args.lr, math.inf, 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        start, total, count, state = time.perf_counter(), 0.0, 0, None
        for inputs, targets in chunks(train, args.seq_len):
            state = None if state is None else detach(state)
            logits, state = model(inputs, state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            model.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            total, count, step = total + loss.item() * targets.numel(), count + targets.numel(), step + 1
        train_seconds = time.perf_counter() - start
        valid_ppl = evaluate(model, valid, args.seq_len)
        record = {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "train_ppl": round(math.exp(total / count), 3),
            "valid_ppl": round(valid_ppl, 3),
            "tokens_per_sec": round(count / train_seconds, 1),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(record), flush=True)
        with metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if valid_ppl < best:
            best, best_state = valid_ppl, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            lr /= 4.0
    model.load_state_dict(best_state)
    result = {
        "perplexity": evaluate(model, test, args.seq_len),
        "split": "test",
        "data_dir": args.data_dir,
        "model": run_record(
            config="plain-word-lstm",
            parameters=parameters,
            epoch=args.epochs,
            seed=args.seed,
            precision="fp32",
            device_type="cpu",
            processes=1,
        ),
    }
    atomic_write_text(output / "test.json", json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
