"""Dataset-level statistics of one model × dataset × transform: energies per layer and class, sparsity.

:func:`class_statistics` reduces a batch of samples of one pattern (activations or a spectrum)
to per-layer statistics, over all samples and per class (by label; samples with the unknown
label -1 count only in "all"):

- *mean energy*: ``Σ_v x_v²`` over a layer's nodes, averaged over the samples;
- *top-k energy fraction* (Fourier sparsity): the share of a layer's energy held by its ``k``
  largest coefficients by magnitude, averaged over the samples. :data:`TOP_K` gives the ``k``:
  an int is a number of coefficients (1, 10, 100), capped at the layer's size; a float a share
  of the layer's nodes (1 %, 10 %), rounded up to at least one coefficient. The absolute ``k``
  compare layers by a fixed budget of coefficients, the relative ones compare layers of
  different sizes fairly. A sample whose layer holds no energy has no fraction and is left out
  of that layer's mean;
- *average patterns*: the mean of the samples of each class, and of all samples, as patterns
  that :func:`nsp_pipeline.render.pages.render_pattern` draws like a sample.

Coefficients that a partial Laplacian spectrum did not compute (NaN) are left out of every sum
and mean: energies and fractions are those of the computed coefficients, an average
coefficient is NaN only where no sample has it. (In a Laplacian spectrum a "layer" is the block
of frequency positions at that layer's nodes.)

:func:`summary_table` lays the statistics out as a table. The statistics of an analysis are
stored by :func:`nsp_pipeline.io.hdf5.write_dataset_summary` (``docs/hdf5-schema.md``), plotted
and rendered by :mod:`nsp_pipeline.render.dataset_plots`, and all three are done in one call by
:func:`nsp_pipeline.pipeline.summaries.summarize_dataset`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.core.pattern import Pattern

#: Default top-k list: ints count coefficients, floats are shares of the layer's nodes.
TOP_K: tuple[int | float, ...] = (1, 10, 100, 0.01, 0.1)

#: Columns of each pattern's table before the top-k columns.
TABLE_COLUMNS = ("class", "samples", "layer", "name", "kind", "nodes", "computed_nodes", "mean_energy")


@dataclass(frozen=True, eq=False)
class ClassStatistics:
    """Per-layer statistics of a batch of samples of one pattern, over all samples and per class.

    Parameters
    ----------
    domain : str
        The pattern's domain.
    layout : Layout
        The pattern's layers.
    n_samples : int
        Samples in the batch.
    classes, class_samples : numpy.ndarray
        ``(n_classes,)`` known labels in ascending order, and the samples of each.
    computed_nodes : numpy.ndarray
        ``(n_layers,)`` nodes of each layer that are not NaN in some sample.
    mean_energy, class_mean_energy : numpy.ndarray
        ``(n_layers,)`` and ``(n_classes, n_layers)`` mean energy ``Σ x²``.
    top_k : tuple of int or float
        The top-k entries (see :data:`TOP_K`).
    top_k_nodes : numpy.ndarray
        ``(n_k, n_layers)`` the number of coefficients ``k`` of each entry in each layer.
    top_k_fraction, class_top_k_fraction : numpy.ndarray
        ``(n_k, n_layers)`` and ``(n_classes, n_k, n_layers)`` mean share of the layer's energy
        in its ``k`` largest coefficients (NaN where no sample has energy in the layer).
    average, class_average : Pattern
        Mean of all samples (one row, label -1) and of each class (a row per class, labelled).
    """

    domain: str
    layout: Layout
    n_samples: int
    classes: np.ndarray
    class_samples: np.ndarray
    computed_nodes: np.ndarray
    mean_energy: np.ndarray
    class_mean_energy: np.ndarray
    top_k: tuple[int | float, ...]
    top_k_nodes: np.ndarray
    top_k_fraction: np.ndarray
    class_top_k_fraction: np.ndarray
    average: Pattern
    class_average: Pattern


def top_k_label(entry: int | float) -> str:
    """Label of a top-k entry: ``"10"`` for 10 coefficients, ``"1%"`` for 1 % of the nodes."""
    return str(entry) if isinstance(entry, numbers.Integral) else f"{entry * 100:g}%"


def top_k_entry(label: str) -> int | float:
    """The top-k entry of a label of :func:`top_k_label`: ``"10"`` is 10, ``"1%"`` is 0.01.

    A share is read back to the 6 significant digits of its label.

    Raises
    ------
    ValueError
        If the label is neither an integer nor a percentage.
    """
    try:
        return float(label[:-1]) / 100 if label.endswith("%") else int(label)
    except ValueError:
        raise ValueError(
            f"top-k label {label!r}: expected an integer count or a percentage such as '1%'"
        ) from None


def top_k_columns(top_k: Sequence[int | float] = TOP_K) -> list[str]:
    """Table column of each top-k entry: ``top_10`` for 10 coefficients, ``top_1pct`` for 1 %."""
    return ["top_" + top_k_label(entry).replace("%", "pct").replace(".", "_") for entry in top_k]


def top_k_nodes(top_k: Sequence[int | float], sizes: Sequence[int]) -> np.ndarray:
    """Number of coefficients of each top-k entry in layers of the given sizes, ``(n_k, n_layers)``.

    An int ``k`` gives ``min(k, size)``; a float share ``p`` gives ``max(1, ⌈p · size⌉)``;
    an empty layer gives 0.

    Raises
    ------
    ValueError
        For an int below 1, a share outside ``(0, 1]``, or another type.
    """
    nodes = np.zeros((len(top_k), len(sizes)), dtype=np.int64)
    for row, entry in enumerate(top_k):
        count = isinstance(entry, numbers.Integral) and not isinstance(entry, bool)
        if not ((count and entry >= 1) or (isinstance(entry, float) and 0 < entry <= 1)):
            raise ValueError(f"top-k entry {entry!r}: expected an int count >= 1 or a float share in (0, 1]")
        for column, size in enumerate(sizes):
            wanted = int(entry) if count else max(1, math.ceil(entry * size))
            nodes[row, column] = min(wanted, size)
    return nodes


def class_statistics(pattern: Pattern, top_k: Sequence[int | float] = TOP_K) -> ClassStatistics:
    """Energies, top-k energy fractions and average patterns, over all samples and per class.

    Parameters
    ----------
    pattern : Pattern
        A batch of samples of activations or of a spectrum; NaN coefficients are skipped.
    top_k : sequence of int or float, default TOP_K
        Counts of coefficients and shares of each layer's nodes (see :func:`top_k_nodes`).

    Returns
    -------
    ClassStatistics
    """
    layout = pattern.layout
    k_nodes = top_k_nodes(top_k, [layer.size for layer in layout.layers])
    labels = np.full(pattern.n_samples, -1) if pattern.labels is None else pattern.labels
    classes, class_samples = np.unique(labels[labels >= 0], return_counts=True)
    everyone = np.ones((1, pattern.n_samples), dtype=bool)
    members = labels[None, :] == classes[:, None]
    missing = np.isnan(pattern.values)
    squares = np.square(np.where(missing, 0.0, pattern.values) if missing.any() else pattern.values)
    energies = np.stack([squares[:, layout.slice(i)].sum(axis=1) for i in range(len(layout))], axis=1)
    fractions = _top_k_fractions(squares, layout, k_nodes)
    computed = ~missing.all(axis=0)
    computed_nodes = [computed[layout.slice(i)].sum() for i in range(len(layout))]
    averages = _group_means(pattern.values, np.concatenate([everyone, members]))
    averaged = replace(pattern, sample_ids=None, predictions=None, diagnostics={})
    return ClassStatistics(
        domain=pattern.domain,
        layout=layout,
        n_samples=pattern.n_samples,
        classes=classes,
        class_samples=class_samples,
        computed_nodes=np.array(computed_nodes, dtype=np.int64),
        mean_energy=_group_means(energies, everyone)[0],
        class_mean_energy=_group_means(energies, members),
        top_k=tuple(top_k),
        top_k_nodes=k_nodes,
        top_k_fraction=_group_means(fractions, everyone)[0],
        class_top_k_fraction=_group_means(fractions, members),
        average=replace(averaged, values=averages[:1], labels=np.array([-1])),
        class_average=replace(averaged, values=averages[1:], labels=classes),
    )


def _top_k_fractions(squares: np.ndarray, layout: Layout, k_nodes: np.ndarray) -> np.ndarray:
    """Per-sample share of each layer's energy in its top-k coefficients, ``(n_samples, n_k, n_layers)``."""
    fractions = np.full((len(squares), *k_nodes.shape), np.nan)
    for index in range(len(layout)):
        layer = squares[:, layout.slice(index)]
        if layer.shape[1] == 0:
            continue
        cumulative = np.cumsum(np.sort(layer, axis=1)[:, ::-1], axis=1)
        total = cumulative[:, -1:]
        top = cumulative[:, k_nodes[:, index] - 1]
        np.divide(top, total, out=fractions[:, :, index], where=total > 0)
    return fractions


def _group_means(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Means over the samples of each group, skipping NaN (NaN where a group has no value).

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_samples, ...)``.
    members : numpy.ndarray
        ``(n_groups, n_samples)`` bool.

    Returns
    -------
    numpy.ndarray
        ``(n_groups, ...)``.
    """
    flat = values.reshape(len(values), -1)
    missing = np.isnan(flat)
    weights = members.astype(np.float64)
    if missing.any():
        flat = np.where(missing, 0.0, flat)
        counts = weights @ (~missing).astype(np.float64)
    else:
        counts = np.broadcast_to(weights.sum(axis=1, keepdims=True), (len(weights), flat.shape[1]))
    sums = weights @ flat
    means = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
    return means.reshape(len(members), *values.shape[1:])


def summary_table(stats: ClassStatistics) -> dict[str, np.ndarray]:
    """The table of one pattern, a column per key: :data:`TABLE_COLUMNS`, then the top-k columns.

    Rows are (sample group, layer): all samples (class -1) first, then each class, the layers in
    order within each.
    """
    n_layers = len(stats.layout)
    groups = np.concatenate([[-1], stats.classes])
    energy = np.concatenate([stats.mean_energy[None], stats.class_mean_energy])
    fractions = np.concatenate([stats.top_k_fraction[None], stats.class_top_k_fraction])
    layers = stats.layout.layers
    table = {
        "class": np.repeat(groups, n_layers).astype(np.int64),
        "samples": np.repeat(np.concatenate([[stats.n_samples], stats.class_samples]), n_layers).astype(
            np.int64
        ),
        "layer": np.tile(np.arange(n_layers, dtype=np.int64), len(groups)),
        "name": np.array([layer.name for layer in layers] * len(groups), dtype=object),
        "kind": np.array([layer.kind for layer in layers] * len(groups), dtype=object),
        "nodes": np.tile([layer.size for layer in layers], len(groups)).astype(np.int64),
        "computed_nodes": np.tile(stats.computed_nodes, len(groups)),
        "mean_energy": energy.reshape(-1),
    }
    for row, column in enumerate(top_k_columns(stats.top_k)):
        table[column] = fractions[:, row, :].reshape(-1)
    return table
