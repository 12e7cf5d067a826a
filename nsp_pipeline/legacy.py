"""The predecessor ``nsp``'s four-step API, on top of nsp-pipeline.

``import nsp_pipeline as nsp`` runs ``nsp``'s README example unchanged::

    activations = nsp.Activations(network, image)
    graph = nsp.NNGraph(activations)
    spectrum = graph.transform(activations)
    nsp.Visualizer.visualize_pattern(spectrum, pdf_filepath="spectrum.pdf", scale="layernorm")

Semantics follow ``nsp``: the ``children`` granularity, layer 0 is the input, node order
layer by layer in C order, ``INCL``, and transform types ``standard`` / ``laplacian``.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.build import graph_from_trace
from nsp_pipeline.model.capture import trace
from nsp_pipeline.render.pages import render_pattern
from nsp_pipeline.transforms.api import TRANSFORM_TYPES, compute_operator, transform


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


class NNGraph:
    """Neuron DAG of a network (``nsp.NNGraph``), with lazily computed transforms.

    Parameters
    ----------
    activations : Activations
        Any activation pattern of the network (the graph does not depend on its values,
        except for ``INCL=False``, which keeps only edges with non-zero partial derivative there).
    INCL : bool
        Keep every structural edge, even with weight 0.

    Attributes
    ----------
    graph : NeuronGraph
        The modern graph object (CSR).
    """

    def __init__(self, activations: Activations, INCL: bool = True) -> None:
        self.INCL = INCL
        self.graph = graph_from_trace(activations._trace, incl=INCL)
        self._operators: dict[str, object] = {}

    def number_of_nodes(self) -> int:
        """Number of nodes."""
        return self.graph.n_nodes

    def number_of_edges(self) -> int:
        """Number of edges."""
        return self.graph.n_edges

    @property
    def nodes(self) -> list[tuple[int, ...]]:
        """Node keys ``(layer, *index)`` in node order."""
        return [self.graph.node_label(v) for v in range(self.graph.n_nodes)]

    def node_id(self, node: tuple[int, ...]) -> int:
        """Index of a node key ``(layer, *index)`` in the node order."""
        layer, *index = node
        shape = self.graph.layout.layers[layer].shape
        return int(self.graph.layout.offsets[layer]) + int(np.ravel_multi_index(index, shape))

    def get_transformer(self, type: str = "standard"):
        """Compute (once) and return the operator of a transform type."""
        if type not in TRANSFORM_TYPES:
            raise NotImplementedError(f"transform type {type!r}; expected one of {TRANSFORM_TYPES}")
        if type not in self._operators:
            self._operators[type] = compute_operator(self.graph, type)
        return self._operators[type]

    @property
    def inv_F(self) -> sp.csr_array:
        """The inverse Fourier matrix ``Z`` (reflexive transitive closure) as sparse CSR."""
        return self.get_transformer("standard").zeta()

    def transform(self, activations: Activations, type: str = "standard") -> Activations:
        """Spectrum of ``activations`` as an :class:`Activations` object."""
        return activations._with_pattern(transform(activations.pattern, self.get_transformer(type)))

    def to_networkx(self):
        """The graph as ``networkx.DiGraph`` with ``nsp``'s node keys."""
        return self.graph.to_networkx()


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
