"""Atomic writes: a reader sees the old file (or directory) or the whole new one, never a part.

Files: `atomic_path`, `write_bytes_atomic`, `write_json_atomic`. Directories: build the new
content in `sibling_path(target, "tmp")`, then `replace_directory` it onto the target. Journals:
`append_line` (a record durable before the caller goes on).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _file_mode() -> int:
    """0o666 less the umask (mkstemp creates 0o600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


logger = logging.getLogger(__name__)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Makes a rename in ``directory`` durable (POSIX; elsewhere directories cannot be opened
    for fsync and this does nothing).

    Raises:
      OSError: the directory cannot be opened or synced.
    """
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_directory_if_possible(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_directory(directory)


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
        _fsync_directory_if_possible(path.parent)
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


def sibling_path(target: str | os.PathLike, tag: str) -> Path:
    """``<target>.<tag>-<pid>``: this process's temporary (``tag="tmp"``) or moved-aside
    (``tag="old"``) sibling of ``target``."""
    target = Path(target)
    return target.with_name(f"{target.name}.{tag}-{os.getpid()}")


def sibling_pattern(target: str | os.PathLike, tag: str) -> re.Pattern[str]:
    """Matches the names of `sibling_path` of ``target`` and ``tag`` of any process (group 1: the pid)."""
    return re.compile(re.escape(Path(target).name) + r"\." + re.escape(tag) + r"-(\d+)")


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_siblings(target: str | os.PathLike, tag: str) -> None:
    """Removes the `sibling_path` directories of ``target`` left by processes that no longer run."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    pattern = sibling_pattern(target, tag)
    for entry in os.scandir(parent):
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        logger.info("removing %s, left by an interrupted write (process %d)", entry.path, pid)
        shutil.rmtree(entry.path, ignore_errors=True)


def fresh_directory(target: str | os.PathLike) -> Path:
    """An empty ``sibling_path(target, "tmp")`` to build the new content of ``target`` in.

    Temporary siblings of dead processes are removed first; one of this process is emptied.
    """
    remove_stale_siblings(target, "tmp")
    tmp = sibling_path(target, "tmp")
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_directory(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Renames the complete directory ``tmp`` onto ``target`` (absent, empty or a directory).

    rename(2) cannot replace a non-empty directory: the old one is then renamed to
    ``sibling_path(target, "old")`` first and removed after; if the second rename fails, the
    old one is renamed back. A crash between the two renames leaves nothing at ``target`` and
    the old content at ``<target>.old-<pid>``; the next `replace_directory` onto ``target``
    removes it. Both renames are fsynced. Returns ``target``.
    """
    if not os.path.isdir(tmp):
        raise FileNotFoundError(f"{tmp}: no such directory to move onto {target}")
    tmp, target = Path(tmp), Path(target)
    try:
        os.replace(tmp, target)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
            raise
        old = sibling_path(target, "old")
        if os.path.lexists(old):
            shutil.rmtree(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        fsync_directory(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    fsync_directory(target.parent)
    remove_stale_siblings(target, "old")
    return target


def append_line(path: str | os.PathLike, line: bytes) -> None:
    """Appends ``line`` (one record, ending in a newline) to ``path`` with one ``write``, flushed
    and fsynced before returning. A kill can at worst leave a truncated last line; the next
    append starts on a new line, so it never swallows a record."""
    with open(path, "ab") as handle:
        if handle.tell() > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
