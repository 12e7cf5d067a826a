"""Provenance attributes stored in every output file: versions, config hash and model checksum.

Nothing time- or host-dependent is recorded, so identical inputs give bit-identical files.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import scipy
import torch

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


def model_checksum(model: torch.nn.Module | Mapping[str, torch.Tensor] | None) -> str:
    """SHA-256 of a model's weights and buffers.

    For every ``state_dict`` entry in key order, the digest covers
    ``"{key}\\0{dtype}\\0{comma-separated shape}\\0"`` (UTF-8) followed by the tensor's raw
    bytes in C order, taken on the CPU.

    Parameters
    ----------
    model : torch.nn.Module, mapping of str to torch.Tensor, or None
        The model, or its state dict.

    Returns
    -------
    str
        Hex digest, or ``""`` if ``model`` is None.

    Raises
    ------
    TypeError
        If a state dict entry is not a tensor.
    """
    if model is None:
        return ""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    digest = hashlib.sha256()
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu().contiguous()
        shape = ",".join(str(size) for size in tensor.shape)
        digest.update(f"{key}\0{tensor.dtype}\0{shape}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def provenance(
    config: Mapping[str, Any] | None = None,
    model: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
    **extra: object,
) -> dict[str, str]:
    """Provenance attributes for an output file.

    Parameters
    ----------
    config : mapping or None
        Configuration the output was computed with (see :func:`config_hash`).
    model : torch.nn.Module, state dict or None
        Model the output was computed from (see :func:`model_checksum`).
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
    ValueError
        If an extra attribute would replace one of the standard ones.
    """
    attributes = {
        "nsp_pipeline_version": nsp_pipeline.__version__,
        "python_version": platform.python_version(),
        "torch_version": str(torch.__version__),
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "config_hash": config_hash(config),
        "model_checksum": model_checksum(model),
    }
    clashes = sorted(attributes.keys() & extra.keys())
    if clashes:
        raise ValueError(f"extra provenance attributes {clashes} would replace standard ones")
    return attributes | {key: str(value) for key, value in extra.items()}
