"""Files written whole or not at all: freezelab's one atomic write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[Path], None]) -> None:
    """Write `data` (bytes, or a function that writes a given path) to `path` through a temporary
    file beside it and a rename: an interrupted write leaves the old file or none, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
        if not isinstance(data, bytes):
            data(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_json(o: Any) -> Any:
    """JSON fallback for numpy arrays and scalars."""
    if isinstance(o, (np.ndarray, np.generic)):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, newline: bool = False) -> None:
    """`obj` as JSON (numpy values as lists), atomically; `newline` ends the file with one."""
    text = json.dumps(obj, indent=indent, default=to_json) + ("\n" if newline else "")
    atomic_write(path, text.encode())
