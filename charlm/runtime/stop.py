"""Stopping together: signals, and one failed process ending the others within seconds.

With several processes, an error on one of them used to leave the others running until the launcher
killed them 30 s later (torchrun's grace period; longer elsewhere), and printed a second, misleading
error ("Connection closed by peer") from each survivor. The cause: the SIGTERM the launcher sends
the survivors is the signal that asks charlm to save and stop after the current update, so a
survivor in a long phase without collectives (validation, a big update) kept going, and one blocked
in a collective could not even run its handler. A survivor cannot tell that SIGTERM from a user's,
so the processes tell each other, through the launcher's rendezvous store (a key-value server every
process already reaches, independent of the collectives): the first process whose training raises
records its rank there before its error propagates; every process polls the store from a watcher
thread and, seeing another's failure, ends at once and quietly (the failing process prints its error
once, the main process adds one line if it survived). A process killed outright (SIGKILL, the out-
of-memory killer) records nothing; its launcher then SIGTERMs the others, and a process that has a
stop signal pending and sees a peer's heartbeat counter stand still for ``SILENT_SECONDS`` ends too.
When every process is alive, a SIGINT or SIGTERM still saves and stops after the current update, as
before. The kill-safe checkpoints (``charlm.state``) make ending a process at any moment safe."""

from __future__ import annotations

import datetime
import itertools
import os
import signal
import sys
import threading
import time
from typing import Any

POLL_SECONDS = 0.25  # how often a process's watcher thread beats and reads the others' news
SILENT_SECONDS = 3.0  # with a stop signal pending: a peer whose heartbeat stood still this long is gone
COURTESY_SECONDS = 2.0  # a failed peer's time to print its error and exit before the others do
EXIT_PEER_FAILED = 1  # the exit status of a process that stops because another one failed
STORE_TIMEOUT = datetime.timedelta(seconds=10)


class StopRequest:
    """SIGINT / SIGTERM while training: remember the signal; the loop saves and stops after the
    current update (with several processes the loop agrees on it, every few updates). A second
    SIGINT a second or more later (a deliberate second Ctrl-C) stops at once, without saving; a
    signal repeated sooner (a launcher forwarding it) counts as the first.

    With several processes (``num_processes > 1``) it also makes them stop together when one fails
    (see the module doc): an exception leaving the ``with`` block on one process ends the others
    within about ``POLL_SECONDS + COURTESY_SECONDS``, quietly; a process killed outright ends the
    others ``SILENT_SECONDS`` after its launcher signals them. Needs the launcher's rendezvous
    store (``MASTER_ADDR``, ``MASTER_PORT``, as torchrun and ``accelerate launch`` set them);
    without it the processes behave as with one process.

        with StopRequest(accelerator.num_processes, accelerator.process_index) as stop:
            ...  # the training loop; stop.signum is the signal asked for, 0 if none
    """

    _instances = itertools.count()  # the n-th StopRequest of every process shares keys in the store

    def __init__(self, num_processes: int = 1, process_index: int = 0):
        self.signum = 0
        self.num_processes, self.process_index = num_processes, process_index
        self._at = 0.0
        self._previous: dict[int, Any] = {}
        self._store = None
        self._done = threading.Event()
        run = f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self._prefix = f"charlm/stop/{run}/{next(StopRequest._instances)}/"

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        if self.num_processes > 1:
            self._store = _connect_store()
            if self._store is not None:
                threading.Thread(target=self._watch, name="charlm-stop-watch", daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._done.set()  # the watcher ends; from here this thread decides
        if exc_type is not None and self._store is not None:
            failed = self._claim_failure()
            if failed is not None and failed != self.process_index:  # this error follows from that one
                self._leave(f"process {failed} failed (its error is shown above)")
            # Else this process's error is the one to show: it propagates, and the others stop.
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if not self.signum:
            self.signum, self._at = signum, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self._at > 1.0:
            raise KeyboardInterrupt

    # ---- several processes: the news every process posts in the launcher's store

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _claim_failure(self) -> int | None:
        """Record this process as the failed one unless another was first; return the rank that
        failed first (None if the store cannot be reached)."""
        try:
            return int(self._store.compare_set(self._key("failed"), "", str(self.process_index)))
        except (RuntimeError, ValueError):
            return None

    def _watch(self) -> None:
        """The watcher thread: beat, and end this process when another one failed or is gone."""
        beats: dict[int, tuple[int, float]] = {}  # peer -> (its counter, when it last moved)
        while not self._done.wait(POLL_SECONDS):
            try:
                self._store.add(self._key(f"beat/{self.process_index}"), 1)
                if self._store.check([self._key("failed")]):
                    failed = int(self._store.get(self._key("failed")))
                    if failed != self.process_index:  # (this process's own failure: __exit__ handles it)
                        self._leave(f"process {failed} failed (its error is shown above)")
                    return
                silent = self._silent_peers(beats) if self.signum else []
            except (RuntimeError, ValueError):  # the store is gone, and so is its host (the launcher, process 0)
                if self.signum:
                    self._leave("the launcher's store is gone")
                return
            if silent:
                self._leave(f"process {silent[0]} stopped responding")

    def _silent_peers(self, beats: dict[int, tuple[int, float]]) -> list[int]:
        """The peers whose heartbeat counter has not moved for ``SILENT_SECONDS`` of watching."""
        now = time.monotonic()
        silent = []
        for peer in range(self.num_processes):
            if peer == self.process_index:
                continue
            count = self._store.add(self._key(f"beat/{peer}"), 0)  # read it
            if peer not in beats or beats[peer][0] != count:
                beats[peer] = (count, now)
            elif now - beats[peer][1] >= SILENT_SECONDS:
                silent.append(peer)
        return silent

    def _leave(self, reason: str) -> None:
        """End this process now, without saving: another process failed, and its error is the one
        to read. First give it ``COURTESY_SECONDS`` (cut short by the launcher's signal, which
        comes once it has exited) so that it prints its error and is reported as the first failure."""
        deadline = time.monotonic() + COURTESY_SECONDS
        while not self.signum and time.monotonic() < deadline:
            time.sleep(0.05)
        if threading.current_thread() is not threading.main_thread() and self._done.is_set():
            return  # the main thread left the block meanwhile: it decides (see __exit__)
        if self.process_index == 0:
            print(f"charlm: stopping every process without saving: {reason}", file=sys.stderr, flush=True)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_PEER_FAILED)


def _connect_store():
    """A client of the launcher's rendezvous store (torchrun's agent, or process 0), on a
    connection of its own; None when the launcher published none."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "")
    if not host or not port.isdigit():
        return None
    from torch.distributed import TCPStore

    try:
        return TCPStore(host, int(port), is_master=False, timeout=STORE_TIMEOUT)
    except (RuntimeError, ValueError) as err:
        print(
            f"charlm: warning: cannot reach the launcher's store at {host}:{port} ({err}); if one process "
            "fails, the others stop only when the launcher ends them",
            file=sys.stderr,
            flush=True,
        )
        return None
