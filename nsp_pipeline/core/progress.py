"""Progress bars for long interactive work, silent in logs.

Bars are drawn with tqdm only when standard error is a terminal (``disable=None``), so the
workflow's job logs and captured test output stay clean; ``NSP_PROGRESS=0`` turns them off
and ``NSP_PROGRESS=1`` forces them on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _disabled() -> bool | None:
    setting = os.environ.get("NSP_PROGRESS", "")
    if setting == "0":
        return True
    if setting == "1":
        return False
    return None  # tqdm: on for a terminal, off otherwise


def progress(
    iterable: Iterable[T], description: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Iterate over ``iterable`` with a progress bar named ``description``.

    Parameters
    ----------
    iterable : iterable
        What to iterate over.
    description : str
        Shown left of the bar (e.g. ``"graph edges"``).
    total : int, optional
        Number of items, where ``len(iterable)`` is not available.
    unit : str
        Name of one item (``"layer"``, ``"epoch"``, ``"page"``).
    """
    return iter(tqdm(iterable, desc=description, total=total, unit=unit, disable=_disabled(), leave=False))


def progress_bar(total: int, description: str, unit: str = "it") -> tqdm:
    """A bar advanced by hand (``bar.update(n)``; a context manager), for work without an iterable."""
    return tqdm(total=total, desc=description, unit=unit, disable=_disabled(), leave=False)
