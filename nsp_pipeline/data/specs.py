"""Dataset specs from a config, their sizes and sample selection, without torch.

The Snakefile plans its jobs with this module (:func:`dataset_size`, :func:`select_samples`), so it
imports NumPy and h5py only; :mod:`nsp_pipeline.data.loading` turns a spec into tensors (and
documents how every file and image mode is read).

Every spec is a mapping with a ``source`` key:

``digits``
    The 1,797 8×8 handwritten digits bundled with scikit-learn (no download), scaled to
    [0, 1], shape ``(1, 8, 8)``. ``split``: ``train``, ``test`` (default) or ``all``; the split
    is fixed: the indices are shuffled with ``numpy.random.default_rng(0)`` and the last 360
    (20 %) are the test set. ``size``: resize bilinearly to ``size × size``;
    ``channels: 3`` repeats the gray image in three channels (for models of RGB input).
``array``
    ``path`` to a ``.npy``, ``.npz`` or ``.h5`` file of shape ``(N, *shape)``; ``.npz`` and
    ``.h5`` files hold arrays ``inputs`` and (optionally) ``labels``, renamed with
    ``inputs_key``/``labels_key``. ``labels``: a ``.npy`` file of labels (any format).
    Values are used as they are (no scaling).
``images``
    ``path`` to a folder of png/jpg/jpeg/bmp/gif files, read in file-name order (other files,
    hidden files and subfolders are ignored), ``grayscale`` (default true), ``alpha``
    (``black``, ``white`` or ``channel``: how partly transparent images are read; by default
    they are refused), ``labels``: a CSV file of ``filename,label`` rows, one per image.

``name`` names the dataset in messages (default: the source and split, or the file name).
Relative paths are relative to the working directory. Data files are opened read-only, HDF5
files without locking (as :mod:`nsp_pipeline.io.hdf5` opens its own), and ``.npy``/``.npz`` files
without unpickling (arrays of Python objects are refused).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import BinaryIO

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
        Unknown source, missing or unreadable file or key, a folder without images, inputs without
        samples, or an array of Python objects.
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
        shape = read(path, lambda: npz_header(path, inputs_key)[0])
    else:
        shape = read_h5(path, lambda file: h5_dataset(file, path, inputs_key).shape)
    if not shape or not shape[0]:
        raise DatasetError(
            f"{path}: inputs have shape {shape}; expected an array of shape (N, *sample_shape), N >= 1"
        )
    return int(shape[0])


def select_samples(n_available: int, selection: Mapping, key: str = "samples") -> np.ndarray:
    """Positions of the samples a selection picks.

    Parameters
    ----------
    n_available : int
        Number of samples in the dataset.
    selection : mapping
        Exactly one of ``{"count": k}`` (the first k), ``{"indices": [...]}``,
        ``{"range": [start, stop]}`` (stop exclusive) or ``{"all": true}``.
    key : str
        The selection's config key, named in messages (e.g. ``samples.indices[2]``).

    Returns
    -------
    numpy.ndarray
        int64 positions, in the order given.

    Raises
    ------
    DatasetError
        If the selection is malformed (a value that is not an integer, booleans and floats such as
        ``3.0`` included), empty, repeats a position or reaches past the dataset; the message names
        the key, the value and the dataset's size.
    """
    size = f"the dataset has {n_available} samples"
    if not isinstance(selection, Mapping):
        raise DatasetError(f"{key} is {selection!r}; expected a mapping with a key of {list(SELECTIONS)}")
    keys = [name for name in SELECTIONS if name in selection]
    if len(keys) != 1 or set(selection) - set(SELECTIONS):
        raise DatasetError(f"{key} is {dict(selection)!r}; expected exactly one key of {list(SELECTIONS)}")
    name = keys[0]
    value = selection[name]
    if name == "all":
        if value is not True:
            raise DatasetError(f"{key}.all is {value!r}; expected true")
        if n_available == 0:
            raise DatasetError(f"{key}.all selects no samples ({size})")
        positions = np.arange(n_available, dtype=np.int64)
    elif name == "count":
        if not is_int(value) or not 1 <= value <= n_available:
            raise DatasetError(
                f"{key}.count is {value!r}; expected an integer from 1 to {n_available} ({size})"
            )
        positions = np.arange(value, dtype=np.int64)
    elif name == "range":
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise DatasetError(f"{key}.range is {value!r}; expected [start, stop] integers")
        _check_integers(f"{key}.range", value, n_available, n_available)
        start, stop = (int(v) for v in value)
        if not start < stop:
            raise DatasetError(
                f"{key}.range is {list(value)}; expected 0 <= start < stop <= {n_available} "
                f"(stop is exclusive; {size})"
            )
        positions = np.arange(start, stop, dtype=np.int64)
    else:
        if not (isinstance(value, list | tuple) and value):
            raise DatasetError(f"{key}.indices is {value!r}; expected a non-empty list of integers")
        _check_integers(f"{key}.indices", value, n_available - 1, n_available)
        positions = np.asarray([int(v) for v in value], dtype=np.int64)
        first = {}
        repeats = [
            f"{key}.indices[{i}] repeats {key}.indices[{first[p]}] ({p})"
            for i, p in enumerate(positions.tolist())
            if first.setdefault(p, i) != i
        ]
        if repeats:
            raise DatasetError(f"{_first(repeats)}; expected each sample once")
    return positions


def _check_integers(key: str, values, highest: int, n_available: int) -> None:
    """Refuse ``values`` unless each is an integer from 0 to ``highest``, naming ``key[i]``."""
    wrong = [f"{key}[{i}] is {value!r}" for i, value in enumerate(values) if not is_int(value)]
    if wrong:
        raise DatasetError(f"{_first(wrong)}; expected integers (sample positions)")
    outside = [f"{key}[{i}] is {value}" for i, value in enumerate(values) if not 0 <= value <= highest]
    if outside:
        raise DatasetError(
            f"{_first(outside)}; expected integers from 0 to {highest} "
            f"(the dataset has {n_available} samples)"
        )


def _first(problems: list[str]) -> str:
    """The first of several problems, and how many others there are."""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


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
    if not isinstance(spec[key], str | PathLike):
        raise DatasetError(f"dataset '{key}' is {spec[key]!r}; expected a file or folder path")
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
    """The image files of a folder (suffixes :data:`IMAGE_SUFFIXES`, not hidden), in file-name order."""
    if not folder.is_dir():
        raise DatasetError(f"images dataset: {folder} is not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DatasetError(
            f"images dataset: {folder} holds no image files; expected {', '.join(IMAGE_SUFFIXES)}"
        )
    return files


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A ``.npy`` array, refusing files without NumPy's header and arrays of Python objects."""
    with open(path, "rb") as handle:
        npy_header(handle, path)
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def npy_header(stream: BinaryIO, path: Path, key: str | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of a ``.npy`` file or ``.npz`` member ``key``.

    Raises
    ------
    DatasetError
        If there is no NumPy header, or the array holds Python objects (reading those would unpickle
        them, which runs code from the file, so they are never read).
    """
    what = f"{path}" + (f" member {key!r}" if key is not None else "")
    magic = stream.read(8)
    if len(magic) < 8 or not magic.startswith(b"\x93NUMPY"):
        raise DatasetError(
            f"{what} cannot be read as .npy data (it has no NumPy header); "
            "expected an array saved by numpy.save"
        )
    if magic[6] == 1:
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    if dtype.hasobject:
        raise DatasetError(
            f"{what} holds Python objects (dtype {dtype}); expected a numeric array "
            "(object arrays are never unpickled: save numbers, e.g. numpy.asarray(x, dtype=float))"
        )
    return shape, dtype


def read(path: Path, reader: Callable[[], object]):
    """``reader()``, with the errors of an unreadable file turned into a :class:`DatasetError`."""
    try:
        return reader()
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        hint = ""
        if path.suffix.lower() in (".h5", ".hdf5"):
            hint = "; if another program is still writing it, read it once that program has closed it"
        raise DatasetError(f"{path} cannot be read as {path.suffix} data ({error}){hint}") from error


def read_h5(path: Path, reader: Callable[[h5py.File], object]):
    """``reader(file)`` on the HDF5 file opened read-only without locking, errors as in :func:`read`.

    Without locking, a file another process holds open (e.g. to append to it) can still be read.
    """

    def opened():
        with h5py.File(path, "r", locking=False) as file:
            return reader(file)

    return read(path, opened)


def h5_dataset(file: h5py.File, path: Path, key: str) -> h5py.Dataset:
    """The dataset ``key`` of an open HDF5 file."""
    if not isinstance(file.get(key), h5py.Dataset):
        raise DatasetError(f"{path} has no dataset {key!r}; it holds {sorted(file.keys())}")
    return file[key]


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an ``.npz`` member from its header, without reading its data."""
    with zipfile.ZipFile(path) as archive:
        if f"{key}.npy" not in archive.namelist():
            names = sorted(name.removesuffix(".npy") for name in archive.namelist())
            raise DatasetError(f"{path} has no array {key!r}; it holds {names}")
        with archive.open(f"{key}.npy") as member:
            return npy_header(member, path, key)
