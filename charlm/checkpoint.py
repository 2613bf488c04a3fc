"""Exported models: a directory that explains itself, and loads without unpickling anything.

    best/
      model.safetensors   the weights (``state_dict`` of the unwrapped model)
      config.json         {"model": ModelConfig fields, "train": ..., "charlm_version": ...}
      vocab.json          the vocabulary (words, characters, spellings' length, tokenizer kind)
      tokenizer.json | spm.model   the tokenizer the corpus was prepared with

The directory is written under a temporary name and renamed into place, so a reader (or a crash)
never sees half an export. Weights with a NaN or an infinity are refused: they are never exported.
``config.json`` also records a digest of the vocabulary, so vocabulary files copied in from another
corpus are refused at load time even when their sizes happen to match the weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import charlm
from charlm.config import model_config_from_json
from charlm.errors import CharlmError, error_reason
from charlm.io import save_json
from charlm.model import CharLM, upgrade_state_dict
from charlm.text import Vocabulary

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_DIGEST_KEY = "vocab_sha256"


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``state`` holding a NaN or an infinity."""
    return [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def vocab_digest(vocab: Vocabulary) -> str:
    """SHA-256 of the words and characters: what the weights' rows and spellings are indexed by."""
    text = json.dumps([vocab.words, vocab.chars, vocab.max_word_length], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def export_model(model: CharLM, vocab: Vocabulary, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (unwrapped, not compiled) and ``vocab`` to ``directory`` atomically.

    The files go to ``DIR.tmp``; then ``DIR`` is renamed to ``DIR.old``, ``DIR.tmp`` to ``DIR``, and
    ``DIR.old`` is deleted. A crash between the two renames leaves no ``DIR`` but a complete
    ``DIR.tmp``, which :func:`recover_export` puts in place. Non-finite weights and write failures
    (a full disk) are a CharlmError, and leave ``DIR`` as it was.
    """
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = non_finite(state)
    if bad:
        raise CharlmError(
            f"refusing to export to {directory}: {len(bad)} weight tensor(s) hold NaN or infinity (first: {bad[0]})"
        )
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    recover_export(directory)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / WEIGHTS_FILE))
        config = {
            "model": asdict(model.config),
            **(extra or {}),
            VOCAB_DIGEST_KEY: vocab_digest(vocab),
            "charlm_version": charlm.__version__,
        }
        save_json(config, tmp / CONFIG_FILE)
        vocab.save(tmp)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CharlmError(
            f"could not write the model to {tmp} ({error_reason(err)}); is the disk full? {directory} is unchanged"
        ) from None
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def recover_export(directory: str | Path) -> None:
    """Finish or undo an export cut short by a crash (see :func:`export_model`); a no-op otherwise."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    if not directory.exists():
        if old.exists() and tmp.is_dir():  # DIR.old is made only once DIR.tmp is complete
            tmp.rename(directory)
        elif old.exists():
            old.rename(directory)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)  # left over, or an export that did not finish writing


def training_record(directory: str | Path) -> dict[str, Any]:
    """The ``"run"`` record an exported model carries (config, parameters, epochs, seed, precision,
    device, commit: see :func:`charlm.runtime.run_record`); {} for a model exported before it was kept."""
    try:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config.get("run", {})


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary]:
    """Load an exported model from its directory (a hub id goes through :func:`charlm.hub.from_pretrained`,
    which finds the directory and calls this); every problem is a one-line :class:`CharlmError`."""
    directory = Path(directory)
    if not directory.is_dir():
        if directory.with_name(directory.name + ".old").is_dir():
            raise CharlmError(
                f"model directory {directory} is missing: its export was interrupted; run the training "
                "again with --resume to finish it"
            )
        raise CharlmError(
            f"model directory {directory} does not exist; pass the best/ folder of a training run "
            "or a Hugging Face hub id (owner/name)"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CharlmError(f"{weights} is missing: {directory} is not a complete exported model (re-export or retrain)")
    config = model_config_from_json(directory / CONFIG_FILE)
    vocab = Vocabulary.load(directory)
    if len(vocab) != config.vocab_size:
        raise CharlmError(
            f"{directory}: vocabulary has {len(vocab)} words but the model was built for {config.vocab_size}; "
            "the vocabulary files do not belong to these weights"
        )
    if config.uses_spellings and (vocab.max_word_length, len(vocab.chars)) != (
        config.max_word_length,
        config.char_vocab_size,
    ):
        raise CharlmError(
            f"{directory}: vocabulary spells words with {len(vocab.chars)} characters in {vocab.max_word_length} "
            f"positions, the model expects {config.char_vocab_size} in {config.max_word_length}; the vocabulary files "
            "do not belong to these weights"
        )
    digest = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get(VOCAB_DIGEST_KEY)
    if digest is not None and digest != vocab_digest(vocab):
        raise CharlmError(
            f"{directory}: the vocabulary files are not the ones these weights were trained with "
            f"(their digest differs from {VOCAB_DIGEST_KEY} in {CONFIG_FILE}); copy back the originals"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CharlmError(
            f"{weights} cannot be read ({error_reason(err)}); the file is truncated or corrupt, re-export it"
        ) from None
    bad = non_finite(state)
    if bad:
        raise CharlmError(f"{weights} holds NaN or infinite weights ({bad[0]}); it is not a usable model")
    model = CharLM(config, vocab.spellings() if config.uses_spellings else None)
    try:
        model.load_state_dict(upgrade_state_dict(state))
    except RuntimeError as err:
        raise CharlmError(f"{weights} does not match {directory / CONFIG_FILE}: {error_reason(err)}") from None
    return model.to(device).eval(), vocab
