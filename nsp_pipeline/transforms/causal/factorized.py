"""The factorised causal operator: per-layer ancestor relations, applied without torch.

Built by :func:`nsp_pipeline.transforms.causal.builder.factorized_operator` from a trace; stored and read by
:mod:`nsp_pipeline.io.hdf5`, so that per-sample transform jobs need neither torch nor the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.graph.kronecker import Relation

#: A layer as a 3-axis grid (channels, rows, columns) whose C order is the node order.
Grid = tuple[int, int, int]


@dataclass(frozen=True)
class FactorizedCausalOperator:
    """The causal transform as per-layer ancestor relations in factorised form.

    Parameters
    ----------
    layout : Layout
        Node order.
    grids : list of (int, int, int)
        Each layer's 3-axis grid (its C order is the layer's node order).
    ancestors : list of dict of int to Relation
        For each layer, its strict ancestors in every earlier layer.
    single_parents : list of dict of int to Relation or None
        For layers whose every neuron has exactly one parent (elementwise, reshapes, nearest
        upsampling, concatenation): the parent relations. There the ancestor sum of ``v`` is
        simply its parent's activation, which avoids cancelling the large ancestor sums.
    """

    layout: Layout
    grids: list[Grid]
    ancestors: list[dict[int, Relation]]
    single_parents: list[dict[int, Relation] | None]

    transform_type: ClassVar[str] = "standard"

    @property
    def n_terms(self) -> int:
        """Number of per-axis product terms over all layer pairs."""
        return sum(len(r.terms) for layer in self.ancestors for r in layer.values())

    def _ancestor_sums(
        self, layer: int, spectrum: list[np.ndarray], totals: dict[int, np.ndarray]
    ) -> np.ndarray:
        """Sums over each neuron's strict ancestors; ``totals`` caches channel sums per source."""
        n_samples = spectrum[0].shape[0]
        total = np.zeros((n_samples, *self.grids[layer]))
        for source, relation in self.ancestors[layer].items():
            if source not in totals:
                totals[source] = spectrum[source].sum(axis=1, keepdims=True)
            total += relation.apply(spectrum[source], totals[source])
        return total.reshape(n_samples, -1)

    def _grid_values(self, values: np.ndarray) -> list[np.ndarray]:
        n_samples = values.shape[0]
        return [
            values[:, self.layout.slice(i)].reshape(n_samples, *grid) for i, grid in enumerate(self.grids)
        ]

    def _parent_values(self, layer: int, signal: list[np.ndarray]) -> np.ndarray:
        n_samples = signal[0].shape[0]
        total = np.zeros((n_samples, *self.grids[layer]))
        for parent, relation in self.single_parents[layer].items():
            total += relation.apply(signal[parent])
        return total.reshape(n_samples, -1)

    def _sums(self, layer, signal_layers, spectrum_layers, totals) -> np.ndarray:
        """``Σ_{u < v} ŝ_u`` for the neurons of one layer."""
        if self.single_parents[layer] is not None:
            return self._parent_values(layer, signal_layers)
        return self._ancestor_sums(layer, spectrum_layers, totals)

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """Spectrum ``ŝ = Z⁻¹ s`` of ``(n_samples, n_nodes)`` signals."""
        signal = np.atleast_2d(np.asarray(signal, dtype=np.float64))
        spectrum = np.empty_like(signal)
        signal_layers, spectrum_layers = self._grid_values(signal), self._grid_values(spectrum)
        totals: dict[int, np.ndarray] = {}
        for layer in range(len(self.layout)):
            nodes = self.layout.slice(layer)
            spectrum[:, nodes] = signal[:, nodes] - self._sums(layer, signal_layers, spectrum_layers, totals)
        return spectrum

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """Signal ``s = Z ŝ`` of ``(n_samples, n_nodes)`` spectra."""
        spectrum = np.atleast_2d(np.asarray(spectrum, dtype=np.float64))
        signal = np.empty_like(spectrum)
        signal_layers, spectrum_layers = self._grid_values(signal), self._grid_values(spectrum)
        totals: dict[int, np.ndarray] = {}
        for layer in range(len(self.layout)):
            nodes = self.layout.slice(layer)
            signal[:, nodes] = spectrum[:, nodes] + self._sums(layer, signal_layers, spectrum_layers, totals)
        return signal

    def rounding_scale(self, signal: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Magnitude of the terms summed for each coefficient (its rounding error over ε)."""
        signal, spectrum = np.abs(np.atleast_2d(signal)), np.abs(np.atleast_2d(spectrum))
        signal_layers, spectrum_layers = self._grid_values(signal), self._grid_values(spectrum)
        scale = np.empty_like(spectrum)
        totals: dict[int, np.ndarray] = {}
        for layer in range(len(self.layout)):
            nodes = self.layout.slice(layer)
            scale[:, nodes] = spectrum[:, nodes] + self._sums(layer, signal_layers, spectrum_layers, totals)
        return scale
