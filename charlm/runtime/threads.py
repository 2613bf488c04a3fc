"""CPU threads: each process gets the cores it may run on, shared among the processes on the machine.

``accelerate launch`` sets ``OMP_NUM_THREADS=1`` unless given ``--num_cpu_threads_per_process``
(or ``--cpu`` on a machine where that gives more), and torchrun does the same for several
processes: PyTorch then runs every matrix product and LSTM step on one core. charlm instead gives
each process the cores it may run on (``os.sched_getaffinity``: a ``taskset`` or a scheduler's CPU
set is respected) divided among the processes on this machine (``LOCAL_WORLD_SIZE``, or MPI's local
size), unless the user chose a number (``train.num_threads``, ``--num-threads``, ``accelerate
launch --num_cpu_threads_per_process``, or ``OMP_NUM_THREADS`` for a command started without a
launcher: under a launcher that variable is the launcher's own 1, not a choice).
``torch.set_num_threads`` at the start of the process overrides the launcher (it sets OpenMP's and
MKL's counts). Inter-op threads are left alone: training and scoring do not use PyTorch's inter-op
pool. On a machine whose cores are busy with other jobs, OpenMP's spinning at each barrier can make
two threads many times slower than one (docs/speed-commands.md): there set the count to 1, or start
the command with ``OMP_WAIT_POLICY=PASSIVE`` (read when torch is imported, so not settable here).
"""

from __future__ import annotations

import os

import torch

from charlm.errors import CharlmError
from charlm.runtime.launcher import LOCAL_SIZE_VARIABLES, accelerate_launch_arguments, local_process_count


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def configure_threads(requested: int = 0, local_processes: int | None = None) -> int:
    """Set PyTorch's CPU thread count for this process and return it.

    ``requested > 0`` is the user's choice (``train.num_threads``, ``--num-threads``) and is used
    as given. ``0``: the cores available to the process divided among ``local_processes`` (default:
    the launcher's count of processes on this machine, :func:`local_process_count`), at least 1.
    Call it once at the start of a command, after the launcher's environment is in place: it
    overrides the ``OMP_NUM_THREADS=1`` that ``accelerate launch`` and torchrun set.
    """
    if requested < 0:
        raise CharlmError(
            f"the thread count must be 0 (automatic) or positive, got {requested}; "
            "set train.num_threads (or --num-threads) to 0 or more"
        )
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
