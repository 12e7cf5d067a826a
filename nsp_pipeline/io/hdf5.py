"""HDF5 files of the pipeline: neuron graphs, operators and patterns in one documented schema.

Every file has the root attributes ``schema`` (``"nsp-pipeline/<kind>"``), ``schema_version``,
the provenance attributes and ``content_sha256``, and a ``layout`` group. The full schema is in
``docs/hdf5-schema.md``. Writes are atomic (temporary name, then rename) and bit-reproducible;
reads check the kind, the required datasets and the checksum.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.transforms.causal.closure import CausalOperator
from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator
from nsp_pipeline.transforms.laplacian import LaplacianOperator

#: Version of the schema written by this module; readers accept only this version.
SCHEMA_VERSION = 1

#: File kinds; the root attribute ``schema`` is ``"nsp-pipeline/<kind>"``.
KINDS = ("graph", "causal_operator", "factorized_causal_operator", "laplacian_operator", "pattern")

#: Root attributes that belong to the schema, not to the provenance.
RESERVED_ATTRIBUTES = frozenset(
    {"schema", "schema_version", "content_sha256", "incl", "granularity", "domain"}
)

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


class SchemaError(ValueError):
    """A file is not a valid nsp-pipeline HDF5 file of the expected kind."""


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


def _create(group: h5py.Group, name: str, values: np.ndarray, compress: bool = False) -> h5py.Dataset:
    options = {}
    if compress and values.size:
        options = {
            "chunks": (min(values.size, _CHUNK),),
            "compression": "gzip",
            "compression_opts": 4,
            "shuffle": True,
        }
    return group.create_dataset(name, data=values, track_times=False, **options)


def _read_dataset(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[()]
    return dataset[()]


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """Checksum of a file's datasets, stored in its root attribute ``content_sha256``.

    For every dataset in sorted path order (relative to the root, e.g. ``layout/names``),
    the digest covers ``"{path}\\0{dtype}\\0{comma-separated shape}\\0"`` (UTF-8; dtype is
    numpy's ``dtype.str`` such as ``"<i8"``, or ``"utf-8"`` for strings) followed by the
    data: raw little-endian bytes in C order, or for strings each value's UTF-8 bytes
    preceded by their length as 8-byte little-endian integer.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        Every dataset of the file by path.

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for path in sorted(arrays):
        values = arrays[path]
        shape = ",".join(str(size) for size in values.shape)
        if values.dtype.kind == "O":
            digest.update(f"{path}\0utf-8\0{shape}\0".encode())
            for value in values.ravel():
                encoded = str(value).encode()
                digest.update(len(encoded).to_bytes(8, "little") + encoded)
        else:
            values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
            digest.update(f"{path}\0{values.dtype.str}\0{shape}\0".encode())
            digest.update(values.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _write_file(
    path: str | os.PathLike,
    kind: str,
    provenance: Mapping[str, str],
    layout: Layout,
    arrays: Mapping[str, np.ndarray],
    attributes: Mapping[str, object] | None = None,
    dataset_attributes: Mapping[str, Mapping[str, object]] | None = None,
    compressed: tuple[str, ...] = (),
) -> None:
    clashes = sorted(RESERVED_ATTRIBUTES & provenance.keys())
    if clashes:
        raise ValueError(f"provenance keys {clashes} are reserved by the schema")
    contents = {f"layout/{name}": values for name, values in _layout_arrays(layout).items()} | dict(arrays)
    with atomic_output(path) as temporary, h5py.File(temporary, "w", locking=False) as file:
        file.attrs["schema"] = f"nsp-pipeline/{kind}"
        file.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        for key in sorted(provenance):
            file.attrs[key] = str(provenance[key])
        for key, value in (attributes or {}).items():
            file.attrs[key] = value
        write_layout(file.create_group("layout"), layout)
        for name, values in arrays.items():
            dataset = _create(file, name, values, compress=name in compressed)
            for key, value in (dataset_attributes or {}).get(name, {}).items():
                dataset.attrs[key] = value
        file.attrs["content_sha256"] = content_sha256(contents)


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
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema_version {version}; this nsp_pipeline reads version {SCHEMA_VERSION}"
        )


def _read_file(
    path: str | os.PathLike, kind: str, required: tuple[str, ...], per_layer: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Check and read every dataset; ``per_layer`` also requires ``layers/NNN`` for each layer."""
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, item: h5py.Dataset | h5py.Group) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = _read_dataset(item)

    with _open(path) as file:
        _check_schema(path, file, kind)
        attributes = dict(file.attrs)
        file.visititems(collect)
    n_layers = len(arrays.get("layout/names", ())) if per_layer else 0
    layers = (_layer_dataset(i) for i in range(n_layers))
    missing = [
        name
        for name in (*(f"layout/{name}" for name in _LAYOUT_DATASETS), *required, *layers)
        if name not in arrays
    ]
    if missing:
        raise SchemaError(
            f"{path} is corrupt or truncated: datasets {missing} of a {kind} file are missing; "
            "delete it and regenerate it"
        )
    stored, computed = attributes.get("content_sha256"), content_sha256(arrays)
    if stored != computed:
        raise SchemaError(
            f"{path} is corrupt or truncated: content checksum {computed} does not match the stored "
            f"{stored}; delete it and regenerate it"
        )
    return arrays, attributes


@contextmanager
def _consistent(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except (IndexError, KeyError, ValueError) as error:
        raise SchemaError(f"{path} has inconsistent contents ({error!r}); regenerate it") from error


def _layout_of(arrays: Mapping[str, np.ndarray]) -> Layout:
    return _layout_from({name: arrays[f"layout/{name}"] for name in _LAYOUT_DATASETS})


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    """Provenance attributes of any nsp-pipeline file (the root attributes the schema does not reserve).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict of str to str
    """
    with _open(path) as file:
        _check_schema(path, file, None)
        return {key: str(value) for key, value in file.attrs.items() if key not in RESERVED_ATTRIBUTES}


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """Kind (``graph``, ``causal_operator``, ...) and ``content_sha256`` of any nsp-pipeline file.

    The checksum identifies the file's contents, e.g. to record which operator made a spectrum.
    """
    with _open(path) as file:
        _check_schema(path, file, None)
        return {
            "kind": str(file.attrs["schema"]).split("/")[-1],
            "content_sha256": str(file.attrs["content_sha256"]),
        }


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
        graph.layout,
        {"indptr": _int64(graph.indptr), "indices": _int64(graph.indices)},
        attributes={"incl": np.int8(graph.incl), "granularity": graph.granularity},
        compressed=("indices",),
    )


def read_graph(path: str | os.PathLike) -> NeuronGraph:
    """Read a file written by :func:`write_graph`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid graph file, or is corrupt.
    """
    arrays, attributes = _read_file(path, "graph", ("indptr", "indices"))
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
        operator.layout,
        {
            "indptr": _int64(operator.indptr),
            "indices": _int64(operator.indices),
            "row_map": _int64(operator.row_map),
            "layer_rows": _int64(operator.layer_rows),
        },
        compressed=("indices",),
    )


def read_causal_operator(path: str | os.PathLike) -> CausalOperator:
    """Read a file written by :func:`write_causal_operator`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid causal operator file, or is corrupt.
    """
    names = ("indptr", "indices", "row_map", "layer_rows")
    arrays, _ = _read_file(path, "causal_operator", names)
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
    _write_file(path, "factorized_causal_operator", provenance, operator.layout, arrays)


def read_factorized_causal_operator(path: str | os.PathLike) -> FactorizedCausalOperator:
    """Read a file written by :func:`write_factorized_causal_operator`.

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
    arrays, _ = _read_file(path, "factorized_causal_operator", names)
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


def read_operator(path: str | os.PathLike) -> CausalOperator | FactorizedCausalOperator | LaplacianOperator:
    """Read an operator file of any kind (sparse closure, factorised, Laplacian)."""
    readers = {
        "causal_operator": read_causal_operator,
        "factorized_causal_operator": read_factorized_causal_operator,
        "laplacian_operator": read_laplacian_operator,
    }
    kind = read_header(path)["kind"]
    if kind not in readers:
        raise SchemaError(f"{path} is a {kind} file, expected an operator file ({', '.join(readers)})")
    return readers[kind](path)


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
        operator.layout,
        {"eigenvalues": _float64(operator.eigenvalues), "eigenvectors": _float64(operator.eigenvectors)},
    )


def read_laplacian_operator(path: str | os.PathLike) -> LaplacianOperator:
    """Read a file written by :func:`write_laplacian_operator`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid Laplacian operator file, or is corrupt.
    """
    arrays, _ = _read_file(path, "laplacian_operator", ("eigenvalues", "eigenvectors"))
    with _consistent(path):
        return LaplacianOperator(_layout_of(arrays), arrays["eigenvalues"], arrays["eigenvectors"])


def write_pattern(path: str | os.PathLike, pattern: Pattern, provenance: Mapping[str, str]) -> None:
    """Write activations or a spectrum for a batch of samples (``nsp-pipeline/pattern``).

    Missing ``sample_ids``, ``labels`` or ``predictions`` are stored as -1 (unknown).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, replaced atomically.
    pattern : Pattern
        At least one sample.
    provenance : mapping of str to str
        Root attributes from :func:`nsp_pipeline.io.provenance.provenance`.

    Raises
    ------
    ValueError
        If the pattern has no samples.
    """
    if pattern.n_samples == 0:
        raise ValueError("a pattern file holds at least one sample; got an empty batch")
    layout = pattern.layout
    arrays = {_layer_dataset(i): _float64(values) for i, values in enumerate(pattern.layers())}
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
            "name": layer.name,
            "kind": layer.kind,
            "description": layer.description,
            "offset": layout.offsets[i],
            "parents": _int64(layer.parents),
        }
        for i, layer in enumerate(layout.layers)
    }
    _write_file(
        path,
        "pattern",
        provenance,
        layout,
        arrays,
        attributes={"domain": pattern.domain},
        dataset_attributes=layer_attributes,
    )


def read_pattern(path: str | os.PathLike) -> Pattern:
    """Read a file written by :func:`write_pattern`.

    A ``sample_ids``, ``labels`` or ``predictions`` dataset that is -1 throughout reads as None.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SchemaError
        If it is not a valid pattern file, or is corrupt.
    """
    columns = ("sample_ids", "labels", "predictions")
    arrays, attributes = _read_file(path, "pattern", columns, per_layer=True)
    with _consistent(path):
        layout = _layout_of(arrays)
        metadata = {name: None if np.all(arrays[name] == -1) else arrays[name] for name in columns}
        return Pattern(
            layout=layout,
            values=layout.join([arrays[_layer_dataset(i)] for i in range(len(layout))]),
            domain=str(attributes["domain"]),
            eigenvalues=arrays.get("eigenvalues"),
            diagnostics={
                name.removeprefix("diagnostics/"): values
                for name, values in arrays.items()
                if name.startswith("diagnostics/")
            },
            **metadata,
        )
