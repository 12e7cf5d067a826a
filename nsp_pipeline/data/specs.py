"""Dataset specs from a config, their sizes and sample selection, without torch.

The Snakefile plans its jobs with this module (:func:`dataset_size`, :func:`select_samples`), so it
imports NumPy and h5py only; :mod:`nsp_pipeline.data.loading` turns a spec into tensors.

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

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np

DIGITS_SIZE = 1797
DIGITS_TEST_SIZE = 360
DIGITS_SPLITS = ("train", "test", "all")
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SOURCES = ("digits", "array", "images")
SELECTIONS = ("count", "indices", "range", "all")


class DatasetError(ValueError):
    """A dataset spec, file or sample selection that cannot be used as it is."""


def dataset_size(spec: Mapping) -> int:
    """Number of samples in a dataset, without loading it.

    Reads a ``.npy`` or ``.npz`` member's header, an HDF5 dataset's shape, a folder's file
    names, or the fixed digits split sizes.

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
        Unknown source, missing or unreadable file or key, a folder without images, or scalar inputs.
    """
    source = source_of(spec)
    if source == "digits":
        return len(digits_ids(digits_split(spec)))
    path = existing_path(spec, "path")
    if source == "images":
        return len(image_files(path))
    suffix = array_suffix(path)
    inputs_key = spec.get("inputs_key", "inputs")
    if suffix == ".npy":
        shape = read(path, lambda: load_npy(path, mmap_mode="r").shape)
    elif suffix == ".npz":
        shape = read(path, lambda: _npz_shape(path, inputs_key))
    else:
        shape = read_h5(path, lambda file: h5_dataset(file, path, inputs_key).shape)
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
        if not is_int(value) or value < 1:
            raise DatasetError(f"sample selection 'count' is {value!r}; expected a positive integer")
        if value > n_available:
            raise DatasetError(
                f"sample selection 'count' is {value}; the dataset has only {n_available} samples"
            )
        positions = np.arange(value, dtype=np.int64)
    elif key == "range":
        if not (isinstance(value, list | tuple) and len(value) == 2 and all(is_int(v) for v in value)):
            raise DatasetError(f"sample selection 'range' is {value!r}; expected [start, stop] integers")
        start, stop = value
        if not 0 <= start < stop <= n_available:
            raise DatasetError(
                f"sample selection 'range' is {list(value)}; expected 0 <= start < stop <= {n_available} "
                "(stop is exclusive)"
            )
        positions = np.arange(start, stop, dtype=np.int64)
    else:
        if not (isinstance(value, list | tuple) and value and all(is_int(v) for v in value)):
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


def source_of(spec: Mapping) -> str:
    """The spec's ``source``, one of :data:`SOURCES`."""
    source = spec.get("source")
    if source not in SOURCES:
        raise DatasetError(
            f"dataset spec {dict(spec)!r}: 'source' is {source!r}; expected one of {list(SOURCES)}"
        )
    return source


def is_int(value) -> bool:
    """Whether a config value is an integer (``True`` and ``False`` are not)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def existing_path(spec: Mapping, key: str) -> Path:
    """The file or folder a spec names under ``key``, which must exist."""
    if key not in spec:
        raise DatasetError(f"dataset spec {dict(spec)!r}: '{key}' is missing; expected a file or folder path")
    path = Path(spec[key])
    if not path.exists():
        raise DatasetError(f"dataset '{key}' {path} does not exist")
    return path


def digits_split(spec: Mapping) -> str:
    """The digits spec's ``split``, one of :data:`DIGITS_SPLITS` (default ``test``)."""
    split = spec.get("split", "test")
    if split not in DIGITS_SPLITS:
        raise DatasetError(f"digits dataset: 'split' is {split!r}; expected one of {list(DIGITS_SPLITS)}")
    return split


def digits_ids(split: str) -> np.ndarray:
    """Sorted int64 indices into scikit-learn's 1,797 digits of a split."""
    order = np.random.default_rng(0).permutation(DIGITS_SIZE)
    if split == "all":
        return np.arange(DIGITS_SIZE, dtype=np.int64)
    part = order[-DIGITS_TEST_SIZE:] if split == "test" else order[:-DIGITS_TEST_SIZE]
    return np.sort(part).astype(np.int64)


def array_suffix(path: Path) -> str:
    """The lower-case suffix of an array file, one of :data:`ARRAY_SUFFIXES`."""
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise DatasetError(
            f"array dataset {path}: unknown file type {suffix!r}; expected one of {ARRAY_SUFFIXES}"
        )
    return suffix


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder (suffixes :data:`IMAGE_SUFFIXES`), in file-name order."""
    if not folder.is_dir():
        raise DatasetError(f"images dataset: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(
            f"images dataset: {folder} holds no image files; expected {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A ``.npy`` array (never pickled objects), refusing files without NumPy's header."""
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise DatasetError(
                f"{path} cannot be read as .npy data (it has no NumPy header); expected an array saved "
                "by numpy.save"
            )
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def read(path: Path, reader: Callable[[], object]):
    """``reader()``, with the errors of an unreadable file turned into a :class:`DatasetError`."""
    try:
        return reader()
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path} cannot be read as {path.suffix} data ({error})") from error


def read_h5(path: Path, reader: Callable[[h5py.File], object]):
    """``reader(file)`` on the HDF5 file opened for reading, errors as in :func:`read`."""

    def opened():
        with h5py.File(path, "r") as file:
            return reader(file)

    return read(path, opened)


def h5_dataset(file: h5py.File, path: Path, key: str) -> h5py.Dataset:
    """The dataset ``key`` of an open HDF5 file."""
    if not isinstance(file.get(key), h5py.Dataset):
        raise DatasetError(f"{path} has no dataset {key!r}; it holds {sorted(file.keys())}")
    return file[key]


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of an ``.npz`` member from its header, without reading its data."""
    with zipfile.ZipFile(path) as archive:
        if f"{key}.npy" not in archive.namelist():
            names = sorted(name.removesuffix(".npy") for name in archive.namelist())
            raise DatasetError(f"{path} has no array {key!r}; it holds {names}")
        with archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0
            if version != (1, 0):
                read_header = np.lib.format.read_array_header_2_0
            return read_header(member)[0]
