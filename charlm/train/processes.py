"""What the processes of a run agree on: the precision probe, the stop check, values reduced across processes."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list

from charlm.corpus import TextStream
from charlm.errors import CharlmError
from charlm.model import CharLM
from charlm.runtime import AUTOCAST_DTYPES, Step

STOP_CHECK_EVERY = 10  # with several processes, a SIGINT/SIGTERM is agreed on every N updates


def probe_step(model: CharLM, stream: TextStream, batch_size: int, device: torch.device) -> Step:
    """One training step (forward and backward of the first chunk) in a given precision, on a copy
    of ``model`` made at the first call: what ``train.mixed_precision=auto`` times."""
    copies: list[CharLM] = []

    def step(precision: str) -> None:
        if not copies:
            copies.append(copy.deepcopy(model).to(device).train())
        probe = copies[0]
        inputs, targets = (t.to(device) for t in stream.chunk(0))
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "no"):
            nll, _ = probe(inputs, probe.initial_state(batch_size), targets)
        nll.sum().backward()  # the cost of training's loss (its scale does not change the work)
        probe.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def main_process_decides(processes: PartialState, decide: Callable[[], Any]) -> Any:
    """``decide()`` on the main process, its result (or its CharlmError) on every process; before
    the Accelerator exists (its settings are what is decided)."""
    answer = [None, None]  # result, error message
    if processes.is_main_process:
        try:
            answer[0] = decide()
        except CharlmError as err:
            answer[1] = str(err)
    if processes.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1] is not None:
        raise CharlmError(answer[1])
    return answer[0]


def forget_earlier_precision(precision: str) -> None:
    """Let a second run in this Python process (a notebook, the tests) use another precision than
    the first: accelerate keeps one state per process and refuses a change. The process group
    (PartialState) is kept; only the AcceleratorState, which a new Accelerator rebuilds, is reset."""
    from accelerate.state import AcceleratorState

    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier is not None and earlier != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def agree(accelerator: Accelerator, value: int, reduce: str) -> int:
    """``value`` combined over all processes (``max`` or ``min``); itself with a single process."""
    if accelerator.num_processes == 1:
        return value
    values = accelerator.gather(torch.tensor([value], dtype=torch.long, device=accelerator.device))
    return int(values.max() if reduce == "max" else values.min())


def on_main_process(accelerator: Accelerator, work) -> None:
    """Run ``work()`` on the main process; a CharlmError there is raised on every process."""
    message = None
    if accelerator.is_main_process:
        try:
            work()
        except CharlmError as err:
            message = str(err)
    if accelerator.num_processes > 1:
        box = [message]
        broadcast_object_list(box)
        message = box[0]
    if message is not None:
        raise CharlmError(message)


def first_non_finite(recent: list[tuple[int, torch.Tensor]], accelerator: Accelerator) -> int:
    """The first update among ``recent`` (update, loss) pairs whose loss is NaN or infinite, 0 if
    none; the same on every process. Empties ``recent``."""
    never = 2**62
    bad = never
    if recent:
        finite = torch.isfinite(torch.stack([loss.float() for _, loss in recent]))  # [n]
        if not bool(finite.all()):
            bad = recent[int((~finite).nonzero()[0, 0])][0]
    recent.clear()
    bad = agree(accelerator, bad, "min")
    return 0 if bad == never else bad
