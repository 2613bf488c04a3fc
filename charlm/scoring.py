"""Exact perplexity of a whole token stream, the number the paper reports.

Perplexity is ``exp(total negative log-likelihood / total predicted tokens)`` over the full stream
with the LSTM state carried from the first token to the last: the batch-size-1 number, never a
mean of per-batch perplexities. The stream is scored as if it followed an end-of-sentence, so every
token is predicted (``tokens == len(ids)``).

It is still fast: the character encoder runs once per distinct word (not once per token), the
recurrent core runs over long chunks (one call per ``chunk_len`` tokens, state carried between
calls), and the output layer's ``nll`` is the one of training, forward only (for the full softmax
the fused layer of :mod:`charlm.nn.fused_softmax`: the logits of a chunk are made and reduced 256
rows at a time, never written out whole; for the spelling-based output the word table is computed
once). On a CPU with several threads the core's stages (LSTM layers) and the output layer of
consecutive chunks also run side by side (see :func:`_pipelined_logprobs`). None of this changes
the numbers. Only the core and output protocols are used (:mod:`charlm.nn`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from charlm.model import CharLM

SEGMENT_TOKENS = 1 << 20  # tokens of a stream encoded together (see _Chunks)


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
    return word_embeddings(model, torch.arange(model.config.vocab_size, device=model.device))


@torch.inference_mode()
def word_embeddings(model: CharLM, words: torch.Tensor) -> torch.Tensor:
    """Input vectors ``[len(words), input_size]`` of the given word ids, in pieces of 4096 words."""
    return torch.cat([model.embed(part) for part in words.split(4096)])


def score_stream(
    model: CharLM,
    ids: np.ndarray | torch.Tensor,
    start_id: int,
    chunk_len: int = 2048,
    per_token: bool = False,
    progress: bool = False,
    bf16: bool = False,
    pipeline: bool | None = None,
) -> StreamScore:
    """Score ``ids`` (a 1-D stream of word ids) with the state carried across the whole stream.

    ``start_id`` is the context before the first token (the end-of-sentence id). The model is put
    in eval mode (no dropout) and restored to its previous mode afterwards. ``bf16`` runs the
    matrix products under bfloat16 autocast (the softmax stays float32): about twice as fast on
    CPUs with bf16 support, and not bit-exact (the README reports the difference).

    ``pipeline`` (default: on a CPU with two or more threads) runs the LSTM layers and the softmax
    of consecutive chunks side by side on different threads; see :func:`_pipelined_logprobs`.
    Same computation, same number up to float rounding.
    """
    if pipeline is None:
        pipeline = model.device.type == "cpu" and torch.get_num_threads() > 1
    with _eval_mode(model):
        return _score_stream(model, ids, start_id, chunk_len, per_token, progress, bf16, pipeline)


@contextlib.contextmanager
def _eval_mode(model: CharLM):
    """Eval mode (no dropout) for the duration, the output layer's word table computed once; the
    previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with model.output.frozen():
            yield
    finally:
        model.train(was_training)


def _token_logprobs(model: CharLM, output: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Core outputs ``[..., H]`` -> log-probability of each target ``[...]`` (float32), through the
    output layer's ``nll`` (for the full softmax: logits made and reduced block by block, never
    written out whole)."""
    with _inference(output.device, bf16):
        return -model.output.nll(output.flatten(0, -2), y.flatten()).view(y.shape)


@contextlib.contextmanager
def _inference(device: torch.device, bf16: bool):
    """No autograd, and bf16 autocast if asked. Both are per thread: every pipeline task enters it."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        yield


def _score_stream(model, ids, start_id, chunk_len, per_token, progress, bf16, pipeline) -> StreamScore:
    chunks = _Chunks(model, ids, start_id, chunk_len, bf16)

    def token_logprobs(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _token_logprobs(model, output, y, bf16)

    bar = tqdm(total=len(chunks), desc="scoring", unit="chunk", disable=not progress, leave=False)
    pieces = (
        _pipelined_logprobs(model, chunks, token_logprobs, bf16, bar)
        if pipeline
        else _sequential_logprobs(model, chunks, token_logprobs, bf16, bar)
    )
    total, kept = 0.0, []
    for piece in pieces:  # in stream order: a deterministic sum; only the running total is kept
        total += float(piece.double().sum())
        if per_token:
            kept.append(piece)
    bar.close()
    return StreamScore(
        nll=-total, tokens=len(chunks.ids), logprobs=torch.cat(kept).cpu().numpy() if per_token else None
    )


def _sequential_logprobs(model, chunks: "_Chunks", token_logprobs, bf16, bar) -> Iterator[torch.Tensor]:
    """Token log-probabilities of each chunk in turn, the core's state carried."""
    state = model.initial_state(1)
    for k in range(len(chunks)):
        x, y = chunks[k]
        with _inference(model.device, bf16):
            output, state = model.core(x, state)  # [1, T, H]
        yield token_logprobs(output[0], y)
        bar.update()


@torch.inference_mode()
def core_outputs(
    model: CharLM, ids: np.ndarray | torch.Tensor, start_id: int, positions: torch.Tensor, chunk_len: int = 2048
) -> torch.Tensor:
    """The core's output vectors ``[len(positions), H]`` that predict the tokens at ``positions`` of
    the stream ``ids`` (state carried over the whole stream, eval mode), for the output layer."""
    device = model.device
    targets = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
    inputs = torch.cat([targets.new_tensor([start_id]), targets[:-1]])
    positions = positions.to(device)
    picked = []
    with _eval_mode(model):
        state = model.initial_state(1)
        for start in range(0, inputs.numel(), chunk_len):
            output, state = model.core(model.embed(inputs[None, start : start + chunk_len]), state)  # [1, T, H]
            inside = positions[(positions >= start) & (positions < start + chunk_len)]
            picked.append(output[0, inside - start])
    return torch.cat(picked)


class _Chunks:
    """The stream's chunks, ``([1, T, D] input vectors, [T] targets)``, each made when asked for,
    from ``ids`` as given (a memory-mapped split stays on disk).

    The stream is read in segments of about ``SEGMENT_TOKENS`` tokens (whole chunks): a segment's
    ids are converted to int64 and its distinct words encoded once (the char-CNN and highway
    layers run once per distinct word of the segment); only the current segment is held. So memory
    does not grow with the stream, and a stream shorter than a segment (any PTB split) is encoded
    exactly as a whole.
    """

    def __init__(self, model: CharLM, ids, start_id: int, chunk_len: int, bf16: bool):
        self.model, self.ids, self.start_id, self.chunk_len, self.bf16 = model, ids, start_id, chunk_len, bf16
        self.segment_tokens = chunk_len * max(1, SEGMENT_TOKENS // chunk_len)
        self._segment: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (start, table, word index)

    def __len__(self) -> int:
        return -(-len(self.ids) // self.chunk_len)

    def _ids(self, start: int, stop: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.ids[start:stop], dtype=np.int64), device=self.model.device)

    def _encoded_segment(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[U, D]`` vectors of the segment's distinct input words, ``[S]`` each position's row."""
        if self._segment is None or self._segment[0] != start:
            self._segment = None  # free the last one first
            before = self.start_id if start == 0 else int(self.ids[start - 1])
            targets = self._ids(start, start + self.segment_tokens)
            inputs = torch.cat([targets.new_tensor([before]), targets[:-1]])  # shifted right
            with _inference(self.model.device, self.bf16):
                distinct, index = torch.unique(inputs, return_inverse=True)  # [U], [S]
                self._segment = (start, word_embeddings(self.model, distinct), index)
        return self._segment[1], self._segment[2]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        first = k * self.chunk_len
        segment_start = first - first % self.segment_tokens
        table, index = self._encoded_segment(segment_start)
        rows = slice(first - segment_start, first - segment_start + self.chunk_len)
        with torch.inference_mode():
            return table[index[rows]].unsqueeze(0), self.target(k)

    def target(self, k: int) -> torch.Tensor:
        """The targets ``[T]`` of chunk ``k`` alone (no input vectors made)."""
        return self._ids(k * self.chunk_len, (k + 1) * self.chunk_len)


def score_columns(
    model: CharLM,
    ids: np.ndarray | torch.Tensor,
    start_id: int,
    columns: int,
    warmup: int,
    chunk_len: int = 2048,
    per_token: bool = False,
    progress: bool = False,
    bf16: bool = False,
) -> StreamScore:
    """An approximation of :func:`score_stream`: the stream scored as ``columns`` side by side.

    The stream is cut into ``columns`` consecutive pieces of equal length ``L`` (the last may be
    shorter), scored as one batch::

        stream:   |---- piece 0 ----|---- piece 1 ----|---- piece 2 ----|
        column 0: |==== scored =====|
        column 1:             |-warm|==== scored =====|
        column 2:                               |-warm|==== scored =====|

    Column 0 is exactly what :func:`score_stream` computes for its piece. Every other column starts
    from a zero state ``warmup`` tokens before its piece (capped at ``L``) and reads them without
    scoring them, so its state has seen that much context instead of the whole stream before it.
    Every token is still scored exactly once, so ``tokens`` equals :func:`score_stream`'s; only the
    state at the start of each piece differs. The README gives the measured difference; the exact
    number stays the default everywhere. ``columns=1`` is the exact computation (not pipelined).

    Batching the recurrence pays most where the batch-1 recurrence is the bottleneck (GPUs); on a
    2-core CPU it is 10-30% faster than :func:`score_stream`'s pipeline (README, Speed).
    """
    if columns < 1 or warmup < 0:
        raise ValueError(f"columns must be >= 1 and warmup >= 0, got {columns} and {warmup}")
    with _eval_mode(model):
        return _score_columns(model, ids, start_id, columns, warmup, chunk_len, per_token, progress, bf16)


def _score_columns(model, ids, start_id, columns, warmup, chunk_len, per_token, progress, bf16) -> StreamScore:
    device = model.device
    targets = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)  # [n]
    n = targets.numel()
    inputs = torch.cat([targets.new_tensor([start_id]), targets[:-1]])  # [n], shifted right
    piece = -(-n // min(columns, n))  # L: tokens per column (ceil)
    columns = -(-n // piece)  # no empty column
    warmup = min(warmup, piece)  # so that a warm-up never reaches before the stream
    # Stream position read by column j at step t: j*L - warmup + t, for t in [0, warmup + L).
    positions = (torch.arange(columns, device=device) * piece - warmup).unsqueeze(1) + torch.arange(
        warmup + piece, device=device
    )  # [N, W + L]
    positions = positions.clamp(0, n - 1)  # column 0's warm-up, the last column's tail: dropped below
    with _inference(device, bf16):
        distinct, word_index = torch.unique(inputs, return_inverse=True)  # [U], [n]
        table = word_embeddings(model, distinct)  # [U, D]: the char-CNN once per distinct word
        x = table[word_index[positions]]  # [N, W + L, D]
        state = model.initial_state(columns)
        if warmup:
            _, state = model.core(x[:, :warmup], state)
            for name, tensor in state.items():  # column 0 starts where the stream starts: from zero
                tensor.narrow(model.core.state_batch_dims[name], 0, 1).zero_()
    x, y = x[:, warmup:], targets[positions[:, warmup:]]  # the scored part
    steps = max(1, chunk_len // columns)  # about chunk_len tokens per LSTM call and softmax
    pieces = []
    for start in tqdm(range(0, piece, steps), desc="scoring", unit="chunk", disable=not progress, leave=False):
        with _inference(device, bf16):
            output, state = model.core(x[:, start : start + steps], state)  # [N, T, H]
        pieces.append(_token_logprobs(model, output, y[:, start : start + steps], bf16))  # [N, T]
    logprobs = torch.cat(pieces, dim=1).flatten()[:n]  # row-major [N, L] is stream order; drop the tail
    return StreamScore(
        nll=-float(logprobs.double().sum()),
        tokens=n,
        logprobs=logprobs.cpu().numpy() if per_token else None,
    )


def _pipelined_logprobs(model, chunks: _Chunks, token_logprobs, bf16, bar) -> Iterator[torch.Tensor]:
    """Token log-probabilities of every chunk, with the core's stages and the output running side by side.

    Scoring one stream is sequential in time, but not across stages (the core's
    :meth:`~charlm.nn.RecurrentCore.stages`: an LSTM's layers): while layer 1 reads chunk ``k``,
    layer 2 can already read chunk ``k - 1`` (layer 1 finished it a step earlier) and the output
    layer chunk ``k - 2``. At step ``s`` stage ``i`` runs chunk ``s - i`` and the output layer, cut
    into pieces, runs chunk ``s - L``; these tasks share no data, so they run on a pool of
    single-threaded workers (torch releases the GIL inside its ops) and meet at the end of the
    step. On a CPU the batch-1 recurrence barely uses a second thread, so this runs the recurrence of
    each layer on its own core (its weights stay in that core's cache) and fills the gaps with the
    softmax.
    """
    layers = model.core.stages()
    num_layers, workers = len(layers), torch.get_num_threads()
    device = model.device
    states = [layer.initial_state(1) for layer in layers]
    outputs: dict[tuple[int, int], torch.Tensor] = {}  # (layer, chunk) -> [1, T, H], until read
    results: dict[tuple[int, int], torch.Tensor] = {}  # (chunk, piece) -> [T / pieces]

    def run_layer(i: int, k: int) -> None:
        x = chunks[k][0] if i == 0 else outputs.pop((i - 1, k))
        with _inference(device, bf16):
            outputs[i, k], states[i] = layers[i](x, states[i])

    def run_softmax(k: int, piece: int, rows: slice) -> None:
        results[k, piece] = token_logprobs(outputs[num_layers - 1, k][0, rows], chunks.target(k)[rows])

    if len(chunks):
        chunks[0]  # encodes the first segment with every thread, before the workers take one each
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per task; the pool provides the parallelism
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for step in range(len(chunks) + num_layers):
                tasks = [pool.submit(run_layer, i, step - i) for i in range(num_layers) if 0 <= step - i < len(chunks)]
                k = step - num_layers
                if k >= 0:
                    length = chunks.target(k).numel()
                    cuts = np.linspace(0, length, 2 * workers + 1).astype(int)
                    tasks += [
                        pool.submit(run_softmax, k, j, slice(a, b))
                        for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))
                        if b > a
                    ]
                for task in tasks:
                    task.result()  # re-raises a worker's error here
                if k >= 0:
                    del outputs[num_layers - 1, k]
                    for key in sorted(key for key in results if key[0] == k):
                        yield results.pop(key)  # chunk k's pieces, in order
                    bar.update()
    finally:
        torch.set_num_threads(previous_threads)
