"""Exported models: a directory that explains itself, and loads without unpickling anything.

    best/
      model.safetensors   the weights (``state_dict`` of the unwrapped model)
      config.json         {"model": ModelConfig fields, "train": ..., "charlm_version": ...}
      vocab.json          the vocabulary (words, characters, spellings' length, tokenizer kind)
      tokenizer.json | spm.model   the tokenizer the corpus was prepared with

The directory is written under a temporary name and renamed into place, so a reader (or a crash)
never sees half an export.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import charlm
from charlm.config import ModelConfig, model_config_from_json, save_json
from charlm.errors import CharlmError
from charlm.model import CharLM
from charlm.vocab import Vocabulary

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def export_model(model: CharLM, vocab: Vocabulary, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (unwrapped, not compiled) and ``vocab`` to ``directory`` atomically."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_FILE))
    save_json({"model": asdict(model.config), **(extra or {}), "charlm_version": charlm.__version__}, tmp / CONFIG_FILE)
    vocab.save(tmp)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary]:
    """Load an exported model directory; every problem is a one-line :class:`CharlmError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CharlmError(f"model directory {directory} does not exist; pass the best/ folder of a training run")
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
    if config.input != "word" and vocab.max_word_length != config.max_word_length:
        raise CharlmError(
            f"{directory}: vocabulary spells words with {vocab.max_word_length} characters, the model expects "
            f"{config.max_word_length}; the vocabulary files do not belong to these weights"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CharlmError(f"{weights} cannot be read ({err}); the file is truncated or corrupt, re-export it") from None
    model = CharLM(config, vocab.spellings() if config.input != "word" else None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CharlmError(f"{weights} does not match {directory / CONFIG_FILE}: {first}") from None
    return model.to(device).eval(), vocab


def read_config(directory: str | Path) -> ModelConfig:
    return model_config_from_json(Path(directory) / CONFIG_FILE)
