"""Datasets as tensors: every sample of a spec, or only the requested ones.

Specs are described in :mod:`nsp_pipeline.data.specs`. :func:`load_samples` reads only what it
is asked for: a ``.npy`` file is memory-mapped and only the requested rows are read; an HDF5
dataset is read at the requested indices (in increasing order, as HDF5 selections need, then put
back in the requested order); an image folder opens only the requested files. An ``.npz`` member
cannot be memory-mapped (it may be compressed), so its inputs array is read whole, once, and
indexed; the digits are in memory anyway. Labels, one integer per sample (a CSV file for image
folders), are always read and checked whole.

Array files
    Inputs of any real dtype (bool, integers, float16/32/64, either byte order) become float32
    with their values unchanged (values beyond float32's range would become Inf and are refused
    with the NaN and Inf values, naming the file and the samples' positions). Arrays of Python
    objects, strings, complex numbers or records are refused. Labels are integers, or floats
    without fractions; ``-1`` marks an unknown label, lower labels are refused.

Image modes
    Images are read as Pillow opens them, turned the way their EXIF orientation says, as values
    in [0, 1]: ``1``, ``L``, ``P`` and the 8-bit colour modes (``RGB``, ``RGBX``, ``YCbCr``) are
    divided by 255; 16-bit grayscale (``I;16``, and ``I`` with values in 0..65535) by 65535, so
    that their whole range is kept. A palette image (``P``, ``PA``) is read through its RGB(A)
    colours. ``grayscale: true`` (the default) converts colour to luma (Pillow's ITU-R 601-2
    weights, ``L = 0.299 R + 0.587 G + 0.114 B``); ``grayscale: false`` repeats a grayscale image
    in three channels. Refused, naming the file and its mode: ``F`` (floating point has no fixed
    range: use an array dataset), ``CMYK`` (turning it into RGB needs the file's colour profile:
    convert it first), other modes (``LAB``, ``HSV``, 32-bit ``I`` beyond 16 bits), and
    animations (more than one frame).

Transparency
    An alpha channel (``LA``, ``RGBA``, ``PA``, or a palette with a transparent colour) that is
    opaque everywhere is ignored. An image with any transparent pixel shows what is behind it, so
    its values depend on a background that the file does not hold: it is refused unless the spec's
    ``alpha`` says how to read it: ``black`` or ``white`` composites it over that background
    (``value × a + background × (1 − a)``, ``a`` the alpha in [0, 1], on the stored values), and
    ``channel`` reads the alpha channel itself as the image (a glyph drawn in the alpha channel
    over constant colours; every channel then holds the alpha). With ``alpha: channel``, images
    without an alpha channel are refused.

Image folders and their labels
    A folder's images are its files with the suffixes of
    :data:`~nsp_pipeline.data.specs.IMAGE_SUFFIXES` (any case); other files, hidden files
    (``.name``) and subfolders are ignored. Images of one dataset must have one size unless the
    model's input shape is given (each is then resized to it). A corrupt image is refused naming
    it. The labels CSV has one ``filename,label`` row per image of the folder, in any order,
    with ``-1`` for an image whose label is unknown; a CSV without a row for an image, with a row
    for a file that is not one of the images, with an image twice, or with a label that is not
    an integer >= -1 is refused, naming the CSV, the line and the files. Files saved by
    spreadsheets are read: UTF-8 with or without a byte-order mark, ``,`` or ``;`` or tab
    separators (those of the first row), CRLF line ends, an optional header row (a first row
    whose label is not a number and whose file name is not an image of the folder), blank rows
    and empty trailing columns. Other encodings are refused (save the CSV as UTF-8).
"""

from __future__ import annotations

import csv
import io
import re
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
    npz_header,
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
            f"{shortened(bad)}); expected finite inputs (within float32's range, about ±3.4e38)"
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
    channels = spec.get("channels", 1)
    if channels not in (1, 3):
        raise DatasetError(f"digits dataset: 'channels' is {channels!r}; expected 1 or 3 (gray repeated)")
    return inputs.repeat(1, channels, 1, 1), digits.target[ids].astype(np.int64), ids


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
    """Rows ``positions`` of an inputs array (or memory map, or HDF5 dataset) as native float32, and
    the number of samples."""
    if inputs.dtype.kind not in "biuf":
        raise DatasetError(
            f"{path}: inputs have dtype {inputs.dtype}; expected real numbers (bool, integers or floats)"
        )
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise DatasetError(
            f"{path}: inputs have shape {inputs.shape}; "
            "expected (N, *sample_shape) with N >= 1, e.g. (N, C, H, W) or (N, H, W)"
        )
    with np.errstate(over="ignore"):  # beyond float32's range: Inf, refused with NaN and Inf
        return np.asarray(_take(inputs, positions), dtype=np.float32), int(inputs.shape[0])


def _npz_arrays(path: Path, inputs_key: str, labels_key: str, labels_required: bool, positions):
    with np.load(path, allow_pickle=False) as archive:
        labelled = labels_required or labels_key in archive.files
        for key in (inputs_key, labels_key) if labelled else (inputs_key,):
            npz_header(path, key)  # names a missing array, refuses Python objects
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
    wrong = np.flatnonzero((labels < -1) | (labels > np.iinfo(np.int64).max))
    if wrong.size:
        raise DatasetError(
            f"{source}: labels {shortened(labels[wrong].tolist())} at positions {shortened(wrong.tolist())}; "
            "expected class labels >= 0, or -1 for an unknown label"
        )
    return labels.astype(np.int64)


#: Transparency options of an images spec's ``alpha`` (see the module docstring).
ALPHA = ("black", "white", "channel")
#: Pillow modes read as 8-bit values (``1`` as 0 and 255), and as 16-bit grayscale.
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: The EXIF tag of an image's orientation.
ORIENTATION = 0x0112
#: What to do with the images of a mode that is refused.
REFUSED_MODES = {
    "F": "floating-point pixels have no fixed range; save them as an array dataset (source: array)",
    "CMYK": "converting CMYK to RGB needs the file's colour profile; convert the image to RGB first",
}


def _load_images(spec: Mapping, positions: np.ndarray | None, input_shape: tuple[int, ...] | None):
    folder = existing_path(spec, "path")
    files = image_files(folder)
    grayscale = spec.get("grayscale", True)
    if not isinstance(grayscale, bool):
        raise DatasetError(f"images dataset {folder}: 'grayscale' is {grayscale!r}; expected true or false")
    alpha = spec.get("alpha")
    if alpha is not None and alpha not in ALPHA:
        raise DatasetError(f"images dataset {folder}: 'alpha' is {alpha!r}; expected one of {list(ALPHA)}")
    labels = (
        _csv_labels(existing_path(spec, "labels"), files)
        if "labels" in spec
        else _labels(None, len(files), folder)
    )
    size = tuple(input_shape[-2:]) if input_shape is not None and len(input_shape) == 3 else None
    chosen = files if positions is None else [files[position] for position in positions]
    images = []
    for file in chosen:
        tensor = torch.from_numpy(read_image(file, grayscale, alpha))
        if size is not None and tuple(tensor.shape[1:]) != size:
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
        if images and tensor.shape != images[0].shape:
            raise DatasetError(
                f"image {file} has shape {tuple(tensor.shape)} "
                f"but {chosen[0].name} has {tuple(images[0].shape)}; "
                "expected images of one size (or give the model's input_shape to resize them)"
            )
        images.append(tensor)
    ids = np.arange(len(files), dtype=np.int64)
    return torch.stack(images), _take(labels, positions), _take(ids, positions)


def read_image(file: Path, grayscale: bool, alpha: str | None = None) -> np.ndarray:
    """An image file as float32 values in [0, 1], following the policy of the module docstring.

    Parameters
    ----------
    file : path
        An image file.
    grayscale : bool
        One channel (luma) or three (RGB).
    alpha : {None, "black", "white", "channel"}
        How a partly transparent image is read (``None``: it is refused).

    Returns
    -------
    numpy.ndarray
        ``(1, H, W)`` or ``(3, H, W)`` float32.

    Raises
    ------
    DatasetError
        An unreadable, animated or partly transparent image (without ``alpha``), or a refused mode;
        the message names the file and its mode.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(file) as image:
            mode = image.mode
            if getattr(image, "n_frames", 1) > 1:
                raise DatasetError(
                    f"image {file} is an animation of {image.n_frames} frames; expected a single image"
                )
            if image.getexif().get(ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            values, opacity = image_values(image, grayscale, file)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(
            f"image {file} cannot be read ({error}); expected a complete {'/'.join(IMAGE_SUFFIXES)} image"
        ) from error
    if alpha == "channel":
        if opacity is None:
            raise DatasetError(
                f"image {file} (mode {mode}) has no alpha channel; 'alpha: channel' reads images "
                "from their alpha channel"
            )
        return np.repeat(opacity[None], len(values), axis=0)
    if opacity is None or (opacity == 1).all():
        return values
    if alpha is None:
        raise DatasetError(
            f"image {file} (mode {mode}) is transparent at {int((opacity < 1).sum())} of "
            f"{opacity.size} pixels, so its values depend on the background it is shown on; expected "
            "opaque images, or the dataset's 'alpha' set to black or white (composite over that "
            "background) or channel (read the alpha channel as the image, e.g. a glyph drawn in it)"
        )
    return values * opacity + (0.0 if alpha == "black" else 1.0) * (1 - opacity)


def image_values(image, grayscale: bool, file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A Pillow image's values and its opacity, both in [0, 1].

    Parameters
    ----------
    image : PIL.Image.Image
        An image of any mode.
    grayscale : bool
        One channel (luma) or three (RGB).
    file : path
        The image's file, named in messages.

    Returns
    -------
    values : numpy.ndarray
        ``(1, H, W)`` or ``(3, H, W)`` float32, its alpha ignored.
    opacity : numpy.ndarray or None
        ``(H, W)`` float32 alpha (1 is opaque), or ``None`` without an alpha channel.

    Raises
    ------
    DatasetError
        For the modes the module docstring refuses.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float32)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise DatasetError(
                f"image {file} (mode I, 32-bit integers) has values from {values.min():.0f} to "
                f"{values.max():.0f}; expected 16-bit values 0..65535 (save it as 8- or 16-bit)"
            )
        values = values[None] / 65535.0
        return (values if grayscale else np.repeat(values, 3, axis=0)), None
    if mode not in EIGHT_BIT_MODES:
        advice = REFUSED_MODES.get(mode, "convert the image to L, RGB or RGBA")
        raise DatasetError(
            f"image {file} has mode {mode}; expected one of "
            f"{list(EIGHT_BIT_MODES + SIXTEEN_BIT_MODES)} ({advice})"
        )
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    opacity = None
    if image.mode in ("LA", "RGBA"):
        opacity = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    values = np.asarray(image.convert("L" if grayscale else "RGB"), dtype=np.float32) / 255.0
    return (values[None] if grayscale else values.transpose(2, 0, 1).copy()), opacity


def _csv_labels(path: Path, files: list[Path]) -> np.ndarray:
    """The labels of ``files`` from a CSV of ``filename,label`` rows (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"labels {path} is not UTF-8 text ({error}); expected a CSV file saved as UTF-8 "
            "(e.g. 'CSV UTF-8' in a spreadsheet's Save As)"
        ) from error
    except OSError as error:
        raise DatasetError(f"labels {path} cannot be read ({error}); expected a CSV file") from error
    folder = files[0].parent
    position = {file.name: i for i, file in enumerate(files)}
    first_row = next((line for line in text.splitlines() if line.strip(" ,;\t")), "")
    delimiter = next((candidate for candidate in ",;\t" if candidate in first_row), ",")
    labels = np.full(len(files), -1, dtype=np.int64)
    seen: dict[str, int] = {}  # image name: line
    first = True
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for row in reader:
        line = reader.line_num
        row = [field.strip() for field in row]
        while row and not row[-1]:
            row.pop()
        if not row:
            continue
        label_ok = len(row) == 2 and re.fullmatch(r"[+-]?[0-9]+", row[1]) is not None
        header = first and len(row) == 2 and not label_ok and row[0] not in position
        first = False
        if header:
            continue
        if not label_ok or int(row[1]) < -1:
            raise DatasetError(
                f"{path} line {line}: {row!r}; expected 'filename{delimiter}label' with an integer label "
                ">= 0 (-1: unknown)"
            )
        name = row[0]
        if name not in position:
            raise DatasetError(
                f"{path} line {line}: {name!r} is not one of the {len(files)} images of {folder}; "
                f"expected file names such as {files[0].name!r}"
            )
        if name in seen:
            raise DatasetError(
                f"{path} line {line}: image {name!r} is labelled again (first on line {seen[name]})"
            )
        seen[name] = line
        labels[position[name]] = int(row[1])
    missing = [file.name for file in files if file.name not in seen]
    if missing:
        raise DatasetError(
            f"{path} has no row for {len(missing)} of the {len(files)} images of {folder}: "
            f"{shortened(missing)}; expected one 'filename{delimiter}label' row per image "
            "(-1 for an unknown label)"
        )
    return labels


def _fit(inputs: torch.Tensor, shape: tuple[int, ...], described: str) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` inputs bilinearly to ``shape``; refuse other mismatches."""
    have = tuple(inputs.shape[1:])
    if have == shape:
        return inputs
    if len(have) != 3 or len(shape) != 3 or have[0] != shape[0]:
        raise DatasetError(
            f"{described} has samples of shape {have}; the model expects {shape} "
            "(only height and width can be resized; for the digits, 'channels: 3' repeats the gray image "
            "in three channels)"
        )
    return F.interpolate(inputs, size=shape[1:], mode="bilinear", align_corners=False)
