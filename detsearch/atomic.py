"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

`replace_directory` does the same for a directory written beside its target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _file_mode() -> int:
    """0o666 less the umask (mkstemp creates 0o600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (where the platform allows opening directories)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds the file there is
    fsynced and renamed onto ``path``, when it fails the temporary file is removed.

    ``suffix`` lets writers that choose a format by extension (matplotlib) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, _file_mode())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, **dump_kwargs: Any) -> Path:
    """Writes ``json.dumps(payload, **dump_kwargs)`` atomically (default: indent 2)."""
    dump_kwargs.setdefault("indent", 2)
    return write_bytes_atomic(path, json.dumps(payload, **dump_kwargs).encode())


def replace_directory(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Moves the complete directory ``tmp`` onto ``target``, replacing what is there.

    ``tmp`` must be on the same file system as ``target`` (write it beside ``target``). An
    existing ``target`` is first renamed aside, then ``tmp`` is renamed in, then the aside copy
    is removed: at every moment ``target`` is absent, the old directory, or the whole new one,
    never a mix or a part (unlike removing ``target`` and then renaming). If renaming ``tmp`` in
    fails, the old directory is renamed back.

    Returns:
      ``target`` as a Path.
    """
    tmp, target = Path(tmp), Path(target)
    if not tmp.is_dir():
        raise FileNotFoundError(f"{tmp} is not a directory")
    aside = None
    if target.exists() or target.is_symlink():
        handle = tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)
        aside = Path(handle)
        os.rmdir(aside)  # only the unique name was needed
        os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        if aside is not None:
            os.replace(aside, target)
        raise
    _fsync_directory(target.parent)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    return target
