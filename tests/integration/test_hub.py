"""Hub sharing without the hub: local directories, a hand-made hub cache, and a stand-in for HfApi.

The cache is laid out as ``huggingface_hub`` lays it out (``HF_HUB_CACHE/models--owner--name/
snapshots/<commit>/...`` and ``refs/main``) and read with ``HF_HUB_OFFLINE=1``, so no test reaches
the network.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from helpers_model import assert_one_line_error, run_cli, tiny_config, trained  # noqa: F401  (trained: a fixture)

import charlm
from charlm.checkpoint import load_model
from charlm.errors import CharlmError
from charlm.hub import SHARED_FILES, push_to_hub, resolve_model_dir
from charlm.model import CharLM
from charlm.nn import TiedOptions

REPO_ID = "someone/charlm-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """A hub cache holding ``model_dir`` as the main revision of model repository ``repo_id``."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def offline_cache(trained, tmp_path, monkeypatch) -> Path:
    """``HF_HUB_CACHE`` with the trained model as ``someone/charlm-tiny``, offline mode on."""
    cache = fake_hub_cache(tmp_path / "hub", REPO_ID, trained.model_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- resolving and loading


def test_a_local_directory_is_itself(trained, offline_cache):
    assert resolve_model_dir(trained.model_dir) == trained.model_dir
    assert resolve_model_dir("runs/nowhere/best") == Path("runs/nowhere/best")  # a path, never a hub id
    assert resolve_model_dir(".") == Path(".")


def test_an_interrupted_local_export_is_not_looked_up_on_the_hub(trained, offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained.model_dir, tmp_path / "best.old")  # "best" could be a hub id; its .old says it is local
    with pytest.raises(CharlmError, match="model directory best is missing: its export was interrupted"):
        load_model("best")


def test_hub_id_from_the_local_cache(trained, offline_cache):
    assert resolve_model_dir(REPO_ID) == offline_cache / "models--someone--charlm-tiny" / "snapshots" / COMMIT
    model, vocab = charlm.from_pretrained(REPO_ID)
    local_model, local_vocab = load_model(trained.model_dir)
    assert same_weights(model, local_model) and vocab.words == local_vocab.words
    assert not model.training


def test_a_local_directory_wins_over_the_hub_id_it_spells(trained, offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained.unk_model_dir, tmp_path / REPO_ID)
    assert resolve_model_dir(REPO_ID) == Path(REPO_ID)
    model, _ = charlm.from_pretrained(REPO_ID)
    assert same_weights(model, load_model(trained.unk_model_dir)[0])


def test_neither_local_nor_cached_names_both(offline_cache):
    with pytest.raises(CharlmError) as err:
        charlm.from_pretrained("someone/not-there")
    message = str(err.value)
    assert "\n" not in message
    assert "neither a local model directory nor a Hugging Face hub model" in message
    assert "best/ folder of a training run" in message
    with pytest.raises(CharlmError, match="runs/nowhere/best does not exist; .*or a Hugging Face hub id"):
        charlm.from_pretrained("runs/nowhere/best")


def test_an_exported_tied_model_loads_with_the_tie_in_place(trained, tmp_path):
    """The tied output's table is saved once (as the input's word embedding) and shared again on load."""
    _, vocab = load_model(trained.model_dir)
    torch.manual_seed(0)
    config = tiny_config(vocab, input="both", word_embed_dim=32, output=TiedOptions())
    model = CharLM(config, vocab.spellings()).eval()
    charlm.save_pretrained(model, vocab, tmp_path / "tied")
    again, _ = charlm.from_pretrained(str(tmp_path / "tied"))
    assert again.output.weight is again.encoder.word_embedding.weight
    assert same_weights(model, again)
    words = torch.randint(0, len(vocab), (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(again(words, again.initial_state(2))[0], model(words, model.initial_state(2))[0])


def test_save_pretrained_round_trip(trained, tmp_path):
    model, vocab = load_model(trained.model_dir)
    assert charlm.save_pretrained(model, vocab, tmp_path / "exported") == tmp_path / "exported"
    again, again_vocab = charlm.from_pretrained(str(tmp_path / "exported"))
    assert same_weights(model, again) and again_vocab.words == vocab.words
    assert charlm.from_pretrained is charlm.hub.from_pretrained


def test_every_command_takes_a_hub_id(trained, tmp_path):
    """`charlm perplexity --checkpoint owner/name` in a fresh process, through the real environment
    variables: the same number as from the directory."""
    cache = fake_hub_cache(tmp_path / "hub", REPO_ID, trained.model_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    numbers = []
    for ref in (REPO_ID, str(trained.model_dir)):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "charlm.cli",
                "perplexity",
                "--checkpoint",
                ref,
                "--text-file",
                str(trained.text_file),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        numbers.append(done.stdout.split(" | ")[0])
    assert numbers[0] == numbers[1] and numbers[0].startswith("perplexity ")


# ----------------------------------------------------------------------------- push


class FakeHfApi:
    """Records what would be sent: the repository made and the files ``upload_folder`` would pick."""

    calls: list[tuple[str, dict]] = []
    uploaded: list[str] = []
    fail: Exception | None = None

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **options):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", {"repo_id": repo_id, **options}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **options):
        self.calls.append(("upload_folder", {"repo_id": repo_id, "allow_patterns": allow_patterns, **options}))
        names = sorted(p.name for p in Path(folder_path).iterdir() if p.is_file())
        FakeHfApi.uploaded = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in allow_patterns)]


@pytest.fixture
def fake_api(monkeypatch):
    FakeHfApi.calls, FakeHfApi.uploaded, FakeHfApi.fail = [], [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


@pytest.fixture
def model_with_strays(trained, tmp_path) -> Path:
    """The trained model with files that must never be shared beside it (pickles, a torch .bin)."""
    directory = tmp_path / "best"
    shutil.copytree(trained.model_dir, directory)
    for stray in ("optimizer.pkl", "pytorch_model.bin", "notes.txt"):
        (directory / stray).write_bytes(b"\x80\x04not shared")
    return directory


def test_push_uploads_safetensors_and_json_only(model_with_strays, fake_api):
    url = push_to_hub(model_with_strays, REPO_ID, private=True, token="t0ken")
    assert url == f"https://huggingface.co/{REPO_ID}"
    kinds = [kind for kind, _ in fake_api.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert fake_api.calls[0][1] == {"token": "t0ken"}
    assert fake_api.calls[1][1] == {"repo_id": REPO_ID, "private": True, "exist_ok": True}
    assert fake_api.uploaded == ["config.json", "model.safetensors", "tokenizer.json", "vocab.json"]
    assert set(fake_api.uploaded) <= set(SHARED_FILES)
    assert not [n for n in fake_api.uploaded if n.endswith((".pkl", ".bin", ".pt", ".pth"))]


def test_push_command(model_with_strays, fake_api, capsys):
    code, out, err = run_cli(capsys, "push", "--checkpoint", model_with_strays, "--repo-id", REPO_ID)
    assert code == 0, err
    assert f"to https://huggingface.co/{REPO_ID}" in out and "optimizer.pkl" not in out
    assert fake_api.calls[1][1]["private"] is False


def test_push_refuses_a_broken_model_before_sending_anything(model_with_strays, fake_api, capsys):
    (model_with_strays / "model.safetensors").unlink()
    code, _, err = run_cli(capsys, "push", "--checkpoint", model_with_strays, "--repo-id", REPO_ID)
    assert "model.safetensors is missing" in assert_one_line_error(code, err)
    assert fake_api.calls == []


@pytest.mark.parametrize(
    "repo_id, error", [("not a/valid id", "is not a hub repository id"), (REPO_ID, "could not upload")]
)
def test_push_errors_are_one_line(model_with_strays, fake_api, capsys, repo_id, error):
    fake_api.fail = OSError("401 Client Error: Unauthorized\nmore detail")
    code, _, err = run_cli(capsys, "push", "--checkpoint", model_with_strays, "--repo-id", repo_id)
    line = assert_one_line_error(code, err)
    assert error in line


def test_the_model_class_loads_and_saves_like_the_package_functions(trained, offline_cache, tmp_path):
    """CharLM.from_pretrained / save_pretrained: the same model as charlm.from_pretrained, from a
    directory or a hub id, and a saved copy that loads to the same weights."""
    from charlm.model import CharLM

    model, vocab = CharLM.from_pretrained(str(trained.model_dir))
    reference, _ = charlm.from_pretrained(str(trained.model_dir))
    cached, _ = CharLM.from_pretrained("someone/charlm-tiny")
    model.save_pretrained(str(tmp_path / "copy"), vocab)
    copy, copy_vocab = CharLM.from_pretrained(str(tmp_path / "copy"))
    assert copy_vocab.words == vocab.words
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
        assert torch.equal(cached.state_dict()[name], tensor)
        assert torch.equal(copy.state_dict()[name], tensor)
