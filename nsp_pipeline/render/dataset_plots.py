"""Plots of dataset-level statistics, and the average patterns drawn like samples.

:func:`plot_statistics` draws the statistics of
:func:`nsp_pipeline.analysis.dataset_statistics.class_statistics` in one PDF: the mean energy per
layer of every pattern, then per pattern the mean energy per layer of each class, then per
pattern the top-k energy fraction per layer. :func:`render_averages` draws every average
pattern (of all samples, of each class) with :func:`nsp_pipeline.render.pages.render_pattern`;
:func:`render_summary_averages` does so from a dataset summary file.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from nsp_pipeline.analysis.dataset_statistics import ClassStatistics, top_k_label
from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.io.hdf5 import read_dataset_summary
from nsp_pipeline.render.pages import render_pattern

PathLike = str | os.PathLike

#: Classes up to which the per-class plots have a legend entry per class (a colour bar beyond).
MAX_LEGEND_CLASSES = 20

_PAGE = (11.0, 7.0)  # inches, landscape
_LEFT, _WIDTH, _TOP = 0.08, 0.7, 0.9  # figure fraction: room for two title lines and a legend
_MAX_TICK_LABELS = 40
_MAX_NAME = 28  # characters of a layer name on the x axis
_ENERGY_LABEL = "mean energy Σx² per sample"


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


def _render_job(job: tuple[Pattern, Path, int, str], **options: object) -> Path:
    """Render one ``(pattern, path, sample, title)`` job (module level, so workers can run it)."""
    pattern, path, sample, title = job
    return render_pattern(pattern, path, sample=sample, title=title, **options)


def _render_all(jobs: list[tuple[Pattern, Path, int, str]], processes: int, options: Mapping) -> list[Path]:
    """Render ``(pattern, path, sample, title)`` jobs, in ``processes`` worker processes if more than 1."""
    render = functools.partial(_render_job, **options)
    if processes <= 1 or len(jobs) <= 1:
        return [render(job) for job in jobs]
    with ProcessPoolExecutor(min(processes, len(jobs))) as pool:
        return list(pool.map(render, jobs))


def _average_jobs(
    statistics: Mapping[str, ClassStatistics], directory: Path, title: str
) -> list[tuple[Pattern, Path, int, str]]:
    """One ``(pattern, path, sample, title)`` job per average pattern: all samples, then each class."""
    prefix = f"{title}: " if title else ""
    jobs = []
    for name, stats in statistics.items():
        described = f"{prefix}{_described(name, stats)}"
        heading = f"{described}, average of all {stats.n_samples} samples"
        jobs.append((stats.average, directory / f"{name}_all.pdf", 0, heading))
        for row, label in enumerate(stats.classes):
            heading = f"{described}, average of class {label} ({stats.class_samples[row]} samples)"
            jobs.append((stats.class_average, directory / f"{name}_class_{label}.pdf", row, heading))
    return jobs


def render_averages(
    statistics: Mapping[str, ClassStatistics],
    directory: PathLike,
    title: str = "",
    processes: int = 1,
    **options: object,
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
    processes : int, default 1
        Worker processes rendering PDFs side by side (1: all in this process). They start
        the platform's default way; where that is "spawn" or "forkserver" (macOS, Windows,
        Python 3.14 and later) they import the calling script again, which then needs an
        ``if __name__ == "__main__":`` guard.
    **options
        Colour settings of :func:`nsp_pipeline.render.pages.render_pattern`, with its defaults:
        ``scale``, ``cmap``, ``symlog``.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    return _render_all(_average_jobs(statistics, Path(directory), title), processes, options)


def render_summary_averages(
    hdf5_path: PathLike,
    directory: PathLike,
    title: str = "",
    processes: int = 1,
    **options: object,
) -> list[Path]:
    """Render the average patterns stored in a dataset summary file, as :func:`render_averages` does.

    For a workflow rule of its own: the summary is computed once, the averages rendered after,
    in ``processes`` worker processes. The folder is filled under a temporary name and renamed
    when complete (it replaces an existing one), so an interrupted job never leaves a folder
    with only some of the files.

    Parameters
    ----------
    hdf5_path : path
        A file written by :func:`nsp_pipeline.io.hdf5.write_dataset_summary`.
    directory : path
        Output folder, as in :func:`render_averages`.
    title, processes, **options
        As in :func:`render_averages` (``scale``, ``cmap``, ``symlog``).

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    statistics = read_dataset_summary(hdf5_path)
    directory = Path(directory)
    with atomic_output(directory) as folder:
        folder.mkdir()
        written = _render_all(_average_jobs(statistics, folder, title), processes, options)
    return [directory / path.name for path in written]
