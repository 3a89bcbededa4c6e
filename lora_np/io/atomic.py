"""Atomic file writes: write a temporary file beside the target, flush it to disk, then rename.

``os.replace`` is atomic on POSIX and Windows, so a reader (or a crash) sees either the old file
or the new one, never half of the new one.

The temporary file is opened with mode 0o666, like ``open(path, "w")``, so the process's umask
decides who may read the result (0644 under the usual 022); a file that already exists keeps its
mode. (``tempfile.mkstemp`` would make every file 0600, unreadable to other users.)
"""

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path

_CHUNK = 1 << 20


def _write_chunks(f, data):
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        f.write(view[start:start + _CHUNK])


def _create_temp_beside(path):
    """A new, uniquely named file in ``path``'s directory: (file descriptor, name)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue


def atomic_write_parts(path, parts):
    """Replace ``path`` with the concatenation of ``parts`` (bytes-like objects, taken one at a time
    from any iterable, so a writer can stream a file far larger than any one part) atomically: on
    any failure, in writing or in producing the parts, the old file is left untouched and no
    temporary file remains."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = _create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            for data in parts:
                _write_chunks(f, data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Replace ``path`` with ``data`` atomically; on any failure the old file is left untouched."""
    atomic_write_parts(path, (data,))


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path, what="JSON file"):
    """Parse a JSON object from ``path``: FileNotFoundError if absent, ValueError if not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} must hold a JSON object; got {type(obj).__name__}")
    return obj


@contextlib.contextmanager
def atomic_path(path):
    """A fresh temporary path beside ``path`` for a writer that opens files by name (gguf.GGUFWriter):
    renamed onto ``path`` when the block ends, removed if it raises, so ``path`` is never half-written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp = _create_temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
