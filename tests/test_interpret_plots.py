"""PDF pictures of attribution maps, drawn from numpy arrays only.

Oracles: page counts from the PDF bytes (``/Type /Page`` objects), byte comparison of two drawings,
the occlusion-grid placement written out by hand (cell ``g`` covers its window's centre ± stride/2),
and a fresh interpreter for the torch-free import.
"""

import subprocess
import sys

import numpy as np
import pytest

from nsp_pipeline.interpret.results import AttributionMaps
from nsp_pipeline.render import interpret_plots
from nsp_pipeline.render.interpret_plots import plot_attributions, plot_top_images


def synthetic(channels=1, rows=8, columns=8, n=3):
    """Maps of ``n`` samples and 2 targets (the second without an activation map), made with numpy."""
    rng = np.random.default_rng(0)
    inputs = rng.random((n, channels, rows, columns)).astype(np.float32)
    grid = ((rows - 2) // 2 + 1, (columns - 2) // 2 + 1)
    activation = rng.random((n, 2, rows, columns))
    activation[:, 1] = np.nan
    return AttributionMaps(
        inputs=inputs,
        targets=[
            {"layer": "conv2", "channel": 5, "reduction": "mean"},
            {"layer": "fc", "unit": [3]},
        ],
        values=rng.normal(size=(n, 2)),
        maps={
            "saliency": rng.normal(size=(n, 2, channels, rows, columns)),
            "occlusion": rng.normal(size=(n, 2, *grid)),
            "activation_map": activation,
        },
        parameters={
            "saliency": {"wrt": "input", "abs": False, "batch_size": 256},
            "occlusion": {"window": 2, "stride": 2, "fill": 0.0, "output": "grid"},
            "activation_map": {"mode": "bilinear"},
        },
        rf_boxes=[[[0, channels], [1, 6], [2, 7]], [[0, channels], [0, rows], [0, columns]]],
        rf_masks=np.ones((2, channels, rows, columns), dtype=bool),
        sample_ids=np.arange(10, 10 + n),
        labels=np.arange(n),
        predictions=np.arange(n)[::-1],
        class_names=[f"class {i}" for i in range(n)],
    )


def pages(path) -> int:
    data = path.read_bytes()
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 10)])
def test_page_counts_and_same_bytes(tmp_path, shape):
    maps = synthetic(*shape)
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    plot_attributions(maps, first, title="test")
    plot_attributions(maps, second, title="test")
    assert pages(first) == 3 * 2
    assert first.read_bytes() == second.read_bytes()
    plot_attributions(maps, first, samples=[2, 0], targets=[1])
    assert pages(first) == 2
    plot_top_images(maps, first, k=2)
    plot_top_images(maps, second, k=2)
    assert pages(first) == 2
    assert first.read_bytes() == second.read_bytes()


def test_top_images_are_the_highest_values():
    maps = synthetic(n=5)
    fig = interpret_plots._top_page(maps, 0, 3, maps.methods, "", maps.class_names)
    texts = [t.get_text() for t in fig.texts if t.get_text().startswith("#")]
    order = np.argsort(-maps.values[:, 0])[:3]
    assert [t.split(":")[1].split(",")[0] for t in texts] == [f" sample {10 + i}" for i in order]


def test_page_shows_the_numbers():
    maps = synthetic()
    fig = interpret_plots._attribution_page(maps, 1, 0, "run", maps.class_names)
    text = "\n".join(t.get_text() for t in fig.texts)
    assert "sample 11, label class 1, prediction class 1 — target conv2[5] mean" in text
    assert "receptive field 5×5 of 8×8 (rows 1–5, columns 2–6, 64 of 64 input neurons)" in text
    assert "occlusion, window=2, stride=2,\nfill=0.0, output=grid\nrange " in text
    assert "batch_size" not in text
    boxes = [a for a in fig.artists if a.get_gid() == interpret_plots.FIELD_BOX]
    assert len(boxes) == 1 + 3  # the input and each map drawn over it
    fig = interpret_plots._attribution_page(maps, 1, 1, "run", maps.class_names)
    assert "no map\nfor this target" in [t.get_text() for t in fig.texts]


def test_occlusion_grid_sits_on_the_window_centres():
    maps = synthetic()
    grid = np.arange(16.0).reshape(4, 4)  # window 2, stride 2 on 8: cell g covers pixels 2g, 2g + 1
    plane = interpret_plots._plane(maps, "occlusion", grid, (8, 8))
    np.testing.assert_array_equal(plane, np.kron(grid, np.ones((2, 2))))
    maps.parameters["occlusion"].update(window=3, stride=1)  # centres at 1..6 on 8: pixels 0 and 7 uncovered
    grid = np.arange(36.0).reshape(6, 6)
    plane = interpret_plots._plane(maps, "occlusion", grid, (8, 8))
    np.testing.assert_array_equal(plane[1:7, 1:7], grid)
    assert np.isnan(plane[[0, 7]]).all() and np.isnan(plane[:, [0, 7]]).all()


def test_bad_input_raises_and_writes_nothing(tmp_path):
    maps = synthetic()
    path = tmp_path / "out.pdf"
    with pytest.raises(ValueError, match=r"sample indices \[3\] out of range: expected .* ints in 0\.\.2"):
        plot_attributions(maps, path, samples=[0, 3])
    with pytest.raises(ValueError, match=r"target indices \[2\] out of range: expected .* 0\.\.1"):
        plot_attributions(maps, path, targets=[2])
    with pytest.raises(
        ValueError, match=r"2 class names given but labels range over 0\.\.2: expected at least 3"
    ):
        plot_attributions(maps, path, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"2 class names given .* expected at least 3"):
        plot_top_images(maps, path, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"methods \['smoothgrad'\] are not in the maps"):
        plot_top_images(maps, path, methods=["smoothgrad"])
    with pytest.raises(ValueError, match=r"k must be an int >= 1"):
        plot_top_images(maps, path, k=0)
    flat = AttributionMaps(
        inputs=np.zeros((2, 5)), targets=[{"layer": "fc", "unit": [0]}], values=np.zeros((2, 1)), maps={},
        parameters={},
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"per-sample shape \(5,\) are not images: expected \(1, H, W\)"):
        plot_attributions(flat, path)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_drawing_leaves_no_file(tmp_path):
    maps = synthetic()
    maps.parameters["occlusion"]["window"] = "wide"  # fails on the first page, inside the atomic write
    with pytest.raises(ValueError, match="wide"):
        plot_attributions(maps, tmp_path / "out.pdf")
    assert list(tmp_path.iterdir()) == []


def test_module_does_not_import_torch():
    code = "import sys, nsp_pipeline.render.interpret_plots; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
