"""Surviving kills and bad states: SIGKILL at random moments, SIGINT/SIGTERM, NaN, a full disk,
planted pickles and truncated files.

The kill tests run real training processes (``python -m charlm.cli train``) on a tiny corpus and
compare the end result with an uninterrupted run bit for bit (CPU, same seed, same thread count).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import prepare_grammar_corpus
from helpers_model import assert_one_line_error, run_cli, tiny_config
from safetensors.torch import load_file, save_file

import charlm.checkpoint
import charlm.state
import charlm.train
import charlm.train.trainer
from charlm.checkpoint import export_model, load_model, recover_export
from charlm.cli import main
from charlm.config import CONFIG_DIR
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.model import CharLM
from charlm.state import COMPLETE_MARKER, complete_checkpoints, recover_checkpoints

REPO = Path(__file__).resolve().parents[2]
TINY = CONFIG_DIR / "tiny.yaml"
# Tiny model, frequent checkpoints (so kills land inside checkpoint writes too), dropout on (so the
# random-number-generator states must be restored exactly).
RUN = [
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=24",
    "model.dropout=0.2",
    "train.batch_size=4",
    "train.seq_len=8",
    "train.max_epochs=2",
    "train.checkpoint_every_steps=2",
    "train.log_every=5",
]
# The same thread count in this process and in the training processes: the numbers are then identical.
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    return prepare_grammar_corpus(root, 200, 20)


def train_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(TINY), "--data-dir", str(corpus), "--output-dir", str(output_dir), *RUN, *extra]


def start(corpus: Path, output_dir: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    """A training process; its stdout and stderr go to files beside the output folder."""
    out, err = output_dir.with_suffix(".out"), output_dir.with_suffix(".err")
    with open(out, "w") as o, open(err, "w") as e:
        process = subprocess.Popen(
            [sys.executable, "-m", "charlm.cli", *train_args(corpus, output_dir, *extra)],
            stdout=o,
            stderr=e,
            env=ENV,
            cwd=REPO,
        )
    return process, out, err


def error_line(code: int, err: str) -> str:
    """A CharlmError during training: status 2, no traceback, and one line ``error: ...`` on stderr
    (the progress bars, closed first, are on lines of their own)."""
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def records(output_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (they differ between runs)."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "tokens_per_sec")} for line in lines]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict:
    """An uninterrupted run (a real process): its final weights, best/ weights and metrics records."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    process, out, err = start(corpus, output_dir)
    assert process.wait(timeout=300) == 0, err.read_text()[-3000:]
    return {
        "final": weights(complete_checkpoints(output_dir)[-1]),
        "best": weights(output_dir / "best"),
        "records": records(output_dir),
    }


def assert_equals_reference(output_dir: Path, reference: dict) -> None:
    assert_same_weights(weights(complete_checkpoints(output_dir)[-1]), reference["final"])
    assert_same_weights(weights(output_dir / "best"), reference["best"])
    assert records(output_dir) == reference["records"]
    leftovers = [
        p.name
        for p in [*output_dir.iterdir(), *(output_dir / "checkpoints").iterdir()]
        if p.name.endswith((".tmp", ".old"))
    ]
    assert not leftovers


# ------------------------------------------------------------------------------ (a) SIGKILL


def newest_step(output_dir: Path) -> int:
    """The highest update number among the checkpoint folders, complete or being written."""
    try:
        names = os.listdir(output_dir / "checkpoints")
    except FileNotFoundError:
        return 0
    return max((int(name[5:14]) for name in names if name.startswith("step-")), default=0)


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(corpus, reference, tmp_path):
    """Three SIGKILLs, each a random moment (0-30 ms) after the run reaches a random update (a
    checkpoint every 2 updates, 49 updates per epoch): inside checkpoint writes, between updates,
    in validation, export and metrics writing. Then a last --resume runs to the end."""
    rng = np.random.default_rng(1234)
    targets = sorted(rng.choice(np.arange(2, 97), size=3, replace=False).tolist())
    output_dir = tmp_path / "run"
    for kill, target in enumerate(targets):
        process, out, err = start(corpus, output_dir, *(["--resume"] if kill else []))
        while newest_step(output_dir) < target:
            assert process.poll() is None, f"training exited before update {target}: {err.read_text()[-2000:]}"
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.03))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    process, out, err = start(corpus, output_dir, "--resume")
    assert process.wait(timeout=300) == 0, err.read_text()[-3000:]
    assert_equals_reference(output_dir, reference)


# ------------------------------------------------------------------------------ (b) SIGINT, SIGTERM


def test_sigint_saves_state_says_how_to_resume_and_resume_equals_uninterrupted(corpus, reference, tmp_path):
    output_dir = tmp_path / "run"
    process, out, err = start(corpus, output_dir)
    while newest_step(output_dir) < 20:  # well into epoch 1
        assert process.poll() is None, err.read_text()[-2000:]
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 128 + signal.SIGINT, err.read_text()[-3000:]
    message = [line for line in err.read_text().splitlines() if "stopped by SIGINT" in line]
    assert len(message) == 1 and "--resume" in message[0] and "Traceback" not in err.read_text()
    (state,) = complete_checkpoints(output_dir)[-1:]
    progress = json.loads((state / "progress.json").read_text())
    assert f"after update {progress['global_step']};" in message[0]
    assert str(state) in message[0]

    process, out, err = start(corpus, output_dir, "--resume")
    assert process.wait(timeout=300) == 0, err.read_text()[-3000:]
    assert f"update {progress['global_step']})" in out.read_text()  # "resuming from ... (epoch E, update N)"
    assert_equals_reference(output_dir, reference)


def test_sigterm_stops_after_the_current_update_with_status_143(corpus, tmp_path, monkeypatch, capsys):
    """In-process and deterministic: SIGTERM arrives during update 7; the state of update 7 is saved."""
    calls = {"n": 0}
    real_loss = charlm.train.trainer.sequence_loss

    def loss_then_signal(nll):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(nll)

    monkeypatch.setattr(charlm.train.trainer, "sequence_loss", loss_then_signal)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(capsys, *train_args(corpus, tmp_path / "run"))
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM after update 7;" in err and "--resume" in err
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step-000000006", "step-000000007"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back

    monkeypatch.setattr(charlm.train.trainer, "sequence_loss", real_loss)
    assert run_cli(capsys, *train_args(corpus, tmp_path / "run"), "--resume")[0] == 0
    assert run_cli(capsys, *train_args(corpus, tmp_path / "whole"))[0] == 0
    assert_same_weights(
        weights(complete_checkpoints(tmp_path / "run")[-1]), weights(complete_checkpoints(tmp_path / "whole")[-1])
    )


@pytest.mark.slow
def test_ctrl_c_under_accelerate_launch_with_two_processes(corpus, tmp_path):
    """Ctrl-C reaches every process (the terminal's process group; the launcher forwards it too):
    the processes agree on the stop, save one state and resume to the uninterrupted result."""
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--mixed_precision",
        "no",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--multi_gpu",
        "--num_processes",
        "2",
        str(REPO / "scripts" / "train.py"),
    ]
    env = {**ENV, "ACCELERATE_USE_CPU": "true"}

    def launch_run(output_dir: Path, *extra: str) -> subprocess.Popen:
        overrides = ["train.max_epochs=1", "train.batch_size=2", "model.dropout=0.0", *extra]  # 49 updates
        argv = [*launch, *train_args(corpus, output_dir, *overrides)[1:]]
        with open(output_dir.with_suffix(".err"), "w") as err:
            return subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO, start_new_session=True
            )

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert launch_run(whole).wait(timeout=300) == 0, whole.with_suffix(".err").read_text()[-3000:]
    process = launch_run(cut)
    while newest_step(cut) < 20:
        assert process.poll() is None, cut.with_suffix(".err").read_text()[-3000:]
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=120)  # the launcher's own status (torchrun reports the signal as a failure)
    err = cut.with_suffix(".err").read_text()
    message = [line for line in err.splitlines() if "stopped by SIGINT" in line]
    assert len(message) == 1, err[-3000:]  # printed once, by the main process
    state = complete_checkpoints(cut)[-1]
    assert str(state) in message[0] and int(state.name[5:]) % charlm.train.STOP_CHECK_EVERY == 0
    assert launch_run(cut, "--resume").wait(timeout=300) == 0, cut.with_suffix(".err").read_text()[-3000:]
    assert_same_weights(weights(complete_checkpoints(cut)[-1]), weights(complete_checkpoints(whole)[-1]))


# ------------------------------------------------------------------------------ (c) NaN


def all_finite(directory: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights(directory).values())


def test_nan_loss_names_the_update_and_never_reaches_a_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    """The loss turns NaN at update 5; checks run every 5 updates (log_every) and before each save."""
    calls = {"n": 0}
    real_loss = charlm.train.trainer.sequence_loss

    def nan_from_update_5(nll):
        calls["n"] += 1
        return real_loss(nll) * (float("nan") if calls["n"] >= 5 else 1.0)

    monkeypatch.setattr(charlm.train.trainer, "sequence_loss", nan_from_update_5)
    output_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.log_every=50"))
    line = error_line(code, err)
    assert "non-finite at update 5 " in line and "step-000000004" in line
    assert [p.name for p in complete_checkpoints(output_dir)] == ["step-000000002", "step-000000004"]
    assert all(all_finite(p) for p in complete_checkpoints(output_dir))
    assert not (output_dir / "best").exists()


def test_absurd_learning_rate_stops_cleanly_and_exports_no_nan(corpus, tmp_path, capsys):
    output_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.lr=1e6", "train.grad_clip=0"))
    line = error_line(code, err)
    assert "non-finite" in line or "not finite" in line
    assert all(all_finite(p) for p in complete_checkpoints(output_dir))
    assert not (output_dir / "best").exists() or all_finite(output_dir / "best")


def test_export_refuses_nan_weights(corpus, tmp_path):
    vocab = load_corpus(corpus)[0]
    model = CharLM(tiny_config(vocab), vocab.spellings())
    with torch.no_grad():
        model.output.decoder.bias[3] = float("nan")
    with pytest.raises(CharlmError, match="NaN or infinity"):
        export_model(model, vocab, tmp_path / "best")
    assert not (tmp_path / "best").exists() and not (tmp_path / "best.tmp").exists()


# ------------------------------------------------------------------------------ disk full, unwritable output


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_previous_state(corpus, tmp_path, monkeypatch, capsys):
    real_save = charlm.state.save_file
    calls = {"n": 0}

    def full_on_third_save(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_save(tensors, path)

    monkeypatch.setattr(charlm.state, "save_file", full_on_third_save)
    output_dir = tmp_path / "run"
    line = error_line(*run_cli(capsys, *train_args(corpus, output_dir))[::2])
    assert "No space left on device" in line and "step-000000004" in line and "--resume" in line
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["step-000000002", "step-000000004"]


def test_disk_full_during_an_export_keeps_the_previous_export(corpus, tmp_path, monkeypatch):
    vocab = load_corpus(corpus)[0]
    torch.manual_seed(0)
    export_model(CharLM(tiny_config(vocab), vocab.spellings()), vocab, tmp_path / "best")
    before = weights(tmp_path / "best")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(charlm.checkpoint, "save_file", full)
    with pytest.raises(CharlmError, match="No space left on device"):
        export_model(CharLM(tiny_config(vocab), vocab.spellings()), vocab, tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert_same_weights(weights(tmp_path / "best"), before)


def test_too_little_free_space_fails_before_any_work(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    line = assert_one_line_error(*run_cli(capsys, *train_args(corpus, tmp_path / "run"))[::2])
    assert "not enough free space" in line and "MB" in line
    assert not (tmp_path / "run").exists()


def test_unwritable_output_dir_fails_before_any_work(corpus, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    for output_dir in (tmp_path / "a-file", tmp_path / "a-file" / "run"):
        line = assert_one_line_error(*run_cli(capsys, *train_args(corpus, output_dir))[::2])
        assert "output directory" in line


# ------------------------------------------------------------------------------ crash states, recovered


def make_state(directory: Path, marker: bool = True, value: float = 0.0) -> Path:
    directory.mkdir(parents=True)
    save_file({"w": torch.full((2,), value)}, str(directory / "model.safetensors"))
    if marker:
        (directory / COMPLETE_MARKER).write_text("complete\n")
    return directory


def test_recover_checkpoints_after_a_kill_at_each_point_of_a_save(tmp_path):
    root = tmp_path / "checkpoints"
    make_state(root / "step-000000002")
    make_state(root / "step-000000004.tmp", marker=False)  # killed while writing
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000000002"]
    recover_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-000000002"]

    make_state(root / "step-000000004.tmp", value=4)  # killed after the marker, before the rename
    recover_checkpoints(tmp_path)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000000002", "step-000000004"]

    (root / "step-000000004").rename(root / "step-000000004.old")  # killed between the two renames of a re-save
    make_state(root / "step-000000004.tmp", value=5)
    recover_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-000000002", "step-000000004"]
    assert weights(root / "step-000000004")["w"][0] == 5  # the newer state wins

    (root / "step-000000002" / COMPLETE_MARKER).unlink()  # killed while deleting an old state
    recover_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-000000004"]


def test_recover_export_after_a_kill_at_each_point_of_an_export(tmp_path):
    best = tmp_path / "best"
    make_state(tmp_path / "best.tmp", marker=False)  # the first export, killed while writing
    recover_export(best)
    assert list(tmp_path.iterdir()) == []

    make_state(tmp_path / "best.old", value=1)  # killed between the renames: best.tmp is complete
    make_state(tmp_path / "best.tmp", value=2)
    recover_export(best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and weights(best)["w"][0] == 2

    make_state(tmp_path / "best.tmp", value=3)  # killed while writing a replacement
    recover_export(best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and weights(best)["w"][0] == 2


# ------------------------------------------------------------------------------ (d) planted pickles, (e) truncation


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def saved_run(corpus, tmp_path_factory) -> Path:
    """A short run with checkpoints and best/, to be copied and tampered with."""
    output_dir = tmp_path_factory.mktemp("saved") / "run"
    assert main(train_args(corpus, output_dir, "train.max_steps=3")) == 0
    return output_dir


def tampered_copy(saved_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    output_dir = tmp_path / "run"
    shutil.copytree(saved_run, output_dir)
    return output_dir, complete_checkpoints(output_dir)[-1]


@pytest.mark.parametrize(
    "planted, removed, error",
    [
        ("optimizer.bin", None, "refusing to load checkpoint"),
        ("random_states_0.pkl", None, "refusing to load checkpoint"),
        # where accelerate would fall back to reading a .bin: never read, the checkpoint is incomplete
        ("pytorch_model.bin", "model.safetensors", "is incomplete (no model.safetensors)"),
    ],
)
def test_planted_pickle_in_a_checkpoint_is_refused(saved_run, corpus, tmp_path, capsys, planted, removed, error):
    output_dir, state = tampered_copy(saved_run, tmp_path)
    marker = tmp_path / "code-ran"
    data = pickle.dumps(Payload(marker), protocol=2)
    pickle.loads(data)  # the payload is real: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    (state / planted).write_bytes(data)
    if removed:
        (state / removed).unlink()
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.max_steps=3"), "--resume")
    line = assert_one_line_error(code, err)
    assert str(state) in line and error in line
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_weights_in_a_checkpoint_are_one_line(saved_run, corpus, tmp_path, capsys, damage):
    output_dir, state = tampered_copy(saved_run, tmp_path)
    data = (state / "model.safetensors").read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[damage]
    (state / "model.safetensors").write_bytes(damaged)
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.max_steps=3"), "--resume")
    assert "cannot load checkpoint" in assert_one_line_error(code, err)


def test_truncated_hidden_state_or_progress_in_a_checkpoint_is_one_line(saved_run, corpus, tmp_path, capsys):
    output_dir, state = tampered_copy(saved_run, tmp_path)
    (state / "progress.json").write_text('{"epoch": 0, "chu')
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.max_steps=3"), "--resume")
    assert "cannot load checkpoint" in assert_one_line_error(code, err)
    output_dir, state = tampered_copy(saved_run, tmp_path / "again")
    (state / "hidden_0.safetensors").write_bytes(b"\x08\x00")
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, "train.max_steps=3"), "--resume")
    assert "cannot load checkpoint" in assert_one_line_error(code, err)


def test_damaged_weight_average_in_a_checkpoint_is_one_line(corpus, tmp_path, capsys):
    """train.average=asgd keeps its running mean in each state; averaging starts after epoch 2 here."""
    asgd = ["train.average=asgd", "train.decay_start_epoch=2", "train.decay_threshold=1000"]
    output_dir = tmp_path / "run"
    assert main(train_args(corpus, output_dir, *asgd, "train.max_epochs=3")) == 0
    state = complete_checkpoints(output_dir)[-1]
    (state / "average.safetensors").write_bytes(b"\x08\x00")
    capsys.readouterr()
    code, _, err = run_cli(capsys, *train_args(corpus, output_dir, *asgd, "train.max_epochs=4"), "--resume")
    line = assert_one_line_error(code, err)
    assert "cannot load the weight average" in line and str(state) in line


def test_resume_with_another_model_size_is_one_line(saved_run, corpus, tmp_path, capsys):
    output_dir, _ = tampered_copy(saved_run, tmp_path)
    code, _, err = run_cli(
        capsys, *train_args(corpus, output_dir, "train.max_steps=3", "model.hidden_size=16"), "--resume"
    )
    line = assert_one_line_error(code, err)
    # The field that differs, its two values, and the run's own config to resume with.
    assert "model.hidden_size=" in line and "asks for 16" in line
    assert f"--config {output_dir / 'config.json'}" in line


def test_truncated_weights_in_best_are_one_line(saved_run, corpus, tmp_path, capsys):
    output_dir, _ = tampered_copy(saved_run, tmp_path)
    best = output_dir / "best" / "model.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    code, _, err = run_cli(capsys, "perplexity", "--checkpoint", output_dir / "best", "--data-dir", corpus)
    assert "truncated or corrupt" in assert_one_line_error(code, err)


def test_exported_model_loads_without_any_pickle(saved_run, monkeypatch):
    """Loading best/ never calls pickle (safetensors and JSON only)."""

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model, vocab = load_model(saved_run / "best")
    assert len(vocab) == model.config.vocab_size
