"""The README's Python block runs as written.

The block loads ``demo/run/best``, where ``scripts/demo.sh`` leaves its model. The test runs the
block unchanged, in a fresh interpreter, from a folder where the tiny model the tests train sits at
that path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers_model import trained  # noqa: F401  (a fixture)

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block(markdown: str) -> str:
    """The one ```python block of ``markdown``."""
    (block,) = re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    return block


def test_readme_python_block_runs_as_written(trained, tmp_path):
    code = python_block(README.read_text(encoding="utf-8"))
    assert 'charlm.from_pretrained("demo/run/best")' in code
    shutil.copytree(trained.model_dir, tmp_path / "demo" / "run" / "best")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    perplexity, sample, similarity = float(lines[0]), "\n".join(lines[1:-1]), float(lines[-1])
    assert 1.0 < perplexity < 1e6
    assert sample.startswith("the function returns ") and len(sample.split()) > 3
    assert -1.0 <= similarity <= 1.0
