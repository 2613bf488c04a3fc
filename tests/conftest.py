"""Shared fixtures: the real corpora beside the checkout, and a prepared PTB corpus.

The corpora live in ``../shared/data`` next to the repository (CI has them); they are never
copied into the repository. Tests that need them are skipped when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MISSING_CORPORA = f"shared corpora not found at {SHARED_DATA}"


def pytest_terminal_summary(terminalreporter) -> None:
    """Say at the end, not only in the skip list, that tests did not run for want of the corpora."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MISSING_CORPORA in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped, NOT passed: {MISSING_CORPORA} "
            "(put the PTB / Tiny Shakespeare / datas corpora there to run them)",
            yellow=True,
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: ptb/, datas/{cs,de,es,fr}/, tinyshakespeare/."""
    if not SHARED_DATA.is_dir():
        pytest.skip(MISSING_CORPORA)
    return SHARED_DATA


@pytest.fixture(scope="session")
def ptb_files(shared_data: Path) -> dict[str, Path]:
    """The Mikolov PTB text files by split name."""
    return {split: shared_data / "ptb" / f"{split}.txt" for split in ("train", "valid", "test")}


@pytest.fixture(scope="session")
def prepared_ptb(tmp_path_factory: pytest.TempPathFactory, ptb_files: dict[str, Path]) -> Path:
    """PTB prepared once per test session with the default options (10k words, <eos> per line).

    Open it with ``charlm.corpus.load_corpus``; do not modify it.
    """
    from data_prep.prepare import PrepareConfig, prepare_corpus

    output_dir = tmp_path_factory.mktemp("prepared") / "ptb"
    config = PrepareConfig(
        train_file=str(ptb_files["train"]),
        valid_file=str(ptb_files["valid"]),
        test_file=str(ptb_files["test"]),
        output_dir=str(output_dir),
    )
    prepare_corpus(config, verbose=False)
    return output_dir


def prepare_grammar_corpus(root: Path, train_lines: int, eval_lines: int) -> Path:
    """Write sentences of a small grammar ("the big cat sat on the mat") to ``root`` and prepare
    them; returns the prepared corpus directory. Learnable structure, 21 words, seconds to train."""
    import numpy as np

    from charlm.cli import main

    rng = np.random.default_rng(0)
    adjectives, nouns = ["big", "small", "red", "blue"], ["cat", "dog", "bird", "fox", "cow"]
    verbs, places = ["sat", "ran", "slept", "walked"], ["mat", "park", "home", "barn"]
    for split, n in (("train", train_lines), ("valid", eval_lines), ("test", eval_lines)):
        lines = [
            f"the {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} on the {rng.choice(places)}"
            for _ in range(n)
        ]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    out = root / "prepared"
    assert (
        main(
            [
                "prepare",
                "--train-file",
                str(root / "train.txt"),
                "--valid-file",
                str(root / "valid.txt"),
                "--test-file",
                str(root / "test.txt"),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session", autouse=True)
def precision_cache(tmp_path_factory: pytest.TempPathFactory):
    """``train.mixed_precision=auto`` caches what it measured in the user's cache folder: the tests
    (and the commands they start) use one of their own, shared by the session."""
    import os

    previous = os.environ.get("CHARLM_CACHE_DIR")
    os.environ["CHARLM_CACHE_DIR"] = str(tmp_path_factory.mktemp("charlm-cache"))
    yield
    if previous is None:
        os.environ.pop("CHARLM_CACHE_DIR", None)
    else:
        os.environ["CHARLM_CACHE_DIR"] = previous
