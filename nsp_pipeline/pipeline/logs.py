"""Log output of the pipeline's stages: one format, and a log file per workflow job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: Format of every log line (timestamp, level, module, message).
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def log_to(path: str) -> Iterator[None]:
    """Send the package's log messages, and any error with its traceback, to a log file.

    For the workflow's scripts: ``with log_to(snakemake.log[0]): stage(...)``.
    """
    logging.basicConfig(filename=path, level=logging.INFO, format=FORMAT, force=True)
    try:
        yield
    except Exception:
        logging.getLogger("nsp_pipeline").exception("failed")
        raise
