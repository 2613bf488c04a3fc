"""Writing a prepared corpus: a temporary directory renamed into place, arrays written as they come.

Everything is written into a hidden sibling of the output directory, ``.NAME.XXXXXXXX.tmp``, and
renamed to it at the end, so no run ever leaves a half-written corpus: a failing run deletes its
temporary directory; a run killed outright (SIGKILL, a crash) cannot, and the next run into the
same output directory deletes it instead. It knows the directory is abandoned because nobody
holds the lock on the ``.lock`` file inside (a lock dies with its process).

A split's word ids are written to its ``.npy`` file as they are encoded; the header, which holds
the length, is completed when the split is done (numpy pads it to the same size for any length).
An error of the disk (full, read-only, gone) is a CharlmError naming the file.
"""

from __future__ import annotations

import fcntl
import glob
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from charlm.corpus import ID_DTYPE
from charlm.errors import CharlmError

LOCK_FILE = ".lock"
RENUMBER_CHUNK = 1 << 20  # ids per step when renumbering a written array


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a one-line CharlmError."""
    try:
        yield
    except OSError as err:
        raise CharlmError(
            f"could not write {path} ({err.strerror or err}); free some disk space or choose another --output-dir"
        ) from None


class TemporaryCorpus:
    """The temporary directory a corpus is written into (``with``: deleted if anything fails;
    :meth:`move_into_place` renames it to the output directory). Entering also deletes the
    abandoned temporary directories of killed runs into the same output directory."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.path = output_dir  # set on entering
        self._lock = -1

    def __enter__(self) -> "TemporaryCorpus":
        remove_abandoned(self.output_dir)
        # Lock first, under a name the cleaning above ignores, then take the .tmp name: a .tmp
        # directory is never seen unlocked while its run lives.
        new = _sibling_dir(self.output_dir, "new")
        self._lock = os.open(new / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.path = new.with_name(new.name.removesuffix(".new") + ".tmp")
        os.replace(new, self.path)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.path.exists() and self.path != self.output_dir:
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)

    def move_into_place(self) -> None:
        """Rename the finished directory to the output directory, replacing what is there."""
        with disk_errors(self.output_dir):
            (self.path / LOCK_FILE).unlink()  # the corpus does not keep it; the lock stays held
            move_into_place(self.path, self.output_dir)
        self.path = self.output_dir


def remove_abandoned(output_dir: Path) -> None:
    """Delete the temporary directories of killed runs into ``output_dir`` (unlocked ones)."""
    for candidate in output_dir.parent.glob(f".{glob.escape(output_dir.name)}.*.tmp"):
        try:
            lock = os.open(candidate / LOCK_FILE, os.O_RDWR)
        except OSError:  # no lock file: not a temporary corpus directory
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: its run is alive
            continue
        else:
            shutil.rmtree(candidate, ignore_errors=True)
        finally:
            os.close(lock)


def move_into_place(tmp_dir: Path, output_dir: Path) -> None:
    """Rename the finished ``tmp_dir`` to ``output_dir``, replacing what is there."""
    if not output_dir.exists():
        os.replace(tmp_dir, output_dir)
        return
    old = _sibling_dir(output_dir, "old.tmp")
    os.replace(output_dir, old / output_dir.name)  # move the old corpus aside, then swap
    try:
        os.replace(tmp_dir, output_dir)
    except BaseException:
        os.replace(old / output_dir.name, output_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _sibling_dir(path: Path, suffix: str) -> Path:
    """A new, empty, hidden directory beside ``path`` (created with the usual permissions)."""
    while True:
        candidate = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{suffix}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


# ---------------------------------------------------------------------------------------------
# Word-id arrays
# ---------------------------------------------------------------------------------------------


def npy_header(length: int) -> bytes:
    """The .npy header of ``length`` ids, byte for byte what ``np.save`` writes."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(ID_DTYPE)), "fortran_order": False, "shape": (length,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


HEADER_BYTES = len(npy_header(0))


class IdArrayWriter:
    """A split's ``.npy`` file of word ids, appended to as they come (``with``: the header is
    completed on leaving); ``length`` is the number of ids written."""

    def __init__(self, path: Path):
        self.path = path
        self.length = 0
        with disk_errors(path):
            self._file = open(path, "wb")
            self._file.write(npy_header(0))

    def __enter__(self) -> "IdArrayWriter":
        return self

    def write(self, ids: np.ndarray) -> None:
        with disk_errors(self.path):
            self._file.write(np.ascontiguousarray(ids, dtype=ID_DTYPE).data)
        self.length += len(ids)

    def __exit__(self, kind, error, traceback) -> None:
        with disk_errors(self.path), self._file:
            header = npy_header(self.length)
            if len(header) != HEADER_BYTES:  # numpy leaves room for 21 digits
                raise RuntimeError(f"the .npy header of {self.length} ids does not fit")
            self._file.seek(0)
            self._file.write(header)


def renumber(path: Path, stretches: list[tuple[np.ndarray, int]], unk_id: int, progress=None) -> int:
    """Renumber the ``.npy`` file in place, a chunk at a time: each ``(table, length)`` stretch
    (in file order) replaces its ids ``i`` by ``table[i]``. Returns how many became ``unk_id``."""
    unk = 0
    with disk_errors(path), open(path, "r+b") as file:
        position = HEADER_BYTES
        for table, length in stretches:
            for start in range(0, length, RENUMBER_CHUNK):
                file.seek(position)
                ids = table[np.fromfile(file, dtype=ID_DTYPE, count=min(RENUMBER_CHUNK, length - start))]
                unk += int(np.count_nonzero(ids == unk_id))
                file.seek(position)
                file.write(ids.data)
                position += ids.nbytes
                if progress is not None:
                    progress.update(len(ids))
    return unk
