"""HDF5 files of the pipeline: one writer and one reader core for every kind of file.

Every file has the root attributes ``schema`` (``"nsp-pipeline/<kind>"``), ``schema_version``,
the provenance attributes (:func:`nsp_pipeline.io.provenance.provenance`) and ``content_sha256``;
all kinds but the sweep summary have a ``layout`` group. :data:`KINDS` is the registry of kinds:
each has a ``write_<kind>`` and a ``read_<kind>`` function here, all built on one writer and one
reader. The full schema is in ``docs/hdf5-schema.md``.

Writes are atomic (temporary name, then rename) and bit-reproducible. Reads check the kind, the
required datasets and the SHA-256 of the whole contents (``content_sha256``: every dataset and
every attribute): once per process for each version of a file (same path, inode, size and
modification time), so that a job reading a file several times (samples of a shard one by one, an
operator per batch) hashes it once. ``verify=False`` skips the checksum, for a file known to be
intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from nsp_pipeline.analysis.dataset_statistics import (
    TABLE_COLUMNS,
    ClassStatistics,
    summary_table,
    top_k_columns,
    top_k_entry,
    top_k_label,
)
from nsp_pipeline.analysis.graph_summary import BlockView, GraphSummary
from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.errors import shortened
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import PER_LAYER_DIAGNOSTICS, Pattern, sub_layout
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.interpret.minimal_results import MaskedImage, MinimalImage
from nsp_pipeline.interpret.region_results import RegionPartition
from nsp_pipeline.interpret.results import AttributionMaps
from nsp_pipeline.interpret.synthesis_results import SynthesisResult
from nsp_pipeline.transforms.causal.closure import CausalOperator
from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator
from nsp_pipeline.transforms.laplacian import LaplacianOperator

#: Version of the schema written by this module; readers accept only this version. Version 2:
#: ``content_sha256`` covers the attributes too (version 1 covered the datasets only).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class FileKind:
    """One kind of file of the registry :data:`KINDS`.

    Parameters
    ----------
    holds : str
        What a file of this kind holds, for messages and documentation.
    layout : bool
        Whether the file has a ``layout`` group (the layers of the network).
    """

    holds: str
    layout: bool = True


#: The kinds of file: the root attribute ``schema`` is ``"nsp-pipeline/<kind>"``, and this module
#: has a ``write_<kind>`` and a ``read_<kind>`` function for each.
KINDS: dict[str, FileKind] = {
    "graph": FileKind("the neuron DAG (NeuronGraph)"),
    "causal_operator": FileKind("strict ancestor sets (CausalOperator)"),
    "factorized_causal_operator": FileKind("per-layer ancestor relations (FactorizedCausalOperator)"),
    "laplacian_operator": FileKind("Laplacian eigenpairs (LaplacianOperator)"),
    "pattern": FileKind("activations or a spectrum of a batch of samples (Pattern)"),
    "dataset_summary": FileKind("per-class statistics of each pattern of an analysis (ClassStatistics)"),
    "sweep_summary": FileKind("one table over every analysis of a sweep", layout=False),
    "graph_summary": FileKind("analytics of a weighted neuron graph (GraphSummary)"),
    "attribution_maps": FileKind("maps of what drives chosen units (AttributionMaps)", layout=False),
    "minimal_images": FileKind("minimal and masked images (MinimalImage, MaskedImage)", layout=False),
    "synthesis": FileKind("inputs synthesised to maximise units (SynthesisResult)", layout=False),
    "regions": FileKind("the linear regions of a 2-D input slice (RegionPartition)", layout=False),
}

#: Root attributes that belong to the schema, not to the provenance.
RESERVED_ATTRIBUTES = frozenset(
    {
        "schema",
        "schema_version",
        "content_sha256",
        "incl",
        "granularity",
        "domain",
        "patterns",
        "top_k",
        "columns",
        "weight_kind",
        "density",
        "n_edges",
        "analytics_settings",
        "centralities",
        "paths",
        "blocks",
        "attribution_metadata",
        "results",
        "synthesis_metadata",
        "regions_metadata",
        "stored_layers",
    }
)

#: How :func:`write_pattern` stores values: float64; float32 (rounded to nearest); or ``"auto"``,
#: each layer as float32 where that keeps every value bit for bit, else float64.
PATTERN_DTYPES = ("float64", "float32", "auto")

#: HDF5 filters :func:`write_pattern` offers for its layers (``"none"``: contiguous datasets).
COMPRESSIONS = ("none", "gzip", "lzf")

_LAYOUT_DATASETS = (
    "names",
    "kinds",
    "descriptions",
    "shapes",
    "shape_ndim",
    "offsets",
    "parents_indptr",
    "parents_indices",
)
_STRING = h5py.string_dtype("utf-8")
_CHUNK = 1 << 20  # elements per chunk of a compressed dataset (8 MiB of int64)


@dataclass(frozen=True)
class Compression:
    """The HDF5 filter of a compressed dataset (always with the shuffle filter before it).

    Parameters
    ----------
    method : {"gzip", "lzf"}
        gzip (deflate; any HDF5 reader has it) or LZF (faster, compresses less; h5py's own filter,
        which readers outside h5py need as a plugin).
    level : int
        gzip's level, 0 (fastest) to 9 (smallest); LZF has none.
    """

    method: str = "gzip"
    level: int = 4

    def options(self) -> dict[str, object]:
        """Keyword arguments of ``h5py.Group.create_dataset`` for this filter."""
        level = {"compression_opts": self.level} if self.method == "gzip" else {}
        return {"compression": self.method, "shuffle": True, **level}


#: Files whose content checksum this process has verified: resolved path -> (signature, checksum).
_VERIFIED: dict[str, tuple[tuple[int, ...], str]] = {}


class SchemaError(ValueError):
    """A file is not a valid nsp-pipeline HDF5 file of the expected kind."""


class LayerNotStoredError(LookupError):
    """A reader asks a pattern file for a layer it does not store (or its network does not have)."""


def _int64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<i8")


def _float64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<f8")


def _layer_dataset(index: int) -> str:
    return f"layers/{index:03d}"


# --------------------------------------------------------------------------- layout


def _layout_arrays(layout: Layout) -> dict[str, np.ndarray]:
    layers = layout.layers
    parents = [layer.parents for layer in layers]
    return {
        "names": np.array([layer.name for layer in layers], dtype=_STRING),
        "kinds": np.array([layer.kind for layer in layers], dtype=_STRING),
        "descriptions": np.array([layer.description for layer in layers], dtype=_STRING),
        "shapes": _int64([size for layer in layers for size in layer.shape]),
        "shape_ndim": _int64([len(layer.shape) for layer in layers]),
        "offsets": _int64(layout.offsets),
        "parents_indptr": _int64(np.concatenate([[0], np.cumsum([len(p) for p in parents])])),
        "parents_indices": _int64([parent for layer_parents in parents for parent in layer_parents]),
    }


def _layout_from(arrays: Mapping[str, np.ndarray]) -> Layout:
    shape_ptr = np.concatenate([[0], np.cumsum(arrays["shape_ndim"])])
    shapes, parents_ptr, parents = arrays["shapes"], arrays["parents_indptr"], arrays["parents_indices"]
    layout = Layout(
        tuple(
            Layer(
                name=str(name),
                shape=tuple(int(size) for size in shapes[shape_ptr[i] : shape_ptr[i + 1]]),
                kind=str(kind),
                description=str(description),
                parents=tuple(int(parent) for parent in parents[parents_ptr[i] : parents_ptr[i + 1]]),
            )
            for i, (name, kind, description) in enumerate(
                zip(arrays["names"], arrays["kinds"], arrays["descriptions"], strict=True)
            )
        )
    )
    if not np.array_equal(layout.offsets, arrays["offsets"]):
        raise ValueError(f"stored offsets {arrays['offsets']} do not match the layer shapes")
    return layout


def write_layout(group: h5py.Group, layout: Layout) -> None:
    """Write a layout's datasets into an open HDF5 group (normally ``layout``).

    Parameters
    ----------
    group : h5py.Group
        Empty group to fill.
    layout : Layout
        Layers to store.
    """
    for name, values in _layout_arrays(layout).items():
        _create(group, name, values)


def read_layout(group: h5py.Group) -> Layout:
    """Read a layout written by :func:`write_layout`.

    Parameters
    ----------
    group : h5py.Group
        The ``layout`` group of an open file.

    Returns
    -------
    Layout
    """
    return _layout_from({name: _read_dataset(group[name]) for name in _LAYOUT_DATASETS})


# --------------------------------------------------------------------------- low level


def _create(
    group: h5py.Group, name: str, values: np.ndarray, compression: Compression | None = None
) -> h5py.Dataset:
    """A dataset: contiguous, or with ``compression`` in chunks of about :data:`_CHUNK` elements
    (whole rows of an array of several axes: one sample of a pattern's large layer)."""
    options: dict[str, object] = {"track_times": False}
    if values.dtype.kind == "O":
        options["dtype"] = _STRING
    if compression is not None and values.size:
        row = values.size // values.shape[0]
        options["chunks"] = (max(1, min(values.shape[0], _CHUNK // row)), *values.shape[1:])
        options |= compression.options()
    return group.create_dataset(name, data=values, **options)


def _read_dataset(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()]
    return dataset[()]


def content_sha256(arrays: Mapping[str, np.ndarray], attributes: Mapping[tuple[str, str], object]) -> str:
    """Checksum of a file's datasets and attributes, stored in its root attribute ``content_sha256``.

    The digest covers, for every dataset in sorted path order (relative to the root, e.g.
    ``layout/names``), ``"dataset\\0{path}\\0{dtype}\\0{shape}\\0"`` followed by its data; then
    for every attribute in sorted order of (object path, name), the root's path being ``""``,
    ``"attribute\\0{object}\\0{name}\\0{dtype}\\0{shape}\\0"`` followed by its value's data.
    Text is UTF-8, the shape is comma-separated, the dtype is numpy's ``dtype.str`` such as
    ``"<i8"`` (``"utf-8"`` for strings); the data are raw little-endian bytes in C order, or for
    strings each value's UTF-8 bytes preceded by their length as 8-byte little-endian integer.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        Every dataset of the file by path.
    attributes : mapping of (str, str) to value
        Every attribute of the file (of the root, groups and datasets) by (object path, name),
        except the root's ``content_sha256``; values as h5py reads them (str, numpy scalar or array).

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for path in sorted(arrays):
        _update(digest, f"dataset\0{path}", np.asarray(arrays[path]))
    for owner, name in sorted(attributes):
        _update(digest, f"attribute\0{owner}\0{name}", np.asarray(attributes[owner, name]))
    return digest.hexdigest()


def _update(digest, label: str, values: np.ndarray) -> None:
    """Feed one record of :func:`content_sha256` (its label, dtype, shape and data) to ``digest``."""
    shape = ",".join(str(size) for size in values.shape)
    if values.dtype.kind in "OU":
        digest.update(f"{label}\0utf-8\0{shape}\0".encode())
        for value in values.ravel():
            encoded = str(value).encode()
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
    else:
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        digest.update(f"{label}\0{values.dtype.str}\0{shape}\0".encode())
        digest.update(values.reshape(-1).view(np.uint8))


def _contents(file: h5py.File) -> tuple[dict[str, h5py.Dataset], dict[tuple[str, str], object]]:
    """Every dataset of an open file by path, and every attribute by (object path, name).

    The root's path is ``""``; its ``content_sha256`` is left out (the checksum does not cover itself).
    """
    datasets: dict[str, h5py.Dataset] = {}
    attributes = {("", key): value for key, value in file.attrs.items() if key != "content_sha256"}

    def collect(name: str, item: h5py.Dataset | h5py.Group) -> None:
        if isinstance(item, h5py.Dataset):
            datasets[name] = item
        attributes.update({(name, key): value for key, value in item.attrs.items()})

    file.visititems(collect)
    return datasets, attributes


def _write_file(
    path: str | os.PathLike,
    kind: str,
    provenance: Mapping[str, str],
    arrays: Mapping[str, np.ndarray],
    *,
    layout: Layout | None = None,
    attributes: Mapping[str, object] | None = None,
    object_attributes: Mapping[str, Mapping[str, object]] | None = None,
    compressed: tuple[str, ...] = (),
    compression: Compression = Compression(),
) -> None:
    """Write a file of one kind: root attributes, ``layout``, the datasets, their attributes, checksum.

    ``arrays`` maps dataset paths (``"indices"``, ``"standard/table/class"``; groups are created
    on the way) to values, ``object_attributes`` dataset or group paths to their attributes; the
    datasets named in ``compressed`` are stored with ``compression`` (gzip level 4 by default).
    """
    if (layout is not None) != KINDS[kind].layout:
        raise ValueError(f"a {kind} file {'needs a' if KINDS[kind].layout else 'has no'} layout")
    clashes = sorted(RESERVED_ATTRIBUTES & provenance.keys())
    if clashes:
        raise ValueError(f"provenance keys {clashes} are reserved by the schema")
    strings = {name: values.astype(object) for name, values in arrays.items() if values.dtype.kind == "U"}
    arrays = {**arrays, **strings}
    layout_arrays = {} if layout is None else _layout_arrays(layout)
    contents = {f"layout/{name}": values for name, values in layout_arrays.items()} | arrays
    _VERIFIED.pop(os.path.realpath(path), None)
    with atomic_output(path) as temporary, h5py.File(temporary, "w", locking=False) as file:
        file.attrs["schema"] = f"nsp-pipeline/{kind}"
        file.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        for key in sorted(provenance):
            file.attrs[key] = str(provenance[key])
        for key, value in (attributes or {}).items():
            file.attrs[key] = value
        if layout is not None:
            write_layout(file.create_group("layout"), layout)
        for name, values in arrays.items():
            _create(file, name, values, compression if name in compressed else None)
        for name, values in (object_attributes or {}).items():
            for key, value in values.items():
                file[name].attrs[key] = value
        file.attrs["content_sha256"] = content_sha256(contents, _contents(file)[1])


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[h5py.File]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if not h5py.is_hdf5(path):
        raise SchemaError(f"{path} is not an HDF5 file")
    try:
        with h5py.File(path, "r", locking=False) as file:
            yield file
    except (OSError, RuntimeError, KeyError, UnicodeDecodeError) as error:  # HDF5's errors on bad metadata
        raise SchemaError(
            f"{path} is corrupt or truncated (HDF5 error: {error}); delete it and regenerate it"
        ) from error


def _check_schema(path: str | os.PathLike, file: h5py.File, expected: str | None) -> None:
    wanted = "an nsp-pipeline file" if expected is None else f"a {expected} file (nsp-pipeline/{expected})"
    schema = file.attrs.get("schema")
    if not isinstance(schema, str) or not schema.startswith("nsp-pipeline/"):
        raise SchemaError(
            f"{path} is an HDF5 file without an nsp-pipeline 'schema' attribute; expected {wanted}"
        )
    kind = schema.removeprefix("nsp-pipeline/")
    if kind not in KINDS:
        raise SchemaError(f"{path} has the unknown schema {schema!r}; expected {wanted}")
    if expected is not None and kind != expected:
        raise SchemaError(f"{path} is a {kind} file ({schema}), expected {wanted}; read it with read_{kind}")
    version = file.attrs.get("schema_version")
    if version == SCHEMA_VERSION:
        return
    if isinstance(version, np.integer) and 0 < version < SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema_version {version}, written by an older nsp_pipeline (its checksum does "
            f"not cover attributes); this nsp_pipeline reads version {SCHEMA_VERSION} only: delete it and "
            "regenerate it (rerun the workflow or the stage that wrote it)"
        )
    raise SchemaError(
        f"{path} has schema_version {version}; this nsp_pipeline reads version {SCHEMA_VERSION} only "
        "(a newer nsp_pipeline wrote it, or the file is corrupt: regenerate it)"
    )


def _signature(path: str | os.PathLike) -> tuple[int, ...]:
    """What identifies one version of a file: device, inode, size, modification and change times."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _read_values(path: str | os.PathLike, name: str, dataset: h5py.Dataset, rows: np.ndarray | None = None):
    """A dataset's values, or only the given rows (any order, repeats allowed) of its first axis."""
    try:
        if rows is None:
            return _read_dataset(dataset)
        unique, inverse = np.unique(rows, return_inverse=True)
        return (dataset[unique] if len(unique) else dataset[0:0])[inverse]
    except OSError as error:
        raise SchemaError(
            f"{path} is corrupt or truncated: dataset {name!r} cannot be read (HDF5 error: {error}); "
            "delete it and regenerate it"
        ) from error


def _read_file(
    path: str | os.PathLike,
    kind: str,
    required: Iterable[str] | Callable[[Mapping[str, object]], Iterable[str]] = (),
    *,
    verify: bool = True,
    per_layer: bool = False,
    rows: Callable[[Mapping[str, h5py.Dataset]], Mapping[str, np.ndarray]] | None = None,
    skip: Callable[[Mapping[str, h5py.Dataset], Mapping[str, object]], Iterable[str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Check a file and read its datasets.

    Parameters
    ----------
    path : path
        The file.
    kind : str
        Its expected kind.
    required : iterable of str, or callable
        Datasets it must have besides the layout, or a function of its root attributes giving them.
    verify : bool
        Verify the content checksum, unless this process has verified this version of the file.
    per_layer : bool
        Also require ``layers/NNN`` for each layer the file stores (its root attribute
        ``stored_layers``, or else every layer of its layout).
    rows : callable, optional
        Given the file's datasets by path, the rows (along the first axis) to read of some of them;
        the others are read whole.
    skip : callable, optional
        Given the file's datasets by path and its attributes, datasets not to return (nor read,
        unless the checksum is verified, which reads everything).

    Returns
    -------
    arrays : dict of str to numpy.ndarray
        Every dataset by path (only the requested rows of those ``rows`` names).
    attributes : dict
        The root attributes, and those of each group or dataset as ``"<object path>/<name>"``.
    """
    with _open(path) as file:
        _check_schema(path, file, kind)
        datasets, stored = _contents(file)
        attributes = {f"{owner}/{name}".lstrip("/"): value for (owner, name), value in stored.items()}
        names = [f"layout/{name}" for name in _LAYOUT_DATASETS if KINDS[kind].layout]
        with _consistent(path):
            names += required(attributes) if callable(required) else required
        if per_layer and "layout/names" in datasets:
            with _consistent(path):
                layers = _stored_layers(attributes, len(datasets["layout/names"]))
            names += [_layer_dataset(i) for i in layers]
        missing = [name for name in names if name not in datasets]
        if missing:
            raise SchemaError(
                f"{path} is corrupt or truncated: datasets {missing} of a {kind} file are missing; "
                "delete it and regenerate it"
            )
        skipped = set() if skip is None else set(skip(datasets, attributes))
        verified = _verify(path, file, datasets, stored) if verify else None
        selected = rows(datasets) if rows is not None else {}
        datasets = {name: dataset for name, dataset in datasets.items() if name not in skipped}
        if verified is not None:
            arrays = {
                name: verified[name][selected[name]] if name in selected else verified[name]
                for name in datasets
            }
        else:
            arrays = {
                name: _read_values(path, name, dataset, selected.get(name))
                for name, dataset in datasets.items()
            }
    return arrays, attributes


def _verify(
    path: str | os.PathLike,
    file: h5py.File,
    datasets: Mapping[str, h5py.Dataset],
    attributes: Mapping[tuple[str, str], object],
) -> dict[str, np.ndarray] | None:
    """Check the content checksum of an open file, unless this process has checked this version of it.

    Returns
    -------
    dict of str to numpy.ndarray or None
        Every dataset, read whole to hash it; None if the file was known to be intact.
    """
    resolved, signature = os.path.realpath(path), _signature(path)
    stored = file.attrs.get("content_sha256")
    if _VERIFIED.get(resolved) == (signature, stored):
        return None
    arrays = {name: _read_values(path, name, dataset) for name, dataset in datasets.items()}
    computed = content_sha256(arrays, attributes)
    if stored != computed:
        raise SchemaError(
            f"{path} is corrupt or truncated: content checksum {computed} does not match the "
            f"stored {stored} (the checksum covers every dataset and attribute); delete it and "
            "regenerate it"
        )
    _VERIFIED[resolved] = signature, stored
    return arrays


@contextmanager
def _consistent(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except (IndexError, KeyError, ValueError) as error:
        raise SchemaError(f"{path} has inconsistent contents ({error!r}); regenerate it") from error


def _layout_of(arrays: Mapping[str, np.ndarray]) -> Layout:
    return _layout_from({name: arrays[f"layout/{name}"] for name in _LAYOUT_DATASETS})


def read_provenance(path: str | os.PathLike, *, verify: bool = True) -> dict[str, str]:
    """Provenance attributes of any nsp-pipeline file (the root attributes the schema does not reserve).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, attributes included, once per process for each version
        of the file (see the module docstring); ``False`` skips it.

    Returns
    -------
    dict of str to str
    """
    attributes = _root_attributes(path, verify)
    return {key: str(value) for key, value in attributes.items() if key not in RESERVED_ATTRIBUTES}


def read_header(path: str | os.PathLike, *, verify: bool = True) -> dict[str, str]:
    """Kind (``graph``, ``causal_operator``, ...) and ``content_sha256`` of any nsp-pipeline file.

    The checksum identifies the file's contents, e.g. to record which operator made a spectrum.
    ``verify`` is as in :func:`read_provenance`.
    """
    attributes = _root_attributes(path, verify)
    return {
        "kind": str(attributes["schema"]).split("/")[-1],
        "content_sha256": str(attributes["content_sha256"]),
    }


def _root_attributes(path: str | os.PathLike, verify: bool) -> dict[str, object]:
    """The root attributes of any nsp-pipeline file, its checksum verified if ``verify``."""
    with _open(path) as file:
        _check_schema(path, file, None)
        if verify:
            _verify(path, file, *_contents(file))
        return dict(file.attrs)


# --------------------------------------------------------------------------- file kinds


def write_graph(path: str | os.PathLike, graph: NeuronGraph, provenance: Mapping[str, str]) -> None:
    """Write a neuron graph (``nsp-pipeline/graph``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    graph : NeuronGraph
        The graph.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    _write_file(
        path,
        "graph",
        provenance,
        {"indptr": _int64(graph.indptr), "indices": _int64(graph.indices)},
        layout=graph.layout,
        attributes={"incl": np.int8(graph.incl), "granularity": graph.granularity},
        compressed=("indices",),
    )


def read_graph(path: str | os.PathLike, *, verify: bool = True) -> NeuronGraph:
    """Read a file written by :func:`write_graph`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid graph file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "graph", ("indptr", "indices"), verify=verify)
    with _consistent(path):
        return NeuronGraph(
            layout=_layout_of(arrays),
            indptr=arrays["indptr"],
            indices=arrays["indices"],
            incl=bool(attributes["incl"]),
            granularity=str(attributes["granularity"]),
        )


def write_causal_operator(
    path: str | os.PathLike, operator: CausalOperator, provenance: Mapping[str, str]
) -> None:
    """Write a causal operator (``nsp-pipeline/causal_operator``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    operator : CausalOperator
        Strict ancestor sets.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    _write_file(
        path,
        "causal_operator",
        provenance,
        {
            "indptr": _int64(operator.indptr),
            "indices": _int64(operator.indices),
            "row_map": _int64(operator.row_map),
            "layer_rows": _int64(operator.layer_rows),
        },
        layout=operator.layout,
        compressed=("indices",),
    )


def read_causal_operator(path: str | os.PathLike, *, verify: bool = True) -> CausalOperator:
    """Read a file written by :func:`write_causal_operator`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid causal operator file, or is corrupt.
    """
    names = ("indptr", "indices", "row_map", "layer_rows")
    arrays, _ = _read_file(path, "causal_operator", names, verify=verify)
    with _consistent(path):
        return CausalOperator(_layout_of(arrays), *(arrays[name] for name in names))


#: Roles of a stored relation of a factorised operator.
_ANCESTORS, _SINGLE_PARENT = 0, 1


def write_factorized_causal_operator(
    path: str | os.PathLike, operator: FactorizedCausalOperator, provenance: Mapping[str, str]
) -> None:
    """Write a factorised causal operator (``nsp-pipeline/factorized_causal_operator``).

    Every per-axis map is stored once (maps shared by several terms are deduplicated): a
    sparse map as its ``(target, source)`` pairs, an all-to-all map as its two position lists.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    operator : FactorizedCausalOperator
        Per-layer ancestor relations.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    axis_ids: dict[int, int] = {}
    maps: list[AxisMap] = []
    relations, term_axes = [], []
    for role, per_layer in ((_ANCESTORS, operator.ancestors), (_SINGLE_PARENT, operator.single_parents)):
        for target, layer_relations in enumerate(per_layer):
            for source, relation in (layer_relations or {}).items():
                relations.append((target, source, role, len(relation.terms)))
                for term in relation.terms:
                    for axis in term.axes:
                        if id(axis) not in axis_ids:
                            axis_ids[id(axis)] = len(maps)
                            maps.append(axis)
                        term_axes.append(axis_ids[id(axis)])
    firsts, seconds = [], []
    for axis in maps:
        if axis.outer is not None:
            firsts.append(np.flatnonzero(axis.outer[0]))
            seconds.append(np.flatnonzero(axis.outer[1]))
        else:
            coo = axis.matrix.tocoo()
            firsts.append(coo.row)
            seconds.append(coo.col)
    arrays = {
        "grids": _int64(np.asarray(operator.grids).reshape(-1, 3)),
        "single_parent_layers": _int64([parents is not None for parents in operator.single_parents]),
        "relations": _int64(np.asarray(relations).reshape(-1, 4)),
        "term_axes": _int64(np.asarray(term_axes).reshape(-1, 3)),
        "axis_all_to_all": _int64([axis.outer is not None for axis in maps]),
        "axis_shapes": _int64(np.asarray([axis.shape for axis in maps]).reshape(-1, 2)),
        "axis_first_offsets": _int64(np.cumsum([0, *map(len, firsts)])),
        "axis_second_offsets": _int64(np.cumsum([0, *map(len, seconds)])),
        "axis_first": _int64(np.concatenate([*firsts, np.zeros(0)])),
        "axis_second": _int64(np.concatenate([*seconds, np.zeros(0)])),
    }
    _write_file(path, "factorized_causal_operator", provenance, arrays, layout=operator.layout)


def read_factorized_causal_operator(
    path: str | os.PathLike, *, verify: bool = True
) -> FactorizedCausalOperator:
    """Read a file written by :func:`write_factorized_causal_operator`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid factorised operator file, or is corrupt.
    """
    names = (
        "grids", "single_parent_layers", "relations", "term_axes", "axis_all_to_all", "axis_shapes",
        "axis_first_offsets", "axis_second_offsets", "axis_first", "axis_second",
    )  # fmt: skip
    arrays, _ = _read_file(path, "factorized_causal_operator", names, verify=verify)
    with _consistent(path):
        maps = []
        first, second = arrays["axis_first"], arrays["axis_second"]
        for index, (all_to_all, shape) in enumerate(zip(arrays["axis_all_to_all"], arrays["axis_shapes"])):
            rows = first[arrays["axis_first_offsets"][index] : arrays["axis_first_offsets"][index + 1]]
            cols = second[arrays["axis_second_offsets"][index] : arrays["axis_second_offsets"][index + 1]]
            shape = (int(shape[0]), int(shape[1]))
            if all_to_all:
                masks = np.zeros(shape[0], dtype=bool), np.zeros(shape[1], dtype=bool)
                masks[0][rows], masks[1][cols] = True, True
                maps.append(AxisMap(outer=masks))
            else:
                maps.append(AxisMap.from_pairs(rows, cols, shape))
        layout = _layout_of(arrays)
        grids = [tuple(int(size) for size in grid) for grid in arrays["grids"]]
        ancestors: list[dict[int, Relation]] = [{} for _ in grids]
        single_parents = [{} if flag else None for flag in arrays["single_parent_layers"]]
        axes = iter(arrays["term_axes"])
        for target, source, role, n_terms in arrays["relations"]:
            terms = [Term(*(maps[i] for i in next(axes))) for _ in range(n_terms)]
            (ancestors if role == _ANCESTORS else single_parents)[target][int(source)] = Relation(terms)
        return FactorizedCausalOperator(layout, grids, ancestors, single_parents)


def read_operator(
    path: str | os.PathLike, *, verify: bool = True
) -> CausalOperator | FactorizedCausalOperator | LaplacianOperator:
    """Read an operator file of any kind (sparse closure, factorised, Laplacian).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.
    """
    readers = {
        "causal_operator": read_causal_operator,
        "factorized_causal_operator": read_factorized_causal_operator,
        "laplacian_operator": read_laplacian_operator,
    }
    kind = read_header(path, verify=False)["kind"]  # the reader of the kind verifies the file
    if kind not in readers:
        raise SchemaError(f"{path} is a {kind} file, expected an operator file ({', '.join(readers)})")
    return readers[kind](path, verify=verify)


def write_laplacian_operator(
    path: str | os.PathLike, operator: LaplacianOperator, provenance: Mapping[str, str]
) -> None:
    """Write a Laplacian eigendecomposition (``nsp-pipeline/laplacian_operator``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    operator : LaplacianOperator
        Eigenvalues and eigenvectors.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    _write_file(
        path,
        "laplacian_operator",
        provenance,
        {"eigenvalues": _float64(operator.eigenvalues), "eigenvectors": _float64(operator.eigenvectors)},
        layout=operator.layout,
    )


def read_laplacian_operator(path: str | os.PathLike, *, verify: bool = True) -> LaplacianOperator:
    """Read a file written by :func:`write_laplacian_operator`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid Laplacian operator file, or is corrupt.
    """
    arrays, _ = _read_file(path, "laplacian_operator", ("eigenvalues", "eigenvectors"), verify=verify)
    with _consistent(path):
        return LaplacianOperator(_layout_of(arrays), arrays["eigenvalues"], arrays["eigenvectors"])


def write_pattern(
    path: str | os.PathLike,
    pattern: Pattern,
    provenance: Mapping[str, str],
    *,
    layers: Sequence[int | str] | None = None,
    dtype: str = "float64",
    compression: str = "none",
    compression_level: int = 4,
) -> None:
    """Write activations or a spectrum for a batch of samples (``nsp-pipeline/pattern``).

    Missing ``sample_ids``, ``labels`` or ``predictions`` are stored as -1 (unknown). The file's
    ``layout`` is the whole network's; with ``layers``, only those layers' datasets are stored
    (root attribute ``stored_layers``) and :func:`read_pattern` reads them back on their layout.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    pattern : Pattern
        At least one sample.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    layers : sequence of int or str, optional
        Layers to store, by index or name (default: all); per-layer diagnostics keep their columns
        (:meth:`Pattern.select_layers`).
    dtype : {"float64", "float32", "auto"}
        Storage of the values: float64; float32, rounded to nearest (relative error at most
        2⁻²⁴ per value; a causal spectrum needs float64, see ``docs/hdf5-schema.md``); or
        ``"auto"``, each layer as float32 where that keeps every value bit for bit (activations
        of a float32 model are float32 values), else as float64. Reading gives float64 values.
    compression : {"none", "gzip", "lzf"}
        HDF5 filter of the layers' datasets (with the shuffle filter), in chunks of whole samples
        where a sample's layer has at least 2²⁰ values.
    compression_level : int
        gzip's level, 0 to 9 (ignored by the other filters).

    Raises
    ------
    ValueError
        If the pattern has no samples, or an option is not one of those above.
    KeyError, IndexError
        If a layer of ``layers`` is not in the pattern's layout.
    """
    if pattern.n_samples == 0:
        raise ValueError("a pattern file holds at least one sample; got an empty batch")
    filters = _pattern_compression(compression, compression_level)
    if dtype not in PATTERN_DTYPES:
        raise ValueError(f"pattern storage dtype {dtype!r}: expected one of {PATTERN_DTYPES}")
    layout = pattern.layout
    stored = list(range(len(layout))) if layers is None else sorted({layout.index(layer) for layer in layers})
    if layers is not None:
        pattern = pattern.select_layers(stored)
    arrays = {
        _layer_dataset(index): _stored_values(values, dtype)
        for index, values in zip(stored, pattern.layers(), strict=True)
    }
    unknown = np.full(pattern.n_samples, -1)
    for name in ("sample_ids", "labels", "predictions"):
        column = getattr(pattern, name)
        arrays[name] = _int64(unknown if column is None else column)
    if pattern.eigenvalues is not None:
        arrays["eigenvalues"] = _float64(pattern.eigenvalues)
    for name, values in pattern.diagnostics.items():
        arrays[f"diagnostics/{name}"] = _float64(values)
    layer_attributes = {
        _layer_dataset(i): {
            "name": layout.layers[i].name,
            "kind": layout.layers[i].kind,
            "description": layout.layers[i].description,
            "offset": layout.offsets[i],
            "parents": _int64(layout.layers[i].parents),
        }
        for i in stored
    }
    attributes: dict[str, object] = {"domain": pattern.domain}
    if layers is not None:
        attributes["stored_layers"] = _int64(stored)
    _write_file(
        path,
        "pattern",
        provenance,
        arrays,
        layout=layout,
        attributes=attributes,
        object_attributes=layer_attributes,
        compressed=() if filters is None else tuple(_layer_dataset(index) for index in stored),
        compression=filters or Compression(),
    )


def _pattern_compression(method: str, level: int) -> Compression | None:
    """The filter of a pattern's layers (None: uncompressed), its settings checked."""
    if method not in COMPRESSIONS:
        raise ValueError(f"pattern compression {method!r}: expected one of {COMPRESSIONS}")
    if method == "gzip" and not 0 <= level <= 9:
        raise ValueError(f"gzip compression level {level}: expected 0 (fastest) to 9 (smallest)")
    return None if method == "none" else Compression(method, level)


def _stored_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """A layer's values as :func:`write_pattern` stores them with ``dtype``."""
    if dtype == "float64":
        return _float64(values)
    single = np.ascontiguousarray(values, dtype="<f4")
    if dtype == "float32" or np.array_equal(single, values, equal_nan=True):
        return single
    return _float64(values)


def _stored_layers(attributes: Mapping[str, object], n_layers: int) -> list[int]:
    """Indices of the layers a pattern file stores: its ``stored_layers``, else all of them."""
    if "stored_layers" not in attributes:
        return list(range(n_layers))
    stored = [int(index) for index in np.atleast_1d(attributes["stored_layers"])]
    if not stored or stored != sorted(set(stored)) or not 0 <= stored[0] <= stored[-1] < n_layers:
        raise ValueError(f"stored_layers {stored} are not ascending layer indices below {n_layers}")
    return stored


def pattern_storage(settings: Mapping[str, object], domain: str) -> dict[str, object]:
    """Keyword arguments of :func:`write_pattern` for a pattern of ``domain`` under ``storage`` settings.

    Activations are stored whole with ``activations_dtype`` (the transforms read every layer);
    causal (``standard``) spectra store ``layers`` (null: all) with ``spectra_dtype``; Laplacian
    spectra, whose coefficients are frequencies rather than neurons of a layer, are stored whole
    with ``spectra_dtype``. Every pattern gets ``compression`` and ``compression_level``.

    Parameters
    ----------
    settings : mapping
        The configuration's ``storage`` section, defaults filled in
        (``nsp_pipeline.core.defaults.default("storage")``).
    domain : {"activations", "standard", "laplacian"}
        The pattern's domain.
    """
    return {
        "dtype": settings["activations_dtype" if domain == "activations" else "spectra_dtype"],
        "layers": settings["layers"] if domain == "standard" else None,
        "compression": settings["compression"],
        "compression_level": settings["compression_level"],
    }


def read_pattern(
    path: str | os.PathLike,
    sample_ids: Sequence[int] | None = None,
    *,
    layers: Sequence[int | str] | None = None,
    verify: bool = True,
) -> Pattern:
    """Read a file written by :func:`write_pattern`: all its samples, or those with the given ids.

    A ``sample_ids``, ``labels`` or ``predictions`` dataset that is -1 throughout reads as None.
    Values read as float64 whatever their storage. A file that stores some layers only
    (``stored_layers``) reads as a pattern on the layout of those layers
    (:func:`nsp_pipeline.core.pattern.sub_layout`).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    sample_ids : sequence of int, optional
        Ids of the samples to read (as stored in ``sample_ids``: each sample's index in its data
        set), in the order wanted; only their rows are read from disk (after the first read of the
        file in a process, which verifies all of it).
    layers : sequence of int or str, optional
        Layers to read, by name or by index in the network's layout (the file's ``layout``);
        default, every layer the file stores. Only their datasets are read from disk (after the
        first read of the file in a process). The pattern is on the layout of these layers.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Returns
    -------
    Pattern

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid pattern file, is corrupt, holds no sample, or holds no sample of some of
        ``sample_ids``.
    LayerNotStoredError
        If a layer of ``layers`` is not in the network, or the file does not store it.
    """
    columns = ("sample_ids", "labels", "predictions")
    select = None if sample_ids is None else (lambda datasets: _sample_rows(path, datasets, sample_ids))
    chosen: list[int] = []

    def unwanted(datasets: Mapping[str, h5py.Dataset], attributes: Mapping[str, object]) -> list[str]:
        names = datasets["layout/names"].asstr()[()].tolist()
        with _consistent(path):
            stored = _stored_layers(attributes, len(names))
        chosen.extend(stored if layers is None else _chosen_layers(path, names, stored, layers))
        return [_layer_dataset(index) for index in sorted(set(stored) - set(chosen))]

    arrays, attributes = _read_file(
        path, "pattern", columns, verify=verify, per_layer=True, rows=select, skip=unwanted
    )
    if sample_ids is None and len(arrays["sample_ids"]) == 0:
        raise SchemaError(f"{path} holds no samples; a pattern file holds at least one: regenerate it")
    with _consistent(path):
        network = _layout_of(arrays)
        stored = _stored_layers(attributes, len(network))
        layout = network if chosen == list(range(len(network))) else sub_layout(network, chosen)
        metadata = {name: None if np.all(arrays[name] == -1) else arrays[name] for name in columns}
        diagnostics = {
            name.removeprefix("diagnostics/"): values
            for name, values in arrays.items()
            if name.startswith("diagnostics/")
        }
        eigenvalues = arrays.get("eigenvalues")
        if chosen != stored:  # the per-layer columns and eigenvalues of the chosen layers only
            kept = [stored.index(index) for index in chosen]
            diagnostics = {
                name: values[:, kept] if name in PER_LAYER_DIAGNOSTICS else values
                for name, values in diagnostics.items()
            }
            if eigenvalues is not None:
                stored_layout = sub_layout(network, stored)
                eigenvalues = np.concatenate([eigenvalues[stored_layout.slice(column)] for column in kept])
        return Pattern(
            layout=layout,
            values=_float64_join(layout, [arrays[_layer_dataset(index)] for index in chosen]),
            domain=str(attributes["domain"]),
            eigenvalues=eigenvalues,
            diagnostics=diagnostics,
            **metadata,
        )


def _chosen_layers(
    path: str | os.PathLike, names: Sequence[str], stored: Sequence[int], layers: Sequence[int | str]
) -> list[int]:
    """Indices of the ``layers`` a reader asks a pattern file for, each checked to be stored there."""
    chosen = set()
    for layer in layers:
        if isinstance(layer, str) and layer not in names:
            raise LayerNotStoredError(
                f"{path} has no layer named {layer!r}: its network's layers are {shortened(names)}"
            )
        if not isinstance(layer, str) and not -len(names) <= layer < len(names):
            raise LayerNotStoredError(f"{path} has no layer {layer}: its network has {len(names)} layers")
        index = names.index(layer) if isinstance(layer, str) else int(layer) % len(names)
        if index not in stored:
            raise LayerNotStoredError(
                f"{path} does not store layer {names[index]!r} (layer {index} of its network): it stores "
                f"only the layers {shortened([names[i] for i in stored])} (the storage.layers setting "
                "of the run that wrote it); read one of those, or write the file again with that layer"
            )
        chosen.add(index)
    if not chosen:
        raise LayerNotStoredError(f"no layers asked of {path}; give at least one, or None for all")
    return sorted(chosen)


def _float64_join(layout: Layout, per_layer: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_samples, n_nodes)`` float64 values in node order from per-layer arrays of any float dtype
    (converted in one pass, without an intermediate copy of the stored dtype)."""
    n_samples = per_layer[0].shape[0]
    values = np.empty((n_samples, layout.n_nodes), dtype=np.float64)
    for index, layer_values in enumerate(per_layer):
        expected = (n_samples, *layout.layers[index].shape)
        if layer_values.shape != expected:
            raise ValueError(
                f"layer {layout.layers[index].name!r} has shape {layer_values.shape}, expected {expected}"
            )
        values[:, layout.slice(index)] = layer_values.reshape(n_samples, -1)
    return values


def _sample_rows(
    path: str | os.PathLike, datasets: Mapping[str, h5py.Dataset], sample_ids: Sequence[int]
) -> dict[str, np.ndarray]:
    """Rows of the samples with the given ids, for every per-sample dataset of a pattern file."""
    stored = datasets["sample_ids"][()].tolist()
    if all(sample == -1 for sample in stored):
        raise SchemaError(f"{path} stores no sample ids; read all of its {len(stored)} samples instead")
    rows = {}
    for row, sample in enumerate(stored):
        rows.setdefault(sample, row)
    wanted = [int(sample) for sample in sample_ids]
    missing = [sample for sample in wanted if sample < 0 or sample not in rows]
    if missing:
        raise SchemaError(
            f"{path} holds no samples with ids {shortened(missing)}; it holds ids {shortened(stored)}"
        )
    positions = np.array([rows[sample] for sample in wanted], dtype=np.int64)
    per_sample = ("sample_ids", "labels", "predictions")
    return {
        name: positions
        for name in datasets
        if name in per_sample or name.startswith(("layers/", "diagnostics/"))
    }


def write_dataset_summary(
    path: str | os.PathLike, statistics: Mapping[str, ClassStatistics], provenance: Mapping[str, str]
) -> None:
    """Write the statistics of the patterns of an analysis (``nsp-pipeline/dataset_summary``).

    One group per pattern, named as in ``statistics``, holds its table (one row per sample group
    and layer, :func:`nsp_pipeline.analysis.dataset_statistics.summary_table`), its top-k counts,
    its classes and average patterns.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    statistics : mapping of str to ClassStatistics
        Each pattern's statistics (``"activations"``, a transform type), all of one layout and
        one top-k list.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.

    Raises
    ------
    ValueError
        If there is no pattern, a name cannot be a group name, or layouts or top-k lists differ.
    """
    if not statistics:
        raise ValueError("a dataset summary holds the statistics of at least one pattern; got none")
    first_name, first = next(iter(statistics.items()))
    arrays: dict[str, np.ndarray] = {}
    groups: dict[str, dict[str, object]] = {}
    for name, stats in statistics.items():
        if not name or "/" in name or name == "layout":
            raise ValueError(f"pattern name {name!r}: expected a group name without '/', other than 'layout'")
        if stats.layout != first.layout or stats.top_k != first.top_k:
            raise ValueError(f"pattern {name!r} has other layers or top-k entries than {first_name!r}")
        groups[name] = {"domain": stats.domain, "n_samples": np.int64(stats.n_samples)}
        arrays |= {f"{name}/table/{column}": values for column, values in summary_table(stats).items()}
        arrays[f"{name}/top_k_nodes"] = _int64(stats.top_k_nodes)
        arrays[f"{name}/average"] = _float64(stats.average.values[0])
        arrays[f"{name}/classes"] = _int64(stats.classes)
        arrays[f"{name}/class_average"] = _float64(stats.class_average.values)
        if stats.average.eigenvalues is not None:
            arrays[f"{name}/eigenvalues"] = _float64(stats.average.eigenvalues)
    _write_file(
        path,
        "dataset_summary",
        provenance,
        arrays,
        layout=first.layout,
        attributes={"top_k": [top_k_label(entry) for entry in first.top_k], "patterns": list(statistics)},
        object_attributes=groups,
    )


def _summary_datasets(attributes: Mapping[str, object]) -> list[str]:
    """The datasets a dataset summary must have, by its root attributes ``patterns`` and ``top_k``."""
    top_k = [top_k_entry(str(label)) for label in attributes.get("top_k", ())]
    per_pattern = [
        "top_k_nodes",
        "average",
        "classes",
        "class_average",
        *(f"table/{column}" for column in (*TABLE_COLUMNS, *top_k_columns(top_k))),
    ]
    return [f"{name}/{dataset}" for name in attributes.get("patterns", ()) for dataset in per_pattern]


def read_dataset_summary(path: str | os.PathLike, *, verify: bool = True) -> dict[str, ClassStatistics]:
    """Read a file written by :func:`write_dataset_summary`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Returns
    -------
    dict of str to ClassStatistics
        Each pattern's statistics, in the order written. Shares of the top-k list are read back
        from their labels (``"1%"`` is 0.01).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid dataset summary, or is corrupt.
    """
    arrays, attributes = _read_file(path, "dataset_summary", _summary_datasets, verify=verify)
    with _consistent(path):
        layout = _layout_of(arrays)
        top_k = tuple(top_k_entry(str(label)) for label in attributes["top_k"])
        n_layers, statistics = len(layout), {}
        for name in (str(name) for name in attributes["patterns"]):
            table = {
                key.removeprefix(f"{name}/table/"): values
                for key, values in arrays.items()
                if key.startswith(f"{name}/table/")
            }
            classes = arrays[f"{name}/classes"]
            by_group = {
                column: values.reshape(len(classes) + 1, n_layers) for column, values in table.items()
            }
            fractions = np.stack([by_group[column] for column in top_k_columns(top_k)], axis=1)
            domain, n_samples = str(attributes[f"{name}/domain"]), int(attributes[f"{name}/n_samples"])
            average = Pattern(
                layout,
                arrays[f"{name}/average"][None],
                domain,
                labels=np.array([-1]),
                eigenvalues=arrays.get(f"{name}/eigenvalues"),
            )
            statistics[name] = ClassStatistics(
                domain=domain,
                layout=layout,
                n_samples=n_samples,
                classes=classes,
                class_samples=by_group["samples"][1:, 0],
                computed_nodes=by_group["computed_nodes"][0],
                mean_energy=by_group["mean_energy"][0],
                class_mean_energy=by_group["mean_energy"][1:],
                top_k=top_k,
                top_k_nodes=arrays[f"{name}/top_k_nodes"],
                top_k_fraction=fractions[0],
                class_top_k_fraction=fractions[1:],
                average=average,
                class_average=replace(average, values=arrays[f"{name}/class_average"], labels=classes),
            )
        return statistics


def read_averages(path: str | os.PathLike, name: str, *, verify: bool = True) -> tuple[Pattern, Pattern]:
    """The average patterns of one pattern of a dataset summary: of all samples, and of each class.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`write_dataset_summary`.
    name : str
        The pattern's group, e.g. ``"standard"``.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Returns
    -------
    average, class_average : Pattern
        As in :class:`~nsp_pipeline.analysis.dataset_statistics.ClassStatistics`.

    Raises
    ------
    SchemaError
        If the file is not a valid dataset summary.
    KeyError
        If it has no pattern of that name.
    """
    statistics = read_dataset_summary(path, verify=verify)
    if name not in statistics:
        raise KeyError(f"{path} has no pattern {name!r}; it has {list(statistics)}")
    return statistics[name].average, statistics[name].class_average


def write_sweep_summary(
    path: str | os.PathLike, table: Mapping[str, np.ndarray], provenance: Mapping[str, str]
) -> None:
    """Write one table over every analysis of a sweep (``nsp-pipeline/sweep_summary``).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    table : mapping of str to numpy.ndarray
        Its columns in order, of equal length: numbers, or strings (object or unicode arrays).
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.

    Raises
    ------
    ValueError
        If the columns differ in length.
    """
    lengths = {column: len(values) for column, values in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"sweep table columns differ in length: {lengths}")
    arrays = {f"table/{column}": np.asarray(values) for column, values in table.items()}
    _write_file(path, "sweep_summary", provenance, arrays, attributes={"columns": list(table)})


def _sweep_datasets(attributes: Mapping[str, object]) -> list[str]:
    """The datasets a sweep summary must have: one per name in its root attribute ``columns``."""
    return [f"table/{column}" for column in attributes.get("columns", ())]


def read_sweep_summary(path: str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Read a file written by :func:`write_sweep_summary`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Returns
    -------
    dict of str to numpy.ndarray
        The columns in their order (strings as object arrays of ``str``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid sweep summary, or is corrupt.
    """
    arrays, attributes = _read_file(path, "sweep_summary", _sweep_datasets, verify=verify)
    with _consistent(path):
        return {str(column): arrays[f"table/{column}"] for column in attributes["columns"]}


def write_graph_summary(
    path: str | os.PathLike, summary: GraphSummary, provenance: Mapping[str, str]
) -> None:
    """Write the analytics of a weighted neuron graph (``nsp-pipeline/graph_summary``).

    Datasets: ``layer_edge_counts``; ``centralities/<name>`` (one value per node);
    ``laplacian_eigenvalues``, ``hops`` when computed; ``paths/<name>`` (node ids, attribute
    ``value``); ``blocks/<i>/heatmap`` (attributes ``source``, ``target``, ``bins``) and, for
    blocks kept whole, ``blocks/<i>/data``, ``indices``, ``indptr`` (CSR, rows: source neurons).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    summary : GraphSummary
        The analytics (:func:`nsp_pipeline.analysis.graph_summary.summarize_graph`).
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    arrays = {"layer_edge_counts": _int64(summary.layer_edge_counts)}
    arrays |= {f"centralities/{name}": _float64(values) for name, values in summary.centralities.items()}
    if summary.laplacian_eigenvalues is not None:
        arrays["laplacian_eigenvalues"] = _float64(summary.laplacian_eigenvalues)
    if summary.hops is not None:
        arrays["hops"] = _int64(summary.hops)
    groups: dict[str, dict[str, object]] = {}
    for name, (nodes, value) in summary.paths.items():
        arrays[f"paths/{name}"] = _int64(nodes)
        groups[f"paths/{name}"] = {"value": np.float64(value)}
    for number, view in enumerate(summary.blocks):
        arrays[f"blocks/{number}/heatmap"] = _float64(view.heatmap)
        if view.block is not None:
            arrays[f"blocks/{number}/data"] = _float64(view.block.data)
            arrays[f"blocks/{number}/indices"] = _int64(view.block.indices)
            arrays[f"blocks/{number}/indptr"] = _int64(view.block.indptr)
        groups[f"blocks/{number}"] = {
            "source": np.int64(view.source),
            "target": np.int64(view.target),
            "bins": np.asarray(view.bins, dtype=np.int64),
        }
    _write_file(
        path,
        "graph_summary",
        provenance,
        arrays,
        layout=summary.layout,
        attributes={
            "weight_kind": summary.weight_kind,
            "density": np.float64(summary.density),
            "n_edges": np.int64(summary.n_edges),
            "analytics_settings": json.dumps(summary.settings, sort_keys=True),
            "centralities": list(summary.centralities),
            "paths": list(summary.paths),
            "blocks": np.int64(len(summary.blocks)),
        },
        object_attributes=groups,
    )


def _graph_summary_datasets(attributes: Mapping[str, object]) -> list[str]:
    """The datasets a graph summary must have, by its root attributes."""
    names = ["layer_edge_counts"]
    names += [f"centralities/{name}" for name in attributes.get("centralities", ())]
    names += [f"paths/{name}" for name in attributes.get("paths", ())]
    return names + [f"blocks/{number}/heatmap" for number in range(int(attributes.get("blocks", 0)))]


def read_graph_summary(path: str | os.PathLike, *, verify: bool = True) -> GraphSummary:
    """Read a file written by :func:`write_graph_summary`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid graph summary, or is corrupt.
    """
    arrays, attributes = _read_file(path, "graph_summary", _graph_summary_datasets, verify=verify)
    with _consistent(path):
        layout = _layout_of(arrays)
        blocks = []
        for number in range(int(attributes["blocks"])):
            prefix = f"blocks/{number}"
            source, target = int(attributes[f"{prefix}/source"]), int(attributes[f"{prefix}/target"])
            block = None
            if f"{prefix}/data" in arrays:
                shape = (layout.layers[source].size, layout.layers[target].size)
                block = sp.csr_array(
                    (arrays[f"{prefix}/data"], arrays[f"{prefix}/indices"], arrays[f"{prefix}/indptr"]),
                    shape=shape,
                )
            bins = tuple(int(b) for b in attributes[f"{prefix}/bins"])
            blocks.append(BlockView(source, target, arrays[f"{prefix}/heatmap"], bins, block))
        return GraphSummary(
            layout=layout,
            weight_kind=str(attributes["weight_kind"]),
            n_edges=int(attributes["n_edges"]),
            density=float(attributes["density"]),
            layer_edge_counts=arrays["layer_edge_counts"],
            centralities={str(name): arrays[f"centralities/{name}"] for name in attributes["centralities"]},
            laplacian_eigenvalues=arrays.get("laplacian_eigenvalues"),
            paths={
                str(name): (arrays[f"paths/{name}"], float(attributes[f"paths/{name}/value"]))
                for name in attributes["paths"]
            },
            hops=arrays.get("hops"),
            blocks=tuple(blocks),
            settings=json.loads(str(attributes["analytics_settings"])),
        )


def write_attribution_maps(
    path: str | os.PathLike, maps: AttributionMaps, provenance: Mapping[str, str]
) -> None:
    """Write the maps of a batch of samples (``nsp-pipeline/attribution_maps``).

    The datasets are :meth:`AttributionMaps.to_arrays`'s (``maps/<method>``, ``values``,
    ``receptive_field/boxes``, ...); the root attribute ``attribution_metadata`` holds
    :meth:`AttributionMaps.attributes` as JSON (targets, methods and their parameters).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    maps : AttributionMaps
        The maps (:func:`nsp_pipeline.interpret.maps.interpret`).
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    arrays = {name: np.ascontiguousarray(values) for name, values in maps.to_arrays().items()}
    metadata = json.dumps(maps.attributes(), sort_keys=True)
    _write_file(path, "attribution_maps", provenance, arrays, attributes={"attribution_metadata": metadata})


def _attribution_datasets(attributes: Mapping[str, object]) -> list[str]:
    """The datasets an attribution maps file must have, by its metadata's methods."""
    metadata = json.loads(str(attributes.get("attribution_metadata", "{}")))
    return ["inputs", "values", "sample_ids", *(f"maps/{method}" for method in metadata.get("methods", ()))]


def read_attribution_maps(path: str | os.PathLike, *, verify: bool = True) -> AttributionMaps:
    """Read a file written by :func:`write_attribution_maps`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    verify : bool, default True
        Verify the SHA-256 of the contents, once per process for each version of the file (see
        the module docstring); ``False`` skips it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid attribution maps file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "attribution_maps", _attribution_datasets, verify=verify)
    with _consistent(path):
        return AttributionMaps.from_arrays(arrays, json.loads(str(attributes["attribution_metadata"])))


def write_minimal_images(
    path: str | os.PathLike,
    results: Sequence[tuple[int, MinimalImage | MaskedImage]],
    provenance: Mapping[str, str],
) -> None:
    """Write minimal and masked images of samples (``nsp-pipeline/minimal_images``).

    Result ``i`` is the group ``results/<i>``: its datasets are the result's ``to_arrays()``, its
    attribute ``metadata`` the JSON of its ``attributes()`` with the sample id. The root attribute
    ``results`` counts them.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    results : sequence of (int, MinimalImage or MaskedImage)
        Each result with the id of its sample.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    arrays, groups = {}, {}
    for number, (sample_id, result) in enumerate(results):
        arrays |= {f"results/{number}/{name}": np.asarray(v) for name, v in result.to_arrays().items()}
        metadata = {**result.attributes(), "sample_id": int(sample_id)}
        groups[f"results/{number}"] = {"metadata": json.dumps(metadata, sort_keys=True)}
    attributes = {"results": np.int64(len(results))}
    _write_file(path, "minimal_images", provenance, arrays, attributes=attributes, object_attributes=groups)


def read_minimal_images(
    path: str | os.PathLike, *, verify: bool = True
) -> list[tuple[int, MinimalImage | MaskedImage]]:
    """Read a file written by :func:`write_minimal_images`: ``(sample id, result)`` pairs in order.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid minimal images file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "minimal_images", verify=verify)
    results = []
    with _consistent(path):
        for number in range(int(attributes["results"])):
            prefix = f"results/{number}/"
            metadata = json.loads(str(attributes[f"results/{number}/metadata"]))
            own = {name[len(prefix) :]: values for name, values in arrays.items() if name.startswith(prefix)}
            kind = MaskedImage if "masks" in own else MinimalImage
            results.append((int(metadata["sample_id"]), kind.from_arrays(own, metadata)))
    return results


def write_synthesis(path: str | os.PathLike, result: SynthesisResult, provenance: Mapping[str, str]) -> None:
    """Write synthesised inputs (``nsp-pipeline/synthesis``).

    The datasets are :meth:`SynthesisResult.to_arrays`'s (``inputs``, ``trajectory``, ``values``);
    the root attribute ``synthesis_metadata`` holds :meth:`SynthesisResult.attributes` as JSON.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    result : SynthesisResult
        What :func:`nsp_pipeline.interpret.synthesis.synthesize` returned.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    arrays = {name: np.ascontiguousarray(values) for name, values in result.to_arrays().items()}
    metadata = json.dumps(result.attributes(), sort_keys=True)
    _write_file(path, "synthesis", provenance, arrays, attributes={"synthesis_metadata": metadata})


def read_synthesis(path: str | os.PathLike, *, verify: bool = True) -> SynthesisResult:
    """Read a file written by :func:`write_synthesis`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid synthesis file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "synthesis", ("inputs", "trajectory", "values"), verify=verify)
    with _consistent(path):
        return SynthesisResult.from_arrays(arrays, json.loads(str(attributes["synthesis_metadata"])))


def write_regions(path: str | os.PathLike, partition: RegionPartition, provenance: Mapping[str, str]) -> None:
    """Write the linear regions of a slice (``nsp-pipeline/regions``).

    The datasets are :meth:`RegionPartition.to_arrays`'s (cells as vertex arrays with offsets,
    patterns, affine maps, per-cell facts, the decision boundary, the slice); the root attribute
    ``regions_metadata`` holds :meth:`RegionPartition.attributes` as JSON. Large arrays are
    compressed.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    partition : RegionPartition
        What :func:`nsp_pipeline.interpret.regions.linear_regions` returned.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.
    """
    arrays = {name: np.ascontiguousarray(values) for name, values in partition.to_arrays().items()}
    metadata = json.dumps(partition.attributes(), sort_keys=True)
    large = tuple(name for name, values in arrays.items() if values.size > 4096)
    _write_file(
        path, "regions", provenance, arrays, attributes={"regions_metadata": metadata}, compressed=large
    )


def read_regions(path: str | os.PathLike, *, verify: bool = True) -> RegionPartition:
    """Read a file written by :func:`write_regions`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid regions file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "regions", ("vertices", "offsets", "areas"), verify=verify)
    with _consistent(path):
        return RegionPartition.from_arrays(arrays, json.loads(str(attributes["regions_metadata"])))
