"""Atomic file output: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds.

    A crash or exception never leaves a file at ``path`` that looks complete: the
    temporary file is removed on error, and the rename is atomic on POSIX filesystems.
    The block may also create a folder at the temporary path: it replaces a folder at ``path``
    (removed just before the rename), so a folder of outputs appears complete or not at all.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name. Its folder is created if missing.

    Examples
    --------
    >>> with atomic_output("out.h5") as tmp:  # doctest: +SKIP
    ...     write_everything(tmp)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        if temporary.is_dir() and final.is_dir():
            shutil.rmtree(final)
        os.replace(temporary, final)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary)
        else:
            temporary.unlink(missing_ok=True)
