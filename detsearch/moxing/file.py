"""`mox.file`: file operations on local paths and every filesystem TensorFlow's gfile reaches."""

from __future__ import annotations


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(path)


def is_directory(path: str) -> bool:
    return _gfile().isdir(path)


def list_directory(path: str) -> list[str]:
    return _gfile().listdir(path)


def glob(pattern: str) -> list[str]:
    return _gfile().glob(pattern)


def make_dirs(path: str) -> None:
    _gfile().makedirs(path)


def remove(path: str, recursive: bool = False) -> None:
    if recursive:
        _gfile().rmtree(path)
    else:
        _gfile().remove(path)


def copy(src: str, dst: str, overwrite: bool = True) -> None:
    _gfile().copy(src, dst, overwrite=overwrite)


def read(path: str, binary: bool = False):
    with _gfile().GFile(path, "rb" if binary else "r") as f:
        return f.read()


def write(path: str, content, binary: bool = False) -> None:
    with _gfile().GFile(path, "wb" if binary else "w") as f:
        f.write(content)
