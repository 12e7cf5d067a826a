"""Writing figures as one reproducible PDF, and checking which items a caller asks to draw."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from nsp_pipeline.core.atomic import atomic_output


def write_pages(path: str | os.PathLike, title: str, pages: Iterable[Figure]) -> Path:
    """Save ``pages`` to the PDF ``path`` atomically, without a timestamp (reruns give the same bytes)."""
    metadata = {"Title": title, "CreationDate": None}
    with atomic_output(path) as temporary, PdfPages(temporary, metadata=metadata) as pdf:
        for fig in pages:
            pdf.savefig(fig)
    return Path(path)


def checked_indices(what: str, given, count: int, of: str) -> list[int]:
    """``given`` (default all of ``range(count)``) checked to be ints in ``0..count−1``."""
    if given is None:
        return list(range(count))
    given = list(given)
    bad = [i for i in given if not isinstance(i, int | np.integer) or not 0 <= i < count]
    if bad or not given:
        raise ValueError(
            f"{what} indices {bad or given} out of range: expected a non-empty list of ints in "
            f"0..{count - 1} (the {count} {of})"
        )
    return [int(i) for i in given]
