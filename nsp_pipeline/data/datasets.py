"""Input datasets from a config spec: scikit-learn's digits, arrays on disk, image folders.

Every spec is a mapping with a ``source`` key:

``digits``
    The 1,797 8×8 handwritten digits bundled with scikit-learn (no download), scaled to
    [0, 1], shape ``(1, 8, 8)``. ``split``: ``train``, ``test`` (default) or ``all``; the split
    is fixed: the indices are shuffled with ``numpy.random.default_rng(0)`` and the last 360
    (20 %) are the test set. ``size``: resize bilinearly to ``size × size``.
``array``
    ``path`` to a ``.npy``, ``.npz`` or ``.h5`` file of shape ``(N, *shape)``; ``.npz`` and
    ``.h5`` files hold arrays ``inputs`` and (optionally) ``labels``, renamed with
    ``inputs_key``/``labels_key``. ``labels``: a ``.npy`` file of labels (any format).
    Values are used as they are (no scaling).
``images``
    ``path`` to a folder of png/jpg/jpeg/bmp/gif files, read in file-name order,
    ``grayscale`` (default true), ``labels``: a CSV file of ``filename,label`` rows.

``name`` names the dataset in messages (default: the source and split, or the file name).
Relative paths are relative to the working directory.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from nsp_pipeline.core.errors import shortened

DIGITS_SIZE = 1797
DIGITS_TEST_SIZE = 360
DIGITS_SPLITS = ("train", "test", "all")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SOURCES = ("digits", "array", "images")
SELECTIONS = ("count", "indices", "range", "all")


class DatasetError(ValueError):
    """A dataset spec, file or sample selection that cannot be used as it is."""


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

    def subset(self, positions: np.ndarray) -> Dataset:
        """The samples at ``positions`` (e.g. from :func:`select_samples`)."""
        index = torch.as_tensor(positions, dtype=torch.long)
        return Dataset(self.inputs[index], self.labels[positions], self.ids[positions], self.name)


def load_dataset(spec: Mapping, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load the dataset a spec describes.

    Parameters
    ----------
    spec : mapping
        Dataset spec (see the module docstring).
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
    source = _source(spec)
    name = str(spec.get("name", _default_name(spec)))
    if source == "digits":
        inputs, labels, ids = _load_digits(spec)
    elif source == "array":
        inputs, labels, ids = _load_array(spec)
    else:
        inputs, labels, ids = _load_images(spec, input_shape)
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    if inputs.ndim == 3:
        inputs = inputs.unsqueeze(1)
    if not torch.isfinite(inputs).all():
        bad = torch.nonzero((~torch.isfinite(inputs)).flatten(1).any(1)).flatten().tolist()
        raise DatasetError(
            f"{_describe(spec, name)}: {len(bad)} samples contain NaN or Inf (positions "
            f"{shortened(bad)}); expected finite inputs"
        )
    if input_shape is not None:
        inputs = _fit(inputs, tuple(input_shape), _describe(spec, name))
    return Dataset(inputs.contiguous(), labels, ids, name)


def dataset_size(spec: Mapping) -> int:
    """Number of samples in a dataset, without loading it where possible.

    Parameters
    ----------
    spec : mapping
        Dataset spec (see the module docstring).

    Returns
    -------
    int

    Raises
    ------
    DatasetError
        As :func:`load_dataset`, for what the size needs (source, file, keys, folder).
    """
    source = _source(spec)
    if source == "digits":
        return len(_digits_ids(_split(spec)))
    path = _existing(spec, "path")
    if source == "images":
        return len(_image_files(path))
    suffix = _array_suffix(path)
    if suffix == ".npy":
        shape = _read(path, lambda: _load_npy(path, mmap_mode="r").shape)
    elif suffix == ".npz":
        shape = _read(path, lambda: _npz_shape(path, spec.get("inputs_key", "inputs")))
    else:
        shape = _read_h5(path, lambda f: _h5_dataset(f, path, spec.get("inputs_key", "inputs")).shape)
    if not shape:
        raise DatasetError(f"{path}: inputs are a scalar; expected an array of shape (N, *sample_shape)")
    return int(shape[0])


def select_samples(n_available: int, selection: Mapping) -> np.ndarray:
    """Positions of the samples a selection picks.

    Parameters
    ----------
    n_available : int
        Number of samples in the dataset.
    selection : mapping
        Exactly one of ``{"count": k}`` (the first k), ``{"indices": [...]}``,
        ``{"range": [start, stop]}`` (stop exclusive) or ``{"all": true}``.

    Returns
    -------
    numpy.ndarray
        int64 positions, in the order given.

    Raises
    ------
    DatasetError
        If the selection is malformed, empty, repeats a position or reaches past the dataset.
    """
    keys = [key for key in SELECTIONS if key in selection]
    unknown = sorted(set(selection) - set(SELECTIONS))
    if len(keys) != 1 or unknown:
        raise DatasetError(
            f"sample selection {dict(selection)!r}: expected exactly one of the keys {list(SELECTIONS)}"
        )
    key = keys[0]
    value = selection[key]
    if key == "all":
        if value is not True:
            raise DatasetError(f"sample selection 'all' is {value!r}; expected true")
        positions = np.arange(n_available, dtype=np.int64)
    elif key == "count":
        if not _is_int(value) or value < 1:
            raise DatasetError(f"sample selection 'count' is {value!r}; expected a positive integer")
        if value > n_available:
            raise DatasetError(
                f"sample selection 'count' is {value}; the dataset has only {n_available} samples"
            )
        positions = np.arange(value, dtype=np.int64)
    elif key == "range":
        if not (isinstance(value, list | tuple) and len(value) == 2 and all(_is_int(v) for v in value)):
            raise DatasetError(f"sample selection 'range' is {value!r}; expected [start, stop] integers")
        start, stop = value
        if not 0 <= start < stop <= n_available:
            raise DatasetError(
                f"sample selection 'range' is {list(value)}; expected 0 <= start < stop <= {n_available} "
                "(stop is exclusive)"
            )
        positions = np.arange(start, stop, dtype=np.int64)
    else:
        if not (isinstance(value, list | tuple) and value and all(_is_int(v) for v in value)):
            raise DatasetError(
                f"sample selection 'indices' is {value!r}; expected a non-empty list of integers"
            )
        positions = np.asarray(value, dtype=np.int64)
        outside = positions[(positions < 0) | (positions >= n_available)]
        if outside.size:
            raise DatasetError(
                f"sample selection 'indices' {outside.tolist()} out of range; "
                f"expected 0 <= index < {n_available}"
            )
        values, counts = np.unique(positions, return_counts=True)
        if (counts > 1).any():
            raise DatasetError(f"sample selection 'indices' repeats {values[counts > 1].tolist()}")
    if positions.size == 0:
        raise DatasetError(f"sample selection {dict(selection)!r} selects no samples of {n_available}")
    return positions


def _source(spec: Mapping) -> str:
    source = spec.get("source")
    if source not in SOURCES:
        raise DatasetError(
            f"dataset spec {dict(spec)!r}: 'source' is {source!r}; expected one of {list(SOURCES)}"
        )
    return source


def _default_name(spec: Mapping) -> str:
    if spec["source"] == "digits":
        return f"digits-{spec.get('split', 'test')}"
    return Path(str(spec.get("path", spec["source"]))).stem


def _describe(spec: Mapping, name: str) -> str:
    return f"dataset {name!r}" + (f" ({spec['path']})" if "path" in spec else "")


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _existing(spec: Mapping, key: str) -> Path:
    if key not in spec:
        raise DatasetError(f"dataset spec {dict(spec)!r}: '{key}' is missing; expected a file or folder path")
    path = Path(spec[key])
    if not path.exists():
        raise DatasetError(f"dataset '{key}' {path} does not exist")
    return path


def _load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A ``.npy`` array (never pickled objects), refusing files without NumPy's header."""
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise DatasetError(
                f"{path} cannot be read as .npy data (it has no NumPy header); expected an array saved "
                "by numpy.save"
            )
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def _read(path: Path, read):
    try:
        return read()
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path} cannot be read as {path.suffix} data ({error})") from error


def _read_h5(path: Path, read):
    def opened():
        with h5py.File(path, "r") as file:
            return read(file)

    return _read(path, opened)


def _h5_dataset(file: h5py.File, path: Path, key: str) -> h5py.Dataset:
    if not isinstance(file.get(key), h5py.Dataset):
        raise DatasetError(f"{path} has no dataset {key!r}; it holds {sorted(file.keys())}")
    return file[key]


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    with zipfile.ZipFile(path) as archive:
        if f"{key}.npy" not in archive.namelist():
            raise DatasetError(f"{path} has no array {key!r}; it holds {_npz_keys(archive.namelist())}")
        with archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0
            if version != (1, 0):
                read_header = np.lib.format.read_array_header_2_0
            return read_header(member)[0]


def _npz_keys(names: list[str]) -> list[str]:
    return sorted(name.removesuffix(".npy") for name in names)


def _split(spec: Mapping) -> str:
    split = spec.get("split", "test")
    if split not in DIGITS_SPLITS:
        raise DatasetError(f"digits dataset: 'split' is {split!r}; expected one of {list(DIGITS_SPLITS)}")
    return split


def _digits_ids(split: str) -> np.ndarray:
    order = np.random.default_rng(0).permutation(DIGITS_SIZE)
    if split == "all":
        return np.arange(DIGITS_SIZE, dtype=np.int64)
    part = order[-DIGITS_TEST_SIZE:] if split == "test" else order[:-DIGITS_TEST_SIZE]
    return np.sort(part).astype(np.int64)


def _load_digits(spec: Mapping):
    from sklearn.datasets import load_digits

    ids = _digits_ids(_split(spec))
    digits = load_digits()
    inputs = torch.as_tensor(digits.images[ids] / 16.0, dtype=torch.float32).unsqueeze(1)
    if "size" in spec:
        size = spec["size"]
        if not _is_int(size) or size < 1:
            raise DatasetError(f"digits dataset: 'size' is {size!r}; expected a positive integer")
        inputs = F.interpolate(inputs, size=(size, size), mode="bilinear", align_corners=False)
    return inputs, digits.target[ids].astype(np.int64), ids


def _load_array(spec: Mapping):
    path = _existing(spec, "path")
    suffix = _array_suffix(path)
    inputs_key = spec.get("inputs_key", "inputs")
    labels_key = spec.get("labels_key", "labels")
    labels = None
    if suffix == ".npy":
        inputs = _read(path, lambda: _load_npy(path))
    elif suffix == ".npz":
        inputs, labels = _read(path, lambda: _npz_arrays(path, inputs_key, labels_key, "labels_key" in spec))
    else:
        inputs, labels = _read_h5(
            path, lambda f: _h5_arrays(f, path, inputs_key, labels_key, "labels_key" in spec)
        )
    if "labels" in spec:
        labels_path = _existing(spec, "labels")
        labels = _read(labels_path, lambda: _load_npy(labels_path))
    if inputs.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: inputs have dtype {inputs.dtype}; expected real numbers")
    if inputs.ndim < 2:
        raise DatasetError(
            f"{path}: inputs have shape {inputs.shape}; "
            "expected (N, *sample_shape), e.g. (N, C, H, W) or (N, H, W)"
        )
    ids = np.arange(len(inputs), dtype=np.int64)
    return inputs, _labels(labels, len(ids), path), ids


def _array_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise DatasetError(
            f"array dataset {path}: unknown file type {suffix!r}; expected one of {ARRAY_SUFFIXES}"
        )
    return suffix


def _npz_arrays(path: Path, inputs_key: str, labels_key: str, labels_required: bool):
    with np.load(path, allow_pickle=False) as archive:
        for key in (inputs_key, labels_key) if labels_required else (inputs_key,):
            if key not in archive.files:
                raise DatasetError(f"{path} has no array {key!r}; it holds {sorted(archive.files)}")
        return archive[inputs_key], archive[labels_key] if labels_key in archive.files else None


def _h5_arrays(file: h5py.File, path: Path, inputs_key: str, labels_key: str, labels_required: bool):
    inputs = _h5_dataset(file, path, inputs_key)[()]
    if labels_required or labels_key in file:
        return inputs, _h5_dataset(file, path, labels_key)[()]
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


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"images dataset: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(
            f"images dataset: {folder} holds no image files; expected {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def _load_images(spec: Mapping, input_shape: tuple[int, ...] | None):
    from PIL import Image, UnidentifiedImageError

    folder = _existing(spec, "path")
    files = _image_files(folder)
    grayscale = spec.get("grayscale", True)
    if not isinstance(grayscale, bool):
        raise DatasetError(f"images dataset {folder}: 'grayscale' is {grayscale!r}; expected true or false")
    size = tuple(input_shape[-2:]) if input_shape is not None and len(input_shape) == 3 else None
    images = []
    for file in files:
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
                f"but {files[0].name} has {tuple(images[0].shape)}; "
                "expected images of one size (or give the model's input_shape to resize them)"
            )
        images.append(tensor)
    labels = (
        _csv_labels(_existing(spec, "labels"), files)
        if "labels" in spec
        else _labels(None, len(files), folder)
    )
    return torch.stack(images), labels, np.arange(len(files), dtype=np.int64)


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
