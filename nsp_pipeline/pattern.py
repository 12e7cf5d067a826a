"""Signals on a network: activation patterns and their spectra, for a batch of samples."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from nsp_pipeline.layout import Layout

#: Valid values of :attr:`Pattern.domain`.
DOMAINS = ("activations", "standard", "laplacian")


@dataclass(frozen=True)
class Pattern:
    """Values on every node of a network, for a batch of samples.

    Parameters
    ----------
    layout : Layout
        Node order shared with the network's neuron graph.
    values : numpy.ndarray
        ``(n_samples, n_nodes)`` float64 values in node order.
    domain : {"activations", "standard", "laplacian"}
        What the values are: activations, or a spectrum of that transform type.
    sample_ids, labels, predictions : numpy.ndarray or None
        Optional per-sample integer metadata (labels/predictions use -1 for unknown).
    eigenvalues : numpy.ndarray or None
        For Laplacian spectra: the eigenvalue (frequency) of each coefficient, ascending.
    """

    layout: Layout
    values: np.ndarray
    domain: str = "activations"
    sample_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    eigenvalues: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[None, :]
        if values.ndim != 2 or values.shape[1] != self.layout.n_nodes:
            raise ValueError(
                f"values must have shape (n_samples, {self.layout.n_nodes}), got {np.shape(self.values)}"
            )
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        object.__setattr__(self, "values", values)
        for name in ("sample_ids", "labels", "predictions"):
            column = getattr(self, name)
            if column is not None:
                column = np.asarray(column, dtype=np.int64).reshape(-1)
                if len(column) != len(values):
                    raise ValueError(f"{name} has {len(column)} entries for {len(values)} samples")
                object.__setattr__(self, name, column)

    @property
    def n_samples(self) -> int:
        """Number of samples in the batch."""
        return self.values.shape[0]

    def layer(self, layer: int | str) -> np.ndarray:
        """Values of one layer, shape ``(n_samples, *layer.shape)``."""
        index = self.layout.index(layer)
        return self.values[:, self.layout.slice(index)].reshape(
            self.n_samples, *self.layout.layers[index].shape
        )

    def layers(self) -> list[np.ndarray]:
        """Values of every layer, each ``(n_samples, *layer.shape)``."""
        return self.layout.split(self.values)

    def sample(self, index: int) -> Pattern:
        """The pattern of one sample of the batch (kept as a batch of one)."""
        pick = slice(index, index + 1) if index != -1 else slice(-1, None)
        return replace(
            self,
            values=self.values[pick],
            sample_ids=None if self.sample_ids is None else self.sample_ids[pick],
            labels=None if self.labels is None else self.labels[pick],
            predictions=None if self.predictions is None else self.predictions[pick],
        )

    def with_values(self, values: np.ndarray, domain: str, eigenvalues: np.ndarray | None = None) -> Pattern:
        """A pattern with the same layout and metadata but other values (e.g. a spectrum)."""
        return replace(self, values=values, domain=domain, eigenvalues=eigenvalues)
