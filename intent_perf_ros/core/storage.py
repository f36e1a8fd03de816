"""On-disk arrays: memory-mapped training sets and compressed model snapshots, never pickled.

Training sets can outgrow RAM, so they live in ``.npy`` files that are memory-mapped and read a
chunk at a time. Model snapshots (factors, hyperparameters, inducing points) are dictionaries
of arrays written with ``np.savez_compressed``. Both formats are plain numpy: loading never
unpickles, so a file planted in the directory cannot run code, and the directory itself is
owner-only so nobody else can plant or swap one.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def owner_only_directory(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) with mode 0o700, or check an existing one is safe to load from.

    An existing directory must belong to this user and not be writable by group or others;
    it is not chmod-ed silently because it may be shared on purpose.
    """
    root = Path(path)
    if not root.exists():
        root.mkdir(mode=0o700, parents=True)
        root.chmod(0o700)  # mkdir's mode is filtered by the umask
        return root
    info = root.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{root} exists and is not a directory; choose another storage path")
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{root} is not owned by this user or is writable by others; run `chmod 700 {root}` "
            "as its owner or choose another storage path"
        )
    return root


class ArrayStore:
    """A directory of named arrays: ``<name>.npy`` memory-mapped, ``<name>.npz`` compressed.

    Names are single path components (letters, digits, ``_ . -``) so a name cannot escape the
    directory. Files are created 0o600; compressed files are written to a temporary name and
    renamed, so a crash never leaves a truncated snapshot under the real name.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = owner_only_directory(root)

    @property
    def root(self) -> Path:
        return self._root

    def create_mapped(self, name: str, shape: tuple[int, ...], dtype: DTypeLike = np.float64) -> np.memmap:
        """A new writable memory-mapped array (zero-filled, replacing any old one); fill it in
        slices and call ``flush()`` so other processes see the data."""
        path = self._path(name, ".npy")
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)

    def open_mapped(self, name: str, writable: bool = False) -> np.memmap:
        """An existing ``.npy`` mapped, not read: pages load as they are touched."""
        path = self._path(name, ".npy")
        if not path.exists():
            raise FileNotFoundError(f"no mapped array {name!r} in {self._root}; create it with create_mapped")
        return np.lib.format.open_memmap(path, mode="r+" if writable else "r")

    def save_compressed(self, name: str, arrays: Mapping[str, ArrayLike]) -> Path:
        """Write a dictionary of arrays (scalars and strings become 0-d arrays) compressed."""
        converted = {key: np.asarray(value) for key, value in arrays.items()}
        for key, value in converted.items():
            if value.dtype.hasobject:
                raise TypeError(
                    f"array {key!r} holds Python objects, which only pickle can store; "
                    "convert it to a numeric or string array"
                )
        path = self._path(name, ".npz")
        fd, temp = tempfile.mkstemp(dir=self._root, prefix=f".{name}.", suffix=".tmp")  # created 0o600
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **converted)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    def load_compressed(self, name: str) -> dict[str, np.ndarray]:
        """Read every array of a compressed file into memory (pickled content is refused)."""
        path = self._path(name, ".npz")
        if not path.exists():
            raise FileNotFoundError(
                f"no compressed object {name!r} in {self._root}; save it with save_compressed()"
            )
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    def _path(self, name: str, suffix: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"bad storage name {name!r}: use letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return self._root / f"{name}{suffix}"
