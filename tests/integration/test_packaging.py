"""The built wheel is a complete install: its configs, its console script, nothing from the clone.

The wheel is built from a copy of the sources (a build writes ``build/`` and ``*.egg-info`` beside
them), installed into a fresh virtual environment that borrows torch and the other dependencies
from the folders this interpreter finds them in (a ``.pth`` file naming them, so nothing is
downloaded; this works whether the tests run in a virtualenv or in a system interpreter, where
``--system-site-packages`` would reach only the base interpreter's packages), and run from
another directory with ``PYTHONPATH`` cleared, so that neither the checkout nor an editable
install of it can stand in for the wheel (a ``.pth`` file's folders are added as they are: the
``.pth`` files inside them, an editable install's among them, are not run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers_model import synthetic_lines, write_lines

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "charlm", "data_prep"]


def run(argv: list, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            tmp_path / "wheels",
            source,
        ],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "wheels").glob("charlm-*.whl")
    return wheel


def dependency_folders() -> list[str]:
    """The folders this interpreter imports installed packages from (torch's, tqdm's... )."""
    import accelerate
    import torch
    import tqdm

    folders = {str(Path(module.__file__).resolve().parents[1]) for module in (accelerate, torch, tqdm)}
    folders |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()}
    return sorted(folders)


@pytest.mark.slow
def test_wheel_installs_and_trains_from_a_shipped_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    wheel = build_wheel(tmp_path, env)
    shipped = {Path(name).name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("charlm/configs/")}
    assert {"tiny.yaml", "ptb-char-small.yaml", "ptb-char-large.yaml"} <= shipped

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python, charlm = venv / "bin" / "python", venv / "bin" / "charlm"
    venv_site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip()
    )
    (venv_site / "dependencies.pth").write_text("\n".join(dependency_folders()) + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
        tmp_path,
        env,
    )

    work = tmp_path / "elsewhere"  # neither the checkout nor the venv
    work.mkdir()
    location = run([python, "-c", "import charlm; print(charlm.__file__)"], work, env).strip()
    assert Path(location).is_relative_to(venv), f"charlm was imported from {location}, not from the wheel"
    inherited = "from charlm.config import load_config; print(load_config('ptb-char-small-rhn-depth8').model.core)"
    assert "depth=8" in run([python, "-c", inherited], work, env)  # its base: ptb-char-small-rhn, in the wheel too

    files = [
        write_lines(work / f"{split}.txt", synthetic_lines(n, seed))
        for split, n, seed in (("train", 300, 1), ("valid", 40, 2), ("test", 40, 3))
    ]
    run(
        [
            charlm,
            "prepare",
            "--train-file",
            files[0],
            "--valid-file",
            files[1],
            "--test-file",
            files[2],
            "--output-dir",
            "data",
        ],
        work,
        env,
    )
    run(
        [
            charlm,
            "train",
            "--config",
            "tiny",
            "--data-dir",
            "data",
            "--output-dir",
            "run",
            "model.hidden_size=16",
            "train.batch_size=4",
            "train.max_steps=3",
        ],
        work,
        env,
    )
    model = json.loads((work / "run" / "config.json").read_text())["model"]
    assert model["kernel_widths"] == [1, 2, 3, 4] and model["hidden_size"] == 16  # tiny.yaml, then the override
    assert (work / "run" / "best" / "model.safetensors").is_file()
