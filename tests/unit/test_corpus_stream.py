"""charlm.corpus.TextStream: the training chunks of the in-memory stream it replaced, served from the
memory-mapped ids without a copy of the split."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm.corpus import TextStream, load_corpus
from charlm.errors import CharlmError

# (total_rows, seq_len, first_row, num_rows): one process, two processes' shares, odd sizes
LAYOUTS = [(20, 35, 0, 20), (40, 35, 0, 20), (40, 35, 20, 20), (7, 13, 3, 2), (1, 1000, 0, 1)]


class InMemoryTextStream:
    """The class charlm.corpus.TextStream replaced (it was charlm.train.TextStream): the whole split
    copied to int64, then viewed as rows. Kept here as the reference."""

    def __init__(self, ids, total_rows, seq_len, first_row, num_rows):
        cols = (len(ids) - 1) // total_rows  # tokens per row
        self.num_chunks = cols // seq_len
        used = total_rows * cols
        data = torch.from_numpy(np.asarray(ids[: used + 1], dtype=np.int64))
        rows = slice(first_row, first_row + num_rows)
        self.inputs = data[:used].view(total_rows, cols)[rows]
        self.targets = data[1 : used + 1].view(total_rows, cols)[rows]
        self.seq_len = seq_len

    def chunk(self, k):
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols]


@pytest.fixture(scope="module")
def ptb_train(prepared_ptb: Path) -> np.memmap:
    return load_corpus(prepared_ptb)[1]["train"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_chunks_as_the_in_memory_stream(ptb_train, layout):
    stream, reference = TextStream(ptb_train, *layout), InMemoryTextStream(ptb_train, *layout)
    assert (stream.num_chunks, stream.seq_len) == (reference.num_chunks, reference.seq_len)
    last = stream.num_chunks - 1
    for k in sorted({0, 1, 2, last // 2, last - 1, last} & set(range(stream.num_chunks))):
        for new, old in zip(stream.chunk(k), reference.chunk(k)):
            assert new.dtype == old.dtype == torch.int64
            assert new.shape == old.shape == (layout[3], layout[1])
            assert torch.equal(new, old)


def test_holds_only_views_of_the_memory_map(ptb_train):
    """No array of the split's size is made: construction and a chunk allocate a few kilobytes
    (the in-memory stream copies the split to int64: 8 bytes a token), and the rows it keeps are
    views of the memory map."""
    tracemalloc.start()
    try:
        stream = TextStream(ptb_train, 20, 35, 0, 20)
        stream.chunk(stream.num_chunks - 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 < ptb_train.nbytes / 50
    arrays = [value for value in vars(stream).values() if isinstance(value, np.ndarray)]
    assert arrays and all(np.shares_memory(array, ptb_train) for array in arrays)
    assert not any(isinstance(value, torch.Tensor) for value in vars(stream).values())


def test_chunks_are_independent_copies(ptb_train):
    stream = TextStream(ptb_train, 20, 35, 0, 20)
    inputs, targets = stream.chunk(3)
    inputs += 1  # the caller may modify a chunk; the corpus is read-only and stays as it was
    assert torch.equal(stream.chunk(3)[0], inputs - 1)
    assert torch.equal(targets[:, :-1], stream.chunk(3)[0][:, 1:])


def test_too_short_a_split():
    with pytest.raises(CharlmError, match="too short for 4 rows of 10 steps"):
        TextStream(np.arange(30, dtype=np.int32), 4, 10, 0, 4)
