"""Signals on a network: activation patterns and their spectra, for a batch of samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nsp_pipeline.core.layout import Layout

#: Valid values of :attr:`Pattern.domain`.
DOMAINS = ("activations", "standard", "laplacian")

#: Diagnostics with one column per layer, ``(n_samples, n_layers)``; the others are per sample.
PER_LAYER_DIAGNOSTICS = ("significant_digits", "below_noise", "exact_arithmetic", "round_trip_digits")


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
    diagnostics : mapping of str to numpy.ndarray
        Per-sample facts about a spectrum, each with ``n_samples`` rows:
        ``residual_energy`` ``(n_samples,)`` for a partial Laplacian spectrum (the energy of the
        frequencies not computed); for a causal spectrum, ``(n_samples, n_layers)`` each:
        ``significant_digits`` (the estimated correct digits of the layer's coefficients),
        ``exact_arithmetic`` (1 where the layer was computed in exact integer arithmetic),
        ``below_noise`` and ``round_trip_digits`` (the digits of the activations that survive
        ``s = Zŝ`` in float64); see :mod:`nsp_pipeline.transforms.causal.precision`.
    """

    layout: Layout
    values: np.ndarray
    domain: str = "activations"
    sample_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    diagnostics: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)

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
        diagnostics = {name: np.asarray(value, dtype=np.float64) for name, value in self.diagnostics.items()}
        for name, value in diagnostics.items():
            if value.ndim == 0 or len(value) != len(values):
                raise ValueError(f"diagnostic {name!r} has shape {value.shape} for {len(values)} samples")
        object.__setattr__(self, "diagnostics", diagnostics)

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
            diagnostics={name: value[pick] for name, value in self.diagnostics.items()},
        )

    def select_layers(self, layers: Sequence[int | str]) -> Pattern:
        """The pattern of some layers only, on the layout of those layers (in layout order).

        Each kept layer keeps its name, shape, kind and description; its parents are those of its
        parents that are kept, renumbered. The per-layer diagnostics
        (:data:`PER_LAYER_DIAGNOSTICS`) keep the columns of the kept layers. For a Laplacian
        spectrum, whose coefficients sit in node order, the coefficients at the positions of the
        kept layers' nodes are kept, with their eigenvalues.

        Parameters
        ----------
        layers : sequence of int or str
            Layers by index or name in :attr:`layout`; repeats and order do not matter.

        Raises
        ------
        KeyError, IndexError
            If a layer is not in the layout (naming it and the layers there are).
        ValueError
            If ``layers`` is empty.
        """
        kept = sorted({self.layout.index(layer) for layer in layers})
        if not kept:
            raise ValueError("select_layers needs at least one layer")
        slices = [self.layout.slice(old) for old in kept]
        diagnostics = {
            name: values[:, kept] if name in PER_LAYER_DIAGNOSTICS else values
            for name, values in self.diagnostics.items()
        }
        return replace(
            self,
            layout=sub_layout(self.layout, kept),
            values=np.concatenate([self.values[:, nodes] for nodes in slices], axis=1),
            eigenvalues=None
            if self.eigenvalues is None
            else np.concatenate([self.eigenvalues[nodes] for nodes in slices]),
            diagnostics=diagnostics,
        )

    def with_values(
        self,
        values: np.ndarray,
        domain: str,
        eigenvalues: np.ndarray | None = None,
        diagnostics: Mapping[str, np.ndarray] | None = None,
    ) -> Pattern:
        """A pattern with the same layout and sample metadata but other values (e.g. a spectrum)."""
        return replace(
            self, values=values, domain=domain, eigenvalues=eigenvalues, diagnostics=diagnostics or {}
        )


def sub_layout(layout: Layout, kept: Sequence[int]) -> Layout:
    """The layout of some layers of ``layout``, as :meth:`Pattern.select_layers` keeps them.

    Parameters
    ----------
    layout : Layout
        The whole network's layout.
    kept : sequence of int
        Indices of the layers to keep, ascending and without repeats.

    Returns
    -------
    Layout
        The kept layers in order, each with the kept ones of its parents, renumbered.
    """
    renumbered = {old: new for new, old in enumerate(kept)}
    if list(kept) != sorted(set(kept)):
        raise ValueError(f"kept layers must be ascending without repeats, got {list(kept)}")
    return Layout(
        tuple(
            replace(
                layout.layers[old],
                parents=tuple(renumbered[p] for p in layout.layers[old].parents if p in renumbered),
            )
            for old in kept
        )
    )


def concatenate(patterns: Sequence[Pattern]) -> Pattern:
    """One batch of the samples of several patterns with the same layout and domain, in order."""
    if not patterns:
        raise ValueError("concatenate needs at least one pattern")
    first = patterns[0]
    for index, pattern in enumerate(patterns[1:], start=1):
        if pattern.layout != first.layout or pattern.domain != first.domain:
            raise ValueError(
                f"pattern {index} ({pattern.domain}, {pattern.layout.n_nodes} nodes) cannot join pattern 0 "
                f"({first.domain}, {first.layout.n_nodes} nodes): layouts and domains must be equal"
            )

    def column(name: str) -> np.ndarray | None:
        parts = [getattr(p, name) for p in patterns]
        if all(part is None for part in parts):
            return None
        return np.concatenate([np.full(p.n_samples, -1) if c is None else c for p, c in zip(patterns, parts)])

    shared = set.intersection(*(set(p.diagnostics) for p in patterns))
    return replace(
        first,
        values=np.concatenate([p.values for p in patterns]),
        sample_ids=column("sample_ids"),
        labels=column("labels"),
        predictions=column("predictions"),
        diagnostics={name: np.concatenate([p.diagnostics[name] for p in patterns]) for name in shared},
    )
