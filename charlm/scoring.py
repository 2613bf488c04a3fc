"""Exact perplexity of a whole token stream, the number the paper reports.

Perplexity is ``exp(total negative log-likelihood / total predicted tokens)`` over the full stream
with the LSTM state carried from the first token to the last: the batch-size-1 number, never a
mean of per-batch perplexities. The stream is scored as if it followed an end-of-sentence, so every
token is predicted (``tokens == len(ids)``).

It is still fast: the character encoder runs once per distinct word (not once per token), the
LSTM runs over long chunks (one call per ``chunk_len`` tokens, state carried between calls), and
the softmax is applied to a whole chunk at once. None of this changes the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from charlm.model import CharLM


@dataclass
class StreamScore:
    nll: float
    """Summed negative log-likelihood (nats) of all predicted tokens."""
    tokens: int
    """Number of predicted tokens."""
    logprobs: np.ndarray | None = None
    """Per-token log-probabilities (natural log), when asked for."""

    @property
    def perplexity(self) -> float:
        return safe_exp(self.nll / max(self.tokens, 1))


def safe_exp(x: float) -> float:
    """``exp(x)``, or infinity where it overflows (a diverged model: a number, not a traceback)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@torch.inference_mode()
def vocabulary_embeddings(model: CharLM) -> torch.Tensor:
    """Input vectors of every vocabulary word ``[V, input_size]``, computed once (eval mode)."""
    return word_embeddings(model, torch.arange(model.config.vocab_size, device=model.decoder.weight.device))


@torch.inference_mode()
def word_embeddings(model: CharLM, words: torch.Tensor) -> torch.Tensor:
    """Input vectors ``[len(words), input_size]`` of the given word ids, in pieces of 4096 words."""
    return torch.cat([model.embed(part) for part in words.split(4096)])


@torch.inference_mode()
def score_stream(
    model: CharLM,
    ids: np.ndarray | torch.Tensor,
    start_id: int,
    chunk_len: int = 2048,
    per_token: bool = False,
    progress: bool = False,
    bf16: bool = False,
) -> StreamScore:
    """Score ``ids`` (a 1-D stream of word ids) with the state carried across the whole stream.

    ``start_id`` is the context before the first token (the end-of-sentence id). The model is put
    in eval mode (no dropout) and restored to its previous mode afterwards. ``bf16`` runs the
    matrix products under bfloat16 autocast (the softmax stays float32): about twice as fast on
    CPUs with bf16 support, and not bit-exact (the README reports the difference).
    """
    device = model.decoder.weight.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return _score_stream(model, ids, start_id, chunk_len, per_token, progress)


def _score_stream(model, ids, start_id, chunk_len, per_token, progress) -> StreamScore:
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device
    targets = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)  # [n]
    inputs = torch.cat([targets.new_tensor([start_id]), targets[:-1]])  # [n], shifted right
    # The char-CNN and highway layers run once per distinct word of the stream.
    distinct, inputs = torch.unique(inputs, return_inverse=True)  # [U], [n] indices into distinct
    table = word_embeddings(model, distinct)  # [U, D]
    hidden = model.init_hidden(1)
    total = torch.zeros((), dtype=torch.float64, device=device)
    logprobs = []
    starts = range(0, targets.numel(), chunk_len)
    for start in tqdm(starts, desc="scoring", unit="chunk", disable=not progress, leave=False):
        x = table[inputs[start : start + chunk_len]].unsqueeze(0)  # [1, T, D]
        logits, hidden = model.forward_embedded(x, hidden)  # [1, T, V]
        y = targets[start : start + chunk_len]
        token_lp = -F.cross_entropy(logits[0].float(), y, reduction="none")  # [T]
        total += -token_lp.double().sum()
        if per_token:
            logprobs.append(token_lp.cpu())
    model.train(was_training)
    return StreamScore(
        nll=float(total),
        tokens=int(targets.numel()),
        logprobs=torch.cat(logprobs).numpy() if per_token else None,
    )
