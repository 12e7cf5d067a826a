"""Dataset-level summary of one model × dataset × transform: energies per layer and class, sparsity.

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

:func:`write_dataset_summary` writes the statistics of every pattern of an analysis as one HDF5
file, plots them in one PDF and, optionally, renders the average patterns.

HDF5 layout (``schema = "nsp-pipeline/dataset_summary"``, ``schema_version = 1``)::

    /                       attrs: schema, schema_version, patterns (the group names in input order),
                            top_k (labels such as "10" and "1%"), and the caller's attributes
    /layout/                the layers shared by every pattern (nsp_pipeline.io.hdf5.write_layout)
    /<name>/                one group per pattern, named as in the input mapping
                            ("activations", "standard", "laplacian"); attrs: domain, n_samples
        table/              one row per (sample group, layer): all samples first (class -1), then
                            each class in ascending order, the layers in layout order within each;
                            a dataset per column, see TABLE_COLUMNS and top_k_columns():
            class             int64, -1 for all samples
            samples           int64, samples in the group
            layer             int64, layer index
            name, kind        UTF-8 strings
            nodes             int64, nodes of the layer
            computed_nodes    int64, nodes with a coefficient in some sample (fewer for partial spectra)
            mean_energy       float64
            top_1 ... top_10pct  float64, mean top-k energy fraction for each entry of top_k
        top_k_nodes         (n_k, n_layers) int64, the number of coefficients k of each entry and layer
        average             (n_nodes,) float64, mean of all samples
        classes             (n_classes,) int64, labels in ascending order
        class_average       (n_classes, n_nodes) float64, mean of the samples of each class
        eigenvalues         (n_nodes,) float64, Laplacian spectra only

:func:`read_averages` reads the average patterns back, e.g. to render them in another job.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.layout import Layout
from nsp_pipeline.core.pattern import Pattern, concatenate
from nsp_pipeline.io import hdf5
from nsp_pipeline.render.pages import render_pattern

PathLike = str | os.PathLike

#: Root attribute ``schema`` of the summary file.
SCHEMA = "nsp-pipeline/dataset_summary"

#: Version of the layout described in the module docstring.
SCHEMA_VERSION = 1

#: Default top-k list: ints count coefficients, floats are shares of the layer's nodes.
TOP_K: tuple[int | float, ...] = (1, 10, 100, 0.01, 0.1)

#: Columns of each pattern's table before the top-k columns.
TABLE_COLUMNS = ("class", "samples", "layer", "name", "kind", "nodes", "computed_nodes", "mean_energy")

#: Classes up to which the per-class plots have a legend entry per class (a colour bar beyond).
MAX_LEGEND_CLASSES = 20

_PAGE = (11.0, 7.0)  # inches, landscape
_LEFT, _WIDTH, _TOP = 0.08, 0.7, 0.9  # figure fraction: room for two title lines and a legend
_MAX_TICK_LABELS = 40
_MAX_NAME = 28  # characters of a layer name on the x axis
_ENERGY_LABEL = "mean energy Σx² per sample"


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


# --------------------------------------------------------------------------- writing


def write_dataset_summary(
    patterns: Mapping[str, Pattern | Sequence[PathLike]],
    hdf5_out: PathLike,
    plots_out: PathLike,
    averages_dir: PathLike | None = None,
    *,
    title: str = "",
    attributes: Mapping[str, str] | None = None,
    top_k: Sequence[int | float] = TOP_K,
    scale: str = "layerscale",
    cmap: str = "viridis",
) -> dict[str, ClassStatistics]:
    """Write the dataset-level statistics of an analysis (HDF5), their plots (PDF), and the averages.

    Parameters
    ----------
    patterns : mapping of str to Pattern or sequence of path
        Each pattern's name (``"activations"``, a transform type) to a batch of its samples, or
        to its per-sample files (read and stacked here). All must share one layout.
    hdf5_out : path
        The statistics, laid out as in the module docstring.
    plots_out : path
        PDF of plots: the mean energy per layer of every pattern; then, per pattern, the mean
        energy per layer of each class; then, per pattern, the top-k energy fraction per layer.
    averages_dir : path, optional
        Folder for :func:`render_averages`: the average patterns drawn like samples.
    title : str
        Context put before every plot title, e.g. ``"digits_cnn × digits"``.
    attributes : mapping of str to str, optional
        Root attributes of the HDF5 file (provenance, model and dataset names).
    top_k : sequence of int or float, default TOP_K
        Top-k entries (see :func:`top_k_nodes`).
    scale, cmap : str
        Colour scale and map of the rendered averages (see :func:`render_pattern`).

    Returns
    -------
    dict of str to ClassStatistics
        The statistics of each pattern.

    Raises
    ------
    ValueError
        If no pattern is given or their layouts differ.
    """
    if not patterns:
        raise ValueError("write_dataset_summary needs at least one pattern")
    loaded = {name: _as_pattern(value) for name, value in patterns.items()}
    layout = next(iter(loaded.values())).layout
    for name, pattern in loaded.items():
        if pattern.layout != layout:
            raise ValueError(f"pattern {name!r} has other layers than {next(iter(loaded))!r}")
    statistics = {name: class_statistics(pattern, top_k) for name, pattern in loaded.items()}
    with ExitStack() as outputs:
        hdf5_temporary = outputs.enter_context(atomic_output(hdf5_out))
        plots_temporary = outputs.enter_context(atomic_output(plots_out))
        _write_hdf5(hdf5_temporary, statistics, attributes or {})
        plot_statistics(statistics, plots_temporary, title)
        if averages_dir is not None:
            render_averages(statistics, averages_dir, title, scale, cmap)
    return statistics


def _as_pattern(value: Pattern | Sequence[PathLike]) -> Pattern:
    if isinstance(value, Pattern):
        return value
    return concatenate([hdf5.read_pattern(path) for path in value])


def _write_hdf5(path: Path, statistics: Mapping[str, ClassStatistics], attributes: Mapping[str, str]) -> None:
    first = next(iter(statistics.values()))
    with h5py.File(path, "w", locking=False) as file:
        file.attrs.update(dict(attributes))
        file.attrs["schema"] = SCHEMA
        file.attrs["schema_version"] = SCHEMA_VERSION
        file.attrs["top_k"] = [top_k_label(entry) for entry in first.top_k]
        file.attrs["patterns"] = list(statistics)
        hdf5.write_layout(file.create_group("layout"), first.layout)
        for name, stats in statistics.items():
            group = file.create_group(name)
            group.attrs["domain"] = stats.domain
            group.attrs["n_samples"] = stats.n_samples
            table = group.create_group("table")
            for column, values in summary_table(stats).items():
                table.create_dataset(column, data=values, track_times=False)
            arrays = {
                "top_k_nodes": stats.top_k_nodes,
                "average": stats.average.values[0],
                "classes": stats.classes,
                "class_average": stats.class_average.values,
            }
            if stats.average.eigenvalues is not None:
                arrays["eigenvalues"] = stats.average.eigenvalues
            for key, values in arrays.items():
                group.create_dataset(key, data=values, track_times=False)


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
        "name": np.array([layer.name for layer in layers] * len(groups), dtype=h5py.string_dtype()),
        "kind": np.array([layer.kind for layer in layers] * len(groups), dtype=h5py.string_dtype()),
        "nodes": np.tile([layer.size for layer in layers], len(groups)).astype(np.int64),
        "computed_nodes": np.tile(stats.computed_nodes, len(groups)),
        "mean_energy": energy.reshape(-1),
    }
    for row, column in enumerate(top_k_columns(stats.top_k)):
        table[column] = fractions[:, row, :].reshape(-1)
    return table


def read_averages(path: PathLike, name: str) -> tuple[Pattern, Pattern]:
    """The average patterns of one pattern of a summary file: all samples, and each class.

    Parameters
    ----------
    path : path
        A file written by :func:`write_dataset_summary`.
    name : str
        The pattern's group, e.g. ``"standard"``.

    Returns
    -------
    average, class_average : Pattern
        As in :class:`ClassStatistics` (without diagnostics).

    Raises
    ------
    ValueError
        If the file is not a dataset summary.
    KeyError
        If it has no pattern of that name.
    """
    with h5py.File(path, "r", locking=False) as file:
        if file.attrs.get("schema") != SCHEMA:
            raise ValueError(f"{path} is not a dataset summary (schema {file.attrs.get('schema')!r})")
        layout = hdf5.read_layout(file["layout"])
        group = file[name]
        eigenvalues = group["eigenvalues"][()] if "eigenvalues" in group else None
        domain = str(group.attrs["domain"])
        average = Pattern(layout, group["average"][()][None], domain, labels=[-1], eigenvalues=eigenvalues)
        return average, replace(average, values=group["class_average"][()], labels=group["classes"][()])


# --------------------------------------------------------------------------- plots


def plot_statistics(statistics: Mapping[str, ClassStatistics], path: PathLike, title: str = "") -> None:
    """Plot statistics to a PDF: every pattern's energies, then the per-class energies, then top-k.

    Parameters
    ----------
    statistics : mapping of str to ClassStatistics
        Each pattern's statistics, sharing one layout.
    path : path
        The PDF, written atomically; ``1 + 2 · len(statistics)`` pages.
    title : str
        Context put before every plot title.
    """
    prefix = f"{title}: " if title else ""
    metadata = {"Title": title, "CreationDate": None}  # no timestamp: reruns give the same bytes
    with atomic_output(path) as temporary, PdfPages(temporary, metadata=metadata) as pdf:
        pdf.savefig(_energy_page(statistics, prefix))
        for name, stats in statistics.items():
            pdf.savefig(_class_energy_page(name, stats, prefix))
        for name, stats in statistics.items():
            pdf.savefig(_top_k_page(name, stats, prefix))


def _page(stats: ClassStatistics, title: str, ylabel: str) -> tuple[Figure, Axes]:
    """A landscape page with one axes over the layers, room for a legend at its right."""
    layers = stats.layout.layers
    ticks = np.arange(0, len(layers), math.ceil(len(layers) / _MAX_TICK_LABELS))
    names = [f"{i} {layers[i].name}" for i in ticks]
    names = [name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…" for name in names]
    longest = max(len(name) for name in names)
    rotation = 45 if len(names) <= 12 and longest <= 14 else 90  # slanted labels only where they fit
    bottom = 0.1 + 0.0088 * longest * math.sin(math.radians(rotation))  # 8-pt labels, 7-inch page
    fig = Figure(figsize=_PAGE)
    ax = fig.add_axes((_LEFT, bottom, _WIDTH, _TOP - bottom))
    ax.set_xticks(ticks, names, rotation=rotation, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.grid(alpha=0.3)
    if stats.domain == "laplacian":
        ax.set_xlabel("layer (for a Laplacian spectrum: the frequency positions at the layer's nodes)")
    else:
        ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    return fig, ax


def _legend(ax: Axes, title: str) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title, fontsize=8, title_fontsize=9)


def _footnote(fig: Figure, values: np.ndarray, what: str) -> None:
    """Explain the layers drawn without a point, if any."""
    if np.any(~(values > 0)):
        fig.text(0.01, 0.01, f"Layers without a point: {what}.", fontsize=8, color="0.3")


def _positive(values: np.ndarray) -> np.ndarray:
    """Values to draw on a log axis: zero (and NaN) energies become gaps."""
    return np.where(values > 0, values, np.nan)


def _computed_share(stats: ClassStatistics) -> str:
    """``"k of n coefficients"`` (those computed) for a partial spectrum, else ``""``."""
    computed, total = int(stats.computed_nodes.sum()), stats.layout.n_nodes
    return "" if computed == total else f"{computed} of {total} coefficients"


def _described(name: str, stats: ClassStatistics) -> str:
    """The pattern's name, and its domain where that differs."""
    return name if name == stats.domain else f"{name} ({stats.domain})"


def _heading(prefix: str, what: str, name: str, stats: ClassStatistics) -> str:
    share = _computed_share(stats)
    partial = f"\npartial spectrum: {share} computed, the others skipped" if share else ""
    return f"{prefix}{what}, {_described(name, stats)}, {stats.n_samples} samples{partial}"


_NO_ENERGY = "the layer holds no energy (e.g. a causal spectrum of a reshape), or no computed coefficient"


def _energy_page(statistics: Mapping[str, ClassStatistics], prefix: str) -> Figure:
    first = next(iter(statistics.values()))
    fig, ax = _page(first, f"{prefix}mean energy per layer, all {first.n_samples} samples", _ENERGY_LABEL)
    for name, stats in statistics.items():
        share = _computed_share(stats)
        label = f"{name}, partial:\n{share}" if share else name
        ax.plot(_positive(stats.mean_energy), marker="o", label=label)
    ax.set_yscale("log")
    _legend(ax, "pattern")
    _footnote(fig, np.array([stats.mean_energy for stats in statistics.values()]), _NO_ENERGY)
    return fig


def _class_energy_page(name: str, stats: ClassStatistics, prefix: str) -> Figure:
    fig, ax = _page(stats, _heading(prefix, "mean energy per layer and class", name, stats), _ENERGY_LABEL)
    many = len(stats.classes) > MAX_LEGEND_CLASSES
    colours = matplotlib.colormaps["viridis" if many else "tab20" if len(stats.classes) > 10 else "tab10"]
    norm = Normalize(stats.classes.min(), stats.classes.max()) if many else None
    for row, label in enumerate(stats.classes):
        ax.plot(
            _positive(stats.class_mean_energy[row]),
            color=colours(norm(label)) if many else colours(row),
            linewidth=0.8 if many else 1.2,
            marker=None if many else ".",
            label=None if many else f"class {label} ({stats.class_samples[row]})",
        )
    ax.plot(_positive(stats.mean_energy), color="black", linewidth=2.5, linestyle="--", label="all samples")
    ax.set_yscale("log")
    if many:
        box = ax.get_position()
        colour_axes = fig.add_axes((0.8, box.y0, 0.015, box.height))
        fig.colorbar(ScalarMappable(norm, colours), cax=colour_axes, label="class")
        ax.legend(loc="best", fontsize=8)
    else:
        _legend(ax, "class (samples)")
    _footnote(fig, np.vstack([stats.mean_energy, stats.class_mean_energy]), _NO_ENERGY)
    return fig


def _top_k_page(name: str, stats: ClassStatistics, prefix: str) -> Figure:
    heading = _heading(prefix, "share of each layer's energy in its k largest coefficients", name, stats)
    fig, ax = _page(stats, heading, "top-k energy fraction (mean over samples)")
    counts = [isinstance(entry, numbers.Integral) for entry in stats.top_k]
    colours = iter(matplotlib.colormaps["tab10"].colors)
    for row, entry in enumerate(stats.top_k):
        ax.plot(
            stats.top_k_fraction[row],
            color=next(colours),
            marker="o" if counts[row] else "s",
            linestyle="-" if counts[row] else "--",
            label=f"k = {entry}" if counts[row] else f"k = {top_k_label(entry)} of the layer's nodes",
        )
    ax.set_ylim(0, 1.05)
    _legend(ax, "k (capped at the layer's size)")
    _footnote(fig, stats.top_k_fraction, "no sample has energy in the layer")
    return fig


# --------------------------------------------------------------------------- averages


def _render_job(job: tuple[Pattern, Path, int, str], scale: str, cmap: str) -> Path:
    """Render one ``(pattern, path, sample, title)`` job (module level, so workers can run it)."""
    pattern, path, sample, title = job
    return render_pattern(pattern, path, sample=sample, scale=scale, cmap=cmap, title=title)


def _render_all(
    jobs: list[tuple[Pattern, Path, int, str]], scale: str, cmap: str, processes: int
) -> list[Path]:
    """Render ``(pattern, path, sample, title)`` jobs, in ``processes`` worker processes if more than 1."""
    render = functools.partial(_render_job, scale=scale, cmap=cmap)
    if processes <= 1 or len(jobs) <= 1:
        return [render(job) for job in jobs]
    with ProcessPoolExecutor(min(processes, len(jobs))) as pool:
        return list(pool.map(render, jobs))


def render_averages(
    statistics: Mapping[str, ClassStatistics],
    directory: PathLike,
    title: str = "",
    scale: str = "layerscale",
    cmap: str = "viridis",
    processes: int = 1,
) -> list[Path]:
    """Render every average pattern like a sample, one PDF each, a page per layer.

    Parameters
    ----------
    statistics : mapping of str to ClassStatistics
        Each pattern's statistics.
    directory : path
        Output folder (created if missing): ``<name>_all.pdf`` for the mean of all samples and
        ``<name>_class_<label>.pdf`` for the mean of each class.
    title : str
        Context put before every page title.
    scale, cmap : str
        Colour scale and map (see :func:`nsp_pipeline.render.pages.render_pattern`).
    processes : int, default 1
        Worker processes rendering PDFs side by side (1: all in this process). They start
        the platform's default way; where that is "spawn" or "forkserver" (macOS, Windows,
        Python 3.14 and later) they import the calling script again, which then needs an
        ``if __name__ == "__main__":`` guard.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    directory = Path(directory)
    prefix = f"{title}: " if title else ""
    jobs = []
    for name, stats in statistics.items():
        described = f"{prefix}{_described(name, stats)}"
        jobs.append(
            (
                stats.average,
                directory / f"{name}_all.pdf",
                0,
                f"{described}, average of all {stats.n_samples} samples",
            )
        )
        for row, label in enumerate(stats.classes):
            heading = f"{described}, average of class {label} ({stats.class_samples[row]} samples)"
            jobs.append((stats.class_average, directory / f"{name}_class_{label}.pdf", row, heading))
    return _render_all(jobs, scale, cmap, processes)


def render_summary_averages(
    hdf5_path: PathLike,
    directory: PathLike,
    title: str = "",
    scale: str = "layerscale",
    cmap: str = "viridis",
    processes: int = 1,
) -> list[Path]:
    """Render the average patterns stored in a summary file, as :func:`render_averages` does.

    For a workflow rule of its own: the summary is computed once, the averages rendered after,
    in ``processes`` worker processes. The folder is filled under a temporary name and renamed
    when complete (it replaces an existing one), so an interrupted job never leaves a folder
    with only some of the files.
    """
    with h5py.File(hdf5_path, "r", locking=False) as file:
        names = [str(name) for name in file.attrs["patterns"]]
    directory = Path(directory)
    prefix = f"{title}: " if title else ""
    with atomic_output(directory) as folder:
        folder.mkdir()
        jobs = []
        for name in names:
            average, class_average = read_averages(hdf5_path, name)
            jobs.append((average, folder / f"{name}_all.pdf", 0, f"{prefix}{name}, average"))
            for row, label in enumerate(class_average.labels):
                heading = f"{prefix}{name}, average of class {label}"
                jobs.append((class_average, folder / f"{name}_class_{label}.pdf", row, heading))
        written = _render_all(jobs, scale, cmap, processes)
    return [directory / path.name for path in written]
