"""Time and size of the PDF reports of the default model (DigitsCNN on the digits).

Trains the default model as the workflow does, computes activations and both spectra of a
few test digits, and renders each sample's three reports (activations, causal spectrum
with a symmetric-log scale, Laplacian spectrum) in one process, as a render job does.
Prints, per report kind, the median wall and CPU time per PDF and its size, the time per
sample for all three, and where the time of one report goes (building pages, writing them,
finishing the file), against the goal of 0.5 s per report. CPU time (``time.process_time``)
is what the report costs on an idle core; on a shared machine the wall time can be larger.

The speed of these machines drifts, so the run also draws the layer pages the conventional
way, as a baseline (an ``Axes`` with ``imshow`` and one with ``fig.colorbar`` per page, channel
indices as axes texts: how ``nsp_pipeline.render.pages`` drew them before ``nsp_pipeline.render.canvas``),
and prints the ratio of the two, measured side by side.

Usage: ``python benchmarks/render_benchmark.py [--samples 8] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from nsp_pipeline.analysis.analyze import analyze
from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.model.architectures import DigitsCNN
from nsp_pipeline.model.training import train_classifier
from nsp_pipeline.render.pages import color_norms, layer_image, page_figures, render_pattern

GOAL = 0.5  # seconds per PDF of the default model


def reports(samples: int):
    """The default model's activations and spectra of ``samples`` test digits, and their inputs."""
    model = DigitsCNN()
    train_classifier(model, load_dataset({"source": "digits", "split": "train"}))
    test = load_dataset({"source": "digits", "split": "test"})
    analysis = analyze(model, test.inputs[:samples], ("standard", "laplacian"), granularity="children")
    patterns = {"activations": analysis.activations, **analysis.spectra}
    options = {"activations": {}, "standard": {"symlog": True}, "laplacian": {}}
    return patterns, options, test.inputs[:samples].numpy()


def axes_layer_pages(pattern, sample: int, path: Path, symlog: bool) -> None:
    """The baseline: the layer pages of ``sample`` drawn with matplotlib Axes, written to ``path``."""
    norms = color_norms([values[sample] for values in pattern.layers()], "layernorm", symlog)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.8")
    with PdfPages(path) as pdf:
        for layer, values, norm in zip(pattern.layout.layers, pattern.layers(), norms, strict=True):
            fig = Figure(figsize=(8, 8))
            fig.suptitle(f"sample {sample} — {pattern.domain}", fontsize=12)
            fig.text(0.5, 0.94, f"colour scale: layernorm — colormap {cmap.name}", ha="center", fontsize=9)
            ax = fig.add_axes((0.11, 0.2, 0.84, 0.68))
            image = layer_image(values[sample])
            shown = ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
            ax.set_title(f"{layer.name} — {layer.kind} — shape {layer.shape}", fontsize=11)
            if len(layer.shape) == 3 and layer.shape[1:] != (1, 1):
                channels, height, width = layer.shape
                cols = (image.shape[1] + 1) // (width + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                for channel in range(min(channels, 64)):
                    row, col = divmod(channel, cols)
                    ax.text(col * (width + 1), row * (height + 1), str(channel), fontsize=5, va="top")
            colorbar_axes = fig.add_axes((0.2, 0.1, 0.6, 0.02))
            fig.colorbar(shown, cax=colorbar_axes, orientation="horizontal")
            pdf.savefig(fig)


def split_times(pattern, sample: int, options: dict, image) -> tuple[float, float, float]:
    """Seconds spent building the pages, writing them, and finishing the file (fonts, images)."""
    build = write = 0.0
    with PdfPages(io.BytesIO()) as pdf:
        figures = page_figures(pattern, sample, "layernorm", "RdBu_r", input_image=image, **options)
        while True:
            start = time.perf_counter()
            figure = next(figures, None)
            built = time.perf_counter()
            build += built - start
            if figure is None:
                break
            pdf.savefig(figure)
            write += time.perf_counter() - built
        finish_start = time.perf_counter()
    return build, write, time.perf_counter() - finish_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="test digits rendered")
    parser.add_argument("--repeat", type=int, default=3, help="renders of each report")
    args = parser.parse_args()

    patterns, options, inputs = reports(args.samples)
    n_nodes = patterns["activations"].layout.n_nodes
    print(f"DigitsCNN: {len(patterns['activations'].layout.layers)} layers, {n_nodes:,} neurons")
    render_pattern(patterns["activations"], Path(tempfile.gettempdir()) / "warm-up.pdf")  # imports, fonts
    per_sample = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for kind, pattern in patterns.items():
            times, cpu_times, size = [], [], 0
            for sample in range(args.samples):
                path = Path(folder) / f"{kind}-{sample}.pdf"
                for _ in range(args.repeat):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    render_pattern(
                        pattern,
                        path,
                        sample,
                        "layernorm",
                        "RdBu_r",
                        model="digits_cnn",
                        input_image=inputs[sample],
                        **options[kind],
                    )
                    times.append(time.perf_counter() - start)
                    cpu_times.append(time.process_time() - cpu_start)
                size = max(size, path.stat().st_size)
            median, cpu = statistics.median(times), statistics.median(cpu_times)
            per_sample += median
            build, write, finish = split_times(pattern, 0, options[kind], inputs[0])
            print(
                f"{kind:12s} {median * 1000:4.0f} ms per PDF (min {min(times) * 1000:.0f}, "
                f"max {max(times) * 1000:.0f}) = {median / GOAL:.2f}x the {GOAL} s goal, "
                f"CPU {cpu * 1000:.0f} ms = {cpu / GOAL:.2f}x; "
                f"largest file {size / 1024:.0f} KiB; one report: build {build * 1000:.0f} ms, "
                f"write pages {write * 1000:.0f} ms, finish file {finish * 1000:.0f} ms"
            )
    print(
        f"all three reports of a sample: {per_sample:.2f} s ({per_sample / 3 / GOAL:.2f}x the goal per PDF)"
    )
    canvas_times, axes_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            for kind, pattern in patterns.items():
                for sample in range(args.samples):
                    symlog = options[kind].get("symlog", False)
                    start = time.process_time()
                    canvas_pdf = Path(folder) / "canvas.pdf"
                    render_pattern(
                        pattern, canvas_pdf, sample, "layernorm", "RdBu_r", symlog=symlog, summary=False
                    )
                    canvas_times.append(time.process_time() - start)
                    start = time.process_time()
                    axes_layer_pages(pattern, sample, Path(folder) / "axes.pdf", symlog)
                    axes_times.append(time.process_time() - start)
    canvas, axes = statistics.median(canvas_times), statistics.median(axes_times)
    print(
        f"layer pages only, CPU per PDF, side by side: canvas {canvas * 1000:.0f} ms, Axes baseline "
        f"{axes * 1000:.0f} ms: ratio {canvas / axes:.2f} (geometric mean of pairs "
        f"{math.exp(statistics.fmean(math.log(c / a) for c, a in zip(canvas_times, axes_times))):.2f})"
    )


if __name__ == "__main__":
    main()
