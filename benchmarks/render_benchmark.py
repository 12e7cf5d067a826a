"""Time and size of the PDF reports of the default model (DigitsCNN on the digits).

Trains the default model as the workflow does, computes activations and both spectra of a
few test digits, and renders each sample's three reports (activations, causal spectrum
with a symmetric-log scale, Laplacian spectrum) in one process, as a render job does.
Prints, per report kind, the median wall and CPU time per PDF and its size, the time per
sample for all three, and where the time of one report goes (building pages, writing them,
finishing the file), against the goal of 0.5 s per report. CPU time (``time.process_time``)
is what the report costs on an idle core; on a shared machine the wall time can be larger.

Usage: ``python benchmarks/render_benchmark.py [--samples 8] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages

from nsp_pipeline.analysis import analyze
from nsp_pipeline.architectures import DigitsCNN
from nsp_pipeline.datasets import load_dataset
from nsp_pipeline.render import page_figures, render_pattern
from nsp_pipeline.training import train_classifier

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


if __name__ == "__main__":
    main()
