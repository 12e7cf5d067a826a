"""Datasets as tensors: every sample of a spec, or only the requested ones.

Specs are described in :mod:`nsp_pipeline.data.specs`. :func:`load_samples` reads only what it
is asked for: a ``.npy`` file is memory-mapped and only the requested rows are read; an HDF5
dataset is read at the requested indices (in increasing order, as HDF5 selections need, then put
back in the requested order); an image folder opens only the requested files. An ``.npz`` member
cannot be memory-mapped (it may be compressed), so its inputs array is read whole, once, and
indexed; the digits are in memory anyway. Labels, one integer per sample (a CSV file for image
folders), are always read and checked whole.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from nsp_pipeline.core.errors import shortened
from nsp_pipeline.data.specs import (
    IMAGE_SUFFIXES,
    DatasetError,
    array_suffix,
    dataset_size,
    digits_ids,
    digits_split,
    existing_path,
    h5_dataset,
    image_files,
    is_int,
    load_npy,
    read,
    read_h5,
    source_of,
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ready to feed a model.

    Parameters
    ----------
    inputs : torch.Tensor
        ``(N, *shape)`` float32, finite.
    labels : numpy.ndarray
        ``(N,)`` int64 class labels, ``-1`` where unknown.
    ids : numpy.ndarray
        ``(N,)`` int64 index of each sample in its source (file order, or the 1,797 digits).
    name : str
        Name used in messages and output files.
    """

    inputs: torch.Tensor
    labels: np.ndarray
    ids: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.ids)


def load_dataset(spec: Mapping, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load every sample of the dataset a spec describes.

    Parameters
    ----------
    spec : mapping
        Dataset spec (see :mod:`nsp_pipeline.data.specs`).
    input_shape : tuple of int, optional
        Per-sample shape the model expects. Images of another height and width are resized
        bilinearly; another number of channels or dimensions is an error.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown source, missing or unreadable file, wrong dimensionality, labels that do not
        match the inputs, NaN or Inf inputs, an empty folder, or a shape the model cannot take.
    """
    return _load(spec, None, input_shape)


def load_samples(
    spec: Mapping, positions: Sequence[int], input_shape: tuple[int, ...] | None = None
) -> Dataset:
    """Load only the samples at ``positions``, reading no more of the files than they need.

    The result equals rows ``positions`` of ``load_dataset(spec, input_shape)``, in the order
    given; the checks on the inputs (finite values, one image size) cover these samples only.

    Parameters
    ----------
    spec : mapping
        Dataset spec (see :mod:`nsp_pipeline.data.specs`).
    positions : sequence of int
        Positions of the samples in the dataset (e.g. from :func:`~nsp_pipeline.data.specs.select_samples`).
    input_shape : tuple of int, optional
        As in :func:`load_dataset`.

    Returns
    -------
    Dataset
        Its ``ids`` are the samples' indices in their source, as in :func:`load_dataset`.

    Raises
    ------
    DatasetError
        As :func:`load_dataset`, or if ``positions`` is not a non-empty sequence of integers.
    IndexError
        If a position is outside the dataset.
    """
    n = dataset_size(spec)
    described = _describe(spec, _name(spec))
    chosen = np.asarray(positions)
    if chosen.ndim != 1 or chosen.size == 0 or chosen.dtype.kind not in "iu":
        raise DatasetError(
            f"{described}: sample positions {positions!r}; expected a non-empty sequence of integers"
        )
    outside = chosen[(chosen < 0) | (chosen >= n)]
    if outside.size:
        raise IndexError(
            f"sample positions {shortened(outside.tolist())} outside {described} of {n} samples; "
            f"expected 0 <= position < {n}"
        )
    return _load(spec, chosen.astype(np.int64), input_shape)


def _load(spec: Mapping, positions: np.ndarray | None, input_shape: tuple[int, ...] | None) -> Dataset:
    """The samples at ``positions`` (all of them if ``None``) of a spec, as tensors."""
    source = source_of(spec)
    name = _name(spec)
    if source == "digits":
        inputs, labels, ids = _load_digits(spec, positions)
    elif source == "array":
        inputs, labels, ids = _load_array(spec, positions)
    else:
        inputs, labels, ids = _load_images(spec, positions, input_shape)
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    if inputs.ndim == 3:
        inputs = inputs.unsqueeze(1)
    if not torch.isfinite(inputs).all():
        bad = torch.nonzero((~torch.isfinite(inputs)).flatten(1).any(1)).flatten().numpy()
        bad = (bad if positions is None else positions[bad]).tolist()
        raise DatasetError(
            f"{_describe(spec, name)}: {len(bad)} samples contain NaN or Inf (positions "
            f"{shortened(bad)}); expected finite inputs"
        )
    if input_shape is not None:
        inputs = _fit(inputs, tuple(input_shape), _describe(spec, name))
    return Dataset(inputs.contiguous(), labels, ids, name)


def _take(array, positions: np.ndarray | None) -> np.ndarray:
    """Rows ``positions`` of an array, memory map or HDF5 dataset (all rows if ``None``).

    The rows are read in increasing order, each once, as HDF5 point selections need.
    """
    if positions is None:
        return array[()]
    rows, order = np.unique(positions, return_inverse=True)
    return np.asarray(array[rows])[order]


def _name(spec: Mapping) -> str:
    if "name" in spec:
        return str(spec["name"])
    if spec["source"] == "digits":
        return f"digits-{spec.get('split', 'test')}"
    return Path(str(spec.get("path", spec["source"]))).stem


def _describe(spec: Mapping, name: str) -> str:
    return f"dataset {name!r}" + (f" ({spec['path']})" if "path" in spec else "")


def _load_digits(spec: Mapping, positions: np.ndarray | None):
    from sklearn.datasets import load_digits

    ids = _take(digits_ids(digits_split(spec)), positions)
    digits = load_digits()
    inputs = torch.as_tensor(digits.images[ids] / 16.0, dtype=torch.float32).unsqueeze(1)
    if "size" in spec:
        size = spec["size"]
        if not is_int(size) or size < 1:
            raise DatasetError(f"digits dataset: 'size' is {size!r}; expected a positive integer")
        inputs = F.interpolate(inputs, size=(size, size), mode="bilinear", align_corners=False)
    return inputs, digits.target[ids].astype(np.int64), ids


def _load_array(spec: Mapping, positions: np.ndarray | None):
    path = existing_path(spec, "path")
    suffix = array_suffix(path)
    inputs_key = spec.get("inputs_key", "inputs")
    labels_key = spec.get("labels_key", "labels")
    labels_required = "labels_key" in spec
    labels = None
    if suffix == ".npy":
        mmap_mode = None if positions is None else "r"
        inputs, n = read(path, lambda: _rows(load_npy(path, mmap_mode), path, positions))
    elif suffix == ".npz":
        (inputs, n), labels = read(
            path, lambda: _npz_arrays(path, inputs_key, labels_key, labels_required, positions)
        )
    else:
        (inputs, n), labels = read_h5(
            path, lambda file: _h5_arrays(file, path, inputs_key, labels_key, labels_required, positions)
        )
    if "labels" in spec:
        labels_path = existing_path(spec, "labels")
        labels = read(labels_path, lambda: load_npy(labels_path))
    ids = np.arange(n, dtype=np.int64)
    return inputs, _take(_labels(labels, n, path), positions), _take(ids, positions)


def _rows(inputs, path: Path, positions: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Rows ``positions`` of an inputs array (or memory map, or HDF5 dataset) and its sample count."""
    if inputs.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: inputs have dtype {inputs.dtype}; expected real numbers")
    if inputs.ndim < 2:
        raise DatasetError(
            f"{path}: inputs have shape {inputs.shape}; "
            "expected (N, *sample_shape), e.g. (N, C, H, W) or (N, H, W)"
        )
    return _take(inputs, positions), int(inputs.shape[0])


def _npz_arrays(path: Path, inputs_key: str, labels_key: str, labels_required: bool, positions):
    with np.load(path, allow_pickle=False) as archive:
        for key in (inputs_key, labels_key) if labels_required else (inputs_key,):
            if key not in archive.files:
                raise DatasetError(f"{path} has no array {key!r}; it holds {sorted(archive.files)}")
        inputs = _rows(archive[inputs_key], path, positions)
        return inputs, archive[labels_key] if labels_key in archive.files else None


def _h5_arrays(
    file: h5py.File, path: Path, inputs_key: str, labels_key: str, labels_required: bool, positions
):
    inputs = _rows(h5_dataset(file, path, inputs_key), path, positions)
    if labels_required or labels_key in file:
        return inputs, h5_dataset(file, path, labels_key)[()]
    return inputs, None


def _labels(labels: np.ndarray | None, n: int, source: Path) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise DatasetError(f"{source}: labels have shape {labels.shape}; expected ({n},), one per input")
    if labels.dtype.kind not in "biuf" or (
        labels.dtype.kind == "f" and not np.all(labels == np.round(labels))
    ):
        raise DatasetError(
            f"{source}: labels have dtype {labels.dtype} or fractions; expected integer labels"
        )
    return labels.astype(np.int64)


def _load_images(spec: Mapping, positions: np.ndarray | None, input_shape: tuple[int, ...] | None):
    from PIL import Image, UnidentifiedImageError

    folder = existing_path(spec, "path")
    files = image_files(folder)
    grayscale = spec.get("grayscale", True)
    if not isinstance(grayscale, bool):
        raise DatasetError(f"images dataset {folder}: 'grayscale' is {grayscale!r}; expected true or false")
    size = tuple(input_shape[-2:]) if input_shape is not None and len(input_shape) == 3 else None
    chosen = files if positions is None else [files[position] for position in positions]
    images = []
    for file in chosen:
        try:
            with Image.open(file) as image:
                if grayscale and image.mode.startswith("I;16"):
                    array = np.asarray(image, dtype=np.float32) / 65535.0
                else:
                    array = np.asarray(image.convert("L" if grayscale else "RGB"), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as error:
            raise DatasetError(
                f"image {file} cannot be read ({error}); expected a complete {'/'.join(IMAGE_SUFFIXES)} image"
            ) from error
        tensor = torch.from_numpy(array[None] if grayscale else array.transpose(2, 0, 1).copy())
        if size is not None and tuple(tensor.shape[1:]) != size:
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
        if images and tensor.shape != images[0].shape:
            raise DatasetError(
                f"image {file} has shape {tuple(tensor.shape)} "
                f"but {chosen[0].name} has {tuple(images[0].shape)}; "
                "expected images of one size (or give the model's input_shape to resize them)"
            )
        images.append(tensor)
    labels = (
        _csv_labels(existing_path(spec, "labels"), files)
        if "labels" in spec
        else _labels(None, len(files), folder)
    )
    ids = np.arange(len(files), dtype=np.int64)
    return torch.stack(images), _take(labels, positions), _take(ids, positions)


def _csv_labels(path: Path, files: list[Path]) -> np.ndarray:
    position = {file.name: i for i, file in enumerate(files)}
    labels = np.full(len(files), -1, dtype=np.int64)
    seen = set()
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or (line == 1 and row == ["filename", "label"]):
                continue
            if len(row) != 2 or not row[1].strip().lstrip("-").isdigit():
                raise DatasetError(
                    f"{path} line {line}: {row!r}; expected 'filename,label' with an integer label"
                )
            name = row[0].strip()
            if name not in position:
                raise DatasetError(f"{path} line {line}: image {name!r} is not in {files[0].parent}")
            if name in seen:
                raise DatasetError(f"{path} line {line}: image {name!r} is labelled twice")
            seen.add(name)
            labels[position[name]] = int(row[1])
    return labels


def _fit(inputs: torch.Tensor, shape: tuple[int, ...], described: str) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` inputs bilinearly to ``shape``; refuse other mismatches."""
    have = tuple(inputs.shape[1:])
    if have == shape:
        return inputs
    if len(have) != 3 or len(shape) != 3 or have[0] != shape[0]:
        raise DatasetError(
            f"{described} has samples of shape {have}; the model expects {shape} "
            "(only height and width can be resized)"
        )
    return F.interpolate(inputs, size=shape[1:], mode="bilinear", align_corners=False)
