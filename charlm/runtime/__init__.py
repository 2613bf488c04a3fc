"""How a charlm process uses the machine, however it was started.

* :mod:`~charlm.runtime.threads`: CPU threads, the cores available shared among the processes;
* :mod:`~charlm.runtime.precision`: mixed precision, ``auto`` measured on the device itself;
* :mod:`~charlm.runtime.stop`: signals, and one failed process stopping the others;
* :mod:`~charlm.runtime.launcher`: what the launcher set (process count, device, its options);
* :mod:`~charlm.runtime.provenance`: the commit and machine a trained model or a figure comes from.

    python -m charlm.runtime          # what a run started this way would use here
    accelerate launch --num_processes 1 -m charlm.runtime
"""

from charlm.runtime.launcher import LOCAL_SIZE_VARIABLES, launch_device_type, local_process_count
from charlm.runtime.precision import AUTOCAST_DTYPES, PRECISIONS, PrecisionChoice, Step, choose_precision, device_name
from charlm.runtime.provenance import run_record, source_commit
from charlm.runtime.stop import StopRequest
from charlm.runtime.threads import available_cores, configure_threads

__all__ = [
    "AUTOCAST_DTYPES",
    "LOCAL_SIZE_VARIABLES",
    "PRECISIONS",
    "PrecisionChoice",
    "Step",
    "StopRequest",
    "available_cores",
    "choose_precision",
    "configure_threads",
    "device_name",
    "launch_device_type",
    "local_process_count",
    "run_record",
    "source_commit",
]
