"""Sharing models through the Hugging Face hub: a model is a local directory or a hub id.

    charlm push --checkpoint runs/ptb-char-small/best --repo-id you/charlm-ptb-char-small
    charlm perplexity --checkpoint you/charlm-ptb-char-small --data-dir data/ptb
    model, vocab = charlm.from_pretrained("you/charlm-ptb-char-small")

A hub repository holds an exported model directory as it is (:mod:`charlm.checkpoint`): the
weights in safetensors, ``config.json``, ``vocab.json`` and the tokenizer's own file. Only those
files travel, either way: :func:`push_to_hub` uploads nothing else from the directory and a
download fetches nothing else from the repository, so no pickle is ever shared or loaded.

:func:`resolve_model_dir` decides what a reference means, and every command's ``--checkpoint``
goes through it (:func:`charlm.checkpoint.load_model` calls it):

1. a path that exists is a local model, whatever it looks like;
2. anything that cannot be a hub id (``runs/x/best``, ``./best``, an absolute path) stays a local
   path, and loading it says what is wrong with it;
3. otherwise (``owner/name``) it is a hub id: downloaded with ``huggingface_hub.snapshot_download``
   into the hub's cache (``HF_HUB_CACHE``), or, when the hub cannot be reached or ``HF_HUB_OFFLINE=1``,
   taken from that cache (``local_files_only=True``). Neither is a one-line error naming both.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import charlm
from charlm.checkpoint import CONFIG_FILE, WEIGHTS_FILE, export_model, load_model
from charlm.errors import CharlmError, error_reason
from charlm.text import SENTENCEPIECE_FILE, VOCAB_FILE, WORD_TOKENIZER_FILE, Vocabulary

if TYPE_CHECKING:
    from charlm.model import CharLM

SHARED_FILES = (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, WORD_TOKENIZER_FILE, SENTENCEPIECE_FILE)
"""The files of an exported model, the only ones pushed or downloaded (safetensors, JSON, and a
sentencepiece model, which is a protobuf)."""


# ----------------------------------------------------------------------------- resolving a reference


def could_be_hub_id(ref: str) -> bool:
    """Whether ``ref`` is a valid hub repository id (``name`` or ``owner/name``)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(ref)
    except ValueError:  # HFValidationError
        return False
    return True


def resolve_model_dir(ref: str | Path) -> Path:
    """The local directory of a model reference: a directory, or a hub id downloaded or cached.

    A reference that is not a directory and cannot be a hub id is returned as the path it names,
    for :func:`charlm.checkpoint.load_model` to report (missing, an export cut short, ...).
    """
    path = Path(ref)
    if path.exists() or not could_be_hub_id(str(ref)):
        return path
    if path.with_name(path.name + ".old").exists():  # a local export cut short: load_model explains
        return path
    return download(str(ref))


def download(repo_id: str) -> Path:
    """The model files of hub repository ``repo_id``, downloaded (once) or from the local cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=list(SHARED_FILES), library_name="charlm", library_version=charlm.__version__
            )
        )
    except Exception as err:  # no network, no such repository, no access: what the cache holds may still do
        reason = error_reason(err)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(SHARED_FILES), local_files_only=True))
    except (OSError, ValueError):
        raise CharlmError(
            f"{repo_id} is neither a local model directory nor a Hugging Face hub model that could be downloaded or "
            f"found in the local cache ({reason}); pass the best/ folder of a training run, or the id (owner/name) "
            "of a hub model while online"
        ) from None


# ----------------------------------------------------------------------------- the Python API


def save_pretrained(model: CharLM, vocab: Vocabulary, directory: str | Path) -> Path:
    """Export ``model`` and ``vocab`` to ``directory`` (atomically; see :func:`charlm.checkpoint.export_model`)."""
    export_model(model, vocab, directory)
    return Path(directory)


def from_pretrained(ref: str | Path, device: str = "cpu") -> tuple[CharLM, Vocabulary]:
    """``(model, vocab)`` of an exported model: a local directory or a hub id (``owner/name``).

    The model is on ``device`` in eval mode; every problem is a one-line :class:`CharlmError`.
    """
    return load_model(resolve_model_dir(ref), device)


def shared_files(directory: Path) -> list[str]:
    """The files of :data:`SHARED_FILES` that ``directory`` holds, in that order."""
    return [name for name in SHARED_FILES if (directory / name).is_file()]


def push_to_hub(checkpoint_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the exported model in ``checkpoint_dir`` to hub repository ``repo_id``; returns its URL.

    The repository is created if needed (``private`` applies only then). The model is loaded
    first, so a directory that would not load (a missing or corrupt file, NaN weights, vocabulary
    files from elsewhere) is refused before anything is sent. Only :data:`SHARED_FILES` are
    uploaded. ``token`` defaults to the login of ``hf auth login`` or ``HF_TOKEN``.
    """
    from huggingface_hub import HfApi

    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise CharlmError(f"{directory} is not a directory; push the best/ folder of a training run")
    if not could_be_hub_id(repo_id):
        raise CharlmError(f"--repo-id {repo_id!r} is not a hub repository id; use owner/name, e.g. you/charlm-ptb")
    load_model(directory)
    files = shared_files(directory)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            allow_patterns=files,
            commit_message=f"Upload a charlm model ({', '.join(files)})",
        )
    except Exception as err:  # the network, the token, the permissions: reported in one line
        raise CharlmError(
            f"could not upload {directory} to {repo_id} ({error_reason(err)}); check the network "
            "and the token (`hf auth login`, or HF_TOKEN)"
        ) from None
    return str(url)


# ----------------------------------------------------------------------------- charlm push


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="the exported model directory to upload (the best/ folder of a training run)",
    )
    parser.add_argument(
        "--repo-id",
        required=True,
        metavar="OWNER/NAME",
        help="the hub repository to upload to (created if it does not exist)",
    )
    parser.add_argument("--private", action="store_true", help="create the repository as private")


def run(args: argparse.Namespace) -> int:
    url = push_to_hub(args.checkpoint, args.repo_id, private=args.private)
    files = shared_files(Path(args.checkpoint))
    print(f"uploaded {', '.join(files)} to {url}")
    print(f"load it with: charlm.from_pretrained({args.repo_id!r}), or --checkpoint {args.repo_id}")
    return 0
