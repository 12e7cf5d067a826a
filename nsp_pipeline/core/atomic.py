"""Atomic file output: write to a temporary name in the same folder, then rename.

The temporary name, ``.<name>.<host>.<pid>.tmp``, says which process writes it: a job killed
before its rename (SIGKILL, power loss) leaves it behind, and the next write of the same output
on the same host removes it once that process is gone (:func:`atomic_output`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: A temporary name: ``.``, the name it stands for, ``.<host>.<pid>.tmp`` (``.<pid>.tmp`` in older versions).
_TEMPORARY = re.compile(r"\.(?P<stands_for>.+)\.(?P<pid>\d+)\.tmp")


def _host() -> str:
    """This machine's name as written in temporary names (no ``/``)."""
    return socket.gethostname().replace("/", "_") or "localhost"


def _is_running(pid: int) -> bool:
    """Whether a process with this id exists on this machine (or may: another user's)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _is_stale(name: str, target: str, host: str) -> bool:
    """Whether ``name`` is a temporary of ``target`` (or of its temporaries) by a gone process of ``host``."""
    match = _TEMPORARY.fullmatch(name)
    if match is None:
        return False
    stands_for, pid = match["stands_for"], int(match["pid"])
    candidates = [stands_for]  # written without host by older versions
    if stands_for.endswith(f".{host}"):
        candidates.insert(0, stands_for.removesuffix(f".{host}"))
    if not any(candidate == target or _is_stale(candidate, target, host) for candidate in candidates):
        return False
    return pid != os.getpid() and not _is_running(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed processes of this host.

    A temporary ``.<name>.<host>.<pid>.tmp`` is stale when ``<host>`` is this machine and no
    process ``<pid>`` runs on it; temporaries of other hosts, of running processes and of this
    process are never touched. Temporaries of a temporary (an output written atomically into
    another's temporary name) count as temporaries of ``path``, and a name without host
    (``.<name>.<pid>.tmp``, written by earlier versions) as this host's.

    Parameters
    ----------
    path : str or os.PathLike
        An output (file or folder); it need not exist.

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    final, host = Path(path), _host()
    try:
        entries = list(final.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    stale = [
        entry
        for entry in entries
        if entry.name.startswith(".") and final.name in entry.name and _is_stale(entry.name, final.name, host)
    ]
    for entry in stale:
        _remove(entry)
    return stale


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds.

    A crash or exception never leaves a file at ``path`` that looks complete: the
    temporary file is removed on error, and the rename is atomic on POSIX filesystems.
    The block may also create a folder at the temporary path: it replaces a folder at ``path``
    (removed just before the rename), so a folder of outputs appears complete or not at all.
    Temporaries of ``path`` that killed jobs left are removed first
    (:func:`remove_stale_temporaries`).

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
    removed = remove_stale_temporaries(final)
    if removed:
        log.info(
            "removed temporaries of %s left by killed jobs: %s", final, [entry.name for entry in removed]
        )
    temporary = final.with_name(f".{final.name}.{_host()}.{os.getpid()}.tmp")
    try:
        yield temporary
        if temporary.is_dir() and final.is_dir():
            shutil.rmtree(final)
        os.replace(temporary, final)
    finally:
        _remove(temporary)


def check_outputs(
    inputs: Iterable[tuple[str, str | os.PathLike]], outputs: Iterable[tuple[str, str | os.PathLike]]
) -> None:
    """Refuse outputs that would overwrite an input or each other, or cannot be written as files.

    Parameters
    ----------
    inputs, outputs : iterable of (str, path)
        Each file with what it is, for messages (e.g. ``("activations", "act/0.h5")``). Outputs
        are files (written atomically, their folders created if missing).

    Raises
    ------
    FileExistsError
        If an output is an input (the same file, by any path or link), or two outputs are one file.
    IsADirectoryError
        If an output is an existing folder.
    NotADirectoryError
        If an output's folder, or a folder above it, is an existing file.
    """
    inputs, earlier = list(inputs), []
    for role, output in outputs:
        path = Path(output)
        if path.is_dir():
            raise IsADirectoryError(f"output {path} ({role}) is an existing folder; expected a file name")
        folder = next(folder for folder in path.absolute().parents if folder.exists())
        if not folder.is_dir():
            raise NotADirectoryError(f"output {path} ({role}) cannot be written: {folder} is a file")
        for kind, files in (("input", inputs), ("output", earlier)):
            for other_role, other in files:
                if _same_file(path, Path(other)):
                    raise FileExistsError(
                        f"output {path} ({role}) would overwrite {kind} {other} ({other_role}); "
                        "write it to another file"
                    )
        earlier.append((role, output))


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: by device and inode if both exist, else by resolved path."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()
