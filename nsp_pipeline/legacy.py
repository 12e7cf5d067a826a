"""The predecessor ``nsp``'s API, on top of nsp-pipeline.

``import nsp_pipeline as nsp`` runs ``nsp``'s README example and its tutorials unchanged::

    activations = nsp.Activations(network, image)
    graph = nsp.NNGraph(activations)
    spectrum = graph.transform(activations)
    nsp.Visualizer.visualize_pattern(spectrum, pdf_filepath="spectrum.pdf", scale="layernorm")
    nsp.OutputLoader.save(graph, "graph.obj")  # HDF5, whatever the extension

Semantics follow ``nsp``: the ``children`` granularity, layer 0 is the input, node order
layer by layer in C order, ``INCL``, and transform types ``standard`` / ``laplacian``.
:class:`NNGraph` is a read-only ``networkx.DiGraph``, as ``nsp`` documents it, built on first
use of the DiGraph API. :class:`OutputLoader` stores HDF5 (:mod:`nsp_pipeline.io.hdf5`), never a
pickle, and reads the pickles of the original ``nsp`` only when told they are trusted.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import tempfile
from functools import cached_property
from pathlib import Path

import h5py
import networkx as nx
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from networkx.classes.reportviews import NodeView
from torch import nn

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.build import graph_from_trace
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.provenance import provenance
from nsp_pipeline.model.capture import trace
from nsp_pipeline.render.pages import render_pattern
from nsp_pipeline.transforms.api import TRANSFORM_TYPES, compute_operator, transform
from nsp_pipeline.transforms.causal.closure import CausalOperator
from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator
from nsp_pipeline.transforms.laplacian import LaplacianOperator, laplacian_matrix


class Activations:
    """Activation pattern of a network for one input (``nsp.Activations``).

    Parameters
    ----------
    network : nn.Module
        The network; its direct children are the layers.
    input : torch.Tensor
        One input with a batch axis of size 1.

    Attributes
    ----------
    layernames : list of str
        ``"input"`` and the children's names.
    layerdescriptions : list
        ``"Input[...]"`` and the children modules.
    layeractivations : list of torch.Tensor
        Each layer's values without the batch axis.
    pattern : Pattern
        The same values as a :class:`~nsp_pipeline.core.pattern.Pattern`.

    Notes
    -----
    Activations read by :meth:`OutputLoader.load` hold their values, names and the text of their
    layer descriptions, not the network: they transform and render, but a :class:`NNGraph` is
    built from activations of the network itself.
    """

    def __init__(self, network: nn.Module, input: torch.Tensor) -> None:
        if input.shape[0] != 1:
            raise ValueError(
                f"nsp.Activations takes one input (batch size 1), got a batch of {input.shape[0]}; "
                "use nsp_pipeline.trace(model, inputs).pattern() for batches"
            )
        self._trace = trace(network, input, "children")
        modules = dict(network.named_children())
        self.layernames = list(self._trace.layout.names)
        self.layerdescriptions = [f"Input{list(input.shape)}"] + [
            modules.get(name, layer.description)
            for name, layer in zip(self.layernames[1:], self._trace.layout.layers[1:])
        ]
        self.pattern = self._trace.pattern()
        self.layeractivations = [torch.from_numpy(v[0]) for v in self.pattern.layers()]

    @classmethod
    def _loaded(cls, pattern: Pattern, layerdescriptions: list[str]) -> Activations:
        """Activations read from a file: no network behind them, descriptions as text."""
        result = cls.__new__(cls)
        result._trace = None
        result.layernames = list(pattern.layout.names)
        result.layerdescriptions = list(layerdescriptions)
        return result._with_pattern(pattern)

    def to_vector(self) -> list[float]:
        """All values in node order, as a list."""
        return self.pattern.values[0].tolist()

    def to_activations(self, signal) -> Activations:
        """A copy of this object holding ``signal`` (node order) instead of the activations."""
        return self._with_pattern(
            self.pattern.with_values(np.asarray(signal, dtype=np.float64), self.pattern.domain)
        )

    def _with_pattern(self, pattern: Pattern) -> Activations:
        result = copy.copy(self)
        result.pattern = pattern
        result.layeractivations = [torch.from_numpy(v[0]) for v in pattern.layers()]
        return result


class _GraphAttributes(dict):
    """networkx's graph attribute dict (``G.graph``) of an :class:`NNGraph`, which reads as its neuron graph.

    ``NNGraph.graph`` was the :class:`~nsp_pipeline.graph.neuron_graph.NeuronGraph` before
    :class:`NNGraph` became a ``networkx.DiGraph``, whose ``graph`` is a dict of graph attributes.
    This dict serves both: networkx reads and writes its items, and attribute access
    (``graph.graph.layout``, ``graph.graph.adjacency()``) reaches the neuron graph, which
    :attr:`NNGraph.neuron_graph` names directly.
    """

    def __getattr__(self, name: str):
        neuron_graph = self.__dict__.get("_neuron_graph")
        if neuron_graph is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(neuron_graph, name)


class _Materialised:
    """The node and adjacency dicts of :class:`NNGraph`, built from its neuron graph on first read.

    Wraps networkx's own descriptor of the attribute (which resets the cached views on write).
    """

    def __init__(self, networkx_descriptor) -> None:
        self._networkx_descriptor = networkx_descriptor

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, graph, owner=None):
        if graph is None:
            return self
        if graph.__dict__.get("_pending") is not None:
            graph._materialise()
        try:
            return graph.__dict__[self._name]
        except KeyError:
            raise AttributeError(f"{type(graph).__name__!r} object has no attribute {self._name!r}") from None

    def __set__(self, graph, value) -> None:
        self._networkx_descriptor.__set__(graph, value)


class _NodeView(NodeView):
    """networkx's node view, equal to a list or tuple of the same keys in the same order.

    ``NNGraph.nodes`` was a list of node keys in node order; comparisons with lists keep working.
    """

    def __eq__(self, other):
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return super().__eq__(other)

    __hash__ = None


class NNGraph(nx.DiGraph):
    """Neuron DAG of a network (``nsp.NNGraph``): a ``networkx.DiGraph``, with lazily computed transforms.

    The nodes are ``nsp``'s keys ``(layer, *index)`` (layer 0 is the input), the edges the
    original's, without attributes (or with ``weight`` on a weighted neuron graph). The DiGraph is
    built on first use of its API (0.4 s for the 9,594 neurons and 474,240 edges of ``nsp``'s
    MNIST tutorial network) and is read-only (``networkx.freeze``): the transforms are computed
    from :attr:`neuron_graph`, so the two cannot diverge. ``networkx.DiGraph(graph)`` or
    ``graph.copy()`` gives a mutable copy (without transforms).

    Parameters
    ----------
    activations : Activations, optional
        Any activation pattern of the network (the graph does not depend on its values,
        except for ``INCL=False``, which keeps only edges with non-zero partial derivative there).
        Without it, an empty plain DiGraph (what networkx's ``copy``, ``subgraph`` and
        ``reverse`` construct).
    INCL : bool
        Keep every structural edge, even with weight 0.
    **attr
        Graph attributes (``networkx.DiGraph``'s).

    Attributes
    ----------
    neuron_graph : NeuronGraph
        The modern graph object (CSR); also reachable as ``graph.graph`` (see below).
    graph : dict
        networkx's graph attributes; its attributes are the neuron graph's (``graph.graph.layout``).
    inv_F : scipy.sparse.csr_array
        The inverse Fourier matrix of the standard transform, computed on first read.
    lu_piv : tuple of numpy.ndarray or None
        ``nsp``'s LU decomposition of the Laplacian eigenvector matrix; None until the Laplacian
        transform is computed.

    Notes
    -----
    Differences from ``nsp``: :meth:`get_transformer` returns the operator (not ``inv_F`` or
    ``lu_piv``, which are attributes here as there); ``inv_F`` is computed when read, where
    ``nsp`` gives None before :meth:`get_transformer`.
    """

    graph_attr_dict_factory = _GraphAttributes
    _node = _Materialised(vars(nx.Graph)["_node"])
    _adj = _Materialised(vars(nx.DiGraph)["_adj"])
    _succ = _Materialised(vars(nx.DiGraph)["_succ"])
    _pred = _Materialised(vars(nx.DiGraph)["_pred"])

    def __init__(self, activations: Activations | None = None, INCL: bool = True, **attr) -> None:
        super().__init__(**attr)
        self.INCL = INCL
        self._operators: dict[str, object] = {}
        if activations is None:
            return
        if not isinstance(activations, Activations):
            raise TypeError(f"NNGraph is built from nsp.Activations, got {type(activations).__name__}")
        if activations._trace is None:
            raise ValueError(
                "these Activations were read from a file and hold no network; build the NNGraph "
                "from nsp.Activations(network, input), or load a saved NNGraph with nsp.OutputLoader.load"
            )
        self._attach(graph_from_trace(activations._trace, incl=INCL))

    @classmethod
    def _from_parts(cls, neuron_graph: NeuronGraph, operators: dict[str, object]) -> NNGraph:
        """An NNGraph of a stored neuron graph and its computed operators."""
        result = cls(INCL=neuron_graph.incl)
        result._attach(neuron_graph)
        result._operators.update(operators)
        return result

    def _attach(self, neuron_graph: NeuronGraph) -> None:
        """Make this (empty) graph the read-only DiGraph view of ``neuron_graph``."""
        self.graph._neuron_graph = neuron_graph
        self._neuron_graph = neuron_graph
        self._pending = neuron_graph
        nx.freeze(self)

    def _materialise(self) -> None:
        """Build networkx's node and adjacency dicts from the neuron graph."""
        neuron_graph, self._pending = self._pending, None
        layout = neuron_graph.layout
        keys = [
            (index, *position)
            for index, layer in enumerate(layout.layers)
            for position in np.ndindex(layer.shape)
        ]
        successors: dict[tuple, dict] = {key: {} for key in keys}
        predecessors: dict[tuple, dict] = {key: {} for key in keys}
        targets = np.repeat(np.arange(layout.n_nodes), np.diff(neuron_graph.indptr)).tolist()
        sources = neuron_graph.indices.tolist()
        if neuron_graph.weights is None:
            data = ({} for _ in sources)
        else:
            data = ({"weight": weight} for weight in neuron_graph.weights.tolist())
        for source, target, attributes in zip(sources, targets, data):
            successors[keys[source]][keys[target]] = predecessors[keys[target]][keys[source]] = attributes
        self._node = {key: {} for key in keys}
        self._adj = successors
        self._pred = predecessors

    @property
    def neuron_graph(self) -> NeuronGraph | None:
        """The neuron graph (CSR) this DiGraph views; None for a plain (copied) DiGraph."""
        return self.__dict__.get("_neuron_graph")

    def _require_neuron_graph(self) -> NeuronGraph:
        if self.neuron_graph is None:
            raise ValueError(
                "this NNGraph holds no neuron graph (a copy or view networkx made); transforms need "
                "the NNGraph built from nsp.Activations or loaded with nsp.OutputLoader.load"
            )
        return self.neuron_graph

    def __len__(self) -> int:
        """Number of nodes."""
        return self.number_of_nodes()

    def number_of_nodes(self) -> int:
        """Number of nodes (without building the DiGraph)."""
        if self.neuron_graph is None:
            return super().number_of_nodes()
        return self.neuron_graph.n_nodes

    def number_of_edges(self, u=None, v=None) -> int:
        """Number of edges, or of edges from ``u`` to ``v`` (networkx's signature)."""
        if self.neuron_graph is None or u is not None or v is not None:
            return super().number_of_edges(u, v)
        return self.neuron_graph.n_edges

    @cached_property
    def nodes(self) -> NodeView:
        """networkx's node view: keys ``(layer, *index)`` in node order (equal to a list of them)."""
        return _NodeView(self)

    def node_id(self, node: tuple[int, ...]) -> int:
        """Index of a node key ``(layer, *index)`` in the node order."""
        layer, *index = node
        layout = self._require_neuron_graph().layout
        shape = layout.layers[layer].shape
        return int(layout.offsets[layer]) + int(np.ravel_multi_index(index, shape))

    def get_transformer(self, type: str = "standard"):
        """Compute (once) and return the operator of a transform type.

        Parameters
        ----------
        type : {"standard", "laplacian"}
            The transform.

        Returns
        -------
        CausalOperator or LaplacianOperator
            The operator (``nsp`` returned ``inv_F`` or ``lu_piv``, both attributes here).
        """
        if type not in TRANSFORM_TYPES:
            raise NotImplementedError(f"transform type {type!r}; expected one of {TRANSFORM_TYPES}")
        if type not in self._operators:
            self._operators[type] = compute_operator(self._require_neuron_graph(), type)
        return self._operators[type]

    def compute_transformer(self, type: str = "standard"):
        """:meth:`get_transformer` under the name ``nsp``'s attribute documentation uses."""
        return self.get_transformer(type)

    @property
    def inv_F(self) -> sp.csr_array:
        """The inverse Fourier matrix ``Z`` (reflexive transitive closure) as sparse CSR."""
        return self.get_transformer("standard").zeta()

    @property
    def lu_piv(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``scipy.linalg.lu_factor`` of the Laplacian eigenvector matrix, as ``nsp`` stores it.

        None until the Laplacian transform is computed (:meth:`get_transformer` or
        :meth:`transform` with ``type="laplacian"``); then computed once, on first read
        (``O(n³)``). The transforms do not need it: the eigenvectors are orthonormal, so
        ``lu_solve(lu_piv, s)`` is ``Uᵀ s``.
        """
        operator = self._operators.get("laplacian")
        if operator is None:
            return None
        if "_lu_piv" not in self.__dict__:
            if operator.is_partial:
                raise ValueError(
                    f"lu_piv needs the full Laplacian eigenbasis; this operator holds {operator.k} "
                    f"of {operator.n_nodes} eigenvectors"
                )
            self._lu_piv = scipy.linalg.lu_factor(operator.eigenvectors)
        return self._lu_piv

    def transform(self, activations: Activations, type: str = "standard") -> Activations:
        """Spectrum of ``activations`` as an :class:`Activations` object."""
        return activations._with_pattern(transform(activations.pattern, self.get_transformer(type)))

    def to_networkx(self) -> nx.DiGraph:
        """A mutable ``networkx.DiGraph`` copy, with the graph attributes ``incl`` and ``granularity``."""
        return self._require_neuron_graph().to_networkx()


class Transformer:
    """``nsp.Transformer``: the transforms as functions of a graph and of ``inv_F`` / ``lu_piv``."""

    @staticmethod
    def get_laplacian(graph: NNGraph) -> sp.csr_array:
        """``L = D - W`` of the undirected graph, in node order (``nsp``: integer entries; here float)."""
        return laplacian_matrix(graph._require_neuron_graph())

    @staticmethod
    def get_inv_fourier_matrix(graph: NNGraph, type: str = "standard"):
        """``inv_F`` (``type="standard"``) or ``lu_piv`` (``type="laplacian"``) of ``graph``.

        Both are computed once per graph and kept on it, as :meth:`NNGraph.get_transformer` does.
        """
        graph.get_transformer(type)
        return graph.inv_F if type == "standard" else graph.lu_piv

    @staticmethod
    def get_fourier_coefficients(
        activations: Activations, inv_F=None, type: str = "standard", lu_piv=None
    ) -> Activations:
        """Spectrum of ``activations`` from ``inv_F`` or ``lu_piv``, computed as ``nsp`` does.

        Parameters
        ----------
        activations : Activations
            Activations of one input.
        inv_F : scipy.sparse matrix, optional
            Lower-triangular inverse Fourier matrix (``type="standard"``): the spectrum solves
            ``inv_F ŝ = s`` by forward substitution.
        type : {"standard", "laplacian"}
            The transform.
        lu_piv : tuple of numpy.ndarray, optional
            ``scipy.linalg.lu_factor`` of the eigenvector matrix (``type="laplacian"``): the
            spectrum is ``lu_solve(lu_piv, s)``.

        Returns
        -------
        Activations
            The spectrum; a Laplacian one without eigenvalues (``lu_piv`` does not hold them).
        """
        signal = activations.pattern.values[0]
        if type == "standard":
            if inv_F is None:
                raise ValueError("the standard transform needs inv_F (NNGraph.inv_F)")
            spectrum = scipy.sparse.linalg.spsolve_triangular(sp.csr_array(inv_F), signal, lower=True)
        elif type == "laplacian":
            if lu_piv is None:
                raise ValueError("the Laplacian transform needs lu_piv (NNGraph.lu_piv)")
            spectrum = scipy.linalg.lu_solve(lu_piv, signal)
        else:
            raise NotImplementedError(f"transform type {type!r}; expected one of {TRANSFORM_TYPES}")
        return activations._with_pattern(activations.pattern.with_values(spectrum, type))


class Visualizer:
    """PDF rendering in ``nsp``'s call style."""

    @staticmethod
    def visualize_pattern(
        activations: Activations, pdf_filepath: str, scale: str = "layerscale", cmap_style: str = "viridis"
    ) -> None:
        """Write one page per layer of ``activations`` (or a spectrum) to ``pdf_filepath``.

        The defaults are ``nsp``'s own (``layerscale``, ``viridis``), not the pipeline's.
        """
        render_pattern(activations.pattern, pdf_filepath, scale=scale, cmap=cmap_style, summary=False)


class PickleNotTrustedError(ValueError):
    """A file to load is a pickle, and loading it was not declared trusted."""


#: Root attribute ``format`` of an :class:`OutputLoader` file, and its version.
CONTAINER_FORMAT, CONTAINER_VERSION = "nsp-pipeline/legacy_object", 1

#: Writers of the operators an NNGraph may hold, by type (read back by ``hdf5.read_operator``).
_OPERATOR_WRITERS = {
    CausalOperator: hdf5.write_causal_operator,
    FactorizedCausalOperator: hdf5.write_factorized_causal_operator,
    LaplacianOperator: hdf5.write_laplacian_operator,
}


class OutputLoader:
    """Store and load ``nsp`` objects (``nsp.OutputLoader``), as HDF5 whatever the file name.

    ``nsp`` pickled them. Here a file is one HDF5 file (format ``nsp-pipeline/legacy_object``,
    its root attribute ``format``) with a group per part, each group the contents of one file of
    :mod:`nsp_pipeline.io.hdf5` and read back (checksum verified) by that module's reader:

    - an :class:`NNGraph`: ``graph`` (its neuron graph) and ``standard`` / ``laplacian`` for the
      operators it has computed (``lu_piv`` is recomputed from the eigenvectors when read);
    - an :class:`Activations` (activations or a spectrum): ``pattern``, and the text of its layer
      descriptions in the root attribute ``layerdescriptions`` (JSON).

    Attributes set on the DiGraph's nodes, edges or ``graph`` dict are not stored.
    """

    @staticmethod
    def save(obj: NNGraph | Activations, path: str | os.PathLike) -> None:
        """Store an :class:`NNGraph` (with its computed transforms) or :class:`Activations` at ``path``.

        The file is HDF5 whatever its extension (``graph.obj``, ``graph.pkl``) and is written
        atomically: it appears complete or not at all. Missing folders are created.

        Raises
        ------
        TypeError
            If ``obj`` is neither (e.g. an object of the original ``nsp``).
        """
        with tempfile.TemporaryDirectory(prefix="nsp-output-loader-") as parts_folder:
            folder, parts = Path(parts_folder), {}
            attributes = {"format": CONTAINER_FORMAT, "format_version": np.int64(CONTAINER_VERSION)}
            if isinstance(obj, NNGraph):
                hdf5.write_graph(folder / "graph", obj._require_neuron_graph(), provenance())
                parts["graph"] = folder / "graph"
                for transform_type, operator in obj._operators.items():
                    _OPERATOR_WRITERS[operator.__class__](folder / transform_type, operator, provenance())
                    parts[transform_type] = folder / transform_type
                attributes["object"] = "NNGraph"
            elif isinstance(obj, Activations):
                hdf5.write_pattern(folder / "pattern", obj.pattern, provenance())
                parts["pattern"] = folder / "pattern"
                attributes["object"] = "Activations"
                attributes["layerdescriptions"] = json.dumps([str(item) for item in obj.layerdescriptions])
            else:
                raise TypeError(
                    f"nsp.OutputLoader.save stores an nsp_pipeline NNGraph or Activations, got "
                    f"{type(obj).__module__}.{type(obj).__qualname__}"
                )
            with atomic_output(path) as temporary, h5py.File(temporary, "w", locking=False) as container:
                container.attrs.update(attributes)
                for name, part_path in parts.items():
                    with h5py.File(part_path, "r", locking=False) as part:
                        group = container.create_group(name)
                        _copy_contents(part, group)

    @staticmethod
    def load(path: str | os.PathLike, trusted: bool = False) -> NNGraph | Activations:
        """Load an object stored by :meth:`save`, or a pickle of the original ``nsp`` if trusted.

        Parameters
        ----------
        path : str or os.PathLike
            The file.
        trusted : bool, default False
            Also load a pickle (what the original ``nsp``'s ``OutputLoader.save`` wrote).
            Unpickling runs any code the file contains: pass True only for files from a trusted
            source. It returns what was pickled (objects of the original ``nsp``, which must be
            installed).

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        PickleNotTrustedError
            If the file is a pickle and ``trusted`` is False.
        nsp_pipeline.io.hdf5.SchemaError
            If the file is neither, or is corrupt.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(2, "no such file", str(path))
        if not h5py.is_hdf5(path):
            return _load_pickle(path, trusted)
        with h5py.File(path, "r", locking=False) as container:
            attributes = dict(container.attrs)
            if attributes.get("format") != CONTAINER_FORMAT:
                raise hdf5.SchemaError(
                    f"{path} is an HDF5 file but not one nsp.OutputLoader.save wrote (root attribute "
                    f"format={attributes.get('format')!r}, expected {CONTAINER_FORMAT!r})"
                )
            if attributes.get("format_version") != CONTAINER_VERSION:
                raise hdf5.SchemaError(
                    f"{path} has format_version {attributes.get('format_version')}; this nsp_pipeline "
                    f"reads version {CONTAINER_VERSION}"
                )
            with tempfile.TemporaryDirectory(prefix="nsp-output-loader-") as parts_folder:
                parts = {}
                for name in container:
                    parts[name] = Path(parts_folder) / name
                    with h5py.File(parts[name], "w", locking=False) as part:
                        _copy_contents(container[name], part)
                return _assemble(path, attributes, parts)


def _copy_contents(source: h5py.Group, target: h5py.Group) -> None:
    """Copy the attributes and every member of one HDF5 group (or file) into another."""
    for key, value in source.attrs.items():
        target.attrs[key] = value
    for name in source:
        source.copy(source[name], target, name=name)


def _assemble(path: Path, attributes: dict, parts: dict[str, Path]) -> NNGraph | Activations:
    """The object of a container from its parts, each read by its :mod:`~nsp_pipeline.io.hdf5` reader."""
    kind = attributes.get("object")
    expected = {"NNGraph": {"graph"}, "Activations": {"pattern"}}
    if kind not in expected:
        raise hdf5.SchemaError(
            f"{path} holds an object of unknown type {kind!r}; expected {sorted(expected)}"
        )
    missing = expected[kind] - parts.keys()
    if missing:
        raise hdf5.SchemaError(f"{path} holds an {kind} without its part(s) {sorted(missing)}; save it again")
    try:
        if kind == "Activations":
            descriptions = json.loads(attributes["layerdescriptions"])
            return Activations._loaded(hdf5.read_pattern(parts["pattern"]), descriptions)
        operators = {name: hdf5.read_operator(part) for name, part in parts.items() if name != "graph"}
        return NNGraph._from_parts(hdf5.read_graph(parts["graph"]), operators)
    except hdf5.SchemaError as error:
        raise hdf5.SchemaError(f"{path}: {error}") from error


def _load_pickle(path: Path, trusted: bool):
    """Unpickle ``path`` if ``trusted``; otherwise say why not and how to."""
    with open(path, "rb") as handle:
        looks_pickled = handle.read(1) == b"\x80"  # protocol 2 and later; nsp used the highest
        if not trusted:
            if looks_pickled:
                raise PickleNotTrustedError(
                    f"{path} is a pickle (as the original nsp's OutputLoader.save wrote); unpickling runs "
                    "any code the file contains, so it is not loaded by default. If you trust its "
                    f"source, load it with nsp.OutputLoader.load({str(path)!r}, trusted=True)"
                )
            raise hdf5.SchemaError(
                f"{path} is neither a file of nsp.OutputLoader.save (HDF5) nor a pickle of the original nsp"
            )
        handle.seek(0)
        try:
            return pickle.load(handle)
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"{path} is a pickle of objects of the module {error.name!r}, which is not installed "
                "(a pickle of the original nsp needs it: pip install nsp==0.0.16)",
                name=error.name,
            ) from error
