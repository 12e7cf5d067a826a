"""Node order of a network: which layers exist, their shapes, and where each starts.

Every signal on a network (activations, spectra) and its neuron graph share one
:class:`Layout`. Nodes are numbered layer by layer and in C order inside each
layer's per-sample tensor, exactly as in the predecessor ``nsp``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

#: Layer granularities (see :mod:`nsp_pipeline.model.capture`): nsp's children, every torch.fx
#: operation, or operations with shape-only and elementwise ones merged into the layer before.
GRANULARITIES = ("children", "ops", "merged")


@dataclass(frozen=True)
class Layer:
    """One layer of recorded activations.

    Parameters
    ----------
    name : str
        Unique layer name (``"input"`` for layer 0, module path or fx node name otherwise).
    shape : tuple of int
        Per-sample shape (without the batch axis).
    kind : str
        Short op type, e.g. ``"Conv2d"``, ``"relu"``, ``"view"``, ``"input"``.
    description : str
        Human-readable description of the module or operation.
    parents : tuple of int
        Indices of the layers this layer reads from (empty for the input).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    description: str = ""
    parents: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Number of neurons in the layer."""
        return prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Ordered layers and their node offsets.

    Parameters
    ----------
    layers : tuple of Layer
        Layers in node order; every parent index is smaller than its child's index.
    """

    layers: tuple[Layer, ...]
    offsets: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"layer names must be unique; {duplicate!r} occurs twice")
        for index, layer in enumerate(self.layers):
            if any(not 0 <= parent < index for parent in layer.parents):
                raise ValueError(
                    f"layer {index} ({layer.name!r}) has parents {layer.parents}; "
                    "parents must come earlier in the layout"
                )
        sizes = [layer.size for layer in self.layers]
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    @property
    def n_nodes(self) -> int:
        """Total number of neurons (nodes)."""
        return int(self.offsets[-1])

    @property
    def names(self) -> list[str]:
        """Layer names in order."""
        return [layer.name for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def index(self, layer: int | str) -> int:
        """Index of a layer given by index or name."""
        if isinstance(layer, str):
            try:
                return self.names.index(layer)
            except ValueError:
                raise KeyError(f"no layer named {layer!r}; layers are {self.names}") from None
        if not -len(self.layers) <= layer < len(self.layers):
            raise IndexError(f"layer index {layer} out of range for {len(self.layers)} layers")
        return layer % len(self.layers)

    def slice(self, layer: int | str) -> slice:
        """Node range of one layer."""
        i = self.index(layer)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def layer_of_node(self, nodes: np.ndarray) -> np.ndarray:
        """Layer index of each given global node id."""
        return np.searchsorted(self.offsets, np.asarray(nodes), side="right") - 1

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """Split ``(..., n_nodes)`` values into per-layer arrays ``(..., *layer.shape)``."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_nodes:
            raise ValueError(f"expected {self.n_nodes} values on the last axis, got {values.shape[-1]}")
        lead = values.shape[:-1]
        return [
            values[..., self.offsets[i] : self.offsets[i + 1]].reshape(*lead, *layer.shape)
            for i, layer in enumerate(self.layers)
        ]

    def join(self, per_layer: list[np.ndarray], batch_dims: int = 1) -> np.ndarray:
        """Inverse of :meth:`split`: flatten per-layer arrays into ``(..., n_nodes)``."""
        if len(per_layer) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} layers, got {len(per_layer)}")
        flat = []
        for layer, values in zip(self.layers, per_layer):
            values = np.asarray(values)
            if tuple(values.shape[batch_dims:]) != layer.shape:
                raise ValueError(
                    f"layer {layer.name!r}: expected per-sample shape {layer.shape}, "
                    f"got {tuple(values.shape[batch_dims:])}"
                )
            flat.append(values.reshape(*values.shape[:batch_dims], -1))
        return np.concatenate(flat, axis=-1)
