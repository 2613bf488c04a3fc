"""Pass 1 of word mode: provisional word ids of every batch, on worker processes for a large corpus.

Looking words up in a dictionary of a few hundred thousand entries is what takes the time
(cache misses on the rare words), so once a corpus turns out large (after
:data:`IN_PROCESS_BATCHES` batches) the batches are dealt round-robin to one worker process per
CPU. Each worker numbers the words it meets in its own order with its own
:class:`~charlm.text.WordCounter`; at the end their words and training counts are merged into
the main process's counter. The result is the same whatever the number of workers: the final
ids depend only on the counts. :class:`WordNumbering` remembers which numbering wrote each
stretch of each split, so that pass 2 renumbers every stretch with its own table.

The workers are started with ``spawn`` (they inherit no file descriptors, so the lock of the
temporary directory dies with the main process) and leave when the main process is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from charlm.text import VocabOptions, Vocabulary, WordCounter

IN_PROCESS_BATCHES = 32  # batches (about 32 MB of text) numbered here before workers start
BATCHES_IN_FLIGHT = 2  # per worker: one being numbered, one waiting
POLL_S = 1.0  # how often a waiting process checks that the other side is still alive


class WordNumbering:
    """Provisional ids of the batches of a corpus (``with``: stops the workers on leaving).

    :meth:`encode` yields ``(split, lines, ids)`` for each ``(split, lines)`` batch, in order;
    :meth:`vocabulary` then gives the vocabulary and, per split, the ``(table, length)``
    stretches that renumber its array.
    """

    def __init__(self, options: VocabOptions, workers: int | None = None):
        self.options = options
        self.counter = WordCounter(options)  # numbering 0: this process
        self.workers = len(os.sched_getaffinity(0)) if workers is None else workers
        self._processes: list[_Worker] = []
        self._stretches: dict[str, list[tuple[int, int]]] = {}  # split -> [(numbering, length)]

    def __enter__(self) -> "WordNumbering":
        return self

    def __exit__(self, *exc) -> None:
        for worker in self._processes:
            worker.stop()

    def encode(self, batches: Iterable[tuple[str, list[str]]]) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(split, lines, provisional ids)`` of each batch, in order; the first batches are
        numbered here, the others by the workers, a few at a time in flight."""
        in_flight: deque[tuple[str, int, int]] = deque()  # (split, lines, worker) in sent order
        for k, (split, lines) in enumerate(batches):
            if k == IN_PROCESS_BATCHES and self.workers > 1:
                self._processes = [_Worker(self.options) for _ in range(self.workers)]
            if not self._processes:
                yield self._record(split, len(lines), 0, self.counter.encode(lines, train=split == "train"))
                continue
            worker = k % len(self._processes)
            self._processes[worker].send((lines, split == "train"))
            in_flight.append((split, len(lines), worker))
            if len(in_flight) >= BATCHES_IN_FLIGHT * len(self._processes):
                yield self._receive(*in_flight.popleft())
        while in_flight:
            yield self._receive(*in_flight.popleft())

    def _receive(self, split: str, lines: int, worker: int) -> tuple[str, int, np.ndarray]:
        return self._record(split, lines, worker + 1, self._processes[worker].receive())

    def _record(self, split: str, lines: int, numbering: int, ids: np.ndarray) -> tuple[str, int, np.ndarray]:
        stretches = self._stretches.setdefault(split, [])
        if stretches and stretches[-1][0] == numbering:
            stretches[-1] = (numbering, stretches[-1][1] + len(ids))
        else:
            stretches.append((numbering, len(ids)))
        return split, lines, ids

    def vocabulary(self) -> tuple[Vocabulary, dict[str, list[tuple[np.ndarray, int]]]]:
        """The vocabulary of all training counts, and per split the (table, length) stretches
        from provisional ids to its word ids."""
        tables = [None]  # numbering 0 is the counter's own
        for worker in self._processes:
            worker.send(None)
            tables.append(self.counter.absorb(*worker.receive()))
        vocab, final = self.counter.vocabulary()
        tables = [final if table is None else final[table] for table in tables]
        stretches = {
            split: [(tables[numbering], length) for numbering, length in self._stretches.get(split, [])]
            for split in ("train", "valid", "test")
        }
        return vocab, stretches


class _Worker:
    """One worker process and the two queues to it and back."""

    def __init__(self, options: VocabOptions):
        context = multiprocessing.get_context("spawn")
        self._inbox, self._outbox = context.Queue(), context.Queue()
        self._process = context.Process(
            target=_number_words, args=(options, self._inbox, self._outbox, os.getpid()), daemon=True
        )
        self._process.start()

    def send(self, job) -> None:
        self._inbox.put(job)

    def receive(self):
        """The worker's next answer; its exception is raised here."""
        while True:
            try:
                answer = self._outbox.get(timeout=POLL_S)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"a word-numbering worker process died (exit code {self._process.exitcode})"
                    ) from None
                continue
            if isinstance(answer, BaseException):
                raise answer
            return answer

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._inbox.cancel_join_thread()  # jobs it never took: do not wait to send them


def _number_words(options: VocabOptions, inbox, outbox, parent: int) -> None:
    """A worker process: provisional ids of each ``(lines, train)`` job; on ``None``, its words
    and their training counts. It leaves when its parent is gone."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    counter = WordCounter(options)
    try:
        while True:
            job = inbox.get()
            if job is None:
                outbox.put(counter.words_seen())
                return
            lines, train = job
            outbox.put(counter.encode(lines, train))
    except BaseException as err:  # raised again in the main process
        outbox.put(err)


def _exit_when_orphaned(parent: int) -> None:
    """Ends this worker once ``parent`` is gone, whatever the main thread is doing: a parent
    killed halfway through sending a batch leaves a message that ``inbox.get`` waits on forever,
    and nobody will read the answers anyway."""
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(0)
