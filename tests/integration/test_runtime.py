"""charlm.runtime: thread counts and stopping together, under the real launchers (precision: test_precision.py).

The unit tests call the functions directly. The slow ones start real processes: `python -m
charlm.runtime` under each way of launching (it prints the thread count a run would use), a pair of
plain processes sharing a store (the stop-together mechanism alone), and real two-process training
under `accelerate launch` with a failure injected into one process. The injection is a
``sitecustomize.py`` written to a temporary folder on PYTHONPATH of those processes only: nothing
in charlm knows about it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import prepare_grammar_corpus

import charlm.runtime as runtime
from charlm.errors import CharlmError
from charlm.runtime import configure_threads
from charlm.runtime.stop import EXIT_PEER_FAILED

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
SMALL = [
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=24",
    "train.batch_size=4",
    "train.seq_len=8",
    "train.log_every=1",
]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--dynamo_backend", "no"]
CORES = len(os.sched_getaffinity(0))


def env(**extra: str) -> dict[str, str]:
    """This environment for a child process: the checkout first on PYTHONPATH, no stray launcher
    variables, warnings off."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in (*runtime.LOCAL_SIZE_VARIABLES, "OMP_NUM_THREADS") and not k.startswith("ACCELERATE_")
    }
    return {
        **clean,
        "PYTHONPATH": os.pathsep.join([str(REPO), clean.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


@pytest.fixture
def no_launcher(monkeypatch):
    """As if started without a launcher: no local size, no accelerate settings; threads put back after."""
    for name in [*runtime.LOCAL_SIZE_VARIABLES, "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU", "OMP_NUM_THREADS"]:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ threads


def test_threads_are_the_available_cores_divided_among_local_processes(no_launcher):
    assert configure_threads() == CORES == torch.get_num_threads()
    no_launcher.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))  # e.g. a CPU set of 8 cores
    assert configure_threads() == 8
    no_launcher.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun: 3 processes on this machine
    assert configure_threads() == 2 == torch.get_num_threads()
    no_launcher.delenv("LOCAL_WORLD_SIZE")
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "16")  # more processes than cores: one each
    assert configure_threads() == 1
    assert configure_threads(local_processes=1) == 8  # a command whose other processes only wait


def test_omp_num_threads_counts_only_without_a_launcher(no_launcher):
    no_launcher.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    no_launcher.setenv("OMP_NUM_THREADS", "3")  # the user's own setting: a command run without a launcher
    assert configure_threads() == 3
    no_launcher.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun sets OMP_NUM_THREADS=1 itself: not a choice
    assert configure_threads() == 4


def test_a_chosen_thread_count_wins(no_launcher):
    no_launcher.setenv("LOCAL_WORLD_SIZE", "2")
    assert configure_threads(3) == 3 == torch.get_num_threads()
    with pytest.raises(CharlmError, match="train.num_threads"):
        configure_threads(-1)


@pytest.mark.slow
def test_every_launcher_gets_the_available_cores_divided_among_its_processes(tmp_path):
    """Real processes: without a launcher, under `accelerate launch` with and without --cpu (which
    set OMP_NUM_THREADS), with two CPU processes, and with a CPU set of one core (taskset's way)."""
    module = ["-m", "charlm.runtime"]
    one_core = lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # noqa: E731
    cases = {
        "no launcher": ([sys.executable, *module], {}, None, [CORES]),
        "accelerate launch": ([*LAUNCH, "--num_processes", "1", *module], {}, None, [CORES]),
        "accelerate launch --cpu": ([*LAUNCH, "--cpu", "--num_processes", "1", *module], {}, None, [CORES]),
        # Without mpirun, accelerate's CPU launcher starts one process for --num_processes 2.
        "accelerate launch --cpu, 2": ([*LAUNCH, "--cpu", "--num_processes", "2", *module], {}, None, [CORES]),
        "2 CPU processes": (
            [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--main_process_port", "0", *module],
            {"ACCELERATE_USE_CPU": "true"},
            None,
            [max(1, CORES // 2)] * 2,
        ),
        "one core": ([*LAUNCH, "--num_processes", "1", *module], {}, one_core, [1]),
    }
    for name, (argv, extra, preexec, expected) in cases.items():
        done = subprocess.run(
            argv, env=env(**extra), preexec_fn=preexec, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert done.returncode == 0, (name, done.stderr[-3000:])
        # two processes write to one pipe: their lines may interleave, so read every report in the text
        seen = sorted(int(n) for n in re.findall(r"torch\.get_num_threads\(\) (\d+)", done.stdout))
        assert seen == expected, (name, done.stdout)


# ------------------------------------------------------------------------------ stopping together

# Two plain processes sharing a store, as a launcher's processes do; process 1 does what ACTION says.
# A stop signal is agreed on as training does: through a collective (here a wait on the store),
# which completes only if the other process is alive to take part.
PAIR_SCRIPT = """
import os, signal, sys, time
from datetime import timedelta
from torch.distributed import TCPStore
from charlm.runtime import StopRequest
rank = int(os.environ["RANK"])
store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timeout=timedelta(seconds=300))
code = 0
with StopRequest(2, rank) as stop:
    print("ready", flush=True)
    for _ in range(1200):  # a long phase without collectives (validation, say)
        if stop.signum:
            store.set(f"agree/{rank}", "1")
            store.wait([f"agree/{1 - rank}"])
            print("saved and stopped", flush=True)
            code = 128 + stop.signum
            break
        if rank == 1 and os.path.exists(os.environ["GO"]):
            if os.environ["ACTION"] == "raise":
                raise RuntimeError("the error of process 1")
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
sys.exit(code)
"""


def start_pair(tmp_path: Path, action: str) -> tuple[list[subprocess.Popen], Path, object]:
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # the launcher's store
    script, go = tmp_path / "pair.py", tmp_path / "go"
    script.write_text(PAIR_SCRIPT)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port), ACTION=action, GO=str(go)),
        )
        for rank in (0, 1)
    ]
    for process in processes:
        assert process.stdout.readline() == "ready\n", process.stderr.read()
    return processes, go, store


@pytest.mark.slow
def test_an_error_in_one_process_ends_the_other_quietly(tmp_path):
    (first, second), go, _store = start_pair(tmp_path, "raise")
    go.touch()
    assert second.wait(timeout=60) == 1
    assert first.wait(timeout=60) == EXIT_PEER_FAILED  # by itself: no launcher signals it here
    errors = second.stderr.read() + first.stderr.read()
    assert errors.count("RuntimeError: the error of process 1") == 1 and errors.count("Traceback") == 1, errors
    assert "stopping every process without saving: process 1 failed" in errors


@pytest.mark.slow
def test_a_killed_process_ends_the_other_once_the_launcher_signals_it(tmp_path):
    (first, second), go, _store = start_pair(tmp_path, "kill")
    go.touch()
    assert second.wait(timeout=60) == -signal.SIGKILL
    first.send_signal(signal.SIGTERM)  # what the launcher does to the others
    assert first.wait(timeout=60) == EXIT_PEER_FAILED
    output = first.stdout.read()
    assert "saved and stopped" not in output and "process 1 stopped responding" in first.stderr.read()


@pytest.mark.slow
def test_a_signal_to_live_processes_still_saves_and_stops(tmp_path):
    processes, _go, _store = start_pair(tmp_path, "none")
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert "saved and stopped" in process.stdout.read()


# ------------------------------------------------------------------------------ real training, 2 processes

# Fault injection for the training processes of one test: process CHARLM_FAIL_RANK raises (or is
# killed) in its CHARLM_FAIL_AT-th update ('train') or validation ('valid'); in the 'valid' case the
# other process's validation is made long, as on a real corpus, so it is busy without collectives.
SITECUSTOMIZE = """
import os
if os.environ.get("CHARLM_FAIL_AT") and os.environ.get("RANK") is not None:
    import signal, time
    import charlm.train.trainer as train
    fail_here = os.environ["RANK"] == os.environ["CHARLM_FAIL_RANK"]
    where = os.environ["CHARLM_FAIL_IN"]
    name = "sequence_loss" if where == "train" else "score_stream"
    original, calls = getattr(train, name), [0]
    def hooked(*args, **kwargs):
        calls[0] += 1
        if fail_here and calls[0] == int(os.environ["CHARLM_FAIL_AT"]):
            with open(os.environ["CHARLM_FAIL_STAMP"], "w") as f:
                f.write(repr(time.time()))
            if os.environ["CHARLM_FAIL_HOW"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure on process " + os.environ["RANK"])
        if not fail_here and where == "valid":
            for _ in range(1200):
                time.sleep(0.1)
        return original(*args, **kwargs)
    setattr(train, name, hooked)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepare_grammar_corpus(tmp_path_factory.mktemp("runtime-corpus"), 400, 40)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, where, rank", [("raise", "train", 1), ("raise", "valid", 1), ("kill", "valid", 1), ("raise", "train", 0)]
)
def test_a_failure_on_one_of_two_training_processes_stops_both(corpus, tmp_path, how, where, rank):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    stamp = tmp_path / "failed-at"
    extra = {
        "ACCELERATE_USE_CPU": "true",
        "CHARLM_FAIL_AT": "5" if where == "train" else "1",
        "CHARLM_FAIL_HOW": how,
        "CHARLM_FAIL_IN": where,
        "CHARLM_FAIL_RANK": str(rank),
        "CHARLM_FAIL_STAMP": str(stamp),
    }
    child_env = env(**extra)
    child_env["PYTHONPATH"] = os.pathsep.join([str(hook), child_env["PYTHONPATH"]])
    argv = [
        *LAUNCH,
        "--mixed_precision",
        "no",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        "0",
        str(REPO / "scripts" / "train.py"),
        "--config",
        str(TINY),
        "--data-dir",
        str(corpus),
        "--output-dir",
        str(tmp_path / "run"),
        *SMALL,
        "train.max_epochs=3",
    ]
    done = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=600)
    assert stamp.is_file(), done.stderr[-3000:]
    seconds = time.time() - float(stamp.read_text())
    output = done.stdout + done.stderr
    print(f"{how} in {where} on process {rank}: every process ended {seconds:.1f} s after the failure")
    assert done.returncode != 0
    assert f"{max(1, CORES // 2)} thread(s) each" in output  # the run summary: the cores, shared
    # Each survivor ended by itself: the launcher did not have to kill it after its 30 s grace.
    assert "forcefully exiting via 9" not in output and "exitcode  : -9 (pid" not in output.split("Root Cause")[0]
    survivor = 1 - rank
    assert f"[rank{survivor}]: Traceback" not in output and "Connection closed by peer" not in output, output[-4000:]
    if how == "raise":
        assert output.count(f"injected failure on process {rank}") == 1, output[-4000:]  # the error, once
    assert seconds < 60, output[-4000:]  # generous: the survivors end about 3 s after the failure


# ------------------------------------------------------------------------------ the command benchmark


@pytest.mark.slow
def test_command_benchmark_times_the_updates_of_each_command(corpus, tmp_path):
    from charlm.command_benchmark import main

    out = tmp_path / "bench.json"
    argv = [
        "--data-dir",
        str(corpus),
        "--config",
        str(TINY),
        "--warmup",
        "2",
        "--updates",
        "3",
        "--commands",
        "charlm",
        "launch-2cpu",
        "--json",
        str(out),
        *SMALL,
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    one, two = report["results"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["tokens"] == 3 * 4 * 8 and two["tokens"] == 3 * 4 * 8 * 2  # updates x batch x seq_len x processes
    for result in (one, two):
        assert result["tokens_per_sec"] == pytest.approx(result["tokens"] / result["seconds"], rel=0.01)
    assert one["threads"] == [CORES] and two["threads"] == [max(1, CORES // 2)] * 2


def test_the_commit_is_read_once_per_process(monkeypatch):
    """A run records the commit of the code it loaded, even if the checkout moves on meanwhile."""
    import subprocess

    from charlm.runtime import source_commit

    first = source_commit()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("git asked again")))
    assert source_commit() == first
