"""Provenance attributes stored in every output file: versions, config hash and model checksum.

Nothing time- or host-dependent is recorded, so identical inputs give bit-identical files. The
module does not import torch: its version is read from the installed package's metadata, and the
model checksum is computed by the caller (:func:`nsp_pipeline.model.artifact.model_checksum`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import scipy

import nsp_pipeline


def config_hash(config: Mapping[str, Any] | None) -> str:
    """SHA-256 of the canonical JSON of a configuration.

    Parameters
    ----------
    config : mapping or None
        The configuration. Keys are sorted, separators are ``","`` and ``":"``, text is
        UTF-8, and values JSON cannot encode (e.g. paths) are written as ``str(value)``.

    Returns
    -------
    str
        Hex digest, or ``""`` if ``config`` is None.
    """
    if config is None:
        return ""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def torch_version() -> str:
    """Version of the installed torch, read without importing it (``""`` if it is not installed).

    It equals ``torch.__version__`` (e.g. ``"2.13.0+cpu"``): both come from the same build.
    """
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ""


def provenance(
    config: Mapping[str, Any] | None = None, model_checksum: str = "", **extra: object
) -> dict[str, str]:
    """Provenance attributes for an output file.

    Parameters
    ----------
    config : mapping or None
        Configuration the output was computed with (see :func:`config_hash`).
    model_checksum : str
        Checksum of the model the output was computed from
        (:func:`nsp_pipeline.model.artifact.model_checksum`); ``""`` if none.
    **extra
        Further attributes (e.g. ``dataset="mnist"``), stored as ``str(value)``.

    Returns
    -------
    dict of str to str
        ``nsp_pipeline_version``, ``python_version``, ``torch_version``, ``numpy_version``,
        ``scipy_version``, ``h5py_version``, ``hdf5_version``, ``config_hash``,
        ``model_checksum`` and the extras.

    Raises
    ------
    TypeError
        If ``model_checksum`` is not a string (e.g. a model: pass its checksum instead).
    ValueError
        If an extra attribute would replace one of the standard ones.
    """
    if not isinstance(model_checksum, str):
        raise TypeError(
            f"model_checksum is a {type(model_checksum).__name__}; expected the checksum string, "
            "nsp_pipeline.model.artifact.model_checksum(model)"
        )
    attributes = {
        "nsp_pipeline_version": nsp_pipeline.__version__,
        "python_version": platform.python_version(),
        "torch_version": torch_version(),
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "config_hash": config_hash(config),
        "model_checksum": model_checksum,
    }
    clashes = sorted(attributes.keys() & extra.keys())
    if clashes:
        raise ValueError(f"extra provenance attributes {clashes} would replace standard ones")
    return attributes | {key: str(value) for key, value in extra.items()}
