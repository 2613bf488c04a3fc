"""Mixed precision: ``train.mixed_precision=auto`` measures which precision is faster here.

Whether bf16 pays depends on the chip, not on its feature flags: an AMD EPYC runs a bf16 training
step of ``ptb-char-small`` about 2x faster than fp32, an Intel Xeon with AMX faster still, and an
Intel Xeon that has AVX-512 BF16 but no AMX *slower* than fp32 (its bf16 matrix products ran at
0.7x). So ``auto`` times the candidates on the device itself, at the model's own shapes: one
training step (forward and backward of a chunk) in fp32 and in the low precision (bf16 on a CPU;
bf16 on a CUDA GPU that has it natively, else fp16), alternated for about a second after a
warm-up, on a copy of the model and without touching the random number generators. The faster
wins; fp32 unless the low precision is at least ``MARGIN`` faster (at equal speed the exact one).

The answer is kept in ``precision.json`` in the user's cache folder (``$CHARLM_CACHE_DIR``, else
``$XDG_CACHE_HOME/charlm``, else ``~/.cache/charlm``), one entry per machine (CPU model and its
bf16 instructions, or GPU name), torch version, thread count and model shape, so the probe runs
once. Delete the file to measure again. The run header says what was measured::

    precision bf16 (auto: bf16 ran 2.41x fp32 here, measured now)

An explicit ``train.mixed_precision`` (``no``, ``bf16``, ``fp16``) wins, and so does accelerate's
own setting when the user made one (``accelerate launch --mixed_precision``, or an ``accelerate
config`` file): :func:`charlm.runtime.launcher.accelerate_precision_choice`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from charlm.config import MIXED_PRECISION as PRECISIONS  # train.mixed_precision's choices
from charlm.errors import CharlmError
from charlm.io import atomic_write_text
from charlm.runtime.launcher import accelerate_precision_choice

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MARGIN = 0.03  # the low precision must be this much faster to be chosen
PROBE_SECONDS = 1.0  # time spent timing, after one warm-up step of each precision
CACHE_FILE = "precision.json"

Step = Callable[[str], None]
"""One training step of the model in the precision named (``no``, ``bf16``, ``fp16``), finished
(synchronised) when it returns."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    """What ``Accelerator(mixed_precision=...)`` gets: ``no``, ``bf16``, ``fp16`` (or ``fp8``)."""
    reason: str
    """Why, in the words of the run header."""

    @property
    def name(self) -> str:
        """The precision as records write it: ``fp32``, ``bf16``, ``fp16``."""
        return "fp32" if self.precision == "no" else self.precision

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def check_precision(value: str) -> str:
    """``train.mixed_precision`` normalised (the empty string of older configs is ``auto``)."""
    value = (value or "auto").strip().lower()
    if value == "fp32":
        return "no"  # accelerate's name for it
    if value not in PRECISIONS:
        raise CharlmError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def low_precision_candidate(device_type: str) -> str | None:
    """The precision to time against fp32 on ``device_type``: bf16 on a CPU, bf16 or fp16 on a CUDA
    GPU (bf16 where it runs natively: Ampere or newer), None elsewhere."""
    if device_type == "cpu":
        return "bf16"
    if device_type == "cuda" and torch.cuda.is_available():
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch without the argument answers for native support only
            native = torch.cuda.is_bf16_supported()
        return "bf16" if native else "fp16"
    return None


def device_name(device_type: str) -> str:
    """The chip a speed figure belongs to: the GPU's name, or the CPU's model name with the
    instructions that decide bf16 speed (two CPUs that share a model name may differ in them)."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    shown = [flag for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if flag in flags]
    return f"{model} [{' '.join(shown)}]" if shown else model


def cache_path() -> Path:
    root = (
        os.environ.get("CHARLM_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlm"
    )
    return Path(root) / CACHE_FILE


def measure_speedup(step: Step, candidate: str, seconds: float | None = None) -> float:
    """How many times faster ``step`` runs in ``candidate`` than in fp32: the ratio of the median
    step times, the two alternated (so that noise from other processes hits both alike) for about
    ``seconds`` (default ``PROBE_SECONDS``) after one untimed step of each, and at least 3 timed
    steps of each."""
    seconds = PROBE_SECONDS if seconds is None else seconds
    times: dict[str, list[float]] = {"no": [], candidate: []}
    for precision in times:
        step(precision)  # warm-up: allocations, kernels chosen, weights cast
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < 3 or time.perf_counter() - start < seconds:
        for precision, recorded in times.items():
            began = time.perf_counter()
            step(precision)
            recorded.append(time.perf_counter() - began)
    return statistics.median(times["no"]) / statistics.median(times[candidate])


def choose_precision(
    value: str, device_type: str, step: Step | None = None, shapes: str = "", cache: Path | None = None
) -> PrecisionChoice:
    """The precision a run uses (see the module doc). ``step`` is one training step of the run's
    model (:data:`Step`); ``shapes`` names the model and chunk shape in the cache. Without a
    ``step`` (nothing to time) ``auto`` is a cached answer if there is one, else fp32."""
    value = check_precision(value)
    if value != "auto":
        return PrecisionChoice(value, "set by train.mixed_precision")
    launcher = accelerate_precision_choice()
    if launcher:
        return PrecisionChoice(launcher, "accelerate's setting")
    candidate = low_precision_candidate(device_type)
    if candidate is None:
        return PrecisionChoice("no", f"auto: no faster precision on {device_type}")
    cache = cache or cache_path()
    key = f"{device_name(device_type)} | torch {torch.__version__} | {torch.get_num_threads()} threads | {shapes}"
    entries = read_cache(cache)
    speedup, when = entries.get(key, {}).get(candidate), "measured before"
    if speedup is None:
        if step is None:
            return PrecisionChoice("no", f"auto: {candidate} not measured for this model yet")
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            speedup, when = measure_speedup(step, candidate), "measured now"  # the run's random draws untouched
        entries.setdefault(key, {})[candidate] = round(speedup, 3)
        write_cache(cache, entries)
    precision = candidate if speedup >= 1.0 + MARGIN else "no"
    return PrecisionChoice(precision, f"auto: {candidate} ran {speedup:.2f}x fp32 here, {when}")


def read_cache(path: Path) -> dict[str, dict[str, float]]:
    """The cached measurements; an unreadable or damaged file counts as empty (it is re-measured)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, entries: dict[str, dict[str, float]]) -> None:
    """Write the cache; a cache folder that cannot be written costs only a probe next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass
