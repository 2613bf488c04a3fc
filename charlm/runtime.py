"""How a charlm process uses the machine, however it was started: CPU threads, mixed precision,
and stopping together.

    python -m charlm.runtime          # what a run started this way would use here
    accelerate launch --num_processes 1 -m charlm.runtime

The same training can be started as ``charlm train``, ``python scripts/train.py``, ``accelerate
launch`` with or without ``--cpu``, or with several processes. Each launcher leaves its own marks
on the environment, and left alone they cost speed or robustness:

* **Threads** (:func:`configure_threads`). ``accelerate launch`` sets ``OMP_NUM_THREADS=1`` unless
  given ``--num_cpu_threads_per_process`` (or ``--cpu`` on a machine where that gives more), and
  torchrun does the same for several processes: PyTorch then runs every matrix product and LSTM
  step on one core. charlm instead gives each process the cores it may run on
  (``os.sched_getaffinity``: a ``taskset`` or a scheduler's CPU set is respected) divided among
  the processes on this machine (``LOCAL_WORLD_SIZE``, or MPI's local size), unless the user chose
  a number (``train.num_threads``, ``--num-threads``, ``accelerate launch
  --num_cpu_threads_per_process``, or ``OMP_NUM_THREADS`` for a command started without a
  launcher: under a launcher that variable is the launcher's own 1, not a choice). ``torch.set_num_threads`` at the start
  of the process overrides the launcher (it sets OpenMP's and MKL's counts; matrix products and
  ``nn.LSTM`` forward and backward then run on that many threads). Inter-op threads are left
  alone: training and scoring do not use PyTorch's inter-op pool. On a machine whose cores are
  busy with other jobs, OpenMP's spinning at each barrier can make two threads many times slower
  than one (docs/speed-commands.md): there set the count to 1, or start the command with
  ``OMP_WAIT_POLICY=PASSIVE`` (read when torch is imported, so not settable from here).

* **Precision** (:func:`resolve_mixed_precision`). ``auto`` is bf16 where the hardware runs it
  fast (a CPU with AVX-512 BF16 or AMX, read from ``torch.cpu.get_capabilities()``, else from
  ``/proc/cpuinfo``; a CUDA GPU with native bf16), fp32 (``no``) elsewhere. An explicit value wins,
  and so does accelerate's own setting when the user made one (``accelerate launch
  --mixed_precision``, or an ``accelerate config`` file). The launcher also writes ``no`` when it
  was given nothing; that default is told apart from a choice by reading the launcher's command
  line (see :func:`accelerate_precision_choice`).

* **Stopping together** (:class:`StopRequest`). With several processes, an error on one of them
  used to leave the others running until the launcher killed them 30 s later (torchrun's grace
  period; longer elsewhere), and printed a second, misleading error ("Connection closed by peer")
  from each survivor. The cause: the SIGTERM the launcher sends the survivors is the signal that
  asks charlm to save and stop after the current update, so a survivor in a long phase without
  collectives (validation, a big update) kept going, and one blocked in a collective could not
  even run its handler. A survivor cannot tell that SIGTERM from a user's, so the processes tell
  each other, through the launcher's rendezvous store (a key-value server every process already
  reaches, independent of the collectives): the first process whose training raises records its
  rank there before its error propagates; every process polls the store from a watcher thread and,
  seeing another's failure, ends at once and quietly (the failing process prints its error once,
  the main process adds one line if it survived). A process killed outright (SIGKILL, the
  out-of-memory killer) records nothing; its launcher then SIGTERMs the others, and a process that
  has a stop signal pending and sees a peer's heartbeat counter stand still for
  ``SILENT_SECONDS`` ends too. When every process is alive, a SIGINT or SIGTERM still saves and
  stops after the current update, as before. The kill-safe checkpoints (``charlm.state``) make
  ending a process at any moment safe.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from charlm.errors import CharlmError

PRECISIONS = ("auto", "no", "bf16", "fp16")  # train.mixed_precision's choices

# Environment variables that hold the number of processes on this machine, in the order read:
# torchrun (what `accelerate launch` with several processes uses), then MPI implementations.
LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                        "MV2_COMM_WORLD_LOCAL_SIZE")

POLL_SECONDS = 0.25  # how often a process's watcher thread beats and reads the others' news
SILENT_SECONDS = 3.0  # with a stop signal pending: a peer whose heartbeat stood still this long is gone
COURTESY_SECONDS = 2.0  # a failed peer's time to print its error and exit before the others do
EXIT_PEER_FAILED = 1  # the exit status of a process that stops because another one failed
STORE_TIMEOUT = datetime.timedelta(seconds=10)


# ------------------------------------------------------------------------------ threads


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def local_process_count() -> int:
    """How many processes of this run share this machine, as the launcher says (1 if none does)."""
    for name in LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def configure_threads(requested: int = 0, local_processes: int | None = None) -> int:
    """Set PyTorch's CPU thread count for this process and return it.

    ``requested > 0`` is the user's choice (``train.num_threads``, ``--num-threads``) and is used
    as given. ``0``: the cores available to the process divided among ``local_processes`` (default:
    the launcher's count of processes on this machine, :func:`local_process_count`), at least 1.
    Call it once at the start of a command, after the launcher's environment is in place: it
    overrides the ``OMP_NUM_THREADS=1`` that ``accelerate launch`` and torchrun set.
    """
    if requested < 0:
        raise CharlmError(f"the thread count must be 0 (automatic) or positive, got {requested}; "
                          "set train.num_threads (or --num-threads) to 0 or more")
    sharing = local_processes if local_processes is not None else local_process_count()
    threads = requested or user_thread_choice() or max(1, available_cores() // max(sharing, 1))
    torch.set_num_threads(threads)
    return threads


def user_thread_choice() -> int:
    """The thread count the user gave the launch, 0 if none: ``accelerate launch
    --num_cpu_threads_per_process N``, or ``OMP_NUM_THREADS`` when no launcher started the process
    (under ``accelerate launch`` or torchrun that variable is the launcher's own 1, not a choice)."""
    launch = accelerate_launch_arguments()
    if launch is not None:
        return int(launch.num_cpu_threads_per_process or 0)
    if any(name in os.environ for name in LOCAL_SIZE_VARIABLES):  # torchrun or MPI set the variable
        return 0
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 0


# ------------------------------------------------------------------------------ precision


def launch_device_type() -> str:
    """The device type ``Accelerator()`` will pick: ``cpu`` when ``ACCELERATE_USE_CPU`` is set
    (``accelerate launch --cpu``) or there is no CUDA, else ``cuda``."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "on")
    return "cpu" if use_cpu or not torch.cuda.is_available() else "cuda"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), where bf16 autocast is faster
    than fp32. CPUs without them (plain AVX-512, AVX2) emulate bf16 and gain nothing."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.6
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def runs_bf16_fast(device_type: str) -> bool:
    """Whether bf16 autocast pays on ``device_type`` (``cpu`` or ``cuda``) here."""
    if device_type == "cpu":
        return cpu_has_fast_bf16()
    if device_type == "cuda" and torch.cuda.is_available():
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)  # Ampere or newer
        except TypeError:  # torch without the argument answers for native support only
            return torch.cuda.is_bf16_supported()
    return False


def accelerate_precision_choice() -> str:
    """accelerate's mixed precision if the user chose one, else ``''``.

    ``accelerate launch`` exports ``ACCELERATE_MIXED_PRECISION`` to its processes: the value of
    ``--mixed_precision`` or of the config file, and ``no`` when it had neither. So ``bf16``,
    ``fp16`` or ``fp8`` are choices; ``no`` is one only if the launcher's command line has
    ``--mixed_precision`` or a config file was read (the launcher's own rule), or if no
    ``accelerate launch`` is found among this process's parents (someone set the variable).
    """
    value = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if value != "no":
        return value
    launch = accelerate_launch_arguments()
    if launch is None:
        return "no"
    from accelerate.commands.config import default_config_file

    chose = (launch.mixed_precision is not None or launch.config_file is not None
             or (os.path.isfile(default_config_file) and not launch.cpu))
    return "no" if chose else ""


def accelerate_launch_arguments(max_depth: int = 3) -> argparse.Namespace | None:
    """The parsed options of the ``accelerate launch`` that started this process: the nearest of
    its parents (up to ``max_depth`` levels) whose command line is one; None if there is none or
    ``/proc`` cannot be read (not Linux)."""
    from accelerate.commands.launch import launch_command_parser

    pid = os.getpid()
    for _ in range(max_depth):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the parent
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, IndexError, ValueError):
            return None
        options = _after_launch_command(argv)
        if options is not None:
            try:
                return launch_command_parser().parse_known_args(options)[0]
            except SystemExit:  # not a command line the launcher accepts after all
                return None
    return None


def _after_launch_command(argv: list[str]) -> list[str] | None:
    """The launcher's options if ``argv`` runs ``accelerate launch`` (``accelerate launch ...``,
    ``accelerate-launch ...`` or ``python -m accelerate.commands.launch ...``), else None."""
    for i, arg in enumerate(argv[:4]):
        name = os.path.basename(arg)
        if arg == "accelerate.commands.launch" or name == "accelerate-launch":
            return argv[i + 1:]
        if name == "accelerate" and argv[i + 1:i + 2] == ["launch"]:
            return argv[i + 2:]
    return None


def resolve_mixed_precision(value: str, device_type: str) -> str:
    """The ``mixed_precision`` to give ``Accelerator``: ``no``, ``bf16``, ``fp16`` (or ``fp8`` from
    accelerate's own setting).

    ``value`` is ``train.mixed_precision``: ``no``, ``bf16`` and ``fp16`` are used as given;
    ``auto`` (and the empty string of older configs) is accelerate's setting where the user chose
    one (:func:`accelerate_precision_choice`), else ``bf16`` where ``device_type`` runs it fast
    (:func:`runs_bf16_fast`), else ``no``.
    """
    value = (value or "auto").strip().lower()
    if value not in PRECISIONS:
        raise CharlmError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    if value != "auto":
        return value
    return accelerate_precision_choice() or ("bf16" if runs_bf16_fast(device_type) else "no")


# ------------------------------------------------------------------------------ stopping


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
        print(f"charlm: warning: cannot reach the launcher's store at {host}:{port} ({err}); if one process "
              "fails, the others stop only when the launcher ends them", file=sys.stderr, flush=True)
        return None


# ------------------------------------------------------------------------------ report


def main() -> int:
    """``python -m charlm.runtime``: print what a run started this way would use."""
    device_type = launch_device_type()
    threads = configure_threads()
    precision = resolve_mixed_precision("auto", device_type)
    rank = os.environ.get("RANK", "0")
    print(f"process {rank}: {threads} thread(s) (cores {available_cores()}, local processes "
          f"{local_process_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"torch.get_num_threads() {torch.get_num_threads()}, device {device_type}, precision auto -> {precision} "
          f"(ACCELERATE_MIXED_PRECISION={os.environ.get('ACCELERATE_MIXED_PRECISION', 'unset')})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
