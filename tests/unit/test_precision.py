"""charlm.runtime.precision: ``auto`` times fp32 against bf16 on the device and caches the answer.

The decision is tested with a stubbed measurement (0.7x: fp32; 2.5x: bf16), the measurement
with a step whose speed is known, the cache by counting measurements, and the run header and
the untouched training through a real ``charlm train``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import prepare_grammar_corpus
from safetensors.torch import load_file

import charlm.runtime.launcher as launcher
import charlm.runtime.precision as precision
from charlm.cli import main
from charlm.errors import CharlmError
from charlm.runtime import choose_precision

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No launcher settings, and a cache folder of this test's own."""
    for name in ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


class Calls(list):
    """The candidates measured, in order; ``speedup`` is what the stub answers."""

    speedup = 1.0


@pytest.fixture
def measured(clean):
    """Stub the measurement: it runs the step once in each precision (as the real one does, so a
    step that would disturb training shows it) and answers ``Calls.speedup``."""
    calls = Calls()

    def fake(step, candidate, seconds=None):
        calls.append(candidate)
        step("no")
        step(candidate)
        return calls.speedup

    clean.setattr(precision, "measure_speedup", fake)
    return calls


def never_called(name):
    raise AssertionError("the step must not run when the answer is known")


# ------------------------------------------------------------------------------ the decision


@pytest.mark.parametrize("speedup, expected", [(0.7, "no"), (1.01, "no"), (1.2, "bf16"), (2.5, "bf16")])
def test_auto_takes_the_faster_precision_as_measured(measured, speedup, expected):
    measured.speedup = speedup
    choice = choose_precision("auto", "cpu", step=lambda name: None, shapes="m")
    assert choice.precision == expected
    assert choice.reason == f"auto: bf16 ran {speedup:.2f}x fp32 here, measured now"
    assert choice.describe().startswith("fp32 (" if expected == "no" else "bf16 (")
    assert measured == ["bf16"]


def test_explicit_values_and_accelerates_choice_win_without_measuring(measured, clean, tmp_path):
    for value in ("no", "bf16", "fp16"):
        clean.setenv("ACCELERATE_MIXED_PRECISION", "bf16" if value != "bf16" else "no")
        assert choose_precision(value, "cpu", step=never_called).precision == value  # the config first
    clean.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # never the launcher's default: a choice
    assert choose_precision("auto", "cpu", step=never_called) == precision.PrecisionChoice(
        "fp16", "accelerate's setting"
    )

    # 'no' is also what the launcher writes when given nothing: its command line tells them apart.
    clean.setenv("ACCELERATE_MIXED_PRECISION", "no")
    clean.setattr("accelerate.commands.config.default_config_file", str(tmp_path / "none.yaml"))
    measured.speedup = 2.0
    for options, expected in [
        (["--num_processes", "1"], "bf16"),  # the launcher's default: auto decides
        (["--mixed_precision", "no", "--num_processes", "1"], "no"),
        (["--config_file", "my.yaml"], "no"),
    ]:
        clean.setattr(launcher, "accelerate_launch_arguments", lambda: launched_with(*options))
        assert choose_precision("auto", "cpu", step=lambda name: None).precision == expected, options
    (tmp_path / "default.yaml").write_text("mixed_precision: 'no'\n")  # written by `accelerate config`
    clean.setattr("accelerate.commands.config.default_config_file", str(tmp_path / "default.yaml"))
    clean.setattr(launcher, "accelerate_launch_arguments", lambda: launched_with("--num_processes", "1"))
    assert choose_precision("auto", "cpu", step=never_called).precision == "no"
    clean.setattr(launcher, "accelerate_launch_arguments", lambda: None)  # set by hand, no launcher
    assert choose_precision("auto", "cpu", step=never_called).precision == "no"
    assert measured == ["bf16"]  # measured once: the answer was cached

    assert choose_precision("fp32", "cpu", step=never_called).precision == "no"  # a user's name for it
    with pytest.raises(CharlmError, match="must be one of auto, no, fp32, bf16, fp16"):
        choose_precision("fp64", "cpu")


def test_the_candidate_is_bf16_on_a_cpu_and_fp16_on_a_gpu_without_bf16(monkeypatch):
    assert precision.low_precision_candidate("cpu") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert precision.low_precision_candidate("cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.low_precision_candidate("cuda") == "bf16"
    assert precision.low_precision_candidate("mps") is None


def test_the_cache_holds_one_answer_per_machine_torch_threads_and_shape(measured, tmp_path):
    measured.speedup = 0.7
    first = choose_precision("auto", "cpu", step=lambda name: None, shapes="LSTM 2x300, 20 x 35")
    again = choose_precision("auto", "cpu", step=never_called, shapes="LSTM 2x300, 20 x 35")
    assert (first.precision, again.precision) == ("no", "no")
    assert again.reason == "auto: bf16 ran 0.70x fp32 here, measured before"
    entries = json.loads((tmp_path / "cache" / "precision.json").read_text())
    (key,) = entries
    assert entries[key] == {"bf16": 0.7}
    assert (
        precision.device_name("cpu") in key and torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
    )

    measured.speedup = 2.0
    assert (
        choose_precision("auto", "cpu", step=lambda name: None, shapes="RHN 345").precision == "bf16"
    )  # another shape
    (tmp_path / "cache" / "precision.json").write_text("{not json")  # damaged: measured again, rewritten
    assert choose_precision("auto", "cpu", step=lambda name: None, shapes="RHN 345").reason.endswith("measured now")
    assert measured == ["bf16"] * 3
    assert len(json.loads((tmp_path / "cache" / "precision.json").read_text())) == 1


def test_without_a_step_auto_is_the_cached_answer_or_fp32(measured):
    assert choose_precision("auto", "cpu", shapes="m") == precision.PrecisionChoice(
        "no", "auto: bf16 not measured for this model yet"
    )
    measured.speedup = 3.0
    choose_precision("auto", "cpu", step=lambda name: None, shapes="m")
    assert choose_precision("auto", "cpu", shapes="m").precision == "bf16"


def test_an_unwritable_cache_costs_only_a_measurement(measured, clean, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    clean.setenv("CHARLM_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    measured.speedup = 2.0
    assert choose_precision("auto", "cpu", step=lambda name: None).precision == "bf16"


# ------------------------------------------------------------------------------ the measurement


def test_measurement_is_the_ratio_of_step_times_and_leaves_the_random_state_alone(clean):
    delays = {"no": 0.004, "bf16": 0.002}
    seen: list[str] = []

    def step(name):
        seen.append(name)
        torch.rand(3)  # the real step draws dropout masks
        time.sleep(delays[name])

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    clean.setattr(precision, "PROBE_SECONDS", 0.05)
    choice = choose_precision("auto", "cpu", step=step)
    assert torch.equal(torch.rand(3), expected)
    speedup = float(choice.reason.split(" ran ")[1].split("x")[0])
    assert 1.3 < speedup < 3.0 and choice.precision == "bf16"
    assert seen[:2] == ["no", "bf16"] and seen.count("no") == seen.count("bf16") >= 4  # warm-up + at least 3 each


def test_device_name_names_the_cpu_and_its_bf16_instructions():
    name = precision.device_name("cpu")
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    assert (
        name and ("amx_bf16" in name) == ("amx_bf16" in flags) and ("avx512_bf16" in name) == ("avx512_bf16" in flags)
    )


# ------------------------------------------------------------------------------ a real run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepare_grammar_corpus(tmp_path_factory.mktemp("corpus"), 200, 20)


SMALL = [
    "--config",
    str(REPO / "configs" / "tiny.yaml"),
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=24",
    "train.batch_size=4",
    "train.seq_len=8",
    "train.max_steps=6",
    "train.num_threads=1",
]


def train(corpus, output_dir, *overrides):
    assert main(["train", "--data-dir", str(corpus), "--output-dir", str(output_dir), *SMALL, *overrides]) == 0
    return load_file(str(output_dir / "best" / "model.safetensors"))


def test_the_run_header_says_what_was_measured_and_the_probe_leaves_training_alone(measured, corpus, tmp_path, capsys):
    measured.speedup = 0.7
    probed = train(corpus, tmp_path / "auto")
    assert "precision fp32 (auto: bf16 ran 0.70x fp32 here, measured now)" in capsys.readouterr().out
    train(corpus, tmp_path / "auto-again")
    assert "precision fp32 (auto: bf16 ran 0.70x fp32 here, measured before)" in capsys.readouterr().out
    plain = train(corpus, tmp_path / "fp32", "train.mixed_precision=no")
    assert "precision fp32 (set by train.mixed_precision)" in capsys.readouterr().out
    assert probed.keys() == plain.keys() and all(torch.equal(probed[k], plain[k]) for k in plain)
    assert measured == ["bf16"]


def test_the_real_probe_times_the_models_own_training_step(clean, corpus, tmp_path, capsys):
    train(corpus, tmp_path / "run", "train.mixed_precision=auto")
    header = capsys.readouterr().out
    assert "precision " in header and "(auto: bf16 ran " in header and "x fp32 here, measured now)" in header
    (entry,) = json.loads((tmp_path / "cache" / "precision.json").read_text()).values()
    assert 0.05 < entry["bf16"] < 20  # a real ratio of two step times


def launched_with(*options: str) -> argparse.Namespace:
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser().parse_args([*options, "scripts/train.py", "--config", "x.yaml"])


def test_the_launchers_command_line_is_recognised():
    after = launcher.after_launch_command
    assert after(["/usr/bin/python", "-m", "accelerate.commands.launch", "--cpu", "t.py"]) == ["--cpu", "t.py"]
    assert after(["/usr/bin/python3", "/venv/bin/accelerate", "launch", "t.py", "--x"]) == ["t.py", "--x"]
    assert after(["/venv/bin/accelerate-launch", "--num_processes", "2", "t.py"]) == ["--num_processes", "2", "t.py"]
    assert after(["/usr/bin/python", "scripts/train.py", "--config", "launch"]) is None
    assert after(["/venv/bin/accelerate", "config"]) is None


@pytest.mark.slow
def test_precision_under_the_real_launcher(tmp_path):
    """`accelerate launch` without --mixed_precision leaves the choice to auto; with it, it wins."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ACCELERATE_")}
    env.update(
        HF_HOME=str(tmp_path),
        CHARLM_CACHE_DIR=str(tmp_path / "cache"),  # no accelerate config file, no cache
        PYTHONPATH=str(REPO),
        PYTHONWARNINGS="ignore",
    )
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--num_processes",
        "1",
    ]
    for options, expected in [
        ([], "no (auto: bf16 not measured"),
        (["--mixed_precision", "bf16"], "bf16 (accelerate's"),
    ]:
        done = subprocess.run(
            [*launch, *options, "-m", "charlm.runtime"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"precision auto -> {expected}" in done.stdout, (options, done.stdout)
